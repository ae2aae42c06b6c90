"""Jobs: recording them, the status machine, history filters and keyset pagination, detail pages."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from html import unescape
from uuid import UUID, uuid4

import pytest
from conftest import register
from litestar.testing import AsyncTestClient

from mesh_nanollm.peers.service import PeerJoin, open_peer_sessions
from mesh_nanollm.realtime.schemas import Capabilities
from mesh_nanollm.tables import Job, Room, User

HTMX = {"HX-Request": "true"}
STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "abandoned"]
LEGAL = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "abandoned"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "queued"),
    ("running", "abandoned"),
}
# How to bring a fresh (queued) job into each status through the API.
PATH_TO = {
    "queued": [],
    "running": ["running"],
    "succeeded": ["running", "succeeded"],
    "failed": ["running", "failed"],
    "cancelled": ["cancelled"],
    "abandoned": ["abandoned"],
}


def flash(html: str) -> list[str]:
    texts = re.findall(r'data-testid="flash"[^>]*>(.*?)</', html, re.DOTALL)
    return [unescape(re.sub(r"\s+", " ", text).strip()) for text in texts]


def job_rows(html: str) -> list[str]:
    return re.findall(r'data-testid="job-row" data-job-id="([^"]+)"', html)


async def create_job(client: AsyncTestClient, prompt: str = "Once upon a time", **fields: object) -> dict:
    body = {"room": "global", "model": "tiny-gpt2", "prompt": prompt} | fields
    response = await client.post("/api/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def job_in(client: AsyncTestClient, status: str) -> str:
    job_id = (await create_job(client))["id"]
    for step in PATH_TO[status]:
        assert (await client.patch(f"/api/jobs/{job_id}", json={"status": step})).status_code == 200
    return job_id


async def switch_user(client: AsyncTestClient) -> str:
    client.cookies.clear()
    client.headers.pop("x-csrftoken", None)
    username = await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    return username


async def own_peer(client: AsyncTestClient) -> str:
    """Sign in as a fresh user and open a peer of theirs in `global`, as join_room does."""
    user = await User.objects().where(User.username == await switch_user(client)).first()
    room = await Room.objects().where(Room.slug == "global").first()
    [peer_id] = await open_peer_sessions([PeerJoin(room.id, user.id, "sid", Capabilities(backend="wasm"))])
    return peer_id


def cursor_for(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Recording jobs


async def test_create_job_records_it_queued(user_client: AsyncTestClient) -> None:
    peer = await own_peer(user_client)
    job = await create_job(
        user_client, "Hello", mode="mesh", params={"max_new_tokens": 32, "temperature": 0.7}, requester_peer=peer
    )
    assert job["status"] == "queued"
    assert job["room"] == "global" and job["room_name"] == "Global" and job["model"] == "tiny-gpt2" and job["mode"] == "mesh"
    assert job["prompt"] == "Hello" and job["requester_peer"] == peer
    assert job["params"]["max_new_tokens"] == 32 and job["params"]["temperature"] == 0.7
    assert job["attempts"] == 0 and job["started_at"] is None and job["output"] == ""
    fetched = await user_client.get(f"/api/jobs/{job['id']}")
    assert fetched.status_code == 200 and fetched.json() == job


async def test_a_create_sent_again_with_its_id_records_the_job_once(user_client: AsyncTestClient) -> None:
    """A page names its job's id, so a create it sends again after the answer was lost (the job was
    made) gets that job back instead of a second record; another user cannot take the id."""
    job_id = str(uuid4())
    first = await create_job(user_client, "Hello again", id=job_id)
    again = await create_job(user_client, "Hello again", id=job_id)

    assert first["id"] == again["id"] == job_id and again == first
    assert await Job.count().where(Job.id == UUID(job_id)) == 1
    other = await create_job(user_client, "Hello again")
    assert other["id"] != job_id

    await switch_user(user_client)
    taken = await user_client.post(
        "/api/jobs", json={"room": "global", "model": "tiny-gpt2", "prompt": "Mine", "id": job_id}
    )
    assert taken.status_code == 409 and "Another job already has this id" in taken.json()["detail"]
    assert (await user_client.get(f"/api/jobs/{job_id}")).status_code == 404
    assert await Job.count().where(Job.id == UUID(job_id)) == 1


async def test_job_run_records_output_and_metrics(user_client: AsyncTestClient) -> None:
    job_id = (await create_job(user_client))["id"]
    running = (await user_client.patch(f"/api/jobs/{job_id}", json={"status": "running"})).json()
    assert running["attempts"] == 1 and running["workers"] == ["local"] and running["started_at"]
    done = await user_client.patch(
        f"/api/jobs/{job_id}",
        json={"status": "succeeded", "output": "there was a mesh", "token_count": 4, "ttft_ms": 12.5},
    )
    assert done.status_code == 200
    job = done.json()
    assert job["status"] == "succeeded" and job["output"] == "there was a mesh" and job["token_count"] == 4
    assert job["finished_at"] and job["ttft_ms"] == pytest.approx(12.5, abs=0.01)
    page = await user_client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert "there was a mesh" in page.text and "12.5 ms" in page.text
    assert 'data-testid="job-status">succeeded<' in page.text


async def test_record_sent_after_the_run_keeps_the_runs_own_timing(user_client: AsyncTestClient) -> None:
    # The page records a short run once it is over: each request says how long ago its change happened.
    sent = datetime.now(UTC)
    job_id = (await create_job(user_client, age_ms=2000))["id"]
    await user_client.patch(f"/api/jobs/{job_id}", json={"status": "running", "age_ms": 1910})
    job = (await user_client.patch(
        f"/api/jobs/{job_id}",
        json={
            "status": "succeeded", "output": "a short one", "token_count": 101, "ttft_ms": 10,
            "decode_ms": 1880, "decode_tokens": 100, "age_ms": 0,
        },
    )).json()
    created, started, finished = (datetime.fromisoformat(job[key]) for key in ("created_at", "started_at", "finished_at"))
    assert 1500 <= (sent - created).total_seconds() * 1000 <= 2000
    assert 1900 <= (finished - started).total_seconds() * 1000 <= 2400
    assert job["ttft_ms"] == pytest.approx(10, abs=0.01)
    # 100 tokens after the first, in the 1.88 s the page measured between first and last token.
    assert job["tokens_per_s"] == pytest.approx(100 / 1.88, abs=0.01)


async def test_age_never_dates_a_change_before_the_job(user_client: AsyncTestClient) -> None:
    job = await create_job(user_client)
    running = (await user_client.patch(f"/api/jobs/{job['id']}", json={"status": "running", "age_ms": 3_600_000})).json()
    assert running["started_at"] == job["created_at"]


async def test_failover_requeues_and_counts_attempts(user_client: AsyncTestClient) -> None:
    worker = await own_peer(user_client)
    job_id = (await create_job(user_client))["id"]
    await user_client.patch(f"/api/jobs/{job_id}", json={"status": "running", "worker_peer": worker})
    await user_client.patch(f"/api/jobs/{job_id}", json={"status": "queued"})
    job = (await user_client.patch(f"/api/jobs/{job_id}", json={"status": "running"})).json()
    assert job["attempts"] == 2
    assert job["workers"] == [worker, "local"]


async def test_legal_transitions_succeed(user_client: AsyncTestClient) -> None:
    for source, target in sorted(LEGAL):
        job_id = await job_in(user_client, source)
        response = await user_client.patch(f"/api/jobs/{job_id}", json={"status": target})
        assert response.status_code == 200, (source, target, response.text)
        assert response.json()["status"] == target


async def test_illegal_transitions_are_409(user_client: AsyncTestClient) -> None:
    illegal = [(a, b) for a in STATUSES for b in STATUSES if a != b and (a, b) not in LEGAL]
    assert ("queued", "succeeded") in illegal and ("succeeded", "running") in illegal
    for source, target in illegal:
        job_id = await job_in(user_client, source)
        response = await user_client.patch(f"/api/jobs/{job_id}", json={"status": target})
        assert response.status_code == 409, (source, target, response.text)
        assert response.json() == {"error": "Conflict", "detail": f"A job cannot go from {source} to {target}."}
        assert (await user_client.get(f"/api/jobs/{job_id}")).json()["status"] == source


async def test_finished_job_output_cannot_change(user_client: AsyncTestClient) -> None:
    job_id = await job_in(user_client, "succeeded")
    for patch in ({"output": "rewritten"}, {"status": "succeeded", "output": "rewritten"}, {"token_count": 1}):
        response = await user_client.patch(f"/api/jobs/{job_id}", json=patch)
        assert response.status_code == 409, patch
        assert response.json()["detail"] == "The job is already succeeded."
    assert (await user_client.get(f"/api/jobs/{job_id}")).json()["output"] != "rewritten"


# Whose jobs


async def test_other_users_jobs_are_404(user_client: AsyncTestClient) -> None:
    job_id = (await create_job(user_client, "mine"))["id"]
    await switch_user(user_client)
    assert (await user_client.get(f"/api/jobs/{job_id}")).status_code == 404
    patched = await user_client.patch(f"/api/jobs/{job_id}", json={"status": "cancelled"})
    assert patched.status_code == 404 and patched.json() == {"error": "Not found", "detail": "No such job."}
    page = await user_client.get(f"/jobs/{job_id}")
    assert page.status_code == 404 and flash(page.text) == ["No such job."]
    assert (await user_client.get("/api/jobs")).json() == {"jobs": [], "next_cursor": None}
    assert job_rows((await user_client.get("/jobs")).text) == []


async def test_job_in_private_room_needs_membership(user_client: AsyncTestClient) -> None:
    slug = (await user_client.post("/api/rooms", json={"name": "Private jobs", "private": True})).json()["slug"]
    assert (await create_job(user_client, room=slug))["room"] == slug
    await switch_user(user_client)
    response = await user_client.post("/api/jobs", json={"room": slug, "model": "tiny-gpt2", "prompt": "hi"})
    assert response.status_code == 403


# History: pages, filters, pagination


async def test_history_page_starts_empty(user_client: AsyncTestClient) -> None:
    response = await user_client.get("/jobs")
    assert response.status_code == 200
    assert job_rows(response.text) == []
    assert "No jobs yet." in response.text


async def test_history_page_lists_jobs_newest_first(user_client: AsyncTestClient) -> None:
    first = await create_job(user_client, "first <b>prompt</b>")
    second = await create_job(user_client, "second prompt")
    response = await user_client.get("/jobs")
    assert job_rows(response.text) == [second["id"], first["id"]]
    assert "first &lt;b&gt;prompt&lt;/b&gt;" in response.text
    # Each row links to its job's page, and that page opens.
    links = re.findall(r'<a href="(/jobs/[^"]+)"><time', response.text)
    # When each ran, to the second, with the full timestamp for machines.
    when = re.search(r'<time datetime="([^"]+)">([^<]+)</time>', response.text)
    at = datetime.fromisoformat(when.group(1))
    assert at == datetime.fromisoformat(second["created_at"])
    assert when.group(2) == at.strftime("%Y-%m-%d %H:%M:%S")
    assert links == [f"/jobs/{second['id']}", f"/jobs/{first['id']}"]
    assert (await user_client.get(links[0])).status_code == 200
    assert 'data-testid="load-more"' not in response.text


async def test_history_filters_by_status_room_and_model(user_client: AsyncTestClient) -> None:
    slug = (await user_client.post("/api/rooms", json={"name": "Filter room"})).json()["slug"]
    plain = await create_job(user_client)
    other_model = await create_job(user_client, model="HuggingFaceTB/SmolLM2-135M-Instruct")
    in_room = await create_job(user_client, room=slug)
    running = await create_job(user_client)
    await user_client.patch(f"/api/jobs/{running['id']}", json={"status": "running"})

    async def api_ids(query: str) -> list[str]:
        response = await user_client.get(f"/api/jobs?{query}")
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["jobs"]]

    assert await api_ids("status=running") == [running["id"]]
    assert await api_ids(f"room={slug}") == [in_room["id"]]
    assert await api_ids("model=HuggingFaceTB/SmolLM2-135M-Instruct") == [other_model["id"]]
    assert await api_ids("status=queued&room=global&model=tiny-gpt2") == [plain["id"]]
    assert await api_ids("room=no-such-room") == []
    assert len(await api_ids("status=")) == 4  # an empty filter means "any"
    # A filter is a value, never SQL: quotes and operators in it match nothing.
    assert await api_ids("model=x' OR '1'='1") == []
    assert await api_ids("room=global' OR 1=1 --") == []

    page = await user_client.get(f"/jobs?room={slug}")
    assert job_rows(page.text) == [in_room["id"]]
    assert f'<option value="{slug}" selected>' in page.text
    assert '<option value="HuggingFaceTB/SmolLM2-135M-Instruct"' in page.text
    fragment = await user_client.get("/jobs?status=running", headers=HTMX)
    assert fragment.text.lstrip().startswith('<section id="job-table">')
    assert "<html" not in fragment.text
    assert job_rows(fragment.text) == [running["id"]]
    empty = await user_client.get("/jobs?status=failed")
    assert "No jobs match these filters." in empty.text


async def test_history_rows_name_the_room_and_how_the_job_ran(user_client: AsyncTestClient) -> None:
    # Two rooms of one name: the filter tells them apart by their addresses.
    first, second = [(await user_client.post("/api/rooms", json={"name": "Study <b>hall</b>"})).json() for _ in range(2)]
    in_room = await create_job(user_client, room=first["slug"], mode="mesh")
    await create_job(user_client)

    page = await user_client.get("/jobs")
    rows = re.findall(r'<tr data-testid="job-row" data-job-id="([^"]+)">(.*?)</tr>', page.text, re.DOTALL)
    assert [job_id for job_id, _ in rows][1] == in_room["id"]
    room_cell = re.search(r'<td data-label="Room">(.*?)</td>', rows[1][1]).group(1)
    assert room_cell == f'<a href="/rooms/{first["slug"]}">Study &lt;b&gt;hall&lt;/b&gt;</a>'
    modes = [re.search(r'data-testid="job-row-mode">([^<]+)<', row).group(1) for _, row in rows]
    assert modes == ["local", "mesh"]
    for room in (first, second):
        assert f'<option value="{room["slug"]}" >Study &lt;b&gt;hall&lt;/b&gt; ({room["slug"]})</option>' in page.text
    assert '<option value="global" >Global</option>' in page.text


async def test_api_pagination_has_no_duplicates_or_gaps(user_client: AsyncTestClient) -> None:
    created = [(await create_job(user_client, f"job {n}"))["id"] for n in range(7)]
    # Three jobs share one timestamp, so the id has to break the tie.
    same = datetime(2026, 1, 1, tzinfo=UTC)
    await Job.update({Job.created_at: same}).where(Job.id.is_in([UUID(i) for i in created[2:5]]))
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await user_client.get(f"/api/jobs?{query}")).json()
        assert len(page["jobs"]) <= 3
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    newest = created[5:][::-1]
    assert seen[:2] == newest
    assert seen[2:4] == created[:2][::-1]  # 2026-01-01 is older than today
    assert sorted(seen[4:]) == sorted(created[2:5])
    stamps = [(await user_client.get(f"/api/jobs/{job_id}")).json()["created_at"] for job_id in seen]
    assert stamps == sorted(stamps, reverse=True)


async def test_history_load_more_returns_only_rows(user_client: AsyncTestClient) -> None:
    created = [(await create_job(user_client, f"job {n}"))["id"] for n in range(27)]
    page = await user_client.get("/jobs?model=tiny-gpt2")
    assert job_rows(page.text) == created[::-1][:25]
    more = re.search(r'data-testid="load-more"\s+hx-get="([^"]+)"', page.text).group(1)
    more = unescape(more)
    assert "model=tiny-gpt2" in more
    rest = await user_client.get(more, headers=HTMX)
    assert rest.status_code == 200
    assert "<html" not in rest.text and "<table" not in rest.text
    assert rest.text.lstrip().startswith("<tr")
    assert job_rows(rest.text) == created[::-1][25:]
    assert 'data-testid="load-more"' not in rest.text


async def test_history_rows_fragment_offers_load_more_while_more_remain(user_client: AsyncTestClient) -> None:
    for n in range(27):
        await create_job(user_client, f"job {n}")
    cursor = (await user_client.get("/api/jobs?limit=1")).json()["next_cursor"]
    rows = await user_client.get(f"/jobs?cursor={cursor}", headers=HTMX)
    assert len(job_rows(rows.text)) == 25
    assert 'data-testid="load-more"' in rows.text and 'id="load-more-row"' in rows.text


async def test_job_detail_page_shows_the_job(user_client: AsyncTestClient) -> None:
    job = await create_job(user_client, "<script>alert(1)</script>")
    response = await user_client.get(f"/jobs/{job['id']}")
    assert response.status_code == 200
    assert job["id"] in response.text and "tiny-gpt2" in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "<script>alert(1)" not in response.text
    assert "No output recorded." in response.text


# Bad input


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"room": "global", "model": "tiny-gpt2", "prompt": ""}, "prompt"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": "p" * 8001}, "prompt"),
        ({"room": "global", "model": "m" * 201, "prompt": "hi"}, "model"),
        ({"room": "r" * 49, "model": "tiny-gpt2", "prompt": "hi"}, "room"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": 5}, "prompt"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": "hi", "mode": "swarm"}, "mode"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": "hi", "params": {"max_new_tokens": 0}}, "max_new_tokens"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": "hi", "params": {"max_new_tokens": "many"}}, "max_new_tokens"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": "hi", "params": {"beams": 4}}, "beams"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": "hi", "priority": 1}, "priority"),
        ({"room": "global", "model": "tiny-gpt2", "prompt": "hi", "requester_peer": "not-a-uuid"}, "requester_peer"),
        ({"model": "tiny-gpt2", "prompt": "hi"}, "room"),
        ("just a string", "object"),
    ],
    ids=[
        "empty-prompt", "over-long-prompt", "over-long-model", "over-long-room", "prompt-not-string",
        "unknown-mode", "zero-tokens", "tokens-not-int", "unknown-param", "unknown-field", "malformed-peer-uuid",
        "missing-room", "not-an-object",
    ],
)
async def test_create_job_bad_input_is_400(user_client: AsyncTestClient, body: object, fragment: str) -> None:
    response = await user_client.post("/api/jobs", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "Bad request" and fragment in error["detail"]


async def test_create_job_malformed_json_is_400(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()) == {"error", "detail"}


async def test_create_job_in_unknown_room_is_404(user_client: AsyncTestClient) -> None:
    response = await user_client.post("/api/jobs", json={"room": "no-such-room", "model": "tiny-gpt2", "prompt": "hi"})
    assert response.status_code == 404
    assert response.json()["detail"] == "There is no room called “no-such-room”."


@pytest.mark.parametrize(
    "body",
    [
        {"status": "done"},
        {"token_count": -1},
        {"token_count": "ten"},
        {"output": "o" * 200_001},
        {"error": "e" * 2001},
        {"ttft_ms": -5},
        {"age_ms": -1},
        {"age_ms": 86_400_001},
        {"worker_peer": "nope"},
        {"colour": "red"},
    ],
    ids=["unknown-status", "negative-tokens", "tokens-not-int", "over-long-output", "over-long-error",
         "negative-ttft", "negative-age", "age-over-a-day", "malformed-worker", "unknown-field"],
)
async def test_patch_job_bad_input_is_400(user_client: AsyncTestClient, body: dict) -> None:
    job_id = (await create_job(user_client))["id"]
    response = await user_client.patch(f"/api/jobs/{job_id}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "Bad request"


async def test_unknown_or_malformed_job_ids_are_404(user_client: AsyncTestClient) -> None:
    for path in (f"/api/jobs/{uuid4()}", "/api/jobs/not-a-uuid", "/api/jobs/12345"):
        response = await user_client.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) >= {"error", "detail"}
    assert (await user_client.patch(f"/api/jobs/{uuid4()}", json={"status": "running"})).status_code == 404
    for path in (f"/jobs/{uuid4()}", "/jobs/not-a-uuid"):
        page = await user_client.get(path)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        cursor_for(b"2026-01-01T00:00:00+00:00|not-a-uuid"),
        cursor_for(b"yesterday|" + str(uuid4()).encode()),
        cursor_for(b"2026-01-01T00:00:00|" + str(uuid4()).encode()),
        cursor_for(b"\xff\xfe\xfd"),
    ],
    ids=["not-base64", "bad-uuid", "bad-time", "naive-time", "not-utf8"],
)
async def test_malformed_cursor_is_400(user_client: AsyncTestClient, cursor: str) -> None:
    api = await user_client.get(f"/api/jobs?cursor={cursor}")
    assert api.status_code == 400
    assert api.json()["detail"] == "The page cursor is malformed; start again from the first page."
    page = await user_client.get(f"/jobs?cursor={cursor}")
    assert page.status_code == 400
    assert flash(page.text) == ["The page cursor is malformed; start again from the first page."]


@pytest.mark.parametrize(
    ("query", "status"),
    [("limit=0", 400), ("limit=101", 400), ("limit=ten", 400), ("status=done", 422), ("cursor=" + "c" * 201, 400),
     ("model=" + "m" * 201, 400)],
    ids=["zero-limit", "huge-limit", "limit-not-int", "unknown-status", "over-long-cursor", "over-long-model"],
)
async def test_bad_list_query_is_4xx(user_client: AsyncTestClient, query: str, status: int) -> None:
    response = await user_client.get(f"/api/jobs?{query}")
    assert response.status_code == status, response.text
    assert set(response.json()) >= {"error", "detail"}
    if not query.startswith("limit="):  # the page has no limit parameter
        page = await user_client.get(f"/jobs?{query}")
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html") and flash(page.text)

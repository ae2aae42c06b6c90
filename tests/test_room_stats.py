"""A room's statistics: the page and `GET /api/rooms/{slug}/stats` over a seeded history, on SQLite
and Postgres, and their answers to a bad period and to strangers of a private room."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from conftest import register, unique_name
from litestar.testing import AsyncTestClient

from mesh_nanollm.tables import Job, PeerSession, Room, User


async def create_room(client: AsyncTestClient, private: bool = False) -> str:
    data = {"name": unique_name("stats room")} | ({"private": "on"} if private else {})
    response = await client.post("/rooms", data=data, follow_redirects=False)
    assert response.status_code == 303, response.text[:300]
    return response.headers["location"].removeprefix("/rooms/")


async def seed(slug: str, username: str) -> dict[str, str]:
    """Two peers and a history: returns the peer ids by backend."""
    room = (await Room.select(Room.id).where(Room.slug == slug).first())["id"]
    user = (await User.select(User.id).where(User.username == username).first())["id"]
    now = datetime.now(UTC)
    peers = {}
    for backend in ("webgpu", "wasm"):
        peer = PeerSession(
            room=room, user=user, backend=backend, connected_at=now, last_seen_at=now
        )
        await peer.save()
        peers[backend] = peer.peer_id

    def job(
        model: str,
        status: str,
        *,
        ago_min: float,
        worker: uuid.UUID | None,
        requester: uuid.UUID | None,
        ttft_ms: float | None = None,
        decode_ms: float | None = None,
        tokens: int = 0,
    ) -> Job:
        created = now - timedelta(minutes=ago_min)
        started = created if status != "queued" else None
        first = (
            started + timedelta(milliseconds=ttft_ms) if started and ttft_ms is not None else None
        )
        finished = (
            first + timedelta(milliseconds=decode_ms) if first and decode_ms is not None else None
        )
        return Job(
            room=room,
            requester=user,
            requester_peer=requester,
            worker_peer=worker,
            model_id=model,
            mode="mesh" if worker else "local",
            prompt="p",
            status=status,
            token_count=tokens,
            created_at=created,
            started_at=started,
            first_token_at=first,
            finished_at=finished,
            updated_at=now,
            # The run's own decode clock (jobs/trace.py): the tokens after the first, in decode_ms.
            decode_ms=decode_ms if finished else None,
            decode_tokens=max(tokens - 1, 0) if finished else 0,
        )

    gpu, cpu = peers["webgpu"], peers["wasm"]
    jobs = [
        # On the WebGPU peer for the WASM peer: TTFTs 10/20/30/40/100 ms, 11 tokens decoded in 10 tokens' time.
        *(
            job(
                "tiny-gpt2",
                "succeeded",
                ago_min=5 + n,
                worker=gpu,
                requester=cpu,
                ttft_ms=t,
                decode_ms=d,
                tokens=11,
            )
            for n, (t, d) in enumerate([(10, 100), (20, 200), (30, 250), (40, 500), (100, 1000)])
        ),
        # Run locally on the WASM peer.
        job(
            "tiny-gpt2",
            "succeeded",
            ago_min=30,
            worker=None,
            requester=cpu,
            ttft_ms=50,
            decode_ms=2000,
            tokens=21,
        ),
        job(
            "tiny-gpt2",
            "succeeded",
            ago_min=90,
            worker=None,
            requester=cpu,
            ttft_ms=70,
            decode_ms=1000,
            tokens=6,
        ),
        job("other-model", "failed", ago_min=40, worker=None, requester=cpu, tokens=3),
        job("other-model", "queued", ago_min=1, worker=None, requester=cpu),
        # Two days ago: only in the 7-day and 30-day periods.
        job(
            "tiny-gpt2",
            "succeeded",
            ago_min=48 * 60,
            worker=gpu,
            requester=cpu,
            ttft_ms=999,
            decode_ms=100,
            tokens=2,
        ),
    ]
    await Job.insert(*jobs)
    return {backend: str(peer_id) for backend, peer_id in peers.items()}


def page_numbers(html: str) -> dict[str, object]:
    """What the stats page shows, read back through its data hooks."""

    def row_stats(row: str) -> dict[str, str]:
        return dict(re.findall(r'data-stat="(\w+)"(?: data-value="([^"]*)")?', row)) | {
            k: v for k, v in re.findall(r'data-stat="(\w+)">([^<]*)<', row)
        }

    totals = html.split('data-testid="stats-speed"')[0]
    rows = re.findall(
        r'<tr data-testid="stats-(speed|peer|model)"([^>]*)>(.*?)</tr>', html, re.DOTALL
    )
    out: dict[str, object] = {
        k: int(v) for k, v in re.findall(r'<span data-stat="(\w+)">(\d+)</span>', totals)
    }
    for kind, attrs, body in rows:
        key = (kind, *re.findall(r'data-(?:model|backend|peer-id)="([^"]+)"', attrs))
        out[" ".join(key)] = row_stats(body)
    return out


def api_numbers(body: dict) -> dict[str, object]:
    """The same view of the endpoint's answer."""

    def fmt(v: float | None) -> str:
        return "" if v is None else str(v)

    out: dict[str, object] = {k: body[k] for k in ("jobs", "succeeded", "tokens")}
    for s in body["speed"]:
        out[f"speed {s['model']} {s['backend']}"] = {"n": str(s["ttft_ms"]["n"])} | {
            f"{m}_{q}": fmt(s[m if m == "tok_s" else "ttft_ms"][q])
            for m in ("ttft", "tok_s")
            for q in ("p50", "p90", "p99")
        }
    for p in body["peers"]:
        out[f"peer {p['peer_id']}"] = {k: str(p[k]) for k in ("jobs", "succeeded", "tokens")}
    for m in body["models"]:
        out[f"model {m['model']}"] = {k: str(m[k]) for k in ("jobs", "succeeded", "tokens")}
    return out


async def test_stats_page_and_endpoint_agree_on_a_seeded_history(
    user_client: AsyncTestClient,
) -> None:
    username = await register(user_client)
    user_client.headers["x-csrftoken"] = user_client.cookies["csrftoken"]
    slug = await create_room(user_client)
    peers = await seed(slug, username)

    api = await user_client.get(f"/api/rooms/{slug}/stats", params={"period": "24h"})
    assert api.status_code == 200, api.text
    body = api.json()
    assert (body["jobs"], body["succeeded"], body["tokens"]) == (9, 7, 5 * 11 + 21 + 6 + 3)
    [gpu_speed] = [s for s in body["speed"] if s["backend"] == "webgpu"]
    # percentile_cont over 10, 20, 30, 40, 100 ms.
    assert gpu_speed["ttft_ms"] == {"n": 5, "p50": 30.0, "p90": 76.0, "p99": 97.6}
    # Ten tokens after the first in 100, 200, 250, 500, 1000 ms: 100, 50, 40, 20, 10 tok/s.
    assert gpu_speed["tok_s"] == {"n": 5, "p50": 40.0, "p90": 80.0, "p99": 98.0}
    [cpu_speed] = [s for s in body["speed"] if s["backend"] == "wasm"]
    assert cpu_speed["ttft_ms"]["n"] == 2 and cpu_speed["ttft_ms"]["p50"] == 60.0
    by_peer = {p["peer_id"]: p for p in body["peers"]}
    assert by_peer[peers["webgpu"]] | {"peer_id": ""} == {
        "peer_id": "",
        "username": username,
        "backend": "webgpu",
        "jobs": 5,
        "succeeded": 5,
        "tokens": 55,
    }
    # The queued job never started anywhere: it counts for its model, not for a peer.
    assert (by_peer[peers["wasm"]]["jobs"], by_peer[peers["wasm"]]["tokens"]) == (3, 30)
    assert {m["model"]: m["jobs"] for m in body["models"]} == {"tiny-gpt2": 7, "other-model": 2}

    page = await user_client.get(f"/rooms/{slug}/stats", params={"period": "24h"})
    assert page.status_code == 200
    assert page_numbers(page.text) == api_numbers(body)

    week = (await user_client.get(f"/api/rooms/{slug}/stats", params={"period": "7d"})).json()
    assert (week["jobs"], week["tokens"]) == (10, body["tokens"] + 2)
    assert page_numbers(
        (await user_client.get(f"/rooms/{slug}/stats?period=7d")).text
    ) == api_numbers(week)
    hour = (await user_client.get(f"/api/rooms/{slug}/stats?period=1h")).json()
    assert hour["jobs"] == 8  # the 90-minute-old job is out


async def test_stats_of_an_empty_room_say_so(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client)
    body = (await user_client.get(f"/api/rooms/{slug}/stats")).json()
    assert (body["period"], body["jobs"], body["peers"], body["speed"]) == ("24h", 0, [], [])
    page = await user_client.get(f"/rooms/{slug}/stats")
    assert "No jobs in this room in this period" in page.text
    assert 'aria-current="page"' in page.text.split("Last 24 hours")[0].rsplit("<a", 1)[1]


async def test_stats_with_an_unknown_period_answer_readably(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client)
    api = await user_client.get(f"/api/rooms/{slug}/stats", params={"period": "1y"})
    assert api.status_code == 400
    assert api.json()["detail"] == "Unknown period “1y”: choose one of 1h, 24h, 7d, 30d."
    page = await user_client.get(f"/rooms/{slug}/stats", params={"period": "1y"})
    assert page.status_code == 400
    assert 'data-testid="flash"' in page.text and "choose one of 1h, 24h, 7d, 30d" in page.text
    assert (
        'data-testid="stats-period"' in page.text
    )  # the selector is still there to pick a good one


async def test_stats_of_a_private_room_are_for_members_only(user_client: AsyncTestClient) -> None:
    slug = await create_room(user_client, private=True)
    assert (await user_client.get(f"/api/rooms/{slug}/stats")).status_code == 200
    user_client.cookies.clear()
    user_client.headers.pop("x-csrftoken", None)
    await register(user_client)
    assert (await user_client.get(f"/api/rooms/{slug}/stats")).status_code == 403
    assert (await user_client.get(f"/rooms/{slug}/stats")).status_code == 403


async def test_stats_endpoint_is_documented_with_an_example(client: AsyncTestClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/api/rooms/{slug}/stats"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"slug", "period"}
    assert "RoomStats" in str(operation["responses"]["200"]) and "403" in operation["responses"]
    assert schema["components"]["schemas"]["RoomStats"]["examples"]

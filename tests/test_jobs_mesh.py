"""The job record of mesh runs: which peers ran each attempt, credit for the worker, and the
server marking a job `abandoned` once its requester has been gone past the timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
import pytest_asyncio
from conftest import register
from litestar.testing import AsyncTestClient

from mesh_nanollm.accounts.service import create_user
from mesh_nanollm.errors import InvalidInput
from mesh_nanollm.jobs.service import abandon_stale_jobs
from mesh_nanollm.peers import service as peers
from mesh_nanollm.peers.service import PeerJoin, open_peer_sessions
from mesh_nanollm.realtime.schemas import Capabilities
from mesh_nanollm.tables import Job, PeerSession, Room, User

TIMEOUT_S = 600


async def peer_in_global(username: str, slug: str = "global") -> str:
    """A peer of `username` in the room `slug`, as join_room opens it."""
    room = await Room.objects().where(Room.slug == slug).first()
    user = await User.objects().where(User.username == username).first()
    assert room is not None and user is not None
    [peer_id] = await open_peer_sessions([PeerJoin(room.id, user.id, f"sid-{uuid4().hex[:8]}", Capabilities(backend="wasm"))])
    return peer_id


@pytest_asyncio.fixture
async def member(client: AsyncTestClient) -> tuple[AsyncTestClient, str]:
    """A signed-in client sending the CSRF header, and its username."""
    username = await register(client)
    client.headers["x-csrftoken"] = client.cookies["csrftoken"]
    return client, username


async def new_job(client: AsyncTestClient, **fields: object) -> str:
    body = {
        "room": "global",
        "model": "tiny-gpt2",
        "prompt": "Once upon a time",
        "mode": "mesh",
    } | fields
    response = await client.post("/api/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def patch(client: AsyncTestClient, job_id: str, **body: object) -> dict:
    response = await client.patch(f"/api/jobs/{job_id}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def age(job_id: str, *, seconds: int) -> None:
    """Pretend nobody touched the job for `seconds`."""
    await Job.update({Job.updated_at: datetime.now(UTC) - timedelta(seconds=seconds)}).where(
        Job.id == UUID(job_id)
    )


async def leave(peer_id: str, *, seconds_ago: int) -> None:
    gone = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    await PeerSession.update({PeerSession.disconnected_at: gone}).where(
        PeerSession.peer_id == UUID(peer_id)
    )


async def test_failover_records_each_worker_in_order_and_attempts(
    member: tuple[AsyncTestClient, str],
) -> None:
    user_client, _ = member
    job_id = await new_job(user_client)
    # The first worker is another user's browser in the room; the second is no longer on record
    # by the time the page is read (its user deleted their account).
    helper = (await create_user(f"helper-{uuid4().hex[:8]}", "correct horse")).username
    gone = await create_user(f"gone-{uuid4().hex[:8]}", "correct horse")
    first, second = await peer_in_global(helper), await peer_in_global(gone.username)
    await patch(user_client, job_id, status="running", worker_peer=first)
    await patch(user_client, job_id, status="queued")
    job = await patch(user_client, job_id, status="running", worker_peer=second)
    assert (
        job["attempts"] == 2 and job["workers"] == [first, second] and job["worker_peer"] == second
    )
    done = await patch(
        user_client, job_id, status="succeeded", output="a whole answer", token_count=9
    )
    assert done["workers"] == [first, second] and done["status"] == "succeeded"

    await User.delete().where(User.id == gone.id)
    page = await user_client.get(f"/jobs/{job_id}")
    assert f"ran in {helper}&#39;s browser, then a peer no longer on record" in page.text


async def test_failover_to_requester_clears_worker_peer(member: tuple[AsyncTestClient, str]) -> None:
    user_client, username = member
    job_id = await new_job(user_client)
    worker = await peer_in_global(username)
    await patch(user_client, job_id, status="running", worker_peer=worker)
    await patch(user_client, job_id, status="queued")
    job = await patch(user_client, job_id, status="running")
    assert job["worker_peer"] is None  # the rest ran in the requester's own browser
    assert job["workers"] == [worker, "local"] and job["attempts"] == 2


async def test_succeeded_job_counts_for_the_peer_that_ran_it(
    member: tuple[AsyncTestClient, str],
) -> None:
    user_client, username = member
    worker, requester = await peer_in_global(username), await peer_in_global(username)
    job_id = await new_job(user_client, requester_peer=requester)
    await patch(user_client, job_id, status="running", worker_peer=worker)
    await patch(user_client, job_id, status="succeeded", output="done", token_count=40)

    peers = {p["peer_id"]: p for p in (await user_client.get("/api/rooms/global/peers")).json()}
    assert (peers[worker]["jobs_run"], peers[worker]["tokens_generated"]) == (1, 40)
    assert (peers[requester]["jobs_run"], peers[requester]["tokens_generated"]) == (0, 0)


async def test_job_of_requester_gone_past_timeout_is_abandoned(
    member: tuple[AsyncTestClient, str],
) -> None:
    user_client, username = member
    requester = await peer_in_global(username)
    job_id = await new_job(user_client, requester_peer=requester)
    await patch(user_client, job_id, status="running", worker_peer=await peer_in_global(username))
    await leave(requester, seconds_ago=TIMEOUT_S + 5)
    await age(job_id, seconds=TIMEOUT_S + 5)

    assert await abandon_stale_jobs(TIMEOUT_S) >= 1
    job = (await user_client.get(f"/api/jobs/{job_id}")).json()
    assert job["status"] == "abandoned" and job["finished_at"]
    assert "requester left" in job["error"]
    # Abandoned is final: a requester coming back late cannot finish it.
    late = await user_client.patch(f"/api/jobs/{job_id}", json={"status": "succeeded"})
    assert late.status_code == 409


async def test_job_of_connected_requester_is_not_abandoned(
    member: tuple[AsyncTestClient, str],
) -> None:
    user_client, username = member
    requester = await peer_in_global(username)
    job_id = await new_job(user_client, requester_peer=requester)
    await patch(user_client, job_id, status="running")
    await age(job_id, seconds=TIMEOUT_S + 5)  # a long job, its requester still there

    await abandon_stale_jobs(TIMEOUT_S)
    assert (await user_client.get(f"/api/jobs/{job_id}")).json()["status"] == "running"


async def test_job_of_requester_gone_briefly_is_not_abandoned_yet(
    member: tuple[AsyncTestClient, str],
) -> None:
    user_client, username = member
    requester = await peer_in_global(username)
    job_id = await new_job(user_client, requester_peer=requester)
    await age(job_id, seconds=TIMEOUT_S + 5)
    await leave(requester, seconds_ago=30)  # left half a minute ago: the timeout has not run out

    await abandon_stale_jobs(TIMEOUT_S)
    assert (await user_client.get(f"/api/jobs/{job_id}")).json()["status"] == "queued"

    await leave(requester, seconds_ago=TIMEOUT_S + 1)
    await abandon_stale_jobs(TIMEOUT_S)
    assert (await user_client.get(f"/api/jobs/{job_id}")).json()["status"] == "abandoned"


async def peer_counters(client: AsyncTestClient, peer_id: str, slug: str = "global") -> tuple[int, int]:
    peers = {p["peer_id"]: p for p in (await client.get(f"/api/rooms/{slug}/peers")).json()}
    return peers[peer_id]["jobs_run"], peers[peer_id]["tokens_generated"]


async def test_worker_outside_the_jobs_room_cannot_be_credited(member: tuple[AsyncTestClient, str]) -> None:
    user_client, _ = member
    carol = (await create_user(f"carol-{uuid4().hex[:8]}", "correct horse")).username
    room = await user_client.post("/api/rooms", json={"name": "Elsewhere"})
    elsewhere = await peer_in_global(carol, room.json()["slug"])
    job_id = await new_job(user_client)
    for worker in (elsewhere, str(uuid4())):
        response = await user_client.patch(
            f"/api/jobs/{job_id}", json={"status": "running", "worker_peer": worker}
        )
        assert response.status_code == 422
        assert response.json()["detail"] == (
            f"worker_peer {worker} is not a peer of this job's room: "
            "name the peer that ran it, as the room's presence lists it."
        )
    job = (await user_client.get(f"/api/jobs/{job_id}")).json()
    assert (job["status"], job["workers"], job["worker_peer"]) == ("queued", [], None)
    assert await peer_counters(user_client, elsewhere, room.json()["slug"]) == (0, 0)


async def test_requester_peer_must_be_the_requesters_own_in_that_room(
    member: tuple[AsyncTestClient, str],
) -> None:
    user_client, username = member
    carol = (await create_user(f"carol-{uuid4().hex[:8]}", "correct horse")).username
    slug = (await user_client.post("/api/rooms", json={"name": "Mine"})).json()["slug"]
    for peer in (await peer_in_global(carol), await peer_in_global(username, slug)):
        body = {"room": "global", "model": "tiny-gpt2", "prompt": "Hi", "requester_peer": peer}
        response = await user_client.post("/api/jobs", json=body)
        assert response.status_code == 422
        assert response.json()["detail"].startswith(f"requester_peer {peer} is not one of your peers")
    assert await new_job(user_client, requester_peer=await peer_in_global(username))


async def test_token_count_beyond_max_new_tokens_is_refused(member: tuple[AsyncTestClient, str]) -> None:
    user_client, username = member
    worker = await peer_in_global(username)
    job_id = await new_job(user_client, params={"max_new_tokens": 32})
    await patch(user_client, job_id, status="running", worker_peer=worker)
    response = await user_client.patch(
        f"/api/jobs/{job_id}", json={"status": "succeeded", "token_count": 1_000_000}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "token_count 1000000 is more than this job can produce (its params.max_new_tokens is 32)."
    )
    assert (await user_client.get(f"/api/jobs/{job_id}")).json()["status"] == "running"
    assert await peer_counters(user_client, worker) == (0, 0)
    await patch(user_client, job_id, status="succeeded", token_count=32)
    assert await peer_counters(user_client, worker) == (1, 32)


async def test_credit_past_32_bits_is_counted(member: tuple[AsyncTestClient, str]) -> None:
    # Postgres' integer stopped at 2**31 - 1: the PATCH answered 400 after the job had changed.
    user_client, username = member
    worker = await peer_in_global(username)
    await PeerSession.update({PeerSession.tokens_generated: 2**31 - 10}).where(
        PeerSession.peer_id == UUID(worker)
    )
    job_id = await new_job(user_client)
    await patch(user_client, job_id, status="running", worker_peer=worker)
    await patch(user_client, job_id, status="succeeded", token_count=20)
    assert await peer_counters(user_client, worker) == (1, 2**31 + 10)


async def test_failed_credit_leaves_the_job_as_it_was(
    member: tuple[AsyncTestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user_client, username = member
    worker = await peer_in_global(username)
    job_id = await new_job(user_client)
    await patch(user_client, job_id, status="running", worker_peer=worker)

    async def refuse(peer_id: UUID, tokens: int, speed: float | None) -> None:
        raise InvalidInput("The credit could not be stored.")

    with monkeypatch.context() as broken:
        broken.setattr(peers, "credit_peer", refuse)
        response = await user_client.patch(
            f"/api/jobs/{job_id}", json={"status": "succeeded", "output": "done", "token_count": 9}
        )
        assert response.status_code == 422
    job = (await user_client.get(f"/api/jobs/{job_id}")).json()
    assert (job["status"], job["output"], job["finished_at"]) == ("running", "", None)
    # The retry is not a 409: the change and its credit happen together or not at all.
    await patch(user_client, job_id, status="succeeded", output="done", token_count=9)
    assert await peer_counters(user_client, worker) == (1, 9)


async def test_many_peers_opened_at_once_each_get_a_live_session(member: tuple[AsyncTestClient, str]) -> None:
    """More joins than one INSERT carries (a room opened by a crowd) all get their row."""
    room = await Room.objects().where(Room.slug == "global").first()
    user = await User.objects().where(User.username == member[1]).first()
    joins = [PeerJoin(room.id, user.id, f"sid-{n}", Capabilities(backend="wasm")) for n in range(150)]
    ids = await open_peer_sessions(joins)
    assert len(set(ids)) == 150
    rows = await PeerSession.select(PeerSession.peer_id).where(PeerSession.user == user.id, PeerSession.disconnected_at.is_null())
    assert {str(row["peer_id"]) for row in rows} == set(ids)

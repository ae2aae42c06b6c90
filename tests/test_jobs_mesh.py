"""The job record of mesh runs: which peers ran each attempt, credit for the worker, and the
server marking a job `abandoned` once its requester has been gone past the timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest_asyncio
from conftest import register
from litestar.testing import AsyncTestClient

from mesh_nanollm.accounts.service import create_user
from mesh_nanollm.jobs.service import abandon_stale_jobs
from mesh_nanollm.peers.service import open_peer_session
from mesh_nanollm.realtime.schemas import Capabilities
from mesh_nanollm.tables import Job, PeerSession, Room, User

TIMEOUT_S = 600


async def peer_in_global(username: str) -> str:
    """A peer of `username` in the room `global`, as join_room opens it."""
    room = await Room.objects().where(Room.slug == "global").first()
    user = await User.objects().where(User.username == username).first()
    assert room is not None and user is not None
    return await open_peer_session(
        room, user.id, f"sid-{uuid4().hex[:8]}", Capabilities(backend="wasm")
    )


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
    # The first worker is another user's browser in the room; the second is no longer on record.
    helper = (await create_user(f"helper-{uuid4().hex[:8]}", "correct horse")).username
    first, second = await peer_in_global(helper), str(uuid4())
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

    page = await user_client.get(f"/jobs/{job_id}")
    assert f"ran in {helper}&#39;s browser, then a peer no longer on record" in page.text


async def test_failover_to_requester_clears_worker_peer(user_client: AsyncTestClient) -> None:
    job_id = await new_job(user_client)
    worker = str(uuid4())
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
    await patch(user_client, job_id, status="running", worker_peer=str(uuid4()))
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

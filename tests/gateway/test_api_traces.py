"""API jobs are traced by the server that relays them: offers and answers, each attempt, the failover
and its reason, tokens over time and the decode clock as the tokens arrived."""

from __future__ import annotations

import re

import httpx
import pytest

from gateway.conftest import MODEL, Room, Script, job_id_of

pytestmark = pytest.mark.slow


async def trace_of(room: Room, job_id: str) -> dict:
    async with httpx.AsyncClient(base_url=room.url, timeout=10) as http:
        response = await http.get(
            f"/api/jobs/{job_id}/trace", headers={"Authorization": f"Bearer {room.account.token}"}
        )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("then", "reason"), [("disconnect", "closed"), ("hang", "silent")])
async def test_api_failover_is_traced_with_both_attempts_and_why(
    room: Room, then: str, reason: str
) -> None:
    declining = await room.add_peer(ack={"error": {"code": "busy", "message": "full"}})
    first = await room.add_peer(Script(["The", " quick", " never sent"], stop_after=2, then=then))
    second = await room.add_peer(Script([" brown", " fox"]))

    completion = await room.openai().completions.create(model=MODEL, prompt="x", max_tokens=10)
    job_id = job_id_of(completion.id)
    events = (await trace_of(room, job_id))["events"]

    said = [
        (event["kind"], event.get("peer"), event.get("attempt"), event.get("reason"))
        for event in events
    ]
    dispatched = [entry for entry in said if entry[0] == "dispatched"]
    assert dispatched == [
        ("dispatched", first.peer_id, 1, None),
        ("dispatched", second.peer_id, 2, None),
    ]
    assert ("failover", first.peer_id, 1, reason) in said
    if (
        "offered",
        declining.peer_id,
        None,
        None,
    ) in said:  # asked first only if the cost model put it first
        assert ("declined", declining.peer_id, None, "busy") in said
    assert said[0][0] == "created" and said[-1][:3] == ("done", second.peer_id, 2)
    assert [event["t"] for event in events] == sorted(event["t"] for event in events)
    assert events[-1]["tokens"] == 4
    assert [event["attempt"] for event in events if event["kind"] == "first_token"] == [1, 2]
    job = await room.job(job_id)
    # Four tokens in four arrivals: three after the first, on the server's clock where they arrived.
    assert job["decode_tokens"] == 3 and job["decode_ms"] > 0
    assert sum((await trace_of(room, job_id))["tokens"]["counts"]) == 4


async def test_api_job_page_draws_the_servers_trace(room: Room) -> None:
    peer = await room.add_peer(Script(["one", " two", " three"]))
    completion = await room.openai().completions.create(model=MODEL, prompt="x")
    job_id = job_id_of(completion.id)
    async with httpx.AsyncClient(
        base_url=room.url, timeout=10, cookies={"mesh_session": room.account.session_cookie}
    ) as http:
        page = (await http.get(f"/jobs/{job_id}")).text
    assert 'data-testid="timeline"' in page and 'data-attempt="1" data-colour="0"' in page
    assert f"Attempt 1 · {room.account.username}&#39;s browser" in page and "— finished" in page
    assert peer.runs[0]["job_id"] == job_id


async def test_api_job_credits_its_worker_and_its_speed_on_the_servers_clock(room: Room) -> None:
    """The peer that served an API job is credited in the transaction that records it, with the
    job's speed on the server's decode clock: the room's peers panel draws it."""
    # Six batches 20 ms apart: five tokens after the first in about 100 ms, enough to measure.
    worker = await room.add_peer(Script(["a", "b", "c", "d", "e", "f"]))
    idle = await room.add_peer(ack={"error": {"code": "busy", "message": "full"}})

    completion = await room.openai().completions.create(model=MODEL, prompt="x", max_tokens=10)
    job = await room.job(job_id_of(completion.id))
    assert job["worker_peer"] == worker.peer_id and job["decode_tokens"] == 5

    async with httpx.AsyncClient(base_url=room.url, timeout=10) as http:
        panel = await http.get(
            f"/rooms/{room.slug}/peers", headers={"Cookie": f"mesh_session={room.account.session_cookie}"}
        )
    assert panel.status_code == 200, panel.text[:300]
    speed = round(5 * 1000 / job["decode_ms"], 1)
    rows = {
        peer: row for peer, row in re.findall(r'data-testid="peer" data-peer-id="([^"]+)"(.*?)</li>', panel.text, re.DOTALL)
    }
    assert f"Speed of its last 1 job: {speed} to {speed} tok/s, latest {speed}" in rows[worker.peer_id]
    assert "peer-spark" not in rows[idle.peer_id]

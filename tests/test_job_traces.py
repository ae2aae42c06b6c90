"""Job traces: recorded with the job's last step, validated and capped, shown on the job page as a
timeline (one colour per attempt) with a table of events; tok/s only from the run's own clock."""

from __future__ import annotations

import re

import pytest
from litestar.testing import AsyncTestClient
from test_jobs import create_job, own_peer

from mesh_nanollm.jobs.trace import MAX_TRACE_BYTES
from mesh_nanollm.peers.service import PeerJoin, open_peer_sessions
from mesh_nanollm.realtime.schemas import Capabilities
from mesh_nanollm.tables import Room, User


def failover_trace(first: str, second: str) -> dict:
    """A mesh run offered to two peers: the first takes it and its channel closes mid-answer; the
    second finishes it."""
    return {
        "events": [
            {"t": 0, "kind": "created"},
            {"t": 2, "kind": "offered", "peer": first},
            {"t": 2, "kind": "offered", "peer": second},
            {"t": 9, "kind": "accepted", "peer": first, "eta_ms": 5},
            {"t": 11, "kind": "declined", "peer": second, "reason": "busy"},
            {"t": 12, "kind": "dispatched", "attempt": 1, "peer": first},
            {"t": 40, "kind": "first_token", "attempt": 1},
            {
                "t": 300,
                "kind": "failover",
                "attempt": 1,
                "peer": first,
                "reason": "closed",
                "tokens": 30,
            },
            {"t": 302, "kind": "offered", "peer": second},
            {"t": 310, "kind": "accepted", "peer": second, "eta_ms": 0},
            {"t": 311, "kind": "dispatched", "attempt": 2, "peer": second},
            {"t": 320, "kind": "load_started", "attempt": 2},
            {"t": 420, "kind": "load_ready", "attempt": 2, "cached": False, "bytes": 402_000},
            {"t": 450, "kind": "first_token", "attempt": 2},
            {
                "t": 700,
                "kind": "done",
                "attempt": 2,
                "peer": second,
                "tokens": 60,
                "ttft_ms": 31,
                "tok_s": 220.5,
            },
        ],
        "tokens": {"start_ms": 40, "bucket_ms": 100, "counts": [10, 12, 8, 0, 9, 11, 10]},
    }


async def run_on(client: AsyncTestClient, job_id: str, *patches: dict) -> dict:
    for patch in patches:
        response = await client.patch(f"/api/jobs/{job_id}", json=patch)
        assert response.status_code == 200, response.text
    return response.json()


async def test_failover_trace_is_kept_and_drawn_with_both_attempts(
    user_client: AsyncTestClient,
) -> None:
    first = await own_peer(user_client)
    # A second peer of the same user (another tab): the page names each peer by its user.
    user = await User.objects().order_by(User.id, ascending=False).first()
    room = await Room.objects().where(Room.slug == "global").first()
    [second] = await open_peer_sessions(
        [PeerJoin(room.id, user.id, "sid2", Capabilities(backend="wasm"))]
    )
    job = await create_job(user_client, mode="mesh", params={"max_new_tokens": 64})
    trace = failover_trace(first, str(second))
    await run_on(
        user_client,
        job["id"],
        {"status": "running", "worker_peer": first},
        {"status": "queued"},
        {"status": "running", "worker_peer": str(second)},
        {
            "status": "succeeded",
            "output": "x",
            "token_count": 60,
            "decode_ms": 660,
            "decode_tokens": 59,
            "trace": trace,
        },
    )

    stored = (await user_client.get(f"/api/jobs/{job['id']}/trace")).json()
    assert stored == trace
    page = (await user_client.get(f"/jobs/{job['id']}")).text
    drawing = page[page.index('data-testid="timeline"') :]
    rows = re.findall(r'class="timeline-row" data-attempt="(\d)" data-colour="(\d)"', drawing)
    assert rows == [("1", "0"), ("2", "1")]  # each attempt in its own colour
    assert "failed over: closed" in drawing and "finished" in drawing
    # The phases of each attempt, in order: attempt 2 waited, loaded (downloaded), prefilled, decoded.
    second_row = drawing[drawing.index('data-attempt="2"') :]
    second_row = second_row[: second_row.index("</svg>")]
    assert re.findall(r'class="phase-(\w+)"', second_row) == ["queue", "load", "prefill", "decode"]
    assert 'class="ttft-mark"' in drawing and len(re.findall(r'class="tokens-bar"', drawing)) == 6
    # The table says it all in words, in order, for screen readers.
    table = re.findall(r"<tr><td class=\"num\">([\d.]+) ms</td><td>(.*?)</td></tr>", drawing)
    said = [what for _, what in table]
    name = f"{user.username}&#39;s browser"
    assert said[4] == f"{name} declined: busy"
    assert said[7] == f"Failed over from {name}: closed"
    assert said[12] == "Model ready (downloaded, 402 kB)"
    assert said[-1].startswith("Done: 60 tokens (as") and "220.5 tok/s" in said[-1]
    # Both speeds: 59 tokens in 660 ms where they arrived, and the worker's own where it made them.
    assert (
        f'60 at 89.4 tok/s <span class="muted" data-testid="made-speed">— 220.5 tok/s where {name} made them'
        in page
    )


async def test_short_run_shows_no_speed_rather_than_a_huge_one(
    user_client: AsyncTestClient,
) -> None:
    job = await create_job(user_client, params={"max_new_tokens": 8})
    # 7 tokens after the first, all in one burst 0.6 ms long: 11,667 tok/s if taken at face value.
    done = await run_on(
        user_client,
        job["id"],
        {"status": "running"},
        {
            "status": "succeeded",
            "output": "tiny",
            "token_count": 8,
            "ttft_ms": 3,
            "decode_ms": 0.6,
            "decode_tokens": 7,
        },
    )
    assert done["tokens_per_s"] is None and done["decode_ms"] == pytest.approx(0.6)
    page = (await user_client.get(f"/jobs/{job['id']}")).text
    assert "too short to measure a speed" in page and "tok/s" not in page
    history = (await user_client.get("/jobs")).text
    row = history[history.index(f'data-job-id="{job["id"]}"') :]
    assert 'title="too short to measure">short<' in row[: row.index("</tr>")]


async def test_speed_is_never_taken_from_when_requests_arrived(
    user_client: AsyncTestClient,
) -> None:
    # A run recorded without its own decode clock has no speed, whatever its timestamps say.
    job = await create_job(user_client)
    done = await run_on(
        user_client,
        job["id"],
        {"status": "running", "age_ms": 2000},
        {"status": "succeeded", "output": "o", "token_count": 100, "ttft_ms": 5},
    )
    assert done["tokens_per_s"] is None and done["decode_ms"] is None


async def test_decode_tokens_over_the_jobs_limit_are_422(user_client: AsyncTestClient) -> None:
    job = await create_job(user_client, params={"max_new_tokens": 8})
    response = await user_client.patch(
        f"/api/jobs/{job['id']}", json={"status": "running", "decode_tokens": 9}
    )
    assert response.status_code == 422 and "decode_tokens 9" in response.json()["detail"]


def event(t: float, kind: str = "created", **fields: object) -> dict:
    return {"t": t, "kind": kind} | fields


@pytest.mark.parametrize(
    ("trace", "status", "fragment"),
    [
        ({"events": [event(0, "teleported")]}, 400, "kind"),
        ({"events": [event(-1)]}, 400, "t"),
        ({"events": [event(0, peer="nobody")]}, 400, "peer"),
        ({"events": [event(0, reason="r" * 201)]}, 400, "reason"),
        ({"events": [event(0, colour="red")]}, 400, "colour"),
        ({"events": [event(0)] * 401}, 400, "events"),
        (
            {"events": [], "tokens": {"start_ms": 0, "bucket_ms": 100, "counts": [1] * 601}},
            400,
            "counts",
        ),
        ({"events": [], "tokens": {"start_ms": 0, "bucket_ms": 1, "counts": []}}, 400, "bucket_ms"),
        ({"events": [event(5), event(4, "done")]}, 422, "order"),
        (
            {"events": [event(i, reason="r" * 200) for i in range(300)]},
            422,
            f"at most {MAX_TRACE_BYTES} are kept",
        ),
    ],
    ids=[
        "unknown-kind",
        "negative-time",
        "malformed-peer",
        "over-long-reason",
        "unknown-field",
        "too-many-events",
        "too-many-buckets",
        "tiny-buckets",
        "out-of-order",
        "over-the-byte-cap",
    ],
)
async def test_bad_traces_are_rejected_and_nothing_is_stored(
    user_client: AsyncTestClient, trace: dict, status: int, fragment: str
) -> None:
    job = await create_job(user_client)
    await run_on(user_client, job["id"], {"status": "running"})
    response = await user_client.patch(
        f"/api/jobs/{job['id']}", json={"status": "succeeded", "trace": trace}
    )
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"} and fragment in response.json()["detail"]
    assert (await user_client.get(f"/api/jobs/{job['id']}")).json()["status"] == "running"
    assert (await user_client.get(f"/api/jobs/{job['id']}/trace")).status_code == 404


async def test_job_without_a_trace_has_no_timeline(user_client: AsyncTestClient) -> None:
    job = await create_job(user_client)
    page = (await user_client.get(f"/jobs/{job['id']}")).text
    assert 'data-testid="timeline"' not in page
    response = await user_client.get(f"/api/jobs/{job['id']}/trace")
    assert response.status_code == 404 and "no trace" in response.json()["detail"]


async def test_local_run_draws_its_model_load_before_the_attempt(
    user_client: AsyncTestClient,
) -> None:
    # A local run loads its model before its one attempt starts: the load is that attempt's.
    job = await create_job(user_client)
    trace = {
        "events": [
            event(0),
            event(1, "load_started", attempt=1),
            event(50, "load_ready", attempt=1, cached=False, bytes=2_500_000),
            event(51, "dispatched", attempt=1),
            event(60, "first_token", attempt=1),
            event(100, "done", attempt=1, tokens=9),
        ]
    }
    done = {"status": "succeeded", "token_count": 9, "trace": trace}
    await run_on(user_client, job["id"], {"status": "running"}, done)
    page = (await user_client.get(f"/jobs/{job['id']}")).text
    row = page[
        page.index('class="timeline-row"') : page.index(
            "</svg>", page.index('class="timeline-row"')
        )
    ]
    assert "Attempt 1 · your browser" in row
    bars = re.findall(r'class="phase-(\w+)" x="([\d.]+)" y="0" width="([\d.]+)"', row)
    assert [(phase, float(x), float(width)) for phase, x, width in bars] == [
        ("queue", 0.0, 10.0),
        ("load", 10.0, 490.0),
        ("prefill", 510.0, 90.0),
        ("decode", 600.0, 400.0),
    ]
    assert "Model ready (downloaded, 2.5 MB)" in page

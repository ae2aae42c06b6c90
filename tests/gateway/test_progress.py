"""A long API job keeps its record fresh: the history shows its text so far while it runs, and the
sweep, which abandons jobs nobody touched for JOB_ABANDON_AFTER, never takes it for a dead one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import LiveServer
from support.accounts import create_room, sign_up
from support.servers import serving

from gateway.conftest import GATEWAY_ENV, MODEL, Room, Script, job_id_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_abandon_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Abandoned after 3 s untouched: a running job's record is then refreshed every second. A
    # worker may pause a minute before it counts as stalled, so the test can look at leisure.
    env = GATEWAY_ENV | {"JOB_ABANDON_AFTER": "3", "GATEWAY_STALL_TIMEOUT": "60"}
    with serving(tmp_path_factory.mktemp("progress"), **env) as server:
        yield server


async def test_a_running_api_job_records_its_text_so_far(short_abandon_server: LiveServer) -> None:
    account = await sign_up(short_abandon_server.url, "gw")
    made = await create_room(short_abandon_server.url, account, "long jobs", private=False)
    room = Room(short_abandon_server.url, account, made["slug"])
    # Two batches more than a second apart, then the peer holds until the test has looked.
    script = Script(["one", " two", " three"], pause=1.2, stop_after=2, then="hold")
    peer = await room.add_peer(script)
    try:
        stream = await room.openai().completions.create(model=MODEL, prompt="Count", stream=True)
        first = await anext(aiter(stream))
        job_id = job_id_of(first.id)

        running = await room.wait_for_job(job_id, lambda j: j["output"] == "one two", timeout=30)
        assert (running["status"], running["token_count"]) == ("running", 2)

        script.hold.set()
        text = first.choices[0].text + "".join([chunk.choices[0].text async for chunk in stream])
        assert text == "one two three"
        done = await room.wait_for_job(job_id, lambda j: j["status"] != "running", timeout=30)
        assert (done["status"], done["output"], done["token_count"]) == ("succeeded", "one two three", 3)
    finally:
        await peer.close()

"""The API across two Granian instances, one Postgres, one Redis: the HTTP client on one, the peer's
socket on the other; `job_run` goes through python-socketio's Redis manager, tokens come back
through Redis pub/sub."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from conftest import LiveServer
from support import servers
from support.accounts import create_room, sign_up

from gateway.conftest import GATEWAY_ENV, MODEL, Room, Script, job_id_of

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def two_instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    tmp = tmp_path_factory.mktemp("gateway-instances")
    with servers.two_instances(tmp, "_gateway", **GATEWAY_ENV) as both:
        yield both


async def test_a_request_on_one_instance_is_served_by_a_peer_on_the_other(two_instances) -> None:
    one, two = two_instances
    account = await sign_up(one.url, "gw")
    made = await create_room(one.url, account, "two instances", private=False)
    room = Room(one.url, account, made["slug"])
    try:
        peer = await room.add_peer(Script(["across", " the", " wire"]), url=two.url)

        stream = await room.openai().chat.completions.create(
            model=MODEL, messages=CHAT, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        plain = await room.openai().completions.create(model=MODEL, prompt="x")

        assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == ["across", " the", " wire"]
        assert chunks[-1].usage.completion_tokens == 3 and plain.choices[0].text == "across the wire"
        assert len(peer.runs) == 2
        job = await room.job(job_id_of(chunks[0].id))
        assert (job["status"], job["workers"], job["output"]) == ("succeeded", [peer.peer_id], "across the wire")
    finally:
        for peer in room.peers:
            await peer.close()


async def test_a_worker_on_the_other_instance_that_leaves_mid_job_is_replaced(two_instances) -> None:
    one, two = two_instances
    account = await sign_up(one.url, "gw")
    made = await create_room(one.url, account, "failover across", private=False)
    room = Room(one.url, account, made["slug"])
    try:
        first = await room.add_peer(Script(["The", " quick", " lost"], stop_after=2, then="disconnect"), url=two.url)
        second = await room.add_peer(Script([" brown", " fox"]), url=one.url)

        stream = await room.openai().chat.completions.create(model=MODEL, messages=CHAT, max_tokens=10, stream=True)
        texts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]

        assert texts == ["The", " quick", " brown", " fox"]
        assert second.runs[0]["resume_text"] == "The quick"
        job = await room.job(first.runs[0]["job_id"])
        assert job["workers"] == [first.peer_id, second.peer_id] and job["output"] == "The quick brown fox"
    finally:
        for peer in room.peers:
            await peer.close()


async def test_closing_the_stream_on_one_instance_cancels_the_job_on_the_other(two_instances) -> None:
    one, two = two_instances
    account = await sign_up(one.url, "gw")
    made = await create_room(one.url, account, "cancel across", private=False)
    room = Room(one.url, account, made["slug"])
    try:
        peer = await room.add_peer(Script(["first", " second"], stop_after=1, then="wait_cancel"), url=two.url)

        stream = await room.openai().chat.completions.create(model=MODEL, messages=CHAT, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content == "first":
                break
        await stream.close()

        await asyncio.wait_for(peer.cancelled.wait(), 10)
        job = await room.wait_for_job(peer.runs[0]["job_id"], lambda j: j["status"] == "cancelled")
        assert (job["status"], job["output"]) == ("cancelled", "first")
    finally:
        for peer in room.peers:
            await peer.close()

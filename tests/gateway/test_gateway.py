"""The room as an OpenAI-compatible API, called with the official `openai` client, served by fake
peers (real Socket.IO clients) that answer `job_run` as the contract says."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from gateway.conftest import MODEL, Room, Script, job_id_of

pytestmark = pytest.mark.slow

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


async def test_chat_completion_returns_the_peers_text_and_is_recorded(room: Room) -> None:
    peer = await room.add_peer(Script(["Hello", ",", " world"]))

    completion = await room.openai().chat.completions.create(model=MODEL, messages=CHAT, max_tokens=16, temperature=0, seed=7)

    assert completion.object == "chat.completion" and completion.model == MODEL
    assert completion.choices[0].message.content == "Hello, world"
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (5, 3, 8)
    run = peer.runs[0]
    assert run["messages"] == CHAT and run["model"] == MODEL and "prompt" not in run and "resume_text" not in run
    assert run["params"] == {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": 7}
    job = await room.job(job_id_of(completion.id))
    assert (job["mode"], job["status"], job["output"], job["token_count"]) == ("api", "succeeded", "Hello, world", 3)
    assert job["workers"] == [peer.peer_id] and job["attempts"] == 1 and job["worker_peer"] == peer.peer_id
    assert job["prompt"] == "system: Be brief.\nuser: Say hello\nassistant:"
    assert job["params"]["finish_reason"] == "stop" and job["first_token_at"] and job["finished_at"]


async def test_chat_stream_relays_chunks_in_order_then_usage_and_done(room: Room) -> None:
    await room.add_peer(Script(["One", " two", " three"], reason="length"))

    stream = await room.openai().chat.completions.create(
        model=MODEL, messages=CHAT, max_completion_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["One", " two", " three"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


async def test_completions_plain_and_streamed_return_the_text(room: Room) -> None:
    peer = await room.add_peer(Script(["upon", " a", " time"]))
    client = room.openai()

    completion = await client.completions.create(model=MODEL, prompt="Once", max_tokens=8)
    stream = await client.completions.create(model=MODEL, prompt="Once", max_tokens=8, stream=True)
    pieces = [chunk async for chunk in stream]

    assert completion.object == "text_completion" and completion.choices[0].text == "upon a time"
    assert [p.choices[0].text for p in pieces if p.choices[0].text] == ["upon", " a", " time"]
    assert pieces[-1].choices[0].finish_reason == "stop"
    assert [run["prompt"] for run in peer.runs] == ["Once", "Once"] and "messages" not in peer.runs[0]


async def test_stop_string_cuts_the_text_and_cancels_the_worker(room: Room) -> None:
    peer = await room.add_peer(Script(["alpha", " be", "ta END gam", "ma"], stop_after=4, then="wait_cancel"))

    stream = await room.openai().completions.create(model=MODEL, prompt="x", stop=["END"], stream=True)
    text = "".join([p.choices[0].text async for p in stream])

    assert text == "alpha beta "
    await asyncio.wait_for(peer.cancelled.wait(), 10)
    job = await room.wait_for_job(peer.runs[0]["job_id"], lambda j: j["status"] != "running")
    assert (job["status"], job["output"], job["params"]["finish_reason"]) == ("succeeded", "alpha beta ", "stop")


# A peer that does not stop at the stop string itself (an older tab): its second batch holds four
# tokens, " beta END gam", and the stop string ends 9 of its 13 characters in: 3 of them.
CUT_LATE = Script(["alpha", " beta END gam", "ma"], seqs=[1, 5, 6], prompt_tokens=6, stop_after=3, then="wait_cancel")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stop_string_the_server_cuts_at_reports_the_peers_prompt_tokens_and_the_answers_tokens(
    room: Room, stream: bool
) -> None:
    peer = await room.add_peer(CUT_LATE)
    client = room.openai()

    if stream:
        chunks = [c async for c in await client.completions.create(
            model=MODEL, prompt="x", max_tokens=60, stop=["END"], stream=True, stream_options={"include_usage": True}
        )]
        text, usage = "".join(c.choices[0].text for c in chunks if c.choices), chunks[-1].usage
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        completion = await client.completions.create(model=MODEL, prompt="x", max_tokens=60, stop=["END"])
        text, usage, finish = completion.choices[0].text, completion.usage, completion.choices[0].finish_reason

    assert (text, finish) == ("alpha beta ", "stop")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 4, 10)
    assert peer.runs[0]["params"]["stop"] == ["END"] and peer.cancels == [peer.runs[0]["job_id"]]
    job = await room.job(peer.runs[0]["job_id"])
    assert (job["status"], job["output"], job["token_count"]) == ("succeeded", "alpha beta ", 4)


async def test_a_peer_that_stops_at_the_stop_string_itself_is_counted_as_it_says(room: Room) -> None:
    # A current peer ends its answer before the stop string, and counts the token that completed it.
    peer = await room.add_peer(Script(["Once", " upon a"], seqs=[1, 4], prompt_tokens=7))

    chat = await room.openai().chat.completions.create(model=MODEL, messages=CHAT, stop="\n", max_tokens=60)

    assert chat.choices[0].message.content == "Once upon a" and chat.choices[0].finish_reason == "stop"
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (7, 4)
    assert peer.runs[0]["params"]["stop"] == ["\n"] and peer.cancels == []


async def test_a_peer_that_vanishes_after_a_stop_string_does_not_hold_the_answer(room: Room) -> None:
    peer = await room.add_peer(Script(["one", " two", " STOP", " three"], stop_after=3, then="disconnect"))

    completion = await room.openai().completions.create(model=MODEL, prompt="count to three", stop=[" STOP"])

    # It said nothing of the prompt: its size is estimated (4 characters a token).
    assert completion.choices[0].text == "one two"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 3)
    job = await room.job(peer.runs[0]["job_id"])
    assert (job["status"], job["token_count"]) == ("succeeded", 3)


async def test_closing_the_stream_cancels_the_job_on_the_worker(room: Room) -> None:
    peer = await room.add_peer(Script(["one", " two", " three"], stop_after=2, then="wait_cancel"))

    stream = await room.openai().chat.completions.create(model=MODEL, messages=CHAT, stream=True)
    seen = ""
    async for chunk in stream:
        seen += chunk.choices[0].delta.content or ""
        if seen == "one two":
            break
    await stream.close()

    await asyncio.wait_for(peer.cancelled.wait(), 10)
    job = await room.wait_for_job(peer.runs[0]["job_id"], lambda j: j["status"] == "cancelled")
    assert job["status"] == "cancelled" and job["output"] == "one two" and peer.cancels == [peer.runs[0]["job_id"]]
    # Its `job_done` answering the cancel is taken quietly: the job has just ended, nothing is wrong.
    await peer.client.call("leave_room", {}, timeout=10)
    assert peer.errors == []


@pytest.mark.parametrize("then", ["disconnect", "hang"])
async def test_a_worker_lost_mid_stream_is_replaced_without_lost_or_repeated_text(room: Room, then: str) -> None:
    first = await room.add_peer(Script(["The", " quick", " never sent"], stop_after=2, then=then))
    second = await room.add_peer(Script([" brown", " fox"]))

    stream = await room.openai().chat.completions.create(model=MODEL, messages=CHAT, max_tokens=10, stream=True)
    texts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]

    assert texts == ["The", " quick", " brown", " fox"]
    job_id = first.runs[0]["job_id"]
    resumed = second.runs[0]
    assert resumed["job_id"] == job_id and resumed["resume_text"] == "The quick"
    assert resumed["params"]["max_new_tokens"] == 8
    job = await room.job(job_id)
    assert job["workers"] == [first.peer_id, second.peer_id] and job["attempts"] == 2
    assert (job["status"], job["output"], job["token_count"]) == ("succeeded", "The quick brown fox", 4)


async def test_no_peer_answers_503_with_retry_after_naming_model_and_room(room: Room) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await room.openai().chat.completions.create(model=MODEL, messages=CHAT)

    error = caught.value
    assert error.status_code == 503 and int(error.response.headers["retry-after"]) >= 1
    body = error.response.json()["error"]
    assert MODEL in body["message"] and room.slug in body["message"] and body["code"] == "no_peer_available"


@pytest.mark.parametrize("ack", [{"error": {"code": "needs_other_backend", "message": "no"}}, "yes", {"ok": "sure"}])
async def test_a_peer_that_declines_is_skipped_for_one_that_accepts(room: Room, ack: object) -> None:
    busy = await room.add_peer(ack=ack)
    able = await room.add_peer(Script(["ok"]))

    completion = await room.openai().completions.create(model=MODEL, prompt="x")

    assert completion.choices[0].text == "ok" and len(busy.runs) == 1 and len(able.runs) == 1


async def test_models_lists_what_the_rooms_peers_can_run(room: Room) -> None:
    assert (await room.openai().models.list()).data == []
    await room.add_peer()

    models = {m.id: m for m in (await room.openai().models.list()).data}

    assert models[MODEL].peers_warm == 1 and models[MODEL].peers_able == 1  # type: ignore[attr-defined]


async def test_models_lists_only_what_a_peer_would_run_within_its_download_limit(room: Room, gateway_server) -> None:
    from support.accounts import sign_up

    # Its user fetches nothing for others (share_download_mb 0, a new account's default).
    cautious = await sign_up(gateway_server.url, "gw", share=False)
    await room.add_peer(account=cautious, warm=())
    assert (await room.openai().models.list()).data == []

    await room.add_peer(account=cautious)  # another tab of the same user, with the model loaded
    models = {m.id: m for m in (await room.openai().models.list()).data}

    assert list(models) == [MODEL] and (models[MODEL].peers_warm, models[MODEL].peers_able) == (1, 1)  # type: ignore[attr-defined]


async def test_retrieve_model_returns_its_card_even_with_a_slash_in_its_id(room: Room) -> None:
    smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
    await room.add_peer(warm=(MODEL, smol))
    await room.add_peer(warm=(smol,))
    client = room.openai()

    card = await client.models.retrieve(smol)
    listed = {m.id: m for m in (await client.models.list()).data}

    assert (card.id, card.object, card.owned_by) == (smol, "model", "hub")
    assert (card.peers_warm, card.peers_able) == (2, 2)  # type: ignore[attr-defined]
    assert card == listed[smol] and (await client.models.retrieve(MODEL)) == listed[MODEL]


@pytest.mark.parametrize("model", ["no-such-model", "Xenova/distilgpt2"])
async def test_retrieve_model_is_404_for_a_model_the_room_would_not_run(room: Room, gateway_server, model: str) -> None:
    from support.accounts import sign_up

    # Its user fetches nothing for others: it runs tiny-gpt2 only, not distilgpt2 (in the catalogue).
    await room.add_peer(account=await sign_up(gateway_server.url, "gw", share=False))

    with pytest.raises(openai.NotFoundError) as caught:
        await room.openai().models.retrieve(model)

    error = caught.value.response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("model_not_found", "model", "invalid_request_error")


async def test_a_model_no_peer_would_run_is_refused_at_once_saying_why(room: Room, gateway_server) -> None:
    from support.accounts import sign_up

    cautious = await sign_up(gateway_server.url, "gw", share=False)
    unloaded = await room.add_peer(account=cautious, warm=())
    refuses = await room.add_peer(ack={"error": {"code": "needs_other_backend", "message": "no WebGPU here"}})

    with pytest.raises(openai.APIStatusError) as caught:
        await room.openai().chat.completions.create(model=MODEL, messages=CHAT)

    error = caught.value
    assert error.status_code == 503 and error.response.json()["error"]["code"] == "no_peer_available"
    message = error.response.json()["error"]["message"]
    assert "over its 0 MB download limit" in message and "needs_other_backend: no WebGPU here" in message
    assert "within" not in message  # it did not wait out GATEWAY_QUEUE_WAIT
    assert unloaded.runs == [] and len(refuses.runs) == 1


TOO_LONG = "The prompt is 6403 tokens; this model reads at most 255."


@pytest.mark.parametrize("peers", ["worker", "page", "both"])
@pytest.mark.parametrize(("endpoint", "param"), [("chat", "messages"), ("completions", "prompt")])
async def test_a_prompt_every_peer_finds_too_long_is_400_context_length_exceeded(
    room: Room, endpoint: str, param: str, peers: str
) -> None:
    # A headless worker declines it at once; a page accepts, then reports `too_long` as job_error.
    asked = []
    if peers in ("worker", "both"):
        asked.append(await room.add_peer(ack={"error": {"code": "invalid", "message": TOO_LONG}}))
    if peers in ("page", "both"):
        asked.append(await room.add_peer(Script([], stop_after=0, then="error", error=("too_long", TOO_LONG))))
    client = room.openai()

    with pytest.raises(openai.BadRequestError) as caught:
        if endpoint == "chat":
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 6400}])
        else:
            await client.completions.create(model=MODEL, prompt="word " * 6400)

    error = caught.value.response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "context_length_exceeded", param)
    assert TOO_LONG in error["message"] and "retry-after" not in caught.value.response.headers
    assert [len(peer.runs) for peer in asked] == [1] * len(asked)  # each asked once
    job = await room.job(asked[0].runs[0]["job_id"])
    assert job["status"] == "failed" and TOO_LONG in job["error"]


async def test_a_request_a_peer_declines_as_invalid_is_400_with_its_reason(room: Room) -> None:
    await room.add_peer(ack={"error": {"code": "invalid", "message": "The prompt is empty once tokenised."}})

    with pytest.raises(openai.BadRequestError) as caught:
        await room.openai().completions.create(model=MODEL, prompt=" ")

    error = caught.value.response.json()["error"]
    assert "The prompt is empty once tokenised." in error["message"] and error["type"] == "invalid_request_error"


async def test_a_peer_whose_ack_is_not_one_still_leaves_a_503(room: Room) -> None:
    # The relay reads an ack it cannot parse as an `invalid` decline: the peer's fault, not the request's.
    await room.add_peer(ack={"ok": "sure"})

    with pytest.raises(openai.APIStatusError) as caught:
        await room.openai().completions.create(model=MODEL, prompt="x")

    assert caught.value.status_code == 503 and caught.value.response.json()["error"]["code"] == "no_peer_available"


async def test_an_empty_completion_prompt_is_400_naming_prompt(room: Room) -> None:
    peer = await room.add_peer()

    with pytest.raises(openai.BadRequestError) as caught:
        await room.openai().completions.create(model=MODEL, prompt="")

    assert caught.value.response.json()["error"]["param"] == "prompt" and peer.runs == []


async def test_unknown_model_is_404_model_not_found(room: Room) -> None:
    await room.add_peer()
    with pytest.raises(openai.NotFoundError) as caught:
        await room.openai().chat.completions.create(model="no-such-model", messages=CHAT)
    assert caught.value.response.json()["error"]["code"] == "model_not_found"
    assert caught.value.response.json()["error"]["param"] == "model"


async def test_a_private_room_is_404_for_non_members(room: Room, gateway_server) -> None:
    from support.accounts import create_room, sign_up

    owner = await sign_up(gateway_server.url, "gw")
    private = await create_room(gateway_server.url, owner, "secret", private=True)
    stranger = openai.AsyncOpenAI(base_url=f"{room.url}/api/rooms/{private['slug']}/v1", api_key=room.account.token, max_retries=0)

    with pytest.raises(openai.NotFoundError) as caught:
        await stranger.chat.completions.create(model=MODEL, messages=CHAT)
    assert caught.value.response.json()["error"]["code"] == "room_not_found"
    with pytest.raises(openai.NotFoundError):
        await stranger.models.list()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"messages": CHAT, "n": 2}, "n"),
        ({"messages": CHAT, "logprobs": True}, "logprobs"),
        ({"messages": CHAT, "response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": CHAT, "max_tokens": 0}, "max_tokens"),
        ({"messages": CHAT, "temperature": 3}, "temperature"),
        ({"messages": CHAT, "surprise": 1}, "surprise"),
        ({}, "messages"),
        # Values of the wrong type, which OpenAI refuses too (Litestar alone would convert them).
        ({"messages": CHAT, "max_tokens": "10"}, "max_tokens"),
        ({"messages": CHAT, "stream": "true"}, "stream"),
        ({"messages": CHAT, "seed": 7.5}, "seed"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ],
)
async def test_unsupported_or_malformed_chat_requests_are_400_in_openais_shape(room: Room, body: dict, param: str) -> None:
    async with httpx.AsyncClient(base_url=room.base_url, timeout=10) as http:
        response = await http.post("/chat/completions", json={"model": MODEL} | body, headers={"Authorization": f"Bearer {room.account.token}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param, error


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", b'{"model": "tiny-gpt2", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}', "temperature"),
        ("/completions", b'{"model": "tiny-gpt2", "prompt": "x", "max_tokens": 1e400}', "max_tokens"),
    ],
    ids=["chat", "completions"],
)
async def test_a_number_out_of_range_is_400_naming_its_field(room: Room, path: str, body: bytes, param: str) -> None:
    async with httpx.AsyncClient(base_url=room.base_url, timeout=10) as http:
        response = await http.post(path, content=body, headers={
            "Authorization": f"Bearer {room.account.token}", "Content-Type": "application/json"})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert error["message"] == "The request is not valid: Number out of range"


async def test_bad_json_and_missing_token_answer_in_openais_shape(room: Room) -> None:
    async with httpx.AsyncClient(base_url=room.base_url, timeout=10) as http:
        bad = await http.post("/completions", content=b"{not json", headers={"Authorization": f"Bearer {room.account.token}", "Content-Type": "application/json"})
        anonymous = await http.post("/completions", json={"model": MODEL, "prompt": "x"})
    assert bad.status_code == 400 and "message" in bad.json()["error"]
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_who_asks_is_checked_before_what_they_sent(room: Room, token: str | None) -> None:
    """As OpenAI answers: a request with a body the strict decoding refuses (a string for a number)
    and no valid token is a 401, not a 400 that tells a stranger how to fix the body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=room.base_url, timeout=10) as http:
        chat = await http.post("/chat/completions", headers=headers,
                               json={"model": MODEL, "messages": CHAT, "max_tokens": "10"})
        text = await http.post("/completions", headers=headers, json={"model": MODEL, "prompt": "x", "max_tokens": "10"})
    for response in (chat, text):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_api_key"


async def test_a_token_past_its_concurrency_cap_gets_429(room: Room) -> None:
    # GATEWAY_TOKEN_CONCURRENCY is 2 on this server: two streams held open, the third is refused.
    for _ in range(3):
        await room.add_peer(Script(["a", "b"], stop_after=1, then="wait_cancel"))
    client = room.openai()
    held = [await client.chat.completions.create(model=MODEL, messages=CHAT, stream=True) for _ in range(2)]

    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=CHAT)
    assert caught.value.response.json()["error"]["code"] == "concurrency_limit_exceeded"
    for stream in held:
        await stream.close()


async def test_job_events_from_a_peer_the_job_is_not_on_are_refused(room: Room) -> None:
    worker = await room.add_peer(Script(["mine", " only"], stop_after=1, then="wait_cancel"))
    intruder = await room.add_peer()
    stream = await room.openai().completions.create(model=MODEL, prompt="x", stream=True)
    first = await stream.__anext__()
    job_id = worker.runs[0]["job_id"]

    await intruder.client.emit("job_token", {"job_id": job_id, "seq": 2, "text": " injected"})
    await intruder.client.emit("job_token", {"job_id": job_id, "seq": "two", "text": 5})
    for _ in range(100):  # both heard before the job ends, so the first reaches the running job
        if len(intruder.errors) >= 2:
            break
        await asyncio.sleep(0.1)
    await worker.client.emit("job_done", {"job_id": job_id, "text": "mine only", "metrics": {"tokens": 2, "reason": "stop"}})
    rest = "".join([chunk.choices[0].text async for chunk in stream])

    assert first.choices[0].text + rest == "mine only"
    assert sorted(e["code"] for e in intruder.errors) == ["invalid", "not_your_job"]


async def test_api_jobs_show_in_history_and_cannot_be_patched(room: Room) -> None:
    await room.add_peer(Script(["recorded"]))
    completion = await room.openai().completions.create(model=MODEL, prompt="x")
    job_id = job_id_of(completion.id)
    headers = {"Authorization": f"Bearer {room.account.token}"}

    async with httpx.AsyncClient(base_url=room.url, timeout=10, cookies={"mesh_session": room.account.session_cookie}) as http:
        patch = await http.patch(f"/api/jobs/{job_id}", json={"status": "failed"}, headers=headers)
        page = await http.get(f"/jobs/{job_id}")
        history = await http.get("/jobs")

    assert patch.status_code == 409 and "recorded by the server" in patch.json()["detail"]
    assert page.status_code == 200 and 'data-testid="job-mode">API request<' in page.text
    assert f'data-job-id="{job_id}"' in history.text
    assert (await room.job(job_id))["status"] == "succeeded"



async def test_job_events_for_no_running_job_or_outside_a_room_are_refused(room: Room, gateway_server) -> None:
    import uuid

    from gateway.conftest import FakePeer

    peer = await room.add_peer()
    stray = FakePeer()
    room.peers.append(stray)
    await stray.client.connect(gateway_server.url, headers={"Authorization": f"Bearer {room.account.token}"}, transports=["websocket"])

    await peer.client.emit("job_done", {"job_id": str(uuid.uuid4()), "text": "", "metrics": {"reason": "stop"}})
    await stray.client.emit("job_error", {"job_id": str(uuid.uuid4()), "code": "x", "message": "y"})
    for _ in range(100):
        if peer.errors and stray.errors:
            break
        await asyncio.sleep(0.1)

    assert [e["code"] for e in peer.errors] == ["unknown_job"]
    assert [e["code"] for e in stray.errors] == ["not_in_room"]


async def test_a_busy_peer_is_not_asked_again_at_every_look(room: Room) -> None:
    busy = await room.add_peer(ack={"error": {"code": "busy", "message": "one at a time"}})

    with pytest.raises(openai.APIStatusError) as caught:
        await room.openai().completions.create(model=MODEL, prompt="x")

    # GATEWAY_QUEUE_WAIT is 2 s, looks come every 0.5 s, a busy peer is asked again after 2 s.
    assert caught.value.status_code == 503 and 1 <= len(busy.runs) <= 2


async def test_a_stream_whose_only_worker_leaves_ends_with_an_error_and_a_failed_record(room: Room) -> None:
    lone = await room.add_peer(Script(["half", " way", " never"], stop_after=2, then="disconnect"))

    stream = await room.openai().chat.completions.create(model=MODEL, messages=CHAT, stream=True)
    seen = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)

    assert seen == ["half", " way"] and "No peer" in caught.value.message
    job = await room.wait_for_job(lone.runs[0]["job_id"], lambda j: j["status"] == "failed")
    assert (job["status"], job["workers"], job["output"]) == ("failed", [lone.peer_id], "half way")
    assert "No peer available" in job["error"]

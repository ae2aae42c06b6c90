"""The worker's job slots over the tiny model: refusals with the browser's reason codes, batches
in order, cancel, drain; and the peer's `job_run` acks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mesh_nanollm.worker.engine import load_engine
from mesh_nanollm.worker.peer import WorkerPeer
from mesh_nanollm.worker.runner import Refused, Runner
from worker.conftest import MODEL, PROJECT_ROOT

PARAMS = {"max_new_tokens": 40, "temperature": 0}
ID = "00000000-0000-4000-8000-00000000000{}"


@pytest.fixture(scope="module")
def engines() -> dict:
    return {MODEL: load_engine(MODEL, models_dir=PROJECT_ROOT / "models")}


def test_refusals_use_the_browsers_codes(engines: dict) -> None:
    runner = Runner(engines, slots=1)
    with pytest.raises(Refused) as unknown:
        runner.start(ID.format(1), "other-model", PARAMS, prompt="hi")
    with pytest.raises(Refused) as bad:
        runner.start(ID.format(1), MODEL, {"max_new_tokens": 10, "temperature": 7}, prompt="hi")
    runner.start(ID.format(1), MODEL, PARAMS, prompt="hi")
    with pytest.raises(Refused) as twice:
        runner.start(ID.format(1), MODEL, PARAMS, prompt="hi")
    with pytest.raises(Refused) as busy:
        runner.start(ID.format(2), MODEL, PARAMS, prompt="hi")
    assert [unknown.value.code, bad.value.code, twice.value.code, busy.value.code] == ["unknown_model", "invalid", "invalid", "busy"]
    assert "temperature" in str(bad.value)


async def test_a_job_streams_its_text_in_order_and_frees_its_slot(engines: dict) -> None:
    runner = Runner(engines, slots=1)
    engine = engines[MODEL]
    expected = "".join(engine.generate(engine.prompt_for([{"role": "user", "content": "hi"}]), PARAMS, threading.Event()))
    sent: list[tuple[int, str]] = []

    async def send(seq: int, text: str) -> None:
        sent.append((seq, text))

    job = runner.start(ID.format(1), MODEL, PARAMS, messages=[{"role": "user", "content": "hi"}])
    outcome = await runner.run(job, send)
    assert "".join(text for _, text in sent) == outcome.text == expected
    seqs = [seq for seq, _ in sent]
    assert seqs == sorted(seqs) and seqs[-1] == outcome.metrics["tokens"] == 40
    assert outcome.metrics["reason"] == "length" and outcome.metrics["backend"] == "onnxruntime-cpu"
    assert runner.jobs == {} and runner.tok_s > 0


async def test_cancel_stops_the_job_and_says_cancelled(engines: dict) -> None:
    runner = Runner(engines, slots=1)
    job = runner.start(ID.format(1), MODEL, {"max_new_tokens": 4096}, prompt="hi")
    assert runner.cancel(job.id)

    async def send(seq: int, text: str) -> None:
        raise AssertionError("a cancelled job sent text")

    outcome = await runner.run(job, send)
    assert outcome.metrics["reason"] == "cancelled" and outcome.metrics["tokens"] == 0
    assert not runner.cancel(job.id)  # gone


async def test_drain_refuses_new_jobs_and_waits_for_the_running_one(engines: dict) -> None:
    runner = Runner(engines, slots=2)
    job = runner.start(ID.format(1), MODEL, PARAMS, prompt="hi")
    release = asyncio.Event()

    async def send(seq: int, text: str) -> None:
        await release.wait()  # the job cannot end before the test lets it

    running = asyncio.create_task(runner.run(job, send))
    draining = asyncio.create_task(runner.drain(60))
    await asyncio.sleep(0)  # both tasks start: the drain closes the runner before its first wait
    with pytest.raises(Refused) as closed:
        runner.start(ID.format(2), MODEL, PARAMS, prompt="hi")
    assert closed.value.code == "not_ready" and not draining.done()
    release.set()
    await draining
    assert running.done() and (await running).metrics["reason"] == "length"


async def test_the_peer_acks_a_refusal_and_stays_up(engines: dict) -> None:
    peer = WorkerPeer(Runner(engines, slots=1), server="http://127.0.0.1:9", token="t", room="r", say=lambda line: None)
    unknown = await peer._on_job_run({"job_id": ID.format(1), "model": "other", "prompt": "hi", "params": {}})
    malformed = await peer._on_job_run({"job_id": ID.format(2), "model": MODEL, "params": {}})
    assert unknown["error"]["code"] == "unknown_model" and malformed["error"]["code"] == "invalid"
    ok = await peer._on_job_run({"job_id": ID.format(3), "model": MODEL, "prompt": "hi", "params": {"max_new_tokens": 4}})
    assert ok == {"ok": True} and ID.format(3) in peer.runner.jobs
    await peer.runner.drain(60)

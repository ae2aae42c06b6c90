"""inference-worker.js's `template` message: a conversation as its model reads it, for a model with a
chat template (a copy of the tiny model given one) and without (the tiny model's plain text), and
the oldest turns left out once they leave the answer too little of the context."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer, start_server
from playwright.async_api import Page
from tokenizers import Tokenizer

from browser.test_inference_worker import runtime, start
from mesh_nanollm.worker.chat import ChatTemplate

pytestmark = pytest.mark.browser

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "You may"},
    {"role": "assistant", "content": "You may copy the terms of this License."},
    {"role": "user", "content": "The Program"},
]
# An answer of about 200 of the tiny model's tokens: with it, 128 more no longer fit in 256.
LONG = [
    *MESSAGES[:2],
    {"role": "assistant", "content": "You may copy the terms of this License, " * 20},
    MESSAGES[3],
]


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict]]:
    """A server whose models are the tiny model and a copy of it with a ChatML template."""
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(MODELS_DIR / "tiny-gpt2", models / "tiny-gpt2")
    shutil.copytree(MODELS_DIR / "tiny-gpt2", models / "tiny-chat")
    config = json.loads((models / "tiny-chat" / "tokenizer_config.json").read_text())
    config["chat_template"] = CHATML
    (models / "tiny-chat" / "tokenizer_config.json").write_text(json.dumps(config))
    server = start_server(tmp_path_factory.mktemp("chat-server"), MODELS_DIR=str(models))
    yield server, config
    server.stop()


async def template(
    page: Page, server: LiveServer, model: str, messages: list[dict], max_new_tokens: int
) -> dict:
    worker = await start(page, server)
    await worker.send(
        {"type": "init", "runtime": runtime(), "device": "wasm", "local_model_path": "/models/"}
    )
    await worker.until("backend")
    message = {
        "type": "template",
        "id": "t1",
        "model": model,
        "source": "local",
        "messages": messages,
    }
    await worker.send(message | {"max_new_tokens": max_new_tokens, "max_chars": 8000})
    return (await worker.until("templated", timeout=60_000))[-1]


def tokens(text: str) -> int:
    return len(
        Tokenizer.from_file(str(MODELS_DIR / "tiny-gpt2" / "tokenizer.json")).encode(text).ids
    )


async def test_a_chat_template_renders_the_conversation_as_python_does(
    chat_server: tuple[LiveServer, dict], page: Page
) -> None:
    server, config = chat_server
    done = await template(page, server, "tiny-chat", MESSAGES, 16)
    assert done["trimmed"] == 0 and done["messages"] == MESSAGES and done["context_limit"] == 256
    # The worker's rendering is the headless worker's (Jinja), which is what a peer of either kind reads.
    assert done["prompt"] == ChatTemplate(config).render(MESSAGES)
    assert done["prompt"].endswith(
        "<|im_start|>user\nThe Program<|im_end|>\n<|im_start|>assistant\n"
    )
    assert done["prompt_tokens"] == tokens(done["prompt"])


async def test_the_oldest_turns_make_way_for_the_answer(
    chat_server: tuple[LiveServer, dict], page: Page
) -> None:
    server, config = chat_server
    # 128 tokens for the answer (half the context) no longer fit beside the long answer: it goes,
    # with the question before it; the system prompt and the new question stay.
    done = await template(page, server, "tiny-chat", LONG, 200)
    kept = [LONG[0], LONG[3]]
    assert done["trimmed"] == 2 and done["messages"] == kept
    assert done["prompt"] == ChatTemplate(config).render(kept)
    assert done["prompt_tokens"] + 128 <= 256 < tokens(ChatTemplate(config).render(LONG)) + 128


async def test_a_model_without_a_template_reads_plain_lines(
    chat_server: tuple[LiveServer, dict], page: Page
) -> None:
    server, _ = chat_server
    done = await template(page, server, "tiny-gpt2", MESSAGES[:2], 16)
    assert done["prompt"] == "system: Be brief.\nuser: You may\nassistant:"
    assert done["trimmed"] == 0 and done["prompt_tokens"] == tokens(done["prompt"])

"""The worker's engine on the tiny model: sampling, cancel, resume, bad models and bad params, chat templates."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from mesh_nanollm.worker.engine import Engine, EngineError, load_engine

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
PROMPT = "The licence"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return load_engine("tiny-gpt2", models_dir=MODELS_DIR)


def run(engine: Engine, params: dict, prompt: str = PROMPT, **kwargs) -> tuple[list[int], str, str]:
    generation = engine.generate(prompt, params, threading.Event(), **kwargs)
    text = "".join(generation)
    return generation.token_ids, text, generation.finish_reason


def test_load_reports_backend_dtype_and_context(engine: Engine) -> None:
    assert engine.model == "tiny-gpt2" and engine.backend == "onnxruntime-cpu"
    assert engine.context_length == 256


def test_greedy_stops_at_max_new_tokens(engine: Engine) -> None:
    ids, text, reason = run(engine, {"max_new_tokens": 12})
    assert len(ids) == 12 and reason == "length" and text


def test_sampling_with_a_seed_repeats_and_another_seed_differs(engine: Engine) -> None:
    params = {"temperature": 1.2, "seed": 42, "max_new_tokens": 30}
    first = run(engine, params)
    assert run(engine, params) == first
    assert run(engine, {**params, "seed": 43})[0] != first[0]


def test_top_k_one_equals_greedy(engine: Engine) -> None:
    greedy = run(engine, {"max_new_tokens": 30})
    assert run(engine, {"temperature": 1.5, "top_k": 1, "seed": 5, "max_new_tokens": 30}) == greedy


def test_top_p_narrows_sampling_to_the_most_likely_token(engine: Engine) -> None:
    # A nucleus this small always holds just the most likely token: greedy again.
    greedy = run(engine, {"max_new_tokens": 20})
    assert run(engine, {"temperature": 1.0, "top_p": 0.01, "seed": 9, "max_new_tokens": 20}) == greedy


def test_repetition_penalty_changes_the_greedy_answer(engine: Engine) -> None:
    assert run(engine, {"max_new_tokens": 40, "repetition_penalty": 1.0})[0] != run(engine, {"max_new_tokens": 40, "repetition_penalty": 2.0})[0]


def test_cancel_stops_within_one_step(engine: Engine) -> None:
    cancelled = threading.Event()
    generation = engine.generate(PROMPT, {"max_new_tokens": 200}, cancelled)
    for count, _ in enumerate(generation, start=1):
        if count == 3:
            tokens_then = generation.tokens
            cancelled.set()
    assert generation.finish_reason == "cancelled"
    assert generation.tokens == tokens_then


def test_cancel_before_the_first_step_generates_nothing(engine: Engine) -> None:
    cancelled = threading.Event()
    cancelled.set()
    generation = engine.generate(PROMPT, {}, cancelled)
    assert list(generation) == [] and generation.tokens == 0 and generation.finish_reason == "cancelled"


def test_resume_continues_the_answer_so_far(engine: Engine) -> None:
    _, text, _ = run(engine, {"max_new_tokens": 30})
    cut = text.rindex(" ", 0, len(text) // 2) + 1  # the answer so far, ending in a space as streamed
    resumed = engine.generate(PROMPT, {"max_new_tokens": 30}, threading.Event(), resume_text=text[:cut])
    rest = "".join(resumed)
    assert text[:cut] + rest == text
    assert resumed.resumed_tokens + resumed.tokens == 30 and resumed.finish_reason == "length"
    # With stop strings (the last characters held back until none can start there): the same text.
    held = engine.generate(PROMPT, {"max_new_tokens": 30, "stop": ["never said"]}, threading.Event(), resume_text=text[:cut])
    assert "".join(held) == rest
    # count_resumed=False (API jobs): max_new_tokens is what this attempt may add.
    more = engine.generate(PROMPT, {"max_new_tokens": 30}, threading.Event(), resume_text=text[:cut], count_resumed=False)
    list(more)
    assert more.tokens == 30


def test_default_length_is_the_pipelines_capped_by_the_context(engine: Engine) -> None:
    generation = engine.generate("You may", {}, threading.Event())
    list(generation)
    assert generation.prompt_tokens + generation.tokens == 256 or generation.finish_reason == "stop"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"temperature": 3}, "params.temperature"),
        ({"max_new_tokens": 0}, "params.max_new_tokens"),
        ({"max_new_tokens": 2.5}, "params.max_new_tokens"),
        ({"top_k": -1}, "params.top_k"),
        ({"top_p": 0}, "params.top_p"),
        ({"repetition_penalty": 0.5}, "params.repetition_penalty"),
        ({"seed": "x"}, "params.seed"),
        ({"max_new_tokens": True}, "params.max_new_tokens"),
        ({"stop": "x"}, "params.stop"),
        ({"stop": [""]}, "params.stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "params.stop"),
        ([], "params must be an object"),
    ],
)
def test_bad_params_raise_a_clear_error(engine: Engine, params, words: str) -> None:
    with pytest.raises(EngineError, match=words.replace(".", r"\.")):
        engine.generate(PROMPT, params, threading.Event())


def test_unknown_params_are_ignored(engine: Engine) -> None:
    assert run(engine, {"max_new_tokens": 5, "min_p": 0.1})[0] == run(engine, {"max_new_tokens": 5})[0]


@pytest.mark.parametrize("stop", ["License", "the", "\n", "nditi"])
def test_a_stop_string_ends_the_answer_before_it_counting_the_token_that_completed_it(engine: Engine, stop: str) -> None:
    prompt = "Permission is hereby granted"
    ids, whole, _ = run(engine, {"max_new_tokens": 60}, prompt)
    assert stop in whole  # greedy: the same answer, up to the stop string
    completed = next(n for n in range(1, len(ids) + 1) if stop in engine.decoder.decode(ids[:n]))

    generation = engine.generate(prompt, {"max_new_tokens": 60, "stop": ["never said", stop]}, threading.Event())
    pieces = list(generation)

    assert "".join(pieces) == whole[: whole.index(stop)] and generation.finish_reason == "stop"
    assert generation.tokens == completed and generation.token_ids == ids[:completed]


def test_prompt_over_the_context_is_refused(engine: Engine) -> None:
    with pytest.raises(EngineError, match="reads at most 255"):
        engine.generate("you " * 400, {}, threading.Event())


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    shutil.copytree(MODELS_DIR / "tiny-gpt2", tmp_path / "copy")
    return tmp_path


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="'nope' is neither a folder in"):
        load_engine("nope", models_dir=tmp_path)


def test_missing_onnx_file_is_a_clear_error(model_copy: Path) -> None:
    (model_copy / "copy" / "onnx" / "model_quantized.onnx").unlink()
    with pytest.raises(EngineError, match="has no fp32 weights|has no q8 weights"):
        load_engine("copy", models_dir=model_copy, dtype="q8")


def test_corrupt_onnx_file_is_a_clear_error(model_copy: Path) -> None:
    (model_copy / "copy" / "onnx" / "model.onnx").write_bytes(b"not a model at all")
    with pytest.raises(EngineError, match="onnxruntime cannot load") as error:
        load_engine("copy", models_dir=model_copy, dtype="fp32")
    assert "\n" not in str(error.value)


def test_corrupt_json_is_a_clear_error(model_copy: Path) -> None:
    (model_copy / "copy" / "config.json").write_text("{broken")
    with pytest.raises(EngineError, match="config.json is not valid JSON"):
        load_engine("copy", models_dir=model_copy)


def test_unknown_dtype_and_device_are_clear_errors() -> None:
    with pytest.raises(EngineError, match="Unknown dtype 'q3'"):
        load_engine("tiny-gpt2", models_dir=MODELS_DIR, dtype="q3")
    with pytest.raises(EngineError, match="Unknown device 'tpu'"):
        load_engine("tiny-gpt2", models_dir=MODELS_DIR, device="tpu")


def test_cuda_runs_on_the_gpu_or_says_what_is_missing() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():  # a GPU machine
        assert load_engine("tiny-gpt2", models_dir=MODELS_DIR, device="cuda").backend == "onnxruntime-cuda"
        return
    with pytest.raises(EngineError, match="--device cuda needs onnxruntime-gpu"):
        load_engine("tiny-gpt2", models_dir=MODELS_DIR, device="cuda")


def test_a_model_without_template_gets_the_room_fallback(engine: Engine) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert not engine.has_chat_template
    assert engine.prompt_for(messages) == "system: Be brief.\nuser: Hi\nassistant:"


# A ChatML template like SmolLM2's, with a default system message and the special tokens as variables.
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are kind.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_chat_template_renders_with_the_generation_prompt(model_copy: Path) -> None:
    config_path = model_copy / "copy" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    engine = load_engine("copy", models_dir=model_copy)
    assert engine.has_chat_template
    rendered = engine.prompt_for([{"role": "user", "content": "Hi there"}])
    assert rendered == "<|endoftext|><|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    ids, _, _ = run(engine, {"max_new_tokens": 5}, prompt=rendered)
    assert len(ids) == 5


def test_a_template_that_raises_is_a_clear_error(model_copy: Path) -> None:
    config_path = model_copy / "copy" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    template = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversations start with a user.') }}{% endif %}ok"
    config_path.write_text(json.dumps({**config, "chat_template": template}))
    engine = load_engine("copy", models_dir=model_copy)
    with pytest.raises(EngineError, match="Conversations start with a user"):
        engine.prompt_for([{"role": "assistant", "content": "Hi"}])


def test_streamed_pieces_never_split_a_character(engine: Engine) -> None:
    from mesh_nanollm.worker.engine import TextStreamer

    text = "Café naïve 日本語の文章 and “quotes” — done.\nNext line"
    ids = engine.tokenizer.encode(text).ids
    assert len(ids) > len(text.split())  # some characters take several byte-level tokens
    streamer = TextStreamer(engine.decoder)
    pieces = [streamer.put(i) for i in ids] + [streamer.end()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert engine.decoder.decode(ids) == engine.tokenizer.decode(ids)


def test_a_hub_model_out_of_reach_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    # Offline with an empty cache: the download fails here, without a request leaving the machine.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(EngineError, match="Could not download Xenova/distilgpt2 from the hub") as error:
        load_engine("Xenova/distilgpt2", models_dir=MODELS_DIR)
    assert "\n" not in str(error.value)

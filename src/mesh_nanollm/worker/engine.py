"""One loaded model on onnxruntime: the prompt, then decoding with the KV cache, streamed as text
pieces the way the room page's transformers.js worker streams them (static/js/inference-worker.js)."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from mesh_nanollm.worker.chat import ChatTemplate
from mesh_nanollm.worker.model_files import EngineError, find_model
from mesh_nanollm.worker.sampling import RepetitionPenalty, greedy, sample

__all__ = ["Engine", "EngineError", "Generation", "load_engine"]

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
SAFE_INTEGER = 2**53 - 1
PIPELINE_MAX_NEW_TOKENS = 256
STOPS_MAX, STOP_LENGTH_MAX = 4, 64  # an API job's stop strings, as the gateway takes them
ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def load_engine(model: str, *, models_dir: Path | None, device: str = "cpu", dtype: str | None = None) -> Engine:
    """The model ready to generate, or an EngineError saying what is missing or broken."""
    if device not in PROVIDERS:
        raise EngineError(f"Unknown device {device!r}; use cpu or cuda.")
    if device == "cuda" and PROVIDERS["cuda"] not in ort.get_available_providers():
        raise EngineError("--device cuda needs onnxruntime-gpu with CUDA (install the cuda extra); this onnxruntime has only the CPU.")
    files = find_model(model, models_dir, dtype)
    return Engine(model, files.folder, files.weights, device)


def _read_json(path: Path, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise EngineError(f"{path} is missing.")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise EngineError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise EngineError(f"{path} is not a JSON object.")
    return data


class Engine:
    def __init__(self, model: str, folder: Path, weights: Path, device: str) -> None:
        self.model = model
        self.backend = f"onnxruntime-{device}"
        self.config = _read_json(folder / "config.json", required=True)
        self.generation_config = _read_json(folder / "generation_config.json", required=False)
        tokenizer_config = _read_json(folder / "tokenizer_config.json", required=False)
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as error:  # the Rust side raises a bare Exception for a broken file
            raise EngineError(f"{folder / 'tokenizer.json'} is not a tokenizer: {error}") from error
        self.chat = ChatTemplate(tokenizer_config)
        # The text-generation pipeline adds special tokens to a plain prompt only for BOS/EOS-adding
        # tokenizers, and never to a rendered chat template.
        self.add_special_tokens = bool(tokenizer_config.get("add_bos_token") or tokenizer_config.get("add_eos_token"))
        self.decoder = Decoder(self.tokenizer, _read_json(folder / "tokenizer.json", required=True), tokenizer_config)
        limit = next((self.config[k] for k in ("max_position_embeddings", "n_positions", "n_ctx") if self.config.get(k)), 0)
        self.context_length: int = int(limit)
        eos = self.generation_config.get("eos_token_id", self.config.get("eos_token_id"))
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        try:
            self.session = ort.InferenceSession(str(weights), providers=[PROVIDERS[device]])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf types, all Exception
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise EngineError(f"onnxruntime cannot load {weights}: {first_line}") from error
        if device == "cuda" and self.session.get_providers()[0] != PROVIDERS["cuda"]:
            raise EngineError("CUDA is installed but onnxruntime could not start it (check the CUDA and cuDNN libraries).")
        self._read_graph()

    def _read_graph(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in inputs:
            raise EngineError(f"{self.model}'s ONNX file has no input_ids input: not a text-generation export.")
        self.input_names = set(inputs)
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.output_names[0] != "logits":
            raise EngineError(f"{self.model}'s ONNX file does not output logits first.")
        heads = self.config.get("num_key_value_heads") or self.config.get("num_attention_heads") or self.config.get("n_head")
        width = self.config.get("hidden_size") or self.config.get("n_embd") or 0
        head_dim = self.config.get("head_dim") or (width // heads if heads else 0)
        # present.N.key (output) feeds past_key_values.N.key (input) at the next step.
        self.cache_inputs = [n.replace("present", "past_key_values", 1) for n in self.output_names[1:]]
        if not self.cache_inputs:
            raise EngineError(f"{self.model}'s ONNX file has no KV cache (present.*): export it with past.")
        self.empty_cache = {}
        for name in self.cache_inputs:
            if name not in inputs:
                raise EngineError(f"{self.model}'s ONNX file outputs a cache without the {name} input: export it with past.")
            shape = inputs[name].shape
            dims = [1, shape[1] if isinstance(shape[1], int) else heads, 0, shape[3] if isinstance(shape[3], int) else head_dim]
            self.empty_cache[name] = ort.OrtValue.ortvalue_from_numpy(np.zeros(dims, ONNX_TYPES.get(inputs[name].type, np.float32)))
        vocab = self.session.get_outputs()[0].shape[-1]
        self.vocab_size = vocab if isinstance(vocab, int) else int(self.config.get("vocab_size") or 0)

    @property
    def has_chat_template(self) -> bool:
        return self.chat.template is not None

    def prompt_for(self, messages: list[dict]) -> str:
        return self.chat.render(messages)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens and not self.has_chat_template).ids

    def generate(
        self,
        prompt: str,
        params: dict,
        cancelled: threading.Event,
        resume_text: str = "",
        *,
        count_resumed: bool = True,
    ) -> Generation:
        """A generation ready to iterate; bad parameters or a prompt over the context raise EngineError now."""
        received = time.perf_counter()
        options = self._options(params)
        ids = self.encode(prompt)
        if not ids:
            raise EngineError("The prompt is empty once tokenised.")
        if self.context_length and len(ids) >= self.context_length:
            raise EngineError(f"The prompt is {len(ids)} tokens; this model reads at most {self.context_length - 1}.")
        # Failover: the answer so far is replayed as the first generated tokens (as the browser does);
        # trailing whitespace is left for the model to write again, and not sent twice.
        kept = resume_text.rstrip()
        resumed = self._answer_tokens(prompt, ids, kept) if kept else []
        budget = options["max_new_tokens"]
        if not count_resumed:
            budget += len(resumed)
        if self.context_length:
            budget = min(budget, self.context_length - len(ids))
        return Generation(self, ids, resumed, resume_text[len(kept):], budget, options, cancelled, received)

    def _answer_tokens(self, prompt: str, ids: list[int], answer: str) -> list[int]:
        whole = self.encode(prompt + answer)
        if whole[: len(ids)] == ids:
            return whole[len(ids):]
        return self.encode(answer)  # the answer's first word merged into the prompt's last

    def _options(self, params: dict) -> dict[str, Any]:
        """The job parameters as static/js/protocol.js bounds them; the generation_config fills the rest."""
        if not isinstance(params, dict):
            raise EngineError("params must be an object.")

        def number(key: str, lo: float, hi: float, integer: bool = False) -> Any:
            value = params.get(key)
            if value is None:
                return None
            kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not kind_ok or math.isnan(value) or not lo <= value <= hi:
                kind = "an integer" if integer else "a number"
                raise EngineError(f"params.{key} must be {kind} from {lo} to {hi}, not {value!r}.")
            return value

        top_p = number("top_p", 0, 1)
        if top_p == 0:
            raise EngineError("params.top_p must be above 0.")
        temperature = number("temperature", 0, 2) or 0
        top_k = number("top_k", 0, 1000, integer=True)
        seed = number("seed", -SAFE_INTEGER, SAFE_INTEGER, integer=True)
        penalty = number("repetition_penalty", 1, 2)
        # transformers.js's text-generation pipeline asks for 256 new tokens unless told otherwise,
        # over the generation_config's max_new_tokens: the browser's default is this one.
        max_new = number("max_new_tokens", 1, 4096, integer=True) or PIPELINE_MAX_NEW_TOKENS
        stop = params.get("stop") or []
        if not (isinstance(stop, list) and len(stop) <= STOPS_MAX
                and all(isinstance(s, str) and 1 <= len(s) <= STOP_LENGTH_MAX for s in stop)):
            raise EngineError(f"params.stop must be a list of at most {STOPS_MAX} strings of 1 to {STOP_LENGTH_MAX} characters.")
        return {
            "max_new_tokens": max_new,
            "repetition_penalty": penalty if penalty is not None else float(self.generation_config.get("repetition_penalty") or 1),
            "do_sample": temperature > 0,
            "temperature": temperature,
            # An absent or zero top_k leaves the model's own, else transformers.js's default of 50.
            "top_k": top_k or int(self.generation_config.get("top_k", 50)),
            "top_p": top_p if top_p is not None else 1.0,
            # A negative seed is not honoured (docs/mesh.md): such a job samples unseeded.
            "seed": seed if seed is not None and seed >= 0 else None,
            "stop": tuple(stop),
        }


class Generation:
    """An iterator of decoded text pieces; tokens, ttft_ms, tok_s and finish_reason are final once it ends."""

    def __init__(
        self,
        engine: Engine,
        ids: list[int],
        resumed: list[int],
        owed: str,
        budget: int,
        options: dict[str, Any],
        cancelled: threading.Event,
        received: float,
    ) -> None:
        self.prompt_tokens = len(ids)
        self.resumed_tokens = len(resumed)
        self.token_ids: list[int] = []  # generated this attempt, as the model chose them
        self.tokens = 0
        self.ttft_ms: float | None = None
        self.tok_s: float | None = None
        self.finish_reason = "length"
        self._pieces = self._run(engine, ids, resumed, owed, budget, options, cancelled, received)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def _run(self, engine: Engine, ids, resumed, owed, budget, options, cancelled, received) -> Iterator[str]:
        if resumed and budget <= len(resumed):
            return
        vocab = engine.vocab_size
        penalty = RepetitionPenalty(options["repetition_penalty"], vocab, ids) if options["repetition_penalty"] != 1 else None
        rng = random.Random(options["seed"])
        streamer = TextStreamer(engine.decoder)
        # With stop strings, the answer ends where the first one starts (it and what follows are
        # never sent), and the last few characters wait until no stop string can start in them.
        stops = options["stop"]
        hold = max((len(s) for s in stops), default=1) - 1
        released = ""  # what the streamer let go of so far
        sent = checked = 0  # how much of it went out; how much was searched for stop strings
        cut = -1  # where the first stop string starts, once one came
        cache = dict(engine.empty_cache)
        step_ids = ids
        past = 0
        generated = 0
        first = last = 0.0
        while True:
            if cancelled.is_set():
                self.finish_reason = "cancelled"
                break
            logits, cache = _forward(engine, step_ids, past, cache)
            past += len(step_ids)
            if generated < len(resumed):
                token = resumed[generated]
            else:
                if penalty is not None:
                    penalty.apply(logits)
                if options["do_sample"]:
                    token = sample(logits, rng, options["temperature"], options["top_k"], options["top_p"])
                else:
                    token = greedy(logits)
            if penalty is not None:
                penalty.add(token)
            generated += 1
            if generated > len(resumed):
                last = time.perf_counter()
                first = first or last
                self.token_ids.append(token)
                self.tokens += 1
                if self.tokens == 1:
                    self.ttft_ms = (first - received) * 1000
                text = streamer.put(token)
                if stops:
                    released += text
                    whole = released + streamer.pending
                    start, checked = max(0, checked - hold), len(whole)
                    cut = min((i for s in stops if (i := whole.find(s, start)) >= 0), default=-1)
                    end = cut if cut >= 0 else len(released) - hold
                    text = whole[sent:end] if end > sent else ""
                    sent = max(sent, end)
                if owed and text:
                    same = len(_common_prefix(owed, text))
                    text = text[same:]
                    owed = "" if text else owed[same:]
                if text:
                    yield text
            if cut >= 0:  # as a generator stopping at a stop string: its last token completed it
                self.finish_reason = "stop"
                break
            if token in engine.eos_ids:
                self.finish_reason = "stop"
                break
            if generated >= budget:
                self.finish_reason = "length"
                break
            step_ids = [token]
        tail = "" if cut >= 0 else released[sent:] + streamer.end()
        if stops and owed:  # the held text has not been through the debt yet
            tail = tail[len(_common_prefix(owed, tail)):]
        if tail:
            yield tail
        if self.tokens > 1 and last > first:
            self.tok_s = (self.tokens - 1) / (last - first)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return a[:n]


def _forward(engine: Engine, step_ids: list[int], past: int, cache: dict) -> tuple[np.ndarray, dict]:
    """One decoding step; the cache goes from step to step as onnxruntime's own values, never
    through numpy, so that with CUDA it can stay on the GPU."""
    n = len(step_ids)
    feeds = dict(cache)
    feeds["input_ids"] = ort.OrtValue.ortvalue_from_numpy(np.array([step_ids], dtype=np.int64))
    if "attention_mask" in engine.input_names:
        feeds["attention_mask"] = ort.OrtValue.ortvalue_from_numpy(np.ones((1, past + n), dtype=np.int64))
    if "position_ids" in engine.input_names:
        feeds["position_ids"] = ort.OrtValue.ortvalue_from_numpy(np.arange(past, past + n, dtype=np.int64)[None, :])
    outputs = engine.session.run_with_ort_values(engine.output_names, feeds)
    logits = outputs[0].numpy()[0, -1]  # the penalty changes it in place; onnxruntime is done with it
    if logits.dtype != np.float32:  # fp16 models: transformers.js samples from float32 too
        logits = logits.astype(np.float32)
    return logits, dict(zip(engine.cache_inputs, outputs[1:], strict=True))


class TextStreamer:
    """transformers.js's TextStreamer (skip_prompt, skip_special_tokens): a word is sent once the
    next space arrives, a line at its newline, CJK characters at once, the rest at the end."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.text = Text(decoder)  # of the tokens since the last line break
        self.printed = 0

    def put(self, token: int) -> str:
        if token in self.decoder.special_ids:
            return ""
        text = self.text.add(token)
        if text.endswith("\n"):
            piece = text[self.printed:]
            self.text = Text(self.decoder)
            self.printed = 0
            return piece
        if text and _is_cjk(ord(text[-1])):
            piece = text[self.printed:]
        else:
            piece = text[self.printed: text.rfind(" ") + 1]
        self.printed += len(piece)
        return piece

    @property
    def pending(self) -> str:
        """The text of the tokens so far that `put` has not let go of yet."""
        return self.text.value[self.printed:]

    def end(self) -> str:
        piece = self.text.value[self.printed:]
        self.text = Text(self.decoder)
        self.printed = 0
        return piece


class Text:
    """The decoded text of a growing list of tokens. transformers.js decodes the whole list again at
    every token; for a byte-level BPE the same text comes from keeping the bytes so far, in C."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.ids: list[int] = []
        self.closed = ""  # text before the last added token (added tokens end a byte run)
        self.run = bytearray()
        self.value = ""

    def add(self, token: int) -> str:
        decoder = self.decoder
        if not decoder.byte_level:
            self.ids.append(token)
            self.value = decoder.decode(self.ids)
            return self.value
        if token in decoder.added:
            self.closed += self.run.decode("utf-8", "replace") + decoder.added[token]
            self.run.clear()
        else:
            self.run += decoder.token_bytes(token)
        text = self.closed + self.run.decode("utf-8", "replace")
        self.value = _clean_up(text) if decoder.clean_up else text
        return self.value


class Decoder:
    """Token ids to text as transformers.js's tokenizer decodes them (skip_special_tokens): for a
    byte-level BPE, its own way (tokens to bytes, added tokens as they are, a lossy UTF-8 decode),
    which is also far cheaper than asking `tokenizers` again for the whole cache at every token;
    otherwise `tokenizers`. Then its clean-up of spaces before punctuation, when the model asks."""

    def __init__(self, tokenizer: Tokenizer, tokenizer_json: dict[str, Any], tokenizer_config: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = {i for i, t in added.items() if t.special}
        self.added = {i: t.content for i, t in added.items()}
        self.clean_up = tokenizer_config.get("clean_up_tokenization_spaces", True) is not False
        decoder = tokenizer_json.get("decoder") or {}
        self.byte_level = decoder.get("type") == "ByteLevel"
        self.bytes: dict[int, bytes] = {}

    def decode(self, ids: list[int]) -> str:
        if self.byte_level:
            text = Text(self)
            for i in ids:
                if i not in self.special_ids:
                    text.add(i)
            return text.value
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return _clean_up(text) if self.clean_up else text

    def token_bytes(self, i: int) -> bytes:
        known = self.bytes.get(i)
        if known is None:
            token = self.tokenizer.id_to_token(i) or ""
            known = self.bytes[i] = bytes(UNICODE_TO_BYTE[c] for c in token if c in UNICODE_TO_BYTE)
        return known


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 byte values, reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


UNICODE_TO_BYTE = _byte_alphabet()
CLEAN_UPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _clean_up(text: str) -> str:
    for old, new in CLEAN_UPS:
        text = text.replace(old, new)
    return text


def _is_cjk(cp: int) -> bool:
    # transformers.js tests a UTF-16 code unit, so only these planes' ideographs ever match.
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF

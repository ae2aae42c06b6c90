#!/usr/bin/env python3
"""Build the tiny offline text-generation model used by Mesh NanoLLM's tests.

The result is a ~1 MB GPT-2-style model laid out the way transformers.js
(npm ``@huggingface/transformers`` 4.x) loads a local model::

    <out>/config.json
    <out>/generation_config.json
    <out>/tokenizer.json
    <out>/tokenizer_config.json
    <out>/special_tokens_map.json
    <out>/onnx/model.onnx             (fp32,  dtype "fp32")
    <out>/onnx/model_quantized.onnx   (uint8, dtype "q8")
    <out>/README.md                   (written from this build's numbers)

Steps: train a byte-level BPE tokenizer (vocab 2000) on the licence texts that
Debian ships in /usr/share/common-licenses, train a 2-layer GPT-2 (n_embd 64,
4 heads, n_positions 256) on the same text for a fixed number of steps on the
CPU with a fixed seed, export it to ONNX with optimum
(task ``text-generation-with-past``), quantize it with onnxruntime's
``quantize_dynamic`` (QUInt8 weights), then run greedy generation with
onnxruntime on both files as a smoke test, failing unless most generated
words are words of the training text. Its output is barely coherent: it is a
test fixture, not a useful model.

The toolchain is heavy (torch) and is NOT a dependency of the project. Put it
in a throwaway virtualenv outside the repository. Install torch first, on its
own, so that pip picks the CPU-only build instead of a multi-GB CUDA one::

    python3 -m venv /tmp/modelenv
    /tmp/modelenv/bin/pip install torch==2.13.0
    /tmp/modelenv/bin/pip install "transformers>=4.57,<4.58" optimum==2.1.0 \\
        optimum-onnx==0.1.0 accelerate onnxruntime onnx tokenizers

(optimum-onnx 0.1.0 requires transformers < 4.58; without accelerate the
export writes the tied lm_head weight a second time and the file doubles.)

Usage, from the repository root::

    /tmp/modelenv/bin/python scripts/build_tiny_model.py
    /tmp/modelenv/bin/python scripts/build_tiny_model.py --out models/tiny-gpt2 \\
        --data-dir /usr/share/common-licenses --steps 1000 --seed 1234

Options: ``--out`` output folder (default ``models/tiny-gpt2``, replaced
whole), ``--data-dir`` folder of plain-text training files (default
``/usr/share/common-licenses``; symlinks to the same file are read once),
``--steps`` training steps (default 1000, about a minute on two cores),
``--seed`` (default 1234), ``--threads`` torch CPU threads (default 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

VOCAB_SIZE = 2000
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_POSITIONS = 256
SEQ_LEN = 128
BATCH_SIZE = 16
LEARNING_RATE = 3e-3
EOS = "<|endoftext|>"
REPETITION_PENALTY = 1.2
PROMPTS = ("The licence", "You may")


def log(msg: str) -> None:
    print(msg, flush=True)


def read_corpus(data_dir: Path) -> tuple[list[str], list[str]]:
    """Return (file names, documents). Each file is one document.

    Symlinks (GPL -> GPL-3, ...) are resolved so each text is read once.
    Lines inside a paragraph are joined and runs of spaces collapsed, so the
    model learns prose rather than the files' column layout.
    """
    seen: dict[Path, str] = {}
    for path in sorted(data_dir.iterdir()):
        real = path.resolve()
        if real.is_file() and real not in seen:
            seen[real] = path.name
    names, docs = [], []
    for real, name in sorted(seen.items(), key=lambda kv: kv[1]):
        raw = real.read_text(encoding="utf-8", errors="replace")
        paragraphs = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", raw)]
        text = "\n\n".join(p for p in paragraphs if p)
        if text:
            names.append(real.name)
            docs.append(text)
    if not docs:
        sys.exit(f"no text files in {data_dir}")
    return names, docs


def build_tokenizer(docs: list[str], out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    # GPT2TokenizerFast so that tokenizer_config.json names "GPT2Tokenizer",
    # a class transformers.js knows. No padding token beyond EOS, like GPT-2.
    fast = GPT2TokenizerFast(
        tokenizer_object=tok,
        add_prefix_space=False,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=N_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(out)
    return fast


def train_model(
    token_ids: list[int], tokenizer, steps: int, seed: int, threads: int, save_dir: Path
):
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=N_POSITIONS,
        n_embd=N_EMBD,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters, {len(token_ids):,} training tokens")

    data = torch.tensor(token_ids, dtype=torch.long)
    n_windows = len(data) - SEQ_LEN - 1
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return LEARNING_RATE * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return LEARNING_RATE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    t0 = time.time()
    losses = []
    for step in range(steps):
        starts = torch.randint(0, n_windows, (BATCH_SIZE,), generator=gen)
        batch = torch.stack([data[s : s + SEQ_LEN] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step:4d}  loss {loss.item():.3f}  ({time.time() - t0:.0f}s)")
    model.eval()
    model.save_pretrained(save_dir, safe_serialization=True)
    tokenizer.save_pretrained(save_dir)
    gen_cfg = GenerationConfig(
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        max_new_tokens=40,
        do_sample=False,
        # Plain greedy decoding loops on "and the work, and the work, ...".
        repetition_penalty=REPETITION_PENALTY,
    )
    gen_cfg.save_pretrained(save_dir)
    return losses, n_params


def export_onnx(model_dir: Path, onnx_out: Path) -> None:
    from optimum.exporters.onnx import main_export

    main_export(
        model_name_or_path=str(model_dir),
        output=str(onnx_out),
        task="text-generation-with-past",
        local_files_only=True,
        do_validation=True,
    )


def quantize(fp32: Path, q8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(q8), weight_type=QuantType.QUInt8)


def greedy_generate(
    onnx_path: Path,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 30,
    repetition_penalty: float = 1.0,
) -> str:
    """Greedy decoding with onnxruntime, feeding the KV cache back in.

    repetition_penalty works as in transformers: the logit of every token
    already in the sequence is divided (if > 0) or multiplied (if < 0) by it.
    """
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_names = {i.name for i in sess.get_inputs()}
    output_names = [o.name for o in sess.get_outputs()]
    ids = tokenizer(prompt)["input_ids"]
    head_dim = N_EMBD // N_HEAD
    past = {
        f"past_key_values.{layer}.{kind}": np.zeros((1, N_HEAD, 0, head_dim), dtype=np.float32)
        for layer in range(N_LAYER)
        for kind in ("key", "value")
    }
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    generated: list[int] = []
    step_ids = ids
    total = len(ids)
    for _ in range(max_new_tokens):
        feeds = {
            "input_ids": np.array([step_ids], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            **past,
        }
        if "position_ids" in input_names:
            feeds["position_ids"] = np.arange(total - len(step_ids), total, dtype=np.int64)[None, :]
        outs = dict(zip(output_names, sess.run(None, feeds)))
        logits = outs["logits"][0, -1].copy()
        if repetition_penalty != 1.0:
            seen = np.array(sorted(set(ids + generated)))
            vals = logits[seen]
            logits[seen] = np.where(vals > 0, vals / repetition_penalty, vals * repetition_penalty)
        next_id = int(logits.argmax())
        if next_id == eos_id:
            break
        generated.append(next_id)
        for name in list(past):
            past[name] = outs[name.replace("past_key_values", "present")]
        step_ids = [next_id]
        total += 1
    return tokenizer.decode(ids + generated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/tiny-gpt2"))
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/common-licenses"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    t_start = time.time()
    out: Path = args.out
    names, docs = read_corpus(args.data_dir)
    log(f"corpus: {len(docs)} files, {sum(len(d) for d in docs):,} characters: {', '.join(names)}")

    with tempfile.TemporaryDirectory(prefix="tiny-gpt2-") as tmp:
        tmp_dir = Path(tmp)
        tok_dir = tmp_dir / "tokenizer"
        hf_dir = tmp_dir / "hf"
        onnx_dir = tmp_dir / "onnx-export"
        tokenizer = build_tokenizer(docs, tok_dir)
        eos_id = tokenizer.convert_tokens_to_ids(EOS)
        log(f"tokenizer: vocab {len(tokenizer)}, bos=eos={EOS!r} id {eos_id}")

        # Encode with the backend tokenizer: whole documents are longer than
        # model_max_length, which is fine here (training takes windows).
        token_ids: list[int] = []
        for enc in tokenizer.backend_tokenizer.encode_batch(docs):
            token_ids.extend(enc.ids)
            token_ids.append(eos_id)

        losses, n_params = train_model(
            token_ids, tokenizer, args.steps, args.seed, args.threads, hf_dir
        )
        log(
            f"loss: {losses[0]:.3f} -> {sum(losses[-20:]) / min(20, len(losses)):.3f} (mean of last 20 steps)"
        )

        log("exporting to ONNX ...")
        export_onnx(hf_dir, onnx_dir)

        if out.exists():
            shutil.rmtree(out)
        (out / "onnx").mkdir(parents=True)
        for name in (
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ):
            src = onnx_dir / name if (onnx_dir / name).exists() else hf_dir / name
            if src.exists():
                shutil.copy(src, out / name)
        shutil.copy(onnx_dir / "model.onnx", out / "onnx" / "model.onnx")
        if (onnx_dir / "model.onnx_data").exists():
            sys.exit("export wrote external data (model.onnx_data); expected a single file")

    log("quantizing (dynamic, QUInt8) ...")
    quantize(out / "onnx" / "model.onnx", out / "onnx" / "model_quantized.onnx")

    known_words = {w.lower() for doc in docs for w in re.findall(r"[A-Za-z]+", doc)}
    samples: list[tuple[str, float, str]] = []
    for rel in ("onnx/model.onnx", "onnx/model_quantized.onnx"):
        for prompt in PROMPTS:
            for penalty in (1.0, REPETITION_PENALTY):
                text = greedy_generate(out / rel, tokenizer, prompt, repetition_penalty=penalty)
                log(f"greedy ({rel}, repetition_penalty {penalty}): {text!r}")
                if rel.endswith("quantized.onnx"):
                    samples.append((prompt, penalty, text))
                words = re.findall(r"[A-Za-z]+", text[len(prompt) :])
                known = sum(w.lower() in known_words for w in words)
                if len(words) < 5 or known / len(words) < 0.8:
                    sys.exit(
                        f"smoke test failed: {known}/{len(words)} generated words are real words"
                    )

    write_readme(
        out,
        names=names,
        n_chars=sum(len(d) for d in docs),
        n_tokens=len(token_ids),
        n_params=n_params,
        eos_id=eos_id,
        args=args,
        losses=losses,
        samples=samples,
    )
    log("files:")
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        log(f"  {path.relative_to(out)}  {os.path.getsize(path):,} bytes")
    log(f"parameters: {n_params:,}; done in {time.time() - t_start:.0f}s")


def write_readme(
    out: Path, *, names, n_chars, n_tokens, n_params, eos_id, args, losses, samples
) -> None:
    from importlib.metadata import version

    tools = ", ".join(
        f"{pkg} {version(pkg)}"
        for pkg in (
            "torch",
            "transformers",
            "tokenizers",
            "optimum",
            "optimum-onnx",
            "onnxruntime",
            "onnx",
        )
    )
    files = "\n".join(
        f"| `{p.relative_to(out).as_posix()}` | {p.stat().st_size:,} |"
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "README.md"
    )
    sample_lines = "\n".join(
        f"- `{prompt}` (repetition_penalty {penalty}): {json.dumps(text, ensure_ascii=False)}"
        for prompt, penalty, text in samples
    )
    end_loss = sum(losses[-20:]) / min(20, len(losses))
    text = f"""# tiny-gpt2

A tiny GPT-2-style text-generation model built from scratch by
`scripts/build_tiny_model.py`, so that Mesh NanoLLM and its browser tests have
a real model that works offline. It is laid out the way transformers.js loads a
local model; the server serves it from its models folder (`MODELS_DIR`) at
`/models/tiny-gpt2/`.

**Its output is barely coherent**: licence-flavoured word salad made of real
words. It is a test fixture, not a useful model, and what it writes is not a
licence, nor legal advice.

## Model

- GPT-2 architecture: {N_LAYER} layers, n_embd {N_EMBD}, {N_HEAD} heads, n_positions
  {N_POSITIONS}, tied input/output embeddings; {n_params:,} parameters.
- Tokenizer: byte-level BPE (HF `tokenizers`), vocabulary {VOCAB_SIZE}, trained on the
  same text. One special token, `{EOS}` (id {eos_id}), is bos, eos, unk and pad.
  Inputs are `input_ids` and `attention_mask`; no BOS is prepended.
- `generation_config.json`: greedy (`do_sample: false`), `max_new_tokens: 40`,
  `repetition_penalty: {REPETITION_PENALTY}` (plain greedy loops on "and the work, and the work, ...").
- `onnx/model.onnx`: fp32, exported by optimum with task
  `text-generation-with-past` (inputs `input_ids`, `attention_mask`,
  `position_ids`, `past_key_values.*`; outputs `logits`, `present.*`).
  transformers.js `dtype: "fp32"`.
- `onnx/model_quantized.onnx`: the same, weights quantized by onnxruntime
  `quantize_dynamic` (QUInt8). transformers.js `dtype: "q8"`.

## Files

| file | bytes |
| --- | ---: |
{files}

## Training

- Data: the licence texts Debian ships in `/usr/share/common-licenses`
  (package `base-files`), each file read once (symlinks such as `GPL` -> `GPL-3`
  skipped), paragraphs re-flowed onto one line: {", ".join(names)}.
  {len(names)} files, {n_chars:,} characters, {n_tokens:,} tokens.
- {args.steps} steps of AdamW (lr {LEARNING_RATE}, warm-up then cosine), batch {BATCH_SIZE} random
  windows of {SEQ_LEN} tokens, seed {args.seed}, on the CPU.
- Training loss: {losses[0]:.2f} at the first step, {end_loss:.2f} (mean of the last 20 steps)
  at the end. This is loss on the training text itself; nothing is held out.
- Tools: {tools}.

## Samples

Greedy decoding of `onnx/model_quantized.onnx` with onnxruntime, 30 new tokens:

{sample_lines}

## Licence

The training texts are the licences themselves: copyrighted by their
stewards (the Free Software Foundation for the GNU licences, the Apache
Software Foundation, the Mozilla Foundation, Creative Commons, the Perl
Artistic licence's authors, the Regents of the University of California for
BSD), and all of them are published to be copied and distributed verbatim.
The model contains no copy of them, but it can reproduce short phrases from
them. The weights and
tokenizer are distributed with this repository, under the same terms as the
rest of it.

## Rebuild

See `docs/models.md`, or the docstring of `scripts/build_tiny_model.py`.
"""
    (out / "README.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

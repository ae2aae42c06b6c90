#!/usr/bin/env python3
"""Build a GPT-2 small-shaped model with random weights, for speed benchmarks (bench/worker).

Same layout and graph interface as models/tiny-gpt2 (what optimum's text-generation-with-past
export gives and transformers.js loads): inputs input_ids, attention_mask, position_ids and
past_key_values.N.key/value; outputs logits and present.N.key/value. Shape of GPT-2 small: 12
layers, n_embd 768, 12 heads, 1024 positions, vocab 50257 (124 M parameters, lm_head tied to the
token embedding). The graph is written with the onnx package, no torch. Its text is noise: this
is for measuring tokens per second, not for answers.

    <out>/config.json, generation_config.json, tokenizer.json, tokenizer_config.json
    <out>/onnx/model.onnx            (fp32, about 500 MB)
    <out>/onnx/model_quantized.onnx  (q8: onnxruntime's quantize_dynamic, QUInt8, about 125 MB)

The tokenizer is a byte-level BPE with 50257 entries trained on the machine's own text
(/usr/share/common-licenses, then /usr/share/doc, decompressed, about 40 MB).

onnx is not a dependency of the project: use a throwaway virtualenv outside the repository::

    python3 -m venv /tmp/modelenv
    /tmp/modelenv/bin/pip install onnx onnxruntime numpy tokenizers
    /tmp/modelenv/bin/python scripts/build_gpt2_small.py     # into bench/worker/models/ (git-ignored)

Options: --out (default bench/worker/models/gpt2-small-random), --seed (default 1234),
--layers (default 12, fewer for a quick try).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parents[1]
EMBD, HEADS, POSITIONS, VOCAB = 768, 12, 1024, 50257
TEXT_CHARS = 40_000_000
EOS = "<|endoftext|>"


def corpus() -> list[str]:
    texts, total = [], 0
    for path in sorted(Path("/usr/share/common-licenses").iterdir()):
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        if total > TEXT_CHARS:
            break
        if not path.is_file() or path.is_symlink():
            continue
        try:
            if path.suffix == ".gz":
                text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            elif path.suffix in ("", ".txt", ".md"):
                text = path.read_text(errors="replace")
            else:
                continue
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        texts.append(text)
        total += len(text)
    return texts


def build_tokenizer(out: Path) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer)
    if tok.get_vocab_size() != VOCAB:
        raise SystemExit(f"the tokenizer reached {tok.get_vocab_size()} entries, not {VOCAB}: too little text here")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": EOS, "eos_token": EOS, "unk_token": EOS,
        "clean_up_tokenization_spaces": False, "model_max_length": POSITIONS,
        "model_input_names": ["input_ids", "attention_mask"], "tokenizer_class": "GPT2Tokenizer",
    }, indent=2))


class Graph:
    """Nodes and initializers, with fresh names."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        self.count += 1
        name = f"{kind.lower()}_{self.count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [name], name=name, **attrs))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.weights.append(numpy_helper.from_array(value, name))
        return name

    def normal(self, name: str, shape: tuple[int, ...], std: float = 0.02) -> str:
        return self.const(name, self.rng.normal(0, std, shape).astype(np.float32))

    def linear(self, x: str, prefix: str, n_in: int, n_out: int, std: float = 0.02) -> str:
        weight = self.normal(f"{prefix}.weight", (n_in, n_out), std)
        bias = self.const(f"{prefix}.bias", np.zeros(n_out, np.float32))
        return self.op("Add", self.op("MatMul", x, weight), bias)

    def layer_norm(self, x: str, prefix: str) -> str:
        gain = self.const(f"{prefix}.weight", np.ones(EMBD, np.float32))
        bias = self.const(f"{prefix}.bias", np.zeros(EMBD, np.float32))
        return self.op("LayerNormalization", x, gain, bias, axis=-1, epsilon=1e-5)


def build_graph(layers: int, seed: int) -> onnx.ModelProto:
    g = Graph(np.random.default_rng(seed))
    head_dim = EMBD // HEADS
    wte = g.normal("transformer.wte.weight", (VOCAB, EMBD))
    wpe = g.normal("transformer.wpe.weight", (POSITIONS, EMBD), 0.01)
    g.const("causal_bias", np.where(np.tril(np.ones((POSITIONS, POSITIONS), bool)), 0, -1e9).astype(np.float32)[None, None])
    for name, value in {"axis2": [2], "axis3": [3], "zero": [0], "heads_shape": [0, 0, HEADS, head_dim],
                        "embd_shape": [0, 0, EMBD]}.items():
        g.const(name, np.array(value, np.int64))
    g.const("scale", np.array(1 / math.sqrt(head_dim), np.float32))
    g.const("one_f", np.array(1.0, np.float32))
    g.const("neg_f", np.array(-1e9, np.float32))

    # Positions seen so far (past), new ones (seq) and all (total), for the causal and padding masks.
    past = g.op("Shape", "past_key_values.0.key", start=2, end=3)
    seq = g.op("Shape", "input_ids", start=1, end=2)
    total = g.op("Shape", "attention_mask", start=1, end=2)
    rows = g.op("Slice", "causal_bias", past, g.op("Add", past, seq), "axis2")
    causal = g.op("Slice", rows, "zero", total, "axis3")
    keep = g.op("Cast", g.op("Unsqueeze", "attention_mask", g.const("axes12", np.array([1, 2], np.int64))), to=TensorProto.FLOAT)
    padding = g.op("Mul", g.op("Sub", "one_f", keep), "neg_f")
    mask = g.op("Add", causal, padding)

    h = g.op("Add", g.op("Gather", wte, "input_ids"), g.op("Gather", wpe, "position_ids"))
    presents = []
    proj_std = 0.02 / math.sqrt(2 * layers)
    for i in range(layers):
        p = f"transformer.h.{i}"
        qkv = g.linear(g.layer_norm(h, f"{p}.ln_1"), f"{p}.attn.c_attn", EMBD, 3 * EMBD)
        q, k, v = (f"{p}.{n}" for n in "qkv")
        g.nodes.append(helper.make_node("Split", [qkv, g.const(f"{p}.split", np.array([EMBD] * 3, np.int64))], [q, k, v], axis=-1))
        heads = [g.op("Transpose", g.op("Reshape", t, "heads_shape"), perm=[0, 2, 1, 3]) for t in (q, k, v)]
        key = g.op("Concat", f"past_key_values.{i}.key", heads[1], axis=2)
        value = g.op("Concat", f"past_key_values.{i}.value", heads[2], axis=2)
        g.nodes.append(helper.make_node("Identity", [key], [f"present.{i}.key"]))
        g.nodes.append(helper.make_node("Identity", [value], [f"present.{i}.value"]))
        presents += [f"present.{i}.key", f"present.{i}.value"]
        scores = g.op("Add", g.op("Mul", g.op("MatMul", heads[0], g.op("Transpose", key, perm=[0, 1, 3, 2])), "scale"), mask)
        attn = g.op("MatMul", g.op("Softmax", scores, axis=-1), value)
        attn = g.op("Reshape", g.op("Transpose", attn, perm=[0, 2, 1, 3]), "embd_shape")
        h = g.op("Add", h, g.linear(attn, f"{p}.attn.c_proj", EMBD, EMBD, proj_std))
        m = g.linear(g.layer_norm(h, f"{p}.ln_2"), f"{p}.mlp.c_fc", EMBD, 4 * EMBD)
        # gelu_new: 0.5 m (1 + tanh(sqrt(2/pi) (m + 0.044715 m^3)))
        cube = g.op("Mul", g.op("Mul", m, m), m)
        inner = g.op("Mul", g.op("Add", m, g.op("Mul", cube, g.const(f"{p}.c1", np.array(0.044715, np.float32)))),
                     g.const(f"{p}.c2", np.array(math.sqrt(2 / math.pi), np.float32)))
        gelu = g.op("Mul", g.op("Mul", m, g.const(f"{p}.half", np.array(0.5, np.float32))), g.op("Add", "one_f", g.op("Tanh", inner)))
        h = g.op("Add", h, g.linear(gelu, f"{p}.mlp.c_proj", 4 * EMBD, EMBD, proj_std))
    logits = g.op("MatMul", g.layer_norm(h, "transformer.ln_f"), g.op("Transpose", wte, perm=[1, 0]))
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))

    def tensor(name: str, kind: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, kind, shape)

    cache = ["batch_size", HEADS, "past_sequence_length", head_dim]
    grown = ["batch_size", HEADS, "past_sequence_length + sequence_length", head_dim]
    inputs = [tensor("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    for i in range(layers):
        inputs += [tensor(f"past_key_values.{i}.{kv}", TensorProto.FLOAT, cache) for kv in ("key", "value")]
    inputs += [tensor("attention_mask", TensorProto.INT64, ["batch_size", "past_sequence_length + sequence_length"]),
               tensor("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [tensor("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", VOCAB])]
    outputs += [tensor(name, TensorProto.FLOAT, grown) for name in presents]
    graph = helper.make_graph(g.nodes, "gpt2-small-random", inputs, outputs, g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="build_gpt2_small.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=False)
    return model


def write_configs(out: Path, layers: int) -> None:
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "n_embd": EMBD, "n_head": HEADS, "n_layer": layers, "n_positions": POSITIONS, "n_ctx": POSITIONS,
        "vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 0, "layer_norm_epsilon": 1e-5, "use_cache": True,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "worker" / "models" / "gpt2-small-random")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "onnx").mkdir(parents=True)
    build_tokenizer(args.out)
    write_configs(args.out, args.layers)
    fp32 = args.out / "onnx" / "model.onnx"
    onnx.save(build_graph(args.layers, args.seed), fp32)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32, args.out / "onnx" / "model_quantized.onnx", weight_type=QuantType.QUInt8)
    for path in sorted(args.out.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(args.out)}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

"""The model manifest: the catalogue file in the repo plus the models found in MODELS_DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import msgspec

Backend = Literal["webgpu", "wasm"]
# Headless workers (`mesh-nanollm worker`) run any model's ONNX files; they load their models at
# start, so a worker runs exactly the models it reports warm. `backends` lists browser backends.
WORKER_BACKENDS = frozenset({"onnxruntime-cpu", "onnxruntime-cuda"})


class ModelEntry(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str
    task: str
    source: Literal["hub", "local"]
    dtype: str
    size_bytes: int
    backends: list[Backend]
    memory_mb: int
    default: bool = False
    description: str = ""
    url: str = ""  # where its files live: the hub repo page, or /models/<id>/ here
    parameters: int = 0  # weights in the network; 0: not known
    context_length: int = 0  # tokens it reads, prompt and answer together; 0: not known
    license: str = ""  # an SPDX-style id as on its model card, e.g. "apache-2.0"; "": not known

    openapi_example: ClassVar[dict[str, Any]] = {
        "id": "tiny-gpt2",
        "name": "Tiny GPT-2 (built here, offline)",
        "task": "text-generation",
        "source": "local",
        "dtype": "q8",
        "size_bytes": 1_048_576,
        "backends": ["webgpu", "wasm"],
        "memory_mb": 16,
        "default": True,
        "description": "A 0.2 M-parameter toy model this project trains itself: for trying the mesh, not for answers.",
        "url": "/models/tiny-gpt2/",
        "parameters": 244_480,
        "context_length": 256,
        "license": "same as this project",
    }


class CatalogueFile(msgspec.Struct, forbid_unknown_fields=True):
    models: list[ModelEntry]


class Catalogue(msgspec.Struct):
    entries: list[ModelEntry]


def _context_length(config: Path) -> int:
    """The positions a transformers config.json gives the model (GPT-2 and Llama-style names)."""
    try:
        values = msgspec.json.decode(config.read_bytes())
    except (OSError, msgspec.DecodeError):
        return 0
    if not isinstance(values, dict):
        return 0
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if isinstance(value := values.get(key), int) and value > 0:
            return value
    return 0


def _card_license(readme: Path) -> str:
    """The `license:` of a model card's YAML front matter (how the hub writes it), or ""."""
    try:
        lines = readme.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    if not lines or lines[0].strip() != "---":
        return ""
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, _, value = line.partition(":")
        if key.strip() == "license" and value.strip():
            return value.strip().strip("'\"")
    return ""


def _local_model(folder: Path) -> ModelEntry | None:
    """A model folder in the layout transformers.js loads (config.json + onnx/*.onnx), or None."""
    onnx = folder / "onnx"
    if not (folder / "config.json").is_file() or not onnx.is_dir():
        return None
    quantized = onnx / "model_quantized.onnx"
    weights = quantized if quantized.is_file() else onnx / "model.onnx"
    if not weights.is_file():
        return None
    extras = sum(p.stat().st_size for p in folder.glob("*.json"))
    size = weights.stat().st_size + extras
    return ModelEntry(
        id=folder.name,
        name=folder.name,
        task="text-generation",
        source="local",
        dtype="q8" if weights == quantized else "fp32",
        size_bytes=size,
        backends=["webgpu", "wasm"],
        memory_mb=max(16, size * 4 // 1_000_000),
        description="Served by this server from its models folder.",
        url=f"/models/{folder.name}/",
        context_length=_context_length(folder / "config.json"),
        license=_card_license(folder / "README.md"),
    )


def load_catalogue(catalogue_path: Path, models_dir: Path) -> Catalogue:
    """Catalogue entries (local ones only when their folder exists), then unlisted local models."""
    listed = msgspec.json.decode(catalogue_path.read_bytes(), type=CatalogueFile).models
    found = {}
    if models_dir.is_dir():
        for folder in sorted(models_dir.iterdir()):
            if folder.is_dir() and (entry := _local_model(folder)):
                found[entry.id] = entry
    entries = []
    for entry in listed:
        if entry.source == "local":
            local = found.pop(entry.id, None)
            if local is None:
                continue
            # What the model's own files say wins over what the catalogue was told.
            entry = msgspec.structs.replace(
                entry,
                size_bytes=local.size_bytes,
                url=local.url,
                context_length=local.context_length or entry.context_length,
                license=local.license or entry.license,
            )
        entries.append(entry)
    entries.extend(found.values())
    if entries and not any(entry.default for entry in entries):
        entries[0] = msgspec.structs.replace(entries[0], default=True)
    return Catalogue(entries=entries)

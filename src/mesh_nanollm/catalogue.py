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
    }


def runs_on(entry: ModelEntry, backend: str, models_warm: tuple[str, ...] | list[str]) -> bool:
    """Whether a peer with this backend and these warm models could run `entry`."""
    if backend in WORKER_BACKENDS:
        return entry.id in models_warm
    return backend in entry.backends


class CatalogueFile(msgspec.Struct, forbid_unknown_fields=True):
    models: list[ModelEntry]


class Catalogue(msgspec.Struct):
    entries: list[ModelEntry]


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
            entry = msgspec.structs.replace(entry, size_bytes=local.size_bytes, url=local.url)
        entries.append(entry)
    entries.extend(found.values())
    if entries and not any(entry.default for entry in entries):
        entries[0] = msgspec.structs.replace(entries[0], default=True)
    return Catalogue(entries=entries)

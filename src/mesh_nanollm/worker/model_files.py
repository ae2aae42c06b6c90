"""Where a model's files are: a MODELS_DIR folder, or the hub's cache, in the transformers.js layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from mesh_nanollm.catalogue import CatalogueFile
from mesh_nanollm.settings import DEFAULTS

# transformers.js picks onnx/model<suffix>.onnx by dtype.
DTYPE_SUFFIXES = {
    "fp32": "",
    "fp16": "_fp16",
    "q8": "_quantized",
    "int8": "_int8",
    "uint8": "_uint8",
    "q4": "_q4",
    "q4f16": "_q4f16",
    "bnb4": "_bnb4",
}
JSON_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


class EngineError(Exception):
    """A model that cannot be found, loaded or run as asked; str() is one line a person can act on."""


@dataclass(frozen=True)
class ModelFiles:
    folder: Path
    weights: Path  # the ONNX file for the chosen dtype
    dtype: str


def find_model(model: str, models_dir: Path | None, dtype: str | None) -> ModelFiles:
    """The model's folder (downloading a hub model's files once) and the ONNX file for its dtype.
    The default dtype is the browser's: the catalogue's, else q8 when quantized weights exist."""
    if dtype is not None and dtype not in DTYPE_SUFFIXES:
        raise EngineError(f"Unknown dtype {dtype!r}; use one of: {', '.join(DTYPE_SUFFIXES)}.")
    local = models_dir / model if models_dir is not None and model and "/" not in model else None
    listed = msgspec.json.decode(DEFAULTS.catalogue_path.read_bytes(), type=CatalogueFile).models
    entry = next((e for e in listed if e.id == model), None)
    if local is not None and local.is_dir():
        if dtype is None:
            quantized = local / "onnx" / "model_quantized.onnx"
            dtype = entry.dtype if entry else ("q8" if quantized.is_file() else "fp32")
        folder = local
    elif entry is not None and entry.source == "hub":
        dtype = dtype or entry.dtype
        folder = _download(model, dtype)
    else:
        where = f"in {models_dir}" if models_dir is not None else "(no models folder given)"
        raise EngineError(f"Model {model!r} is neither a folder {where} nor a hub model of the catalogue.")
    for name in ("config.json", "tokenizer.json"):
        if not (folder / name).is_file():
            raise EngineError(f"Model {model!r} has no {name} in {folder}.")
    weights = folder / "onnx" / f"model{DTYPE_SUFFIXES[dtype]}.onnx"
    if not weights.is_file():
        raise EngineError(f"Model {model!r} has no {dtype} weights: {weights} is missing.")
    return ModelFiles(folder=folder, weights=weights, dtype=dtype)


def _download(repo_id: str, dtype: str) -> Path:
    """The files the browser fetches for this model, into the hub cache (only once)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    suffix = DTYPE_SUFFIXES[dtype]
    patterns = [*JSON_FILES, f"onnx/model{suffix}.onnx", f"onnx/model{suffix}.onnx_data*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EngineError(f"Could not download {repo_id} from the hub: {first_line}") from error

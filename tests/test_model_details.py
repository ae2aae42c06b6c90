"""What the room page shows about models, from the catalogue and the models' own files, and the
sampling settings a page's job records (its seed among them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from mesh_nanollm.catalogue import load_catalogue
from mesh_nanollm.jobs.params import SEED_MAX
from mesh_nanollm.settings import PROJECT_ROOT


async def test_models_list_parameters_context_licence_and_backends(client: AsyncTestClient) -> None:
    models = {entry["id"]: entry for entry in (await client.get("/api/models")).json()}
    tiny = models["tiny-gpt2"]
    # The context comes from the model's own config.json (n_positions), the rest from the catalogue.
    assert (
        tiny["context_length"]
        == json.loads((PROJECT_ROOT / "models/tiny-gpt2/config.json").read_text())["n_positions"]
    )
    assert tiny["parameters"] == 244_480
    assert tiny["license"] and tiny["dtype"] == "q8" and tiny["backends"] == ["webgpu", "wasm"]
    for entry in models.values():
        if entry["source"] == "hub":
            assert entry["parameters"] > 1_000_000 and entry["context_length"] >= 1024, entry["id"]
            assert entry["license"] and entry["description"] and entry["size_bytes"] > 0, entry[
                "id"
            ]


def write_model(folder: Path, config: dict, readme: str | None = None) -> None:
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"\0" * 100)
    (folder / "config.json").write_text(json.dumps(config))
    if readme is not None:
        (folder / "README.md").write_text(readme)


def test_local_models_take_context_and_licence_from_their_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_model(
        models / "llama-ish",
        {"max_position_embeddings": 2048},
        "---\nlicense: apache-2.0\ntags: [x]\n---\n# A card\n",
    )
    write_model(models / "bare", {"n_positions": 512}, "# No front matter\nlicense: mit\n")
    write_model(models / "broken", {"n_positions": "many"})
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "id": "bare",
                        "name": "Bare",
                        "task": "text-generation",
                        "source": "local",
                        "dtype": "fp32",
                        "size_bytes": 0,
                        "backends": ["wasm"],
                        "memory_mb": 16,
                        "license": "mit",
                        "context_length": 99,
                    }
                ]
            }
        )
    )
    entries = {entry.id: entry for entry in load_catalogue(catalogue, models).entries}
    assert (entries["llama-ish"].context_length, entries["llama-ish"].license) == (
        2048,
        "apache-2.0",
    )
    # The file's context wins over the catalogue's; a licence only the catalogue names is kept.
    assert (entries["bare"].context_length, entries["bare"].license) == (512, "mit")
    assert (
        entries["broken"].context_length,
        entries["broken"].license,
        entries["broken"].parameters,
    ) == (0, "", 0)


async def create(client: AsyncTestClient, params: dict) -> tuple[int, dict]:
    body = {"room": "global", "model": "tiny-gpt2", "prompt": "You may", "params": params}
    response = await client.post("/api/jobs", json=body)
    return response.status_code, response.json()


async def test_a_seeded_job_records_its_seed_and_an_unseeded_one_none(
    user_client: AsyncTestClient,
) -> None:
    status, job = await create(
        user_client, {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "seed": 42}
    )
    assert status == 201, job
    assert job["params"] == {
        "max_new_tokens": 128,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.9,
        "repetition_penalty": 1.0,
        "seed": 42,
    }
    status, job = await create(user_client, {"temperature": 0.8})
    assert status == 201 and "seed" not in job["params"]


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 1.5, "lucky"])
async def test_a_seed_out_of_range_is_400(user_client: AsyncTestClient, seed: object) -> None:
    status, error = await create(user_client, {"temperature": 0.8, "seed": seed})
    assert status == 400 and "seed" in error["detail"]

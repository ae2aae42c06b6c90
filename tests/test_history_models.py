"""The history page's model filter: it offers exactly the models the signed-in user has run."""

from __future__ import annotations

import re

from litestar.testing import AsyncTestClient

MODEL_SELECT = re.compile(r'<select name="model">(.*?)</select>', re.DOTALL)


async def model_choices(client: AsyncTestClient) -> list[str]:
    page = await client.get("/jobs")
    assert page.status_code == 200
    select = MODEL_SELECT.search(page.text)
    assert select, "the history page has no model filter"
    return [value for value in re.findall(r'<option value="([^"]*)"', select.group(1)) if value]


async def test_history_model_filter_lists_each_used_model_once_in_order(user_client: AsyncTestClient) -> None:
    models = ["tiny-gpt2", "Xenova/distilgpt2", "tiny-gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    for model in models:
        response = await user_client.post("/api/jobs", json={"room": "global", "model": model, "prompt": "Hello"})
        assert response.status_code == 201, response.text

    assert await model_choices(user_client) == sorted(set(models))


async def test_history_model_filter_offers_nothing_before_any_job(user_client: AsyncTestClient) -> None:
    assert await model_choices(user_client) == []

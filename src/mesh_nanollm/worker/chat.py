"""The text a model reads for chat messages: its chat template rendered with Jinja as transformers.js
renders it (trim_blocks, lstrip_blocks, the special tokens as variables), or the room's plain fallback."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mesh_nanollm.worker.model_files import EngineError

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, tokenizer_config: dict[str, Any]) -> None:
        source = tokenizer_config.get("chat_template")
        if isinstance(source, list):  # named templates: transformers.js takes "default"
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
        self.source: str | None = source if isinstance(source, str) and source else None
        self.tokens = {}
        for key in SPECIAL_TOKENS:
            value = tokenizer_config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                self.tokens[key] = value
        self.template = None
        if self.source:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
            env.globals["raise_exception"] = _raise
            env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
            try:
                self.template = env.from_string(self.source)
            except TemplateError as error:
                raise EngineError(f"The model's chat template does not parse: {error}") from error

    def render(self, messages: list[dict[str, str]]) -> str:
        if self.template is None:
            # Every peer renders chat for a model without a template this way (docs/realtime.md, "API jobs").
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        try:
            return self.template.render(messages=messages, add_generation_prompt=True, **self.tokens)
        except TemplateError as error:
            raise EngineError(f"The model's chat template failed on these messages: {error}") from error

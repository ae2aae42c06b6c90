"""The request class: htmx-aware, and a JSON body's nesting depth is bounded before it is decoded."""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Any

from litestar.plugins.htmx import HTMXDetails, HTMXRequest
from litestar.types import Empty

from mesh_nanollm.errors import ServiceError

# A JSON string, escapes included; brackets inside strings do not nest anything.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[^\[\]{}]")
# Opening brackets become 1 and closing ones 255, which a signed byte array reads as -1.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth(body: bytes) -> int:
    """How deeply `body` nests arrays and objects, counted without decoding it (so without
    recursion): a decoder recurses once per level and fails with a RecursionError far down."""
    brackets = _BRACKETS.sub(b"", _STRING.sub(b"", body)).translate(_STEPS)
    return max(accumulate(array("b", brackets)), default=0)


class PageDetails(HTMXDetails):
    """htmx's request headers, where a boosted link or form (base.html) and a history restore are
    page loads: they swap the whole body, so they get the whole page, as without htmx."""

    def __bool__(self) -> bool:
        return super().__bool__() and not self.boosted and not self.history_restore_request


class MeshRequest(HTMXRequest):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.htmx = PageDetails(self)

    async def json(self) -> Any:
        if self._json is Empty and self._connection_state.json is Empty:
            limit = self.app.state.settings.json_max_depth
            if (depth := json_depth(await self.body())) > limit:
                raise ServiceError(
                    f"The JSON body nests {depth} levels deep; at most {limit} are allowed."
                )
        return await super().json()

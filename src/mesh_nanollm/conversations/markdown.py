"""Answers as HTML: CommonMark with tables and strikethrough, on the server's terms.

No raw HTML ever passes (it is escaped as text), links go only to http(s) addresses, images are not
rendered (an answer must not make the reader's browser fetch things), and code is escaped.
"""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token

SAFE_SCHEMES = ("http://", "https://")


def _link_open(
    renderer: RendererHTML, tokens: list[Token], idx: int, options: Any, env: Any
) -> str:
    # A link in an answer leaves the app: it never tells the other site where it came from.
    tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
    return renderer.renderToken(tokens, idx, options, env)


def _build() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.validateLink = lambda url: url.strip().lower().startswith(SAFE_SCHEMES)  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    return md


_MARKDOWN = _build()


def render_markdown(text: str) -> str:
    """`text` (a model's answer) as HTML that is safe to put in a page as it is."""
    return _MARKDOWN.render(text)

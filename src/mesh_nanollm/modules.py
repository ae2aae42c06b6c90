"""The ES modules a page's entry module imports, for `<link rel="modulepreload">` hints.

Without a bundler, the browser finds a module's imports only once the module has arrived, so the
room page's graph (five levels deep) arrived one level per round trip, each a revalidation. Named
in the page's head, every module is asked for at once. The graph is read from the files' static
`import … from "/static/js/…"` and `import "/static/js/…"` lines, so the hints follow the code
with no list to maintain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from markupsafe import Markup

_STATIC_IMPORT = re.compile(
    r"""^\s*(?:(?:import|export)\s[^;]*?\bfrom|import)\s*["'](/static/js/[^"']+)["']""",
    re.MULTILINE,
)


def module_graph(static_dir: Path, entry: str) -> list[str]:
    """`entry` (a path under static_dir, e.g. "js/room.js") and what it imports statically,
    transitively, as /static/ URLs in the order first met."""
    seen: dict[str, None] = {}
    pending = [f"/static/{entry}"]
    while pending:
        url = pending.pop(0)
        if url in seen:
            continue
        file = static_dir / url.removeprefix("/static/")
        if not file.is_file():
            continue
        seen[url] = None
        pending.extend(_STATIC_IMPORT.findall(file.read_text(encoding="utf-8")))
    return list(seen)


def module_preloads(static_dir: Path) -> Callable[..., Markup]:
    """A template global: a `<link rel="modulepreload">` for each module of an entry's graph but
    the ones the page hinted already, built once per app (escaping each URL on every render was
    a tenth of the room page's template time)."""
    hints: dict[tuple[str, ...], Markup] = {}

    def preloads(entry: str, *hinted: str) -> Markup:
        key = (entry, *hinted)
        if key not in hints:
            hints[key] = Markup("\n").join(
                Markup('<link rel="modulepreload" href="{}">').format(url)
                for url in module_graph(static_dir, entry)
                if url not in hinted
            )
        return hints[key]

    return preloads

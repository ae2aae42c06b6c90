"""Templates link through route names, so a moved route cannot leave a dead link behind."""

from __future__ import annotations

import re

from mesh_nanollm.app import TEMPLATES_DIR

# A URL attribute whose value starts with a literal path instead of url_for(...).
LITERAL_PATH = re.compile(r'\b(?:href|src|action|hx-(?:get|post|put|patch|delete))="/')


def test_templates_link_with_url_for_not_literal_paths() -> None:
    literal = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(TEMPLATES_DIR.glob("*.html"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if LITERAL_PATH.search(line)
    ]
    assert literal == []

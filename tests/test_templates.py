"""Templates link through route names, so a moved route cannot leave a dead link behind."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from conftest import make_settings

from mesh_nanollm.app import TEMPLATES_DIR, create_app

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


def test_templates_are_checked_for_edits_only_outside_production(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'test.sqlite'}")
    development = create_app(settings)
    production = create_app(replace(settings, env="production"))
    # A stat of every template file on each render, for edits nobody makes in production.
    assert development.template_engine.engine.auto_reload
    assert not production.template_engine.engine.auto_reload

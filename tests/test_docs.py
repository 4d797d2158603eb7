"""Docs that cannot rot: every ``python`` block of the README and of docs/ runs, in order,
one namespace per file (so a block may use what an earlier block of its page defined)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_every_page_is_found_and_has_runnable_code():
    with_code = [p.name for p in PAGES if BLOCK.search(p.read_text())]
    assert {"README.md", "protocol.md", "chapter6.md"} <= set(with_code)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page, capsys):
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, match in enumerate(BLOCK.finditer(page.read_text())):
        line = page.read_text()[: match.start()].count("\n") + 2
        code = compile(match.group(1), f"{page.name}:{line} (block {i})", "exec")
        exec(code, namespace)

"""docs/interop.md names a test for every cell of its matrix: each must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "interop.md"


def test_every_test_the_interop_matrix_names_exists() -> None:
    text = DOC.read_text()
    matrix = text.split("## Matrix", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in matrix.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 10
    named = 0
    for row in rows[1:]:
        cell = row.rstrip(" |").rsplit("|", 1)[1]
        files = re.findall(r"`(tests/[\w/]+\.py)(?:::([\w]+))?", cell)
        bare = re.findall(r"`(test_\w+)", cell)
        assert files or bare, f"no test named in: {row}"
        for path, func in files:
            source = (ROOT / path).read_text()
            assert not func or f"def {func}(" in source, f"{path}::{func} is gone"
            named += 1
        for func in bare:  # in the file named in an earlier row
            assert any(f"def {func}(" in p.read_text() for p in (ROOT / "tests").rglob("*.py"))
            named += 1
    assert named >= 20

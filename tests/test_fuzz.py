"""The fuzzing campaign's regression and smoke (issue 16 §4): every committed corpus input
replays clean through its target, and a bounded coverage-guided run of every target (about
a minute in all) finds nothing. The long run is `python -m fuzz.run all --seconds 600`
(docs/security.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

ROOT = Path(__file__).parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_committed_corpus_replays_clean(target: str) -> None:
    inputs = sorted((CORPUS / target).iterdir())
    assert inputs, f"no seed for {target}"
    for path in inputs:
        try:
            TARGETS[target](path.read_bytes())
        except Exception as exc:  # the target's own errors are caught inside it
            raise AssertionError(f"{path.name}: {exc!r}") from exc


@pytest.mark.timeout(300)
def test_a_bounded_fuzzing_run_of_every_target_finds_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "all", "--seconds", "6", "--work", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-6000:]
    ran = [ln for ln in done.stdout.splitlines() if ": exit 0, " in ln]
    assert len(ran) == len(TARGETS), done.stdout

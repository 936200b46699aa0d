"""One version, said the same way everywhere a release is described (docs/releasing.md)."""

from __future__ import annotations

import re
import subprocess

from gw import __version__
from tests.deploy.helpers import REPO

CHANGELOG = REPO / "docs" / "changelog.md"


def releases() -> list[str]:
    """The changelog's section headings, newest first."""
    return re.findall(r"^## (\S+)", CHANGELOG.read_text(), re.M)


def test_version_is_semantic_and_the_changelog_newest_section() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__), __version__
    newest, *older = releases()
    assert newest == __version__, f"changelog's newest section is {newest}, not {__version__}"
    assert __version__ not in older, "one section per release"
    numbers = [tuple(map(int, v.split("."))) for v in releases()]
    assert numbers == sorted(numbers, reverse=True), "newest first"


def test_every_version_tag_points_at_a_tree_of_that_version() -> None:
    """`v<version>` tags (a clone may hold none yet) name commits whose `gw.__version__` is
    that version: a tag put on the wrong commit fails here."""
    tags = subprocess.run(
        ["git", "-C", str(REPO), "tag", "--list", "v*"], capture_output=True, text=True, timeout=30
    ).stdout.split()
    for tag in tags:
        shown = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{tag}:gw/__init__.py"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert f'__version__ = "{tag[1:]}"' in shown.stdout, tag

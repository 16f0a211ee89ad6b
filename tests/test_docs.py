"""The README a newcomer reads: short, the two commands, and links that lead somewhere.

The site itself is checked by ``make docs`` (Sphinx with warnings as errors, every tutorial
executed); these are the checks that need no build.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_readme_is_short_and_shows_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "make report" in text and "make test" in text and "make docs" in text


def test_every_relative_link_of_the_readme_exists():
    links = relative_links(README.read_text())
    assert len(links) >= 10  # the docs pages are linked, not only mentioned
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", sorted(p.relative_to(ROOT).as_posix()
                                        for p in (ROOT / "docs").rglob("*.md")
                                        if "_build" not in p.parts))
def test_relative_links_of_docs_pages_exist(page):
    path = ROOT / page
    missing = [t for t in relative_links(path.read_text())
               if not (path.parent / t).exists()]
    assert not missing, f"{page} links to files that do not exist: {missing}"


def test_a_broken_link_is_found():
    assert relative_links("see [x](docs/nope.md) and [y](https://a.b/c) and [z](a.md#s)") == [
        "docs/nope.md", "a.md"]

"""The documentation matches the tree: docs/configuration.md is what docs/make_configuration.py writes from the
settings in the code, and every relative link (and image) in the README, CONTRIBUTING.md and docs/ resolves,
with its #anchor to a heading of the page it names. Fast: reads text files only."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"(!?)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:


def generator():
    spec = importlib.util.spec_from_file_location("make_configuration", REPO / "docs" / "make_configuration.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_configuration_page_is_current():
    make = generator()
    assert make.TARGET.exists(), "docs/configuration.md is missing: run .venv/bin/python docs/make_configuration.py"
    assert make.TARGET.read_text(encoding="utf-8") == make.render(), (
        "docs/configuration.md is stale (a setting or its comment changed): run .venv/bin/python docs/make_configuration.py")


def test_configuration_page_names_every_setting():
    """The generator reads the source as text: every field of every settings dataclass must reach the page."""
    import dataclasses

    from chatbot.config import Config

    text = generator().render()
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            assert f"## `[{section.name}]`" in text
            for f in dataclasses.fields(value):
                assert f"| `{f.name}` |" in text, f"[{section.name}] {f.name} is not on the configuration page"
        elif section.name != "home":
            assert f"| `{section.name}` |" in text


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[tuple[str, bool]]:
    """(target, is an image) for every relative link and image of the page."""
    text = prose(page.read_text(encoding="utf-8"))
    out = [(target, bool(bang)) for bang, target in _LINK.findall(text)]
    out += [(target, True) for target in _IMG_SRC.findall(text)]
    return [(target, image) for target, image in out if not _EXTERNAL.match(target)]


def broken(page: Path, images: bool, root: Path = REPO) -> list[str]:
    problems = []
    for target, image in links(page):
        if image != images:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{target}: no such file ({resolved.relative_to(root) if resolved.is_relative_to(root) else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page):
    problems = broken(page, images=False)
    assert not problems, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_images_exist(page):
    """The screenshots under docs/images/ are written by the browser test (tests/test_browser*.py)."""
    problems = broken(page, images=True)
    assert not problems, f"{page.relative_to(REPO)}: missing images:\n" + "\n".join(problems)


def test_the_checker_sees_links_and_anchors(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## The `[model]` section\n\n## Repeated\n\n## Repeated\n", encoding="utf-8")
    page.write_text(
        "# Page\n\n[ok](other.md#the-model-section) [ok](other.md#repeated-1) [self](#page) [web](https://example.com/x)\n"
        "[bad](missing.md) [bad anchor](other.md#nowhere) `[not a link](nowhere.md)`\n\n```\n[in code](nowhere.md)\n```\n"
        "![shot](images/none.png)\n", encoding="utf-8")
    assert broken(page, images=False, root=tmp_path) == [
        "missing.md: no such file (missing.md)", "other.md#nowhere: no heading #nowhere in other.md"]
    assert broken(page, images=True, root=tmp_path) == ["images/none.png: no such file (images/none.png)"]

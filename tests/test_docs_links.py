"""The README's and docs/'s relative links and #anchors resolve (a moved page or renamed heading breaks them)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCED = re.compile(r"```.*?```", flags=re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", FENCED.sub("", page.read_text()), flags=re.M)}


def _broken(page: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCED.sub("", page.read_text())):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{page.relative_to(root)}: {target} does not exist")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{page.relative_to(root)}: {destination.name} has no heading #{anchor}")
    return broken


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 5
    assert [problem for page in pages for problem in _broken(page)] == []


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title here\n[ok](#title-here) [gone](b.md) [bad](#nothing)\n")
    assert _broken(tmp_path / "a.md", tmp_path) == ["a.md: b.md does not exist", "a.md: a.md has no heading #nothing"]

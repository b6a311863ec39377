"""The documentation: README.md stays short, and every relative link in README.md and docs/*.md
resolves (the file exists; a ``#anchor`` names a heading of the target, slugged as GitHub does).

Links to http(s) and mailto are not followed. Code (fenced blocks and inline code spans) is not
read for links. The checker is tested on a small tree of its own, so a broken link is known to fail.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12_000

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the text may hold one level of brackets (an image in a link)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
                          r"(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+[^>]*(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_EXTERNAL = ("http://", "https://", "mailto:")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks, inline code spans blanked."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup reduced to its text, lowercase,
    punctuation dropped except - and _, each space a -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)     # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                            # HTML tags
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                           # \w keeps letters, digits, _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file defines: its headings (duplicates get -1, -2, ...) and HTML anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = path.read_text(encoding="utf-8")
    for _, line in _prose_lines(text):
        found.update(_HTML_ANCHOR.findall(line))
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        if slug in seen:
            seen[slug] += 1
            found.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            found.add(slug)
    return found


def links(path: Path):
    """(line number, target) of every link in a Markdown file, code excluded."""
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in _INLINE_LINK.finditer(line):
            yield number, match.group(1).strip("<>")
        match = _REFERENCE_DEF.match(line)
        if match:
            yield number, match.group(1).strip("<>")


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of ``path`` that does not resolve."""
    problems = []
    for number, target in links(path):
        if not target or target.lower().startswith(_EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part)
        if file_part.startswith("/"):
            resolved = root / file_part.lstrip("/")
        else:
            resolved = (path.parent / file_part) if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not resolved.exists():
            problems.append(f"{where} (no such file)")
            continue
        if anchor and resolved.is_file() and resolved.suffix.lower() == ".md":
            if unquote(anchor).lower() not in anchors(resolved):
                problems.append(f"{where} (no heading with anchor #{anchor} in {resolved.name})")
    return problems


def _documents() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
    problems = broken_links(document)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_short():
    size = len((ROOT / "README.md").read_text(encoding="utf-8"))
    assert size <= README_LIMIT, f"README.md has {size:,} characters (at most {README_LIMIT:,}); move detail to docs/"


def test_readme_keeps_the_test_command():
    # .ci/run runs "the README's test command"; the two must stay the same command
    assert '/bin/python" -m pytest -q tests' in (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q tests" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_and_docs_link_each_other():
    readme = {target.partition("#")[0] for _, target in links(ROOT / "README.md")}
    for document in sorted((ROOT / "docs").glob("*.md")):
        if document.name == "face_backbone.md":
            continue
        assert f"docs/{document.name}" in readme, f"README.md does not link docs/{document.name}"
        targets = {target.partition("#")[0] for _, target in links(document)}
        assert "../README.md" in targets, f"docs/{document.name} does not link back to ../README.md"


def test_slugs_follow_github():
    assert github_slug("Set up and check (fresh machine, Python 3.10+)") == "set-up-and-check-fresh-machine-python-310"
    assert github_slug("Face2Exp: unlabelled faces") == "face2exp-unlabelled-faces"
    assert github_slug("RUL, DAN and the CBAM + uncertainty hybrid") == "rul-dan-and-the-cbam--uncertainty-hybrid"
    assert github_slug("`data.check` and `--label-file`") == "datacheck-and---label-file"
    assert github_slug("Warm start (`OUTPUT/warm`)") == "warm-start-outputwarm"
    assert github_slug("dlib_resnet") == "dlib_resnet"


def test_checker_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "other.md").write_text("# Title\n\n## Same\n\n## Same\n\n```\n# not a heading\n```\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](../other.md) [ok](../other.md#title) [ok](../other.md#same-1) [ok](#page)\n"
        "[web](https://example.org/missing) [mail](mailto:x@example.org) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) [bad anchor](../other.md#same-2) ![image](missing.png)\n"
        "[not a heading](../other.md#not-a-heading)\n"
        "[ref]: ../nowhere.md\n")
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "missing.md", "../other.md#same-2", "missing.png", "../other.md#not-a-heading", "../nowhere.md"]

"""README.md is a product page a newcomer reads in five minutes, and every page of the docs links only
to files and headings that exist (docs/*.md, README.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAIN, TEST = "bash scripts/main.sh", "bash scripts/test.sh"


def _prose(text: str) -> str:
    """The text without fenced code blocks (links and headings there are not links or headings)."""
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces → '-'."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _prose(path.read_text(encoding="utf-8")), flags=re.M):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        found.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return found


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"


def test_readme_says_what_amopo_is_before_any_code():
    head = README.read_text(encoding="utf-8").splitlines()[:20]
    what = next((i for i, line in enumerate(head) if re.match(r"\**amopo\** (aligns|is)\b", line)), None)
    assert what is not None, "the first 20 lines of README.md say what amopo is"
    fence = next((i for i, line in enumerate(head) if line.startswith("```")), len(head))
    assert what < fence, "README.md shows code before saying what amopo is"


def test_readme_has_the_two_commands_and_ci_runs_the_test_command():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"^```bash\n(.*?)^```", text, flags=re.S | re.M).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == [MAIN, TEST], f"README.md's first code block: {commands}"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    run = [line for line in ci if line and not line.startswith(("#", "set ", "cd "))]
    assert run == [TEST], f".ci/run runs {run}, README.md's test command is {TEST!r}"


def test_every_relative_link_points_to_an_existing_file_and_heading():
    problems, checked = [], 0
    for page in PAGES:
        for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                problems.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                problems.append(f"{page.relative_to(ROOT)}: {target}: no such heading in {file.relative_to(ROOT)}")
    assert checked > 20, f"only {checked} relative links found: is the reader broken?"
    assert not problems, "\n".join(problems)


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name}" not in text]
    assert not missing, f"README.md does not link {missing}"


def test_the_slugs_follow_github():
    assert _slug("Log-probabilities, for lm-eval's `local-completions`") == "log-probabilities-for-lm-evals-local-completions"
    assert _slug("7. Roll back") == "7-roll-back"
    assert _slug("On every engine: `chat_template_kwargs`") == "on-every-engine-chat_template_kwargs"

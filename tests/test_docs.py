"""The README and the docs site: the formats table as the table itself renders it, the two commands
first, and every example marked runnable run for real.

A runnable example is a fenced ``sh`` or ``python`` block right after a line ``<!-- doc-test -->``;
options after a colon say what it needs (docs/development.md, "The docs"):
``<!-- doc-test: sample-model -->`` a copy of the digits sample model as ./sample-model (a real
export, so the example is slow), ``<!-- doc-test: exit 2 -->`` the exit status it must end with.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.core.formats import formats_markdown

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
VENV = Path(sys.executable).parent.parent

MARKED_BLOCK = re.compile(
    r"^<!-- doc-test(?::(?P<options>[^>]*?))? -->\n(?:[ \t]*\n)*```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
ANY_MARKER = re.compile(r"^<!-- doc-test\b", re.MULTILINE)
LANGUAGES = ("sh", "bash", "python")
OPTION = re.compile(r"^(?:sample-model|exit \d+)$")


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    lang: str
    code: str
    options: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def needs_sample_model(self) -> bool:
        return "sample-model" in self.options

    @property
    def exit_status(self) -> int:
        return next((int(o.split()[1]) for o in self.options if o.startswith("exit ")), 0)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def examples(page: Path) -> list[Example]:
    text = page.read_text()
    found = []
    for match in MARKED_BLOCK.finditer(text):
        options = tuple(o.strip() for o in (match["options"] or "").split(",") if o.strip())
        line = text.count("\n", 0, match.start()) + 1
        found.append(Example(page, line, match["lang"], match["code"], options))
    return found


ALL_EXAMPLES = [example for page in pages() for example in examples(page)]


def test_readme_formats_table_is_generated_from_the_table():
    assert formats_markdown() in README.read_text(), (
        "README.md's formats table is stale: paste the output of `exporter formats --markdown`"
    )


def test_docs_formats_table_is_generated_from_the_table():
    assert formats_markdown() in (DOCS / "formats.md").read_text(), (
        "docs/formats.md's formats table is stale: paste the output of `exporter formats --markdown`"
    )


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = text.split("```")[1]
    assert first_block.strip().splitlines()[1:] == ["make export", "make test"]


def test_the_readme_stays_short():
    assert len(README.read_text().splitlines()) < 200, "the README is a summary: move detail to docs/"


def test_every_marker_marks_a_runnable_block():
    """A marker the pattern misses (a typo, text between it and the block) would silently run nothing."""
    for page in pages():
        text = page.read_text()
        assert len(ANY_MARKER.findall(text)) == len(examples(page)), f"{page.name}: a doc-test marker marks no block"
        for example in examples(page):
            assert example.lang in LANGUAGES, f"{example.id}: {example.lang!r} examples cannot run"
            assert all(OPTION.match(o) for o in example.options), f"{example.id}: unknown options {example.options}"
    assert len(ALL_EXAMPLES) >= 10, "the docs' runnable examples went missing"
    assert any(e.page == README for e in ALL_EXAMPLES), "the README's Python example is no longer run"


@pytest.mark.parametrize(
    "example",
    [pytest.param(e, marks=[pytest.mark.slow] if e.needs_sample_model else [], id=e.id) for e in ALL_EXAMPLES],
)
def test_doc_example_runs(example: Example, tmp_path: Path, request):
    """Run in a fresh folder, as a reader would from a checkout: .venv/bin/... works, and sample-model
    is the digits sample model where the example needs it."""
    (tmp_path / ".venv").symlink_to(VENV)
    if example.needs_sample_model:
        shutil.copytree(request.getfixturevalue("digits_model"), tmp_path / "sample-model")
    if example.lang == "python":
        command = [sys.executable, "-c", example.code]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", example.code]
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "120"}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == example.exit_status, (
        f"{example.id} ended with exit status {done.returncode}, not {example.exit_status}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )

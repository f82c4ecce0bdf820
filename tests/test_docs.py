"""The README carries the formats table exactly as the table itself renders it."""

from pathlib import Path

from exporter.core.formats import formats_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_formats_table_is_generated_from_the_table():
    assert formats_markdown() in README.read_text(), (
        "README.md's formats table is stale: paste the output of `exporter formats --markdown`"
    )


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = text.split("```")[1]
    assert first_block.strip().splitlines()[1:] == ["make export", "make test"]

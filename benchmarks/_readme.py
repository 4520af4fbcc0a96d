"""Writing one benchmark's figures into benchmarks/README.md between its markers."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).with_name("README.md")


def intro_of(doc: str | None) -> str:
    """A benchmark docstring without its first paragraph and its usage line."""
    return (doc or "").split("\n\n", 1)[-1].rsplit("\n\n", 1)[0]


def write_section(name: str, heading: str, intro: str, block: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->``;
    a section seen for the first time is appended under ``heading`` with ``intro``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if start not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n{intro}\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{block}\n{end}{tail}")

"""Writing one benchmark's figures into benchmarks/README.md between its markers."""

from __future__ import annotations

import os
from pathlib import Path

#: ``benchmarks/run --readme PATH`` points every script elsewhere (smoke runs).
README = Path(os.environ.get("IAMSCOPE_BENCH_README") or Path(__file__).with_name("README.md"))
TITLE = "# Benchmarks"


def intro_of(doc: str | None) -> str:
    """A benchmark docstring without its first paragraph and its usage line."""
    return (doc or "").split("\n\n", 1)[-1].rsplit("\n\n", 1)[0]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _fill(text: str, name: str, block: str) -> None:
    start, end = _markers(name)
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{block}\n{end}{tail}")


def write_section(name: str, heading: str, intro: str, block: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->``;
    a section seen for the first time is appended under ``heading`` with ``intro``."""
    start, end = _markers(name)
    text = README.read_text() if README.exists() else f"{TITLE}\n"
    if start not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n{intro}\n\n{start}\n{end}\n"
    _fill(text, name, block)


def write_top_section(
    name: str, heading: str, intro: str, block: str, *, untitled: str | None = None
) -> None:
    """Like :func:`write_section`, but a section seen for the first time goes right
    after the ``# Benchmarks`` title, before every other section. ``untitled`` names
    text that followed the title without a heading of its own (the first benchmark's
    introduction), so it does not read as part of the new section."""
    start, end = _markers(name)
    text = README.read_text() if README.exists() else f"{TITLE}\n"
    if start not in text or end not in text:
        first, _, rest = text.partition("\n")
        if not first.startswith("# "):
            first, rest = TITLE, text
        rest = rest.lstrip("\n")
        if rest and untitled is not None and not rest.startswith("## "):
            rest = f"## {untitled}\n\n{rest}"
        section = f"## {heading}\n\n{intro}\n\n{start}\n{end}\n"
        text = f"{first}\n\n{section}" + (f"\n{rest}" if rest else "")
    _fill(text, name, block)

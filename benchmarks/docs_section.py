"""Shared by the benchmark scripts: each owns one ``## `` section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_section"]


def write_section(md: Path, body: str, section: str) -> None:
    """Replace (or append) the ``section`` heading's block of ``md``, leaving the others alone.

    Args:
        md: the markdown file (created with a title if missing).
        body: the new section text, starting with ``section``.
        section: the section's heading line, e.g. ``"## Training speed"``.
    """
    text = md.read_text() if md.exists() else "# Benchmarks\n\nOne section per benchmark.\n"
    start = text.find(section)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(section))
        text = text[:start] + body + ("" if end < 0 else text[end:])
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text.rstrip("\n") + "\n")

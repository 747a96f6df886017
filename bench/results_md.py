"""Each bench owns one section of bench/RESULTS.md, between `<!-- name -->` and
`<!-- /name -->`; writing it replaces that section and leaves the rest as it was."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, *, name: str, body: str, before: str | None = None) -> None:
    """Put `body` in the section `name`: in place of the old one, else just before the
    section `before` (when there is one), else at the end."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    following = f"<!-- {before} -->" if before else None
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + (f"\n{tail}" if tail else "")
    elif following and following in text:
        head, rest = text.split(following, 1)
        text = f"{head.rstrip()}\n\n{section}\n{following}{rest}"
    else:
        text = f"{text.rstrip()}\n\n{section}"
    path.write_text(text)

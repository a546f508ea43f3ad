"""Pure text helpers for bench/regenerate.py: find benchmark blocks in a markdown file, pull the
markdown tables out of a script's output, and rewrite a block (no benchmark runs here, so the unit
tests can check every branch).

A block is the text between a line ``<!-- bench:NAME -->`` and the next ``<!-- /bench -->`` line.
The README keeps prose outside the blocks; inside is only what the named script printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPEN = re.compile(r"^<!-- bench:([A-Za-z0-9_.-]+) -->$")
CLOSE = "<!-- /bench -->"
HEADLINE_HEADER = "| what | measured | script |"


class MarkerError(ValueError):
    """The markers in a file do not pair up (unclosed, nested, stray close, or a name used twice)."""


@dataclass(frozen=True)
class Block:
    name: str
    start: int  # index of the opening marker line
    stop: int  # index of the closing marker line
    body: str  # the lines between them, joined by newlines, without leading/trailing blank lines


def find_blocks(text: str) -> dict[str, Block]:
    """Every block in ``text`` by name; raises :class:`MarkerError` where markers do not pair up."""
    lines = text.split("\n")
    blocks: dict[str, Block] = {}
    current: tuple[str, int] | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        match = OPEN.match(stripped)
        if match:
            if current is not None:
                raise MarkerError(f"line {i + 1}: block {match.group(1)!r} opens inside block {current[0]!r}")
            if match.group(1) in blocks:
                raise MarkerError(f"line {i + 1}: block {match.group(1)!r} appears twice")
            current = (match.group(1), i)
        elif stripped == CLOSE:
            if current is None:
                raise MarkerError(f"line {i + 1}: {CLOSE} without an opening marker")
            name, start = current
            blocks[name] = Block(name, start, i, "\n".join(lines[start + 1 : i]).strip("\n"))
            current = None
        elif stripped.startswith("<!-- bench:") or stripped.startswith("<!-- /bench"):
            raise MarkerError(f"line {i + 1}: malformed marker {stripped!r}")
    if current is not None:
        raise MarkerError(f"block {current[0]!r} (line {current[1] + 1}) is never closed")
    return blocks


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with block ``name``'s contents replaced by ``body`` (one blank line each side)."""
    blocks = find_blocks(text)
    if name not in blocks:
        raise MarkerError(f"no block {name!r}")
    block = blocks[name]
    lines = text.split("\n")
    new = [*lines[: block.start + 1], "", *body.strip("\n").split("\n"), "", *lines[block.stop :]]
    return "\n".join(new)


def markdown_tables(output: str) -> list[tuple[str, str]]:
    """(heading, table) for each markdown table in a script's output, in order.

    A table is a run of lines starting with ``|`` whose second line is the ``|---|`` rule; its
    heading is the nearest non-empty line above it (e.g. the ``### title`` print_table writes), or
    "" when there is none.
    """
    lines = output.splitlines()
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            above = [line for line in lines[:i] if line.strip()]
            heading = above[-1].strip() if above and not above[-1].startswith("|") else ""
            out.append((heading, "\n".join(line.rstrip() for line in lines[i:j])))
            i = j
        else:
            i += 1
    return out


def pick_tables(output: str, picks: tuple[str, ...]) -> list[str]:
    """The tables of ``output`` whose heading or header row contains each pick, in ``picks`` order.

    Raises ``LookupError`` naming the pick that matched nothing (the script's output changed shape).
    """
    tables = markdown_tables(output)
    chosen = []
    for pick in picks:
        found = [table for heading, table in tables if pick in heading or pick in table.split("\n", 1)[0]]
        if not found:
            raise LookupError(f"no table whose heading or header contains {pick!r}")
        chosen.append(found[0])
    return chosen


def table_rows(table: str) -> list[str]:
    """The body rows of a markdown table (header and rule left out)."""
    return table.strip("\n").split("\n")[2:]


def script_of_row(row: str) -> str:
    """The script a headline row names in its last cell (e.g. ``bench/bench_ann.py``), or ""."""
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    match = re.search(r"bench/(bench_\w+)\.py", cells[-1]) if cells else None
    return match.group(1) if match else ""


def merge_headline(current: str, recorded: dict[str, str]) -> tuple[str, list[str]]:
    """The headline table with each row whose script has a recorded headline row replaced by it.

    ``recorded`` maps a script name (``bench_ann``) to the one row it printed under
    :data:`HEADLINE_HEADER`. Returns the new table and the names of the rows replaced.
    """
    lines = current.strip("\n").split("\n")
    if not lines or lines[0].strip() != HEADLINE_HEADER:
        raise MarkerError(f"the headline block must start with {HEADLINE_HEADER!r}")
    replaced = []
    out = lines[:2]
    for row in lines[2:]:
        name = script_of_row(row)
        if name in recorded:
            out.append(recorded[name])
            replaced.append(name)
        else:
            out.append(row)
    return "\n".join(out), replaced


def diff_summary(expected: str, actual: str, limit: int = 6) -> list[str]:
    """A short line-by-line account of how two blocks differ ("-" README, "+" script)."""
    import difflib

    lines = [
        line
        for line in difflib.unified_diff(expected.split("\n"), actual.split("\n"), "README", "script", n=0, lineterm="")
        if not line.startswith(("---", "+++", "@@"))
    ]
    return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])

"""How every ``plugway … list`` command prints: for people, for scripts, and as JSON.

Three outputs from one description of the columns:

- ``--json``: one JSON document on stdout (``jq`` reads it);
- stdout is not a terminal (a pipe, a file): one row per line, cells separated by a
  tab, no header and no decoration, nothing wrapped or cut (as ``gh`` prints when
  piped), so ``grep``, ``cut -f`` and ``awk -F'\\t'`` see whole identifiers;
- a terminal: a table as wide as the terminal; identifier columns never wrap or
  shrink, other cells fold, and columns marked optional are left out when the
  terminal is too narrow for them, so the table stays readable at 80 columns.

Notes (where the data lives, "no keys") go to stderr, where they never mix with rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

Row = Mapping[str, Any]
EMPTY_CELL = "-"
COLUMN_GAP = 2
# Cells this short ("unlimited", a date) are never folded: only long ones give way.
SHORT_CELL = 12
FOLDED_MIN = 24


@dataclass(frozen=True)
class Column:
    """One column: its header on a terminal, and the row field (or function) that fills it."""

    header: str
    value: str | Callable[[Row], Any]
    identifier: bool = False  # never wrapped or shortened, even on a narrow terminal
    optional: bool = False  # left out on a terminal too narrow to show it

    def cell(self, row: Row) -> str:
        return format_cell(self.value(row) if callable(self.value) else row.get(self.value))


def format_cell(value: Any) -> str:
    """One cell's text: lists comma-joined, booleans yes/no, times to the minute, nothing as ``-``."""
    if value is None or value == "" or value == []:
        return EMPTY_CELL
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, (list, tuple)):
        return ",".join(format_cell(item) for item in value)
    # A tab or a line break inside a cell would split the row for a script.
    return " ".join(str(value).split())


def add_json_option(parser: argparse.ArgumentParser, what: str = "the rows") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON document")


def to_json(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 strings, ready for ``json.dumps``."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def print_json(document: Any, out: TextIO | None = None) -> None:
    print(json.dumps(to_json(document), indent=2, ensure_ascii=False), file=out or sys.stdout)


def note(text: str) -> None:
    """A line for the person, never for a script reading stdout."""
    print(text, file=sys.stderr)


def print_rows(
    rows: Sequence[Row],
    columns: Sequence[Column],
    *,
    empty: str,
    caption: str | None = None,
    out: TextIO | None = None,
    terminal: bool | None = None,
    width: int | None = None,
) -> None:
    """The rows as plain lines when stdout is not a terminal, else as a table.

    ``empty`` is said (on stderr) when there are no rows; ``caption`` is shown under
    the table on a terminal and on stderr otherwise. ``terminal`` and ``width``
    override what is detected (tests).
    """
    out = out or sys.stdout
    if not rows:
        note(empty)
        return
    if terminal is None:
        terminal = out.isatty()
    if not terminal:
        for row in rows:
            print("\t".join(column.cell(row) for column in columns), file=out)
        if caption:
            note(caption)
        return
    _print_table(rows, columns, caption=caption, out=out, width=width)


def _print_table(rows: Sequence[Row], columns: Sequence[Column], *, caption: str | None, out: TextIO, width: int | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, width=width, highlight=False)
    cells = [[column.cell(row) for column in columns] for row in rows]
    # A header may wrap between its words; a cell's width is what it needs on one line.
    natural = [
        max(*(len(word) for word in column.header.split()), *(len(line[i]) for line in cells))
        for i, column in enumerate(columns)
    ]
    shown = list(range(len(columns)))

    def fixed(i: int) -> bool:
        return columns[i].identifier or natural[i] <= SHORT_CELL

    def needed() -> int:
        # A long cell may fold, down to a narrowest width still worth reading.
        widths = [natural[i] if fixed(i) else min(natural[i], FOLDED_MIN) for i in shown]
        return sum(widths) + COLUMN_GAP * (len(shown) - 1)

    # Leave out optional columns, rightmost first, until the rest fits the terminal.
    for index in reversed(range(len(columns))):
        if needed() <= console.width:
            break
        if columns[index].optional:
            shown.remove(index)
    # Borderless, two spaces between columns, as kubectl prints.
    table = Table(box=None, padding=(0, 1), pad_edge=False, caption=caption, caption_justify="left")
    for i in shown:
        if fixed(i):
            table.add_column(columns[i].header, no_wrap=True, min_width=natural[i])
        else:
            table.add_column(columns[i].header, overflow="fold")
    for line in cells:
        # Cells are text, not rich markup: a '[' in a name or an error stays as it is.
        table.add_row(*(Text(line[i]) for i in shown))
    console.print(table)

"""A neutral table (title, columns, rows, notes) that reports and comparisons build once and render to any format.

Cells are already formatted strings: the builders decide precision and what "n/a" looks like, the renderers
only lay them out (console, markdown here; csv, LaTeX and HTML in `harness.export`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 160
"""Console width when output goes to a file or pipe, where rich would otherwise wrap tables at 80 columns."""


@dataclass
class ReportTable:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Lines printed under the table: denominators, label conventions, warnings."""
    emphasized_rows: set[int] = field(default_factory=set)
    """Row indices shown in bold (e.g. the overall row); a rule is drawn above the first of them."""

    def add_row(self, *cells: str, emphasized: bool = False) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells, table {self.title!r} has {len(self.columns)} columns")
        if emphasized:
            self.emphasized_rows.add(len(self.rows))
        self.rows.append(list(cells))


def make_console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def to_rich(table: ReportTable) -> Table:
    out = Table(title=table.title, title_justify="left")
    for index, column in enumerate(table.columns):
        out.add_column(column, justify="left" if index == 0 else "right")
    first_emphasized = min(table.emphasized_rows, default=None)
    for index, row in enumerate(table.rows):
        if index == first_emphasized and index > 0:
            out.add_section()
        out.add_row(*row, style="bold" if index in table.emphasized_rows else None)
    return out


def to_markdown(table: ReportTable) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    align = ["---"] + ["---:"] * (len(table.columns) - 1)
    rows = [
        line([f"**{cell}**" if cell and index in table.emphasized_rows else cell for cell in row])
        for index, row in enumerate(table.rows)
    ]
    parts = [f"**{table.title}**", "", line(table.columns), "| " + " | ".join(align) + " |", *rows]
    if table.notes:
        parts += ["", *(f"- {note}" for note in table.notes)]
    return "\n".join(parts) + "\n"

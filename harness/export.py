"""Render a `ReportTable` to csv, LaTeX or HTML, and pick a renderer by format name.

Markdown and the console renderers live beside the table in `harness.tables`; the ones here are for papers
(LaTeX with booktabs), spreadsheets (csv) and pages (HTML fragments that need no stylesheet).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable

from harness.tables import ReportTable, to_markdown

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def to_csv(table: ReportTable) -> str:
    """Header and rows only: notes and emphasis have no place in a csv file."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def to_latex(table: ReportTable) -> str:
    """A `table` float with a booktabs `tabular` (needs `\\usepackage{booktabs}`), notes in footnote size."""

    def line(cells: list[str], bold: bool = False) -> str:
        escaped = [latex_escape(cell) for cell in cells]
        return " & ".join(f"\\textbf{{{cell}}}" if bold and cell else cell for cell in escaped) + r" \\"

    first_emphasized = min(table.emphasized_rows, default=None)
    body: list[str] = []
    for index, row in enumerate(table.rows):
        if index == first_emphasized and index > 0:
            body.append(r"\midrule")
        body.append(line(row, bold=index in table.emphasized_rows))
    parts = [
        r"\begin{table}[htbp]",
        r"\centering",
        f"\\caption{{{latex_escape(table.title)}}}",
        f"\\begin{{tabular}}{{l{'r' * (len(table.columns) - 1)}}}",
        r"\toprule",
        line(table.columns),
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if table.notes:
        notes = [f"{latex_escape(note)}\\par" for note in table.notes]
        parts += [r"\par\medskip", r"{\footnotesize\raggedright", *notes, "}"]
    return "\n".join([*parts, r"\end{table}"]) + "\n"


def to_html(table: ReportTable) -> str:
    """A `<table>` with its caption, then the notes as a list; inline styles only, every text escaped."""

    def cells(tag: str, row: list[str]) -> str:
        return "".join(
            f'<{tag} style="text-align:{"left" if i == 0 else "right"};padding:2px 8px">{html.escape(cell)}</{tag}>'
            for i, cell in enumerate(row)
        )

    first_emphasized = min(table.emphasized_rows, default=None)
    rows = []
    for index, row in enumerate(table.rows):
        styles = []
        if index in table.emphasized_rows:
            styles.append("font-weight:bold")
        if index == first_emphasized and index > 0:
            styles.append("border-top:1px solid #888")
        style = f' style="{";".join(styles)}"' if styles else ""
        rows.append(f"<tr{style}>{cells('td', row)}</tr>")
    parts = [
        '<table style="border-collapse:collapse">',
        f'<caption style="text-align:left;font-weight:bold">{html.escape(table.title)}</caption>',
        f'<thead><tr style="border-bottom:1px solid #888">{cells("th", table.columns)}</tr></thead>',
        "<tbody>",
        *rows,
        "</tbody>",
        "</table>",
    ]
    if table.notes:
        parts += ["<ul>", *(f"<li>{html.escape(note)}</li>" for note in table.notes), "</ul>"]
    return "\n".join(parts) + "\n"


RENDERERS: dict[str, Callable[[ReportTable], str]] = {
    "md": to_markdown,
    "csv": to_csv,
    "latex": to_latex,
    "html": to_html,
}


def render(table: ReportTable, fmt: str) -> str:
    """The table in `fmt`: md, csv, latex or html."""
    renderer = RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown table format {fmt!r}; expected one of {', '.join(RENDERERS)}")
    return renderer(table)

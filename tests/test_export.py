"""Renderers of a ReportTable: markdown, csv, LaTeX and HTML, chosen by format name."""

from __future__ import annotations

import pytest

from harness.export import RENDERERS, latex_escape, render, to_csv, to_html, to_latex
from harness.tables import ReportTable


def small_table() -> ReportTable:
    table = ReportTable(title="toy · scores x100", columns=["question type", "n", "f1"], notes=["n: questions"])
    table.add_row("single-hop", "2", "50.0 [0.0, 100.0]")
    table.add_row("overall", "2", "50.0 [0.0, 100.0]", emphasized=True)
    return table


def test_markdown_of_a_small_table():
    assert render(small_table(), "md") == (
        "**toy · scores x100**\n"
        "\n"
        "| question type | n | f1 |\n"
        "| --- | ---: | ---: |\n"
        "| single-hop | 2 | 50.0 [0.0, 100.0] |\n"
        "| **overall** | **2** | **50.0 [0.0, 100.0]** |\n"
        "\n"
        "- n: questions\n"
    )


def test_csv_has_header_and_rows_only_and_quotes_commas():
    assert to_csv(small_table()) == (
        'question type,n,f1\nsingle-hop,2,"50.0 [0.0, 100.0]"\noverall,2,"50.0 [0.0, 100.0]"\n'
    )


def test_latex_escapes_special_characters():
    assert latex_escape("a_b & 50%") == r"a\_b \& 50\%"
    assert latex_escape(r"$#{}~^\x") == r"\$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}x"


def test_latex_is_a_booktabs_tabular_with_bold_overall_and_footnote_notes():
    table = small_table()
    table.rows[0][0] = "a_b & 50%"
    latex = to_latex(table)

    assert r"\begin{tabular}{lrr}" in latex
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert r"a\_b \& 50\% & 2 & 50.0 [0.0, 100.0] \\" in latex
    assert "\\midrule\n\\textbf{overall} & \\textbf{2} & \\textbf{50.0 [0.0, 100.0]} \\\\" in latex
    assert "{\\footnotesize\\raggedright\nn: questions\\par\n}" in latex
    assert r"\caption{toy · scores x100}" in latex


def test_html_escapes_everything_and_bolds_the_emphasized_row():
    table = small_table()
    table.title = "<script>alert(1)</script>"
    table.rows[0][0] = "<script>"
    table.notes = ["a & b <i>"]
    page = to_html(table)

    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</caption>" in page
    assert ">&lt;script&gt;</td>" in page
    assert "<ul>\n<li>a &amp; b &lt;i&gt;</li>\n</ul>" in page
    overall = next(line for line in page.splitlines() if "overall" in line)
    assert overall.startswith('<tr style="font-weight:bold;border-top:1px solid #888">')
    assert page.count("<th ") == 3 and page.count("<tr") == 3


def test_html_without_notes_has_no_list():
    table = small_table()
    table.notes = []
    assert "<ul>" not in to_html(table)


@pytest.mark.parametrize("fmt", ["md", "csv", "latex", "html"])
def test_render_dispatches_every_format(fmt):
    assert render(small_table(), fmt) == RENDERERS[fmt](small_table())


def test_render_names_the_formats_on_an_unknown_one():
    with pytest.raises(ValueError, match="md, csv, latex, html"):
        render(small_table(), "xlsx")

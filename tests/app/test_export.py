"""app.export: pure helpers behind the Compare page (no Streamlit session); charts: test_charts.py."""
from __future__ import annotations

import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from app import export
from ood_core import metrics


@dataclass
class FakeResult:
    metrics: dict
    average: metrics.OODMetrics
    id_accuracy: float


def fake_results() -> dict[str, FakeResult]:
    gen = torch.Generator().manual_seed(0)
    id_scores = torch.randn(300, generator=gen) + 2
    out = {}
    for method, shift in {"weak": 1.5, "strong": 0.0}.items():
        per = {name: metrics.evaluate(id_scores, torch.randn(200, generator=gen) + shift + offset)
               for name, offset in {"a": 0.0, "b": -0.5}.items()}
        out[method] = FakeResult(per, metrics.average_metrics(list(per.values())), 0.9)
    return out


def test_metrics_table_values_and_best():
    results = fake_results()
    frame = export.metrics_table(results, ["a", "b"])
    assert frame.loc["strong", ("a", "FPR95 ↓")] == 100 * results["strong"].metrics["a"].fpr95
    assert frame.loc["weak", ("average", "AUROC ↑")] == 100 * results["weak"].average.auroc
    best = export.best_per_column(frame)
    assert best[("average", "FPR95 ↓")] == "strong" and best[("average", "AUROC ↑")] == "strong"
    positive = export.metrics_table(results, ["a", "b"], ood_positive=True)
    assert positive.loc["weak", ("a", export.OOD_POSITIVE_LABEL)] == 100 * results["weak"].metrics["a"].fpr95_ood_positive


def test_exports_contain_every_number_and_mark_the_best():
    frame = export.metrics_table(fake_results(), ["a", "b"])
    csv = export.to_csv(frame)
    assert csv.splitlines()[0].startswith("method,ood,") and len(csv.splitlines()) == 1 + 2 * 3
    for layout in export.LATEX_LAYOUTS:
        latex = export.to_latex(frame, layout=layout)
        assert "\\toprule" in latex and f"\\textbf{{{frame.loc['strong', ('average', 'AUROC ↑')]:.1f}}}" in latex
    markdown = export.to_markdown(frame)
    assert markdown.count("\n") == 4 and f"**{frame.loc['strong', ('a', 'AUROC ↑')]:.1f}**" in markdown


# -- exports: CSV, LaTeX, Markdown, the Compare table's number format ---------------------------

OODS = ["isun", "lsun_crop", "places#365", "textures", "svhn"]
SPECIAL_TITLE = "p_a & 50% #1"  # every LaTeX special character a title or set name could carry


@dataclass
class Figures:
    fpr95: float
    fpr95_ood_positive: float
    auroc: float
    aupr_in: float
    aupr_out: float


@dataclass
class Row:
    metrics: dict
    average: Figures
    id_accuracy: float
    degenerate: tuple = ()


def many_results(n_oods: int = 5) -> tuple[dict[str, Row], dict[str, str], list[str]]:
    """Every registered scorer (26) plus one title full of LaTeX specials, on ``n_oods`` sets, with
    random figures; ASH-S degenerate (it then has the best values) and DICE's head less accurate."""
    from ood_core.scorers import SCORERS, create_scorer

    rng = np.random.default_rng(0)
    figures = lambda: Figures(*rng.uniform(0.05, 0.95, size=5))  # noqa: E731
    oods = OODS[:n_oods]
    titles = {name: create_scorer(name).title for name in SCORERS.names()}
    titles["special"] = SPECIAL_TITLE
    results = {name: Row({ood: figures() for ood in oods}, figures(), 0.9888 if name != "dice" else 0.9712)
               for name in titles}
    perfect = Figures(0.0, 0.0, 1.0, 1.0, 1.0)
    results["ash-s"] = Row({ood: perfect for ood in oods}, perfect, 0.1, ("head at chance",))
    return results, titles, oods


def _unescaped(text: str, characters: str) -> list[str]:
    return re.findall(rf"(?<!\\)[{re.escape(characters)}]", text)


def _tabular_columns(spec: str) -> int:
    """Columns of a tabular spec such as ``lrrrp{0.25\\linewidth}``."""
    return len(re.findall(r"[lrc]|p\{[^{}]*\}", re.sub(r"p\{[^{}]*\}", "p{}", spec)))


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)&", row.removesuffix(r"\\").strip())]


def _span(cell: str) -> int:
    found = re.match(r"\\multicolumn\{(\d+)\}", cell)
    return int(found.group(1)) if found else 1


def check_latex_structure(latex: str) -> tuple[int, list[list[str]]]:
    """Assert that ``latex`` is a well-formed booktabs table; returns (columns, rows as cells)."""
    assert latex.isascii(), [c for c in latex if not c.isascii()]  # pdflatex-safe: no raw Unicode
    body = "\n".join(line for line in latex.splitlines() if not line.startswith("%"))
    depth = 0
    for brace in _unescaped(body, "{}"):
        depth += 1 if brace == "{" else -1
        assert depth >= 0, "a } closes nothing"
    assert depth == 0, "unbalanced braces"
    assert len(_unescaped(body, "$")) % 2 == 0, "unbalanced math mode"
    assert not _unescaped(body, "%#_"), "an unescaped special character"
    for environment in ("table", "tabular"):
        assert body.count(f"\\begin{{{environment}}}") == body.count(f"\\end{{{environment}}}") == 1
    assert re.search(r"\\caption\{.+\}", body) and r"\label{tab:" in body
    lines = body.splitlines()
    top, bottom = lines.index(r"\toprule"), lines.index(r"\bottomrule")
    assert top < lines.index(r"\midrule") < bottom
    spec = re.search(r"\\begin\{tabular\}\{(.+)\}$", body, re.MULTILINE).group(1)
    columns = _tabular_columns(spec)
    rows = [_cells(line) for line in lines[top + 1:bottom] if line.endswith(r"\\")]
    assert rows and rows[0][0] == "Method" and len(rows[0]) == columns, rows[0]
    for cells in rows:
        assert sum(_span(c) for c in cells) == columns, cells  # the same width as the header
        assert all(cells), f"an empty cell (the old stray header row was all empty): {cells}"
    return columns, rows


@pytest.mark.parametrize("layout", list(export.LATEX_LAYOUTS))
@pytest.mark.parametrize("tuned", [False, True])
def test_latex_is_a_well_formed_table_that_fits_a_page(layout, tuned):
    results, titles, oods = many_results()
    frame = export.metrics_table(results, oods, titles=titles)
    chosen = {export.row_label(m, r, titles): "delta=1.2, p_a=50" for m, r in results.items()} if tuned else None
    latex = export.to_latex(frame, chosen, layout=layout, caption="demo-cnn on demo_mnist (50% of it).")
    columns, rows = check_latex_structure(latex)
    assert columns <= 7 and (columns <= 6 or tuned)
    numbers = [c for cells in rows[1:] for c in cells if re.fullmatch(r"(\\textbf\{)?[\d.]+\}?", c)]
    assert numbers and all(re.search(r"\d+\.\d\b(?!\d)", c) for c in numbers)  # one decimal
    method_rows = [cells for cells in rows[1:] if not cells[0].startswith(r"\multicolumn")]
    degenerate = [cells for cells in method_rows if cells[0].endswith(r"\ddag{}")]
    assert degenerate and not any(r"\textbf" in c for cells in degenerate for c in cells)
    assert r"p\_a \& 50\% \#1" in latex and "DICE + ReAct" in latex and "NAP-R" in latex
    assert r"demo-cnn on demo\_mnist (50\% of it)." in latex
    assert "Method & &" not in latex  # the old stray header row
    if layout == "blocks":
        headings = [cells[0] for cells in rows if cells[0].startswith(r"\multicolumn")]
        assert [h for h in headings if "textit{" in h][:len(oods)] == [
            f"\\multicolumn{{5}}{{l}}{{\\textit{{{export._latex_text(o)}}}}}" for o in oods]
        assert r"\textit{Average over 5 OOD sets}" in latex and latex.count(r"\addlinespace") == len(oods) - 1
        # one block per set and the average, each a row per method; the best of each column in bold
        assert len([c for c in method_rows if len(c) == columns]) == len(results) * (len(oods) + 1)
        assert latex.count(r"\textbf{") == 4 * (len(oods) + 1) + latex.count(r"\textbf{bold}")
        assert "ID test accuracy 98.9\\,\\% (ASH-S \\ddag{} 10.0\\,\\%, DICE 97.1\\,\\%)" in latex
    else:
        assert len(method_rows) == len(results) and rows[0][5] == "ID acc."
        assert latex.count(r"\textbf{") == 4 + latex.count(r"\textbf{bold}")
        assert "Averages over 5 OOD sets" in latex
    assert (r"delta=1.2, p\_a=50" in latex) == tuned


def test_latex_layout_unknown_is_refused():
    frame = export.metrics_table(fake_results(), ["a", "b"])
    with pytest.raises(ValueError, match="blocks, average"):
        export.to_latex(frame, layout="wide")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.parametrize("layout", list(export.LATEX_LAYOUTS))
def test_latex_compiles_without_overfull_boxes(layout, tmp_path):
    results, titles, oods = many_results()
    frame = export.metrics_table(results, oods, titles=titles)
    chosen = {export.row_label(m, r, titles): "delta=1.2, p_a=50" for m, r in results.items()}
    document = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                + export.to_latex(frame, chosen, layout=layout) + "\\end{document}\n")
    (tmp_path / "table.tex").write_text(document)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Overfull \\hbox" not in (tmp_path / "table.log").read_text(errors="replace")


@pytest.mark.parametrize("ood_positive", [False, True])
def test_csv_has_ascii_headers_and_round_trips_through_pandas(ood_positive):
    results, titles, oods = many_results()
    frame = export.metrics_table(results, oods, titles=titles, ood_positive=ood_positive)
    text = export.to_csv(frame)
    header = text.splitlines()[0]
    assert header.isascii() and re.fullmatch(r"[a-z0-9_,]+", header), header
    fpr = "fpr95_ood_positive" if ood_positive else "fpr95"
    assert header == f"method,ood,{fpr},auroc,aupr_in,aupr_out,id_accuracy,degenerate"
    read = pd.read_csv(io.StringIO(text), float_precision="round_trip")
    keys = [fpr, "auroc", "aupr_in", "aupr_out", "id_accuracy"]
    assert all(np.issubdtype(read[k].dtype, np.floating) for k in keys) and read["degenerate"].dtype == bool
    assert len(read) == len(results) * (len(oods) + 1) and set(read["ood"]) == {*oods, "average"}
    wide = read.set_index(["method", "ood"])
    labels = {label: label.removesuffix(export.DEGENERATE_MARK).rstrip() for label in frame.index}
    for label, method in labels.items():
        for ood in [*oods, "average"]:
            for (group, metric), key in [((ood, m), export.CSV_METRIC_KEYS[m]) for m in export._metric_labels(frame)]:
                assert wide.loc[(method, ood), key] == round(frame.loc[label, (group, metric)] / 100, 6)
            assert abs(wide.loc[(method, ood), "id_accuracy"] - results_accuracy(results, titles, method)) < 5e-7
            assert wide.loc[(method, ood), "degenerate"] == (method == "ASH-S")
    default = pd.read_csv(io.StringIO(text))  # pandas' default float parser: the same to 1e-12
    np.testing.assert_allclose(default[keys].to_numpy(), read[keys].to_numpy(), rtol=0, atol=1e-12)
    assert list(wide.loc[("MSP", slice(None)), :].index.get_level_values("ood")) == [*oods, "average"]


def results_accuracy(results: dict[str, Row], titles: dict[str, str], title: str) -> float:
    return next(r.id_accuracy for m, r in results.items() if titles[m] == title)


def test_csv_of_a_tuned_table_carries_the_chosen_setting_as_text():
    results, titles, oods = many_results(2)
    frame = export.metrics_table(results, oods, titles=titles)
    chosen = {label: f"delta={i}, p_a=50" for i, label in enumerate(frame.index)}
    read = pd.read_csv(io.StringIO(export.to_csv(frame, chosen)))
    assert list(read.columns) == [*export.CSV_COLUMNS, "chosen"]
    assert read.loc[read["method"] == "DICE", "chosen"].unique().tolist() == [chosen["DICE"]]


def test_markdown_and_the_interval_and_plain_views_show_one_decimal():
    results, titles, oods = many_results(2)
    frame = export.metrics_table(results, oods, titles=titles)
    rows = export.to_markdown(frame).splitlines()[2:]
    cells = [c.strip() for row in rows for c in row.strip("|").split("|")[1:]]
    assert cells and all(re.fullmatch(r"(\*\*)?\d+\.\d(\*\*)?", c) for c in cells), cells[:8]
    assert "| ASH-S ‡ |" in export.to_markdown(frame)  # content unchanged: the title and its mark
    from app.views import compare

    html = compare._highlight_best(frame, export.flat_columns(frame)).to_html()
    shown = re.findall(r">\s*(\d+\.\d+)\s*<", html)
    assert len(shown) == frame.size and all(re.fullmatch(r"\d+\.\d", v) for v in shown), shown[:8]


def test_summary_numbers_use_the_app_formats():
    results, titles, oods = many_results(2)
    first, second = export.summary_lines(results, oods, titles=titles)
    assert re.search(r"\*\*Best on average\*\* \(FPR95, lower is better\): \*\*.+\*\* \(\d+\.\d %\)", first)
    assert re.search(r"over the 26 methods ranked", second)  # 27 rows, ASH-S degenerate
    one = export.summary_lines({"msp": results["msp"]}, oods[:1], titles=titles)
    assert one[1].endswith("over the 1 method ranked).")


# -- the Compare page (AppTest on the embedded demo) ---------------------------------------------


def test_compare_shows_one_decimal_and_exports_the_chosen_latex_layout(demo_app, monkeypatch):
    from streamlit import dataframe_util
    from streamlit.testing.v1 import AppTest

    layouts: list[str] = []
    to_latex = export.to_latex

    def recording(*args, **kwargs):
        layouts.append(kwargs.get("layout", "blocks"))
        return to_latex(*args, **kwargs)

    monkeypatch.setattr(export, "to_latex", recording)
    main = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
    at = AppTest.from_file(main, default_timeout=90)
    at.query_params["methods"] = "energy,msp"
    at.run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    captions = "\n".join(str(c.value) for c in at.caption)
    assert re.search(r"ID test accuracy \d+\.\d % \(800 ID test images\)", captions), captions
    styler = at.dataframe[0].proto.arrow_data.styler  # what the browser shows: the Styler's display values
    shown = dataframe_util.convert_arrow_bytes_to_pandas_df(styler.display_values)
    numbers = [str(v) for v in shown.to_numpy().ravel() if re.fullmatch(r"[\d.]+", str(v))]
    assert len(numbers) == at.dataframe[0].value.size and all(re.fullmatch(r"\d+\.\d", v) for v in numbers), numbers
    radio = at.radio(key="export_latex_layout")
    assert radio.value == "blocks" and radio.options == list(export.LATEX_LAYOUTS.values())
    assert [b.label for b in at.get("download_button")] == ["CSV", "LaTeX", "Markdown"]
    assert layouts[-1] == "blocks"
    radio.set_value("average")
    at.run()
    assert not at.exception and layouts[-1] == "average"

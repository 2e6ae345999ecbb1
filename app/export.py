"""The Compare page's metrics table as a DataFrame, and its CSV / LaTeX / Markdown exports.

Rows: methods; columns: (OOD set or "average", metric). Rates are percentages (the papers'
convention), shown with one decimal (:data:`app.fmt.RATE_FORMAT`). Only formatting here: every
number comes from ``MethodResult.metrics`` (and, for the interval view, from an
``ood_core.bootstrap.BootstrapTable``). A method at a degenerate setting
(``MethodResult.degenerate``) is labelled with :data:`DEGENERATE_MARK` and never marked best.

Tuned tables (hyperparameters chosen on validation) carry one more column,
:data:`CHOSEN_LABEL`, given to the exports as ``chosen``: row label → the text of
``ood_core.report_formats.chosen_label``.

Exports:

* CSV (:func:`to_csv`): long ("tidy") and ASCII-only, the record schema of
  ``python -m ood_core.report --format csv``: one row per (method, OOD set) plus
  ``ood == "average"``, columns :data:`CSV_COLUMNS` with rates as fractions in [0, 1]
  (``fpr95`` is ``fpr95_ood_positive`` when the table shows that convention), ``degenerate``
  a boolean, and ``chosen`` (text) for tuned tables. ``pandas.read_csv`` reads it back as
  numbers; ``.pivot(index="method", columns="ood")`` gives the wide table.
* LaTeX (:func:`to_latex`): a booktabs ``table`` with a caption/label skeleton, one decimal,
  the best value per column in bold; layout :data:`LATEX_LAYOUTS`: one block of rows per
  OOD set plus an Average block (5 columns), or the averages only (6 columns).
* Markdown (:func:`to_markdown`): the table as shown, best per column in bold.
"""
from __future__ import annotations

import csv
import io
import math
import unicodedata
from collections import Counter
from typing import Any, Mapping, Sequence

import pandas as pd

from app import fmt
from ood_core.report_formats import TIED_MARK

#: metric attribute → (column label, True when lower is better)
METRICS: dict[str, tuple[str, bool]] = {
    "fpr95": ("FPR95 ↓", True),
    "auroc": ("AUROC ↑", False),
    "aupr_in": ("AUPR-In ↑", False),
    "aupr_out": ("AUPR-Out ↑", False),
}
OOD_POSITIVE_LABEL = "FPR95 (OOD+) ↓"
ID_ACCURACY_LABEL = "ID acc."
ID_ACCURACY_COLUMN = ("", ID_ACCURACY_LABEL)
DEGENERATE_MARK = "‡"
CHOSEN_LABEL = "chosen (vs defaults)"
CHOSEN_COLUMN = ("", CHOSEN_LABEL)
BEST_MARK = "*"  # the interval view's best value of a column (as in the report's Markdown)
AVERAGE = "average"


def row_label(method: str, result: object, titles: Mapping[str, str] | None = None) -> str:
    """A method's row label: its title, with the degenerate mark when its setting is degenerate."""
    title = (titles or {}).get(method, method)
    return f"{title} {DEGENERATE_MARK}" if getattr(result, "degenerate", ()) else title


def metrics_table(results: Mapping[str, object], oods: Sequence[str], *, ood_positive: bool = False,
                  titles: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A (methods × (set, metric)) table in percent, with an "ID acc." column.

    results: method name → ``MethodResult``; ood_positive: report FPR95 with OOD as the
    positive class (``OODMetrics.fpr95_ood_positive``, the OpenOOD / pytorch-ood convention).
    """
    rows = {}
    for method, result in results.items():
        row: dict[tuple[str, str], float] = {}
        for ood in [*oods, AVERAGE]:
            m = result.average if ood == AVERAGE else result.metrics[ood]
            for attribute, (label, _) in METRICS.items():
                if attribute == "fpr95" and ood_positive:
                    row[(ood, OOD_POSITIVE_LABEL)] = 100.0 * m.fpr95_ood_positive
                else:
                    row[(ood, label)] = 100.0 * getattr(m, attribute)
        row[ID_ACCURACY_COLUMN] = 100.0 * result.id_accuracy
        rows[row_label(method, result, titles)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.index.name = "method"
    return frame


def lower_is_better(column: tuple[str, str]) -> bool:
    return "↓" in column[1]


def is_degenerate(label: object) -> bool:
    """Whether a row label carries :data:`DEGENERATE_MARK`."""
    return str(label).endswith(DEGENERATE_MARK)


def best_per_column(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Column → index label of its best method (min for ↓ columns, max otherwise; ID acc. and
    degenerate rows excluded)."""
    ranked = frame.loc[[label for label in frame.index if not is_degenerate(label)]]
    best = {}
    for column in frame.columns:
        if column[1] == ID_ACCURACY_LABEL or ranked.empty or ranked[column].isna().all():
            continue
        best[column] = ranked[column].idxmin() if lower_is_better(column) else ranked[column].idxmax()
    return best


def flat_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Single-level "set · metric" columns (for Markdown / st.dataframe)."""
    flat = frame.copy()
    flat.columns = [metric if not ood else f"{ood} · {metric}" for ood, metric in frame.columns]
    return flat


def _groups(frame: pd.DataFrame) -> list[str]:
    """The table's column groups in order: the OOD sets, then "average"."""
    return list(dict.fromkeys(ood for ood, _ in frame.columns if ood))


def _metric_labels(frame: pd.DataFrame) -> list[str]:
    """The metric labels of one group (FPR95 or its OOD-positive form, AUROC, AUPR-In, AUPR-Out)."""
    return list(dict.fromkeys(metric for ood, metric in frame.columns if ood))


def _rate(value: float) -> str:
    """A percentage cell with one decimal ("--" when not finite)."""
    return fmt.RATE_FORMAT.format(value) if math.isfinite(float(value)) else "--"


# -- CSV ---------------------------------------------------------------------------------------

#: metric label → CSV column (the keys of ``ood_core.report_formats.records``)
CSV_METRIC_KEYS: dict[str, str] = {label: key for key, (label, _) in METRICS.items()} | {
    OOD_POSITIVE_LABEL: "fpr95_ood_positive"}
CSV_COLUMNS = ("method", "ood", "fpr95", "auroc", "aupr_in", "aupr_out", "id_accuracy", "degenerate")
CSV_CHOSEN = "chosen"
CSV_DIGITS = 6  # of a fraction: 4 decimals of a percentage, far below the table's precision


def to_csv(frame: pd.DataFrame, chosen: Mapping[str, str] | None = None) -> str:
    """The table as long ASCII CSV: one row per (method, OOD set or "average"); see the module
    docstring for the columns. Rates as fractions (``frame`` / 100, 6 decimals); ``method`` is
    the title without the degenerate mark, ``degenerate`` says whether it had one; with
    ``chosen`` (tuned rows) a last column ``chosen``: the hyperparameters each row uses, as
    changed from the defaults."""
    metrics = _metric_labels(frame)
    fields = ["method", "ood", *(CSV_METRIC_KEYS[m] for m in metrics), "id_accuracy", "degenerate"]
    fields += [CSV_CHOSEN] if chosen is not None else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for label in frame.index:
        method = str(label).removesuffix(DEGENERATE_MARK).rstrip()
        accuracy = round(float(frame.loc[label, ID_ACCURACY_COLUMN]) / 100, CSV_DIGITS)
        for group in _groups(frame):
            record: dict[str, Any] = {"method": method, "ood": group}
            record.update({CSV_METRIC_KEYS[m]: round(float(frame.loc[label, (group, m)]) / 100, CSV_DIGITS)
                           for m in metrics})
            record.update(id_accuracy=accuracy, degenerate=is_degenerate(label))
            if chosen is not None:
                record[CSV_CHOSEN] = chosen.get(label, "")
            writer.writerow(record)
    return buffer.getvalue()


# -- LaTeX -------------------------------------------------------------------------------------

LATEX_LAYOUTS: dict[str, str] = {"blocks": "one block per OOD set", "average": "average only"}
LATEX_LABEL = "tab:ood-lens"
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  DEGENERATE_MARK: r"\ddag{}", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "±": r"$\pm$",
                  "−": "$-$", "×": r"$\times$", "≈": r"$\approx$", "·": r"$\cdot$", "–": "--", "—": "---"}


def _latex_text(text: object) -> str:
    """Plain text (a title, a set name, a hyperparameter label) safe in a LaTeX document compiled
    by pdflatex: its special characters escaped, the table's marks and Greek letters as commands."""
    out = []
    for character in str(text):
        if character in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[character])
        elif ord(character) > 127 and unicodedata.name(character, "").startswith("GREEK SMALL LETTER "):
            out.append(f"$\\{unicodedata.name(character).split()[-1].lower()}$")
        else:
            out.append(character)
    return "".join(out)


def _latex_row(cells: Sequence[str]) -> str:
    return " & ".join(cells) + r" \\"


def _latex_cells(frame: pd.DataFrame, label: object, columns: Sequence[tuple[str, str]],
                 best: Mapping[tuple[str, str], str]) -> list[str]:
    """A row's number cells, one decimal, the column's best in bold."""
    cells = []
    for column in columns:
        cell = _rate(frame.loc[label, column])
        cells.append(f"\\textbf{{{cell}}}" if best.get(column) == label else cell)
    return cells


def _accuracy_note(frame: pd.DataFrame) -> str:
    """The blocks layout has no ID-accuracy column: "ID test accuracy 98.9 %", with the methods
    whose (modified) head differs listed after it."""
    accuracy = frame[ID_ACCURACY_COLUMN]
    usual = Counter(accuracy.round(6)).most_common(1)[0][0]  # ties: the first row's value
    others = [f"{_latex_text(label)} {_rate(value)}\\,\\%" for label, value in accuracy.items()
              if round(value, 6) != usual]
    return f"ID test accuracy {_rate(usual)}\\,\\%" + (f" ({', '.join(others)})" if others else "") + "."


def to_latex(frame: pd.DataFrame, chosen: Mapping[str, str] | None = None, *, layout: str = "blocks",
             caption: str = "OOD detection results.", label: str = LATEX_LABEL) -> str:
    """A paper-ready booktabs ``table`` (needs ``\\usepackage{booktabs}``): rates in % with one
    decimal, the best value per column in bold, degenerate rows marked ``\\ddag``.

    layout: ``"blocks"``: method × (FPR95, AUROC, AUPR-In, AUPR-Out), one block of rows per OOD
    set and an Average block (5 columns; the chosen hyperparameters, if any, in a last block);
    ``"average"``: one row per method with the averages and the ID accuracy (6 columns, 7 with
    ``chosen``). caption: plain text (escaped here), followed by what the marks mean; label: the
    ``\\label`` key.
    """
    if layout not in LATEX_LAYOUTS:
        raise ValueError(f"unknown LaTeX layout {layout!r}; choose one of {', '.join(LATEX_LAYOUTS)}")
    best = best_per_column(frame)
    metrics = _metric_labels(frame)
    header = ["Method", *(_latex_text(m.replace(" ↓", "↓").replace(" ↑", "↑")) for m in metrics)]
    notes = [_latex_text(caption.strip()),
             r"Rates in \%; $\downarrow$ lower is better, $\uparrow$ higher is better; "
             r"best per column in \textbf{bold}."]
    if OOD_POSITIVE_LABEL in metrics:
        notes.append("FPR95 with OOD as the positive class.")
    if any(is_degenerate(m) for m in frame.index):
        notes.append(r"\ddag{} degenerate setting, never marked best.")
    body: list[str] = []
    if layout == "average":
        header.append("ID acc.")
        columns = [(AVERAGE, m) for m in metrics] + [ID_ACCURACY_COLUMN]
        spec = "l" + "r" * len(columns)
        if chosen is not None:
            header.append("Chosen (vs defaults)")
            spec += r"p{0.25\linewidth}"
        notes.insert(1, f"Averages over {fmt.count(len(_groups(frame)) - 1, 'OOD set')}.")
        for row in frame.index:
            cells = [_latex_text(row), *_latex_cells(frame, row, columns, best)]
            body.append(_latex_row(cells + ([_latex_text(chosen.get(row, ""))] if chosen is not None else [])))
    else:
        width = len(header)
        spec = "l" + "r" * len(metrics)
        notes.append(_accuracy_note(frame))
        for index, group in enumerate(_groups(frame)):
            title = f"Average over {fmt.count(len(_groups(frame)) - 1, 'OOD set')}" if group == AVERAGE else group
            # the first block sits under the header's \midrule; the Average block is set apart by a rule
            body += [r"\midrule" if group == AVERAGE else r"\addlinespace" if index else "",
                     _latex_row([f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{_latex_text(title)}}}}}"])]
            body += [_latex_row([_latex_text(row), *_latex_cells(frame, row, [(group, m) for m in metrics], best)])
                     for row in frame.index]
        if chosen is not None:
            heading = f"\\multicolumn{{{width}}}{{l}}{{\\textit{{Chosen on validation (vs defaults)}}}}"
            body += [r"\midrule", _latex_row([heading])]
            span = f"\\multicolumn{{{width - 1}}}{{p{{0.45\\linewidth}}}}"
            body += [_latex_row([_latex_text(row), f"{span}{{{_latex_text(chosen.get(row, ''))}}}"])
                     for row in frame.index]
    lines = [r"% Needs \usepackage{booktabs} in the preamble.", r"\begin{table}[t]", r"\centering", r"\small",
             f"\\caption{{{' '.join(notes)}}}", f"\\label{{{label}}}", f"\\begin{{tabular}}{{{spec}}}",
             r"\toprule", _latex_row(header), r"\midrule",
             *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(line for line in lines if line) + "\n"


# -- Markdown ----------------------------------------------------------------------------------

def to_markdown(frame: pd.DataFrame, chosen: Mapping[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table (one decimal) with the best value per column in bold
    (and, with ``chosen``, a last column :data:`CHOSEN_LABEL`)."""
    best = best_per_column(frame)
    flat = flat_columns(frame)
    header = ["method", *flat.columns] + ([CHOSEN_LABEL] if chosen is not None else [])
    align = ["---"] + ["---:"] * len(flat.columns) + (["---"] if chosen is not None else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for method in frame.index:
        cells = []
        for column in frame.columns:
            cell = _rate(frame.loc[method, column])
            cells.append(f"**{cell}**" if best.get(column) == method else cell)
        if chosen is not None:
            cells.append(chosen.get(method, "").replace("|", "\\|"))
        lines.append("| " + " | ".join([str(method), *cells]) + " |")
    return "\n".join(lines) + "\n"


# -- the interval view -------------------------------------------------------------------------

INTERVAL_METRICS: dict[str, str] = {"fpr95": METRICS["fpr95"][0], "auroc": METRICS["auroc"][0]}


def _interval_cell(interval: Any, mark: str) -> str:
    return f"{_rate(100 * interval.point)}{mark} [{_rate(100 * interval.lo)}, {_rate(100 * interval.hi)}]"


def interval_table(results: Mapping[str, Any], oods: Sequence[str], intervals: Any, *,
                   titles: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The interval view of :func:`metrics_table`: FPR95 (the papers' convention) and AUROC per
    OOD set and on average as text, ``"27.3 [22.0, 33.4]"`` (percent, the point estimate and its
    bootstrap interval), plus "ID acc.".

    intervals: an ``ood_core.bootstrap.BootstrapTable`` of ``results`` (keyed by method name).
    The best method of a column (``Comparison.best``) gets :data:`BEST_MARK` after its value; a
    method whose paired difference to that best is not significant gets
    :data:`~ood_core.report_formats.TIED_MARK`; a degenerate row gets neither.
    """
    rows = {}
    for method, result in results.items():
        row: dict[tuple[str, str], str] = {}
        for group in [*oods, "average"]:
            found = intervals.intervals[method][group]
            for metric, label in INTERVAL_METRICS.items():
                comparison = intervals.comparisons[group][metric]
                difference = comparison.differences.get(method)
                mark = ""
                if not getattr(result, "degenerate", ()):
                    if comparison.best == method:
                        mark = BEST_MARK
                    elif difference is not None and not difference.significant:
                        mark = TIED_MARK
                row[(group, label)] = _interval_cell(getattr(found, metric), mark)
        row[ID_ACCURACY_COLUMN] = _rate(100.0 * result.id_accuracy)
        rows[row_label(method, result, titles)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.index.name = "method"
    return frame


def is_best_cell(cell: object) -> bool:
    """Whether an :func:`interval_table` cell holds its column's best value."""
    return isinstance(cell, str) and cell.split(" [", 1)[0].endswith(BEST_MARK)


def interval_legend(intervals: Any) -> str:
    """The line under the interval view saying what its brackets and marks mean."""
    return (f"[lo, hi]: {100 * intervals.level:g} % bootstrap intervals ({intervals.n_boot:,} resamples of the ID "
            f"test and OOD scores, seed {intervals.seed}); {BEST_MARK} best in its column; {TIED_MARK} not "
            "significantly different from that best (paired bootstrap on the same resamples).")


# -- the story above the table -----------------------------------------------------------------

def _fpr(metrics: Any, ood_positive: bool) -> float:
    return 100.0 * float(metrics.fpr95_ood_positive if ood_positive else metrics.fpr95)


def summary_lines(results: Mapping[str, Any], oods: Sequence[str], *, titles: Mapping[str, str] | None = None,
                  ood_positive: bool = False, defaults: Mapping[str, Any] | None = None,
                  changed: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Two lines (Markdown) summing up the table shown: the best method on average and per OOD
    set by FPR95 (lowest; degenerate methods are not ranked; the first in table order wins a
    tie), and the hardest OOD set (highest mean FPR95 over the ranked methods); in tuned mode
    (``defaults``: method → result at the published defaults, ``changed``: method → the
    hyperparameters tuning changed), how far tuning moved each method's average FPR95.

    results: method → ``MethodResult`` (the figures shown); ood_positive: read the OOD-positive
    FPR95, as the table then shows. Only reading and formatting of the results' numbers.
    """
    name = lambda method: (titles or {}).get(method, method)  # noqa: E731
    ranked = [m for m, r in results.items() if not getattr(r, "degenerate", ())]
    metric = "FPR95 (OOD+)" if ood_positive else "FPR95"
    if not ranked:
        first = f"No method can be ranked: every setting shown is degenerate ({DEGENERATE_MARK})."
        second = ""
    else:
        def best(values: Mapping[str, float]) -> str:
            return min(ranked, key=lambda m: values[m])  # min keeps the first of equal values

        average = {m: _fpr(results[m].average, ood_positive) for m in ranked}
        winner = best(average)
        per_set = []
        for ood in oods:
            values = {m: _fpr(results[m].metrics[ood], ood_positive) for m in ranked}
            top = best(values)
            per_set.append(f"{ood}: {name(top)} ({fmt.percent(values[top])})")
        first = (f"**Best on average** ({metric}, lower is better): **{name(winner)}** "
                 f"({fmt.percent(average[winner])}). "
                 f"Per OOD set: {'; '.join(per_set)}.")
        means = {ood: sum(_fpr(results[m].metrics[ood], ood_positive) for m in ranked) / len(ranked) for ood in oods}
        hardest = max(oods, key=lambda ood: means[ood]) if oods else None
        second = (f"**Hardest OOD set**: {hardest} (mean {metric} {fmt.percent(means[hardest])} over the "
                  f"{fmt.count(len(ranked), 'method')} ranked)."
                  if hardest is not None else "")
    if defaults is not None and changed is not None:
        shifts = [(name(m), _fpr(results[m].average, ood_positive) - _fpr(defaults[m].average, ood_positive))
                  for m in results if changed.get(m) and m in defaults]
        kept = sum(1 for m in results if not changed.get(m))
        parts = []
        if shifts:
            parts.append("Tuning changed " + ", ".join(
                f"{title}'s{f' average {metric}' if i == 0 else ''} by {fmt.points(delta / 100)}"
                for i, (title, delta) in enumerate(shifts)))
            if kept:
                parts.append(f"{fmt.count(kept, 'method')} kept {'its' if kept == 1 else 'their'} defaults")
        elif kept:
            parts.append(f"Tuning kept the defaults of every method shown ({fmt.count(kept, 'method')})")
        if parts:
            second = " ".join(filter(None, [second, "; ".join(parts) + "."]))
    return [line for line in (first, second) if line]

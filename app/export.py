"""The Compare page's metrics table as a DataFrame, and its CSV / LaTeX / Markdown exports.

Rows: methods; columns: (OOD set or "average", metric). Rates are percentages (the papers'
convention). Only formatting here: every number comes from ``MethodResult.metrics`` (and,
for the interval view, from an ``ood_core.bootstrap.BootstrapTable``). A method at a
degenerate setting (``MethodResult.degenerate``) is labelled with :data:`DEGENERATE_MARK`
and never marked best.

Tuned tables (hyperparameters chosen on validation) carry one more column,
:data:`CHOSEN_LABEL`, given to the exports as ``chosen``: row label → the text of
``ood_core.report_formats.chosen_label``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from ood_core.report_formats import TIED_MARK

#: metric attribute → (column label, True when lower is better)
METRICS: dict[str, tuple[str, bool]] = {
    "fpr95": ("FPR95 ↓", True),
    "auroc": ("AUROC ↑", False),
    "aupr_in": ("AUPR-In ↑", False),
    "aupr_out": ("AUPR-Out ↑", False),
}
OOD_POSITIVE_LABEL = "FPR95 (OOD+) ↓"
DEGENERATE_MARK = "‡"
CHOSEN_LABEL = "chosen (vs defaults)"
CHOSEN_COLUMN = ("", CHOSEN_LABEL)
BEST_MARK = "*"  # the interval view's best value of a column (as in the report's Markdown)


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
        for ood in [*oods, "average"]:
            m = result.average if ood == "average" else result.metrics[ood]
            for attribute, (label, _) in METRICS.items():
                if attribute == "fpr95" and ood_positive:
                    row[(ood, OOD_POSITIVE_LABEL)] = 100.0 * m.fpr95_ood_positive
                else:
                    row[(ood, label)] = 100.0 * getattr(m, attribute)
        row[("", "ID acc.")] = 100.0 * result.id_accuracy
        rows[row_label(method, result, titles)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.index.name = "method"
    return frame


def lower_is_better(column: tuple[str, str]) -> bool:
    return "↓" in column[1]


def best_per_column(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Column → index label of its best method (min for ↓ columns, max otherwise; ID acc. and
    degenerate rows excluded)."""
    ranked = frame.loc[[label for label in frame.index if not str(label).endswith(DEGENERATE_MARK)]]
    best = {}
    for column in frame.columns:
        if column[1] == "ID acc." or ranked.empty or ranked[column].isna().all():
            continue
        best[column] = ranked[column].idxmin() if lower_is_better(column) else ranked[column].idxmax()
    return best


def flat_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Single-level "set · metric" columns (for CSV / Markdown / st.dataframe)."""
    flat = frame.copy()
    flat.columns = [metric if not ood else f"{ood} · {metric}" for ood, metric in frame.columns]
    return flat


def to_csv(frame: pd.DataFrame, chosen: Mapping[str, str] | None = None) -> str:
    """The table in CSV (2 decimals); with ``chosen`` (tuned rows), a last column
    :data:`CHOSEN_LABEL`: the hyperparameters each row uses, as changed from the defaults."""
    flat = flat_columns(frame).round(2)
    if chosen is not None:
        flat[CHOSEN_LABEL] = [chosen.get(label, "") for label in flat.index]
    return flat.to_csv()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_text(text: str) -> str:
    """Plain text (a hyperparameter label) safe inside a LaTeX table cell."""
    return "".join(_LATEX_SPECIAL.get(character, character) for character in text)


def to_latex(frame: pd.DataFrame, chosen: Mapping[str, str] | None = None) -> str:
    """A booktabs table with the best value per column in bold (and, with ``chosen``, the
    chosen hyperparameters as a last, left-aligned column)."""
    best = best_per_column(frame)
    text = frame.copy().astype(object)
    for column in frame.columns:
        for method in frame.index:
            value = frame.loc[method, column]
            cell = f"{value:.2f}"
            text.loc[method, column] = f"\\textbf{{{cell}}}" if best.get(column) == method else cell
    columns = list(frame.columns)
    if chosen is not None:
        text[CHOSEN_COLUMN] = [_latex_text(chosen.get(label, "")) for label in frame.index]
        columns.append(CHOSEN_COLUMN)
    text.columns = pd.MultiIndex.from_tuples([(o.replace("_", r"\_"), m.replace("↓", r"$\downarrow$")
                                               .replace("↑", r"$\uparrow$")) for o, m in columns])
    return text.to_latex(escape=False, multicolumn=True, multicolumn_format="c",
                         column_format="l" + "r" * len(frame.columns) + ("l" if chosen is not None else ""))


def to_markdown(frame: pd.DataFrame, chosen: Mapping[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table with the best value per column in bold (and, with
    ``chosen``, a last column :data:`CHOSEN_LABEL`)."""
    best = best_per_column(frame)
    flat = flat_columns(frame)
    header = ["method", *flat.columns] + ([CHOSEN_LABEL] if chosen is not None else [])
    align = ["---"] + ["---:"] * len(flat.columns) + (["---"] if chosen is not None else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for method in frame.index:
        cells = []
        for column in frame.columns:
            cell = f"{frame.loc[method, column]:.2f}"
            cells.append(f"**{cell}**" if best.get(column) == method else cell)
        if chosen is not None:
            cells.append(chosen.get(method, "").replace("|", "\\|"))
        lines.append("| " + " | ".join([str(method), *cells]) + " |")
    return "\n".join(lines) + "\n"


# -- the interval view -------------------------------------------------------------------------

INTERVAL_METRICS: dict[str, str] = {"fpr95": METRICS["fpr95"][0], "auroc": METRICS["auroc"][0]}


def _interval_cell(interval: Any, mark: str) -> str:
    return f"{100 * interval.point:.1f}{mark} [{100 * interval.lo:.1f}, {100 * interval.hi:.1f}]"


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
        row[("", "ID acc.")] = f"{100.0 * result.id_accuracy:.2f}"
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


def _signed(value: float) -> str:
    text = f"{abs(value):.1f}"
    return ("−" if value < 0 and text != "0.0" else "+" if value > 0 and text != "0.0" else "±") + text


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
            per_set.append(f"{ood}: {name(top)} ({values[top]:.1f} %)")
        first = (f"**Best on average** ({metric}, lower is better): **{name(winner)}** ({average[winner]:.1f} %). "
                 f"Per OOD set: {'; '.join(per_set)}.")
        means = {ood: sum(_fpr(results[m].metrics[ood], ood_positive) for m in ranked) / len(ranked) for ood in oods}
        hardest = max(oods, key=lambda ood: means[ood]) if oods else None
        count = f"{len(ranked)} method" + ("s" if len(ranked) != 1 else "")
        second = (f"**Hardest OOD set**: {hardest} (mean {metric} {means[hardest]:.1f} % over the {count} ranked)."
                  if hardest is not None else "")
    if defaults is not None and changed is not None:
        shifts = [(name(m), _fpr(results[m].average, ood_positive) - _fpr(defaults[m].average, ood_positive))
                  for m in results if changed.get(m) and m in defaults]
        kept = sum(1 for m in results if not changed.get(m))
        methods = lambda n: f"{n} method" + ("s" if n != 1 else "")  # noqa: E731
        parts = []
        if shifts:
            parts.append("Tuning changed " + ", ".join(
                f"{title}'s{f' average {metric}' if i == 0 else ''} by {_signed(delta)} pt"
                for i, (title, delta) in enumerate(shifts)))
            if kept:
                parts.append(f"{methods(kept)} kept {'its' if kept == 1 else 'their'} defaults")
        elif kept:
            parts.append(f"Tuning kept the defaults of every method shown ({methods(kept)})")
        if parts:
            second = " ".join(filter(None, [second, "; ".join(parts) + "."]))
    return [line for line in (first, second) if line]

"""The Compare page's metrics table as a DataFrame, and its CSV / LaTeX / Markdown exports.

Rows: methods; columns: (OOD set or "average", metric). Rates are percentages (the papers'
convention). Only formatting here: every number comes from ``MethodResult.metrics``. A
method at a degenerate setting (``MethodResult.degenerate``) is labelled with
:data:`DEGENERATE_MARK` and never marked best.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

#: metric attribute → (column label, True when lower is better)
METRICS: dict[str, tuple[str, bool]] = {
    "fpr95": ("FPR95 ↓", True),
    "auroc": ("AUROC ↑", False),
    "aupr_in": ("AUPR-In ↑", False),
    "aupr_out": ("AUPR-Out ↑", False),
}
OOD_POSITIVE_LABEL = "FPR95 (OOD+) ↓"
DEGENERATE_MARK = "‡"


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


def to_csv(frame: pd.DataFrame) -> str:
    return flat_columns(frame).round(2).to_csv()


def to_latex(frame: pd.DataFrame) -> str:
    """A booktabs table with the best value per column in bold."""
    best = best_per_column(frame)
    text = frame.copy().astype(object)
    for column in frame.columns:
        for method in frame.index:
            value = frame.loc[method, column]
            cell = f"{value:.2f}"
            text.loc[method, column] = f"\\textbf{{{cell}}}" if best.get(column) == method else cell
    text.columns = pd.MultiIndex.from_tuples([(o.replace("_", r"\_"), m.replace("↓", r"$\downarrow$")
                                               .replace("↑", r"$\uparrow$")) for o, m in frame.columns])
    return text.to_latex(escape=False, multicolumn=True, multicolumn_format="c",
                         column_format="l" + "r" * len(frame.columns))


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table with the best value per column in bold."""
    best = best_per_column(frame)
    flat = flat_columns(frame)
    header = ["method", *flat.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(flat.columns)) + "|"]
    for method in frame.index:
        cells = []
        for column in frame.columns:
            cell = f"{frame.loc[method, column]:.2f}"
            cells.append(f"**{cell}**" if best.get(column) == method else cell)
        lines.append("| " + " | ".join([str(method), *cells]) + " |")
    return "\n".join(lines) + "\n"

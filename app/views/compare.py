"""Compare: the metrics table of the chosen methods on the chosen OOD sets, ROC curves, exports."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, export, resources
from ood_core import metrics


def _highlight_best(frame: pd.DataFrame, flat: pd.DataFrame):
    """A Styler putting the best value of each column in bold."""
    best = export.best_per_column(frame)
    flat_names = dict(zip(frame.columns, flat.columns))
    def style(column: pd.Series) -> list[str]:
        original = next((c for c, f in flat_names.items() if f == column.name), None)
        winner = best.get(original)
        return ["font-weight: 700; background-color: #dbeafe" if idx == winner else "" for idx in column.index]
    return flat.style.apply(style, axis=0).format("{:.2f}")


def render() -> None:
    st.header("Compare methods")
    picked = resources.selected()
    if picked is None:
        return
    bench, oods, methods = picked
    if not methods:
        st.info("Choose one or more methods in the sidebar.")
        return
    ood_positive = st.toggle(
        "FPR95 with OOD as the positive class (OpenOOD / pytorch-ood convention)", key="ood_positive",
        help="Off: the papers' FPR95 (share of OOD accepted at 95 % ID recall). On: share of ID rejected "
             "at 95 % OOD recall, as OpenOOD v1.5 and pytorch-ood report it.")
    results, failed = {}, {}
    for method in methods:
        try:
            results[method] = resources.evaluate(bench, method, None, oods)
        except Exception as error:  # noqa: BLE001 - one bad method must not hide the others
            failed[method] = resources.friendly_error(error)
    for method, message in failed.items():
        st.warning(f"{method}: {message}")
    if not results:
        return
    titles = {m: resources.method_title(m) for m in results}
    frame = export.metrics_table(results, oods, ood_positive=ood_positive, titles=titles)
    flat = export.flat_columns(frame)
    base_accuracy = next(iter(results.values())).base_id_accuracy
    st.caption(f"{bench.model} on {bench.id_dataset}: ID test accuracy {100 * base_accuracy:.2f} % "
               f"({len(bench.id_test)} ID test images). Rates in %; best per column highlighted. "
               + ("FPR95 here is OOD-positive (OpenOOD / pytorch-ood)." if ood_positive
                  else "FPR95 follows the papers (ID positive)."))
    st.dataframe(_highlight_best(frame, flat), key="metrics_table", width="stretch",
                 on_select="ignore")
    for method, result in results.items():
        if result.degenerate:
            st.caption(f"{export.DEGENERATE_MARK} {titles[method]}: degenerate setting, never marked best "
                       f"({'; '.join(result.degenerate)}).")
    downloads = st.columns(3)
    stem = f"ood-lens_{bench.model}_{bench.id_dataset}"
    downloads[0].download_button("CSV", export.to_csv(frame), f"{stem}.csv", "text/csv", key="export_csv")
    downloads[1].download_button("LaTeX", export.to_latex(frame), f"{stem}.tex", "text/x-tex", key="export_latex")
    downloads[2].download_button("Markdown", export.to_markdown(frame), f"{stem}.md", "text/markdown",
                                 key="export_markdown")

    st.subheader("ROC curves")
    ood_name = st.selectbox("OOD set", list(oods), key="roc_ood")
    curves = {titles[m]: metrics.roc_points(r.id_scores, r.ood_scores[ood_name]) for m, r in results.items()}
    st.plotly_chart(charts.roc_curves(curves, title=f"ROC: {bench.id_dataset} vs {ood_name}"), width="stretch",
                    key="roc_chart")


if __name__ == "__main__":
    render()

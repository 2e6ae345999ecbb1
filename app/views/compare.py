"""Compare: the metrics table of the chosen methods on the chosen OOD sets, ROC curves, exports.

Two views of the same table, both kept in the URL (``app/url_state.py``): ``mode=tuned`` (hyperparameters chosen on
the ID validation split against ``val-outliers:<id>``, figures on the test sets at that
setting; absent: the published defaults) and ``ci=on`` (95 % bootstrap intervals, the best
value per column and the values not significantly different from it marked). Every number
comes from ``ood_core`` (``resources``); this page only lays them out.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import charts, export, fmt, resources, url_state
from ood_core import metrics
from ood_core.report_formats import chosen_label

MODE_KEY = "compare_mode"
CI_KEY = "compare_ci"
MODES = {"defaults": "published defaults", "tuned": "tuned on validation"}
BEST_STYLE = "font-weight: 700; background-color: #dbeafe"


def _controls() -> tuple[str, bool, bool]:
    """(mode, intervals shown, OOD-positive FPR95) from the page's controls."""
    for key in (MODE_KEY, CI_KEY, "ood_positive"):  # URL mode=, ci=, pos= (app/url_state.py)
        url_state.control(key)
    left, right = st.columns([3, 2])
    mode = left.segmented_control(
        "Hyperparameters", list(MODES), key=MODE_KEY, format_func=MODES.get, required=True,
        help="Published defaults: every method as its paper sets it. Tuned on validation: each method's declared "
             "grid searched on the ID validation split against synthetic validation outliers (no test set read), "
             "then scored on the test sets at the chosen setting.") or "defaults"
    show_ci = right.toggle("95 % intervals", key=CI_KEY,
                           help="Bootstrap intervals of FPR95 and AUROC (1,000 paired resamples of the ID test and "
                                "OOD scores); marks the values not significantly different from each column's best.")
    ood_positive = st.toggle(
        "FPR95 with OOD as the positive class (OpenOOD / pytorch-ood convention)", key="ood_positive",
        disabled=show_ci,
        help="Off: the papers' FPR95 (share of OOD accepted at 95 % ID recall). On: share of ID rejected "
             "at 95 % OOD recall, as OpenOOD v1.5 and pytorch-ood report it. The interval view uses the papers' FPR95.")
    return mode, show_ci, bool(ood_positive) and not show_ci


def _evaluate(bench, methods, oods) -> tuple[dict, dict]:
    results, failed = {}, {}
    for method in methods:
        try:
            results[method] = resources.evaluate(bench, method, None, oods)
        except Exception as error:  # noqa: BLE001 - one bad method must not hide the others
            failed[method] = resources.friendly_error(error)
    return results, failed


def _tune(bench, methods, protocol) -> tuple[dict, dict]:
    """Every method tuned under ``protocol`` (cached per process), one progress bar while any runs."""
    tuned, failed = {}, {}
    sizes = {}
    for method in methods:
        if not resources.is_tuned(bench, method, protocol):
            try:
                sizes[method] = resources.tuning_size(bench, method)
            except Exception as error:  # noqa: BLE001
                failed[method] = resources.friendly_error(error)
    total = max(1, sum(sizes.values()))
    bar = st.progress(0.0, text="Tuning on validation…") if sizes else None
    done = [0]
    try:
        for method in [m for m in methods if m not in failed]:
            title, size, count = resources.method_title(method), sizes.get(method, 1), [0]

            def point(title: str = title, size: int = size, count: list = count) -> None:
                count[0] += 1
                done[0] += 1
                bar.progress(min(1.0, done[0] / total),
                             text=f"tuning {title}: {min(count[0], size)} of {size} settings")

            try:
                tuned[method] = resources.tuned_method(bench, method, protocol,
                                                       on_point=point if bar is not None else None)
            except Exception as error:  # noqa: BLE001
                failed[method] = resources.friendly_error(error)
    finally:
        if bar is not None:
            bar.empty()
    return tuned, failed


def _highlight_best(frame: pd.DataFrame, flat: pd.DataFrame, chosen: dict[str, str] | None = None):
    """A Styler putting the best value of each column in bold (and the chosen settings last)."""
    best = export.best_per_column(frame)
    winners = {f: best.get(c) for c, f in zip(frame.columns, flat.columns)}
    shown = flat.copy()
    if chosen is not None:
        shown[export.CHOSEN_LABEL] = [chosen.get(label, "") for label in shown.index]

    def style(column: pd.Series) -> list[str]:
        winner = winners.get(column.name)
        return [BEST_STYLE if winner is not None and idx == winner else "" for idx in column.index]
    return shown.style.apply(style, axis=0).format(fmt.RATE_FORMAT, subset=list(flat.columns))


def _highlight_intervals(table: pd.DataFrame, chosen: dict[str, str] | None = None):
    """A Styler of the interval view with each column's best cell in bold."""
    shown = export.flat_columns(table)
    if chosen is not None:
        shown[export.CHOSEN_LABEL] = [chosen.get(label, "") for label in shown.index]
    return shown.style.map(lambda cell: BEST_STYLE if export.is_best_cell(cell) else "")


def _downloads(bench, frame: pd.DataFrame, chosen: dict[str, str] | None, setting: str) -> None:
    """The table as CSV (long, ASCII headers, rates as fractions), LaTeX (booktabs, the layout
    chosen beside the buttons) and Markdown."""
    layout_column, *buttons = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    url_state.control("export_latex_layout", options=list(export.LATEX_LAYOUTS))  # URL latex=
    layout = layout_column.radio(
        "LaTeX layout", list(export.LATEX_LAYOUTS), key="export_latex_layout", horizontal=True,
        format_func=export.LATEX_LAYOUTS.get,
        help="One block of rows per OOD set plus the average (5 columns), or the averages only: both fit a page.")
    stem = f"ood-lens_{bench.model}_{bench.id_dataset}" + ("_tuned" if chosen is not None else "")
    caption = f"OOD detection with {bench.model} on {bench.id_dataset}, {setting}."
    buttons[0].download_button(
        "CSV", export.to_csv(frame, chosen), f"{stem}.csv", "text/csv", key="export_csv",
        help="One row per method and OOD set (and the average); ASCII headers "
             f"{', '.join(export.CSV_COLUMNS)}; rates as fractions in [0, 1], as `ood_core.report --format csv`.")
    buttons[1].download_button("LaTeX", export.to_latex(frame, chosen, layout=layout or "blocks", caption=caption),
                               f"{stem}.tex", "text/x-tex", key="export_latex",
                               help="A booktabs table (`\\usepackage{booktabs}`) with a caption and label to edit.")
    buttons[2].download_button("Markdown", export.to_markdown(frame, chosen), f"{stem}.md", "text/markdown",
                               key="export_markdown")


def render() -> None:
    st.header("Compare methods")
    picked = resources.selected()
    if picked is None:
        return
    bench, oods, methods = picked
    if not methods:
        st.info("Choose one or more methods in the sidebar.")
        return
    mode, show_ci, ood_positive = _controls()
    protocol = resources.validation_protocol(bench) if mode == "tuned" else None
    if protocol is not None:
        problem = resources.validation_problem(bench)
        if problem is not None:
            st.warning(problem + "\n\nShowing the published defaults meanwhile.", icon="⚠️")
            protocol = None
    defaults, failed = _evaluate(bench, methods, oods)
    tuned: dict[str, Any] = {}
    if protocol is not None:
        tuned, failed_tuning = _tune(bench, list(defaults), protocol)
        failed.update({m: f"tuning failed: {why}" for m, why in failed_tuning.items()})
        results = {m: tuned[m].result for m in defaults if m in tuned}
    else:
        results = defaults
    for method, message in failed.items():
        st.warning(f"{method}: {message}")
    if not results:
        return

    titles = {m: resources.method_title(m) for m in results}
    frame = export.metrics_table(results, oods, ood_positive=ood_positive, titles=titles)
    chosen = ({export.row_label(m, r, titles): chosen_label(tuned[m]) for m, r in results.items()}
              if tuned else None)
    changed = {m: next(iter(t.choices.values())).changed for m, t in tuned.items()} if tuned else None
    summary = export.summary_lines(results, oods, titles=titles, ood_positive=ood_positive,
                                   defaults=defaults if tuned else None, changed=changed)
    st.markdown("  \n".join(summary))

    base_accuracy = next(iter(results.values())).base_id_accuracy
    fpr_note = ("FPR95 here is OOD-positive (OpenOOD / pytorch-ood)." if ood_positive
                else "FPR95 follows the papers (ID positive).")
    setting = "at each method's setting tuned on validation" if tuned else "at the published defaults"
    st.caption(f"{bench.model} on {bench.id_dataset}, {setting}: ID test accuracy {fmt.rate(base_accuracy)} "
               f"({fmt.count(len(bench.id_test), 'ID test image')}). Rates in %; best per column highlighted. "
               f"{fpr_note}")
    if show_ci:
        intervals = resources.bootstrap(bench, results, oods, mode=protocol if tuned else "defaults")
        table = export.interval_table(results, oods, intervals, titles=titles)
        st.dataframe(_highlight_intervals(table, chosen), key="metrics_table", width="stretch", on_select="ignore")
        st.caption(export.interval_legend(intervals) + " AUPR columns: switch the intervals off.")
    else:
        st.dataframe(_highlight_best(frame, export.flat_columns(frame), chosen), key="metrics_table",
                     width="stretch", on_select="ignore")
    if tuned:
        protocol_line = protocol.describe(bench.id_dataset)
        rows = ", ".join(f"{name} ({fmt.count(int(f.logits.shape[0]), 'row')})" for name, f in bench.val_ood.items()
                         if name in protocol.val_ood)
        id_rows = fmt.count(int(bench.id_val.logits.shape[0]), "row")
        st.caption(f"{protocol_line} Selection: {bench.id_dataset} val ({id_rows}), "
                   f"{rows}. The test figures are at the chosen setting; \"{export.CHOSEN_LABEL}\" lists what "
                   "tuning changed. The test-tuned oracle is on the Sweep page, labelled as such.")
    for method, result in results.items():
        if result.degenerate:
            st.caption(f"{export.DEGENERATE_MARK} {titles[method]}: degenerate setting, never marked best "
                       f"({'; '.join(result.degenerate)}).")
    with st.expander("What each method measures"):
        lines = []
        for method in results:
            try:
                title, text = resources.scorer_summary(bench, method)
            except Exception:  # noqa: BLE001 - a description is optional
                title, text = titles[method], ""
            lines.append(f"- **{title}** — {text or 'no description declared'}")
        st.markdown("\n".join(lines))

    _downloads(bench, frame, chosen, setting)

    st.subheader("ROC curves")
    url_state.control("roc_ood", options=list(oods))  # URL roc=
    ood_name = st.selectbox("OOD set", list(oods), key="roc_ood")
    curves = {titles[m]: metrics.roc_points(r.id_scores, r.ood_scores[ood_name]) for m, r in results.items()}
    st.plotly_chart(charts.roc_curves(curves, title=f"ROC: {bench.id_dataset} vs {ood_name}",
                                      styles={titles[m]: charts.method_style(m) for m in results}),
                    width="stretch", key="roc_chart")


if __name__ == "__main__":
    render()

"""Tune: one method in depth; its hyperparameter widgets re-score live from the cache."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import streamlit as st

from app import charts, fmt, resources, url_state, widgets
from ood_core import metrics, preview

REFERENCE = "energy"


def _on_method_change() -> None:
    url_state.clear_params()  # another method: its own params, ranges and defaults


def method_picker(default: str = "line") -> str:
    """The tuned method (shared by Tune, Neurons and Sweep; URL ``method=``)."""
    from ood_core.scorers import list_scorers

    names = [m for m in list_scorers() if not m.endswith("<name>")]
    url_state.control("method", options=names, default=default if default in names else names[0])
    return st.selectbox("Method", names, key="method", on_change=_on_method_change,
                        format_func=lambda m: f"{resources.method_title(m)} ({m})")


def _delta(change: float, colour: str, degenerate: bool) -> dict[str, str]:
    """st.metric's delta keywords for a change of a rate (fraction): ``"+1.2 pt"``; grey without
    an arrow when it rounds to zero or when the setting is degenerate (never shown as a win)."""
    flat = degenerate or fmt.points(change) in {fmt.points(0.0), fmt.NA}
    return {"delta": fmt.points(change), "delta_color": "off" if flat else colour,
            "delta_arrow": "off" if flat else "auto"}


@st.fragment
def live_panel(bench, method: str, oods: tuple[str, ...]) -> None:
    """Widgets and everything they drive (a fragment: a slider reruns only this).

    On a large benchmark on the CPU (``resources.preview_of``) a move first draws the figures of
    a fixed stratified subsample, labelled as a preview, then replaces them with the exact
    figures on every row once they are computed (off the script thread: a newer move stops this
    run at once). Elsewhere (a GPU, the demo, CIFAR) every move re-scores everything directly.
    """
    scorer = bench.scorer(method)
    declared = scorer.display_params()  # declared order for display: each switch before what it enables
    url_state.declare_params(declared)  # a value at its default stays out of the URL
    with st.container(border=True):
        values = widgets.param_widgets(declared, activations_sorted=bench.stats.get("val_activations_sorted"),
                                       columns=3)
    url_state.write()
    requests = [(method, values), (method, None)]
    if REFERENCE in _available(bench):
        requests.append((REFERENCE, None))
    previewed = resources.preview_of(bench, oods)
    if previewed is None:
        try:
            results = [resources.evaluate(bench, m, hp, oods) for m, hp in requests]
        except Exception as error:  # noqa: BLE001
            st.error(resources.friendly_error(error))
            return
        _figures(method, *results[:2], results[2] if len(results) > 2 else None)
        return
    subsample, preview_bench = previewed
    exact_text = preview.exact_label(bench, oods)
    panel = st.empty()  # the preview, then the exact figures in its place
    known = resources.finished_exact(bench, requests, oods)  # a move back to a computed value: no preview
    if known is None:
        text = preview.preview_label(subsample, oods)
        with panel.container():
            # the label first: at once it stops calling the previous move's figures (fading) exact
            label = st.empty()
            label.info(text, icon="⏳")
            try:
                shown = [resources.evaluate(preview_bench, m, hp, oods) for m, hp in requests]
            except Exception as error:  # noqa: BLE001
                label.error(resources.friendly_error(error))
                return
            _figures(method, *shown[:2], shown[2] if len(shown) > 2 else None, key_suffix="_preview")
        try:  # each wait redraws the label: where a newer move stops this run
            known = resources.exact_results(
                bench, requests, oods, on_wait=lambda s: label.info(f"{text} (computing: {s:.0f} s)", icon="⏳"))
        except Exception as error:  # noqa: BLE001 - the preview stays, said to be one
            label.error(f"{text.removesuffix('; exact figures follow')}. The exact figures failed: "
                        f"{resources.friendly_error(error)}")
            return
    with panel.container():
        head = st.empty()  # drawn with the exact metrics: never "Exact" over the preview's
        _figures(method, *known[:2], known[2] if len(known) > 2 else None,
                 with_metrics=lambda: head.success(exact_text, icon="✅"))


def _figures(method: str, result, default, reference, key_suffix: str = "",
             with_metrics: Callable[[], None] | None = None) -> None:
    """The metrics row, the per-set table and the charts of ``result`` (deltas from ``default``,
    this method at its defaults, and from ``reference``, Energy at its defaults, or None);
    ``with_metrics()`` runs right after the metrics row (the label saying what they are)."""
    average, base = result.average, default.average
    if result.degenerate:  # named beside the metrics, never shown as a win
        st.warning(f"Degenerate setting: {'; '.join(result.degenerate)}. These figures cannot be compared "
                   "with other settings or methods.", icon="⚠️")
    # values fmt.rate, deltas fmt.points alone ("+1.2 pt"): a column is ~130 px wide on a 1024 px
    # screen and Streamlit cuts a longer delta off, so what a delta is measured from is said in
    # the help and in the caption under the row (which wraps)
    ref_title, degenerate = resources.method_title(REFERENCE), bool(result.degenerate)
    cols = st.columns(4)
    cols[0].metric("FPR95 (avg, ↓)", fmt.rate(average.fpr95),
                   **_delta(average.fpr95 - base.fpr95, "inverse", degenerate),
                   help="FPR at 95 % TPR, averaged over the OOD sets; the change is from this method's defaults.")
    cols[1].metric("AUROC (avg, ↑)", fmt.rate(average.auroc),
                   **_delta(average.auroc - base.auroc, "normal", degenerate),
                   help="AUROC averaged over the OOD sets; the change is from this method's defaults.")
    cols[2].metric("ID accuracy", fmt.rate(result.id_accuracy),
                   **_delta(result.id_accuracy - result.base_id_accuracy, "normal", degenerate),
                   help="Test accuracy of the modified head; the change is from the unmodified model's "
                        f"{fmt.rate(result.base_id_accuracy)}.")
    compared = [f"FPR95 and AUROC from {resources.method_title(method)}'s defaults",
                f"ID accuracy from the unmodified model ({fmt.rate(result.base_id_accuracy)})"]
    if reference is not None:
        cols[3].metric(f"FPR95 − {ref_title}", fmt.points(average.fpr95 - reference.average.fpr95),
                       help=f"This setting's average FPR95 minus {ref_title}'s at its defaults "
                            f"({fmt.rate(reference.average.fpr95)}).")
        compared.append(f"{ref_title} at its defaults: FPR95 {fmt.rate(reference.average.fpr95)}")
    st.caption("Changes: " + "; ".join(compared) + ".")
    if with_metrics is not None:
        with_metrics()
    rate_columns = {"FPR95 (%)": "fpr95", "AUROC (%)": "auroc"}
    rows = {name: {**{column: 100 * getattr(m, field) for column, field in rate_columns.items()},
                   "Δ FPR95 vs defaults (pt)": 100 * (m.fpr95 - default.metrics[name].fpr95),
                   **({f"Δ FPR95 vs {ref_title} (pt)": 100 * (m.fpr95 - reference.metrics[name].fpr95)}
                      if reference is not None else {})}
            for name, m in result.metrics.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    # one decimal everywhere: rates in %, differences in signed points (no "-0.0")
    styled = table.style.format(fmt.RATE_FORMAT, subset=list(rate_columns)).format(
        lambda pt: fmt.points(pt / 100).removesuffix(" pt"), subset=[c for c in table.columns if c not in rate_columns])
    # a preview and the exact figures are drawn in one run: their keyed elements need their own keys
    st.dataframe(styled, key="tune_table" + key_suffix, width="stretch")
    threshold = next(iter(result.metrics.values())).threshold  # the 95 %-TPR threshold on ID test scores
    # ~200 points per curve draw the same line and keep the browser's re-render short on a slider move
    curves = {name: metrics.roc_points(result.id_scores, scores, max_points=200)
              for name, scores in result.ood_scores.items()}
    # one figure (histograms | ROC, one legend): Streamlit remounts a chart whose data change, so
    # one mount per move instead of two
    figure = charts.scores_and_roc(result.id_scores, result.ood_scores, curves, threshold=threshold,
                                   title=f"{resources.method_title(method)}: score histograms and ROC (ID positive)")
    st.plotly_chart(charts.Prebuilt(figure), width="stretch", key="tune_charts" + key_suffix)


@st.cache_data(max_entries=16, show_spinner=False)
def _available_cached(fingerprint: str, _bench) -> list[str]:
    from ood_core.benchmark import available_methods

    return available_methods(_bench)


def _available(bench) -> list[str]:
    return _available_cached(bench.fingerprint + bench.model, _bench=bench)


def picked_method():
    """(benchmark, OOD sets, method, fitted scorer) for the sidebar selection and the method
    picker, or None after showing why (no cache yet, or the method cannot be fitted)."""
    selected = resources.selected()
    if selected is None:
        return None
    bench, oods, _ = selected
    method = method_picker()
    try:
        return bench, oods, method, bench.scorer(method)
    except Exception as error:  # noqa: BLE001
        st.error(resources.friendly_error(error))
        return None


def render() -> None:
    st.header("Tune a method")
    picked = picked_method()
    if picked is None:
        return
    bench, oods, method, scorer = picked
    if scorer.paper:
        st.caption(scorer.paper)
    live_panel(bench, method, oods)


if __name__ == "__main__":
    render()

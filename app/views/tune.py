"""Tune: one method in depth; its hyperparameter widgets re-score live from the cache."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, resources, url_state, widgets
from ood_core import metrics

REFERENCE = "energy"


def _on_method_change() -> None:
    url_state.clear_params()  # another method: its own params, ranges and defaults


def method_picker(default: str = "line") -> str:
    """The tuned method (shared by Tune, Neurons and Sweep; URL ``method=``)."""
    from ood_core.scorers import list_scorers

    names = [m for m in list_scorers() if not m.endswith("<name>")]
    if st.session_state.get("method") not in names:
        st.session_state["method"] = default if default in names else names[0]
    return st.selectbox("Method", names, key="method", on_change=_on_method_change,
                        format_func=lambda m: f"{resources.method_title(m)} ({m})")


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


@st.fragment
def live_panel(bench, method: str, oods: tuple[str, ...]) -> None:
    """Widgets and everything they drive (a fragment: a slider reruns only this)."""
    scorer = bench.scorer(method)
    declared = scorer.declared_params()
    with st.container(border=True):
        values = widgets.param_widgets(declared, activations_sorted=bench.stats.get("val_activations_sorted"),
                                       columns=3)
    url_state.write()
    try:
        result = resources.evaluate(bench, method, values, oods)
        default = resources.evaluate(bench, method, None, oods)
        reference = resources.evaluate(bench, REFERENCE, None, oods) if REFERENCE in _available(bench) else None
    except Exception as error:  # noqa: BLE001
        st.error(resources.friendly_error(error))
        return
    average, base = result.average, default.average
    if result.degenerate:  # named beside the metrics, never shown as a win
        st.warning(f"Degenerate setting: {'; '.join(result.degenerate)}. These figures cannot be compared "
                   "with other settings or methods.", icon="⚠️")
    delta_colour = "off" if result.degenerate else "inverse"
    cols = st.columns(4)
    cols[0].metric("FPR95 (avg, ↓)", _pct(average.fpr95), f"{100 * (average.fpr95 - base.fpr95):+.2f} pt vs defaults",
                   delta_color=delta_colour)
    cols[1].metric("AUROC (avg, ↑)", _pct(average.auroc), f"{100 * (average.auroc - base.auroc):+.2f} pt vs defaults",
                   delta_color="off" if result.degenerate else "normal")
    cols[2].metric("ID accuracy of the head", _pct(result.id_accuracy),
                   f"{100 * (result.id_accuracy - result.base_id_accuracy):+.2f} pt vs the unmodified model")
    if reference is not None:
        cols[3].metric(f"Δ FPR95 vs {resources.method_title(REFERENCE)}",
                       f"{100 * (average.fpr95 - reference.average.fpr95):+.2f} pt",
                       f"{resources.method_title(REFERENCE)}: {_pct(reference.average.fpr95)}", delta_color="off",
                       delta_arrow="off")
    rows = {name: {"FPR95": 100 * m.fpr95, "AUROC": 100 * m.auroc,
                   "Δ FPR95 vs defaults": 100 * (m.fpr95 - default.metrics[name].fpr95),
                   **({f"Δ FPR95 vs {resources.method_title(REFERENCE)}": 100 * (m.fpr95 - reference.metrics[name].fpr95)}
                      if reference is not None else {})}
            for name, m in result.metrics.items()}
    st.dataframe(pd.DataFrame.from_dict(rows, orient="index").round(2), key="tune_table", width="stretch")
    threshold = next(iter(result.metrics.values())).threshold  # the 95 %-TPR threshold on ID test scores
    left, right = st.columns(2)
    left.plotly_chart(charts.score_histograms(result.id_scores, result.ood_scores, threshold=threshold,
                                              title=f"{resources.method_title(method)} scores"),
                      width="stretch", key="tune_histogram")
    # ~200 points per curve draw the same line and keep the browser's re-render short on a slider move
    curves = {name: metrics.roc_points(result.id_scores, scores, max_points=200)
              for name, scores in result.ood_scores.items()}
    right.plotly_chart(charts.roc_curves(curves), width="stretch", key="tune_roc")


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

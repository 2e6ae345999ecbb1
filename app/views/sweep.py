"""Sweep: a grid over one or two hyperparameters, chosen on validation, oracle labelled."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, fmt, resources, url_state
from app.views.tune import picked_method
from ood_core.sweep import grid_values, run_sweep


def render() -> None:
    st.header("Sweep hyperparameters")
    picked = picked_method()
    if picked is None:
        return
    bench, oods, method, scorer = picked
    params = {p.name: p for p in scorer.display_params()}  # the Tune page's order
    if not params:
        st.info(f"{method} has no hyperparameters to sweep.")
        return
    if len(oods) < 2:
        st.warning("A sweep holds one OOD set out for validation: choose at least two OOD sets in the sidebar.")
        return
    cols = st.columns(4)
    names = list(params)
    # each control's value settled first: the address's (s.x=, s.y=, s.n=, s.val=, s.by=), else the session's
    url_state.control("sweep_axis1", options=names)
    first = cols[0].selectbox("Axis 1", names, key="sweep_axis1")
    seconds = ["(none)", *[n for n in names if n != first]]
    url_state.control("sweep_axis2", options=seconds)
    second = cols[1].selectbox("Axis 2", seconds, key="sweep_axis2")
    url_state.control("sweep_points")
    url_state.control("sweep_val_ood", options=list(oods), default=oods[-1])
    url_state.control("sweep_objective")
    count = cols[2].slider("Points per axis", key="sweep_points", **url_state.slider_bounds("sweep_points"))
    val_ood = cols[3].selectbox("Validation OOD set (held out from testing)", list(oods), key="sweep_val_ood")
    objective = st.radio("Select by", ["fpr95", "auroc"], key="sweep_objective", horizontal=True,
                         format_func=lambda o: "lowest FPR95" if o == "fpr95" else "highest AUROC")
    axes = {first: grid_values(params[first], count)}
    if second != "(none)":
        axes[second] = grid_values(params[second], count)
    test_oods = [o for o in oods if o != val_ood]
    st.caption(f"Validation: {bench.id_dataset} val vs {val_ood}. Test: {bench.id_dataset} test vs "
               f"{', '.join(test_oods)}. Other hyperparameters at their defaults.")
    key = (bench.fingerprint, method, tuple((n, tuple(v)) for n, v in axes.items()), val_ood, objective)
    stored = st.session_state.get("sweep_result")
    # a shared link with s.run=on shows the same chart and table: the sweep runs again on load
    from_link = url_state.requested("sweep_ran") and (stored is None or stored[0] != key)
    if st.button("Run sweep", key="sweep_run", type="primary") or from_link:
        bar = st.progress(0.0, text="Sweeping…")
        try:
            result = run_sweep(bench, method, axes, val_ood=bench.ood[val_ood], val_ood_name=val_ood,
                               test_oods=test_oods, objective=objective,
                               on_progress=lambda text, done, total: bar.progress(done / total, text=text))
        except Exception as error:  # noqa: BLE001
            bar.empty()
            st.error(resources.friendly_error(error))
            return
        bar.empty()
        st.session_state["sweep_result"] = (key, result)
    stored = st.session_state.get("sweep_result")
    st.session_state["sweep_ran"] = stored is not None and stored[0] == key  # URL s.run=on
    if stored is None or stored[0] != key:
        st.info("Set the grid and press **Run sweep**.")
        return
    result = stored[1]
    # the figure the sweep selects by comes first, so it is what "Show" starts on
    shown = [f"val_{objective}", *(f for f in charts.SWEEP_FIGURES if f != f"val_{objective}")]
    url_state.control("sweep_figure", options=shown)  # URL s.show=
    figure = st.radio("Show", shown, key="sweep_figure", horizontal=True, format_func=charts.SWEEP_FIGURES.get)
    st.plotly_chart(charts.sweep_figure(100 * result.grid(figure), result.axes, best=result.best_index,
                                        oracle=result.oracle_index,
                                        title=f"{resources.method_title(method)}: {charts.SWEEP_FIGURES[figure]}",
                                        value_title=f"{charts.SWEEP_FIGURES[figure]} (%)",
                                        degenerate=result.degenerate),
                    width="stretch", key="sweep_chart")
    rows = {"best on validation": result.best, "oracle (test-tuned, optimistic)": result.oracle}
    table = pd.DataFrame.from_dict({label: _point_row(point) for label, point in rows.items()}, orient="index")
    st.dataframe(_styled(table), key="sweep_table", width="stretch")
    st.caption("Report the validation-selected point; the oracle point was tuned on the test sets. "
               "Degenerate points (collapsed or tied scores, a head at chance) are never selected.")
    if result.degenerate.any():
        st.warning(f"{int(result.degenerate.sum())} of {result.degenerate.size} grid points are degenerate and "
                   "were not considered; they are marked in the chart and the table below.", icon="⚠️")
    with st.expander("Every grid point (ID accuracy of the head included)", expanded=bool(result.degenerate.any())):
        everything = pd.DataFrame([_point_row(point) for point in result.points])
        st.dataframe(_styled(everything), key="sweep_grid", width="stretch", hide_index=True)


RATE_COLUMNS = ("val FPR95", "val AUROC", "test FPR95", "test AUROC", "ID accuracy (test)")


def _point_row(point) -> dict:
    """One grid point as a table row: its hyperparameters, figures in %, head accuracy, degeneracy."""
    return {**{name: value if isinstance(value, float) else str(value) for name, value in point.params.items()},
            **dict(zip(RATE_COLUMNS, (100 * point.val_fpr95, 100 * point.val_auroc, 100 * point.test_fpr95,
                                      100 * point.test_auroc, 100 * point.test_id_accuracy))),
            "degenerate": "; ".join(point.val_degenerate + point.test_degenerate) or "no"}


def _styled(table: pd.DataFrame):
    """The rates with one decimal, like every other rate of the app; a setting as written (0.01, 10)."""
    settings = [c for c in table.columns if c not in RATE_COLUMNS and table[c].dtype.kind == "f"]
    return table.style.format(fmt.RATE_FORMAT, subset=[c for c in RATE_COLUMNS if c in table.columns]).format(
        "{:g}", subset=settings)


if __name__ == "__main__":
    render()

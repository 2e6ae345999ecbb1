"""Neurons: LINe's class-wise important neurons (its Table 8 overlap), masks, DICE / OPNP views."""
from __future__ import annotations

import streamlit as st

from app import charts, fmt, resources, url_state
from ood_core import neurons


@st.fragment
def overlap_panel(bench) -> None:
    contribution = bench.stats["class_contribution"]  # (K, D), C[c] = W[c] ⊙ μ_c
    k, d = contribution.shape
    for key in ("neurons_top", "neurons_over", "neurons_denominator"):  # URL n.top=, n.over=, n.share=
        url_state.control(key)
    cols = st.columns(3)
    top = cols[0].slider("x: top-x % neurons per class", key="neurons_top", **url_state.slider_bounds("neurons_top"))
    over = cols[1].slider("o: important for more than o % of classes", key="neurons_over",
                          **url_state.slider_bounds("neurons_over"))
    denominator = cols[2].radio("share of", ["D", "important"], key="neurons_denominator", horizontal=True,
                                format_func=lambda v: "all D neurons" if v == "D" else "neurons important to ≥1 class")
    url_state.write()  # a fragment: its sliders update the address too
    share = neurons.neuron_overlap(contribution, top, over, denominator)
    st.metric("Overlap (LINe Table 8)", fmt.rate(share))
    st.caption(f"{k} classes × {d} neurons; each class keeps its top {top:g} % "
               f"({fmt.count(max(1, int(round(d * top / 100))), 'neuron')}).")
    left, right = st.columns(2)
    left.plotly_chart(charts.distribution({"n_j / K": neurons.overlap_histogram(contribution, top)},
                                          title="Share of classes for which each neuron is important",
                                          x_title="n_j / K", y_title="neurons", bins=min(k + 1, 50),
                                          value_range=(0.0, 1.0)),
                      width="stretch", key="neurons_overlap_hist")
    matrix = neurons.class_overlap_matrix(contribution, top)
    names = list(bench.class_names)
    right.plotly_chart(charts.heatmap(matrix.cpu().numpy(), x=names, y=names, colorscale="Blues",
                                      title="Jaccard overlap of classes' important sets", x_title="class",
                                      y_title="class", colour_title="Jaccard", zmin=0.0, zmax=1.0),
                       width="stretch", key="neurons_class_overlap")


@st.fragment
def masks_panel(bench) -> None:
    contribution = bench.stats["class_contribution"].float().cpu()
    order = contribution.abs().mean(0).argsort(descending=True)  # display order only
    names = list(bench.class_names)
    st.plotly_chart(charts.heatmap(contribution[:, order].numpy(), x=[str(int(j)) for j in order], y=names,
                                   colorscale="RdBu", zmid=0.0, title="Class × neuron contribution C = W ⊙ μ_c",
                                   x_title="neuron (sorted by mean |C|)", y_title="class", colour_title="C"),
                    width="stretch", key="neurons_contribution")
    try:
        line = bench.scorer("line")
    except Exception as error:  # noqa: BLE001
        st.info(f"LINe masks unavailable: {resources.friendly_error(error)}")
        return
    url_state.control("neurons_p_a", default=float(line.defaults().get("p_a", 90.0)))  # URL n.p_a=
    p_a = st.slider("p_a (neurons dropped per class, %)", key="neurons_p_a", **url_state.slider_bounds("neurons_p_a"))
    url_state.write()  # a fragment: its slider updates the address too
    mask = line.activation_mask(p_a).float().cpu()
    st.plotly_chart(charts.binary_mask(mask[:, order].numpy(), x=[str(int(j)) for j in order], y=names,
                                       title=f"LINe activation masks m_c at p_a = {p_a:g} %",
                                       x_title="neuron (sorted by mean |C|)", y_title="class"),
                    width="stretch", key="neurons_mask")


def render() -> None:
    st.header("Neurons")
    bench = resources.selected_benchmark()
    if bench is None:
        return
    if "class_contribution" not in bench.stats:
        st.error("This cache has no class contributions (training statistics missing).")
        return
    overlap_panel(bench)
    masks_panel(bench)
    st.subheader("DICE contributions and OPNP sensitivities")
    values = {}
    try:
        bench.scorer("dice")  # shown only where DICE fits on this cache
        values["DICE contribution m̄ ⊙ W"] = (bench.stats["feature_mean"].float()[None, :]
                                             * bench.head_weight.float()).reshape(-1)
    except Exception:  # noqa: BLE001
        pass
    left, right = st.columns(2)
    if values:
        left.plotly_chart(charts.distribution(values, title="DICE contributions (K·D)", x_title="m̄_j · W_kj",
                                              y_title="weights", log_y=True),
                          width="stretch", key="neurons_dice")
    if "opnp_weight_sensitivity" in bench.stats:
        right.plotly_chart(charts.distribution({"weights S[k, j]": bench.stats["opnp_weight_sensitivity"],
                                                "neurons s_j": bench.stats["opnp_neuron_sensitivity"]},
                                               title="OPNP sensitivities", x_title="sensitivity",
                                               y_title="count", log_y=True),
                           width="stretch", key="neurons_opnp")


if __name__ == "__main__":
    render()

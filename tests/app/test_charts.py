"""app.charts: method styles, server-side binning, readable layouts; and the charts as the
pages draw them (AppTest on the demo cache).

The pure tests run in milliseconds; the AppTest ones share the session's demo cache
(``tests/conftest.py``, built once per pytest process).
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import plotly.io
import plotly.tools
import pytest
import torch

from app import charts
from ood_core import metrics
from ood_core.scorers import list_scorers


def validated(fig: charts.Figure) -> dict:
    """``fig`` as plotly validates it (what ``st.plotly_chart`` does with a dict): a wrong
    property name or value raises here. Validation must not change it either (``Prebuilt`` sends
    the dict unvalidated): no magic underscore names, nothing plotly would rewrite."""
    checked = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
    plain = json.loads(charts.figure_json(fig))
    assert _drop_arrays(json.loads(plotly.io.to_json(checked, validate=False))) == _drop_arrays(plain)
    return checked


def _drop_arrays(value):
    """``value`` with its number arrays (typed arrays once validated, lists when not) replaced by
    a marker, without the empty template, colour scales by name (validation expands them):
    what remains must match key for key."""
    if isinstance(value, dict):
        if "bdata" in value or "dtype" in value:
            return "array"
        return {k: _drop_arrays(v) if k != "colorscale" else "scale" for k, v in value.items() if k != "template"}
    if isinstance(value, list):
        items = [_drop_arrays(v) for v in value]
        return "array" if items and all(isinstance(v, (int, float)) or v == "array" for v in items) else items
    return value


def legend_outside(layout: dict) -> bool:
    """The legend sits right of the plot area (x ≥ 1, anchored on its left): it cannot cover an
    axis, an axis title or the data."""
    legend = layout.get("legend", {})
    return legend.get("x", 0) >= 1 and legend.get("xanchor") == "left"


def axis_title(layout: dict, axis: str) -> str:
    return layout.get(axis, {}).get("title", {}).get("text", "")


# ------------------------------------------------------------------------------- styles
def test_every_registered_method_has_its_own_style():
    methods = list_scorers()
    assert len(methods) >= 26
    styles = {m: charts.method_style(m) for m in methods}
    pairs = [(s.colour, s.dash) for s in styles.values()]
    assert len(set(pairs)) == len(pairs), "two methods share colour and dash"
    for a, b in itertools.combinations(methods, 2):
        assert styles[a] != styles[b], (a, b)
    # the pairs the issue found sharing a colour with the 10-colour palette
    for a, b in [("msp", "nap"), ("line", "nap-d")]:
        assert (styles[a].colour, styles[a].dash) != (styles[b].colour, styles[b].dash)
    # a style is fixed by the method, not by which methods a chart shows
    assert charts.method_style("line") == styles["line"] == charts.style_at(methods.index("line"))
    # methods drawn with the same dash never share a colour
    for dash in {s.dash for s in styles.values()}:
        colours = [s.colour for s in styles.values() if s.dash == dash]
        assert len(set(colours)) == len(colours)
    assert charts.method_style("not-registered") == charts.method_style("not-registered")


def test_roc_curves_take_each_methods_style():
    fpr, tpr = metrics.roc_points(torch.randn(2000), torch.randn(2000) - 1)
    titles = {"msp": "MSP", "nap": "NAP", "line": "LINe", "nap-d": "NAP-D"}
    fig = charts.roc_curves({t: (fpr, tpr) for t in titles.values()},
                            styles={t: charts.method_style(m) for m, t in titles.items()})
    validated(fig)
    lines = {trace["name"]: trace["line"] for trace in fig["data"]}
    for method, title in titles.items():
        style = charts.method_style(method)
        assert (lines[title]["color"], lines[title]["dash"]) == (style.colour, style.dash)
    assert len({(l["color"], l["dash"]) for l in lines.values()}) == 4
    assert len(fig["data"]) == 4 and all(len(t["x"]) <= 1000 for t in fig["data"])
    assert legend_outside(fig["layout"]) and len(fig["layout"]["shapes"]) == 2  # chance diagonal, 95 % TPR


# ------------------------------------------------------------------------------ binning
def test_bin_series_counts_every_value_and_overflow_lands_in_the_end_bins():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 1000).astype(np.float32)
    b = np.concatenate([rng.normal(1, 1, 500), [-1e6, -5e5, 1e6], [np.nan, np.inf]]).astype(np.float32)
    binned = charts.bin_series({"a": a, "b": b}, bins=40)
    assert binned.edges.shape == (41,) and np.all(np.diff(binned.edges) > 0) and not binned.log
    assert binned.counts["a"].sum() == 1000 and binned.counts["b"].sum() == 503  # every finite value
    assert binned.dropped == {"a": 0, "b": 2}
    assert binned.below["b"] >= 2 and binned.above["b"] >= 1
    # the same values on bins widened to hold everything: the outliers sit in the end bins now
    inside = np.histogram(np.clip(b[np.isfinite(b)], binned.edges[0], binned.edges[-1]), binned.edges)[0]
    np.testing.assert_array_equal(binned.counts["b"], inside)
    in_range = b[np.isfinite(b) & (b >= binned.edges[0]) & (b <= binned.edges[-1])]
    plain = np.histogram(in_range, binned.edges)[0]
    assert binned.counts["b"][0] == plain[0] + binned.below["b"]
    assert binned.counts["b"][-1] == plain[-1] + binned.above["b"]
    np.testing.assert_array_equal(binned.counts["b"][1:-1], plain[1:-1])
    # the range is robust: three wild values do not stretch it
    assert binned.edges[0] > -10 and binned.edges[-1] < 10
    assert binned.beyond == sum(binned.below.values()) + sum(binned.above.values())
    assert f"{binned.beyond:,} values beyond the range counted in the end bins" in binned.note()
    assert "2 non-finite values left out" in binned.note()


def test_bin_series_keeps_a_long_tailed_id_set_spread_over_many_bins():
    """ASH-S on the demo: ID scores from ~600 to ~500,000 (median ~12,000), OOD sets alike; the
    old min–max linear bins put most of the ID mass into the first bar or two."""
    rng = np.random.default_rng(1)
    id_scores = np.exp(rng.normal(np.log(12_000), 1.4, 800))
    oods = {f"ood{i}": np.exp(rng.normal(np.log(20_000), 1.5, 1000)) for i in range(4)}
    oods["noise"] = np.exp(rng.normal(np.log(150), 1.0, 1000))
    binned = charts.bin_series({"ID": id_scores, **oods}, bins=60)
    share = binned.counts["ID"] / binned.counts["ID"].sum()
    assert binned.log
    assert share.max() < 0.15, share.max()
    assert np.count_nonzero(share >= 0.01) >= 15  # the ID mass spans many bins
    old = np.histogram(id_scores, np.linspace(min(id_scores.min(), *(o.min() for o in oods.values())),
                                              max(id_scores.max(), *(o.max() for o in oods.values())), 61))[0]
    assert old.max() / old.sum() > 0.5  # what the test guards against: one bar


def test_bin_series_edge_cases():
    constant = charts.bin_series({"c": np.full(10, 3.0)}, bins=5)
    assert constant.counts["c"].sum() == 10 and constant.edges[0] < 3.0 < constant.edges[-1]
    empty = charts.bin_series({"e": np.array([], np.float32), "x": np.arange(5.0)}, bins=4)
    assert empty.counts["e"].sum() == 0 and empty.counts["x"].sum() == 5
    fixed = charts.bin_series({"share": np.array([0.0, 0.1, 1.0])}, bins=11, value_range=(0.0, 1.0))
    assert fixed.edges[0] == 0.0 and fixed.edges[-1] == 1.0 and fixed.beyond == 0
    negative = charts.bin_series({"n": -np.exp(np.linspace(0, 10, 100))}, bins=10)
    assert not negative.log  # geometric bins only for positive ranges


# ------------------------------------------------------------------------------ figures
def test_score_histograms_are_step_lines_with_the_threshold_and_marker_in_the_legend():
    rng = np.random.default_rng(0)
    id_scores = torch.from_numpy(rng.normal(3, 1, 800).astype(np.float32))
    oods = {f"set{i}": rng.normal(0, 1, 1000).astype(np.float32) for i in range(5)}
    oods["set0"][:3] = 1e4  # three far values: counted in the last bin, and said so
    fig = charts.score_histograms(id_scores, oods, threshold=1.5, marker=1.52, title="scores", bins=60)
    validated(fig)
    data, layout = fig["data"], fig["layout"]
    lines = data[:6]
    assert [t["type"] for t in lines] == ["scatter"] * 6 and all(t["line"]["shape"] == "hv" for t in lines)
    assert all("opacity" not in t for t in data) and not any(t.get("type") == "bar" for t in data)
    assert all(len(t["x"]) <= 63 for t in lines)  # a few points per series: cheap to send and draw
    assert lines[0]["fill"] == "tozeroy" and all("fill" not in t for t in lines[1:])
    np.testing.assert_array_equal(lines[0]["x"], lines[3]["x"])  # shared edges
    for trace in lines:  # shares of each set sum to 100 %
        assert abs(float(np.sum(trace["y"][1:-2])) - 100.0) < 1e-3
    assert len({(t["line"]["color"], t["line"].get("dash", "solid")) for t in lines}) == 6
    # threshold and marker 0.02 apart: legend entries, no text labels on the plot to collide
    names = [t["name"] for t in data[6:]]
    assert names[0].startswith("95 %-TPR threshold") and names[1].startswith("this image")
    # listed first in the legend (a narrow chart's legend scrolls): the image, then the threshold
    assert data[7]["legendrank"] < data[6]["legendrank"] < min(t.get("legendrank", 1000) for t in lines)
    assert not layout.get("annotations") and not layout.get("shapes")
    assert "3 values beyond the range counted in the end bins" in layout["title"]["subtitle"]["text"]
    assert legend_outside(layout) and axis_title(layout, "xaxis") and axis_title(layout, "yaxis")
    assert layout["xaxis"]["title"]["standoff"] > 0 and layout["xaxis"]["automargin"]
    # the OOD sets keep the colours the ROC of the same page gives them
    roc = charts.roc_curves({name: (np.array([0.0, 1.0]), np.array([0.0, 1.0])) for name in oods})
    assert [t["line"]["color"] for t in roc["data"]] == [t["line"]["color"] for t in lines[1:]]


def test_tune_figure_draws_histograms_and_roc_with_one_legend_entry_per_set():
    rng = np.random.default_rng(0)
    id_scores = torch.from_numpy(rng.normal(3, 1, 800).astype(np.float32))
    oods = {f"set{i}": torch.from_numpy(rng.normal(0, 1, 1000).astype(np.float32)) for i in range(5)}
    curves = {n: metrics.roc_points(id_scores, s, max_points=200) for n, s in oods.items()}
    fig = charts.scores_and_roc(id_scores, oods, curves, threshold=1.5, title="LINe")
    validated(fig)
    data, layout = fig["data"], fig["layout"]
    histogram = [t for t in data if t.get("xaxis", "x") == "x"]
    roc = [t for t in data if t.get("xaxis") == "x2"]
    assert len(histogram) == 7 and len(roc) == 5  # ID + 5 sets + threshold | 5 curves
    for name in oods:  # one colour per set in both panels, one legend entry for both lines
        (h,), (r,) = [t for t in histogram if t["name"] == name], [t for t in roc if t["name"] == name]
        assert h["line"]["color"] == r["line"]["color"] and h["legendgroup"] == r["legendgroup"] == name
        assert h.get("showlegend", True) and r["showlegend"] is False
    assert layout["xaxis"]["domain"][1] < layout["xaxis2"]["domain"][0]  # side by side, no overlap
    for axis in ("xaxis", "yaxis", "xaxis2", "yaxis2"):
        assert axis_title(layout, axis), axis
    assert legend_outside(layout) and all(s["yref"] == "y2" for s in layout["shapes"])


def test_long_tailed_scores_get_a_log_axis_and_lines_in_data_coordinates():
    rng = np.random.default_rng(2)
    fig = charts.score_histograms(np.exp(rng.normal(9, 1.4, 800)), {"a": np.exp(rng.normal(10, 1.5, 1000))},
                                  threshold=2000.0)
    validated(fig)
    layout = fig["layout"]
    assert layout["xaxis"]["type"] == "log" and "log scale" in axis_title(layout, "xaxis")
    assert fig["data"][-1]["x"] == [2000.0, 2000.0]  # a trace: data units on a log axis too


def test_every_axis_and_colour_bar_is_titled_and_legends_sit_outside():
    z = np.random.default_rng(0).normal(size=(3, 4))
    heat = charts.heatmap(z, x=range(4), y=["a", "b", "c"], title="t", x_title="neuron", y_title="class",
                          colour_title="C")
    mask = charts.binary_mask(z > 0, x=range(4), y=["a", "b", "c"], title="m", x_title="neuron")
    one = charts.sweep_figure(np.array([10.0, 20.0, 30.0]), [("delta", [0.5, 1.0, 2.0])], best=(1,), oracle=(0,),
                              title="LINe: validation AUROC", value_title="validation AUROC (%)",
                              degenerate=np.array([True, False, False]))
    two = charts.sweep_figure(np.arange(6.0).reshape(2, 3), [("p_a", [10.0, 90.0]), ("delta", [0.5, 1.0, 2.0])],
                              best=(0, 1), oracle=(1, 2), title="LINe", value_title="test FPR95 (%)")
    dist = charts.distribution({"weights": np.abs(np.random.default_rng(1).normal(0.05, 0.03, 2560)),
                                "neurons": np.random.default_rng(2).normal(0.046, 0.005, 256)},
                               title="OPNP sensitivities", x_title="sensitivity", y_title="count", log_y=True)
    single = charts.distribution({"n_j / K": np.random.default_rng(3).integers(0, 11, 256) / 10},
                                 x_title="n_j / K", y_title="neurons", bins=11, value_range=(0.0, 1.0))
    bar = charts.bars([0.1, 0.3], labels=[7, 9], title="b", x_title="neuron", y_title="contribution")
    for fig in (heat, mask, one, two, dist, single, bar):
        validated(fig)
        layout = fig["layout"]
        assert axis_title(layout, "xaxis") and axis_title(layout, "yaxis"), layout["title"]
        assert legend_outside(layout)
        for trace in fig["data"]:
            if trace["type"] == "heatmap":
                assert trace["colorbar"]["title"]["text"]
    assert axis_title(heat["layout"], "yaxis") == "class" and axis_title(mask["layout"], "yaxis") == "class"
    colorbar = mask["data"][0]["colorbar"]
    assert colorbar["ticktext"] == ["dropped", "kept"] and mask["data"][0]["zmin"] == 0 and mask["data"][0]["zmax"] == 1
    # "kept" is the colour of 1 (a kept neuron), "dropped" the colour of 0
    scale = mask["data"][0]["colorscale"]
    assert scale[-1][1] != scale[0][1] and colorbar["tickvals"] == [0.25, 0.75]
    assert axis_title(one["layout"], "yaxis") == "validation AUROC (%)"
    assert two["data"][0]["colorbar"]["title"]["text"] == "test FPR95 (%)"
    assert [t["name"] for t in one["data"][1:]] == ["degenerate (not selectable)", "best on validation",
                                                    "oracle (test-tuned)"]
    # the OPNP log count axis: one labelled tick per decade, powers of ten (no overprinted labels)
    yaxis = dist["layout"]["yaxis"]
    assert yaxis["type"] == "log" and yaxis["dtick"] == 1 and yaxis["exponentformat"] == "power"
    assert all(np.all(np.isnan(t["y"]) | (t["y"] > 0)) for t in dist["data"])  # empty bins are gaps, not 0
    assert single["data"][0]["type"] == "bar" and single["data"][0]["y"].sum() == 256


def test_the_tune_pages_charts_stay_small_at_cifar_scale():
    """9,000 ID test and 20,000 OOD scores (CIFAR-10 scale): both charts of a slider move are a
    few kB of JSON, whatever the row counts (what the browser parses and draws on each move)."""
    gen = torch.Generator().manual_seed(0)
    id_scores = torch.randn(9000, generator=gen) + 2
    oods = {name: torch.randn(n, generator=gen) for name, n in
            [("isun", 8925), ("dtd10", 1200), ("mnist", 10000)]}
    curves = {n: metrics.roc_points(id_scores, s, max_points=200) for n, s in oods.items()}
    fig = charts.scores_and_roc(id_scores, oods, curves, threshold=0.4)
    size = len(charts.figure_json(fig))
    assert size < 40_000, size
    assert sum(len(t["x"]) for t in fig["data"] if t.get("xaxis", "x") == "x") < 300


# ------------------------------------------------------------------------- in the pages
st_testing = pytest.importorskip("streamlit.testing.v1")
MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture(scope="module")
def demo_app(request):
    """AppTest factory on the session's demo cache (``tests/conftest.py``)."""
    import streamlit as st

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OOD_LENS_CACHE", str(request.getfixturevalue("demo_cache_root")))
        st.cache_resource.clear()
        st.cache_data.clear()

        def make(page: str, **query: str):
            at = st_testing.AppTest.from_file(MAIN, default_timeout=90)
            for key, value in {"page": page, **query}.items():
                at.query_params[key] = value
            return run(at)

        yield make


def run(at):
    at.run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    return at


def specs(at) -> dict[str, dict]:
    """Every plotly chart of the page: its title → figure JSON."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"].get("title", {}).get("text", "")] = spec
    return out


def test_pages_draw_titled_charts_with_legends_outside(demo_app):
    tune = specs(demo_app("tune", method="ash-s"))
    histogram = next(s for t, s in tune.items() if "histograms and ROC" in t)
    assert [t["type"] for t in histogram["data"]].count("bar") == 0
    assert histogram["layout"]["xaxis"]["type"] == "log"  # ASH-S's exponential scores
    neurons = specs(demo_app("neurons"))
    assert len(neurons) >= 5
    for title, spec in {**tune, **neurons}.items():
        layout = spec["layout"]
        assert axis_title(layout, "xaxis") and axis_title(layout, "yaxis"), title
        assert legend_outside(layout), title
        assert len(json.dumps(layout.get("template", {}))) < 200, title  # not plotly's 10 kB default
    mask = next(s for t, s in neurons.items() if t.startswith("LINe activation masks"))
    assert mask["data"][0]["colorbar"]["ticktext"] == ["dropped", "kept"]
    assert all(axis_title(s["layout"], "yaxis") == "class" for t, s in neurons.items() if "×" in t or "mask" in t)
    assert any(t.startswith("DICE contributions") for t in neurons)  # drawn again (it raised before)


def test_compare_roc_uses_the_method_styles(demo_app):
    at = demo_app("compare")
    roc = next(s for t, s in specs(at).items() if t.startswith("ROC"))
    from app import resources

    by_title = {resources.method_title(m): charts.method_style(m) for m in list_scorers()}
    curves = [t for t in roc["data"] if t.get("name") in by_title]
    assert len(curves) >= 8
    for trace in curves:
        style = by_title[trace["name"]]
        assert (trace["line"]["color"], trace["line"]["dash"]) == (style.colour, style.dash)


def test_sweep_shows_the_objectives_figure_with_a_titled_y_axis(demo_app):
    at = demo_app("sweep", method="react")
    at.radio(key="sweep_objective").set_value("auroc")
    at.slider(key="sweep_points").set_value(3)
    run(at)
    at.button(key="sweep_run").click()
    run(at)
    assert at.radio(key="sweep_figure").value == "val_auroc"
    chart = next(iter(specs(at).values()))
    assert axis_title(chart["layout"], "yaxis") == "validation AUROC (%)"
    at.radio(key="sweep_figure").set_value("test_fpr95")
    run(at)
    assert axis_title(next(iter(specs(at).values()))["layout"], "yaxis") == "test FPR95 (%)"


def test_the_server_settings_the_slider_latency_depends_on():
    """Found with py-spy on the demo (2 cores, Chromium beside the server): Streamlit's
    gc.collect(2) after every run took ~300 ms of a slider move, and OpenMP threads spinning
    against the browser made LINe's scoring 240 ms instead of 15-20 ms."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[2]
    settings = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert settings["runner"]["postScriptGC"] is False
    source = (root / "app" / "main.py").read_text()
    policy = source.find('os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")')
    first_import = min(m.start() for m in re.finditer(r"^(?:from app|import torch|from ood_core)", source, re.M))
    assert 0 <= policy < first_import  # libgomp reads it once, when torch loads

"""Pure functions returning plotly figures as plain dicts (no Streamlit here).

Why plain dicts: building a ``go.Figure`` validates every property and deep-copies the
``plotly_white`` template (~100 ms for the Tune page's two charts on this machine, more than
scoring a slider move); a dict of the same figure costs well under a millisecond.
``st.plotly_chart`` validates a dict once more (~14 ms for the Tune chart): the slider path
wraps it in ``Prebuilt``, which skips that (the tests validate every figure function instead).
``figure_json`` serialises one for tests.

What every chart here guarantees:
* a style per method (``method_style``): colour × line dash, fixed by the method's position in
  the registry, so each of the registered methods is distinct and keeps its style everywhere;
* legends right of the plot area (outside the axes and their titles), axis titles with a
  standoff, every axis and colour bar titled;
* histograms pre-binned here (``bin_series``): fixed bins between robust quantiles of the
  pooled values, geometric bins on a log axis when the values span orders of magnitude,
  values beyond the range counted in the end bins and said so in the subtitle, drawn as one
  step line per series (a handful of points each, no translucent bars piling up);
* vertical markers (the threshold, an inspected image's score) are legend entries, so their
  labels never collide;
* the Tune page's histograms and ROC are one figure (``scores_and_roc``) with fixed margins:
  Streamlit remounts a chart whenever its data change, so each slider move pays one plotly
  mount (two drawing passes in Streamlit's wrapper), not two, and no extra pass for margins.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from app import fmt

Figure = dict[str, Any]  # {"data": [trace dicts], "layout": {...}}: what st.plotly_chart takes

# 13 colours × 2 dashes = 26 styles: one per registered method (tab10 + three dark ones far
# from it). Beyond 26 (plugins) the dash cycles further and a marker symbol is added.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#000080", "#b8860b", "#006d5b")
DASHES = ("solid", "dash", "dot", "dashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon")
ID_COLOUR = "#1d4ed8"
ID_FILL = "rgba(29, 78, 216, 0.12)"
THRESHOLD_COLOUR = "#111827"
MARKER_COLOUR = "#f59e0b"
GRID_COLOUR = "rgba(128, 128, 128, 0.18)"
DEFAULT_BINS = 60
QUANTILES = (0.005, 0.995)  # the robust range: beyond it, values go to the end bins
LOG_SPAN = 100.0  # positive values whose range spans ≥ this ratio get geometric bins on a log axis
# the figures a sweep records (``SweepResult.grid(name)``) and how charts name them
SWEEP_FIGURES = {"val_fpr95": "validation FPR95", "val_auroc": "validation AUROC", "test_fpr95": "test FPR95",
                 "test_auroc": "test AUROC", "test_id_accuracy": "test ID accuracy of the head"}


@dataclass(frozen=True)
class Style:
    """How one series is drawn: line colour, dash, and a marker symbol where markers are shown."""

    colour: str
    dash: str = "solid"
    symbol: str = "circle"

    def line(self, width: float = 2.0) -> dict[str, Any]:
        return {"color": self.colour, "dash": self.dash, "width": width}


def style_at(position: int) -> Style:
    """The ``position``-th style: colours first, then dashes, then marker symbols (all distinct)."""
    colours, dashes = len(PALETTE), len(DASHES)
    return Style(PALETTE[position % colours], DASHES[(position // colours) % dashes],
                 SYMBOLS[(position // (colours * dashes)) % len(SYMBOLS)])


def method_style(method: str) -> Style:
    """The style of a registered method (by its position in ``list_scorers()``), the same in
    every chart; an unregistered name gets a style after the registered ones, from its hash."""
    from ood_core.scorers import list_scorers

    names = list_scorers()
    if method in names:
        return style_at(names.index(method))
    return style_at(len(names) + zlib.crc32(method.encode()) % (len(PALETTE) * len(DASHES)))


def series_styles(names: Sequence[str]) -> dict[str, Style]:
    """Styles for non-method series (OOD sets, ...) by their position in ``names``; the first
    colour (blue) is left to the ID set they are drawn against."""
    return {name: style_at(i + 1) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------- layout
def _axis(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title, "standoff": 8}, "automargin": True, "gridcolor": GRID_COLOUR,
            "zeroline": False, **extra}


def _layout(title: str, x_title: str, y_title: str, *, height: int, subtitle: str = "",
            legend: bool = True, **extra: Any) -> dict[str, Any]:
    """Shared layout: title top left (subtitle for notes), legend right of the plot area (it
    pushes the right margin, so it never covers an axis or its title), titled axes."""
    # anchored to the top left of the figure, inside a top margin sized for it (and the subtitle)
    heading: dict[str, Any] = {"text": title, "x": 0, "xanchor": "left", "xref": "container", "y": 1,
                               "yanchor": "top", "yref": "container", "pad": {"l": 8, "t": 10}}
    if subtitle:
        heading["subtitle"] = {"text": subtitle, "font": {"size": 12}}
    layout = {"title": heading, "height": height, "margin": {"l": 10, "r": 10, "t": 80 if subtitle else 52, "b": 10},
              "xaxis": _axis(x_title), "yaxis": _axis(y_title), "showlegend": legend,
              "legend": {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top",
                         "bgcolor": "rgba(0,0,0,0)", "font": {"size": 11}},
              "hovermode": "closest",
              # no plotly template: go.Figure would add its 10 kB default on validation; the
              # browser applies Streamlit's theme to an empty one
              "template": {}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def _as_float32(values: Any) -> np.ndarray:
    """Any tensor / array / sequence as a flat float32 numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float32).reshape(-1)


class Prebuilt(go.Figure):
    """A figure built here, handed to ``st.plotly_chart`` as it is: ``st.plotly_chart(Prebuilt(fig))``.

    ``st.plotly_chart`` turns a dict into a ``go.Figure`` to validate it and back with
    ``to_dict()`` (14 ms for the Tune page's chart, on every slider move); for a ``go.Figure``
    it only calls ``to_dict()``, which this one answers with the dict. Every figure function here
    is validated against plotly's schema by tests/app/test_charts.py instead, so no magic
    underscore names (``line_shape``): plain nested dicts only.
    """

    def __init__(self, spec: Figure) -> None:  # noqa: the plotly constructor (the validation) is skipped
        object.__setattr__(self, "_spec", spec)

    def to_dict(self) -> Figure:
        return self._spec

    def to_plotly_json(self) -> Figure:
        return self._spec


def figure_json(fig: Figure) -> str:
    """The JSON ``st.plotly_chart`` sends for ``fig`` (numpy arrays as lists), for tests."""
    return json.dumps(fig, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else float(o))


# --------------------------------------------------------------------------------- binning
@dataclass(frozen=True)
class Binned:
    """Several series counted on one set of bins.

    edges:   (bins + 1,) float64, increasing; geometric when ``log``.
    counts:  per series, (bins,) int64; values below ``edges[0]`` are counted in the first bin,
             values above ``edges[-1]`` in the last one.
    below, above: per series, how many values were beyond the range on each side.
    dropped: per series, non-finite values (not counted).
    """

    edges: np.ndarray
    counts: dict[str, np.ndarray]
    below: dict[str, int]
    above: dict[str, int]
    dropped: dict[str, int]
    log: bool

    @property
    def beyond(self) -> int:
        """Values of every series counted in an end bin although outside the range."""
        return sum(self.below.values()) + sum(self.above.values())

    def note(self) -> str:
        """What the chart must say about values outside the range (empty when none)."""
        parts = []
        if self.beyond:
            parts.append(f"{fmt.count(self.beyond, 'value')} beyond the range counted in the end bins")
        dropped = sum(self.dropped.values())
        if dropped:
            parts.append(f"{fmt.count(dropped, 'non-finite value')} left out")
        return "; ".join(parts)


def _pooled_quantiles(arrays: Sequence[np.ndarray], quantiles: tuple[float, float]) -> tuple[float, float]:
    """Quantiles of the pooled values, each series weighted equally (a small ID set is not
    outvoted by five OOD sets)."""
    values = np.concatenate(arrays).astype(np.float64)
    weights = np.concatenate([np.full(a.size, 1.0 / a.size) for a in arrays])
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    low = values[order[min(np.searchsorted(cumulative, quantiles[0], side="left"), values.size - 1)]]
    high = values[order[min(np.searchsorted(cumulative, quantiles[1], side="left"), values.size - 1)]]
    return float(low), float(high)


def bin_series(series: Mapping[str, Any], bins: int = DEFAULT_BINS, *,
               quantiles: tuple[float, float] = QUANTILES, log: bool | None = None,
               value_range: tuple[float, float] | None = None) -> Binned:
    """Count every series on shared fixed bins between robust pooled quantiles.

    ``series``: name → values (array-like, any shape, flattened). The range is the
    ``quantiles`` of the pooled finite values (each series weighted equally), widened to
    include every series' median; values outside are counted in the end bins (``below`` /
    ``above`` say how many). ``log=None`` decides: geometric bins when the range is positive
    and spans ≥ ``LOG_SPAN``× (ASH-S's exponential scores: linear bins would put most of the
    ID mass into one bar). ``value_range`` fixes the range instead (values known to lie in it,
    e.g. shares in [0, 1]). Pure numpy; counts of a series sum to its finite values.
    """
    arrays = {name: _as_float32(values) for name, values in series.items()}
    finite = {name: a[np.isfinite(a)] for name, a in arrays.items()}
    present = [a for a in finite.values() if a.size]
    if value_range is not None:
        low, high = float(value_range[0]), float(value_range[1])
    elif present:
        low, high = _pooled_quantiles(present, quantiles)
        medians = [float(np.median(a)) for a in present]
        low, high = min(low, *medians), max(high, *medians)
    else:
        low, high = 0.0, 1.0
    use_log = (low > 0 and high / low >= LOG_SPAN) if log is None else bool(log and low > 0)
    if high <= low:  # one value everywhere: a unit-wide range around it
        half = 0.5 * max(abs(low), 1.0) if low != 0 else 0.5
        low, high = low - half, high + half
        use_log = False
    edges = np.geomspace(low, high, bins + 1) if use_log else np.linspace(low, high, bins + 1)
    # equal-width bins (in log space when geometric): np.histogram's O(n) path for bins + range
    span = (np.log(low), np.log(high)) if use_log else (low, high)
    counts, below, above, dropped = {}, {}, {}, {}
    for name, values in finite.items():
        values = values.astype(np.float64)
        below[name] = int(np.count_nonzero(values < low))
        above[name] = int(np.count_nonzero(values > high))
        dropped[name] = int(arrays[name].size - values.size)
        # clipping puts out-of-range values into the end bins (np.histogram's last bin is closed)
        clipped = np.clip(values, low, high)
        counts[name] = np.histogram(np.log(clipped) if use_log else clipped, bins=bins, range=span)[0].astype(np.int64)
    return Binned(edges=edges, counts=counts, below=below, above=above, dropped=dropped, log=use_log)


def _step_xy(edges: np.ndarray, heights: np.ndarray, *, to_zero: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A histogram outline for ``line.shape = "hv"``: (bins + 3,) points, down to 0 at both ends."""
    heights = np.asarray(heights, dtype=np.float32)
    if not to_zero:
        return edges.astype(np.float32), np.append(heights, heights[-1]).astype(np.float32)
    x = np.concatenate([edges[:1], edges, edges[-1:]]).astype(np.float32)
    y = np.concatenate([[0.0], heights, heights[-1:], [0.0]]).astype(np.float32)
    return x, y


def _vertical(x: float, top: float, *, name: str, colour: str, dash: str, width: float,
              rank: int = 1000) -> dict[str, Any]:
    """A vertical line from 0 to ``top`` as a trace: it has a legend entry (no label on the plot
    to collide with another) and takes data coordinates on linear and log axes alike; ``rank``:
    its place in the legend (lower first: a narrow chart's legend scrolls, the markers must show)."""
    return {"type": "scatter", "mode": "lines", "x": [x, x], "y": [0.0, top], "name": name, "legendrank": rank,
            "line": {"color": colour, "dash": dash, "width": width}, "hovertemplate": f"{name}<extra></extra>"}


# -------------------------------------------------------------------------------- figures
def _histogram_traces(id_scores: Any, ood_scores: Mapping[str, Any], *, threshold: float | None,
                      marker: float | None, bins: int, id_label: str,
                      styles: Mapping[str, Style] | None) -> tuple[list[dict[str, Any]], Binned, float]:
    """The step lines of ID and every OOD set (share per bin, %), the threshold and the marker;
    with the binning and the y-axis top."""
    binned = bin_series({id_label: id_scores, **ood_scores}, bins)
    styles = dict(styles or series_styles(list(ood_scores)))
    traces, top = [], 0.0
    for i, (name, counts) in enumerate(binned.counts.items()):
        share = 100.0 * counts / max(int(counts.sum()), 1)
        top = max(top, float(share.max(initial=0.0)))
        x, y = _step_xy(binned.edges, share)
        trace: dict[str, Any] = {"type": "scatter", "mode": "lines", "x": x, "y": y, "name": name,
                                 "legendgroup": name, "hovertemplate": "%{y:.1f} %<extra>" + name + "</extra>"}
        if i == 0:  # ID: the reference, filled lightly (one fill does not muddy the others)
            trace.update(line={"color": ID_COLOUR, "width": 2.5, "shape": "hv"}, fill="tozeroy", fillcolor=ID_FILL)
        else:
            trace["line"] = {**styles.get(name, style_at(i)).line(1.8), "shape": "hv"}
        traces.append(trace)
    top = 1.05 * top if top > 0 else 1.0
    if threshold is not None and np.isfinite(threshold):
        traces.append(_vertical(float(threshold), top, name=f"95 %-TPR threshold ({fmt.number(threshold, 4)})",
                                colour=THRESHOLD_COLOUR, dash="dash", width=2, rank=2))
    if marker is not None and np.isfinite(marker):
        traces.append(_vertical(float(marker), top, name=f"this image ({fmt.number(marker, 4)})",
                                colour=MARKER_COLOUR, dash="solid", width=3, rank=1))
    return traces, binned, top


def _histogram_axis(binned: Binned) -> dict[str, Any]:
    """The score axis: log scale (powers of ten) when the bins are geometric."""
    title = "score (higher = more ID)" + (", log scale" if binned.log else "")
    return _axis(title, **({"type": "log", "exponentformat": "power"} if binned.log else {}))


def score_histograms(id_scores: Any, ood_scores: Mapping[str, Any], *, threshold: float | None = None,
                     marker: float | None = None, title: str = "", bins: int = DEFAULT_BINS,
                     id_label: str = "ID (test)", styles: Mapping[str, Style] | None = None,
                     height: int = 340) -> Figure:
    """Share of each series per bin (%), ID vs each OOD set on shared pre-binned edges, with the
    95 %-TPR ``threshold`` and an optional ``marker`` (an inspected image's score) as legend
    entries. ``id_scores`` (N,), each OOD set (M_i,): tensors or arrays."""
    traces, binned, top = _histogram_traces(id_scores, ood_scores, threshold=threshold, marker=marker, bins=bins,
                                            id_label=id_label, styles=styles)
    layout = _layout(title, "", "share of the set per bin (%)", height=height, subtitle=binned.note(),
                     yaxis={"range": [0.0, top]})
    layout["xaxis"] = _histogram_axis(binned)
    return {"data": traces, "layout": layout}


def _roc_traces(curves: Mapping[str, tuple[Any, Any]], styles: Mapping[str, Style] | None, *,
                axes: tuple[str, str] = ("x", "y"), legend: bool = True) -> list[dict[str, Any]]:
    styles = dict(styles or series_styles(list(curves)))
    return [{"type": "scatter", "mode": "lines", "x": _as_float32(fpr), "y": _as_float32(tpr), "name": label,
             "legendgroup": label, "showlegend": legend, "xaxis": axes[0], "yaxis": axes[1],
             "line": styles.get(label, style_at(i)).line(2.0),
             "hovertemplate": "FPR %{x:.3f}, TPR %{y:.3f}<extra>" + label + "</extra>"}
            for i, (label, (fpr, tpr)) in enumerate(curves.items())]


def _roc_shapes(axes: tuple[str, str] = ("x", "y")) -> list[dict[str, Any]]:
    """The chance diagonal and the 95 % TPR line (shapes: no trace to lay out, no legend entry)."""
    grey = {"color": "#9ca3af", "dash": "dot", "width": 1}
    return [{"type": "line", "xref": axes[0], "yref": axes[1], "x0": 0, "x1": 1, "y0": 0, "y1": 1, "line": grey},
            {"type": "line", "xref": f"{axes[0]} domain", "yref": axes[1], "x0": 0, "x1": 1, "y0": 0.95, "y1": 0.95,
             "line": {"color": "#6b7280", "dash": "dash", "width": 1}}]


ROC_AXES = {"x": ("FPR (OOD accepted)", [0.0, 1.0]), "y": ("TPR (ID kept)", [0.0, 1.01])}


def roc_curves(curves: Mapping[str, tuple[Any, Any]], *, title: str = "ROC (ID positive)",
               styles: Mapping[str, Style] | None = None, height: int = 380) -> Figure:
    """Overlaid ROC curves ``{label: (fpr, tpr)}`` with the chance diagonal and the 95 % TPR
    line. ``styles``: label → style (e.g. ``method_style`` per method); default by position."""
    layout = _layout(title, ROC_AXES["x"][0], ROC_AXES["y"][0], height=height, xaxis={"range": ROC_AXES["x"][1]},
                     yaxis={"range": ROC_AXES["y"][1]}, shapes=_roc_shapes())
    return {"data": _roc_traces(curves, styles), "layout": layout}


def scores_and_roc(id_scores: Any, ood_scores: Mapping[str, Any], curves: Mapping[str, tuple[Any, Any]], *,
                   threshold: float | None = None, title: str = "", bins: int = DEFAULT_BINS,
                   id_label: str = "ID (test)", height: int = 380) -> Figure:
    """The score histograms (left) and the ROC curves ``{ood: (fpr, tpr)}`` (right) as ONE figure
    with one legend: each OOD set has one colour and one legend entry (clicking it hides both of
    its lines). One figure is one plotly mount in the browser instead of two: Streamlit remounts a
    chart whenever its data change, so on a slider move this halves the drawing overhead."""
    styles = series_styles(list(ood_scores))
    traces, binned, top = _histogram_traces(id_scores, ood_scores, threshold=threshold, marker=None, bins=bins,
                                            id_label=id_label, styles=styles)
    traces += _roc_traces({name: curves[name] for name in ood_scores if name in curves}, styles,
                          axes=("x2", "y2"), legend=False)
    layout = _layout(title, "", "share of the set per bin (%)", height=height, subtitle=binned.note(),
                     yaxis={"range": [0.0, top]}, shapes=_roc_shapes(("x2", "y2")))
    layout["xaxis"] = {**_histogram_axis(binned), "domain": [0.0, 0.44]}
    layout["xaxis2"] = _axis(ROC_AXES["x"][0], domain=[0.58, 1.0], anchor="y2", range=ROC_AXES["x"][1])
    layout["yaxis2"] = _axis(ROC_AXES["y"][0], anchor="x2", range=ROC_AXES["y"][1])
    _fix_margins(layout, [t["name"] for t in traces if t.get("showlegend", True)])
    return {"data": traces, "layout": layout}


LEGEND_CHAR_PX = 6.6  # average width of a legend character at font size 11 (sans serif)


def _fix_margins(layout: dict[str, Any], legend_labels: Sequence[str]) -> None:
    """Margins fixed here, sized for the legend's longest label, instead of plotly's automatic
    ones: an automatic margin that grows makes plotly draw the whole figure a second time
    (~80 ms of a slider move in Chromium on this machine). The legend still sits right of the
    plot area; the axes keep room for their tick labels and titles."""
    legend_px = 48 + LEGEND_CHAR_PX * max((len(label) for label in legend_labels), default=0)
    layout["margin"] = {**layout["margin"], "l": 64, "b": 56, "r": int(min(max(legend_px, 80), 360)),
                        "autoexpand": False}
    for name, axis in layout.items():
        if name.startswith(("xaxis", "yaxis")):
            axis["automargin"] = False


def heatmap(z: Any, *, x: Sequence, y: Sequence, title: str = "", x_title: str = "", y_title: str = "",
            colour_title: str = "", colorscale: Any = "Viridis", zmid: float | None = None,
            zmin: float | None = None, zmax: float | None = None,
            tick_labels: Mapping[float, str] | None = None, height: int = 420) -> Figure:
    """A heatmap of ``z`` (len(y), len(x)) float32 with titled axes and colour bar;
    ``tick_labels`` names colour-bar values (e.g. ``{0: "dropped", 1: "kept"}``)."""
    colorbar: dict[str, Any] = {"title": {"text": colour_title, "side": "top"}, "thickness": 14}
    if tick_labels:
        colorbar.update(tickvals=list(tick_labels), ticktext=list(tick_labels.values()))
    trace: dict[str, Any] = {"type": "heatmap", "z": np.asarray(z, dtype=np.float32), "x": [str(v) for v in x],
                             "y": [str(v) for v in y], "colorscale": colorscale, "colorbar": colorbar}
    for key, value in (("zmid", zmid), ("zmin", zmin), ("zmax", zmax)):
        if value is not None:
            trace[key] = value
    # categorical axes: numeric-looking labels ("0".."9", neuron ids) stay labels, not numbers
    layout = _layout(title, x_title, y_title, height=height, legend=False,
                     xaxis={"type": "category"}, yaxis={"type": "category", "autorange": "reversed"})
    return {"data": [trace], "layout": layout}


def binary_mask(mask: Any, *, x: Sequence, y: Sequence, title: str = "", x_title: str = "", y_title: str = "class",
                kept: str = "kept", dropped: str = "dropped", height: int = 420) -> Figure:
    """A 0/1 mask (len(y), len(x)) in two colours, the colour bar naming which one is ``kept``."""
    scale = [[0.0, "#f3f4f6"], [0.5, "#f3f4f6"], [0.5, ID_COLOUR], [1.0, ID_COLOUR]]
    return heatmap(np.asarray(mask, dtype=np.float32), x=x, y=y, title=title, x_title=x_title, y_title=y_title,
                   colour_title="mask", colorscale=scale, zmin=0.0, zmax=1.0,
                   tick_labels={0.25: dropped, 0.75: kept}, height=height)


def sweep_figure(values: np.ndarray, axes: Sequence[tuple[str, Sequence]], *, best: tuple[int, ...],
                 oracle: tuple[int, ...], title: str, value_title: str = "",
                 degenerate: np.ndarray | None = None) -> Figure:
    """A sweep's grid (line for one axis, heatmap for two) with the validation-best point, the
    test-tuned oracle point and the degenerate points (bool grid, never selected) marked.
    ``value_title`` names the figure shown (the y axis, or the heatmap's colour bar)."""
    values = np.asarray(values, dtype=np.float32)
    labels = [[f"{v:g}" if isinstance(v, float) else str(v) for v in values_] for _, values_ in axes]
    flagged = (np.argwhere(np.asarray(degenerate, dtype=bool)) if degenerate is not None
               else np.empty((0, len(axes)), int))
    degenerate_marker = {"size": 11, "symbol": "circle-open", "color": "#6b7280", "line": {"width": 2}}
    best_marker = {"size": 15, "symbol": "star", "color": "#16a34a", "line": {"color": "white", "width": 1}}
    oracle_marker = {"size": 13, "symbol": "x", "color": "#dc2626"}

    def points(name: str, marker: dict, index: list[tuple[int, ...]]) -> dict[str, Any]:
        if len(axes) == 1:
            xs, ys = [labels[0][i[0]] for i in index], [float(values[i]) for i in index]
        else:
            xs, ys = [labels[1][i[1]] for i in index], [labels[0][i[0]] for i in index]
        return {"type": "scatter", "mode": "markers", "x": xs, "y": ys, "name": name, "marker": marker}

    marks = ([points("degenerate (not selectable)", degenerate_marker, [tuple(p) for p in flagged])]
             if len(flagged) else [])
    marks += [points("best on validation", best_marker, [tuple(best)]),
              points("oracle (test-tuned)", oracle_marker, [tuple(oracle)])]
    if len(axes) == 1:
        line = {"type": "scatter", "mode": "lines+markers", "x": labels[0], "y": values, "name": value_title or title,
                "line": {"color": ID_COLOUR, "width": 2}, "marker": {"size": 7, "color": ID_COLOUR}}
        layout = _layout(title, axes[0][0], value_title, height=380, xaxis={"type": "category"})
        return {"data": [line, *marks], "layout": layout}
    fig = heatmap(values, x=labels[1], y=labels[0], title=title, x_title=axes[1][0], y_title=axes[0][0],
                  colour_title=value_title)
    fig["data"] += marks
    fig["layout"]["showlegend"] = True
    fig["layout"]["yaxis"].pop("autorange", None)  # grid values increase upwards
    # the legend sits right of the colour bar
    fig["data"][0]["colorbar"].update(x=1.02, xanchor="left")
    fig["layout"]["legend"].update(x=1.2)
    return fig


def bars(values: Any, *, labels: Sequence | None = None, title: str = "", x_title: str = "", y_title: str = "",
         height: int = 320, colour: str = ID_COLOUR) -> Figure:
    """A bar chart of ``values`` (float32), categories ``labels`` (default 0..n-1)."""
    y = _as_float32(values)
    x = [str(v) for v in labels] if labels is not None else [str(i) for i in range(y.size)]
    trace = {"type": "bar", "x": x, "y": y, "marker": {"color": colour}, "name": y_title or title}
    layout = _layout(title, x_title, y_title, height=height, legend=False, xaxis={"type": "category"})
    return {"data": [trace], "layout": layout}


def distribution(values: Mapping[str, Any], *, title: str = "", x_title: str = "", y_title: str = "count",
                 bins: int = DEFAULT_BINS, log_y: bool = False, log_x: bool | None = None,
                 value_range: tuple[float, float] | None = None, height: int = 320) -> Figure:
    """Counts of one or several value sets on shared pre-binned edges (e.g. DICE contributions,
    OPNP sensitivities): bars for one set, step lines for several. ``log_y``: a log count axis
    with one labelled tick per decade (readable at any height); ``log_x=None`` lets
    ``bin_series`` pick geometric bins for values spanning orders of magnitude."""
    binned = bin_series(values, bins, log=log_x, value_range=value_range)
    low, high = binned.edges[:-1], binned.edges[1:]
    centres = np.sqrt(low * high) if binned.log else (low + high) / 2
    styles = series_styles(list(values))
    traces: list[dict[str, Any]] = []
    for name, counts in binned.counts.items():
        heights = counts.astype(np.float32)
        if log_y:  # log(0) does not exist: an empty bin is a gap, not a spike to -inf
            heights = np.where(heights > 0, heights, np.nan).astype(np.float32)
        if len(binned.counts) == 1 and not binned.log:
            traces.append({"type": "bar", "x": centres.astype(np.float32), "y": heights, "name": name,
                           "width": np.diff(binned.edges).astype(np.float32), "marker": {"color": ID_COLOUR}})
        else:
            x, y = _step_xy(binned.edges, heights, to_zero=not log_y)
            traces.append({"type": "scatter", "mode": "lines", "x": x, "y": y, "name": name,
                           "line": {**styles[name].line(2.0), "shape": "hv"}})
    layout = _layout(title, x_title + (" (log scale)" if binned.log else ""),
                     y_title + (" (log scale)" if log_y else ""),
                     height=height, subtitle=binned.note(), legend=len(binned.counts) > 1, bargap=0)
    if log_y:
        layout["yaxis"].update(type="log", dtick=1, exponentformat="power", minor={"showgrid": False})
    if binned.log:
        layout["xaxis"].update(type="log", exponentformat="power")
    return {"data": traces, "layout": layout}

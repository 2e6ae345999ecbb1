"""Pure functions returning plotly figures (no Streamlit here).

Histogram counts are computed on the server with *shared* bin
edges for ID and every OOD set, ROC curves arrive already thinned (≤ 1k points, from
``ood_core.metrics.roc_points``), and arrays are float32 numpy, never long Python lists.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

ID_COLOUR = "#2563eb"
PALETTE = ("#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563",
           "#65a30d", "#7c3aed")
LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))


def _as_float32(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float32).reshape(-1)


def shared_bin_edges(arrays: Sequence[np.ndarray], bins: int = 60) -> np.ndarray:
    """(bins+1,) float32 edges covering every array's finite values."""
    finite = [a[np.isfinite(a)] for a in arrays if a.size]
    values = np.concatenate(finite) if finite else np.zeros(1, np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1, dtype=np.float32)


def _vertical_line(x: float, *, colour: str, text: str, dash: str = "solid", width: int = 2,
                   position: str = "left") -> tuple[dict, dict]:
    """A full-height vertical line and its label as layout shape / annotation dicts (plotly's
    ``add_vline`` resolves subplot references on every call and dominates a rerun)."""
    shape = dict(type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
                 line=dict(color=colour, dash=dash, width=width))
    label = dict(xref="x", yref="paper", x=x, y=1, text=text, showarrow=False,
                 xanchor="right" if position == "left" else "left", yanchor="bottom")
    return shape, label


def score_histograms(id_scores, ood_scores: Mapping[str, object], *, threshold: float | None = None,
                     marker: float | None = None, title: str = "", bins: int = 60) -> go.Figure:
    """Density histograms of ID vs each OOD set on shared bins, with the 95 %-TPR threshold
    (dashed) and an optional marker (an inspected image's score)."""
    id_values = _as_float32(id_scores)
    ood_values = {name: _as_float32(v) for name, v in ood_scores.items()}
    edges = shared_bin_edges([id_values, *ood_values.values()], bins)
    centres = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
    width = float(edges[1] - edges[0])
    bars = []
    for i, (name, values) in enumerate([("ID (test)", id_values), *ood_values.items()]):
        counts, _ = np.histogram(values[np.isfinite(values)], bins=edges)
        density = (counts / max(counts.sum(), 1) / width).astype(np.float32)
        bars.append(go.Bar(x=centres, y=density, width=width, name=name, opacity=0.55,
                           marker_color=ID_COLOUR if i == 0 else PALETTE[(i - 1) % len(PALETTE)]))
    lines = []
    if threshold is not None and np.isfinite(threshold):
        lines.append(_vertical_line(float(threshold), colour="#111827", dash="dash", text="95 % TPR threshold"))
    if marker is not None and np.isfinite(marker):
        lines.append(_vertical_line(float(marker), colour="#f59e0b", width=3, text="this image", position="right"))
    return go.Figure(data=bars, layout=dict(
        barmode="overlay", title=title, xaxis_title="score (higher = more ID)", yaxis_title="density",
        height=320, shapes=[shape for shape, _ in lines], annotations=[label for _, label in lines], **LAYOUT))


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "ROC (ID positive)") -> go.Figure:
    """Overlaid ROC curves ``{label: (fpr, tpr)}`` with the chance diagonal and the 95 % TPR line."""
    traces = [go.Scatter(x=np.array([0, 1], np.float32), y=np.array([0, 1], np.float32), mode="lines",
                         line=dict(dash="dot", color="#9ca3af"), name="chance", showlegend=False)]
    for i, (label, (fpr, tpr)) in enumerate(curves.items()):
        traces.append(go.Scatter(x=_as_float32(fpr), y=_as_float32(tpr), mode="lines", name=label,
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2)))
    tpr_line = dict(type="line", xref="paper", yref="y", x0=0, x1=1, y0=0.95, y1=0.95,
                    line=dict(color="#6b7280", dash="dash"))
    return go.Figure(data=traces, layout=dict(
        title=title, xaxis_title="FPR (OOD accepted)", yaxis_title="TPR (ID kept)", xaxis_range=[0, 1],
        yaxis_range=[0, 1.01], height=380, shapes=[tpr_line], **LAYOUT))


def heatmap(z: np.ndarray, *, x: Sequence, y: Sequence, title: str = "", x_title: str = "", y_title: str = "",
            colorscale: str = "Viridis", zmid: float | None = None, height: int = 420) -> go.Figure:
    """A heatmap of ``z`` (len(y), len(x)) float32."""
    fig = go.Figure(go.Heatmap(z=np.asarray(z, dtype=np.float32), x=list(x), y=list(y), colorscale=colorscale,
                               zmid=zmid))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=height, **LAYOUT)
    return fig


def sweep_figure(values: np.ndarray, axes: Sequence[tuple[str, Sequence]], *, best: tuple[int, ...],
                 oracle: tuple[int, ...], title: str, degenerate: np.ndarray | None = None) -> go.Figure:
    """A sweep's grid (line for one axis, heatmap for two) with the validation-best point, the
    test-tuned oracle point and the degenerate points (bool grid, never selected) marked."""
    labels = [[f"{v:g}" if isinstance(v, float) else str(v) for v in values_] for _, values_ in axes]
    flagged = np.argwhere(np.asarray(degenerate, dtype=bool)) if degenerate is not None else np.empty((0, len(axes)))
    degenerate_marker = dict(size=11, symbol="circle-open", color="#6b7280", line=dict(width=2))
    if len(axes) == 1:
        fig = go.Figure()
        fig.add_scatter(x=labels[0], y=_as_float32(values), mode="lines+markers", name=title)
        if len(flagged):
            fig.add_scatter(x=[labels[0][i] for (i,) in flagged], y=[float(values[i]) for (i,) in flagged],
                            mode="markers", name="degenerate (not selectable)", marker=degenerate_marker)
        fig.add_scatter(x=[labels[0][best[0]]], y=[float(values[best])], mode="markers", name="best on validation",
                        marker=dict(size=14, symbol="star", color="#16a34a"))
        fig.add_scatter(x=[labels[0][oracle[0]]], y=[float(values[oracle])], mode="markers",
                        name="oracle (test-tuned)", marker=dict(size=12, symbol="x", color="#dc2626"))
        fig.update_layout(title=title, xaxis_title=axes[0][0], height=380, **LAYOUT)
        return fig
    fig = heatmap(np.asarray(values, np.float32), x=labels[1], y=labels[0], title=title,
                  x_title=axes[1][0], y_title=axes[0][0])
    if len(flagged):
        fig.add_scatter(x=[labels[1][j] for _, j in flagged], y=[labels[0][i] for i, _ in flagged], mode="markers",
                        name="degenerate (not selectable)", marker=degenerate_marker)
    fig.add_scatter(x=[labels[1][best[1]]], y=[labels[0][best[0]]], mode="markers", name="best on validation",
                    marker=dict(size=16, symbol="star", color="#16a34a", line=dict(color="white", width=1)))
    fig.add_scatter(x=[labels[1][oracle[1]]], y=[labels[0][oracle[0]]], mode="markers",
                    name="oracle (test-tuned)", marker=dict(size=14, symbol="x", color="#dc2626"))
    return fig


def bars(values, *, labels: Sequence | None = None, title: str = "", x_title: str = "", y_title: str = "",
         height: int = 320, colour: str = ID_COLOUR) -> go.Figure:
    """A bar chart of ``values`` (float32)."""
    y = _as_float32(values)
    x = list(labels) if labels is not None else np.arange(y.size)
    fig = go.Figure(go.Bar(x=x, y=y, marker_color=colour))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=height, **LAYOUT)
    return fig


def distribution(values: Mapping[str, object], *, title: str = "", x_title: str = "", bins: int = 60,
                 log_y: bool = False) -> go.Figure:
    """Histograms of several value sets on shared bins (e.g. DICE contributions, OPNP sensitivities)."""
    arrays = {name: _as_float32(v) for name, v in values.items()}
    edges = shared_bin_edges(list(arrays.values()), bins)
    centres = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
    fig = go.Figure()
    for i, (name, array) in enumerate(arrays.items()):
        counts, _ = np.histogram(array[np.isfinite(array)], bins=edges)
        fig.add_bar(x=centres, y=counts.astype(np.float32), name=name, opacity=0.6,
                    marker_color=PALETTE[i % len(PALETTE)], width=float(edges[1] - edges[0]))
    fig.update_layout(barmode="overlay", title=title, xaxis_title=x_title, yaxis_title="count", height=320,
                      yaxis_type="log" if log_y else "linear", **LAYOUT)
    return fig

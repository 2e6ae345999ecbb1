"""app.export and app.charts: pure helpers behind the Compare page (no Streamlit session)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app import charts, export
from ood_core import metrics


@dataclass
class FakeResult:
    metrics: dict
    average: metrics.OODMetrics
    id_accuracy: float


def fake_results() -> dict[str, FakeResult]:
    gen = torch.Generator().manual_seed(0)
    id_scores = torch.randn(300, generator=gen) + 2
    out = {}
    for method, shift in {"weak": 1.5, "strong": 0.0}.items():
        per = {name: metrics.evaluate(id_scores, torch.randn(200, generator=gen) + shift + offset)
               for name, offset in {"a": 0.0, "b": -0.5}.items()}
        out[method] = FakeResult(per, metrics.average_metrics(list(per.values())), 0.9)
    return out


def test_metrics_table_values_and_best():
    results = fake_results()
    frame = export.metrics_table(results, ["a", "b"])
    assert frame.loc["strong", ("a", "FPR95 ↓")] == 100 * results["strong"].metrics["a"].fpr95
    assert frame.loc["weak", ("average", "AUROC ↑")] == 100 * results["weak"].average.auroc
    best = export.best_per_column(frame)
    assert best[("average", "FPR95 ↓")] == "strong" and best[("average", "AUROC ↑")] == "strong"
    positive = export.metrics_table(results, ["a", "b"], ood_positive=True)
    assert positive.loc["weak", ("a", export.OOD_POSITIVE_LABEL)] == 100 * results["weak"].metrics["a"].fpr95_ood_positive


def test_exports_contain_every_number_and_mark_the_best():
    frame = export.metrics_table(fake_results(), ["a", "b"])
    csv = export.to_csv(frame)
    assert csv.splitlines()[0].startswith("method,") and len(csv.splitlines()) == 3
    latex = export.to_latex(frame)
    assert "\\toprule" in latex and f"\\textbf{{{frame.loc['strong', ('average', 'AUROC ↑')]:.2f}}}" in latex
    markdown = export.to_markdown(frame)
    assert markdown.count("\n") == 4 and f"**{frame.loc['strong', ('a', 'AUROC ↑')]:.2f}**" in markdown


def test_histograms_share_bin_edges_and_mark_threshold():
    fig = charts.score_histograms(np.arange(100, dtype=np.float32), {"x": np.arange(50, 150, dtype=np.float32)},
                                  threshold=5.0, marker=120.0, bins=20)
    assert len(fig.data) == 2
    np.testing.assert_array_equal(fig.data[0].x, fig.data[1].x)
    for trace in fig.data:  # densities integrate to 1
        assert abs(float(np.sum(trace.y) * trace.width) - 1) < 1e-4
    assert len(fig.layout.shapes) == 2


def test_roc_figure_has_one_trace_per_curve():
    fpr, tpr = metrics.roc_points(torch.randn(5000), torch.randn(5000) - 1)
    fig = charts.roc_curves({"m1": (fpr, tpr), "m2": (fpr, tpr)})
    assert len(fig.data) == 3 and len(fig.data[1].x) <= 1000

"""The Tune page's preview on a large CPU benchmark (AppTest): the labelled preview on the fixed
subsample, then the exact figures on every row; the demo shows no preview.

The large benchmark is a small synthetic one (``ood_core.synthetic``) injected where the app loads
its benchmark (``resources.load_benchmark_with_progress``, behind the sidebar's cached configs),
with the preview threshold lowered so that it counts as large: the page code after the loader
is the one a real ImageNet cache goes through.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ood_core import preview
from ood_core.benchmark import Benchmark, evaluate_method
from ood_core.registry import OODLensError
from ood_core.synthetic import OODSet, SyntheticSettings, make_synthetic

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
TIMEOUT = 120
BUDGET = 200
OODS = ("far", "near")


@pytest.fixture(scope="module")
def large() -> Benchmark:
    """600 ID + 2 × 300 OOD rows, overlapping (AUROC < 1), so a subsample's figures differ."""
    return make_synthetic(SyntheticSettings.parity(id_test=600, ood=(OODSet("far", 300, "mixed"),
                                                                      OODSet("near", 300, "near"))))


@pytest.fixture
def large_app(large, monkeypatch):
    """The app serving ``large`` as a benchmark above the (lowered) preview threshold."""
    import streamlit as st

    from app import resources

    configs = {"synthetic": {"synthetic-id": ["test", "val"], **{name: ["test"] for name in OODS}}}
    monkeypatch.setattr(resources, "cached_configs", lambda: configs)
    monkeypatch.setattr(resources, "load_benchmark_with_progress", lambda model, id_dataset, oods: large)
    monkeypatch.setattr(preview, "PREVIEW_ABOVE_MACS", preview.rescore_macs(large) - 1)
    monkeypatch.setattr(preview, "PREVIEW_ROWS", BUDGET)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield large
    st.cache_resource.clear()
    st.cache_data.clear()


def tune_page(**query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    for key, value in {"page": "tune", "model": "synthetic", "id": "synthetic-id", "ood": ",".join(OODS),
                       "method": "line", **query}.items():
        at.query_params[key] = value
    at.run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_figures(at: AppTest) -> list[str]:
    """FPR95, AUROC and ID accuracy as the metric row shows them."""
    return [m.value for m in at.metric][:3]


def expected_figures(bench: Benchmark, hparams: dict | None = None) -> list[str]:
    from app import fmt

    result = evaluate_method(bench, "line", hparams)
    return [fmt.rate(result.average.fpr95), fmt.rate(result.average.auroc), fmt.rate(result.id_accuracy)]


def subsample_reference(bench: Benchmark) -> Benchmark:
    """The preview's rows taken by hand from ``bench``, with scorers fitted afresh."""
    rows = preview.choose_subsample(bench.id_test.labels, {n: len(f) for n, f in bench.ood.items()}, BUDGET)
    return dataclasses.replace(bench, id_test=bench.id_test.subset(rows.id_rows),
                               ood={n: f.subset(rows.ood_rows[n]) for n, f in bench.ood.items()}, _scorers={})


def test_exact_figures_replace_the_preview_and_equal_evaluate_method(large_app):
    at = tune_page()
    assert [s.value for s in at.success] == ["Exact: all 1,200 rows"]
    assert not at.info and not at.error  # the preview was replaced
    assert shown_figures(at) == expected_figures(large_app)
    table = at.dataframe[0].value
    exact = evaluate_method(large_app, "line")
    assert list(table.index) == list(OODS)
    for name in OODS:
        assert table.loc[name, "FPR95 (%)"] == pytest.approx(100 * exact.metrics[name].fpr95)
        assert table.loc[name, "AUROC (%)"] == pytest.approx(100 * exact.metrics[name].auroc)
    # a slider move: the exact figures at the new value
    at.slider(key="param_p_a").set_value(95.0).run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.success] == ["Exact: all 1,200 rows"]
    assert shown_figures(at) == expected_figures(large_app, {"p_a": 95.0})


def test_preview_is_labelled_and_scores_the_subsample(large_app, monkeypatch):
    from app import resources

    def held_back(*args, **kwargs):
        def fail():
            raise OODLensError("held back by the test")
        return fail

    monkeypatch.setattr(resources, "_evaluation", held_back)  # the exact figures never arrive
    at = tune_page()
    label = ("Preview on a stratified 200-row subsample (100 of 600 ID, 50 of 300 per OOD set)")
    assert [e.value for e in at.error] == [f"{label}. The exact figures failed: held back by the test"]
    assert not at.success
    shown, sample = shown_figures(at), expected_figures(subsample_reference(large_app))
    assert shown == sample
    assert shown != expected_figures(large_app)  # the subsample's figures are not the exact ones
    assert at.dataframe[0].value.shape[0] == len(OODS)


def test_a_move_back_to_a_computed_value_shows_the_exact_figures_at_once(large_app, monkeypatch):
    from app import resources

    at = tune_page()
    assert [s.value for s in at.success] == ["Exact: all 1,200 rows"]
    previews = []
    monkeypatch.setattr(resources, "evaluate", lambda bench, *a, **k: previews.append(bench) or None)
    at.run(timeout=TIMEOUT)  # the same value again: known exact results, no preview scored
    assert not at.exception, [e.value for e in at.exception]
    assert previews == [] and [s.value for s in at.success] == ["Exact: all 1,200 rows"]
    assert shown_figures(at) == expected_figures(large_app)


def test_the_demo_shows_no_preview(demo_app, demo_benchmark):
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.query_params["page"] = "tune"
    at.run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    assert not preview.needs_preview(demo_benchmark)
    assert not at.info and not at.success  # neither a preview nor an "Exact" label: scored in full
    assert shown_figures(at) == expected_figures(demo_benchmark)

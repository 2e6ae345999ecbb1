"""Compare's "tuned on validation" view, its 95 % intervals, the summary above the table and
the exports of a tuned table: pure helpers (``app.export``) and the page through AppTest on
the embedded demo (cache built once per session by ``tests/conftest.py``)."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app import export, resources
from ood_core import metrics
from ood_core.bootstrap import bootstrap_table

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
FIRST_RUN_TIMEOUT = 180  # the first run of the module loads the cache and fits the scorers
TIMEOUT = 90
TUNED_METHODS = "energy,react,line"
COMMAND = "python -m precompute --model demo-cnn --id demo-mnist --ood val-outliers:demo-mnist"


# -- pure helpers ------------------------------------------------------------------------------

def figures(fpr: float) -> SimpleNamespace:
    """OODMetrics-like figures with FPR95 ``fpr`` (in %)."""
    return SimpleNamespace(fpr95=fpr / 100, fpr95_ood_positive=fpr / 200, auroc=1 - fpr / 200,
                           aupr_in=0.9, aupr_out=0.9)


def result(average: float, per_set: dict[str, float], degenerate: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(average=figures(average), metrics={k: figures(v) for k, v in per_set.items()},
                           degenerate=degenerate, id_accuracy=0.99, hparams={})


def small_table() -> dict[str, SimpleNamespace]:
    """Three methods on two sets; "collapsed" has the lowest figures but is degenerate."""
    return {"msp": result(40.0, {"near": 60.0, "far": 20.0}),
            "line": result(30.0, {"near": 50.0, "far": 10.0}),
            "knn": result(35.0, {"near": 45.0, "far": 25.0}),
            "collapsed": result(0.0, {"near": 0.0, "far": 0.0}, ("head at chance",))}


def test_summary_names_the_best_method_per_set_and_the_hardest_set():
    first, second = export.summary_lines(small_table(), ["near", "far"], titles={"line": "LINe", "knn": "KNN"})
    assert "**LINe** (30.0 %)" in first  # the degenerate row is not ranked
    assert "near: KNN (45.0 %)" in first and "far: LINe (10.0 %)" in first
    assert "collapsed" not in first
    # mean FPR95 over the ranked methods: near (60+50+45)/3 = 51.7, far 18.3
    assert second.startswith("**Hardest OOD set**: near (mean FPR95 51.7 % over the 3 methods ranked)")


def test_summary_reads_the_fpr95_the_table_shows():
    first, _ = export.summary_lines(small_table(), ["near", "far"], ood_positive=True)
    assert "(FPR95 (OOD+), lower is better): **line** (15.0 %)" in first


def test_summary_says_how_far_tuning_moved_each_method():
    tuned = small_table()
    defaults = {**tuned, "line": result(42.0, {"near": 70.0, "far": 14.0}),
                "knn": result(33.0, {"near": 40.0, "far": 26.0})}
    changed = {"line": {"delta": 2.0}, "knn": {"k": 1}, "msp": {}, "collapsed": {}}
    lines = export.summary_lines(tuned, ["near", "far"], titles={"line": "LINe", "knn": "KNN"}, defaults=defaults,
                                 changed=changed)
    assert lines[1].endswith("Tuning changed LINe's average FPR95 by -12.0 pt, KNN's by +2.0 pt; "
                             "2 methods kept their defaults.")
    unchanged = export.summary_lines(tuned, ["near", "far"], defaults=tuned, changed={})
    assert unchanged[1].endswith("Tuning kept the defaults of every method shown (4 methods).")


def test_summary_with_every_method_degenerate():
    lines = export.summary_lines({"collapsed": small_table()["collapsed"]}, ["near", "far"])
    assert lines == [f"No method can be ranked: every setting shown is degenerate ({export.DEGENERATE_MARK})."]


def test_exports_of_a_tuned_table_add_the_chosen_column_only():
    results = {m: r for m, r in small_table().items() if m != "collapsed"}
    frame = export.metrics_table(results, ["near", "far"])
    chosen = {"msp": "defaults (nothing to tune)", "line": "delta=2, p_a=50", "knn": "k=1"}
    plain_csv, tuned_csv = export.to_csv(frame), export.to_csv(frame, chosen)
    assert tuned_csv.splitlines()[0] == plain_csv.splitlines()[0] + ",chosen"
    line_near = tuned_csv.splitlines()[4]  # long CSV: msp near/far/average, then line
    assert line_near.startswith("line,near,") and line_near.endswith(',"delta=2, p_a=50"')
    markdown = export.to_markdown(frame, chosen)
    assert markdown.splitlines()[0].endswith(f"| {export.CHOSEN_LABEL} |")
    assert "| k=1 |" in markdown and export.CHOSEN_LABEL not in export.to_markdown(frame)
    latex = export.to_latex(frame, chosen)
    assert r"delta=2, p\_a=50" in latex and "chosen" not in export.to_latex(frame)


def test_interval_table_marks_the_best_and_the_tied():
    gen = torch.Generator().manual_seed(0)
    id_scores = torch.randn(400, generator=gen) + 2
    shifts = {"strong": 0.0, "close": 0.05, "weak": 1.8}
    ood = {name: {"a": torch.randn(300, generator=gen) + shift} for name, shift in shifts.items()}
    scores = {name: id_scores + 0.01 * torch.randn(400, generator=gen) for name in shifts}
    results = {name: SimpleNamespace(id_scores=scores[name], ood_scores=ood[name],
                                     metrics={"a": metrics.evaluate(scores[name], ood[name]["a"])},
                                     id_accuracy=0.9, degenerate=())
               for name in shifts}
    for r in results.values():
        r.average = r.metrics["a"]
    table = bootstrap_table({m: (r.id_scores, r.ood_scores) for m, r in results.items()}, n_boot=200)
    frame = export.interval_table(results, ["a"], table)
    best = table.comparisons["average"]["fpr95"].best
    cell = frame.loc[best, ("average", "FPR95 ↓")]
    assert export.is_best_cell(cell) and cell.count("[") == 1
    assert frame.loc["weak", ("", "ID acc.")] == "90.0"  # one decimal, as every rate
    point = 100 * results[best].average.fpr95
    assert cell.startswith(f"{point:.1f}{export.BEST_MARK} [")
    weak = frame.loc["weak", ("a", "AUROC ↑")]
    assert not export.is_best_cell(weak) and export.TIED_MARK not in weak  # clearly worse: no mark
    marked = [frame.loc[m, ("a", "FPR95 ↓")] for m in results if m != best]
    assert any(export.TIED_MARK in c for c in marked)  # "close" is within resampling noise of "strong"
    assert "≈" in export.interval_legend(table) and "200 resamples" in export.interval_legend(table)


def test_validation_outliers_are_never_offered_as_a_test_set():
    configs = {"m": {"cifar10": ["train", "val", "test"], "isun": ["test"], "val-outliers:cifar10": ["test"]}}
    assert resources.ood_datasets(configs, "m", "cifar10") == ["isun"]


def test_tuning_progress_names_the_method_and_counts_its_settings(monkeypatch):
    """One bar over the methods not tuned yet: "tuning LINe: 2 of 3 settings"; gone at the end."""
    from app.views import compare

    seen: list = []

    class Bar:
        def progress(self, value: float, text: str = "") -> None:
            seen.append((round(value, 3), text))

        def empty(self) -> None:
            seen.append("empty")

    def tuned_method(bench, method, protocol, on_point=None):
        if method != "energy":  # energy is cached: its tuning does not run again
            for _ in range(3):
                on_point()
        return f"tuned {method}"

    monkeypatch.setattr(compare.st, "progress", lambda value, text="": Bar())
    monkeypatch.setattr(resources, "is_tuned", lambda bench, method, protocol: method == "energy")
    monkeypatch.setattr(resources, "tuning_size", lambda bench, method: 3)
    monkeypatch.setattr(resources, "method_title", {"energy": "Energy", "line": "LINe", "dice": "DICE"}.get)
    monkeypatch.setattr(resources, "tuned_method", tuned_method)
    tuned, failed = compare._tune(None, ["energy", "line", "dice"], None)
    assert tuned == {m: f"tuned {m}" for m in ("energy", "line", "dice")} and not failed
    assert seen == [(0.167, "tuning LINe: 1 of 3 settings"), (0.333, "tuning LINe: 2 of 3 settings"),
                    (0.5, "tuning LINe: 3 of 3 settings"), (0.667, "tuning DICE: 1 of 3 settings"),
                    (0.833, "tuning DICE: 2 of 3 settings"), (1.0, "tuning DICE: 3 of 3 settings"), "empty"]


# -- the page ----------------------------------------------------------------------------------


def make_app(**query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at


def run(at: AppTest) -> AppTest:
    at.run(timeout=FIRST_RUN_TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def query(at: AppTest, key: str) -> str | None:
    value = at.query_params.get(key)
    return value[0] if isinstance(value, list) else value


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_tuned_view_shows_tuned_figures_the_chosen_settings_and_the_protocol(demo_app):
    at = run(make_app(methods=TUNED_METHODS))
    assert not at.error, texts(at.error)
    before = at.dataframe[0].value
    assert export.CHOSEN_LABEL not in before.columns
    at.segmented_control(key="compare_mode").set_value("tuned")
    run(at)
    assert not at.error and not at.warning, texts(at.error) + texts(at.warning)
    assert query(at, "mode") == "tuned"
    after = at.dataframe[0].value
    assert list(after.index) == list(before.index) and export.CHOSEN_LABEL in after.columns
    fpr = [c for c in before.columns if "FPR95" in str(c)]
    for label in after.index:
        chosen = after.loc[label, export.CHOSEN_LABEL]
        same = np.allclose(before.loc[label, fpr].to_numpy(float), after.loc[label, fpr].to_numpy(float))
        assert chosen.startswith("defaults") == same, (label, chosen)
        assert chosen.startswith("defaults") or "=" in chosen
    captions = texts(at.caption)
    assert "Hyperparameters tuned on demo-mnist val vs val-outliers:demo-mnist (no test set read)" in captions
    assert "oracle" not in " ".join(str(i) for i in after.index).lower()
    summary = texts(at.markdown)
    assert "**Best on average**" in summary and "**Hardest OOD set**" in summary
    assert "Tuning changed" in summary or "Tuning kept the defaults" in summary
    assert "settings" not in texts(at.get("progress"))  # the bar is gone once tuning is done


def test_intervals_show_brackets_marks_and_the_legend(demo_app):
    at = run(make_app(methods="energy,msp,knn", ci="on"))
    assert at.toggle(key="compare_ci").value is True
    table = at.dataframe[0].value
    cells = [c for c in table.columns if "FPR95" in str(c) or "AUROC" in str(c)]
    assert cells and all(" [" in str(table.loc[i, c]) for i in table.index for c in cells)
    assert all(sum(export.is_best_cell(v) for v in table[c]) == 1 for c in cells)
    legend = texts(at.caption)
    assert "95 % bootstrap intervals" in legend and f"{export.TIED_MARK} not significantly different" in legend
    assert at.toggle(key="ood_positive").disabled
    at.toggle(key="compare_ci").set_value(False)
    run(at)
    assert query(at, "ci") is None
    assert np.issubdtype(at.dataframe[0].value.dtypes.iloc[0], np.floating)


def test_the_two_controls_round_trip_through_the_url(demo_app):
    at = run(make_app(methods="energy", mode="tuned", ci="on"))
    assert at.segmented_control(key="compare_mode").value == "tuned"
    assert at.toggle(key="compare_ci").value is True
    assert query(at, "mode") == "tuned" and query(at, "ci") == "on"
    at.segmented_control(key="compare_mode").set_value("defaults")
    run(at)
    assert query(at, "mode") is None and query(at, "ci") == "on"
    bad = run(make_app(methods="energy", mode="oracle"))
    assert bad.segmented_control(key="compare_mode").value == "defaults"
    assert "Ignored mode=oracle" in texts(bad.warning)


def test_a_cache_without_validation_outliers_names_the_command(demo_app, tmp_path, monkeypatch):
    """A non-demo cache (the demo, treated as one) lacking ``val-outliers:<id>``: the tuned view
    says which command builds it and shows the defaults, no traceback."""
    import streamlit as st

    root = tmp_path / "cache"
    shutil.copytree(demo_app, root, ignore=lambda folder, names: [n for n in names if n.startswith("val-outliers")])
    monkeypatch.setenv("OOD_LENS_CACHE", str(root))
    monkeypatch.setattr(resources, "builds_on_demand", lambda model: False)
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = run(make_app(methods="energy,react", mode="tuned"))
        warning = texts(at.warning)
        assert COMMAND in warning and "Showing the published defaults" in warning, warning
        assert not at.error, texts(at.error)
        assert export.CHOSEN_LABEL not in at.dataframe[0].value.columns
        assert not list(root.glob("*/val-outliers*"))  # nothing was built
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()

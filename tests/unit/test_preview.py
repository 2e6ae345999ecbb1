"""The preview's subsample (ood_core.preview): which rows, how many, always the same ones."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ood_core import preview
from ood_core.benchmark import evaluate_method
from ood_core.synthetic import OODSet, SyntheticSettings, make_synthetic


def _labels(counts: list[int]) -> torch.Tensor:
    """Labels with ``counts[c]`` rows of class c, interleaved (as a test split often is)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


@pytest.fixture(scope="module")
def small_bench():
    settings = SyntheticSettings.toy(classes=6, id_test=600,
                                     ood=(OODSet("a", 300, "far"), OODSet("b", 90, "near"), OODSet("c", 400, "origin")))
    return make_synthetic(settings)


def test_split_budget_halves_and_spreads_evenly():
    assert preview.split_budget(50_000, dict.fromkeys("abcd", 10_000), 2_000) == (1_000, dict.fromkeys("abcd", 250))
    # a small OOD set gives its unused share to the other sets; OOD short of rows gives them to ID
    assert preview.split_budget(50_000, {"a": 10_000, "b": 100, "c": 10_000}, 2_000) == (1_000,
                                                                                          {"a": 450, "b": 100, "c": 450})
    assert preview.split_budget(50_000, {"a": 300}, 2_000) == (1_700, {"a": 300})
    assert preview.split_budget(400, {"a": 10_000}, 2_000) == (400, {"a": 1_600})
    assert preview.split_budget(10, {"a": 5, "b": 7}, 2_000) == (10, {"a": 5, "b": 7})  # everything
    # an odd remainder across sets: totals always add up to the budget
    ids, oods = preview.split_budget(50_000, dict.fromkeys("abc", 10_000), 1_001)
    assert ids + sum(oods.values()) == 1_001 and max(oods.values()) - min(oods.values()) <= 1


def test_stratified_rows_follow_the_class_shares():
    counts = [500, 300, 150, 50]  # 1,000 rows, 10 % taken: 50 / 30 / 15 / 5 per class
    labels = _labels(counts)
    rows = preview.stratified_rows(labels, 100, torch.Generator().manual_seed(0))
    assert rows.dtype == torch.long and len(rows) == 100
    assert torch.equal(rows, rows.sort().values) and len(rows.unique()) == 100  # sorted, no duplicates
    taken = torch.bincount(labels[rows], minlength=len(counts)).tolist()
    assert taken == [n // 10 for n in counts]


def test_stratified_rows_with_fewer_rows_than_classes_take_one_per_class_at_most():
    labels = _labels([5] * 40)  # 40 classes, 200 rows
    rows = preview.stratified_rows(labels, 25, torch.Generator().manual_seed(0))
    taken = torch.bincount(labels[rows], minlength=40)
    assert len(rows) == 25 and int(taken.max()) == 1 and int((taken == 1).sum()) == 25
    # largest remainder with K·share exact: every class gets exactly its share
    rows = preview.stratified_rows(labels, 80, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[rows], minlength=40).tolist() == [2] * 40


def test_stratified_rows_of_every_row_and_of_unknown_labels():
    labels = torch.tensor([-1, 0, 0, 1, -1, 1, 1, 0])
    assert torch.equal(preview.stratified_rows(labels, 8, torch.Generator()), torch.arange(8))
    rows = preview.stratified_rows(labels, 4, torch.Generator().manual_seed(3))
    assert sorted(torch.bincount(labels[rows] + 1).tolist()) == [1, 1, 2]  # -1 is a stratum: shares 2/3/3 of 8
    with pytest.raises(ValueError):
        preview.stratified_rows(labels, 9, torch.Generator())


def test_spread_rows_one_per_block():
    rows = preview.spread_rows(10_000, 250, torch.Generator().manual_seed(0))
    assert len(rows) == 250 and torch.equal(rows, rows.sort().values) and len(rows.unique()) == 250
    assert torch.equal(rows // 40, torch.arange(250))  # one row in each block of 40
    assert torch.equal(preview.spread_rows(7, 7, torch.Generator()), torch.arange(7))
    assert len(preview.spread_rows(7, 0, torch.Generator())) == 0
    uneven = preview.spread_rows(10, 3, torch.Generator().manual_seed(5))  # blocks [0,3) [3,6) [6,10)
    assert [0 <= uneven[0] < 3, 3 <= uneven[1] < 6, 6 <= uneven[2] < 10] == [True] * 3


def test_choose_subsample_is_fixed_across_calls_and_covers_every_ood_set():
    labels = _labels([120] * 10)
    totals = {"far": 5_000, "near": 3_000, "tiny": 40}
    first = preview.choose_subsample(labels, totals, budget=600)
    again = preview.choose_subsample(labels.clone(), dict(totals), budget=600)
    assert torch.equal(first.id_rows, again.id_rows)
    assert all(torch.equal(first.ood_rows[n], again.ood_rows[n]) for n in totals)
    assert set(first.ood_rows) == set(totals) and all(len(r) > 0 for r in first.ood_rows.values())
    assert len(first.id_rows) == 300 and {n: len(r) for n, r in first.ood_rows.items()} == {
        "far": 130, "near": 130, "tiny": 40}
    assert first.rows() == 600 and first.rows(["tiny"]) == 340
    for name, rows in first.ood_rows.items():
        assert torch.equal(rows, rows.sort().values) and len(rows.unique()) == len(rows)
        assert int(rows.max()) < totals[name]
    assert torch.bincount(labels[first.id_rows]).tolist() == [30] * 10
    other = preview.choose_subsample(labels, totals, budget=600, seed=1)
    assert not torch.equal(first.id_rows, other.id_rows)  # the seed chooses the rows


def test_preview_benchmark_is_the_rows_it_names_and_shares_the_fitted_scorers(small_bench):
    sub_rows = preview.benchmark_subsample(small_bench, budget=200)
    sub = preview.preview_benchmark(small_bench, sub_rows)
    assert len(sub.id_test) == len(sub_rows.id_rows) == 100
    assert sorted(len(f) for f in sub.ood.values()) == [33, 33, 34] and set(sub.ood) == {"a", "b", "c"}
    assert torch.equal(sub.id_test.penultimate, small_bench.id_test.penultimate[sub_rows.id_rows])
    assert torch.equal(sub.id_test.labels, small_bench.id_test.labels[sub_rows.id_rows])
    assert torch.equal(sub.id_test.odin_logits, small_bench.id_test.odin_logits[:, sub_rows.id_rows])
    assert torch.equal(sub.ood["b"].logits, small_bench.ood["b"].logits[sub_rows.ood_rows["b"]])
    assert sub.fingerprint != small_bench.fingerprint
    assert sub.scorer("energy") is small_bench.scorer("energy")  # fitted once, for both
    # the preview's figures are the method's on exactly those rows
    ref_bench = dataclasses.replace(small_bench, id_test=small_bench.id_test.subset(sub_rows.id_rows),
                                    ood={n: f.subset(sub_rows.ood_rows[n]) for n, f in small_bench.ood.items()},
                                    _scorers={})
    for method, hparams in (("line", {"p_a": 70.0}), ("react", None), ("knn", {"k": 5})):
        got, want = evaluate_method(sub, method, hparams), evaluate_method(ref_bench, method, hparams)
        torch.testing.assert_close(got.id_scores, want.id_scores)
        for name in got.metrics:
            assert got.metrics[name].auroc == pytest.approx(want.metrics[name].auroc, abs=1e-6)
            assert got.metrics[name].fpr95 == pytest.approx(want.metrics[name].fpr95, abs=1e-6)


def test_needs_preview_by_cost_and_device(small_bench, monkeypatch):
    macs = preview.rescore_macs(small_bench)
    k, d = small_bench.head_weight.shape
    assert macs == (600 + 300 + 90 + 400) * k * d
    assert preview.rescore_macs(small_bench, ["b"]) == (600 + 90) * k * d
    assert not preview.needs_preview(small_bench)  # far below the declared threshold
    assert preview.needs_preview(small_bench, above=macs - 1)
    assert not preview.needs_preview(small_bench, ["b"], above=macs - 1)
    monkeypatch.setattr(preview, "PREVIEW_ABOVE_MACS", macs - 1)
    assert preview.needs_preview(small_bench)
    on_gpu = dataclasses.replace(small_bench, id_test=dataclasses.replace(
        small_bench.id_test, logits=torch.empty(0, device="meta")))
    assert not preview.needs_preview(on_gpu, above=0)  # not on the CPU: never previewed


def test_labels_say_what_is_shown():
    labels = _labels([50] * 1_000)  # 50,000 ID rows, 1,000 classes
    sub = preview.choose_subsample(labels, dict.fromkeys(("inaturalist", "sun", "places", "textures"), 10_000),
                                   budget=2_000)
    assert preview.preview_label(sub) == ("Preview on a stratified 2,000-row subsample (1,000 of 50,000 ID, "
                                          "250 of 10,000 per OOD set); exact figures follow")
    assert preview.preview_label(sub, ["sun"]) == ("Preview on a stratified 1,250-row subsample (1,000 of 50,000 ID, "
                                                   "250 of 10,000 sun); exact figures follow")


def test_exact_label_counts_the_shown_rows(small_bench):
    assert preview.exact_label(small_bench) == "Exact: all 1,390 rows"
    assert preview.exact_label(small_bench, ["b"]) == "Exact: all 690 rows"


def test_bench_preview_helpers_measure_what_they_name(small_bench):
    """bench/bench_preview.py cannot rot: its byte count and its slider moves on a tiny benchmark."""
    from bench import bench_preview

    held = bench_preview.tensor_bytes(small_bench)
    # the ID test and OOD sets are views of one block: counted once, with the ID validation rows
    rows = 600 + 300 + 90 + 400 + len(small_bench.id_val)
    assert held["penultimate"] == rows * small_bench.head_weight.shape[1] * 4
    assert held["logits"] == rows * small_bench.head_weight.shape[0] * 4
    sub = preview.preview_benchmark(small_bench, preview.benchmark_subsample(small_bench, budget=100))
    timing = bench_preview.time_moves(sub, "react", moves=3, budget=100)
    assert not timing.error and len(timing.preview_ms) == 3 and timing.param is not None
    bench_preview.time_exact(small_bench, timing)
    assert timing.exact_ms is not None and timing.exact_ms > 0

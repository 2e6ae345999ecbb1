"""Bootstrap intervals and paired comparisons (ood_core.bootstrap) against a plain loop over
the same resamples with sklearn's roc_auc_score and ood_core.metrics.fpr_at_95_tpr."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ood_core import bootstrap, metrics
from ood_core.bootstrap import (AVERAGE, Resamples, bootstrap_table, make_resamples, paired_difference,
                                percentile_interval, replicate_metrics, replicate_metrics_many)
from ood_core.metrics import NonFiniteScoresError
from ood_core.registry import OODLensError


def loop_metrics(id_scores: np.ndarray, ood_scores: np.ndarray, id_index: np.ndarray,
                 ood_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one sklearn / metrics call per replicate on the resampled scores."""
    fpr, auroc = [], []
    for rows_id, rows_ood in zip(id_index, ood_index):
        ids, oods = id_scores[rows_id], ood_scores[rows_ood]
        fpr.append(metrics.fpr_at_95_tpr(ids, oods))
        auroc.append(roc_auc_score(np.r_[np.ones(ids.size), np.zeros(oods.size)], np.r_[ids, oods]))
    return np.array(fpr), np.array(auroc)


def scores(n: int, m: int, seed: int, *, ties: bool = False, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    id_scores, ood_scores = rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, m)
    if ties:  # integer-rounded: heavy ties within ID, within OOD and across, also at the threshold
        id_scores, ood_scores = np.round(id_scores * 2), np.round(ood_scores * 2)
    return id_scores, ood_scores


def table_scores(methods: dict[str, tuple[float, bool]], n: int, sizes: dict[str, int],
                 seed: int = 0) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """{method: (ID scores, {set: OOD scores})}, ID ~ N(shift, 1), OOD ~ N(0, 1), optionally rounded."""
    rng = np.random.default_rng(seed)
    out = {}
    for method, (shift, ties) in methods.items():
        ids = rng.normal(shift, 1.0, n)
        oods = {name: rng.normal(0.0, 1.0, m) for name, m in sizes.items()}
        if ties:
            ids, oods = np.round(ids * 2), {name: np.round(s * 2) for name, s in oods.items()}
        out[method] = (ids, oods)
    return out


@pytest.mark.parametrize("n, m, ties", [(20, 15, True), (20, 40, False), (37, 50, False), (37, 23, True),
                                        (200, 300, True), (1, 3, False), (2, 2, True)])
def test_replicates_match_the_loop(n: int, m: int, ties: bool) -> None:
    id_scores, ood_scores = scores(n, m, seed=n + m, ties=ties)
    resamples = make_resamples(n, {"ood": m}, n_boot=100, seed=7)
    fpr, auroc = replicate_metrics(id_scores, ood_scores, *resamples.pair("ood"))
    loop_fpr, loop_auroc = loop_metrics(id_scores, ood_scores, *resamples.pair("ood"))
    assert fpr.shape == auroc.shape == (100,) and fpr.dtype == auroc.dtype == np.float64
    np.testing.assert_allclose(fpr, loop_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(auroc, loop_auroc, rtol=0, atol=1e-12)
    for ours, theirs in ((fpr, loop_fpr), (auroc, loop_auroc)):
        np.testing.assert_allclose(percentile_interval(ours), np.quantile(theirs, [0.025, 0.975]), rtol=0, atol=1e-12)


def test_ties_at_the_threshold_and_all_equal() -> None:
    # every ID score equal: the threshold accepts all of them, every OOD score ≥ it is accepted
    id_scores, ood_scores = np.ones(20), np.array([0.0, 1.0, 1.0, 2.0, 0.5])
    resamples = make_resamples(20, {"ood": 5}, n_boot=60, seed=1)
    fpr, auroc = replicate_metrics(id_scores, ood_scores, *resamples.pair("ood"))
    loop_fpr, loop_auroc = loop_metrics(id_scores, ood_scores, *resamples.pair("ood"))
    np.testing.assert_allclose(fpr, loop_fpr, atol=1e-12)
    np.testing.assert_allclose(auroc, loop_auroc, atol=1e-12)
    # a block of ties straddling place n − ⌈0.95 n⌉ (n = 37: place 1)
    id_scores = np.r_[np.zeros(3), np.arange(1.0, 35.0)]
    ood_scores = np.r_[np.zeros(10), np.full(5, 1.0), -np.ones(5)]
    resamples = make_resamples(37, {"ood": 20}, n_boot=80, seed=2)
    np.testing.assert_allclose(replicate_metrics(id_scores, ood_scores, *resamples.pair("ood")),
                               loop_metrics(id_scores, ood_scores, *resamples.pair("ood")), atol=1e-12)


def test_unpacked_path_and_chunking_give_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    id_scores, ood_scores = scores(64, 90, seed=3, ties=True)
    resamples = make_resamples(64, {"ood": 90}, n_boot=100, seed=3)
    reference = replicate_metrics(id_scores, ood_scores, *resamples.pair("ood"))
    one_row_chunks = replicate_metrics(id_scores, ood_scores, *resamples.pair("ood"), chunk_bytes=1)
    monkeypatch.setattr(bootstrap, "_PACK_LIMIT", 0.0)  # two dot products instead of the packed table
    unpacked = replicate_metrics(id_scores, ood_scores, *resamples.pair("ood"))
    for other in (one_row_chunks, unpacked):
        np.testing.assert_array_equal(other[0], reference[0])
        np.testing.assert_array_equal(other[1], reference[1])
    np.testing.assert_allclose(reference, loop_metrics(id_scores, ood_scores, *resamples.pair("ood")), atol=1e-12)


def test_many_sets_share_the_id_resample() -> None:
    id_scores, _ = scores(40, 1, seed=4, ties=True)
    oods = {"a": scores(1, 30, seed=5, ties=True)[1], "b": scores(1, 55, seed=6)[1]}
    resamples = make_resamples(40, {"a": 30, "b": 55}, n_boot=80, seed=11)
    many = replicate_metrics_many(torch.from_numpy(id_scores).float(), oods, resamples)  # tensors accepted
    for name, ood in oods.items():
        np.testing.assert_allclose(many[name], loop_metrics(id_scores.astype(np.float32), ood,
                                                            *resamples.pair(name)), atol=1e-12)


def test_resamples_are_reproducible_in_a_plain_loop() -> None:
    resamples = make_resamples(37, {"x": 20, "y": 70_000}, n_boot=5, seed=9)
    rng = np.random.default_rng(9)
    np.testing.assert_array_equal(resamples.id_index, rng.integers(0, 37, (5, 37), dtype=np.uint16))
    np.testing.assert_array_equal(resamples.ood_index["x"], rng.integers(0, 20, (5, 20), dtype=np.uint16))
    np.testing.assert_array_equal(resamples.ood_index["y"], rng.integers(0, 70_000, (5, 70_000), dtype=np.uint32))
    assert resamples.n_boot == 5 and resamples.n_id == 37 and resamples.ood_sizes == {"x": 20, "y": 70_000}
    assert not resamples.id_index.flags.writeable


def test_table_matches_the_loop_including_the_average() -> None:
    sizes = {"near": 25, "far": 31, "tied": 18}
    data = table_scores({"good": (2.0, False), "tied": (1.0, True), "weak": (0.3, False)}, 37, sizes, seed=1)
    table = bootstrap_table(data, n_boot=60, seed=5, level=0.9)
    resamples = make_resamples(37, sizes, n_boot=60, seed=5)
    assert table.methods == ("good", "tied", "weak") and table.ood_sets == tuple(sizes)
    assert table.groups == (*sizes, AVERAGE) and table.n_boot == 60 and table.seed == 5
    loops = {method: {name: loop_metrics(ids, oods[name], *resamples.pair(name)) for name in sizes}
             for method, (ids, oods) in data.items()}
    for method, (ids, oods) in data.items():
        full = metrics.evaluate_many(ids, oods)
        # the average: per replicate, the mean over sets of the metric on (shared ID draw, set's OOD draw)
        loops[method][AVERAGE] = tuple(np.mean([loops[method][name][i] for name in sizes], axis=0) for i in (0, 1))
        points = {name: (full[name].fpr95, full[name].auroc) for name in sizes}
        points[AVERAGE] = tuple(np.mean([points[name][i] for name in sizes]) for i in (0, 1))
        for group in table.groups:
            for i, metric in enumerate(("fpr95", "auroc")):
                np.testing.assert_allclose(table.replicates[method][group][metric], loops[method][group][i], atol=1e-12)
                interval = getattr(table.intervals[method][group], metric)
                assert interval.point == pytest.approx(points[group][i], abs=1e-12)
                np.testing.assert_allclose((interval.lo, interval.hi),
                                           np.quantile(loops[method][group][i], [0.05, 0.95]), atol=1e-12)
    # the comparison: the best point estimate, differences of the replicates to the best's
    for group in table.groups:
        for i, metric in enumerate(("fpr95", "auroc")):
            comparison = table.comparisons[group][metric]
            points = {m: getattr(table.intervals[m][group], metric).point for m in table.methods}
            best = min(points, key=points.get) if metric == "fpr95" else max(points, key=points.get)
            assert comparison.best == best
            for method in table.methods:
                diff = loops[method][group][i] - loops[best][group][i]
                lo, hi = np.quantile(diff, [0.05, 0.95])
                got = comparison.differences[method]
                assert got.point == pytest.approx(points[method] - points[best], abs=1e-12)
                assert (got.lo, got.hi) == pytest.approx((lo, hi), abs=1e-12)
                assert got.significant == bool(got.lo > 0 or got.hi < 0)


def test_a_method_against_itself_is_never_significant() -> None:
    data = table_scores({"a": (1.0, True), "b": (1.2, False)}, 50, {"s1": 40, "s2": 60}, seed=2)
    data["a copy"] = (data["a"][0].copy(), {k: v.copy() for k, v in data["a"][1].items()})
    table = bootstrap_table(data, n_boot=200, seed=0)
    for group in table.groups:
        for metric in ("fpr95", "auroc"):
            assert not np.any(table.replicates["a"][group][metric] - table.replicates["a copy"][group][metric])
            comparison = table.comparisons[group][metric]
            own = comparison.differences[comparison.best]
            assert (own.point, own.lo, own.hi, own.significant) == (0.0, 0.0, 0.0, False)
    resamples = make_resamples(50, {"s1": 40}, n_boot=200, seed=0)
    ids, oods = data["a"]
    same = paired_difference(ids, oods["s1"], ids.copy(), oods["s1"].copy(), *resamples.pair("s1"))
    for diff in (same.fpr95, same.auroc):
        assert (diff.point, diff.lo, diff.hi, diff.significant) == (0.0, 0.0, 0.0, False)


def test_clearly_better_is_significant_and_near_identical_is_not() -> None:
    rng = np.random.default_rng(3)
    n, m = 2000, 2000
    base_id, base_ood = rng.normal(0.0, 1.0, n), rng.normal(0.0, 1.0, m)
    good = (base_id + 2.5, base_ood)  # well separated
    weak = (base_id + 0.5, base_ood + 0.2 * rng.normal(size=m))
    close = (good[0] + 1e-3 * rng.normal(size=n), good[1] + 1e-3 * rng.normal(size=m))  # tiny noise
    resamples = make_resamples(n, {"ood": m}, n_boot=400, seed=4)
    better = paired_difference(*weak, *good, *resamples.pair("ood"))
    assert better.fpr95.significant and better.fpr95.lo > 0  # weak accepts more OOD
    assert better.auroc.significant and better.auroc.hi < 0  # weak ranks worse
    noise = paired_difference(*close, *good, *resamples.pair("ood"))
    assert abs(noise.fpr95.point) < 0.01 and abs(noise.auroc.point) < 1e-3
    assert not noise.fpr95.significant and not noise.auroc.significant
    assert noise.fpr95.lo <= 0 <= noise.fpr95.hi and noise.auroc.lo <= 0 <= noise.auroc.hi

    table = bootstrap_table({"weak": (weak[0], {"ood": weak[1]}), "good": (good[0], {"ood": good[1]}),
                             "close": (close[0], {"ood": close[1]})}, n_boot=400, seed=4)
    for group in ("ood", AVERAGE):
        for metric in ("fpr95", "auroc"):
            comparison = table.comparisons[group][metric]
            assert comparison.best in ("good", "close")
            assert comparison.differences["weak"].significant
            other = "close" if comparison.best == "good" else "good"
            assert not comparison.differences[other].significant


def test_determinism_and_seed() -> None:
    data = table_scores({"a": (1.0, False), "b": (0.8, True)}, 60, {"s": 45, "t": 30}, seed=6)
    first = bootstrap_table(data, n_boot=150, seed=12).as_dict()
    assert bootstrap_table(data, n_boot=150, seed=12).as_dict() == first
    other = bootstrap_table(data, n_boot=150, seed=13).as_dict()
    assert other != first
    intervals = [(first["intervals"][m][g][k], other["intervals"][m][g][k])
                 for m in ("a", "b") for g in ("s", "t", AVERAGE) for k in ("fpr95", "auroc")]
    assert all(a["point"] == b["point"] for a, b in intervals)  # the point estimates do not resample
    assert any((a["lo"], a["hi"]) != (b["lo"], b["hi"]) for a, b in intervals)
    # explicit resamples: the seed argument is ignored, the resamples' are used
    resamples = make_resamples(60, {"s": 45, "t": 30}, n_boot=150, seed=12)
    assert bootstrap_table(data, resamples=resamples, seed=99).as_dict() == first


def test_exclude_from_best_and_json() -> None:
    data = table_scores({"degenerate": (3.0, True), "good": (1.5, False), "weak": (0.5, False)}, 40,
                        {"s": 35, "t": 25}, seed=8)
    table = bootstrap_table(data, n_boot=100, seed=0)
    assert table.comparisons["s"]["auroc"].best == "degenerate"
    kept = bootstrap_table(data, n_boot=100, seed=0, exclude_from_best={"degenerate"})
    assert kept.excluded_from_best == ("degenerate",)
    for group in kept.groups:
        for metric in ("fpr95", "auroc"):
            comparison = kept.comparisons[group][metric]
            assert comparison.best == "good"
            assert set(comparison.differences) == {"degenerate", "good", "weak"}  # excluded ones still compared
    none = bootstrap_table(data, n_boot=100, seed=0, exclude_from_best=["degenerate", "good", "weak"])
    assert none.comparisons[AVERAGE]["fpr95"].best is None and not none.comparisons[AVERAGE]["fpr95"].differences
    payload = json.loads(json.dumps(kept.as_dict(), allow_nan=False))
    assert payload["comparisons"][AVERAGE]["auroc"]["best"] == "good"
    assert set(payload["intervals"]["weak"]) == {"s", "t", AVERAGE}
    assert set(payload["intervals"]["weak"]["s"]["fpr95"]) == {"point", "lo", "hi"}
    assert set(payload["comparisons"]["s"]["fpr95"]["differences"]["weak"]) == {"point", "lo", "hi", "significant"}
    assert payload["level"] == 0.95 and payload["n_boot"] == 100 and payload["excluded_from_best"] == ["degenerate"]


def test_validation() -> None:
    ids, oods = np.arange(10.0), np.arange(5.0)
    resamples = make_resamples(10, {"o": 5}, n_boot=4, seed=0)
    with pytest.raises(NonFiniteScoresError):
        replicate_metrics(np.r_[ids[:-1], np.nan], oods, *resamples.pair("o"))
    with pytest.raises(NonFiniteScoresError):
        bootstrap_table({"a": (ids, {"o": np.r_[oods[:-1], np.inf]})}, n_boot=4)
    with pytest.raises(OODLensError, match="draws 10 indices"):
        replicate_metrics(ids[:9], oods, *resamples.pair("o"))
    with pytest.raises(OODLensError, match="replicates"):
        replicate_metrics(ids, oods, resamples.id_index, resamples.ood_index["o"][:3])
    with pytest.raises(OODLensError, match="outside"):
        replicate_metrics(ids, oods, resamples.id_index.astype(np.int64) - 1, resamples.ood_index["o"])
    with pytest.raises(OODLensError, match="same images"):
        paired_difference(ids, oods, ids[:9], oods, *resamples.pair("o"))
    with pytest.raises(OODLensError, match="has 9 ID scores"):
        bootstrap_table({"a": (ids, {"o": oods}), "b": (ids[:9], {"o": oods})}, n_boot=4)
    with pytest.raises(OODLensError, match="scores on 'o'"):
        bootstrap_table({"a": (ids, {"o": oods}), "b": (ids, {"o": oods[:4]})}, n_boot=4)
    with pytest.raises(OODLensError, match="OOD sets"):
        bootstrap_table({"a": (ids, {"o": oods}), "b": (ids, {"p": oods})}, n_boot=4)
    with pytest.raises(OODLensError, match="may not be named"):
        bootstrap_table({"a": (ids, {AVERAGE: oods})}, n_boot=4)
    with pytest.raises(OODLensError, match="unknown methods"):
        bootstrap_table({"a": (ids, {"o": oods})}, n_boot=4, exclude_from_best=["b"])
    with pytest.raises(OODLensError, match="the resamples draw"):
        bootstrap_table({"a": (ids[:9], {"o": oods})}, resamples=resamples)
    with pytest.raises(OODLensError, match="level"):
        bootstrap_table({"a": (ids, {"o": oods})}, n_boot=4, level=95)
    with pytest.raises(OODLensError, match="positive integer"):
        make_resamples(10, {"o": 5}, n_boot=0)
    with pytest.raises(OODLensError, match="no ID scores"):
        replicate_metrics(np.array([]), oods, resamples.id_index[:, :0], resamples.ood_index["o"])
    with pytest.raises(OODLensError, match="no resamples"):
        resamples.pair("missing")
    with pytest.raises(OODLensError, match="2-D integer"):
        Resamples(np.zeros((3, 4)), {})


def test_bench_smoke(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/bench_bootstrap.py at a tiny scale: it runs, the loop agrees, the JSON is complete."""
    from bench import bench_bootstrap

    tiny = bench_bootstrap.Scale("tiny", 30, {"a": 25, "b": 20}, methods=8, target_s=60.0, repeats=1,
                                 loop_replicates=10)
    out = tmp_path / "bootstrap.json"
    assert bench_bootstrap.main(["--replicates", "40", "--json", str(out)], scales={"tiny": tiny}) == 0
    printed = capsys.readouterr().out
    assert "PASS  tiny table" in printed and "near-identical pair" in printed
    payload = json.loads(out.read_text())
    result = payload["results"][0]
    assert result["max_abs_diff"] < 1e-12 and result["loop_replicates"] == 10 and result["n_boot"] == 40
    assert set(payload["tables"]["tiny"]["intervals"]) == {f"method-{k:02d}" for k in range(8)}
    assert "method-06" in result["excluded"]  # integer-rounded: collapsed scores, never 'best'

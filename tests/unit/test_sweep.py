"""ood_core.sweep: grids, validation-only selection, the oracle point, progress, errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest
import torch

from ood_core import metrics
from ood_core.registry import OODLensError
from ood_core.params import Param
from ood_core.records import FeatureSet, FitContext
from ood_core.scorers.base import Scorer
from ood_core.sweep import SweepError, grid_values, run_sweep


class CentreScorer(Scorer):
    """Toy method: score = -|h - centre| · scale (+ a no-op switch), on 1-D features; a
    ``flat`` below 0.5 clips every score to one value and breaks the head (a degenerate point,
    as LINe's or ReAct's smallest clip is on a real model)."""

    name: ClassVar[str] = "centre"
    needs: ClassVar[frozenset[str]] = frozenset({"penultimate"})
    params: ClassVar[tuple[Param, ...]] = (
        Param("centre", 0.0, "float", low=-2.0, high=2.0, step=0.5),
        Param("scale", 1.0, "float", low=0.5, high=2.0, step=0.5),
        Param("switch", False, "bool"),
        Param("flat", 1.0, "float", low=0.0, high=1.0, step=0.25),
    )

    def score(self, feats: FeatureSet, **hparams) -> torch.Tensor:
        values = self.resolve(hparams)
        if values["flat"] < 0.5:
            return torch.zeros(len(feats))
        return (-(feats.penultimate[:, 0] - values["centre"]).abs() * values["scale"]).float()

    def modified_logits(self, feats: FeatureSet, **hparams) -> torch.Tensor | None:
        if self.resolve(hparams)["flat"] < 0.5:  # every row predicts class 1
            return torch.tensor([[0.0, 1.0]]).expand(len(feats), 2)
        return None


def features(mean: float, n: int, seed: int) -> FeatureSet:
    gen = torch.Generator().manual_seed(seed)
    h = mean + torch.randn(n, 1, generator=gen)
    return FeatureSet(logits=torch.cat([h.abs() + 1, -h.abs()], 1), penultimate=h,
                      labels=torch.zeros(n, dtype=torch.long))


@dataclass
class ToyBench:
    id_val: FeatureSet
    id_test: FeatureSet
    ood: dict[str, FeatureSet]
    scorers: dict[str, Scorer] = field(default_factory=dict)

    def scorer(self, name: str) -> Scorer:
        return self.scorers.setdefault(name, CentreScorer().fit(FitContext(torch.eye(2), torch.zeros(2))))


@pytest.fixture()
def bench() -> ToyBench:
    # Validation OOD sits above ID, the test OOD sets below it: the two disagree on the
    # best centre, so selecting on validation and on test give different points.
    return ToyBench(id_val=features(0.0, 400, 0), id_test=features(0.0, 400, 1),
                    ood={"above": features(2.0, 300, 2), "below": features(-2.0, 300, 3),
                         "far-below": features(-3.0, 300, 4)})


def test_grid_values_kinds():
    assert grid_values(Param("b", False, "bool")) == (False, True)
    assert grid_values(Param("c", "a", "choice", choices=("a", "b"))) == ("a", "b")
    ints = grid_values(Param("k", 5, "int", low=1, high=10), count=4)
    assert ints == (1, 4, 7, 10)
    floats = grid_values(Param("p", 50.0, "float", low=10.0, high=90.0, step=10.0), count=5)
    assert floats == (10.0, 30.0, 50.0, 70.0, 90.0)
    logs = grid_values(Param("t", 1.0, "float", low=1.0, high=1000.0, log=True), count=4)
    np.testing.assert_allclose(logs, (1.0, 10.0, 100.0, 1000.0))


def test_best_is_chosen_on_validation_and_oracle_on_test(bench):
    centres = (-2.0, -1.0, 0.0, 1.0, 2.0)
    result = run_sweep(bench, "centre", {"centre": centres}, val_ood=bench.ood["above"],
                       val_ood_name="above", objective="auroc")
    assert result.test_oods == ("below", "far-below")
    scorer = bench.scorer("centre")
    # Recompute the validation AUROC at every point independently.
    expected_val = [metrics.auroc(scorer.score(bench.id_val, centre=c), scorer.score(bench.ood["above"], centre=c))
                    for c in centres]
    np.testing.assert_allclose(result.val_auroc, expected_val)
    assert result.best.params["centre"] == centres[int(np.argmax(expected_val))]
    expected_test = [np.mean([metrics.auroc(scorer.score(bench.id_test, centre=c), scorer.score(bench.ood[n], centre=c))
                              for n in ("below", "far-below")]) for c in centres]
    assert result.oracle.params["centre"] == centres[int(np.argmax(expected_test))]
    # The toy is built so that they disagree: validation pushes the centre down, test up.
    assert result.best.params["centre"] < 0 < result.oracle.params["centre"]
    assert result.best.test_auroc < result.oracle.test_auroc


def test_fpr95_objective_minimises(bench):
    result = run_sweep(bench, "centre", {"centre": (-2.0, 0.0, 2.0)}, val_ood=bench.ood["above"],
                       val_ood_name="above", objective="fpr95")
    assert result.val_fpr95[result.best_index] == result.val_fpr95.min()
    assert result.test_fpr95[result.oracle_index] == result.test_fpr95.min()


def test_two_axes_shape_and_progress(bench):
    calls: list[tuple[str, int, int]] = []
    result = run_sweep(bench, "centre", {"centre": (-1.0, 0.0, 1.0), "scale": (0.5, 1.0)},
                       val_ood=bench.ood["above"], val_ood_name="above",
                       on_progress=lambda d, done, total: calls.append((d, done, total)))
    assert result.val_fpr95.shape == (3, 2) == result.test_auroc.shape
    assert [c[1] for c in calls] == list(range(1, 7)) and {c[2] for c in calls} == {6}
    # scale does not change a ranking: every column of a row is identical.
    np.testing.assert_allclose(result.val_auroc[:, 0], result.val_auroc[:, 1])


def test_fixed_params_are_used(bench):
    result = run_sweep(bench, "centre", {"switch": (False, True)}, val_ood=bench.ood["above"],
                       val_ood_name="above", fixed={"centre": 1.5})
    assert all(p.params["centre"] == 1.5 for p in result.points)


def test_validation_set_must_not_be_a_test_set(bench):
    with pytest.raises(SweepError, match="also a test set"):
        run_sweep(bench, "centre", {"centre": (0.0,)}, val_ood=bench.ood["above"], val_ood_name="above",
                  test_oods=["above", "below"])
    assert issubclass(SweepError, OODLensError)


def test_unknown_axis_and_bad_arity(bench):
    with pytest.raises(SweepError, match="no hyperparameter"):
        run_sweep(bench, "centre", {"nope": (1,)}, val_ood=bench.ood["above"], val_ood_name="above")
    with pytest.raises(SweepError, match="one or two"):
        run_sweep(bench, "centre", {"centre": (0.0,), "scale": (1.0,), "switch": (True,)},
                  val_ood=bench.ood["above"], val_ood_name="above")


def test_degenerate_points_are_shown_and_never_selected(bench):
    """Found: a sweep over LINe's δ or ReAct's absolute clip picked the point that clips every
    unit (all scores equal: FPR95 0 under the strict ">" formula, head at chance) both on
    validation and as the oracle."""
    result = run_sweep(bench, "centre", {"flat": (0.0, 0.25, 1.0)}, val_ood=bench.ood["above"],
                       val_ood_name="above", objective="fpr95")
    assert result.val_fpr95[0] == 1.0 and result.test_fpr95[0] == 1.0  # all-equal scores accept every OOD
    assert result.degenerate.tolist() == [True, True, False]
    assert result.points[0].val_degenerate and result.points[0].test_degenerate
    assert any("collapsed" in r for r in result.points[0].val_degenerate)
    assert any("head at chance" in r for r in result.points[0].test_degenerate)
    assert result.test_id_accuracy.tolist() == [0.0, 0.0, 1.0]  # shown at every point
    assert result.best_index == result.oracle_index == (2,)
    with pytest.raises(SweepError, match="every point .* is degenerate"):
        run_sweep(bench, "centre", {"flat": (0.0, 0.25)}, val_ood=bench.ood["above"], val_ood_name="above")


def test_score_setting_is_the_metrics_of_the_scores() -> None:
    """The step Sweep and tuning share: per-set metrics, head accuracy and degeneracy of one setting."""
    from ood_core.setting import score_setting

    scorer = ToyBench(features(0, 50, 1), features(0, 60, 2), {}).scorer("centre")
    id_feats, oods = features(0, 60, 2), {"a": features(2, 40, 3), "b": features(-3, 30, 4)}
    figures = score_setting(scorer, {"centre": 0.5}, id_feats, oods)
    expected = metrics.evaluate_many(scorer.score(id_feats, centre=0.5),
                                     {name: scorer.score(f, centre=0.5) for name, f in oods.items()})
    assert figures.per_ood == expected
    assert figures.fpr95 == pytest.approx(np.mean([m.fpr95 for m in expected.values()]))
    assert figures.id_accuracy == figures.base_accuracy == 1.0 and figures.degenerate == ()
    broken = score_setting(scorer, {"flat": 0.0}, id_feats, oods)  # every score equal, head predicts class 1
    assert broken.id_accuracy == 0.0 and broken.degenerate

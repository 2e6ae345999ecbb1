"""Tuning from the cache: declared search spaces, protocols that never read a test set, the
default in every grid, the accuracy budget, the labelled oracle."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ood_core import tuning
from ood_core.params import Relative
from ood_core.scorers import create_scorer, list_scorers
from ood_core.synthetic import OODSet, SyntheticSettings, make_synthetic

# Methods whose grids are cheap on the toy benchmark, covering plain, composed, joint and NAP grids.
QUICK = ("energy", "knn", "ash-s", "react", "dice", "dice+react", "line", "opp", "nap-e")


@pytest.fixture(scope="module")
def bench():
    settings = dataclasses.replace(
        SyntheticSettings.toy(),
        ood=(OODSet("far", 200, "far"), OODSet("near", 200, "near"), OODSet("val", 200, "mixed")))
    bench = make_synthetic(settings)
    bench.val_ood = {"val": bench.ood.pop("val")}
    return bench


VALIDATION = tuning.Protocol("validation", ("val",))


def _poisoned(bench):
    """The same benchmark with every test OOD set's features replaced by noise."""
    generator = torch.Generator().manual_seed(1)
    poisoned = {}
    for name, feats in bench.ood.items():
        noise = lambda t: None if t is None else torch.rand(t.shape, generator=generator) * 10  # noqa: E731
        poisoned[name] = dataclasses.replace(feats, logits=noise(feats.logits), penultimate=noise(feats.penultimate),
                                             prepool_max=noise(feats.prepool_max),
                                             odin_logits=noise(feats.odin_logits))
    return dataclasses.replace(bench, ood=poisoned, _scorers={})


def test_every_method_declares_a_searchable_space_with_its_default() -> None:
    for name in list_scorers():
        scorer = create_scorer(name)
        values = scorer.resolve()
        for block in tuning.search_blocks(scorer, values):
            for param, grid in block.items():
                assert values[param] in grid, (name, param)
                assert all(scorer.param(param).validate(v) == v for v in grid), (name, param)
                assert len(grid) <= 10, (name, param)  # a handful of points per axis
    assert tuning.grid_size(create_scorer("msp")) == 1  # nothing to tune


def test_relative_grids_follow_the_models_default() -> None:
    demo_line = create_scorer("line", delta=4.0)
    grid = tuning.search_blocks(demo_line, demo_line.resolve())[0]["delta"]
    assert grid == (1.0, 2.0, 4.0, 8.0, 16.0)
    assert isinstance(demo_line.param("delta").search, Relative)


def test_inactive_params_are_not_searched() -> None:
    react = create_scorer("react")  # clip_by = percentile: clip_value has no effect
    names = {n for block in tuning.search_blocks(react, react.resolve()) for n in block}
    assert names == {"clip_percentile"}
    values = react.resolve({"clip_by": "value"})
    assert {n for block in tuning.search_blocks(react, values) for n in block} == {"clip_value"}
    line = create_scorer("line")
    values = line.resolve({"use_ac": False})
    assert "delta" not in {n for block in tuning.search_blocks(line, values) for n in block}


def test_joint_groups_are_one_block() -> None:
    line = create_scorer("line")
    blocks = tuning.search_blocks(line, line.resolve())
    assert [sorted(b) for b in blocks] == [["delta"], ["p_a", "p_w"]]
    opnp = create_scorer("opnp")
    assert [sorted(b) for b in tuning.search_blocks(opnp, opnp.resolve())] == [
        ["q_n_high", "q_n_low", "q_w_high", "q_w_low"]]


@pytest.mark.parametrize("method", QUICK)
def test_tuned_is_never_worse_than_the_default_on_validation(bench, method) -> None:
    tuned = tuning.tune_method(bench, method, VALIDATION)
    choice = tuned.choices["far"]
    assert choice.evaluated == tuning.grid_size(bench.scorer(method))
    if choice.default.excluded:  # a degenerate default (LINe's on this toy set): any eligible point beats it
        assert not choice.selected.excluded and method == "line"
    else:
        assert choice.selected.key("fpr95") <= choice.default.key("fpr95")
    # the test figures are exactly evaluate_method's at the chosen setting
    from ood_core.benchmark import evaluate_method
    assert tuned.result.average == evaluate_method(bench, method, choice.params).average


@pytest.mark.parametrize("method", QUICK)
def test_tuning_never_reads_a_test_ood_set(bench, method) -> None:
    clean = tuning.tune_method(bench, method, VALIDATION).choices["far"]
    poisoned = tuning.tune_method(_poisoned(bench), method, VALIDATION).choices["far"]
    assert poisoned.params == clean.params
    assert poisoned.selected == clean.selected


def test_the_poison_test_can_fail(bench) -> None:
    """The oracle reads the test sets, so poisoning them moves its choice: the check above is not vacuous."""
    oracle = tuning.Protocol("oracle")
    moved = [m for m in ("ash-s", "dice", "line", "knn")
             if tuning.tune_method(bench, m, oracle).choices["far"].params
             != tuning.tune_method(_poisoned(bench), m, oracle).choices["far"].params]
    assert moved


def test_leave_one_out_tunes_each_set_on_the_others(bench) -> None:
    tuned = tuning.tune_method(bench, "ash-s", tuning.Protocol("leave-one-out"))
    assert set(tuned.choices) == {"far", "near"}
    only_near = tuning.tune_scorer(bench.scorer("ash-s"), bench.id_val, {"near": bench.ood["near"]})
    assert tuned.choices["far"].params == only_near.params  # "far" is scored, never read
    assert set(tuned.result.metrics) == {"far", "near"}


def test_accuracy_budget_excludes_heads_that_lose_accuracy(bench) -> None:
    free = tuning.tune_method(bench, "dice", VALIDATION).choices["far"]
    strict = tuning.tune_method(bench, "dice", dataclasses.replace(VALIDATION, accuracy_budget=0.0)).choices["far"]
    base = float((bench.id_val.logits.argmax(1) == bench.id_val.labels).float().mean())
    assert strict.selected.id_accuracy >= base - 1e-12
    if free.selected.id_accuracy < base:
        assert strict.params != free.params and strict.excluded.get("over the accuracy budget", 0) > 0


def test_protocols_say_what_they_read() -> None:
    assert "no test set read" in VALIDATION.describe("cifar10")
    oracle = tuning.Protocol("oracle")
    assert tuning.ORACLE_LABEL in oracle.describe("cifar10") and oracle.as_dict()["oracle"] is True
    assert VALIDATION.as_dict() == {"kind": "validation", "val_ood": ["val"], "objective": "fpr95",
                                    "accuracy_budget": None, "oracle": False}
    with pytest.raises(tuning.TuningError):
        tuning.Protocol("validation", ())
    with pytest.raises(tuning.TuningError):
        tuning.Protocol("validation", ("val",), accuracy_budget=5.0)  # a fraction, not points


def test_a_validation_set_among_the_test_sets_is_refused(bench) -> None:
    with pytest.raises(tuning.TuningError, match="also test sets"):
        tuning.tune_method(bench, "energy", tuning.Protocol("validation", ("far",)))
    with pytest.raises(tuning.TuningError, match="not loaded"):
        tuning.tune_method(bench, "energy", tuning.Protocol("validation", ("elsewhere",)))


def test_held_params_are_not_searched(bench) -> None:
    tuned = tuning.tune_method(bench, "line", VALIDATION, fixed={"delta": 0.7}).choices["far"]
    assert tuned.params["delta"] == 0.7
    assert tuned.evaluated == tuning.grid_size(bench.scorer("line"), {"delta": 0.7})

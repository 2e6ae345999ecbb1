"""OPNP formula tests (docs/methods.md §3.12): global percentile masks on the sensitivities."""
from __future__ import annotations

import pytest
import torch

from ood_core import stages
from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet, FitContext

VARIANTS = ("opp", "onp", "opnp", "opnp+react")
NOTHING = {"q_w_high": 0.0, "q_w_low": 0.0, "q_n_high": 0.0, "q_n_low": 0.0}


def own(name: str, hparams: dict) -> dict:
    """The entries of ``hparams`` that the variant declares (OPP has no unit pruning, ONP no weight pruning)."""
    declared = {p.name for p in create_scorer(name).declared_params()}
    return {k: v for k, v in hparams.items() if k in declared}


def _hand_ctx() -> FitContext:
    # Sensitivities 1..100 (K = 10, D = 10) and neuron sensitivities 1..10 in a shuffled order.
    weight = torch.linspace(-1.0, 1.0, 100).reshape(10, 10)
    weight_sensitivity = torch.arange(1.0, 101.0).reshape(10, 10)
    neuron_sensitivity = torch.tensor([3.0, 10.0, 1.0, 7.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0])
    return FitContext(weight, torch.zeros(10), {
        "opnp_weight_sensitivity": weight_sensitivity, "opnp_neuron_sensitivity": neuron_sensitivity,
        "val_activations_sorted": torch.arange(11.0)})


def test_weight_mask_by_hand() -> None:
    scorer = create_scorer("opp").fit(_hand_ctx())
    # top 2 %: percentile(S, 98) = 98.02 → drop 99, 100; bottom 10 %: percentile(S, 10) = 10.9 → drop 1..10
    expected = torch.ones(100, dtype=torch.bool)
    expected[:10] = False
    expected[98:] = False
    assert torch.equal(scorer.weight_mask(q_w_high=2.0, q_w_low=10.0), expected.reshape(10, 10))


def test_neuron_mask_by_hand() -> None:
    scorer = create_scorer("onp").fit(_hand_ctx())
    # top 10 %: percentile(s, 90) = 9.1 → drop s = 10; bottom 10 %: percentile(s, 10) = 1.9 → drop s = 1
    expected = torch.tensor([True, False, False, True, True, True, True, True, True, True])
    assert torch.equal(scorer.unit_mask(q_n_high=10.0, q_n_low=10.0), expected)
    # bottom 15 %: percentile = 2.35 → also drops s = 2
    expected[5] = False
    assert torch.equal(scorer.unit_mask(q_n_high=10.0, q_n_low=15.0), expected)


def test_zero_percentages_remove_nothing() -> None:
    ctx = _hand_ctx()
    scorer = create_scorer("opnp").fit(ctx)
    assert bool(scorer.weight_mask(q_w_high=0.0, q_w_low=0.0).all()) and bool(scorer.unit_mask(q_n_high=0.0, q_n_low=0.0).all())
    values = torch.tensor([2.0, 2.0, 5.0, 9.0, 9.0])  # ties at both ends are kept too
    assert bool(stages.keep_between_percentiles(values, 0.0, 0.0).all())


@pytest.mark.parametrize("name", ["opp", "onp", "opnp"])
def test_zero_percentages_equal_energy(name: str, toy) -> None:
    scorer = create_scorer(name).fit(toy.ctx)
    torch.testing.assert_close(scorer.score(toy.id_feats, **own(name, NOTHING)),
                               create_scorer("energy").fit(toy.ctx).score(toy.id_feats))


def test_score_is_energy_of_the_pruned_head(toy) -> None:
    scorer = create_scorer("opnp").fit(toy.ctx)
    hp = {"q_w_high": 1.0, "q_w_low": 20.0, "q_n_high": 5.0, "q_n_low": 10.0}
    weight_mask = scorer.weight_mask(q_w_high=1.0, q_w_low=20.0)
    neuron_mask = scorer.unit_mask(q_n_high=5.0, q_n_low=10.0)
    assert not bool(weight_mask.all()) and not bool(neuron_mask.all())
    h = toy.id_feats.penultimate
    logits = (h * neuron_mask) @ (toy.ctx.head_weight * weight_mask).T + toy.ctx.head_bias
    torch.testing.assert_close(scorer.score(toy.id_feats, **hp), torch.logsumexp(logits, 1))
    # OPP ignores the neuron mask, ONP the weight mask
    opp = create_scorer("opp").fit(toy.ctx).modified_logits(toy.id_feats, **own("opp", hp))
    torch.testing.assert_close(opp, h @ (toy.ctx.head_weight * weight_mask).T + toy.ctx.head_bias)
    onp = create_scorer("onp").fit(toy.ctx).modified_logits(toy.id_feats, **own("onp", hp))
    torch.testing.assert_close(onp, (h * neuron_mask) @ toy.ctx.head_weight.T + toy.ctx.head_bias)


def test_react_variant_clips_before_pruning(toy) -> None:
    plain = create_scorer("opnp").fit(toy.ctx)
    clipped = create_scorer("opnp+react").fit(toy.ctx)
    c = float(stages.sorted_percentile(toy.ctx.stats["val_activations_sorted"], 90.0))
    h = toy.id_feats.penultimate.clamp(max=c)
    feats = FeatureSet(logits=h @ toy.ctx.head_weight.T + toy.ctx.head_bias, penultimate=h,
                       labels=toy.id_feats.labels)
    torch.testing.assert_close(clipped.score(toy.id_feats), plain.score(feats))


def test_variants_are_compositions_of_declared_stages() -> None:
    params = {name: [p.name for p in create_scorer(name).declared_params()] for name in VARIANTS}
    assert params["opp"] == ["q_w_high", "q_w_low"]
    assert params["onp"] == ["q_n_high", "q_n_low"]
    assert params["opnp"] == ["q_w_high", "q_w_low", "q_n_high", "q_n_low"]
    assert params["opnp+react"] == ["clip_by", "clip_percentile", "clip_value"] + params["opnp"]
    assert "val_activations_sorted" not in create_scorer("opnp").stats
    assert "val_activations_sorted" in create_scorer("opnp+react").stats
    for name in VARIANTS:
        scorer = create_scorer(name)
        assert scorer.name == name
        for param in scorer.declared_params():
            if param.name.startswith("q_"):
                assert "not a tuned value" in param.help


def test_masks_are_memoised(toy) -> None:
    scorer = create_scorer("opnp+react").fit(toy.ctx)
    scorer.score(toy.id_feats)
    head = scorer.masked_weight(scorer.resolve(), toy.ctx.device)
    scorer.score(toy.id_feats, clip_by="value", clip_value=0.5)  # a clip-only move rebuilds nothing
    assert scorer.masked_weight(scorer.resolve(), toy.ctx.device) is head and len(scorer._masked_weights) == 1


def test_module_formula_equals_the_composed_reference(toy) -> None:
    """opnp.py's opening formula is what the composition (weight + unit pruning stages) computes."""
    from ood_core.scorers.opnp import opnp_reference

    scorer = create_scorer("opnp").fit(toy.ctx)
    for hp in ({"q_w_high": 0.5, "q_w_low": 10.0, "q_n_high": 1.0, "q_n_low": 0.0},
               {"q_w_high": 2.0, "q_w_low": 30.0, "q_n_high": 10.0, "q_n_low": 20.0}):
        expected = opnp_reference(toy.id_feats.penultimate, toy.ctx.head_weight, toy.ctx.head_bias,
                                  toy.ctx.stats["opnp_weight_sensitivity"], toy.ctx.stats["opnp_neuron_sensitivity"],
                                  (hp["q_w_high"], hp["q_w_low"]), (hp["q_n_high"], hp["q_n_low"]))
        torch.testing.assert_close(scorer.reference(toy.id_feats, **hp), expected)

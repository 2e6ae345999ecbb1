"""ViM against the official recipe written with numpy + sklearn, and its dim defaults."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance

from ood_core.scorers import create_scorer
from ood_core.scorers.vim import default_principal_dim


def official_vim(train_h, w, b, test_h, dim):
    """ViM ``benchmark.py`` in numpy: origin, EmpiricalCovariance(assume_centered), eigh, α."""
    u = -np.linalg.pinv(w) @ b
    cov = EmpiricalCovariance(assume_centered=True).fit(train_h - u)
    eig_vals, eigen_vectors = np.linalg.eig(cov.covariance_)
    ns = np.ascontiguousarray(eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]].T).real
    train_logits = train_h @ w.T + b
    alpha = train_logits.max(axis=-1).mean() / np.linalg.norm((train_h - u) @ ns, axis=-1).mean()
    return logsumexp(test_h @ w.T + b, axis=-1) - alpha * np.linalg.norm((test_h - u) @ ns, axis=-1)


@pytest.mark.parametrize("dim", [3, 16, 30])
def test_matches_official_recipe(toy, dim: int) -> None:
    scorer = create_scorer("vim").fit(toy.ctx)
    ours = scorer.score(toy.ood_feats, dim=dim)
    w, b = toy.ctx.head_weight.double().numpy(), toy.ctx.head_bias.double().numpy()
    reference = official_vim(toy.train_features.double().numpy(), w, b,
                             toy.ood_feats.penultimate.double().numpy(), dim)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-3, atol=1e-3)


def test_dim_defaults_and_range(toy) -> None:
    assert [default_principal_dim(d) for d in (4096, 2048, 1024, 768, 512, 342, 3)] == [1000, 1000, 512, 512, 256, 171, 1]
    scorer = create_scorer("vim").fit(toy.ctx)
    d = toy.id_feats.penultimate.shape[1]
    (param,) = scorer.declared_params()
    assert (param.low, param.high, param.default) == (1, d - 1, d // 2)
    scorer.score(toy.id_feats, dim=d - 1)
    with pytest.raises(ValueError):
        scorer.score(toy.id_feats, dim=d)
    # an explicit variant default survives fit()
    assert create_scorer("vim", dim=5).fit(toy.ctx).defaults()["dim"] == 5


def test_alpha_uses_the_residual_norm_mean(toy) -> None:
    scorer = create_scorer("vim").fit(toy.ctx)
    stats = toy.ctx.stats
    assert scorer.alpha(7) == pytest.approx(float(stats["train_max_logit_mean"] / stats["vim_residual_norm_mean"][7]))


def test_dim_moves_on_one_scorer_match_the_direct_projection(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memoised suffix table (a dim change is a column read) against a fresh GEMM onto
    NS_dim, dim after dim on one scorer, and the unmemoised path for oversized tensors."""
    from ood_core.scorers import vim

    scorer = create_scorer("vim").fit(toy.ctx)
    stats = toy.ctx.stats
    feats = toy.ood_feats
    d = feats.penultimate.shape[1]
    memoised = {dim: scorer.score(feats, dim=dim) for dim in (1, 3, 16, d - 1, 3)}
    scorer._per_tensor.clear()
    monkeypatch.setattr(scorer._per_tensor, "max_bytes", 0)  # too large for the memo: the direct path
    for dim, scores in memoised.items():
        direct = vim.vim_score(feats.penultimate, feats.logits, stats["vim_origin"].float(),
                               stats["vim_eigenvectors"][:, dim:].float(), scorer.alpha(dim))
        torch.testing.assert_close(scores, direct, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(scorer.score(feats, dim=dim), direct, rtol=0, atol=0)


def test_refit_forgets_memoised_projections(toy) -> None:
    scorer = create_scorer("vim").fit(toy.ctx)
    before = scorer.score(toy.ood_feats, dim=3)
    stats = dict(toy.ctx.stats)
    stats["vim_origin"] = stats["vim_origin"] + 1.0
    scorer.fit(type(toy.ctx)(toy.ctx.head_weight, toy.ctx.head_bias, stats))
    assert not torch.allclose(scorer.score(toy.ood_feats, dim=3), before)

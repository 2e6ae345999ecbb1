"""GradNorm's closed form against autograd of the official loss on a tiny head (docs/methods.md §2.4)."""
from __future__ import annotations

import pytest
import torch

from ood_core.scorers import create_scorer
from ood_core.records import FeatureSet, FitContext


def autograd_gradnorm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, temperature: float) -> torch.Tensor:
    """The official recipe, batch = 1: L = Σ_k −log softmax(z/T)_k, S = ‖∂L/∂W‖₁ (bias excluded)."""
    scores = []
    for row in h.double():  # per-sample loop on purpose: it is the reference, not the implementation
        w = weight.double().clone().requires_grad_(True)
        logits = w @ row + bias.double()
        loss = -torch.log_softmax(logits / temperature, dim=0).sum()
        (grad,) = torch.autograd.grad(loss, w)
        scores.append(grad.abs().sum())
    return torch.stack(scores).float()


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_closed_form_matches_autograd(temperature: float) -> None:
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(4, 6, generator=gen), torch.randn(4, generator=gen)
    h = torch.randn(7, 6, generator=gen).relu()
    f = FeatureSet(logits=h @ weight.T + bias, penultimate=h, labels=torch.zeros(7, dtype=torch.long))
    ours = create_scorer("gradnorm").fit(FitContext(weight, bias)).score(f, temperature=temperature)
    torch.testing.assert_close(ours, autograd_gradnorm(h, weight, bias, temperature), rtol=1e-5, atol=1e-6)


def test_by_hand() -> None:
    # equal logits: K·p_k − 1 = 0 for every k → no gradient → score 0
    f = FeatureSet(logits=torch.zeros(1, 2), penultimate=torch.tensor([[1.0, -2.0]]), labels=torch.zeros(1, dtype=torch.long))
    assert create_scorer("gradnorm").score(f).tolist() == [0.0]
    # z = [0, ln 3]: p = [1/4, 3/4], Σ|2p − 1| = 1/2 + 1/2 = 1; ‖h‖₁ = 3 → S = 3
    f = FeatureSet(logits=torch.tensor([[0.0, torch.log(torch.tensor(3.0))]]), penultimate=torch.tensor([[1.0, -2.0]]),
                   labels=torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(create_scorer("gradnorm").score(f), torch.tensor([3.0]))

"""ODIN's input perturbation (Liang et al. 2018; docs/methods.md §1.3), batched over an ε grid.

ŷ = argmax f(x);  g = ∇_x CE(f(x)/T, ŷ);  x̃_ε = x − ε·sign(g);  returns f(x̃_ε) for every ε.

The step is taken in the model's *normalised* input space (after ``Normalize(mean, std)``), the
convention of the DICE / LINe / ReAct / GradNorm code (``get_odin_score``). The original ODIN code
and OpenOOD divide sign(g) by the per-channel std, i.e. their ε is in [0, 1] pixel units: to use
such an ε here, pass ε / std (one value per run, so only for a near-uniform std).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.models.base import OODModel


def odin_gradient_sign(model: OODModel, x: Tensor, temperature: float) -> Tensor:
    """sign(∇_x CE(f(x)/T, argmax f(x))): (N, C, H, W) float, values in {-1, 0, 1}.

    One forward and one backward pass. Only the input gradient is computed
    (``torch.autograd.grad``), so parameter ``.grad`` fields are left untouched.
    """
    with torch.enable_grad():
        inputs = x.detach().requires_grad_(True)
        logits = model(inputs).logits
        predicted = logits.argmax(dim=1)
        # reduction="sum": each sample's gradient is its own (mean would scale by 1/N, which only
        # risks underflow; the sign is the same).
        loss = F.cross_entropy(logits / temperature, predicted, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient.sign()


def odin_perturbed_logits(model: OODModel, x: Tensor, temperature: float,
                          eps_grid: Sequence[float]) -> Tensor:
    """Raw logits of the ODIN-perturbed inputs for every ε in ``eps_grid``.

    Args:
        model: an :class:`OODModel` in eval mode (BatchNorm / dropout must not change per batch).
        x: (N, C, H, W) float32 *normalised* inputs on the model's device.
        temperature: T of the cross-entropy whose input gradient gives the step direction.
        eps_grid: E step sizes in normalised input units (ε = 0 returns the clean logits).

    Returns:
        (E, N, K) float32 logits f(x − ε·sign(g)); ODIN's score is then
        max_k softmax(logits / T), computed downstream from the cache.
    """
    direction = odin_gradient_sign(model, x, temperature)
    clean = x.detach()
    with torch.no_grad():
        outputs = [model(clean - float(eps) * direction).logits for eps in eps_grid]
    if not outputs:
        return clean.new_empty((0, clean.shape[0], model.num_classes))
    return torch.stack(outputs)

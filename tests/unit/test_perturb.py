"""ODIN input perturbation: ε = 0 identity, ODIN's premise, and the gradient-sign step vs autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ood_core.models.cifar_resnet import CifarResNet
from ood_core.models.perturb import odin_gradient_sign, odin_perturbed_logits

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conv-heavy: see tests/conftest.py


def _small_model(device: str = "cpu") -> CifarResNet:
    """A random ResNet-8 (one block per stage) in eval mode."""
    torch.manual_seed(0)
    model = CifarResNet("resnet8-random", blocks_per_stage=1).to(device).eval()
    # Non-trivial BatchNorm statistics so eval-mode outputs are not degenerate.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _inputs(n: int = 24, device: str = "cpu") -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=generator).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_eps_returns_the_clean_logits(device: str) -> None:
    model, x = _small_model(device), _inputs(device=device)
    perturbed = odin_perturbed_logits(model, x, temperature=1000.0, eps_grid=[0.0, 0.01])
    assert perturbed.shape == (2, x.shape[0], model.num_classes)
    assert perturbed.device.type == device and not perturbed.requires_grad
    with torch.no_grad():
        clean = model(x).logits
    assert torch.allclose(perturbed[0], clean, atol=1e-6)
    assert not torch.allclose(perturbed[1], clean, atol=1e-6)  # ε > 0 changes the logits


@pytest.mark.parametrize("temperature", [1.0, 1000.0])
def test_perturbation_raises_the_tempered_max_softmax(temperature: float) -> None:
    """ODIN's premise: the step against the CE gradient increases max softmax(f/T) (first order)."""
    model, x = _small_model(), _inputs(64)
    logits = odin_perturbed_logits(model, x, temperature, eps_grid=[0.0, 0.002])
    # float64: at T = 1000 the softmax is nearly uniform and the gains are tiny
    confidence = (logits.double() / temperature).softmax(dim=-1).amax(dim=-1)  # (E, N)
    improved = (confidence[1] >= confidence[0]).float().mean().item()
    assert improved >= 0.9, f"only {improved:.0%} of samples gained confidence"


def test_gradient_sign_matches_autograd_for_one_sample() -> None:
    model, x = _small_model(), _inputs(8)
    temperature, eps, index = 1000.0, 0.01, 3
    sample = x[index:index + 1].clone().requires_grad_(True)
    logits = model(sample).logits
    loss = F.cross_entropy(logits / temperature, logits.argmax(dim=1))
    loss.backward()
    expected_step = sample.grad.sign()[0]

    direction = odin_gradient_sign(model, x, temperature)
    assert torch.equal(direction[index], expected_step)
    assert direction.abs().sum() > 0

    perturbed = odin_perturbed_logits(model, x, temperature, eps_grid=[eps])
    with torch.no_grad():
        expected_logits = model(x[index:index + 1] - eps * expected_step).logits[0]
    assert torch.allclose(perturbed[0, index], expected_logits, atol=1e-5)


def test_parameters_get_no_gradients_and_empty_grid() -> None:
    model, x = _small_model(), _inputs(4)
    out = odin_perturbed_logits(model, x, temperature=10.0, eps_grid=[])
    assert out.shape == (0, 4, model.num_classes)
    odin_perturbed_logits(model, x, temperature=10.0, eps_grid=[0.001])
    assert all(p.grad is None for p in model.parameters())
    assert not x.requires_grad

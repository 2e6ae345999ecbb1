"""The shared tensor stages against numpy and the dense formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from ood_core import stages


@pytest.mark.parametrize("q", [0.0, 10.0, 33.3, 50.0, 90.0, 97.5, 99.9, 100.0])
@pytest.mark.parametrize("n", [1, 2, 7, 1001])
def test_percentile_matches_numpy(q: float, n: int) -> None:
    values = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    expected = np.percentile(values.numpy(), q)  # linear interpolation
    assert stages.percentile(values, q).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert stages.percentile(values.reshape(1, -1), q).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    sorted_values = values.sort().values
    assert stages.sorted_percentile(sorted_values, q).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_percentile_interpolates_by_hand() -> None:
    values = torch.tensor([[4.0, 1.0], [3.0, 2.0]])  # sorted 1, 2, 3, 4
    assert stages.percentile(values, 50).item() == 2.5
    assert stages.percentile(values, 90).item() == pytest.approx(3.7)  # position 2.7
    with pytest.raises(ValueError):
        stages.percentile(torch.zeros(0), 50)


def test_value_to_percentile_inverts_sorted_percentile() -> None:
    sorted_values = torch.arange(1.0, 101.0)
    assert stages.value_to_percentile(sorted_values, 90.0) == 90.0
    assert stages.value_to_percentile(sorted_values, 0.5) == 0.0


def test_mask_above_percentile_is_strict() -> None:
    values = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0])  # median 2: the ties are dropped
    assert stages.mask_above_percentile(values, 50).tolist() == [False, False, False, False, True]
    matrix = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 4.0, 0.0, 1.0]])
    global_mask = stages.mask_above_percentile(matrix, 50)
    assert torch.equal(global_mask, matrix > np.percentile(matrix.numpy(), 50))
    per_row = stages.mask_above_percentile(matrix, 50, dim=1)
    thresholds = np.percentile(matrix.numpy(), 50, axis=1, keepdims=True)  # 2.5 and 2.5
    assert torch.equal(per_row, torch.from_numpy(matrix.numpy() > thresholds))
    assert per_row.tolist() == [[False, False, True, True], [True, True, False, False]]


def test_masked_head_logits_matches_dense_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    h, w, b = torch.randn(6, 5, generator=gen), torch.randn(3, 5, generator=gen), torch.randn(3, generator=gen)
    weight_mask = torch.rand(3, 5, generator=gen) > 0.5
    feature_mask = torch.rand(6, 5, generator=gen) > 0.3
    expected = torch.einsum("nd,kd->nk", h * feature_mask, w * weight_mask) + b
    torch.testing.assert_close(stages.masked_head_logits(h, w, b, weight_mask, feature_mask), expected)
    torch.testing.assert_close(stages.masked_head_logits(h, w, b), h @ w.T + b)
    shared = feature_mask[0]  # one (D,) mask for every sample
    torch.testing.assert_close(stages.masked_head_logits(h, w, b, feature_mask=shared), (h * shared) @ w.T + b)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0, 1000.0])
def test_energy_at_temperature(temperature: float) -> None:
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5
    expected = temperature * logsumexp(z.numpy() / temperature, axis=1)
    np.testing.assert_allclose(stages.energy(z, temperature).numpy(), expected, rtol=1e-12)
    assert stages.energy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))


def test_clip_activations() -> None:
    h = torch.tensor([[-1.0, 0.5, 2.0]])
    assert stages.clip_activations(h, 1.0).tolist() == [[-1.0, 0.5, 1.0]]  # upper clip only
    assert stages.clip_activations(h, None) is h
    assert stages.clip_activations(h, float("inf")) is h

"""Every registered training statistic (ood_core.statistics and the methods' own) against direct
numpy / sklearn / autograd computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import EmpiricalCovariance

from ood_core.statistics import TrainingData, TrainingDataError, compute_all_statistics, compute_statistics

K, D, M = 4, 12, 200


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(K, D, generator=gen), torch.randn(K, generator=gen)
    labels = torch.arange(K).repeat_interleave(M // K)
    means = 2.0 * torch.rand(K, D, generator=gen)
    h = (means[labels] + torch.randn(M, D, generator=gen) * torch.linspace(0.2, 1.5, D)).relu()
    val = torch.randn(50, D, generator=gen).relu()
    stats = compute_all_statistics(h, h @ weight.T + bias, labels, weight, bias, val_features=val)
    return h, labels, weight, bias, val, stats


def test_every_statistic_is_float32(data) -> None:
    *_, stats = data
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in stats.values())


def test_means_counts_and_contribution(data) -> None:
    h, y, w, b, _, stats = data
    h64, y64 = h.double().numpy(), y.numpy()
    class_means = np.stack([h64[y64 == c].mean(0) for c in range(K)])
    np.testing.assert_allclose(stats["class_means"].numpy(), class_means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["feature_mean"].numpy(), h64.mean(0), rtol=1e-5, atol=1e-6)
    assert stats["class_counts"].tolist() == [M // K] * K
    np.testing.assert_allclose(stats["class_contribution"].numpy(), w.double().numpy() * class_means, rtol=1e-5, atol=1e-6)


def test_precision_matches_sklearn_empirical_covariance(data) -> None:
    h, y, *_ , stats = data
    h64, y64 = h.double().numpy(), y.numpy()
    centred = h64 - np.stack([h64[y64 == c].mean(0) for c in range(K)])[y64]
    reference = EmpiricalCovariance(assume_centered=False).fit(centred).precision_
    np.testing.assert_allclose(stats["precision"].numpy(), reference, rtol=1e-4, atol=1e-4)


def test_vim_statistics(data) -> None:
    h, _, w, b, _, stats = data
    h64, w64, b64 = h.double().numpy(), w.double().numpy(), b.double().numpy()
    origin = -np.linalg.pinv(w64) @ b64
    np.testing.assert_allclose(stats["vim_origin"].numpy(), origin, rtol=1e-4, atol=1e-5)
    cov = EmpiricalCovariance(assume_centered=True).fit(h64 - origin).covariance_
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    np.testing.assert_allclose(stats["vim_eigenvalues"].numpy(), eigenvalues, rtol=1e-4, atol=1e-5)
    ours = stats["vim_eigenvectors"].double().numpy()
    np.testing.assert_allclose(ours.T @ ours, np.eye(D), atol=1e-5)  # orthonormal columns
    for dim in (1, 5, D - 1):
        # the residual subspace (sign- and rotation-free: compare projectors), then its norm mean
        ns, ref_ns = ours[:, dim:], eigenvectors[:, dim:]
        np.testing.assert_allclose(ns @ ns.T, ref_ns @ ref_ns.T, atol=1e-4)
        residual = np.linalg.norm((h64 - origin) @ ref_ns, axis=1).mean()
        assert stats["vim_residual_norm_mean"][dim].item() == pytest.approx(residual, rel=1e-4)
    assert stats["vim_residual_norm_mean"].shape == (D + 1,)
    assert stats["vim_residual_norm_mean"][D].item() == 0.0
    assert stats["vim_residual_norm_mean"][0].item() == pytest.approx(np.linalg.norm(h64 - origin, axis=1).mean(), rel=1e-5)
    assert stats["train_max_logit_mean"].item() == pytest.approx((h64 @ w64.T + b64).max(1).mean(), rel=1e-5)


def test_knn_bank_is_unit_norm(data) -> None:
    h, *_, stats = data
    bank = stats["knn_bank"]
    assert bank.shape == (M, D)
    torch.testing.assert_close(bank.norm(dim=1), torch.ones(M))
    torch.testing.assert_close(bank, h / h.norm(dim=1, keepdim=True))


def test_opnp_sensitivity_closed_form_matches_autograd(data) -> None:
    h, _, w, b, _, stats = data
    # mean over samples of |∂LSE(W h + b)/∂W| (energy gradient magnitude), one backward per sample
    total = torch.zeros(K, D, dtype=torch.float64)
    for row in h.double():
        weight = w.double().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.logsumexp(weight @ row + b.double(), 0), weight)
        total += grad.abs()
    torch.testing.assert_close(stats["opnp_weight_sensitivity"].double(), total / M, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(stats["opnp_neuron_sensitivity"], stats["opnp_weight_sensitivity"].mean(0))


def test_sorted_activation_samples(data) -> None:
    h, *_, val, stats = data
    assert torch.equal(stats["val_activations_sorted"], val.reshape(-1).sort().values)
    assert torch.equal(stats["train_activations_sorted"], h.reshape(-1).sort().values)
    without_val = compute_statistics(["val_activations_sorted", "train_activations_sorted"],
                                     TrainingData(h, h @ data[2].T + data[3], data[1], data[2], data[3]))
    assert torch.equal(without_val["val_activations_sorted"], without_val["train_activations_sorted"])


def test_empty_training_split_raises() -> None:
    with pytest.raises(TrainingDataError, match="empty training split"):
        compute_all_statistics(torch.zeros(0, 3), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long),
                               torch.zeros(2, 3), torch.zeros(2))

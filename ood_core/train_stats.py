"""Training statistics every scorer fits on, computed once from cached training features.

All come from (h, z, y) of the ID training split with no gradients (methods.md §4).
Names (the keys of the returned dict, stored in the cache, read by ``Scorer.stats``):

  feature_mean              (D,)    m̄ = mean_x h(x)                              DICE
  class_means               (K, D)  μ_c = mean_{y=c} h(x)                         LINe, Mahalanobis
  class_counts              (K,)    training images per class
  class_contribution        (K, D)  C[c] = W[c] ⊙ μ_c (LINe's Shapley/Taylor term)  LINe, Neurons page
  precision                 (D, D)  pinv of the tied class-centred covariance (MLE) Mahalanobis
  vim_origin                (D,)    u = -pinv(W) b                                 ViM
  vim_eigenvectors          (D, D)  eigenvectors of cov(h-u) (assume centred), columns by
                                    descending eigenvalue                          ViM
  vim_eigenvalues           (D,)    descending                                     ViM
  vim_residual_norm_mean    (D+1,)  [i] = mean_x ‖(h-u) NS_i‖ with NS_i = eigenvectors[:, i:]
  train_max_logit_mean      ()      mean_x max_k z_k                               ViM
  knn_bank                  (M, D)  L2-normalised training features                KNN
  opnp_weight_sensitivity   (K, D)  S = Pᵀ|H| / m (mean |∂E/∂W|)                   OPNP
  opnp_neuron_sensitivity   (D,)    s = mean_k S[k]                                OPNP
  val_activations_sorted    (V,)    ascending sample of ID-validation activations  ReAct / δ percentiles
  train_activations_sorted  (V,)    ascending sample of training activations       (ViM's ReAct baseline)

Everything is float32 on return (sums accumulate in float64).
"""
from __future__ import annotations

import torch
from torch import Tensor

# Enough values for percentile look-ups accurate to ~0.01 pt without storing N·D floats.
MAX_SORTED_ACTIVATIONS = 2_000_000


def _sorted_sample(features: Tensor, generator_seed: int = 0) -> Tensor:
    flat = features.reshape(-1).float()
    if flat.numel() > MAX_SORTED_ACTIVATIONS:
        gen = torch.Generator(device="cpu").manual_seed(generator_seed)
        idx = torch.randperm(flat.numel(), generator=gen)[:MAX_SORTED_ACTIVATIONS].to(flat.device)
        flat = flat[idx]
    return flat.sort().values


def compute_train_stats(
    train_features: Tensor,
    train_logits: Tensor,
    train_labels: Tensor,
    head_weight: Tensor,
    head_bias: Tensor,
    val_features: Tensor | None = None,
) -> dict[str, Tensor]:
    """Every training statistic, from the training split's cache.

    train_features: (M, D) float; train_logits: (M, K); train_labels: (M,) int64 in [0, K);
    head_weight: (K, D); head_bias: (K,); val_features: (V, D) ID-validation features.
    """
    h = train_features.double()
    z = train_logits.double()
    y = train_labels.long()
    W = head_weight.double()
    b = head_bias.double()
    m, d = h.shape
    k = W.shape[0]
    if m == 0:
        raise ValueError("cannot compute training statistics from an empty training split")

    counts = torch.bincount(y, minlength=k).double()
    sums = torch.zeros(k, d, dtype=torch.float64, device=h.device).index_add_(0, y, h)
    class_means = sums / counts.clamp(min=1).unsqueeze(1)
    feature_mean = h.mean(0)

    # Tied covariance of class-centred features, MLE (divide by M), as sklearn EmpiricalCovariance.
    centred = h - class_means[y]
    covariance = centred.T @ centred / m
    precision = torch.linalg.pinv(covariance, hermitian=True)

    # ViM: origin u where the logits vanish, principal space of (h - u).
    origin = -(torch.linalg.pinv(W) @ b)
    shifted = h - origin
    vim_cov = shifted.T @ shifted / m
    eigenvalues, eigenvectors = torch.linalg.eigh(vim_cov)
    order = eigenvalues.argsort(descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    projections = (shifted @ eigenvectors) ** 2  # (M, D): energy along each principal axis
    # residual energy after dropping the top-i axes: tail sums, i = 0..D
    tail = torch.cat([projections.flip(1).cumsum(1).flip(1), torch.zeros(m, 1, dtype=h.dtype, device=h.device)], 1)
    residual_norm_mean = tail.clamp(min=0).sqrt().mean(0)

    probabilities = torch.softmax(z, dim=1)
    opnp_weight = probabilities.T @ h.abs() / m  # (K, D): mean_x p_k(x)·|h_j(x)|

    stats = {
        "feature_mean": feature_mean,
        "class_means": class_means,
        "class_counts": counts,
        "class_contribution": W * class_means,
        "precision": precision,
        "vim_origin": origin,
        "vim_eigenvectors": eigenvectors,
        "vim_eigenvalues": eigenvalues,
        "vim_residual_norm_mean": residual_norm_mean,
        "train_max_logit_mean": z.max(1).values.mean(),
        "knn_bank": torch.nn.functional.normalize(h, dim=1),
        "opnp_weight_sensitivity": opnp_weight,
        "opnp_neuron_sensitivity": opnp_weight.mean(0),
        "train_activations_sorted": _sorted_sample(h),
        "val_activations_sorted": _sorted_sample(val_features if val_features is not None else h),
    }
    return {name: value.float().contiguous() for name, value in stats.items()}

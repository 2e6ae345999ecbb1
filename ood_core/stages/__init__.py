"""Pure tensor stages shared by the OOD methods (the ``layers/`` of this project).

Every energy-family method is ``energy(head(transform(h)))`` with some of these stages:
activation clipping (ReAct, LINe's AC, DICE+ReAct, OPNP+ReAct), masks chosen from
contributions by a percentile (DICE, LINe, OPNP), a masked linear head, and energy.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ood_core.params import ACTIVATION_FACTORS, CLIP_PERCENTILES, Param
from ood_core.registry import OODLensError


def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative free energy ``T·LSE(z/T)``: (N, K) → (N,). Higher = more ID (Liu et al. 2020)."""
    if temperature == 1.0:  # skip two passes over (N, K): the common case of every energy-based method
        return torch.logsumexp(logits, dim=-1)
    return temperature * torch.logsumexp(logits / temperature, dim=-1)


def clip_activations(features: Tensor, threshold: float | Tensor | None) -> Tensor:
    """ReAct's upper clip ``min(h, c)`` (N, D) → (N, D); ``None`` or ``inf`` means no clip."""
    if threshold is None:
        return features
    if not isinstance(threshold, Tensor) and threshold == float("inf"):
        return features
    return features.clamp(max=threshold)


def _interpolation_points(n: int, q: float) -> tuple[int, int, float]:
    """np.percentile's linear interpolation: the order statistics (lower, upper) and the weight."""
    if n == 0:
        raise ValueError("percentile of an empty tensor")
    position = (n - 1) * float(q) / 100.0
    lower = int(position // 1)
    return lower, min(lower + 1, n - 1), position - lower


def percentile(values: Tensor, q: float) -> Tensor:
    """``np.percentile(values, q)`` (linear interpolation) over *all* entries, as a 0-d tensor.

    Selection, not sorting (see :func:`percentile_rows`), so it works beyond
    ``torch.quantile``'s 16M-element limit and matches numpy to float rounding.
    """
    return percentile_rows(values.reshape(1, -1), q)[0]


def sorted_percentile(sorted_values: Tensor, q: float) -> Tensor:
    """``np.percentile`` (linear interpolation) of an already ascending-sorted 1-D tensor: O(1)."""
    lower, upper, frac = _interpolation_points(sorted_values.numel(), q)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * frac


def value_to_percentile(sorted_values: Tensor, value: float) -> float:
    """The percentile (0–100) at which ``value`` sits in an ascending-sorted 1-D tensor."""
    n = sorted_values.numel()
    rank = torch.searchsorted(sorted_values, torch.tensor([float(value)], dtype=sorted_values.dtype,
                                                           device=sorted_values.device), right=True)
    return 100.0 * float(rank.item()) / n


def mask_above_percentile(values: Tensor, q: float, dim: int | None = None) -> Tensor:
    """Boolean mask ``values > percentile(values, q)`` with a strict ">" (DICE, LINe).

    ``dim=None`` takes one percentile over all entries (DICE's global threshold);
    ``dim=d`` takes one percentile per slice along ``d`` (LINe's per-class activation mask).
    ``q`` is the percent of entries *dropped*.
    """
    if dim is None:
        return values > percentile(values, q)
    thresholds = torch.quantile(values.float(), q / 100.0, dim=dim, keepdim=True, interpolation="linear")
    return values > thresholds.to(values.dtype)


def masked_head_logits(
    features: Tensor,
    weight: Tensor,
    bias: Tensor,
    weight_mask: Tensor | None = None,
    feature_mask: Tensor | None = None,
) -> Tensor:
    """Logits of a pruned linear head: ``(m ⊙ h) @ (W ⊙ M)ᵀ + b``, bias untouched.

    features: (N, D); weight: (K, D); bias: (K,); weight_mask: (K, D) bool or None;
    feature_mask: (D,) or (N, D) bool or None. Returns (N, K).
    """
    if feature_mask is not None:
        features = features * feature_mask.to(features.dtype)
    if weight_mask is not None:
        weight = weight * weight_mask.to(weight.dtype)
    return torch.addmm(bias, features, weight.T) if features.dim() == 2 else features @ weight.T + bias


def chunked_head_logits(features: Tensor, weight: Tensor, bias: Tensor,
                        transform: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``transform(h) @ Wᵀ + b`` in row chunks: features (N, D) any float dtype, W (K, D), b (K,)
    float32 → (N, K) float32.

    Each chunk is cast, transformed (row-wise, e.g. a clip) and multiplied into its slice of
    the output, so no (N, D) temporary is made: at ImageNet scale a whole-tensor clip is a
    fresh 0.7 GB buffer whose page faults cost about a tenth of the GEMM.
    """
    from ood_core.fast import chunks  # the memory budget lives there

    n, d = features.shape
    out = torch.empty(n, weight.shape[0], dtype=torch.float32, device=features.device)
    for start, stop in chunks.row_ranges(n, chunks.rows_within_budget(d)):
        x = features[start:stop].float()
        torch.addmm(bias, x if transform is None else transform(x), weight.T, out=out[start:stop])
    return out


def product_thresholds(scale: Tensor, threshold: Tensor, steps: int = 8) -> Tensor | None:
    """t with ``fl(a·w) > τ ⟺ w > t`` for every float32 w, elementwise over a ≥ 0 and τ (same shape).

    float32 rounding is monotone, so ``w ↦ fl(a·w)`` is non-decreasing and the kept set is
    ``w > t`` for t the largest float with fl(a·t) ≤ τ: found from τ/a by a few one-ulp steps
    (±inf when a = 0: nothing or everything is kept). Lets a mask like LINe's
    ``|C[c, j]|·W[k, j] > τ_c`` be one comparison per weight with the same outcome bit for
    bit. None when some t is not pinned down after ``steps`` steps (the caller compares
    products instead).
    """
    inf = torch.full_like(scale, float("inf"))
    positive = scale > 0
    t = torch.where(positive, threshold / scale.where(positive, torch.ones_like(scale)),
                    torch.where(threshold < 0, -inf, inf))
    for _ in range(steps):
        t = torch.where(positive & (scale * t > threshold), torch.nextafter(t, -inf), t)
        above = torch.nextafter(t, inf)
        t = torch.where(positive & (scale * above <= threshold), above, t)
    exact = ~positive | ((scale * t <= threshold) & (scale * torch.nextafter(t, inf) > threshold))
    return t if bool(exact.all()) else None


def percentile_rows(values: Tensor, q: float) -> Tensor:
    """Row-wise ``np.percentile(values, q, axis=1)`` (linear interpolation): (G, M) → (G,).

    Uses ``kthvalue`` along the last dim, so it has no ``torch.quantile`` size limit (LINe's
    τ_c: one percentile over K·D values per class, for a chunk of classes at once).
    """
    lower, upper, frac = _interpolation_points(values.shape[-1], q)
    if values.device.type == "cpu":
        # numpy's introselect is ~6x faster than CPU kthvalue (LINe's τ on ImageNet: 1000
        # selections over 2M values); after partitioning at `lower` every later entry is ≥ it,
        # so the next order statistic is their minimum (one linear pass, not a second select).
        import numpy as np

        parted = np.partition(values.detach().numpy(), lower, axis=-1)
        lo = torch.from_numpy(np.ascontiguousarray(parted[..., lower]))
        hi = torch.from_numpy(np.ascontiguousarray(parted[..., upper:].min(axis=-1))) if upper != lower else lo
    else:
        lo = values.kthvalue(lower + 1, dim=-1).values
        hi = values.kthvalue(upper + 1, dim=-1).values if upper != lower else lo
    if frac == 0.0 or upper == lower:
        return lo
    return lo + (hi - lo) * frac


def keep_between_percentiles(values: Tensor, q_low: float, q_high: float) -> Tensor:
    """Boolean keep-mask removing the bottom ``q_low`` % and the top ``q_high`` % of ``values``.

    keep = percentile(v, q_low) ≤ v ≤ percentile(v, 100 − q_high), one global percentile over
    all entries (OPNP's weight and neuron pruning). Comparisons are strict on the removal side,
    so ``q_low = 0`` / ``q_high = 0`` remove nothing (the 0th/100th percentiles are min/max).
    """
    keep = torch.ones_like(values, dtype=torch.bool)
    if q_low > 0:
        keep &= values >= percentile(values, q_low)
    if q_high > 0:
        keep &= values <= percentile(values, 100.0 - q_high)
    return keep


def dice_weight_mask(feature_mean: Tensor, weight: Tensor, sparsity: float) -> Tensor:
    """DICE's static weight mask: (D,), (K, D) → (K, D) bool.

    V = m̄[None, :] ⊙ W (signed); M = V > np.percentile(V, sparsity) over all K·D entries
    (strict ">", so sparsity 0 still drops the entries equal to the minimum).
    """
    return mask_above_percentile(feature_mean[None, :] * weight, sparsity)


# --- the shared activation clip (ReAct's c; DICE+ReAct, OPNP+ReAct, NAP-R use it too) ------------

CLIP_BY_CHOICES = ("percentile", "value")


def clip_params(clip_by: str = "percentile", clip_percentile: float = 90.0,
                clip_value: float = 1.0) -> tuple[Param, ...]:
    """The three clipping params (ReAct's c) with the given defaults, one display group: the
    switch, then the one c it makes active."""
    return (
        Param("clip_by", clip_by, kind="choice", choices=CLIP_BY_CHOICES, label="clip c given as", group="clip",
              help="Give the clip threshold c as a percentile of ID-validation activations or as an absolute value."),
        Param("clip_percentile", float(clip_percentile), low=50.0, high=99.9, step=0.1, unit="%",
              label="c percentile",
              help="c = this percentile of ID-validation penultimate activations (when clip_by = percentile).",
              search=CLIP_PERCENTILES, active_when=("clip_by", "percentile"), group="clip"),
        Param("clip_value", float(clip_value), low=0.01, high=20.0, step=0.01, unit="activation",
              label="c (absolute)",
              help="Absolute clip threshold c on penultimate activations (when clip_by = value).",
              search=ACTIVATION_FACTORS, active_when=("clip_by", "value"), group="clip"),
    )


def clip_threshold(val_activations_sorted: Tensor, clip_by: str, clip_percentile: float, clip_value: float) -> float:
    """ReAct's clip threshold c as a float.

    ``clip_by="percentile"``: c = ``np.percentile`` of the ascending-sorted ID-validation
    activations (V,) at ``clip_percentile`` (the official ``compute_threshold.py``);
    ``clip_by="value"``: c = ``clip_value``, an absolute activation (LINe's δ, CIFAR c = 1.0).
    """
    if clip_by == "value":
        return float(clip_value)
    if clip_by == "percentile":
        return float(sorted_percentile(val_activations_sorted, clip_percentile))
    raise OODLensError(f"clip_by={clip_by!r} is not one of {list(CLIP_BY_CHOICES)}")


def head_on(weight: Tensor, bias: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """(W (K, D), b (K,)) as float32 on ``device`` (no copy when already there)."""
    return weight.to(device=device, dtype=torch.float32), bias.to(device=device, dtype=torch.float32)

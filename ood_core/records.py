"""The cache's records: what a scorer reads (:class:`FeatureSet`) and fits on (:class:`FitContext`).

The cache writes and loads these; the scorers consume them. Both layers import this module,
which imports neither.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

# ODIN's perturbation is model work, done once at precompute time for a grid of ε at one
# temperature (ε in normalised-input units, as the DICE / ReAct / LINe code applies it).
# The builder perturbs with this grid and the ODIN scorer offers exactly these values.
ODIN_EPS_GRID: tuple[float, ...] = (0.0014, 0.0028)
ODIN_TEMPERATURE: float = 1000.0


@dataclass
class FeatureSet:
    """What the cache holds for one (model, dataset, split); every tensor on one device.

    logits:        (N, K) float32, exactly ``penultimate @ W.T + b``
    penultimate:   (N, D) float32, the input of the final Linear
    prepool_max:   (N, C) float32 or None, per-channel spatial max of the last feature
                   maps before global pooling (C == D for GAP networks); for ViT the
                   head-averaged CLS attention row of the last block, (N, T)
    labels:        (N,) int64, -1 where unknown (OOD sets)
    odin_logits:   (E, N, K) float32 or None, raw logits (not divided by T) of the input
                   perturbed by ODIN's step for each ε in ``odin_eps``, the gradient taken
                   at temperature ``odin_temperature``
    """

    logits: Tensor
    penultimate: Tensor
    labels: Tensor
    prepool_max: Tensor | None = None
    odin_logits: Tensor | None = None
    odin_eps: tuple[float, ...] = ()
    odin_temperature: float = ODIN_TEMPERATURE

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def to(self, device: torch.device | str) -> "FeatureSet":
        """A copy with every tensor moved to ``device``."""
        return dataclasses.replace(self, **{
            name: value.to(device) for name, value in self._tensors().items()
        })

    def subset(self, index: Tensor) -> "FeatureSet":
        """Rows ``index`` (a (M,) int64 or bool tensor) of every per-sample tensor."""
        out = {name: value[index] for name, value in self._tensors().items() if name != "odin_logits"}
        if self.odin_logits is not None:
            out["odin_logits"] = self.odin_logits[:, index]
        return dataclasses.replace(self, **out)

    def _tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Tensor)}

    @property
    def predictions(self) -> Tensor:
        """(N,) int64 argmax of the logits."""
        return self.logits.argmax(dim=1)


@dataclass
class FitContext:
    """What ``Scorer.fit`` may use. Tensors share one device.

    head_weight: (K, D) float32, the final Linear's weight W
    head_bias:   (K,) float32, its bias b
    stats:       training statistics by name (see :mod:`ood_core.statistics`)
    """

    head_weight: Tensor
    head_bias: Tensor
    stats: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.head_weight.device

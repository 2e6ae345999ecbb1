"""Methods built as a composition of declared head stages (the one way methods combine).

Every static head-modifying method is ``energy((W ⊙ M)·(m ⊙ t(h)) + b)``: a feature
transform t (ReAct's clip), a weight mask M (DICE, OPP) and a unit mask m (ONP), each given
by a :class:`HeadStage` that declares its params and training statistics. ReAct is
``(clip,)``, DICE ``(dice mask,)``, DICE + ReAct ``(clip, dice mask)``, OPNP + ReAct
``(clip, OPNP weight mask, OPNP unit mask)``: a combination is a tuple of stages, registered
under a name, with no subclass hooks and no on/off switches.

Reference: the masks computed from scratch and applied as written. Fast path: the stage
masks folded into one masked weight W ⊙ M ⊙ m[None, :], memoised per mask setting, so a
call is the transform and one GEMM (a clip-only slider rebuilds nothing).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ood_core import stages
from ood_core.memo import Memo
from ood_core.params import Param
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import OODLensError
from ood_core.scorers.base import ShapedHeadScorer


class HeadStage:
    """One declared piece of a modified linear head; the defaults do nothing.

    ``params`` / ``stats``: what the stage adds to the method's declarations;
    ``mask_params``: the names of the params its masks depend on (the memo key).
    """

    params: tuple[Param, ...] = ()
    stats: frozenset[str] = frozenset()
    mask_params: tuple[str, ...] = ()

    def transform(self, h: Tensor, stats: Mapping[str, Tensor], values: Mapping[str, Any]) -> Tensor:
        """(N, D) features entering the head."""
        return h

    def row_transform(self, stats: Mapping[str, Tensor], values: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | None:
        """:meth:`transform` for one setting as a function of a row chunk (its parameters read
        once, not per chunk), or None when the stage leaves the features alone."""
        if type(self).transform is HeadStage.transform:
            return None
        return lambda h: self.transform(h, stats, values)  # a stage that did not prepare its own

    def weight_mask(self, ctx: FitContext, values: Mapping[str, Any]) -> Tensor | None:
        """(K, D) bool keep-mask of the head weights, or None."""
        return None

    def unit_mask(self, ctx: FitContext, values: Mapping[str, Any]) -> Tensor | None:
        """(D,) bool keep-mask of the penultimate units, or None."""
        return None


class ClipStage(HeadStage):
    """ReAct's clip h̄ = min(h, c), c a percentile of ID-validation activations or absolute."""

    stats = frozenset({"val_activations_sorted"})

    def __init__(self, clip_by: str = "percentile", clip_percentile: float = 90.0, clip_value: float = 1.0) -> None:
        self.params = stages.clip_params(clip_by, clip_percentile, clip_value)

    @staticmethod
    def threshold(stats: Mapping[str, Tensor], values: Mapping[str, Any]) -> float:
        return stages.clip_threshold(stats["val_activations_sorted"], str(values["clip_by"]),
                                     float(values["clip_percentile"]), float(values["clip_value"]))

    def transform(self, h: Tensor, stats: Mapping[str, Tensor], values: Mapping[str, Any]) -> Tensor:
        return stages.clip_activations(h, self.threshold(stats, values))

    def row_transform(self, stats: Mapping[str, Tensor], values: Mapping[str, Any]) -> Callable[[Tensor], Tensor]:
        threshold = self.threshold(stats, values)
        return lambda h: stages.clip_activations(h, threshold)


def _all_of(masks: list[Tensor]) -> Tensor | None:
    if not masks:
        return None
    out = masks[0]
    for mask in masks[1:]:
        out = out & mask
    return out


class ComposedHeadScorer(ShapedHeadScorer):
    """S = LSE((W ⊙ M)·(m ⊙ t(h)) + b) for the stages given at construction; higher = more ID.

    needs: penultimate (N, D) float32; stats and params: the union of the stages'.
    """

    needs = frozenset({"penultimate"})
    fast_path = "stage masks folded into one masked weight, memoised per mask setting: one GEMM per call"

    def __init__(self, name: str, title: str, paper: str, head_stages: tuple[HeadStage, ...],
                 joint: tuple[tuple[str, ...], ...] = (), summary: str = "", **default_overrides: Any) -> None:
        self.head_stages = tuple(head_stages)
        self.joint = tuple(joint)
        self.paper = paper
        self.params = tuple(p for stage in self.head_stages for p in stage.params)
        self.stats = frozenset().union(*(stage.stats for stage in self.head_stages))
        super().__init__(name=name, title=title, summary=summary, **default_overrides)
        self._masked_weights = Memo(max_bytes=256 << 20)  # mask setting → W ⊙ M ⊙ m (K, D)

    # -- the plain formula -------------------------------------------------------------
    def features(self, h: Tensor, values: Mapping[str, Any]) -> Tensor:
        """t(h): every stage's transform in order."""
        for stage in self.head_stages:
            h = stage.transform(h, self.fitted.stats, values)
        return h

    def weight_mask(self, **hparams: Any) -> Tensor | None:
        """(K, D) bool: the AND of the stages' weight masks (None when no stage masks weights)."""
        values = self.resolve(hparams)
        return _all_of([m for s in self.head_stages if (m := s.weight_mask(self.fitted, values)) is not None])

    def unit_mask(self, **hparams: Any) -> Tensor | None:
        """(D,) bool: the AND of the stages' unit masks (None when no stage masks units)."""
        values = self.resolve(hparams)
        return _all_of([m for s in self.head_stages if (m := s.unit_mask(self.fitted, values)) is not None])

    def threshold(self, **hparams: Any) -> float:
        """The clip threshold c (an absolute activation) of the method's clip stage."""
        for stage in self.head_stages:
            if isinstance(stage, ClipStage):
                return stage.threshold(self.fitted.stats, self.resolve(hparams))
        raise OODLensError(f"{self.name} does not clip activations")

    def reference_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32 (W ⊙ M)·(m ⊙ t(h)) + b, masks computed afresh."""
        values = self.resolve(hparams)
        h = self.features(feats.penultimate.float(), values)
        weight, bias = self.head_on(h.device)
        weight_mask, unit_mask = self.weight_mask(**values), self.unit_mask(**values)
        return stages.masked_head_logits(h, weight, bias,
                                         None if weight_mask is None else weight_mask.to(h.device),
                                         None if unit_mask is None else unit_mask.to(h.device))

    # -- the fast path -------------------------------------------------------------------
    def masked_weight(self, values: Mapping[str, Any], device: torch.device) -> Tensor:
        """(K, D) float32 W ⊙ M ⊙ m[None, :], memoised per mask setting."""
        key = tuple((name, values[name]) for stage in self.head_stages for name in stage.mask_params)

        def build() -> Tensor:
            weight = self.fitted.head_weight.float()
            weight_mask, unit_mask = self.weight_mask(**values), self.unit_mask(**values)
            if weight_mask is not None:
                weight = weight * weight_mask.to(weight.dtype)
            if unit_mask is not None:
                weight = weight * unit_mask.to(weight.dtype)[None, :]
            return weight

        return self._masked_weights.get(key, build).to(device)

    def modified_logits(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N, K) float32: the stages' transforms and one GEMM with the memoised masked weight,
        in row chunks (``stages.chunked_head_logits``: no (N, D) temporary)."""
        values = self.resolve(hparams)
        device = feats.penultimate.device
        _, bias = self.head_on(device)
        transforms = [t for stage in self.head_stages
                      if (t := stage.row_transform(self.fitted.stats, values)) is not None]

        def transform(h: Tensor) -> Tensor:
            for step in transforms:
                h = step(h)
            return h

        return stages.chunked_head_logits(feats.penultimate, self.masked_weight(values, device), bias,
                                          transform if transforms else None)

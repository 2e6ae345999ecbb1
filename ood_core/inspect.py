"""Score one image under every method (the app's Inspect page).

The model runs **once** on the transformed image; the result becomes a one-row
:class:`FeatureSet` (logits, penultimate, prepool_max and, when the benchmark caches an
ODIN ε grid and perturbation is available, ODIN logits), and every fitted scorer scores
that row. Each score is placed among the method's ID-test scores (its percentile) and
judged at the 95 %-TPR threshold of those scores (the same threshold FPR95 uses:
``score ≥ threshold`` → ID); :func:`consensus` counts how many methods flag the image.

Classes are named with what they are the argmax of: :attr:`Inspection.prediction` is the
model's own (softmax of the unmodified head); a method that modifies the head (LINe's ĉ on
clipped features) can pick another class, and the page shows both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ood_core import metrics
from ood_core.models.base import OODModel, Preprocessing
from ood_core.registry import OODLensError
from ood_core.models.perturb import odin_perturbed_logits
from ood_core.records import FeatureSet
from ood_core.scorers.base import Scorer


class _BenchmarkLike(Protocol):
    id_test: FeatureSet
    class_names: Sequence[str]

    def scorer(self, name: str) -> Scorer: ...


@dataclass(frozen=True)
class MethodVerdict:
    """One method's judgement of the image.

    score: the method's score (higher = more ID); percentile: share (0–100) of ID-test
    scores ≤ score; threshold: the 95 %-TPR threshold; is_id: ``score ≥ threshold``.
    """

    method: str
    score: float
    percentile: float
    threshold: float
    is_id: bool

    @property
    def verdict(self) -> str:
        return "ID" if self.is_id else "OOD"


@dataclass(frozen=True)
class Consensus:
    """How many of the methods that scored an image flag it as OOD at their 95 %-TPR thresholds.

    flagged: k; total: n (methods that scored it; skipped ones are not counted);
    ood_methods: the k method names, in the order given.
    """

    flagged: int
    total: int
    ood_methods: tuple[str, ...]


def consensus(verdicts: Mapping[str, MethodVerdict]) -> Consensus:
    """k of n: the verdicts (by method name) that say OOD (``score < threshold``), and how many there are."""
    ood = tuple(method for method, verdict in verdicts.items() if not verdict.is_id)
    return Consensus(flagged=len(ood), total=len(verdicts), ood_methods=ood)


def class_name(names: Sequence[str], index: int) -> str:
    """The name of class ``index`` (its number when ``names`` is shorter)."""
    return names[index] if 0 <= index < len(names) else str(index)


@dataclass
class Inspection:
    """Everything the Inspect page shows for one image.

    model_input: (C, H, W) float32, the transformed tensor the model saw;
    display: (H, W, 3) uint8, ``model_input`` un-normalised for display;
    features: the one-row FeatureSet; top5: [(class index, class name, probability)];
    verdicts: by method name; skipped: method name → why it could not score this image.
    """

    model_input: Tensor
    display: np.ndarray
    features: FeatureSet
    top5: list[tuple[int, str, float]]
    verdicts: dict[str, MethodVerdict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def prediction(self) -> tuple[int, str, float]:
        """The model's prediction (class index, name, probability): argmax of the softmax of the
        unmodified head, i.e. ``top5[0]``."""
        return self.top5[0]

    @property
    def consensus(self) -> Consensus:
        return consensus(self.verdicts)


def to_display(model_input: Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """Undo ``Normalize``: (C, H, W) float → (H, W, 3) uint8 (grey inputs are repeated)."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(-1, 1, 1)
    pixels = (model_input.detach().float().cpu() * std + mean).clamp(0, 1)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def image_features(model: OODModel, image: Image.Image, *, odin_eps: Sequence[float] = (),
                   odin_temperature: float = 1000.0) -> tuple[Tensor, FeatureSet]:
    """Transform ``image``, run ``model`` once, return (model_input (C,H,W), 1-row FeatureSet).

    ODIN logits (E, 1, K) are added when ``odin_eps`` is given and
    ``ood_core.models.perturb.odin_perturbed_logits`` is available (one extra
    forward/backward per ε on one image: cheap).
    """
    device = next(model.parameters()).device
    model_input = model.transform()(image).float()
    batch = model_input.unsqueeze(0).to(device)
    with torch.inference_mode():
        outputs = model(batch)
    odin_logits = None
    if odin_eps:
        odin_logits = _odin_logits(model, batch, tuple(odin_eps), odin_temperature)
    feats = FeatureSet(
        logits=outputs.logits.float(), penultimate=outputs.penultimate.float(),
        labels=torch.full((1,), -1, dtype=torch.long, device=device),
        prepool_max=None if outputs.prepool_max is None else outputs.prepool_max.float(),
        odin_logits=odin_logits, odin_eps=tuple(odin_eps) if odin_logits is not None else (),
        odin_temperature=odin_temperature,
    )
    return model_input, feats


def _odin_logits(model: OODModel, batch: Tensor, eps: tuple[float, ...], temperature: float) -> Tensor:
    """(E, 1, K) perturbed logits of one image for ODIN's ε grid."""
    logits = odin_perturbed_logits(model, batch, temperature=temperature, eps_grid=eps)
    return logits.detach().float()


def _missing_needs(scorer: Scorer, feats: FeatureSet) -> list[str]:
    return [need for need in scorer.needs if getattr(feats, need, None) is None]


def verdict_of(method: str, score: float, id_scores: Tensor) -> MethodVerdict:
    """Place ``score`` among ``id_scores`` (N,) and judge it at the 95 %-TPR threshold."""
    ordered = id_scores.detach().double().reshape(-1).sort().values
    rank = torch.searchsorted(ordered, torch.tensor([score], dtype=torch.float64, device=ordered.device), right=True)
    threshold = metrics.threshold_at_95_tpr(ordered)
    return MethodVerdict(method=method, score=float(score), percentile=100.0 * float(rank) / ordered.numel(),
                         threshold=threshold, is_id=bool(score >= threshold))


def inspect_image(
    bench: _BenchmarkLike,
    model: OODModel,
    image: Image.Image,
    methods: Sequence[str],
    *,
    hparams: Mapping[str, Mapping[str, Any]] | None = None,
    id_scores: Mapping[str, Tensor] | None = None,
) -> Inspection:
    """Score ``image`` under each of ``methods``.

    hparams: per-method hyperparameters (defaults otherwise);
    id_scores: per-method ID-test scores already computed (e.g. by ``evaluate_method``,
    cached by the app); computed here from ``bench.id_test`` when absent.
    """
    if not methods:
        raise OODLensError("choose at least one method to score the image with")
    id_feats = bench.id_test
    model_input, feats = image_features(model, image, odin_eps=id_feats.odin_eps if id_feats.odin_logits is not None else (),
                                        odin_temperature=id_feats.odin_temperature)
    probabilities = torch.softmax(feats.logits[0], dim=0)
    top = probabilities.topk(min(5, probabilities.numel()))
    names = list(bench.class_names)
    top5 = [(int(i), class_name(names, int(i)), float(p)) for p, i in zip(top.values.cpu(), top.indices.cpu())]
    result = Inspection(model_input=model_input, display=to_display(model_input, model.preprocessing),
                        features=feats, top5=top5)
    with torch.inference_mode():
        for method in methods:
            scorer = bench.scorer(method)
            missing = _missing_needs(scorer, feats)
            if missing:
                result.skipped[method] = f"needs {', '.join(missing)}, not available for an uploaded image"
                continue
            params = dict((hparams or {}).get(method, {}))
            score = float(scorer.score(feats.to(id_feats.device), **params)[0])
            reference = (id_scores or {}).get(method)
            if reference is None:
                reference = scorer.score(id_feats, **params)
            result.verdicts[method] = verdict_of(method, score, reference)
    return result

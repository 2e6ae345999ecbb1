"""NAP: neural activation prior (Wan, Zhang, Jin et al., arXiv 2402.18162 v4), docs/methods.md §3.13.

CNN score on the pre-pool map A (C×H×W, after ReLU), per channel j:

    S_NAP = (1/C) Σ_j (Max_j / (Mean_j + ε))²,   ε = 1.0 in the paper.

From the cache, Max_j = ``prepool_max`` and Mean_j = ``penultimate``: this requires a GAP
network whose penultimate feature *is* the spatial mean of the same map (DenseNet
avg_pool2d, torchvision ResNet, MobileNetV2). When ``prepool_max`` has another width than
``penultimate`` (ViT: the head-averaged CLS attention row), the transformer score
S = max of the CLS attention row is used and ε is ignored.

NAP-X is a composition declared at registration: NAP and a partner scorer S* (Energy, MSP,
ReAct, DICE, ASH-S, KNN at their default parameters), combined by a weighted geometric
mean in log space, w·log S* + (1 − w)·log S_NAP, with both clamped to ≥ 1e-12. For KNN,
S* is the k-th cosine similarity 1 + score/2 (the KNN score is −d² on unit vectors).
S_NAP always comes from the raw, unclipped map.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import Tensor

from ood_core.memo import Memo
from ood_core.params import Param
from ood_core.records import FeatureSet
from ood_core.registry import SCORERS, OODLensError
from ood_core.scorers.ash import build_ash_s
from ood_core.scorers.base import Scorer
from ood_core.scorers.dice import build_dice
from ood_core.scorers.energy import EnergyScorer
from ood_core.scorers.knn import KNNScorer
from ood_core.scorers.msp import MSPScorer
from ood_core.scorers.react import build_react

MIN_POSITIVE = 1e-12
PAPER = "Wan, Zhang, Jin et al. Out-of-Distribution Detection using Neural Activation Prior. arXiv 2402.18162."
EPSILON = Param("epsilon", 1.0, low=0.01, high=10.0, step=0.01, log=True, label="ε",
                help="Stabiliser in max/(mean + ε); scale-dependent, 1.0 in the paper.",
                search=(0.1, 0.3, 1.0, 3.0, 10.0))
WEIGHT = Param("weight", 0.5, low=0.0, high=1.0, step=0.05, label="w (weight of S*)",
               help="Weight w of S* in w·log S* + (1 − w)·log S_NAP (the paper's CIFAR-10 values per variant).",
               search=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))


def nap_score(prepool_max: Tensor, channel_mean: Tensor, epsilon: float) -> Tensor:
    """S_NAP = mean_j (max_j / (mean_j + ε))²: (N, C), (N, C) → (N,) float32."""
    return ((prepool_max.float() / (channel_mean.float() + epsilon)) ** 2).mean(dim=1)


def geometric_mean(s_star: Tensor, s_nap: Tensor, weight: float) -> Tensor:
    """w·log S* + (1 − w)·log S_NAP (ranks as S*^w · S_NAP^(1−w)), both clamped to ≥ 1e-12."""
    return (weight * torch.log(s_star.clamp(min=MIN_POSITIVE))
            + (1.0 - weight) * torch.log(s_nap.clamp(min=MIN_POSITIVE))).float()


def _identity(score: Tensor) -> Tensor:
    return score


def knn_similarity(score: Tensor) -> Tensor:
    """KNN's −d² of unit vectors → the cosine similarity 1 − d²/2."""
    return 1.0 + score / 2.0


class NapScorer(Scorer):
    """NAP alone (no partner) or NAP-X (geometric mean with a partner's score); higher = ID.

    needs: penultimate (N, D) float32 (= per-channel mean), prepool_max (N, D) float32, and
    what the partner needs. Training statistics: the partner's.
    """

    title = "NAP"
    paper = PAPER
    fast_path = "the partner's score (independent of ε and w) memoised per feature set"

    def __init__(self, name: str = "nap", title: str = "NAP", partner: Callable[[], Scorer] | None = None,
                 similarity: Callable[[Tensor], Tensor] = _identity, **default_overrides: Any) -> None:
        self.partner = partner() if partner is not None else None
        self.similarity = similarity
        self.params = (EPSILON,) if self.partner is None else (EPSILON, WEIGHT)
        self.stats = frozenset() if self.partner is None else frozenset(self.partner.stats)
        self.needs = frozenset({"penultimate", "prepool_max"}) | (self.partner.needs if self.partner else frozenset())
        summary = ("How peaked each channel's activation map is (max over mean): ID maps are peaky."
                   if self.partner is None else
                   f"NAP's peakiness times {self.partner.title}'s score, as a weighted geometric mean.")
        super().__init__(name=name, title=title, summary=summary, **default_overrides)
        self._partner_scores = Memo(max_entries=32)  # feature set → S*

    def fit(self, ctx) -> "NapScorer":
        super().fit(ctx)
        if self.partner is not None:
            self.partner.fit(ctx)
        return self

    def nap(self, feats: FeatureSet, epsilon: float) -> Tensor:
        """(N,) float32 S_NAP from the raw (unclipped) cached map statistics."""
        if feats.prepool_max is None:
            raise OODLensError(f"{self.name} needs the per-channel pre-pool max (prepool_max), which this cache lacks")
        if feats.prepool_max.shape[1] != feats.penultimate.shape[1]:
            return feats.prepool_max.float().max(dim=1).values  # ViT: max of the CLS attention row
        return nap_score(feats.prepool_max, feats.penultimate, epsilon)

    def _combine(self, feats: FeatureSet, values: dict[str, Any], s_star: Tensor | None) -> Tensor:
        s_nap = self.nap(feats, values["epsilon"])
        return s_nap if s_star is None else geometric_mean(self.similarity(s_star.float()), s_nap,
                                                           float(values["weight"]))

    def reference(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32: S_NAP, or the geometric mean with the partner's reference score."""
        values = self.resolve(hparams)
        return self._combine(feats, values, None if self.partner is None else self.partner.reference(feats))

    def partner_score(self, feats: FeatureSet) -> Tensor | None:
        """(N,) the partner's score S* (None for NAP alone), memoised per feature set: it does
        not depend on ε or w. Keyed by the feature tensor the partner reads."""
        if self.partner is None:
            return None
        key = feats.penultimate if "penultimate" in self.partner.needs else feats.logits
        return self._partner_scores.get("partner", lambda: self.partner.score(feats), tensor=key)

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        return self._combine(feats, self.resolve(hparams), self.partner_score(feats))

    def clamped(self, feats: FeatureSet) -> int:
        """How many samples' S* fall below 1e-12 and are clamped (0 for NAP alone)."""
        s_star = self.partner_score(feats)
        return 0 if s_star is None else int((self.similarity(s_star.float()) < MIN_POSITIVE).sum())


SCORERS.register("nap")(functools.partial(NapScorer, name="nap", title="NAP"))
for _name, _title, _partner, _weight, _similarity in [
    ("nap-e", "NAP-E", EnergyScorer, 0.4, _identity), ("nap-m", "NAP-M", MSPScorer, 0.5, _identity),
    ("nap-r", "NAP-R", build_react, 0.4, _identity), ("nap-d", "NAP-D", build_dice, 0.5, _identity),
    ("nap-a", "NAP-A", build_ash_s, 0.5, _identity), ("nap-k", "NAP-K", KNNScorer, 0.8, knn_similarity),
]:
    SCORERS.register(_name)(functools.partial(NapScorer, name=_name, title=_title, partner=_partner,
                                              similarity=_similarity, weight=_weight))

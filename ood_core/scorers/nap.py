"""NAP: neural activation prior (Wan, Zhang, Jin et al., arXiv 2402.18162 v4), methods.md §3.13.

CNN score on the pre-pool map A (C×H×W, after ReLU), per channel j:
  S_NAP = (1/C) Σ_j (Max_j / (Mean_j + ε))²,   ε = 1.0 in the paper.
From the cache, Max_j = ``prepool_max`` and Mean_j = ``penultimate``: this requires a GAP
network whose penultimate feature *is* the spatial mean of the same map (DenseNet
avg_pool2d, torchvision ResNet, MobileNetV2). When ``prepool_max`` has another width than
``penultimate`` (ViT: the head-averaged CLS attention row), the transformer score
S = max of the CLS attention row is used and ε is ignored.

NAP-X combines with another score S* by a weighted geometric mean, in log space:
  w·log S* + (1 − w)·log S_NAP,  S* clamped to ≥ 1e-12 (the count is ``last_clamped``).
S* is the default-parameter score of the registered scorer (energy / msp / react / dice /
ash-s), and for KNN the k-th cosine similarity 1 + score/2 (the knn score is −d² on unit
vectors). S_NAP always comes from the raw, unclipped map.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import Tensor

from ood_core.registry import OODLensError, UnknownNameError
from ood_core.scorers import create_scorer, register_scorer
from ood_core.scorers.base import FeatureSet, FitContext, MissingStatsError, Param, Scorer

# combine choice → registered scorer providing S*
COMBINED_SCORERS: dict[str, str] = {
    "energy": "energy", "msp": "msp", "react": "react", "dice": "dice", "ash": "ash-s", "knn": "knn",
}
MIN_POSITIVE = 1e-12


def nap_score(prepool_max: Tensor, channel_mean: Tensor, epsilon: float) -> Tensor:
    """S_NAP = mean_j (max_j / (mean_j + ε))²: (N, C), (N, C) → (N,) float32."""
    return ((prepool_max.float() / (channel_mean.float() + epsilon)) ** 2).mean(dim=1)


class NapScorer(Scorer):
    """NAP alone (``combine = "none"``) or NAP-X (weighted geometric mean with S*); higher = ID.

    needs: penultimate (N, D) float32 (= per-channel mean), prepool_max (N, D) float32, and
    logits for the logit-based combinations. Training statistics: those of the combined scorer.
    """

    name: ClassVar[str] = "nap"
    title: ClassVar[str] = "NAP"
    paper: ClassVar[str] = ("Wan, Zhang, Jin et al. Out-of-Distribution Detection using Neural Activation "
                            "Prior. arXiv 2402.18162.")
    needs: ClassVar[frozenset[str]] = frozenset({"logits", "penultimate", "prepool_max"})
    stats: ClassVar[frozenset[str]] = frozenset()
    params: ClassVar[tuple[Param, ...]] = (
        Param("epsilon", 1.0, low=0.01, high=10.0, step=0.01, log=True, label="ε",
              help="Stabiliser in max/(mean + ε); scale-dependent, 1.0 in the paper."),
        Param("combine", "none", kind="choice", choices=("none",) + tuple(COMBINED_SCORERS),
              label="combine with",
              help="Score S* combined with NAP by a weighted geometric mean (none = NAP alone)."),
        Param("weight", 0.5, low=0.0, high=1.0, step=0.05, label="w (weight of S*)",
              help="Weight w of S* in w·log S* + (1 − w)·log S_NAP (the paper's CIFAR-10 values per variant)."),
    )

    def __init__(self, name: str | None = None, title: str | None = None, **default_overrides: Any) -> None:
        super().__init__(**default_overrides)
        if name is not None:
            self.name = name
        if title is not None:
            self.title = title
        # The statistics this instance needs are those of its default combination.
        self.stats = frozenset(self._combined_stats(self._defaults["combine"]))
        self.last_clamped = 0  # samples whose S* was clamped to 1e-12 in the last score() call
        self._combined: dict[str, Scorer] = {}

    @staticmethod
    def _combined_stats(combine: str) -> frozenset[str]:
        if combine == "none":
            return frozenset()
        try:
            return frozenset(create_scorer(COMBINED_SCORERS[combine]).stats)
        except UnknownNameError:  # not registered (yet): fit() reports it when it is needed
            return frozenset()

    def fit(self, ctx: FitContext) -> "NapScorer":
        super().fit(ctx)
        self._combined = {}
        if self._defaults["combine"] != "none":
            self.combined_scorer(self._defaults["combine"])  # fail at fit time, not at the first score
        return self

    def forget_tensors(self) -> None:
        super().forget_tensors()
        for inner in getattr(self, "_combined", {}).values():
            inner.forget_tensors()

    def combined_scorer(self, combine: str) -> Scorer:
        """The fitted scorer giving S* for ``combine`` (memoised)."""
        if combine not in self._combined:
            inner = create_scorer(COMBINED_SCORERS[combine])
            missing = sorted(s for s in inner.stats if s not in self.fitted.stats)
            if missing:
                raise MissingStatsError(f"{self.name} with combine={combine!r} needs training statistics {missing}")
            self._combined[combine] = inner.fit(self.fitted)
        return self._combined[combine]

    def nap(self, feats: FeatureSet, epsilon: float) -> Tensor:
        """(N,) float32 S_NAP from the raw (unclipped) cached map statistics."""
        if feats.prepool_max is None:
            raise OODLensError(f"{self.name} needs the per-channel pre-pool max (prepool_max), which this cache lacks")
        if feats.prepool_max.shape[1] != feats.penultimate.shape[1]:
            return feats.prepool_max.float().max(dim=1).values  # ViT: max of the CLS attention row
        return nap_score(feats.prepool_max, feats.penultimate, epsilon)

    def combined_score(self, feats: FeatureSet, combine: str) -> Tensor:
        """(N,) float32 S* (before clamping), default params of the combined scorer."""
        score = self.combined_scorer(combine).score(feats).float()
        if combine == "knn":
            return 1.0 + score / 2.0  # −d² of unit vectors → cosine similarity 1 − d²/2
        return score

    def score(self, feats: FeatureSet, **hparams: Any) -> Tensor:
        """(N,) float32: S_NAP, or w·log S* + (1 − w)·log S_NAP for a combination."""
        values = self.resolve(hparams)
        s_nap = self.nap(feats, values["epsilon"])
        if values["combine"] == "none":
            self.last_clamped = 0
            return s_nap
        s_star = self.combined_score(feats, values["combine"])
        self.last_clamped = int((s_star < MIN_POSITIVE).sum())
        w = float(values["weight"])
        # Geometric mean in log space (ranks as S*^w · S_NAP^(1−w)); both clamped to stay finite.
        combined = w * torch.log(s_star.clamp(min=MIN_POSITIVE)) + (1.0 - w) * torch.log(s_nap.clamp(min=MIN_POSITIVE))
        return combined.float()


register_scorer("nap")(functools.partial(NapScorer, name="nap", title="NAP"))
register_scorer("nap-e")(functools.partial(NapScorer, name="nap-e", title="NAP-E", combine="energy", weight=0.4))
register_scorer("nap-m")(functools.partial(NapScorer, name="nap-m", title="NAP-M", combine="msp", weight=0.5))
register_scorer("nap-r")(functools.partial(NapScorer, name="nap-r", title="NAP-R", combine="react", weight=0.4))
register_scorer("nap-d")(functools.partial(NapScorer, name="nap-d", title="NAP-D", combine="dice", weight=0.5))
register_scorer("nap-a")(functools.partial(NapScorer, name="nap-a", title="NAP-A", combine="ash", weight=0.5))
register_scorer("nap-k")(functools.partial(NapScorer, name="nap-k", title="NAP-K", combine="knn", weight=0.8))

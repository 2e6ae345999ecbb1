"""pytorch-ood 0.4.0's detectors on our cached features: one adapter per method.

>>> ref = reference("dice", synthetic, sparsity=90.0)     # doctest: +SKIP
>>> ref(bench.id_test)                                     # (N,) higher = more ID, like ours

Shared by the parity tests (``tests/parity``) and ``bench/bench_scoring.py``. Hyperparameters
are ours, by our names and units; each adapter converts them to pytorch-ood's:

* pytorch-ood returns *outlier* scores (higher = OOD): :meth:`Reference.__call__` negates them
  (``Reference.outlier_scores`` keeps theirs, for timing);
* its percentiles are fractions (ours percent); its ASH wants 4-D maps, so pooled features go
  in as (N, D, 1, 1); its ReAct / ASH take the head as a callable, GradNorm / ODIN as a module;
* its GradNorm averages the head gradient over the K classes: 1/K times ours (same ranking);
* its Mahalanobis, ViM, DICE and ReAct (percentile clip) fit on the training (ReAct: ID
  validation) features themselves, not on our statistics.

KNN has no counterpart (pytorch-ood's KNN is 1-NN on unnormalised features, another method).

``data`` is anything with ``head_weight`` (K, D), ``head_bias`` (K,), ``train_features``
(M, D), ``train_labels`` (M,) and ``val_features`` (V, D): an :class:`ood_core.synthetic.Synthetic`
or a test's fixture. pytorch-ood is imported when a detector is built (a dev dependency).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from ood_core.records import ODIN_TEMPERATURE, FeatureSet

__all__ = ["METHODS", "FitInputs", "Reference", "odin_feature_set", "reference", "reference_scores"]

# Our methods pytorch-ood implements (the same method, scored on the same features).
METHODS = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "vim", "gradnorm", "react", "dice",
           "ash-p", "ash-b", "ash-s")


class FitInputs(Protocol):
    head_weight: Tensor
    head_bias: Tensor
    train_features: Tensor
    train_labels: Tensor
    val_features: Tensor


@dataclass
class Reference:
    """pytorch-ood's fitted detector for one of our methods.

    detector: the pytorch-ood object (the class for the static logit scores);
    outlier_scores: FeatureSet → (N,) pytorch-ood's scores (higher = more OOD); note: what differs
    from a plain call on our features ("" when nothing does).
    """

    method: str
    detector: Any
    outlier_scores: Callable[[FeatureSet], Tensor]
    note: str = ""

    def __call__(self, feats: FeatureSet) -> Tensor:
        """(N,) float32 scores with our convention: higher = more in-distribution."""
        with torch.no_grad():
            return -self.outlier_scores(feats).float()


def reference(method: str, data: FitInputs, **hparams: Any) -> Reference:
    """pytorch-ood's detector for ``method`` at our ``hparams`` (our names and units; missing
    ones take our scorer's defaults), fitted on ``data`` where it fits."""
    if method not in METHODS:
        raise ValueError(f"pytorch-ood has no counterpart of {method!r}; it has {', '.join(METHODS)}")
    from pytorch_ood import detector as pod

    from ood_core.scorers import create_scorer

    hp = create_scorer(method).resolve(hparams)
    weight, bias = data.head_weight.float(), data.head_bias.float()
    head = _linear(weight, bias)
    if method in ("msp", "maxlogit", "energy"):
        score = {"msp": lambda z: pod.MaxSoftmax.score(z),
                 "maxlogit": lambda z: pod.MaxLogit.score(z),
                 "energy": lambda z: pod.EnergyBased.score(z, float(hp["temperature"]))}[method]
        cls = {"msp": pod.MaxSoftmax, "maxlogit": pod.MaxLogit, "energy": pod.EnergyBased}[method]
        return Reference(method, cls, lambda f: score(f.logits))
    if method == "odin":
        odin = pod.ODIN(_module(weight, bias), eps=float(hp["epsilon"]), temperature=float(hp["temperature"]))
        return Reference(method, odin, lambda f: odin.predict(f.penultimate), "perturbs h through the head")
    if method == "gradnorm":
        grad = pod.GradNorm(_module(weight, bias), param_filter=lambda name: name == "weight",
                            temperature=float(hp["temperature"]))
        return Reference(method, grad, lambda f: grad.predict(f.penultimate), "1/K of ours")
    if method == "mahalanobis":
        maha = pod.Mahalanobis(None).fit_features(data.train_features, data.train_labels)
        return Reference(method, maha, lambda f: maha.predict_features(f.penultimate))
    if method == "vim":
        vim = pod.ViM(None, d=int(hp["dim"]), w=weight, b=bias).fit_features(data.train_features, data.train_labels)
        return Reference(method, vim, lambda f: vim.predict_features(f.penultimate))
    if method == "dice":
        dice = pod.DICE(None, w=weight, b=bias, p=float(hp["sparsity"]) / 100.0)
        dice.fit_features(data.train_features, data.train_labels)
        return Reference(method, dice, lambda f: dice.predict_features(f.penultimate), "builds an N×K×D tensor")
    if method == "react":
        if hp["clip_by"] == "percentile":
            react = pod.ReAct(backbone=None, head=head, percentile=float(hp["clip_percentile"]) / 100.0)
            val = data.val_features
            react.fit_feature_maps(val, torch.zeros(len(val), dtype=torch.long, device=val.device))
        else:
            react = pod.ReAct(backbone=None, head=head, threshold=float(hp["clip_value"]))
        return Reference(method, react, lambda f: react.predict_feature_maps(f.penultimate))
    ash = pod.ASH(backbone=lambda x: x, head=head, variant=method, percentile=float(hp["percentile"]) / 100.0)
    return Reference(method, ash, lambda f: ash.predict_feature_maps(f.penultimate.view(len(f), -1, 1, 1)),
                     "h.view(N, D, 1, 1)")


def reference_scores(method: str, data: FitInputs, feats: FeatureSet, **hparams: Any) -> Tensor:
    """(N,) pytorch-ood's scores of ``feats`` for ``method``, higher = more ID (ours)."""
    return reference(method, data, **hparams)(feats)


def odin_feature_set(data: FitInputs, feats: FeatureSet, epsilon: float,
                     temperature: float = ODIN_TEMPERATURE) -> FeatureSet:
    """``feats`` with the ODIN logits our cache would hold, perturbed by pytorch-ood's
    ``odin_preprocessing`` with the feature as ODIN's input and the head as the model."""
    from pytorch_ood.detector.odin import odin_preprocessing

    model = _module(data.head_weight.float(), data.head_bias.float())
    x_hat = odin_preprocessing(model, feats.penultimate, eps=epsilon, temperature=temperature)
    with torch.no_grad():
        odin_logits = model(x_hat).unsqueeze(0)
    return FeatureSet(logits=feats.logits, penultimate=feats.penultimate, labels=feats.labels,
                      odin_logits=odin_logits, odin_eps=(epsilon,), odin_temperature=temperature)


def _linear(weight: Tensor, bias: Tensor) -> Callable[[Tensor], Tensor]:
    """The head as pytorch-ood's ReAct / ASH call it; 4-D (N, D, 1, 1) maps are flattened."""
    return lambda x: torch.addmm(bias, x.flatten(1), weight.T)


def _module(weight: Tensor, bias: Tensor) -> torch.nn.Linear:
    """The head as an ``nn.Linear`` (what ODIN and GradNorm differentiate)."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], device=weight.device)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return linear

"""Synthetic benchmarks: one generator of cached features, for tests and speed benchmarks.

>>> bench = make_synthetic(SyntheticSettings.toy())        # an ood_core.benchmark.Benchmark
>>> result = evaluate_method(bench, "energy")               # doctest: +SKIP

Features are ReLU(μ + σ ⊙ ε) around K sparse, positive class means (like a ReLU network's
pooled features); the head W is aligned with those means plus noise (informative logits);
OOD rows lie around unseen means (far), around blends of two ID class means (near: they
overlap the ID set) or near the origin. ``prepool_max = h ⊙ (1 + U[0, 1))`` ≥ h; ODIN logits
are exact for the linear head (the feature as ODIN's input) or logits plus ε-scaled noise.
Training statistics are computed as the cache builder does (``compute_statistics`` of every
statistic the registered methods read) from a separate synthetic training split.

Presets: ``SyntheticSettings.toy()`` (scorer unit tests), ``.parity()`` (pytorch-ood parity
tests), ``.cifar()`` / ``.imagenet()`` (``bench/bench_scoring.py``). Deterministic for the
settings (``seed`` included); generated on the CPU, then moved to the device.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ood_core.benchmark import Benchmark
from ood_core.records import ODIN_EPS_GRID, ODIN_TEMPERATURE, FeatureSet
from ood_core.statistics import TrainingData, compute_statistics, required_statistics

OODKind = Literal["far", "near", "mixed", "origin"]
SYNTHETIC_MODEL = "synthetic"
SYNTHETIC_DATASET = "synthetic-id"


@dataclass(frozen=True)
class OODSet:
    """One synthetic OOD set: ``rows`` rows of ``kind``.

    far: around unseen sparse means; near: around the midpoint of two ID class means;
    mixed: the first half far, the rest near; origin: ReLU noise around 0 (no class structure).
    """

    name: str
    rows: int
    kind: OODKind = "far"


@dataclass(frozen=True)
class SyntheticSettings:
    """What :func:`make_synthetic` varies. Sizes are rows; labels cycle through the classes.

    Class means: ``shared_offset·U(D) + Bernoulli(density)·(mean_low + mean_spread·U)``.
    Feature noise: σ_j = noise·(1 − noise_spread + noise_spread·U_j), one σ per dimension.
    Head: W = head_gain·normalize(μ − [mean_c μ_c if centre_head]) + head_gain·head_noise·ε,
    b = bias_noise·ε. ood_means: unseen means (and near blends); None = max(K, 8).
    odin: "exact" (ODIN's step on the linear head), "noise" (logits + 100·ε·N(0, 1)), "none".
    knn_bank: keep the first rows of the KNN bank only (None: every training row).
    """

    classes: int = 10
    dim: int = 64
    train: int = 1000
    val: int = 500
    id_test: int = 600
    ood: tuple[OODSet, ...] = (OODSet("ood", 400, "mixed"),)
    density: float = 0.35
    mean_low: float = 0.5
    mean_spread: float = 1.5
    shared_offset: float = 0.0
    noise: float = 1.0
    noise_spread: float = 0.7
    ood_means: int | None = None
    head_gain: float = 2.0
    head_noise: float = 0.15
    centre_head: bool = False
    bias_noise: float = 0.2
    prepool_max: bool = True
    odin: Literal["exact", "noise", "none"] = "exact"
    knn_bank: int | None = None
    seed: int = 0

    def replace(self, **changes: Any) -> "SyntheticSettings":
        return dataclasses.replace(self, **changes)

    @property
    def ood_rows(self) -> int:
        return sum(s.rows for s in self.ood)

    @classmethod
    def toy(cls, **changes: Any) -> "SyntheticSettings":
        """K = 5, D = 32, separable: 200 ID rows, 150 OOD rows near the origin, exact ODIN logits."""
        return cls(classes=5, dim=32, train=400, val=100, id_test=200, ood=(OODSet("ood", 150, "origin"),),
                   density=0.4, mean_low=1.5, mean_spread=1.0, noise=0.3, noise_spread=0.0, head_gain=3.0,
                   head_noise=1 / 30, bias_noise=0.1, odin="exact").replace(**changes)

    @classmethod
    def parity(cls, **changes: Any) -> "SyntheticSettings":
        """K = 10, D = 64: 600 ID rows, 400 OOD rows half far and half near (overlapping: AUROC < 1)."""
        return cls(seed=2024, prepool_max=False, odin="none").replace(**changes)

    @classmethod
    def cifar(cls, **changes: Any) -> "SyntheticSettings":
        """DenseNet-on-CIFAR-like: 9,000 ID + 20,000 OOD rows in three sets, D = 342, K = 10."""
        return cls._bench_like(**{"classes": 10, "dim": 342, "train": 10_000, "val": 1000, "id_test": 9000,
                                  "ood": (OODSet("ood-isun-like", 8925), OODSet("ood-mnist-like", 10_000),
                                          OODSet("ood-dtd-like", 1075)), **changes})

    @classmethod
    def imagenet(cls, **changes: Any) -> "SyntheticSettings":
        """ResNet-50-on-ImageNet-like: 50,000 ID + 40,000 OOD rows, D = 2048, K = 1000, a 10k KNN bank."""
        return cls._bench_like(**{"classes": 1000, "dim": 2048, "train": 20_000, "val": 1000, "id_test": 50_000,
                                  "ood": (OODSet("ood", 40_000),), "knn_bank": 10_000, **changes})

    @classmethod
    def _bench_like(cls, **values: Any) -> "SyntheticSettings":
        # Head row norm ∝ 1/D: class means separate better as D grows; this keeps the logit
        # margins near 10-20 at every width, so the softmax does not saturate (MSP stays informative).
        values.setdefault("head_gain", 2.0 * 342 / values["dim"])
        return cls(**{"density": 0.2, "mean_low": 0.0, "mean_spread": 2.0, "shared_offset": 0.5, "noise": 0.6,
                      "noise_spread": 0.0, "head_noise": 0.005, "centre_head": True, "bias_noise": 0.1,
                      "odin": "noise", **values})


@dataclass
class Synthetic:
    """What the generator builds: the benchmark and the ground truth behind it.

    train: the training split the statistics were computed from (labels set);
    class_means: (K, D) the generating means μ_c. ``head_weight``, ``head_bias``,
    ``train_features``, ``train_labels`` and ``val_features`` are what a reference
    implementation fits on (``ood_core.testing.pytorch_ood``).
    """

    benchmark: Benchmark
    train: FeatureSet
    class_means: Tensor
    settings: SyntheticSettings

    def __post_init__(self) -> None:
        # What a reference implementation fits on, by the names it expects.
        self.head_weight, self.head_bias = self.benchmark.head_weight, self.benchmark.head_bias
        self.train_features, self.train_labels = self.train.penultimate, self.train.labels
        self.val_features = self.benchmark.id_val.penultimate


def make_synthetic(settings: SyntheticSettings | None = None, device: str | torch.device = "cpu") -> Benchmark:
    """The synthetic :class:`~ood_core.benchmark.Benchmark` of ``settings`` (default: ``.parity()``)."""
    return synthesize(settings, device).benchmark


def synthesize(settings: SyntheticSettings | None = None, device: str | torch.device = "cpu") -> Synthetic:
    """The generator: the benchmark with its training split and generating means.

    The ID test set and the OOD sets are consecutive rows of one block (views, see
    :func:`scored_rows`); every tensor ends on ``device``.
    """
    s = settings or SyntheticSettings.parity()
    gen = torch.Generator().manual_seed(s.seed)
    k, d = s.classes, s.dim

    def sparse_means(count: int) -> Tensor:
        active = torch.rand(count, d, generator=gen) < s.density
        return shared + active * (s.mean_low + s.mean_spread * torch.rand(count, d, generator=gen))

    shared = s.shared_offset * torch.rand(d, generator=gen) if s.shared_offset else torch.zeros(d)
    class_means = sparse_means(k)
    sigma = s.noise * (1.0 - s.noise_spread + s.noise_spread * torch.rand(d, generator=gen))
    direction = class_means - class_means.mean(0) if s.centre_head else class_means
    weight = s.head_gain * (torch.nn.functional.normalize(direction, dim=1)
                            + s.head_noise * torch.randn(k, d, generator=gen))
    bias = s.bias_noise * torch.randn(k, generator=gen)

    def around(means: Tensor, groups: Tensor, out: Tensor | None = None) -> Tensor:
        """ReLU(μ_g + σ ⊙ ε) into ``out`` (N, D) for group indices ``groups`` (N,)."""
        out = torch.empty(len(groups), d) if out is None else out
        out.normal_(generator=gen).mul_(sigma).add_(means[groups])
        return out.clamp_(min=0)

    train_labels = torch.arange(s.train) % k
    train_features = around(class_means, train_labels)
    val_labels = torch.arange(s.val) % k
    val_features = around(class_means, val_labels)

    groups = s.ood_means or max(k, 8)
    far_means = sparse_means(groups)
    pairs = torch.randint(0, k, (groups, 2), generator=gen)
    near_means = 0.5 * (class_means[pairs[:, 0]] + class_means[pairs[:, 1]])
    block = torch.empty(s.id_test + s.ood_rows, d)
    id_labels = torch.arange(s.id_test) % k
    around(class_means, id_labels, block[:s.id_test])
    start = s.id_test
    for ood_set in s.ood:
        rows, start = block[start:start + ood_set.rows], start + ood_set.rows
        if ood_set.kind == "origin":
            around(torch.zeros(1, d), torch.zeros(ood_set.rows, dtype=torch.long), rows)
            continue
        far = {"far": ood_set.rows, "near": 0, "mixed": ood_set.rows // 2}[ood_set.kind]
        for means, part in ((far_means, rows[:far]), (near_means, rows[far:])):
            if len(part):
                around(means, torch.randint(0, groups, (len(part),), generator=gen), part)
    labels = torch.cat([id_labels, torch.full((s.ood_rows,), -1, dtype=torch.long)])

    def feature_set(h: Tensor, y: Tensor) -> FeatureSet:
        logits = torch.addmm(bias, h, weight.T)
        return FeatureSet(logits=logits, penultimate=h, labels=y,
                          prepool_max=h * (1.0 + torch.rand(h.shape, generator=gen)) if s.prepool_max else None,
                          odin_logits=_odin_logits(h, logits, weight, s.odin, gen),
                          odin_eps=ODIN_EPS_GRID if s.odin != "none" else (), odin_temperature=ODIN_TEMPERATURE)

    train = FeatureSet(logits=torch.addmm(bias, train_features, weight.T), penultimate=train_features,
                       labels=train_labels)
    stats = compute_statistics(required_statistics(), TrainingData(
        train.penultimate, train.logits, train.labels, weight, bias, val_features=val_features))
    if s.knn_bank is not None and "knn_bank" in stats:
        stats["knn_bank"] = stats["knn_bank"][:s.knn_bank].contiguous()

    device = torch.device(device)
    id_val = feature_set(val_features, val_labels).to(device)
    scored = feature_set(block, labels).to(device)
    ood, start = {}, s.id_test
    for ood_set in s.ood:
        ood[ood_set.name] = rows_view(scored, start, start + ood_set.rows)
        start += ood_set.rows
    digest = hashlib.sha256(repr(s).encode()).hexdigest()[:16]
    names = [f"{SYNTHETIC_DATASET}/test", *(f"{n}/test" for n in ood)]
    benchmark = Benchmark(
        model=SYNTHETIC_MODEL, id_dataset=SYNTHETIC_DATASET, id_val=id_val, id_test=rows_view(scored, 0, s.id_test),
        ood=ood, head_weight=weight.to(device), head_bias=bias.to(device),
        stats={name: value.to(device) for name, value in stats.items()},
        class_names=tuple(f"class{c}" for c in range(k)), model_fingerprint=digest,
        fingerprints={name: digest for name in [*names, f"{SYNTHETIC_DATASET}/val"]}, cache_root=Path("."),
        model_key=SYNTHETIC_MODEL, rows=dict(zip(names, [s.id_test, *(o.rows for o in s.ood)])))
    return Synthetic(benchmark=benchmark, train=train.to(device), class_means=class_means.to(device), settings=s)


def _odin_logits(h: Tensor, logits: Tensor, weight: Tensor, mode: str, gen: torch.Generator) -> Tensor | None:
    """(E, N, K) raw logits of ODIN's perturbed input for each ε of the grid, or None.

    exact: the feature as ODIN's input, h̃ = h − ε·sign(∇_h CE(z/T, ŷ)) with
    ∇_h CE = (softmax(z/T) − onehot(ŷ)) W / T, then h̃ Wᵀ + b; noise: z + 100·ε·N(0, 1).
    """
    if mode == "none":
        return None
    if mode == "noise":
        return torch.stack([logits + (eps * 100.0) * torch.randn(logits.shape, generator=gen)
                            for eps in ODIN_EPS_GRID])
    onehot = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(h.dtype)
    step = ((torch.softmax(logits / ODIN_TEMPERATURE, 1) - onehot) @ weight / ODIN_TEMPERATURE).sign() @ weight.T
    return torch.stack([logits - eps * step for eps in ODIN_EPS_GRID])


def rows_view(feats: FeatureSet, start: int, stop: int) -> FeatureSet:
    """Rows [start, stop) of every per-sample tensor, as views (no copy)."""
    out: dict[str, Any] = {name: getattr(feats, name)[start:stop]
                           for name in ("logits", "penultimate", "labels", "prepool_max")
                           if getattr(feats, name) is not None}
    if feats.odin_logits is not None:
        out["odin_logits"] = feats.odin_logits[:, start:stop]
    return dataclasses.replace(feats, **out)


def scored_rows(bench: Benchmark) -> FeatureSet:
    """The ID test set then every OOD set, as one FeatureSet: the block they are views of when
    :func:`synthesize` laid them out (no copy), else their concatenation."""
    sets = [bench.id_test, *bench.ood.values()]
    out: dict[str, Any] = {}
    for field in ("logits", "penultimate", "labels", "prepool_max", "odin_logits"):
        parts, dim = [getattr(f, field) for f in sets], 1 if field == "odin_logits" else 0
        whole = None if any(p is None for p in parts) else _whole(parts, dim)
        out[field] = whole if whole is not None or any(p is None for p in parts) else torch.cat(parts, dim)
    return dataclasses.replace(bench.id_test, **out)


def _whole(parts: list[Tensor], dim: int) -> Tensor | None:
    """The tensor ``parts`` are consecutive slices of (along ``dim``, in order, covering it), or None."""
    base = parts[0]._base
    if base is None or any(p._base is not base for p in parts) or sum(p.shape[dim] for p in parts) != base.shape[dim]:
        return None
    starts = [sum(p.shape[dim] for p in parts[:i]) for i in range(len(parts))]
    expected = [base.storage_offset() + base.stride(dim) * start for start in starts]
    return base if [p.storage_offset() for p in parts] == expected else None

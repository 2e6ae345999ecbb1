"""A cached benchmark (one model, one ID set, several OOD sets) and method evaluation on it.

>>> bench = load_benchmark("demo-cnn", "demo-mnist", ["demo-letters"])   # doctest: +SKIP
>>> result = evaluate_method(bench, "energy")                            # doctest: +SKIP
>>> result.average.auroc                                                 # doctest: +SKIP

Everything here runs on cached tensors: scoring a CIFAR-scale benchmark for one method
plus every metric is a handful of batched tensor ops (no per-sample Python loops).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor

from ood_core import paths
from ood_core.cache import store
from ood_core.metrics import OODMetrics, accuracy, average_metrics, evaluate_many
from ood_core.registry import OODLensError
from ood_core.scorers.base import FeatureSet, FitContext, Scorer

FEATURE_FIELDS = ("logits", "penultimate", "prepool_max", "odin_logits")


@dataclass(eq=False)
class Benchmark:
    """Cached features of one (model, ID dataset, OOD datasets) on one device.

    id_val / id_test: ID validation / test :class:`FeatureSet`; ood: name → OOD test set.
    head_weight (K, D), head_bias (K,) float32; stats: the training statistics by name.
    fingerprints: ``"dataset/split"`` → digest of that entry's manifest (changes on rebuild);
    ``fingerprint`` combines them (a hashable cache key for the app).
    """

    model: str
    id_dataset: str
    id_val: FeatureSet
    id_test: FeatureSet
    ood: dict[str, FeatureSet]
    head_weight: Tensor
    head_bias: Tensor
    stats: dict[str, Tensor]
    class_names: tuple[str, ...]
    model_fingerprint: str
    fingerprints: dict[str, str]
    cache_root: Path
    _scorers: dict[str, Scorer] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.id_test.device

    @property
    def fingerprint(self) -> str:
        """16 hex chars identifying every entry this benchmark was loaded from."""
        text = "|".join(f"{k}={v}" for k, v in sorted(self.fingerprints.items()))
        return hashlib.sha256(f"{self.model_fingerprint}|{text}".encode()).hexdigest()[:16]

    def fit_context(self) -> FitContext:
        """What :meth:`Scorer.fit` reads: the head and the training statistics."""
        return FitContext(head_weight=self.head_weight, head_bias=self.head_bias, stats=self.stats)

    def scorer(self, name: str) -> Scorer:
        """The scorer ``name`` fitted on this benchmark (fitted once per instance), with the
        model's registered defaults (``ood_core.models.method_defaults``) applied."""
        if name not in self._scorers:
            from ood_core.models import method_defaults
            from ood_core.scorers import create_scorer

            scorer = create_scorer(name, **method_defaults(self.model, name))
            missing = _missing_inputs(self, scorer)
            if missing:
                raise OODLensError(f"method {name!r} needs {', '.join(missing)}, which this cache lacks "
                                   f"(build it with ODIN logits: drop --no-odin)" if "odin_logits" in missing
                                   else f"method {name!r} needs {', '.join(missing)}, which this cache lacks")
            with torch.inference_mode():
                self._scorers[name] = scorer.fit(self.fit_context())
        return self._scorers[name]

    def feature_sets(self) -> dict[str, FeatureSet]:
        """``{"id_test": ..., "id_val": ..., <ood name>: ...}``."""
        return {"id_test": self.id_test, "id_val": self.id_val, **self.ood}


def _missing_inputs(bench: Benchmark, scorer: Scorer) -> list[str]:
    """Fields in ``scorer.needs`` absent from any scored set, plus missing statistics."""
    sets = [bench.id_test, *bench.ood.values()]
    missing = [need for need in sorted(scorer.needs)
               if need in FEATURE_FIELDS and any(getattr(s, need) is None for s in sets)]
    missing += [f"training statistic {s!r}" for s in sorted(scorer.stats) if s not in bench.stats]
    return missing


def available_methods(bench: Benchmark) -> list[str]:
    """Registered methods whose declared inputs this benchmark's cache holds, in registry order."""
    from ood_core.scorers import create_scorer, list_scorers

    return [name for name in list_scorers() if not _missing_inputs(bench, create_scorer(name))]


def load_benchmark(
    model: str,
    id_dataset: str,
    ood_datasets: Iterable[str],
    cache_root: Path | str | None = None,
    device: str | torch.device = "cpu",
    build_missing: bool = True,
    limit: int | None = None,
    progress: bool = True,
    with_odin: bool = True,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
    build_device: str | torch.device = "auto",
    batch_size: int = 128,
    check_fingerprint: bool = False,
) -> Benchmark:
    """Load (building first, when ``build_missing``) the cache of a benchmark onto ``device``.

    ``limit`` caps every split at a stratified subset of that many images; entries built
    with another limit are rebuilt. ``limit=None`` uses the cached entries whatever their
    limit (building missing ones at the ID test entry's limit, or in full). ``check_fingerprint`` constructs the
    model to compare its weights' fingerprint with the cache's (always done when building).
    Raises :class:`~ood_core.cache.store.StaleCacheError` for missing or stale entries
    when nothing may be built.
    """
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    ood_list = [name for name in dict.fromkeys(ood_datasets) if name != id_dataset]
    if build_missing:
        from ood_core.cache.builder import ensure_entries

        ensure_entries(model, id_dataset, ood_list, root, device=build_device, batch_size=batch_size,
                       limit=limit, with_odin=with_odin, progress=progress, on_progress=on_progress,
                       check_fingerprint=check_fingerprint, reuse_cached_limit=True)
    expected = None
    if check_fingerprint and not build_missing:
        from ood_core.models import create_model

        expected = create_model(model).fingerprint()

    def load(dataset: str, split: str) -> tuple[FeatureSet, dict[str, Any]]:
        tensors, manifest = store.load_entry(store.entry_dir(root, model, dataset, split), model, dataset, split,
                                             device=device, expected_fingerprint=expected)
        return store.feature_set(tensors, manifest), manifest

    id_test, test_manifest = load(id_dataset, "test")
    id_val, val_manifest = load(id_dataset, "val")
    fingerprint = test_manifest.get("model_fingerprint", "")
    manifests = {f"{id_dataset}/test": test_manifest, f"{id_dataset}/val": val_manifest}
    ood: dict[str, FeatureSet] = {}
    for name in ood_list:
        ood[name], manifests[f"{name}/test"] = load(name, "test")
    for key, manifest in manifests.items():
        if manifest.get("model_fingerprint") != fingerprint:
            dataset, split = key.rsplit("/", 1)
            raise store.StaleCacheError(
                f"cache entry {model}/{key} was built from other weights than {model}/{id_dataset}/test; "
                f"rebuild it with `{store.rebuild_command(model, dataset, split)}`")
    stats, head_weight, head_bias, stats_manifest = store.load_train_stats(
        root, model, id_dataset, device=device, expected_fingerprint=fingerprint)
    manifests[f"{id_dataset}/train_stats"] = stats_manifest
    class_names = tuple(test_manifest.get("class_names") or (str(i) for i in range(head_weight.shape[0])))
    return Benchmark(model=model, id_dataset=id_dataset, id_val=id_val, id_test=id_test, ood=ood,
                     head_weight=head_weight, head_bias=head_bias, stats=stats, class_names=class_names,
                     model_fingerprint=fingerprint,
                     fingerprints={k: store.manifest_digest(m) for k, m in manifests.items()}, cache_root=root)


@dataclass
class MethodResult:
    """One method on one benchmark.

    id_scores: (N_id,) float32 on the benchmark's device; ood_scores: name → (N_ood,);
    metrics: name → :class:`OODMetrics`; average: their unweighted mean; id_accuracy:
    top-1 accuracy of the modified head (or the base logits when the method keeps the head);
    base_id_accuracy: that of the base logits.
    """

    method: str
    hparams: dict[str, Any]
    id_scores: Tensor
    ood_scores: dict[str, Tensor]
    metrics: dict[str, OODMetrics]
    average: OODMetrics
    id_accuracy: float
    base_id_accuracy: float


def evaluate_method(bench: Benchmark, method: str, hparams: Mapping[str, Any] | None = None,
                    ood: Iterable[str] | None = None) -> MethodResult:
    """Score the ID test set and each OOD set (all of ``bench.ood`` when ``ood`` is None)
    with ``method`` at ``hparams`` (defaults for the rest) and compute every metric."""
    names = list(bench.ood) if ood is None else list(ood)
    unknown = [n for n in names if n not in bench.ood]
    if unknown:
        raise OODLensError(f"OOD set(s) {unknown} are not in this benchmark; it has {list(bench.ood)}")
    if not names:
        raise OODLensError("evaluate_method needs at least one OOD set")
    scorer = bench.scorer(method)
    for key, value in (hparams or {}).items():  # name the offending hyperparameter in the message
        try:
            scorer.resolve({key: value})
        except ValueError as exc:
            raise OODLensError(f"method {method}, hyperparameter {key}={value!r}: {exc}") from None
    resolved = scorer.resolve(hparams)
    with torch.inference_mode():
        id_scores, modified = scorer.score_with_logits(bench.id_test, **resolved)
        ood_scores = {name: scorer.score(bench.ood[name], **resolved) for name in names}
    metrics = evaluate_many(id_scores, ood_scores)
    base_accuracy = accuracy(bench.id_test.logits, bench.id_test.labels)
    return MethodResult(
        method=method, hparams=resolved, id_scores=id_scores, ood_scores=ood_scores, metrics=metrics,
        average=average_metrics(list(metrics.values())),
        id_accuracy=accuracy(modified, bench.id_test.labels) if modified is not None else base_accuracy,
        base_id_accuracy=base_accuracy,
    )


def list_cached(cache_root: Path | str | None = None) -> dict[str, dict[str, list[str]]]:
    """Complete cache entries: ``{model: {dataset: [splits]}}`` (for the app's pickers)."""
    return store.list_cached(Path(cache_root) if cache_root is not None else paths.cache_root())

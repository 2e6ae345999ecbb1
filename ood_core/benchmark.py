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
from ood_core.metrics import (
    NonFiniteScoresError,
    OODMetrics,
    accuracy,
    average_metrics,
    degenerate_reasons,
    evaluate_many,
)
from ood_core.progress import ProgressTracker
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import OODLensError
from ood_core.scorers.base import Scorer

FEATURE_FIELDS = ("logits", "penultimate", "prepool_max", "odin_logits")


@dataclass(eq=False)
class Benchmark:
    """Cached features of one (model, ID dataset, OOD datasets) on one device.

    id_val / id_test: ID validation / test :class:`FeatureSet`; ood: name → OOD test set;
    val_ood: name → validation-only OOD set (hyperparameter selection reads these, reports
    never show them; none is a test set).
    head_weight (K, D), head_bias (K,) float32; stats: the training statistics by name.
    model: the registered model name; model_key: its cache key (``name@fingerprint`` for a
    ``checkpoint``); model_fingerprint: the hash of the weights every entry was built from.
    fingerprints: ``"dataset/split"`` → digest of that entry's manifest (changes on rebuild);
    ``fingerprint`` combines them (a hashable cache key for the app).
    limit: the ``--limit`` the entries were built with (None: every image); rows:
    ``"dataset/split"`` → rows scored; skipped: ``"dataset/split"`` → unreadable files skipped.
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
    model_key: str = ""
    checkpoint: str | None = None
    limit: int | None = None
    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    val_ood: dict[str, FeatureSet] = field(default_factory=dict)
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
    sets = [bench.id_test, *bench.ood.values(), *bench.val_ood.values()]
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
    checkpoint: str | None = None,
    repair: bool = False,
    log: Callable[[str], None] | None = None,
    val_ood_datasets: Iterable[str] = (),
    tracker: ProgressTracker | None = None,
) -> Benchmark:
    """Load (building first, when ``build_missing``) the cache of a benchmark onto ``device``.

    ``model``: a registered name (with ``checkpoint``: other weights for it) or a cache key
    ``name@fingerprint``. The model is constructed to take its fingerprint, and every entry is
    read only when it was built from exactly these weights and the datasets' current images,
    matches its checksum and holds finite tensors; otherwise one
    :class:`~ood_core.cache.store.StaleCacheError` names every stale or missing entry and the
    single ``python -m precompute`` command that rebuilds them with the same options.

    ``limit`` caps every split at a stratified subset of that many images; entries built
    with another limit are rebuilt. ``limit=None`` uses the cached entries whatever their
    limit (building missing ones at the ID test entry's limit, or in full). ``repair``:
    rebuild stale entries instead of refusing them (the embedded demo does). The training
    statistics read are those the registered methods declare
    (:func:`~ood_core.statistics.required_statistics`), each at its registered version: with
    ``build_missing`` only the missing or stale ones are computed, from the cached training
    features; without it they are named in the error.

    ``val_ood_datasets``: OOD sets loaded into ``val_ood`` for hyperparameter selection only
    (e.g. ``val-outliers:<id>``); a name that is also in ``ood_datasets`` is refused.
    ``tracker``: an :class:`ood_core.progress.ProgressTracker` given the build's plan and progress
    (one overall bar: "stage k of n", counts, time left).
    """
    from ood_core.cache.provenance import load_model, precompute_command
    from ood_core.cache.reader import CheckedReader
    from ood_core.datasets import canonical_dataset_name
    from ood_core.statistics import get_statistic, required_statistics

    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    id_dataset = canonical_dataset_name(id_dataset)
    ood_list = [name for name in dict.fromkeys(canonical_dataset_name(n) for n in ood_datasets) if name != id_dataset]
    val_list = list(dict.fromkeys(canonical_dataset_name(n) for n in val_ood_datasets))
    clash = [name for name in val_list if name in ood_list or name == id_dataset]
    if clash:
        raise OODLensError(f"{', '.join(clash)} cannot be both a validation OOD set and a test set")
    statistics = [get_statistic(name) for name in required_statistics()]  # what the registered methods read
    net, ref = load_model(model, checkpoint, root)
    if build_missing:
        from ood_core.cache.ensure import ensure_entries

        ensure_entries(ref.name, id_dataset, ood_list + val_list, root, device=build_device, batch_size=batch_size,
                       limit=limit, with_odin=with_odin, progress=progress, on_progress=on_progress,
                       reuse_cached_limit=True, model=(net, ref), verify=repair, log=log, statistics=statistics,
                       tracker=tracker)
    reader = CheckedReader(root, ref, device)
    id_test = reader.features(id_dataset, "test")
    id_val = reader.features(id_dataset, "val")
    ood = {name: reader.features(name, "test") for name in ood_list}
    val_ood = {name: reader.features(name, "test") for name in val_list}
    stats = reader.train_stats(id_dataset, {stat.name: stat.version for stat in statistics})
    if reader.problems:
        test_manifest = reader.manifests.get(f"{id_dataset}/test", {})
        cached_limit = limit if limit is not None else test_manifest.get("limit")
        has_odin = with_odin and (not test_manifest or bool(test_manifest.get("odin_eps")))
        command = precompute_command(ref, id_dataset, ood_list + val_list, limit=cached_limit, with_odin=has_odin,
                                     cache_root=cache_root)
        listed = "; ".join(f"{label} {why}" for label, why in reader.problems)
        noun = "entry" if len(reader.problems) == 1 else "entries"
        raise store.StaleCacheError(f"cache {noun} {listed}; rebuild with `{command}`", tuple(reader.problems))
    stats_tensors, head_weight, head_bias = stats
    manifests = reader.manifests
    test_manifest = manifests[f"{id_dataset}/test"]
    class_names = tuple(test_manifest.get("class_names") or (str(i) for i in range(head_weight.shape[0])))
    validation_keys = {f"{name}/test" for name in val_list}
    scored = {key: m for key, m in manifests.items() if key.endswith("/test") and key not in validation_keys}
    return Benchmark(model=ref.name, id_dataset=id_dataset, id_val=id_val, id_test=id_test, ood=ood, val_ood=val_ood,
                     head_weight=head_weight, head_bias=head_bias, stats=stats_tensors, class_names=class_names,
                     model_fingerprint=ref.fingerprint,
                     fingerprints={k: store.manifest_digest(m) for k, m in manifests.items()}, cache_root=root,
                     model_key=ref.key, checkpoint=ref.checkpoint, limit=test_manifest.get("limit"),
                     rows={key: int(m["rows"]) for key, m in scored.items()},
                     skipped={key: list((m.get("skipped_corrupt") or {}).get("items") or []) for key, m in scored.items()
                              if (m.get("skipped_corrupt") or {}).get("count")})


@dataclass
class MethodResult:
    """One method on one benchmark.

    id_scores: (N_id,) float32 on the benchmark's device; ood_scores: name → (N_ood,);
    metrics: name → :class:`OODMetrics`; average: their unweighted mean; id_accuracy:
    top-1 accuracy of the modified head (or the base logits when the method keeps the head);
    base_id_accuracy: that of the base logits; degenerate: why this setting's figures must not
    be ranked (collapsed or tied scores, a head at chance; empty when they can be).
    """

    method: str
    hparams: dict[str, Any]
    id_scores: Tensor
    ood_scores: dict[str, Tensor]
    metrics: dict[str, OODMetrics]
    average: OODMetrics
    id_accuracy: float
    base_id_accuracy: float
    degenerate: tuple[str, ...] = ()


def describe_setting(method: str, hparams: Mapping[str, Any]) -> str:
    """``"line (delta=0.01, p_a=90.0)"``: a method and its hyperparameters, for messages."""
    values = ", ".join(f"{k}={v}" for k, v in hparams.items())
    return f"{method} ({values})" if values else method


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
    try:
        resolved = scorer.resolve(hparams)
    except ValueError as exc:  # HyperparameterError: name the method in the one-line message
        raise type(exc)(f"method {method}: {exc}") from None
    with torch.inference_mode():
        id_scores, modified = scorer.score_with_logits(bench.id_test, **resolved)
        ood_scores = {name: scorer.score(bench.ood[name], **resolved) for name in names}
    base_accuracy = accuracy(bench.id_test.logits, bench.id_test.labels)
    id_accuracy = accuracy(modified, bench.id_test.labels) if modified is not None else base_accuracy
    try:
        metrics = evaluate_many(id_scores, ood_scores)
        degenerate = degenerate_reasons(id_scores, id_accuracy=id_accuracy, base_accuracy=base_accuracy,
                                        num_classes=int(bench.head_weight.shape[0]))
    except NonFiniteScoresError as exc:
        raise NonFiniteScoresError(f"{describe_setting(method, resolved)}: {exc}") from None
    return MethodResult(
        method=method, hparams=resolved, id_scores=id_scores, ood_scores=ood_scores, metrics=metrics,
        average=average_metrics(list(metrics.values())), id_accuracy=id_accuracy,
        base_id_accuracy=base_accuracy, degenerate=degenerate,
    )


def list_cached(cache_root: Path | str | None = None) -> dict[str, dict[str, list[str]]]:
    """Complete cache entries: ``{model: {dataset: [splits]}}`` (for the app's pickers)."""
    return store.list_cached(Path(cache_root) if cache_root is not None else paths.cache_root())

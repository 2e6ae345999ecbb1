"""Build the training statistics of (model, ID dataset) from the cached train / val entries.

Which statistics: the caller says (``statistics``: names or :class:`~ood_core.statistics.Statistic`
objects; ``load_benchmark`` and ``python -m precompute`` pass
:func:`~ood_core.statistics.required_statistics`, the union of the registered methods'
``stats``). This layer never imports the scorers.

Stored statistics are kept while they pass a reader's checks (weights, checksum, finite
values) and were computed from the current train / val entries; then only the statistics that
are missing, or recorded at another version than the registered one, are computed, from the
cached training features (the model does not run again while its train entry is valid), and
the file is rewritten atomically with the old and the new tensors. Otherwise (no file, a
failed check, other sources, ``rebuild``) every requested statistic is computed afresh.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from torch import Tensor

from ood_core import distributed, paths
from ood_core.cache import stats_store, store
from ood_core.cache.builder import Request, build_features, main_rank_lock, reuse_problem, stderr_log
from ood_core.cache.provenance import ModelRef
from ood_core.datasets.base import ImageDataset
from ood_core.models.base import OODModel
from ood_core.registry import OODLensError
from ood_core.statistics import Statistic, TrainingData, compute_statistics, list_statistics, resolve_statistics

STATS_LOCK = ".train_stats.lock"


def stats_label(model_key: str, dataset_name: str) -> str:
    """How progress events name the training statistics of (model, ID dataset)."""
    return f"{model_key} / {dataset_name} / training statistics"


def wanted_statistics(statistics: Iterable[str | Statistic] | None) -> list[Statistic]:
    """The :class:`Statistic` objects asked for; None: every registered one (the method ones
    are registered once :mod:`ood_core.scorers` is imported)."""
    return resolve_statistics(list_statistics() if statistics is None else statistics)


def build_train_stats(
    model: OODModel,
    train_dataset: ImageDataset,
    val_dataset: ImageDataset | None,
    cache_root: Path | str | None = None,
    *,
    statistics: Iterable[str | Statistic] | None = None,
    rebuild: bool = False,
    model_name: str | None = None,
    dataset_name: str | None = None,
    checkpoint: str | None = None,
    log: Callable[[str], None] | None = None,
    **build_kwargs,
) -> Path:
    """Ensure the ID train (and val) entries exist, then make sure the stored training
    statistics hold ``statistics`` (default: every registered one) at their registered
    versions, computing only what is missing or stale. Returns their directory.

    ``build_kwargs`` go to :func:`~ood_core.cache.builder.build_features` (device, batch_size,
    limit, progress, ...). ``rebuild`` rebuilds the train entry and every statistic; a valid val
    entry is kept whatever its ODIN grid.
    """
    wanted = wanted_statistics(statistics)
    versions = {stat.name: stat.version for stat in wanted}
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    log = log or stderr_log
    ref = ModelRef(model_name or model.name, model.fingerprint(), checkpoint)
    dataset_name = dataset_name or train_dataset.info.name
    common = {**build_kwargs, "with_odin": False, "model_name": ref.name, "dataset_name": dataset_name,
              "checkpoint": checkpoint, "log": log}
    folder = store.train_stats_dir(root, ref.key, dataset_name)
    label = f"{ref.key}/{dataset_name}"
    ranks = distributed.current()
    with main_rank_lock(folder / STATS_LOCK, f"training statistics of {label}", log):
        if ranks.is_main:
            store.remove_stale_temp_files(folder)
        train_entry = build_features(model, train_dataset, "train", root, rebuild=rebuild, **common)
        entries = {"train": train_entry}
        if val_dataset is not None:
            val_entry = store.entry_dir(root, ref.key, dataset_name, "val")
            # Any valid val entry of this limit serves, whatever its ODIN grid or stored dtype
            # (ensure_entries builds it first, with ODIN logits): only the limit is compared.
            why = None
            if ranks.is_main:
                _, why = (True, "missing") if not store.is_complete(val_entry) else reuse_problem(
                    val_entry, ref, dataset_name, "val", val_dataset.fingerprint(),
                    Request(build_kwargs.get("limit"), False, (), 0.0, None))
            if distributed.from_main(why) is not None:
                build_features(model, val_dataset, "val", root, **common)
            entries["val"] = val_entry
        # Every rank computes the statistics from its own rows of the joined training entry,
        # reduced exactly (float64 sums, gathered rows: ood_core.statistics); rank 0 stores them.
        _update_statistics(model, root, ref, dataset_name, entries, wanted, versions, rebuild, log,
                           build_kwargs.get("limit"), build_kwargs.get("on_progress"))
        distributed.barrier()
    return folder


def _update_statistics(model: OODModel, root: Path, ref: ModelRef, dataset_name: str, entries: dict[str, Path],
                       wanted: list[Statistic], versions: dict[str, int], rebuild: bool,
                       log: Callable[[str], None], limit: int | None, on_progress) -> None:
    """Compute the missing or stale statistics from the cached train (and val) entries and save them."""
    ranks = distributed.current()
    label = f"{ref.key}/{dataset_name}"
    sources = kept = kept_versions = None
    todo_names: list[str] = []
    if ranks.is_main:  # what to compute: decided once, from the stored file
        sources = {split: store.manifest_digest(store.read_manifest(entry, ref.key, dataset_name, split))
                   for split, entry in entries.items()}
        kept, kept_versions, todo_names = _plan(root, ref, dataset_name, sources, wanted, versions, rebuild, log, label)
    todo_names = distributed.from_main(todo_names)
    if not todo_names:
        return
    todo = [stat for stat in wanted if stat.name in set(todo_names)]
    progress = on_progress if ranks.is_main else None
    label_stats = stats_label(ref.key, dataset_name)
    if progress is not None:  # loading the training features comes first
        progress(label_stats, 0, len(todo))
    train, _ = store.load_entry(entries["train"], ref.key, dataset_name, "train")
    val_features = store.load_entry(entries["val"], ref.key, dataset_name, "val")[0]["penultimate"] \
        if "val" in entries else None
    labels = train["labels"]
    if bool((labels < 0).any()):
        raise OODLensError(f"dataset {dataset_name} train split has unlabeled images; training statistics "
                           "need labels")
    weight, bias = model.head_weight.detach().float().cpu(), model.head_bias.detach().float().cpu()
    data = TrainingData(train["penultimate"], train["logits"], labels, weight, bias, val_features)
    computed = compute_statistics(todo, data, on_progress=None if progress is None else
                                  lambda done, total: progress(label_stats, done, total))
    if ranks.is_main:
        stats_store.save_train_stats(
            root, ref.key, dataset_name, {**kept, **computed}, weight, bias,
            {"model_name": ref.name, "model_fingerprint": ref.fingerprint, "checkpoint": ref.checkpoint,
             "sources": sources, "limit": limit, "rows": int(labels.numel())},
            versions={**kept_versions, **{stat.name: stat.version for stat in todo}})


def _plan(root: Path, ref: ModelRef, dataset_name: str, sources: dict[str, str], wanted: list[Statistic],
          versions: dict[str, int], rebuild: bool, log: Callable[[str], None], label: str
          ) -> tuple[dict[str, Tensor], dict[str, int], list[str]]:
    """(stored statistics to keep, their versions, names to compute): everything without a usable
    stored file (or with ``rebuild``); otherwise only the missing or outdated ones."""
    if not rebuild:
        why, stored = _stored(root, ref, dataset_name, sources)
        if stored is not None:
            tensors, manifest = stored
            outdated = stats_store.stale_statistics(manifest, versions)
            if not outdated:
                return {}, {}, []
            log(f"computing the training statistics {', '.join(outdated)} of {label} "
                f"(the stored ones: {'; '.join(outdated.values())})")
            kept_versions = {name: version for name, version in stats_store.recorded_statistics(manifest).items()
                             if name not in outdated}
            return ({name: tensors[name] for name in kept_versions}, kept_versions,
                    [stat.name for stat in wanted if stat.name in outdated])
        if why != "is missing":
            log(f"recomputing the training statistics of {label} (the stored ones: {why})")
    return {}, {}, [stat.name for stat in wanted]


def _stored(cache_root: Path, model: ModelRef, id_dataset: str, sources: dict[str, str]
            ) -> tuple[str | None, tuple[dict[str, Tensor], dict] | None]:
    """(why the stored statistics cannot be kept, None when they can; (tensors, manifest) when they can)."""
    if not (store.train_stats_dir(cache_root, model.key, id_dataset) / store.TRAIN_STATS_MANIFEST).is_file():
        return "is missing", None
    try:
        tensors, _, _, manifest = stats_store.load_train_stats(cache_root, model.key, id_dataset,
                                                               expected_fingerprint=model.fingerprint)
    except store.StaleCacheError as error:
        return store.problems_text(error), None
    if manifest.get("sources") != sources:
        return store.STATS_SOURCES_CHANGED, None
    return None, (tensors, manifest)


def statistics_outdated(root: Path, ref: ModelRef, id_dataset: str, versions: dict[str, int]) -> bool:
    """From the manifests alone: the statistics are missing, lack one of ``versions`` (``name →
    version``) or hold another version of it, or were computed from other train / val entries
    than the cached ones (their other checks are left to the reader)."""
    try:
        manifest = stats_store.read_train_stats_manifest(root, ref.key, id_dataset)
        sources = {split: store.manifest_digest(store.read_manifest(store.entry_dir(root, ref.key, id_dataset, split),
                                                                    ref.key, id_dataset, split))
                   for split in ("train", "val")}
    except store.StaleCacheError:
        return True
    return manifest.get("sources") != sources or bool(stats_store.stale_statistics(manifest, versions))

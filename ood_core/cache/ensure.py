"""Everything a benchmark needs, by name: :func:`ensure_entries`, the front door used by
``python -m precompute``, the report CLI and the app (through ``load_benchmark``).

It builds (:mod:`.builder`) the ID val / test and OOD test entries, then the training
statistics the caller asks for (:mod:`.stats_builder`), holding the whole benchmark's lock.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ood_core import distributed, paths
from ood_core.cache import store
from ood_core.cache.builder import (
    DEFAULT_CHUNK_BATCHES,
    ProgressCallback,
    Request,
    build_features,
    entry_label,
    main_rank_lock,
    odin_settings,
    stderr_log,
)
from ood_core.cache.provenance import ModelRef, load_model
from ood_core.cache.stats_builder import build_train_stats, stats_label, statistics_outdated, wanted_statistics
from ood_core.datasets.base import ImageDataset
from ood_core.models.base import OODModel
from ood_core.progress import ProgressTracker, Stage
from ood_core.statistics import Statistic

BENCHMARK_LOCK = ".benchmark.lock"
# The stages' estimated costs, in plain forward passes per image (measured on the demo CNN, 2 CPU
# threads: ODIN's input-gradient pass plus its two ε passes cost 3.5-4.4 forwards); the time left
# is the measured rate times the remaining cost, so only the ratios matter.
ODIN_GRADIENT_COST = 2.0          # + 1 forward per ε
STATS_COST_PER_ROW = 0.25         # the training statistics, per training row (≈ 4 s vs 25 s for its pass)


def entry_stage(model_key: str, dataset: str, split: str, images: int, odin_passes: int) -> Stage:
    """The stage of one model pass over ``images`` images (``odin_passes``: the ε grid's size,
    0 without ODIN)."""
    cost = images * (1.0 + (ODIN_GRADIENT_COST + odin_passes if odin_passes else 0.0))
    return Stage(entry_label(model_key, dataset, split), f"{dataset} ({split})", max(images, 1), "image", cost)


def stats_stage(model_key: str, id_dataset: str, statistics: int, train_rows: int) -> Stage:
    """The stage of the training statistics (``statistics`` to compute from ``train_rows`` rows)."""
    return Stage(stats_label(model_key, id_dataset), f"training statistics of {id_dataset}", max(statistics, 1),
                 "statistic", max(train_rows, 1) * STATS_COST_PER_ROW)


def ensure_entries(
    model_name: str,
    id_dataset: str,
    ood_datasets: Iterable[str] = (),
    cache_root: Path | str | None = None,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 128,
    limit: int | None = None,
    num_workers: int = 0,
    with_odin: bool = True,
    odin_eps: Sequence[float] | None = None,
    odin_temperature: float | None = None,
    progress: bool = True,
    rebuild: bool = False,
    on_progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
    reuse_cached_limit: bool = False,
    checkpoint: str | None = None,
    verify: bool = True,
    model: tuple[OODModel, ModelRef] | None = None,
    statistics: Iterable[str | Statistic] | None = None,
    tracker: ProgressTracker | None = None,
    store_dtype: str | None = None,
    chunk_batches: int = DEFAULT_CHUNK_BATCHES,
) -> dict[tuple[str, str], Path]:
    """Build whatever is missing or stale for (model, ID dataset, OOD datasets), by name.

    ID train / val / test entries, the training statistics, and each OOD set's test entry.
    ODIN logits go to ID val/test and OOD test entries (never train) when ``with_odin``.
    Returns ``{(dataset, split): entry directory}`` under the canonical dataset names.

    ``verify`` (what ``python -m precompute`` does): every existing entry must pass a reader's
    checks or it is rebuilt, the log saying why. Without it (the report and the app, which
    check on reading), only missing entries and entries built for another request are built.
    Entries built with another ``limit`` are rebuilt, except that with ``reuse_cached_limit``
    and ``limit=None`` the ID test entry's limit is adopted (use what is cached).
    ``checkpoint``: a local weights file for the model (its entries then live under
    ``<model>@<fingerprint>``); ``model``: the model and its :class:`ModelRef` when the caller
    has already built them; ``statistics``: the training statistics to hold (names or
    :class:`~ood_core.statistics.Statistic` objects; default: every registered one), of which
    only the missing or stale ones are computed. The whole benchmark is locked while this runs.

    ``tracker``: given the plan (one stage per entry to build, then the training statistics)
    before the first starts, and every progress event (``on_progress`` still gets them too).
    Entries the plan expects to reuse but that fail a reader's check (with ``verify``) join it
    when their rebuild starts. ``store_dtype``: ``"float32"`` or the opt-in ``"float16"`` store
    of the entries' float tensors (an entry stored otherwise is rebuilt); None (the readers'
    choice): keep what is stored, build new entries as float32.

    Under torchrun every rank calls this with the same arguments (:mod:`ood_core.distributed`):
    the main rank holds the locks and takes the decisions, every rank computes its share.
    """
    from ood_core.datasets import canonical_dataset_name, create_dataset

    id_dataset = canonical_dataset_name(id_dataset)  # unknown names fail now, before any work
    ood_list = [name for name in dict.fromkeys(canonical_dataset_name(n) for n in ood_datasets) if name != id_dataset]
    eps, temperature = odin_settings(odin_eps, odin_temperature)
    wanted = wanted_statistics(statistics)  # unknown names fail now, before any work
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    ranks = distributed.current()
    log = log or stderr_log
    if not ranks.is_main:
        tracker = None
    net, ref = model if model is not None else load_model(model_name, checkpoint, root)
    if tracker is not None:
        on_progress = _relay(tracker, on_progress)
    common = dict(device=device, batch_size=batch_size, limit=limit, num_workers=num_workers, odin_eps=eps,
                  odin_temperature=temperature, progress=progress, on_progress=on_progress, model_name=ref.name,
                  checkpoint=ref.checkpoint, log=log, store_dtype=store_dtype, chunk_batches=chunk_batches)
    with main_rank_lock(store.train_stats_dir(root, ref.key, id_dataset) / BENCHMARK_LOCK,
                    f"benchmark {ref.key}/{id_dataset}", log):
        id_test = store.entry_dir(root, ref.key, id_dataset, "test")
        if reuse_cached_limit and limit is None and not rebuild and store.is_complete(id_test):
            try:
                common["limit"] = store.read_manifest(id_test, ref.key, id_dataset, "test").get("limit")
            except store.StaleCacheError:
                pass
        request = Request(common["limit"], with_odin, eps, temperature, store_dtype)

        def unverified_ok(dataset: str, split: str, odin: bool) -> bool:
            """Without ``verify``: complete and built for this request (a reader checks the rest)."""
            entry = store.entry_dir(root, ref.key, dataset, split)
            if rebuild or not store.is_complete(entry):
                return False
            try:
                manifest = store.read_manifest(entry, ref.key, dataset, split)
            except store.StaleCacheError:
                return True  # the reader names it, with the command that repairs it
            return Request(request.limit, odin, eps, temperature, store_dtype).mismatch(manifest) is None

        datasets: dict[tuple[str, str], ImageDataset] = {}

        def dataset_of(name: str, split: str) -> ImageDataset:
            if (name, split) not in datasets:
                if tracker is not None:  # generated or indexed sets can take a moment each
                    tracker.note(f"preparing the images of {name} ({split})")
                datasets[(name, split)] = create_dataset(name, split)
            return datasets[(name, split)]

        # val and test first (with ODIN), so the training statistics find val already built.
        order = [(id_dataset, "val"), (id_dataset, "test"), *((name, "test") for name in ood_list)]
        # every rank follows the main rank's reading of the cache
        reusable = distributed.from_main({(d, s): unverified_ok(d, s, with_odin) for d, s in order})
        train_ok = distributed.from_main(unverified_ok(id_dataset, "train", False))
        versions = {stat.name: stat.version for stat in wanted}
        # the plan's guess; the decision is taken again after the entries are built, because a
        # rebuilt val entry (e.g. for ODIN) makes the stored statistics' sources stale
        stats_planned = not train_ok or not reusable[(id_dataset, "val")] or statistics_outdated(
            root, ref, id_dataset, versions)

        def rows(name: str, split: str) -> int:
            size = len(dataset_of(name, split))
            return size if common["limit"] is None else min(size, int(common["limit"]))

        if tracker is not None:  # the whole plan, before the first stage starts
            plan = [entry_stage(ref.key, d, s, rows(d, s), len(eps) if with_odin else 0)
                    for d, s in order if not reusable[(d, s)]]
            if not train_ok:
                plan.append(entry_stage(ref.key, id_dataset, "train", rows(id_dataset, "train"), 0))
            if stats_planned:
                plan.append(stats_stage(ref.key, id_dataset, len(wanted), rows(id_dataset, "train")))
            tracker.plan(plan)

        out: dict[tuple[str, str], Path] = {}
        for dataset, split in order:
            if not verify and reusable[(dataset, split)]:
                out[(dataset, split)] = store.entry_dir(root, ref.key, dataset, split)
                continue
            key = entry_label(ref.key, dataset, split)
            if tracker is not None:
                tracker.begin(key)
            out[(dataset, split)] = build_features(net, dataset_of(dataset, split), split, root,
                                                   with_odin=with_odin, rebuild=rebuild, dataset_name=dataset,
                                                   **common)
            if tracker is not None:
                tracker.finish(key)
        # The statistics follow the train / val entries (val may just have been rebuilt for ODIN).
        if distributed.from_main(verify or not train_ok or statistics_outdated(root, ref, id_dataset, versions)):
            keys = (entry_label(ref.key, id_dataset, "train"), stats_label(ref.key, id_dataset))
            if tracker is not None:
                tracker.begin(keys[0] if not train_ok else keys[1])
            build_train_stats(net, dataset_of(id_dataset, "train"), dataset_of(id_dataset, "val"), root,
                              statistics=wanted, rebuild=rebuild, dataset_name=id_dataset,
                              **{k: v for k, v in common.items() if k not in {"odin_eps", "odin_temperature"}})
            if tracker is not None:
                for key in keys:
                    tracker.finish(key)
        out[(id_dataset, "train")] = store.entry_dir(root, ref.key, id_dataset, "train")
    return out


def _relay(tracker: ProgressTracker, on_progress: ProgressCallback | None) -> ProgressCallback:
    """A builder callback that feeds ``tracker`` (stage key = the event's description), then
    ``on_progress``."""

    def relay(description: str, done: int, total: int) -> None:
        tracker.update(description, done, total)
        if on_progress is not None:
            on_progress(description, done, total)

    return relay

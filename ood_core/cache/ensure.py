"""Everything a benchmark needs, by name: :func:`ensure_entries`, the front door used by
``python -m precompute``, the report CLI and the app (through ``load_benchmark``).

It builds (:mod:`.builder`) the ID val / test and OOD test entries, then the training
statistics the caller asks for (:mod:`.stats_builder`), holding the whole benchmark's lock.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ood_core import paths
from ood_core.cache import store
from ood_core.cache.builder import ProgressCallback, Request, build_features, odin_settings, stderr_log
from ood_core.cache.provenance import ModelRef, load_model
from ood_core.cache.stats_builder import build_train_stats, statistics_outdated, wanted_statistics
from ood_core.locks import build_lock
from ood_core.models.base import OODModel
from ood_core.statistics import Statistic

BENCHMARK_LOCK = ".benchmark.lock"


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
    """
    from ood_core.datasets import canonical_dataset_name, create_dataset

    id_dataset = canonical_dataset_name(id_dataset)  # unknown names fail now, before any work
    ood_list = [name for name in dict.fromkeys(canonical_dataset_name(n) for n in ood_datasets) if name != id_dataset]
    eps, temperature = odin_settings(odin_eps, odin_temperature)
    wanted = wanted_statistics(statistics)  # unknown names fail now, before any work
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    log = log or stderr_log
    net, ref = model if model is not None else load_model(model_name, checkpoint, root)
    common = dict(device=device, batch_size=batch_size, limit=limit, num_workers=num_workers, odin_eps=eps,
                  odin_temperature=temperature, progress=progress, on_progress=on_progress, model_name=ref.name,
                  checkpoint=ref.checkpoint, log=log)
    with build_lock(store.train_stats_dir(root, ref.key, id_dataset) / BENCHMARK_LOCK,
                    f"benchmark {ref.key}/{id_dataset}", log):
        id_test = store.entry_dir(root, ref.key, id_dataset, "test")
        if reuse_cached_limit and limit is None and not rebuild and store.is_complete(id_test):
            try:
                common["limit"] = store.read_manifest(id_test, ref.key, id_dataset, "test").get("limit")
            except store.StaleCacheError:
                pass
        request = Request(common["limit"], with_odin, eps, temperature)

        def unverified_ok(dataset: str, split: str, odin: bool) -> bool:
            """Without ``verify``: complete and built for this request (a reader checks the rest)."""
            entry = store.entry_dir(root, ref.key, dataset, split)
            if rebuild or not store.is_complete(entry):
                return False
            try:
                manifest = store.read_manifest(entry, ref.key, dataset, split)
            except store.StaleCacheError:
                return True  # the reader names it, with the command that repairs it
            return Request(request.limit, odin, eps, temperature).mismatch(manifest) is None

        out: dict[tuple[str, str], Path] = {}
        # val and test first (with ODIN), so the training statistics find val already built.
        for dataset, split in [(id_dataset, "val"), (id_dataset, "test"), *((name, "test") for name in ood_list)]:
            if not verify and unverified_ok(dataset, split, with_odin):
                out[(dataset, split)] = store.entry_dir(root, ref.key, dataset, split)
                continue
            out[(dataset, split)] = build_features(net, create_dataset(dataset, split), split, root,
                                                   with_odin=with_odin, rebuild=rebuild, dataset_name=dataset,
                                                   **common)
        # The statistics follow the train / val entries (val may just have been rebuilt for ODIN).
        if verify or not unverified_ok(id_dataset, "train", False) \
                or statistics_outdated(root, ref, id_dataset, {stat.name: stat.version for stat in wanted}):
            build_train_stats(net, create_dataset(id_dataset, "train"), create_dataset(id_dataset, "val"), root,
                              statistics=wanted, rebuild=rebuild, dataset_name=id_dataset,
                              **{k: v for k, v in common.items() if k not in {"odin_eps", "odin_temperature"}})
        out[(id_dataset, "train")] = store.entry_dir(root, ref.key, id_dataset, "train")
    return out

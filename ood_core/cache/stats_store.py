"""The training statistics on disk: ``<root>/<model>/<id dataset>/train_stats.{safetensors,json}``.

The tensor file holds every stored statistic plus the head (``head_weight``, ``head_bias``);
the manifest (written last) records, besides the checks every entry has (format, model key and
fingerprint, shapes, dtypes, sha256), ``statistics``: ``{name: version}`` of each statistic
in the file (:mod:`ood_core.statistics`), and ``sources``: the digests of the train / val
entries they were computed from. A statistic the caller asks for that is absent, or recorded
at another version than the one asked for, is *stale*: :func:`stale_statistics` names each, the
reader refuses it (:class:`StaleCacheError`) and the builder computes just those.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ood_core.cache import store
from ood_core.cache.manifest import (
    FORMAT_VERSION,
    TOOL,
    TRAIN_STATS_FILE,
    TRAIN_STATS_LABEL,
    TRAIN_STATS_MANIFEST,
    Expected,
    check_provenance,
    describe_tensors,
    now,
    read_manifest,
    stale,
)

HEAD_TENSORS = ("head_weight", "head_bias")


def recorded_statistics(manifest: Mapping[str, Any]) -> dict[str, int]:
    """``{name: version}`` of the statistics a train_stats manifest vouches for. A manifest
    written before statistics had versions lists their names (``stats``): version 1 each, the
    numbers every statistic's version 1 gives."""
    recorded = manifest.get("statistics")
    if isinstance(recorded, dict):
        return {str(name): int(version) for name, version in recorded.items()}
    return {str(name): 1 for name in manifest.get("stats") or ()}


def stale_statistics(manifest: Mapping[str, Any], wanted: Mapping[str, int]) -> dict[str, str]:
    """``{name: why}`` for each statistic of ``wanted`` (``name → version``) the manifest lacks or
    records at another version; ``why`` follows the entry's label in messages."""
    have = recorded_statistics(manifest)
    out = {}
    for name, version in sorted(wanted.items()):
        if name not in have:
            out[name] = f"lacks statistic {name!r} (version {version})"
        elif have[name] != version:
            out[name] = f"holds statistic {name!r} version {have[name]}, this code needs version {version}"
    return out


def save_train_stats(cache_root: Path | str, model: str, id_dataset: str, stats: Mapping[str, Tensor],
                     head_weight: Tensor, head_bias: Tensor, manifest: Mapping[str, Any], *,
                     versions: Mapping[str, int]) -> Path:
    """Store ``stats`` (``name → tensor``, each at ``versions[name]``) with the head as
    ``train_stats.safetensors`` + ``train_stats.json`` (written last), replacing both atomically.
    ``manifest``: what the statistics come from (model fingerprint, sources, limit, rows, ...)."""
    unversioned = sorted(set(stats) - set(versions))
    if unversioned or any(name in HEAD_TENSORS for name in stats):
        raise ValueError(f"statistics without a version or named like the head: {unversioned or list(stats)}")
    folder = store.train_stats_dir(cache_root, model, id_dataset)
    tensors = {**stats, "head_weight": head_weight, "head_bias": head_bias}
    shapes, dtypes = describe_tensors(tensors)
    full = {"format_version": FORMAT_VERSION, "kind": "train_stats", "model": model, "dataset": id_dataset,
            **manifest, "stats": sorted(stats), "statistics": {name: int(versions[name]) for name in sorted(stats)},
            "shapes": shapes, "dtypes": dtypes, "created": now(), "build_id": uuid.uuid4().hex, "tool": TOOL}
    (folder / TRAIN_STATS_MANIFEST).unlink(missing_ok=True)  # an old manifest must not vouch for new tensors
    full["checksums"] = {TRAIN_STATS_FILE: store.atomic_save_tensors(folder / TRAIN_STATS_FILE, tensors)}
    store.atomic_write_json(folder / TRAIN_STATS_MANIFEST, full)
    return folder


def read_train_stats_manifest(cache_root: Path | str, model: str, id_dataset: str) -> dict[str, Any]:
    """The train_stats manifest (format and kind checked), or :class:`StaleCacheError`."""
    return read_manifest(store.train_stats_dir(cache_root, model, id_dataset), model, id_dataset, TRAIN_STATS_LABEL,
                         kind="train_stats", manifest_file=TRAIN_STATS_MANIFEST)


def load_train_stats(cache_root: Path | str, model: str, id_dataset: str, *,
                     device: str | torch.device = "cpu", expected_fingerprint: str | None = None,
                     statistics: Mapping[str, int] | None = None
                     ) -> tuple[dict[str, Tensor], Tensor, Tensor, dict[str, Any]]:
    """(stats, head_weight (K, D), head_bias (K,), manifest), validated like a features entry
    (``model``: the model key; staleness messages call it ``<model>/<id dataset>/train_stats``).

    ``statistics`` (``name → version``): the statistics wanted, each at that version; one that is
    missing or of another version raises :class:`StaleCacheError` naming it, and ``stats`` then
    holds exactly these. Without it, ``stats`` holds every stored statistic.
    """
    folder = store.train_stats_dir(cache_root, model, id_dataset)
    manifest = read_train_stats_manifest(cache_root, model, id_dataset)
    check_provenance(manifest, Expected(model_fingerprint=expected_fingerprint), model, id_dataset,
                     TRAIN_STATS_LABEL)
    tensors = store.upcast(store.load_checked(folder / TRAIN_STATS_FILE, manifest, device, model, id_dataset,
                                              TRAIN_STATS_LABEL))
    head_weight = tensors.pop("head_weight")
    head_bias = tensors.pop("head_bias")
    if statistics is not None:
        outdated = stale_statistics(manifest, statistics)
        if outdated:
            raise stale(model, id_dataset, TRAIN_STATS_LABEL, "; ".join(outdated.values()))
        tensors = {name: tensors[name] for name in sorted(statistics)}
    return tensors, head_weight, head_bias, manifest

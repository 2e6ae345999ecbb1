"""A benchmark's checked read: every entry with every check, every failure collected.

:class:`CheckedReader` reads features entries and the training statistics of one model (a
:class:`~ood_core.cache.provenance.ModelRef`) and, instead of stopping at the first stale
entry, records ``(entry label, why)`` in ``problems``, so one
:class:`~ood_core.cache.manifest.StaleCacheError` can name them all with the one command that
repairs them (``ood_core.benchmark.load_benchmark``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ood_core.cache import stats_store, store
from ood_core.cache.provenance import ModelRef
from ood_core.records import FeatureSet
from ood_core.registry import OODLensError


class CheckedReader:
    """Reads one model's entries under ``root`` onto ``device``; ``problems`` collects every
    failure, ``manifests`` (``"dataset/split"`` → manifest) every entry read."""

    def __init__(self, root: Path, ref: ModelRef, device: str | torch.device) -> None:
        self.root, self.ref, self.device = root, ref, device
        self.problems: list[tuple[str, str]] = []
        self.manifests: dict[str, dict[str, Any]] = {}

    def _dataset_fingerprint(self, dataset: str, split: str) -> str | None:
        from ood_core.datasets import dataset_fingerprint

        try:
            return dataset_fingerprint(dataset, split)
        except OODLensError as error:
            self.problems.append((f"{self.ref.key}/{dataset}/{split}", f"cannot be checked ({error})"))
            return None

    def features(self, dataset: str, split: str) -> FeatureSet | None:
        """The checked entry (dataset, split), or None with its problem recorded."""
        expected = store.Expected(self.ref.fingerprint, self._dataset_fingerprint(dataset, split))
        try:
            tensors, manifest = store.load_entry(store.entry_dir(self.root, self.ref.key, dataset, split),
                                                 self.ref.key, dataset, split, device=self.device, expected=expected)
        except store.StaleCacheError as error:
            self.problems.extend(error.problems)
            return None
        self.manifests[f"{dataset}/{split}"] = manifest
        return store.feature_set(tensors, manifest)

    def train_stats(self, id_dataset: str, statistics: Mapping[str, int]
                    ) -> tuple[dict[str, Tensor], Tensor, Tensor] | None:
        """(statistics, head weight, head bias): exactly ``statistics`` (``name → version``), each
        at that version, once their train (and val, read first) sources are current and valid."""
        label = f"{self.ref.key}/{id_dataset}/{store.TRAIN_STATS_LABEL}"
        sources = {}
        train_entry = store.entry_dir(self.root, self.ref.key, id_dataset, "train")
        expected = store.Expected(self.ref.fingerprint, self._dataset_fingerprint(id_dataset, "train"))
        try:  # the train features themselves are not loaded: their manifest vouches for the statistics
            manifest = store.read_manifest(train_entry, self.ref.key, id_dataset, "train")
            store.check_provenance(manifest, expected, self.ref.key, id_dataset, "train")
            sources["train"] = store.manifest_digest(manifest)
        except store.StaleCacheError as error:
            self.problems.extend(error.problems)
            return None
        if f"{id_dataset}/val" not in self.manifests:
            return None  # already named
        sources["val"] = store.manifest_digest(self.manifests[f"{id_dataset}/val"])
        try:
            stats, weight, bias, manifest = stats_store.load_train_stats(
                self.root, self.ref.key, id_dataset, device=self.device, expected_fingerprint=self.ref.fingerprint,
                statistics=statistics)
        except store.StaleCacheError as error:
            self.problems.extend(error.problems)
            return None
        if manifest.get("sources") != sources:
            self.problems.append((label, store.STATS_SOURCES_CHANGED))
            return None
        self.manifests[f"{id_dataset}/train_stats"] = manifest
        return stats, weight, bias

"""Families of generated OOD sets: images made from a seed by a function, not read from disk.

The demo's OOD sets (``demo_ood.py``) and the CIFAR-sized noise sets (``noise.py``) share this
shape: a table ``name → (generator(n, seed) -> uint8 images, description, source)``, images
memoised read-only per process, a :class:`DatasetInfo` per name, a ``test`` split only (labels
-1) and one registered builder per name. :class:`GeneratedFamily` holds that once; each module
keeps its generators, its identity (what fingerprints its sets) and its public names.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable, Mapping

import numpy as np

from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.registry import OODLensError, register_dataset

Generator = Callable[[int, int], np.ndarray]  # (n, seed) -> (n, H, W[, C]) uint8


class GeneratedFamily:
    """A named family of generated OOD sets (``what``: how errors name a member, e.g. "noise set").

    sets: ``name → (generator, one-line description, source)``; identity(seed, n): the items
    that fingerprint a member (its generator version, seed and size).
    """

    def __init__(self, what: str, sets: Mapping[str, tuple[Generator, str, str]],
                 identity: Callable[[int, int], tuple[str, ...]]) -> None:
        self.what = what
        self.sets = dict(sets)
        self.identity = identity
        self.arrays = lru_cache(maxsize=None)(self._generate)  # per family, cleared by clear()

    def check(self, name: str) -> None:
        """Raise the one-line error naming the family's members when ``name`` is not one."""
        if name not in self.sets:
            raise OODLensError(f"unknown {self.what} {name!r}; known: {', '.join(self.sets)}")

    def _generate(self, name: str, seed: int, n: int) -> np.ndarray:
        """The (n, ...) uint8 images of one member (read-only; memoised by :attr:`arrays`)."""
        self.check(name)
        images = self.sets[name][0](n, seed)
        images.setflags(write=False)
        return images

    def info(self, name: str) -> DatasetInfo:
        """The :class:`DatasetInfo` (name, one-line description, source) of one member."""
        self.check(name)
        _, description, source = self.sets[name]
        return DatasetInfo(name=name, description=description, kind="ood", splits=("test",), source=source)

    @staticmethod
    def check_split(name: str, split: str) -> None:
        if split != "test":
            raise OODLensError(f"{name} has no split {split!r}; splits: test")

    def clear(self) -> None:
        """Forget the memoised images."""
        self.arrays.cache_clear()

    def register(self, dataset: Callable[..., ImageDataset], default_seed: int, default_n: int,
                 names: Iterable[str] | None = None) -> None:
        """Register one builder per member: ``create_dataset(name, split, seed=...)`` →
        ``dataset(name, split, seed=seed)``, fingerprinted by ``identity(default_seed, default_n)``."""
        for name in (self.sets if names is None else names):
            self._register_one(name, dataset, default_seed, default_n)

    def _register_one(self, name: str, dataset: Callable[..., ImageDataset], default_seed: int,
                      default_n: int) -> None:
        @register_dataset(name, self.info(name), fingerprint=lambda split: self.identity(default_seed, default_n))
        def build(split: str = "test", seed: int = default_seed, **_: object) -> ImageDataset:
            return dataset(name, split, seed=seed)

        build.__name__ = build.__qualname__ = f"build_{name.replace('-', '_')}"
        build.__doc__ = f"``{name}``: {self.sets[name][1]}."

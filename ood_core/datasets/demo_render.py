"""Image helpers of the demo's OOD generators: MNIST framing, jitter, crops, histogram matching.

Everything works on ``uint8`` grayscale arrays in MNIST polarity (light on dark). MNIST fits
each digit into a 20×20 box and centres it in a 28×28 frame; :func:`fit_box` and
:func:`center_by_mass` do the same for rendered glyphs, :func:`paste_centered_boxes` for
natural-image patches, whose intensities :func:`match_mnist_histogram` maps onto MNIST's.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ood_core.datasets.demo_mnist import BOX_SIZE, IMAGE_SIZE, mnist_box_profile


def fit_box(image: Image.Image, box: int = BOX_SIZE) -> Image.Image:
    """Resize a mode-"L" image so its longer side is ``box`` pixels (aspect kept, anti-aliased)."""
    width, height = image.size
    scale = box / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def match_mnist_histogram(patches: np.ndarray) -> np.ndarray:
    """Give each (20, 20) patch MNIST's box histogram: (n, 20, 20) uint8 → (n, 20, 20) uint8.

    Per image, pixel ranks are kept and values replaced by :func:`mnist_box_profile` at the
    same rank (ties share their mean rank, so flat regions stay flat). The brightest ~20 %
    of each patch become light "strokes" on a black ground, as in MNIST, so intensity
    statistics (mean, amount of ink) are not what separates the set from the digits;
    the content (shape, texture) is.
    """
    from scipy.stats import rankdata

    flat = patches.reshape(len(patches), -1).astype(np.float64)
    profile = mnist_box_profile()
    ranks = rankdata(flat, method="average", axis=1) - 1.0  # (n, 400) in [0, 399]
    grid = np.arange(len(profile), dtype=np.float64)
    matched = np.interp(ranks.ravel(), grid, profile).reshape(patches.shape)
    return np.clip(np.rint(matched), 0, 255).astype(np.uint8)


def paste_centered_boxes(patches: np.ndarray) -> np.ndarray:
    """(n, 20, 20) uint8 → (n, 28, 28) uint8, each patch in the middle of a black frame."""
    frames = np.zeros((len(patches), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    offset = (IMAGE_SIZE - BOX_SIZE) // 2
    frames[:, offset:offset + BOX_SIZE, offset:offset + BOX_SIZE] = patches
    return frames


def center_by_mass(glyph: Image.Image) -> np.ndarray:
    """Paste a glyph (≤ 20×20, mode "L") into 28×28 so its centre of mass is the centre (MNIST)."""
    arr = np.asarray(glyph, dtype=np.float64)
    height, width = arr.shape
    total = arr.sum()
    if total <= 0:  # blank glyph: centre geometrically
        cy, cx = (height - 1) / 2, (width - 1) / 2
    else:
        ys, xs = np.indices(arr.shape)
        cy, cx = (arr * ys).sum() / total, (arr * xs).sum() / total
    top = int(round((IMAGE_SIZE - 1) / 2 - cy))
    left = int(round((IMAGE_SIZE - 1) / 2 - cx))
    # Keep the glyph inside the frame (a very lopsided glyph could otherwise be clipped).
    top = min(max(top, 0), IMAGE_SIZE - height)
    left = min(max(left, 0), IMAGE_SIZE - width)
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    frame[top:top + height, left:left + width] = np.asarray(glyph, dtype=np.uint8)
    return frame


def random_affine(image: np.ndarray, rng: np.random.Generator, rotate_deg: float,
                  shear: float, scale: tuple[float, float], translate: float) -> np.ndarray:
    """A small random affine warp about the image centre (bilinear), (28, 28) uint8 → same."""
    angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg))
    s = rng.uniform(*scale)
    sh = rng.uniform(-shear, shear)
    tx, ty = rng.uniform(-translate, translate, size=2)
    # Forward map A = R(angle) · Shear · s; PIL wants the inverse (output → input coordinates).
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, sh], [0.0, 1.0]]) * s
    inverse = np.linalg.inv(forward)
    c = (IMAGE_SIZE - 1) / 2
    offset = np.array([c, c]) - inverse @ np.array([c + tx, c + ty])
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    warped = Image.fromarray(image).transform((IMAGE_SIZE, IMAGE_SIZE), Image.Transform.AFFINE,
                                              coeffs, resample=Image.Resampling.BILINEAR)
    return np.asarray(warped, dtype=np.uint8)


def random_box_patch(gray: np.ndarray, rng: np.random.Generator, min_crop: int,
                     max_crop: int, rotate: bool = True) -> np.ndarray:
    """A random square crop of a 2-D uint8 image, mirrored (and rotated by k·90° when
    ``rotate``) at random, resized to (20, 20) uint8."""
    height, width = gray.shape
    size = int(rng.integers(min_crop, min(max_crop, height, width) + 1))
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    crop = gray[top:top + size, left:left + size]
    if rotate:
        crop = np.rot90(crop, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    patch = Image.fromarray(np.ascontiguousarray(crop)).resize((BOX_SIZE, BOX_SIZE),
                                                                Image.Resampling.LANCZOS)
    return np.asarray(patch, dtype=np.uint8)


def to_gray(array: np.ndarray) -> np.ndarray:
    """Any uint8 / bool / float image (H, W[, 3|4]) → (H, W) uint8 luma (PIL's ITU-R 601-2)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 3:
        array = np.asarray(Image.fromarray(array[..., :3]).convert("L"))
    return np.ascontiguousarray(array)

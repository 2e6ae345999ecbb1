"""The demo's generated OOD sets (1,000 images each, deterministic for a given seed).

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
in MNIST); photos and faces keep their natural polarity. Each texture / photo / face patch
is histogram-matched to MNIST's pooled box pixel distribution
(:func:`~ood_core.datasets.demo_render.match_mnist_histogram`): sparse bright strokes on
black, MNIST's amount of ink, so the OOD signal is the content, not the intensity
statistics (see docs/demo.md).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ood_core.datasets.base import DatasetInfo
from ood_core.datasets.generated import GeneratedFamily
from ood_core.datasets.demo_mnist import (
    BOX_SIZE,
    DEFAULT_SEED,
    IMAGE_SIZE,
    ArrayImageDataset,
    demo_identity,
    load_mnist_arrays,
)
from ood_core.datasets.demo_render import (
    center_by_mass,
    fit_box,
    match_mnist_histogram,
    paste_centered_boxes,
    random_affine,
    random_box_patch,
    to_gray,
)

OOD_SIZE = 1000

# Fonts of matplotlib whose A–Z code points hold symbols or placeholders, not letters:
# cmsy10 / cmex10 are TeX symbol fonts, LastResort draws the same box for every letter.
_SYMBOL_FONTS = ("cmsy10", "cmex10", "LastResort")

# scikit-image images whose files are inside the wheel (no pooch / network needed).
_SKIMAGE_TEXTURES = ("brick", "grass", "gravel")
_SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "clock", "moon",
                   "rocket", "hubble_deep_field", "immunohistochemistry")


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
    return fit_box(canvas.crop(bbox))


@lru_cache(maxsize=1)
def _glyph_table() -> tuple[tuple[np.ndarray, ...], tuple[str, ...]]:
    """Every (font, letter) glyph centred in 28×28: (glyphs (G, 28, 28) uint8, font names)."""
    fonts: list[tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]] = [
        (os.path.basename(path), ImageFont.truetype(path, _RENDER_SIZE)) for path in letter_fonts()]
    fonts.append(("PIL-default", ImageFont.load_default(size=_RENDER_SIZE)))  # Pillow's scalable Aileron
    glyphs, names = [], []
    for font_name, font in fonts:
        for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            glyph = _render_glyph(font, letter)
            if glyph is not None:
                glyphs.append(center_by_mass(glyph))
                names.append(font_name)
    return tuple(glyphs), tuple(names)


def generate_letters(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: random A–Z glyphs (random font) with small affine jitter."""
    glyphs, _ = _glyph_table()
    rng = np.random.default_rng([seed, 1])
    picks = rng.integers(0, len(glyphs), size=n)
    return np.stack([
        random_affine(glyphs[i], rng, rotate_deg=12.0, shear=0.2, scale=(0.85, 1.05), translate=1.5)
        for i in picks])


@lru_cache(maxsize=1)
def _texture_sources() -> tuple[np.ndarray, ...]:
    import skimage.data

    return tuple(to_gray(getattr(skimage.data, name)()) for name in _SKIMAGE_TEXTURES)


@lru_cache(maxsize=1)
def _photo_sources() -> tuple[np.ndarray, ...]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [to_gray(getattr(skimage.data, name)()) for name in _SKIMAGE_PHOTOS]
    photos += [to_gray(image) for image in load_sample_images().images]  # china, flower
    return tuple(photos)


def generate_textures(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: inverted brick / grass / gravel patches, MNIST-histogram-matched, in the 20×20 box."""
    sources = _texture_sources()
    rng = np.random.default_rng([seed, 2])
    patches = np.empty((n, BOX_SIZE, BOX_SIZE), dtype=np.uint8)
    for k in range(n):  # one PIL resize per image: ~20 µs each, not a scoring loop
        gray = sources[int(rng.integers(len(sources)))]
        # Inverted: mortar lines and gaps become the light strokes (MNIST polarity).
        patches[k] = 255 - random_box_patch(gray, rng, 24, 128)
    return paste_centered_boxes(match_mnist_histogram(patches))


def generate_photos(n: int = OOD_SIZE, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n, 28, 28) uint8: gray crops of bundled photographs, MNIST-histogram-matched, in the 20×20 box."""
    sources = _photo_sources()
    rng = np.random.default_rng([seed, 3])
    patches = np.empty((n, BOX_SIZE, BOX_SIZE), dtype=np.uint8)
    for k in range(n):
        gray = sources[int(rng.integers(len(sources)))]
        patches[k] = random_box_patch(gray, rng, 32, 256)  # natural polarity: bright parts → strokes
    return paste_centered_boxes(match_mnist_histogram(patches))


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
        # No gamma jitter: histogram matching keeps only pixel ranks, so any
        # monotone intensity change would be undone; crop size / position / mirroring vary.
        patches[k] = random_box_patch(face, rng, 17, 24, rotate=False)
    return paste_centered_boxes(match_mnist_histogram(patches))


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


FAMILY = GeneratedFamily("demo OOD set", OOD_SETS, lambda seed, n: demo_identity(seed))


def ood_arrays(name: str, seed: int = DEFAULT_SEED, n: int = OOD_SIZE) -> np.ndarray:
    """The (n, 28, 28) uint8 images of one demo OOD set (read-only, memoised per process)."""
    return FAMILY.arrays(name, seed, n)


def ood_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` (name, one-line description, source) of a demo OOD set."""
    return FAMILY.info(name)


def clear_caches() -> None:
    """Forget the memoised source images, glyphs and generated sets."""
    for cached in (_glyph_table, _texture_sources, _photo_sources, _face_sources):
        cached.cache_clear()
    FAMILY.clear()


class DemoOODDataset(ArrayImageDataset):
    """One generated demo OOD set (split ``test`` only, labels -1)."""

    def __init__(self, name: str, split: str = "test", seed: int = DEFAULT_SEED, n: int = OOD_SIZE) -> None:
        FAMILY.check(name)
        FAMILY.check_split(name, split)
        super().__init__(ood_info(name), split, ood_arrays(name, seed, n), None, seed)


FAMILY.register(DemoOODDataset, DEFAULT_SEED, OOD_SIZE)

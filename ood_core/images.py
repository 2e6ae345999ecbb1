"""Validation and normalisation of user-uploaded images (the app's Inspect page).

The browser enforces the uploader's type and size limits, the server does not, so every
upload goes through :func:`load_upload`, which either returns a clean, fully decoded
``PIL.Image.Image`` in mode ``"RGB"`` or ``"L"`` or raises :class:`InvalidImageError`
with a one-line message a user can act on.

Decisions (each covered by a test in ``tests/unit/test_images.py``):

* **Formats**: PNG, JPEG (incl. MPO, the multi-picture JPEG phones write), WebP, BMP,
  GIF and TIFF. Anything else PIL can read (PPM, ICO, PDF, ...) is refused, so the
  behaviour does not depend on which PIL plug-ins happen to be installed.
* **Decompression bombs**: PIL's ``DecompressionBombWarning`` is turned into an error
  (without touching the global ``Image.MAX_IMAGE_PIXELS``), and a hard cap of
  :data:`MAX_PIXELS` pixels is checked from the header, before any pixel is decoded.
* **Transparency** (RGBA, LA, palette with a transparent index) is composited on
  **black**: the embedded demo is MNIST (white strokes on a black background), and a
  transparent area means "no signal", which for both MNIST and the CIFAR models'
  normalised inputs is closest to black. A white matte would turn a transparent sticker
  into a bright, confidently-OOD frame for the demo model.
* **16-bit / 32-bit grey** (``I;16``, ``I``, ``F``) is scaled to 8 bits over the full
  16-bit range (``v / 257``), so values keep their meaning rather than being
  stretched per image; float images in [0, 1] are scaled by 255.
* **CMYK / YCbCr / LAB / HSV / palette** → RGB; ``1`` (bilevel) → L.
* **Animated GIF / WebP / multi-page TIFF**: the first frame.
* **EXIF orientation** is applied (``ImageOps.exif_transpose``), as phones store
  photos sideways with a rotation tag.
* **Tiny images** (a side under :data:`MIN_SIDE` px, e.g. 1×1) are *rejected*: upscaling
  a 1×1 image gives a constant frame whose score says nothing about the upload, and a
  clear error is more useful than a confident-looking number.
* **Large images** are downscaled with ``thumbnail`` to at most :data:`MAX_SIDE` px per
  side before the model's transform (which resizes to 32 or 224 px anyway), keeping
  memory and latency bounded.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ood_core.registry import OODLensError

ALLOWED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"})
#: File-name extensions the app's uploader offers (the browser's filter only).
UPLOAD_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # mirrors server.maxUploadSize in .streamlit/config.toml
MAX_PIXELS = 50_000_000  # hard cap from the header (PIL's own bomb limit is ~89 M)
MIN_SIDE = 8
MAX_SIDE = 1024


class InvalidImageError(OODLensError):
    """An upload that cannot be used as an image; the message says why in one line."""


def load_upload(data: bytes, name: str = "upload", *, max_pixels: int = MAX_PIXELS,
                max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> Image.Image:
    """Decode and normalise an uploaded file.

    data: the raw file bytes; name: the file name (for messages only — the format is
    sniffed from the bytes, so a text file named ``.png`` is caught).
    Returns a fully loaded ``PIL.Image.Image`` in mode ``"RGB"`` or ``"L"``, EXIF-rotated,
    first frame only, at most ``max_side`` px per side.
    Raises :class:`InvalidImageError` for anything unusable.
    """
    if not data:
        raise InvalidImageError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidImageError(
            f"{name}: {len(data) / 2**20:.1f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB upload limit")
    with warnings.catch_warnings():
        # Why: PIL only *warns* between MAX_IMAGE_PIXELS and twice that; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise InvalidImageError(f"{name}: refused as a possible decompression bomb ({error})") from None
        except UnidentifiedImageError:
            raise InvalidImageError(
                f"{name}: not an image file that can be read (expected "
                f"{', '.join(sorted(ALLOWED_FORMATS - {'MPO'}))})") from None
        except Exception as error:  # noqa: BLE001 - any decoder failure is a bad upload
            raise InvalidImageError(f"{name}: cannot be opened as an image ({error})") from None

        if image.format not in ALLOWED_FORMATS:
            raise InvalidImageError(
                f"{name}: {image.format} images are not supported; upload PNG, JPEG, WebP, BMP, GIF or TIFF")
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImageError(
                f"{name}: {width}×{height} px is over the {max_pixels / 1e6:.0f} megapixel limit")
        if min(width, height) < min_side:
            raise InvalidImageError(
                f"{name}: {width}×{height} px is too small; each side needs at least {min_side} px")
        try:
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # first frame of an animation / multi-page file
            if image.format == "JPEG" and max(width, height) > 2 * max_side:
                # Why: JPEG can decode at 1/2, 1/4, 1/8 scale directly, far cheaper than full size.
                image.draft(image.mode, (max_side, max_side))
            image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise InvalidImageError(f"{name}: refused as a possible decompression bomb ({error})") from None
        except Exception as error:  # noqa: BLE001 - truncated / corrupt data
            raise InvalidImageError(f"{name}: the image data is damaged or truncated ({error})") from None

    image = ImageOps.exif_transpose(image) or image
    image = _normalise_mode(image)
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Any PIL mode → ``"RGB"`` or ``"L"`` (alpha composited on black, 16-bit scaled)."""
    mode = image.mode
    if mode == "P":
        # A palette may carry a transparent index: go through RGBA so it is composited.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in {"RGB", "L"}:
        return image.copy() if image.mode == mode else image.convert(mode)
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L")
    if mode in {"RGBA", "RGBa", "LA", "La", "PA"}:
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))  # opaque black matte
        composite = Image.alpha_composite(background, image.convert("RGBA"))
        return composite.convert("L" if mode in {"LA", "La"} else "RGB")
    # CMYK, YCbCr, LAB, HSV, RGBX, ...: PIL's own conversion (CMYK inversion handled by PIL).
    return image.convert("RGB")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """(H, W) integer / float grey → uint8. 16-bit full range maps to 0..255 by v/257."""
    values = values.astype(np.float64)
    if mode == "F" and values.size and float(np.nanmax(values)) <= 1.0:
        values = values * 255.0
    elif mode.startswith("I;16") or (values.size and float(values.max()) > 255.0):
        values = values / 257.0
    return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)

"""ood_core.images.load_upload: one test per upload case, each file generated in memory."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ood_core.images import MAX_SIDE, MIN_SIDE, InvalidImageError, load_upload
from ood_core.registry import OODLensError


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def gradient_rgb(size: tuple[int, int] = (40, 30)) -> Image.Image:
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1), "RGB")


def test_error_is_oodlens_error():
    assert issubclass(InvalidImageError, OODLensError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_supported_formats_decode(fmt):
    image = load_upload(encode(gradient_rgb(), fmt), f"x.{fmt.lower()}")
    assert image.size == (40, 30)
    assert image.mode in {"RGB", "L"}


def test_empty_file():
    with pytest.raises(InvalidImageError, match="empty"):
        load_upload(b"", "empty.png")


def test_truncated_image():
    data = encode(gradient_rgb((64, 64)), "PNG", compress_level=0)
    with pytest.raises(InvalidImageError, match="truncated"):
        load_upload(data[: len(data) // 2], "cut.png")


def test_text_file_named_png():
    with pytest.raises(InvalidImageError, match="not an image"):
        load_upload(b"hello, I am plain text\n" * 10, "notes.png")


def test_unsupported_format_is_refused():
    data = encode(gradient_rgb(), "PPM")  # PIL reads it, the app does not accept it
    with pytest.raises(InvalidImageError, match="PPM images are not supported"):
        load_upload(data, "x.ppm")


def test_decompression_bomb_warning_becomes_error():
    # 9,500² = 90.25 M pixels: above PIL's MAX_IMAGE_PIXELS (89.5 M) → DecompressionBombWarning.
    side = 9500
    assert side * side > Image.MAX_IMAGE_PIXELS
    data = encode(Image.new("1", (side, side)), "PNG")
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        load_upload(data, "bomb.png", max_pixels=10**12)


def test_hard_pixel_cap_from_header():
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(InvalidImageError, match="megapixel limit"):
        load_upload(data, "big.png", max_pixels=300 * 200 - 1)
    assert load_upload(data, "big.png", max_pixels=300 * 200).size == (300, 200)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # pure red in CMYK
    image = load_upload(encode(cmyk, "JPEG", quality=95), "cmyk.jpg")
    assert image.mode == "RGB"
    r, g, b = np.asarray(image).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_grey_is_scaled_to_8_bit():
    values = np.array([[0, 257 * 100, 65535, 257 * 200]] * 16, dtype=np.uint16)
    values = np.repeat(values, 4, axis=1)  # 16×16
    source = Image.fromarray(values)
    assert source.mode.startswith("I;16")
    image = load_upload(encode(source, "PNG"), "deep.png")
    assert image.mode == "L"
    row = np.asarray(image)[0, ::4]
    np.testing.assert_array_equal(row, (values[0, ::4] / 257).round().astype(np.uint8))


def test_rgba_is_composited_on_black():
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., :3] = 255           # white everywhere ...
    rgba[:8, :, 3] = 255           # ... opaque in the top half, transparent in the bottom half
    image = load_upload(encode(Image.fromarray(rgba, "RGBA"), "PNG"), "sticker.png")
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert pixels[:8].min() == 255 and pixels[8:].max() == 0


def test_la_is_composited_on_black_and_stays_grey():
    la = Image.new("LA", (16, 16), (255, 0))  # white but fully transparent
    image = load_upload(encode(la, "PNG"), "la.png")
    assert image.mode == "L"
    assert np.asarray(image).max() == 0


def test_palette_becomes_rgb():
    palette_image = gradient_rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image = load_upload(encode(palette_image, "PNG"), "pal.png")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.asarray(palette_image.convert("RGB")))


def test_animated_gif_gives_first_frame():
    frames = [Image.new("L", (16, 16), value) for value in (10, 200, 90)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = load_upload(data, "anim.gif")
    assert abs(float(np.asarray(image.convert("L")).mean()) - 10) < 2


def test_exif_rotation_is_applied():
    source = gradient_rgb((40, 20))  # landscape pixels ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... tagged "rotate 90° clockwise to display"
    image = load_upload(encode(source, "JPEG", exif=exif, quality=95), "phone.jpg")
    assert image.size == (20, 40)


def test_one_pixel_image_is_rejected():
    with pytest.raises(InvalidImageError, match="too small"):
        load_upload(encode(Image.new("RGB", (1, 1)), "PNG"), "dot.png")
    assert load_upload(encode(Image.new("RGB", (MIN_SIDE, MIN_SIDE)), "PNG"), "ok.png").size == (MIN_SIDE,) * 2


def test_large_image_is_downscaled():
    data = encode(gradient_rgb((3000, 1500)), "PNG")
    image = load_upload(data, "huge.png")
    assert max(image.size) == MAX_SIDE
    assert image.size == (MAX_SIDE, MAX_SIDE // 2)


def test_grey_png_stays_grey():
    image = load_upload(encode(Image.new("L", (20, 20), 77), "PNG"), "grey.png")
    assert image.mode == "L" and np.asarray(image).max() == 77

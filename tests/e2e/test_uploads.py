"""Uploads on the Inspect page in a real browser (Chromium via Playwright), on the demo.

A real test digit and a noise image are written as PNGs; each upload must show its
scores, and the LINe explanation shown must be the library's (``inspect_image`` /
``line_explain`` in-process on the same bytes). A text file named ``.png`` must give one
clear error line, after which a good upload still works.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.e2e import harness

_missing = harness.missing_requirement()
if _missing:
    pytest.skip(f"browser tests need Playwright and Chromium: {_missing}", allow_module_level=True)

pytestmark = pytest.mark.e2e

LINE_CLASS = re.compile(r"LINe's class ĉ = argmax of the full head on the clipped features: (?P<cls>\S+)")
LINE_SCORE = re.compile(r"LINe score (?P<score>-?[\d.]+(?:e[-+]?\d+)?)\.")


def digit_png(directory: Path) -> Path:
    """The first digit of demo-mnist's test split, upscaled ×2, as a PNG (a realistic upload)."""
    from ood_core.datasets import create_dataset

    image, _ = create_dataset("demo-mnist", "test")[0]
    path = directory / "digit.png"
    image.convert("L").resize((56, 56), Image.BILINEAR).save(path)
    return path


def noise_png(directory: Path) -> Path:
    """Uniform RGB noise, 64×64, seeded."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = directory / "noise.png"
    Image.fromarray(pixels).save(path)
    return path


def open_inspect(page: Any, app_url: str) -> None:
    harness.open_app(page, app_url + "/inspect", main=lambda p: p.get_by_test_id("stFileUploader"))


def upload(page: Any, path: Path) -> None:
    """Put ``path`` into the page's uploader and wait for the rerun it triggers."""
    harness.after_rerun(page, lambda: page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path)))


def line_caption(page: Any) -> dict[str, str]:
    """The LINe panel's class ĉ and score (its class line and its caption) of the current upload."""
    found = {}
    for anchor, pattern in (("LINe's class ĉ", LINE_CLASS), ("LINe score", LINE_SCORE)):
        element = page.get_by_text(anchor).first
        element.wait_for(state="visible")
        match = pattern.search(element.inner_text())
        assert match is not None, f"unexpected LINe text: {element.inner_text()!r}"
        found.update(match.groupdict())
    return found


def expected_line(demo_bench: Any, demo_model: Any, path: Path) -> tuple[str, float]:
    """(LINe's class ĉ, LINe score) computed in-process from the same file bytes."""
    from ood_core.images import load_upload
    from ood_core.inspect import inspect_image
    from ood_core.scorers.line import line_explain

    result = inspect_image(demo_bench, demo_model, load_upload(path.read_bytes(), path.name), ["line"])
    explanation = line_explain(demo_bench.scorer("line"), result.features.to(demo_bench.device))
    assert explanation["score"] == pytest.approx(result.verdicts["line"].score, rel=1e-5, abs=1e-5)
    return demo_bench.class_names[explanation["predicted_class"]], float(explanation["score"])


def assert_no_exception(page: Any) -> None:
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, f"the page shows an exception: {boxes.first.inner_text()[:500]}"


def test_upload_digit_and_noise(page: Any, app_url: str, demo_bench: Any, demo_model: Any, tmp_path: Path) -> None:
    open_inspect(page, app_url)
    scores = {}
    for path in (digit_png(tmp_path), noise_png(tmp_path)):
        upload(page, path)
        match = line_caption(page)
        page.get_by_test_id("stDataFrame").nth(1).wait_for(state="visible")  # top-5 classes, verdicts
        assert_no_exception(page)
        name, score = expected_line(demo_bench, demo_model, path)
        assert match["cls"] == name, f"{path.name}: the app predicts {match['cls']}, the library {name}"
        assert float(match["score"]) == pytest.approx(score, rel=5e-3), path.name  # 3 significant digits
        scores[path.stem] = float(match["score"])
        if path.stem == "digit":
            harness.full_page_screenshot(page, "inspect")
    # The page follows the upload: the second image's explanation replaced the first's.
    assert scores["digit"] != scores["noise"], f"the page kept the first upload's score: {scores}"


def test_bad_upload_then_good(page: Any, app_url: str, demo_bench: Any, demo_model: Any, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is a text file, not a PNG\n" * 20)
    open_inspect(page, app_url)
    upload(page, bad)
    error = page.get_by_test_id("stAlertContentError").filter(has_text="notes.png")
    error.first.wait_for(state="visible")
    message = error.first.inner_text().strip()
    assert "\n" not in message and len(message) < 300, f"not one clear line: {message!r}"
    assert page.get_by_text("LINe's class ĉ").count() == 0
    assert_no_exception(page)
    good = digit_png(tmp_path)
    upload(page, good)
    match = line_caption(page)
    assert match["cls"] == expected_line(demo_bench, demo_model, good)[0]
    assert page.get_by_test_id("stAlertContentError").count() == 0
    assert_no_exception(page)

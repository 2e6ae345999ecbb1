"""The Inspect page in a real browser (Chromium via Playwright), on the demo: an upload whose
LINe class ĉ (the full head on *clipped* features) differs from the model's own prediction
(the unmodified head) must show both classes, each labelled with what it is the argmax of,
and the consensus line must give the library's k of n.

The image is found here, with the library, among candidates (dark-on-white digits, digits,
noise): the first whose two classes differ. One upload keeps the test fast.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.e2e import harness

_missing = harness.missing_requirement()
if _missing:
    pytest.skip(f"browser tests need Playwright and Chromium: {_missing}", allow_module_level=True)

pytestmark = pytest.mark.e2e

PREDICTION = re.compile(r"Model's prediction \(softmax of the unmodified head\): (?P<cls>\S+) \(p = ")
LINE_CLASS = re.compile(r"LINe's class ĉ = argmax of the full head on the clipped features: (?P<cls>\S+)")
MODEL_CLASS = re.compile(r"the model itself predicts (?P<cls>\S+) \(argmax of the unmodified head\)")
CONSENSUS = re.compile(r"Flagged as OOD by (?P<k>\d+) of (?P<n>\d+) methods? at (?:their|its) 95 %-TPR threshold")
DEMO_NOTE = "28×28 greyscale handwritten digits, light strokes on a dark background"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def candidates() -> Iterator[tuple[str, bytes]]:
    """(file name, PNG bytes): dark-on-white digits (the wrong polarity), digits, then noise."""
    from ood_core.datasets import create_dataset

    digits = create_dataset("demo-mnist", "test")
    for index in range(20):
        image = digits[index][0].convert("L")
        yield f"inverted-digit-{index}.png", png_bytes(ImageOps.invert(image))
        yield f"digit-{index}.png", png_bytes(image)
    for seed in range(5):
        pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        yield f"noise-{seed}.png", png_bytes(Image.fromarray(pixels))


def classes_of(demo_bench: Any, demo_model: Any, name: str, data: bytes) -> tuple[str, str]:
    """(the model's prediction, LINe's ĉ) for an upload's bytes, as the app computes them."""
    from ood_core.images import load_upload
    from ood_core.inspect import class_name, image_features
    from ood_core.scorers.line import line_explain

    _, feats = image_features(demo_model, load_upload(data, name))
    explanation = line_explain(demo_bench.scorer("line"), feats.to(demo_bench.device))
    names = demo_bench.class_names
    return class_name(names, int(feats.logits[0].argmax())), class_name(names, explanation["predicted_class"])


def open_inspect(page: Any, app_url: str) -> None:
    harness.open_app(page, app_url + "/inspect", main=lambda p: p.get_by_test_id("stFileUploader"))


def upload(page: Any, path: Path) -> None:
    """Put ``path`` into the page's uploader and wait for the rerun it triggers."""
    harness.after_rerun(page, lambda: page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path)))


def assert_no_exception(page: Any) -> None:
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, f"the page shows an exception: {boxes.first.inner_text()[:500]}"


def shown(page: Any, pattern: re.Pattern, anchor: str) -> re.Match:
    """The first element whose text contains ``anchor``, matched against ``pattern``."""
    element = page.get_by_text(anchor).first
    element.wait_for(state="visible")
    text = element.inner_text()
    match = pattern.search(text)
    assert match is not None, f"unexpected text: {text!r}"
    return match


def test_clipped_and_unclipped_classes_are_both_shown_and_labelled(page: Any, app_url: str, demo_bench: Any,
                                                                   demo_model: Any, tmp_path: Path) -> None:
    from app import resources
    from ood_core.images import load_upload
    from ood_core.inspect import inspect_image

    for name, data in candidates():
        model_class, line_class = classes_of(demo_bench, demo_model, name, data)
        if model_class != line_class:
            break
    else:
        pytest.fail("no candidate image separates LINe's ĉ from the model's prediction")
    path = tmp_path / name
    path.write_bytes(data)
    expected = inspect_image(demo_bench, demo_model, load_upload(data, name), list(resources.DEFAULT_METHODS))

    open_inspect(page, app_url)
    assert DEMO_NOTE in page.get_by_test_id("stAlertContentInfo").first.inner_text()
    upload(page, path)
    line = shown(page, LINE_CLASS, "LINe's class ĉ")
    assert_no_exception(page)
    assert line["cls"] == line_class, f"{name}: the page's ĉ is {line['cls']}, the library's {line_class}"
    assert shown(page, MODEL_CLASS, "the model itself predicts")["cls"] == model_class
    assert shown(page, PREDICTION, "Model's prediction")["cls"] == model_class
    consensus = shown(page, CONSENSUS, "Flagged as OOD by")
    assert (int(consensus["k"]), int(consensus["n"])) == (expected.consensus.flagged, expected.consensus.total), \
        consensus.group(0)
    # The upload is captioned by its file name, beside what the model sees.
    page.get_by_text(name, exact=True).first.wait_for(state="visible")
    assert page.get_by_text("as uploaded").count() == 0
    assert page.get_by_text(re.compile(r"what the model sees: 28×28 greyscale")).count() == 1

"""The Inspect page through AppTest on the embedded demo: the note of what input the model
expects, the consensus line above the per-method table (k of n as the library counts them),
every class labelled with what it is the argmax of, and the images' captions.

The demo cache is built once per session by ``tests/conftest.py`` (``demo_cache_root``).
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from app import resources

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
FIRST_RUN_TIMEOUT = 180  # the first run of the module loads the cache and fits the scorers
TIMEOUT = 90
DEMO_NOTE = "28×28 greyscale handwritten digits, light strokes on a dark background"
CONSENSUS = re.compile(r"Flagged as OOD by (?P<k>\d+) of (?P<n>\d+) methods? at (?:their|its) 95 %-TPR threshold")
PREDICTION = re.compile(r"Model's prediction \(softmax of the unmodified head\): \*\*(?P<cls>[^*]+)\*\*")
LINE_CLASS = re.compile(r"LINe's class ĉ = argmax of the full head on the clipped features: \*\*(?P<cls>[^*]+)\*\*")
MODEL_CLASS = re.compile(r"the model itself predicts \*\*(?P<cls>[^*]+)\*\* \(argmax of the unmodified head\)")


def make_app(**query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.query_params["page"] = "inspect"
    for key, value in query.items():
        at.query_params[key] = value
    return at


def run(at: AppTest) -> AppTest:
    at.run(timeout=FIRST_RUN_TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def captions_of_images(at: AppTest) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def inverted_digit() -> tuple[str, bytes, Image.Image]:
    """demo-mnist test[2] as a dark digit on white (the wrong polarity for the demo model):
    its LINe ĉ on clipped features differs from the model's own prediction (4 vs 8 here)."""
    from ood_core.datasets import create_dataset

    image, _ = create_dataset("demo-mnist", "test")[2]
    inverted = ImageOps.invert(image.convert("L"))
    buffer = io.BytesIO()
    inverted.save(buffer, "PNG")
    return "inverted-digit.png", buffer.getvalue(), inverted


def test_the_note_of_what_the_demo_model_expects_is_shown_before_any_upload(demo_app):
    at = run(make_app())
    notes = texts(at.info)
    assert DEMO_NOTE in notes and "demo-cnn" in notes, notes


def test_an_upload_gets_a_consensus_line_the_library_agrees_with(demo_app, demo_benchmark):
    from ood_core.images import load_upload
    from ood_core.inspect import consensus, inspect_image
    from ood_core.models import create_model
    from ood_core.scorers.line import line_explain

    name, data, _ = inverted_digit()
    at = run(make_app())
    at.file_uploader(key="upload").set_value((name, data, "image/png"))
    run(at)
    markdown = texts(at.markdown)
    match = CONSENSUS.search(markdown)
    assert match is not None, markdown
    # The line counts the table below it ...
    verdicts = at.dataframe[1].value["verdict"]
    assert (int(match["k"]), int(match["n"])) == (int((verdicts == "OOD").sum()), len(verdicts))
    # ... and the library's k of n on the same bytes.
    model = create_model("demo-cnn").eval()
    result = inspect_image(demo_benchmark, model, load_upload(data, name), list(resources.DEFAULT_METHODS))
    expected = consensus(result.verdicts)
    assert (int(match["k"]), int(match["n"])) == (expected.flagged, expected.total)
    assert 0 < expected.flagged < expected.total  # a split verdict: the line says something

    # Both classes, each labelled with what it is the argmax of.
    model_name = result.prediction[1]
    explanation = line_explain(demo_benchmark.scorer("line"), result.features)
    line_name = demo_benchmark.class_names[explanation["predicted_class"]]
    assert line_name != model_name, "the fixture image no longer separates the two classes"
    assert PREDICTION.search(markdown)["cls"] == model_name, markdown
    assert LINE_CLASS.search(markdown)["cls"] == line_name, markdown
    assert MODEL_CLASS.search(markdown)["cls"] == model_name, markdown
    # The upload is captioned by its file name; the model's view is beside it.
    captions = captions_of_images(at)
    assert captions[0] == name and "what the model sees" in captions[1], captions
    assert not any("as uploaded" in c for c in captions)
    assert "neurons clipped" in texts(at.caption) or "neuron clipped" in texts(at.caption)


def test_a_sample_is_captioned_by_its_dataset_and_index(demo_app):
    at = run(make_app())
    at.radio(key="inspect_source").set_value("Sample from a dataset")
    run(at)
    at.number_input(key="inspect_index").set_value(3)
    run(at)
    captions = captions_of_images(at)
    assert captions[0] == "demo-mnist[3]", captions
    from ood_core.datasets import create_dataset

    label = create_dataset("demo-mnist", "test")[3][1]
    assert f"label: {label}" in [e.value for e in at.caption]
    markdown = texts(at.markdown)
    assert CONSENSUS.search(markdown), markdown
    # An ID digit: LINe agrees with the model, and says so instead of naming a second class.
    assert LINE_CLASS.search(markdown) and "(the model's prediction too)" in markdown
    assert MODEL_CLASS.search(markdown) is None

"""The dashboard through streamlit.testing.v1.AppTest: every page, live widgets, uploads, URL state.

The demo cache (demo-cnn on demo-mnist with the five demo OOD sets) is built once per
session into a temporary ``OOD_LENS_CACHE``. The demo weights are committed, so a demo
model that does not load fails every test here (it is never skipped).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
FIRST_RUN_TIMEOUT = 180  # the first run loads the cache and fits every scorer
TIMEOUT = 90


@pytest.fixture(scope="session")
def demo_cache(request):
    """Point OOD_LENS_CACHE at the session's demo cache (``tests/conftest.py``), built once.

    ``OOD_LENS_APP_TEST_BENCH=model:id:ood1,ood2`` runs the module against an existing
    ``$OOD_LENS_CACHE`` instead (e.g. a small resnet20-cifar10 cache), nothing built.
    """
    import os

    import streamlit as st

    override = os.environ.get("OOD_LENS_APP_TEST_BENCH")
    with pytest.MonkeyPatch.context() as patch:
        if override:
            model, id_dataset, oods = override.split(":")
            config = {"model": model, "id": id_dataset, "ood": oods}
        else:
            patch.setenv("OOD_LENS_CACHE", str(request.getfixturevalue("demo_cache_root")))
            config = {}
        st.cache_resource.clear()
        st.cache_data.clear()
        CONFIG.clear()
        CONFIG.update(config)
        yield config


CONFIG: dict[str, str] = {}


def make_app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    for key, value in {**CONFIG, **({"page": page} if page else {}), **query}.items():
        at.query_params[key] = value
    return at


def run(at: AppTest) -> AppTest:
    at.run(timeout=FIRST_RUN_TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def metric_values(at: AppTest) -> list[str]:
    return [m.value for m in at.metric]


def test_compare_renders_table_with_every_default_method(demo_cache):
    at = run(make_app())
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert len(table) == 8  # MSP, Energy, ReAct, DICE, LINe, ASH-S, KNN, ViM
    assert any("FPR95" in str(c) for c in table.columns)
    assert len(at.get("plotly_chart")) == 1
    assert [b.label for b in at.get("download_button")] == ["CSV", "LaTeX", "Markdown"]
    # The URL mirrors the state so the view can be shared: the page is the path, and an untouched
    # view leaves every control at its default, out of the address (tests/app/test_url_state.py).
    assert "page" not in at.query_params


def test_compare_ood_positive_toggle_changes_fpr(demo_cache):
    at = run(make_app(methods="energy,msp"))
    before = at.dataframe[0].value
    assert len(before) == 2
    at.toggle(key="ood_positive").set_value(True)
    run(at)
    after = at.dataframe[0].value
    fpr_before = [c for c in before.columns if "FPR95" in str(c)]
    fpr_after = [c for c in after.columns if "FPR95" in str(c)]
    assert all("OOD+" in str(c) for c in fpr_after)
    assert not np.allclose(before[fpr_before].to_numpy(float), after[fpr_after].to_numpy(float))
    # AUROC does not depend on which class is positive.
    auroc = [c for c in before.columns if "AUROC" in str(c)]
    np.testing.assert_allclose(before[auroc].to_numpy(float), after[auroc].to_numpy(float))


@pytest.mark.parametrize("page", ["tune", "neurons", "inspect", "sweep"])
def test_every_page_renders(demo_cache, page):
    at = run(make_app(page))
    assert not at.error, [e.value for e in at.error]


def test_tune_slider_changes_metrics_and_url(demo_cache):
    at = run(make_app("tune", method="react"))
    before = metric_values(at)
    slider = at.slider(key="param_clip_percentile")
    new_value = 60.0 if slider.value != 60.0 else 80.0
    slider.set_value(new_value)
    run(at)
    after = metric_values(at)
    assert after != before
    assert float(at.query_params["p.clip_percentile"][0] if isinstance(at.query_params["p.clip_percentile"], list)
                 else at.query_params["p.clip_percentile"]) == new_value


def test_tune_hyperparameters_come_from_the_url(demo_cache):
    at = run(make_app("tune", method="line", **{"p.delta": "0.5", "p.use_wp": "false"}))
    assert at.slider(key="param_delta").value == pytest.approx(0.5)
    assert at.toggle(key="param_use_wp").value is False
    assert any("percentile" in c.value and "of ID-validation activations" in c.value for c in at.caption)


def test_inspect_scores_an_upload_and_recovers_from_a_bad_one(demo_cache):
    at = run(make_app("inspect"))
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 4, 16, 24))  # a white "1" on black
    at.file_uploader(key="upload").set_value(("one.png", png_bytes(digit), "image/png"))
    run(at)
    verdicts = at.dataframe[1].value
    assert len(verdicts) >= 1 and "verdict" in verdicts.columns
    at.file_uploader(key="upload").set_value(("notes.png", b"just some text", "image/png"))
    run(at)
    assert any("not an image" in e.value for e in at.error)
    at.file_uploader(key="upload").set_value(("one.png", png_bytes(digit), "image/png"))
    run(at)
    assert not at.error
    assert len(at.dataframe[1].value) >= 1


def test_inspect_dataset_sample(demo_cache):
    at = run(make_app("inspect"))
    at.radio(key="inspect_source").set_value("Sample from a dataset")
    run(at)
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe[0].value) == 5


def test_sweep_runs_and_labels_the_oracle(demo_cache):
    at = run(make_app("sweep", method="react"))
    at.slider(key="sweep_points").set_value(3)
    run(at)
    at.button(key="sweep_run").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert any("oracle" in str(i) for i in table.index) or any("oracle" in str(c) for c in table.columns)


def test_neurons_overlap_slider_changes_the_statistic(demo_cache):
    at = run(make_app("neurons"))
    before = at.metric[0].value
    at.slider(key="neurons_over").set_value(0.0)
    run(at)
    assert at.metric[0].value != before


def test_tune_names_a_degenerate_setting(demo_cache):
    """Found: LINe with δ at its minimum showed FPR95 0.00 % in green ("−44 pt vs defaults")
    while AUROC was 50 % and the head's ID accuracy 10 %."""
    at = run(make_app("tune", method="line", **{"p.delta": "0.01"}))
    assert not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.warning]
    assert any("Degenerate setting" in w and "head at chance" in w for w in warnings), warnings
    fpr = at.metric[0]
    # every ID score equal: the threshold accepts nearly every OOD image (noise, whose maps have
    # units below δ, can score lower), never the fake 0.00 % that was found
    assert float(fpr.value.removesuffix(" %")) >= 95.0, fpr.value
    default = run(make_app("tune", method="line"))
    assert not any("Degenerate" in w.value for w in default.warning)


def test_a_bad_url_hyperparameter_is_dropped_with_a_notice(demo_cache):
    at = run(make_app("tune", method="line", **{"p.p_a": "nan", "p.use_ac": "treu"}))
    warnings = " ".join(w.value for w in at.warning)
    assert "Ignored p.p_a=nan" in warnings and "Ignored p.use_ac=treu" in warnings
    assert at.slider(key="param_p_a").value == 90.0 and at.toggle(key="param_use_ac").value is True


def test_sweep_over_line_delta_shows_accuracy_and_skips_degenerate_points(demo_cache):
    at = run(make_app("sweep", method="line"))
    at.selectbox(key="sweep_axis1").set_value("delta")
    at.slider(key="sweep_points").set_value(3)
    run(at)
    at.button(key="sweep_run").click()
    run(at)
    assert not at.error, [e.value for e in at.error]
    best, everything = at.dataframe[0].value, at.dataframe[1].value
    assert "ID accuracy (test)" in everything.columns and len(everything) == 3
    assert everything["degenerate"].iloc[0] != "no"  # δ = 0.01 clips every unit
    assert (best["degenerate"] == "no").all() and (best["ID accuracy (test)"] > 50).all()
    assert any("degenerate" in w.value for w in at.warning)
    for frame in at.dataframe:  # every rate shown with one decimal, like the rest of the app
        assert shown_rates(frame, ("val FPR95", "val AUROC", "test FPR95", "test AUROC", "ID accuracy (test)"))
        settings = set(shown_texts(frame)["delta"])  # a setting as written ("10", "0.01"), not "10.000000"
        assert settings and all(float(t) > 0 and not t.endswith("0" if "." in t else "x") for t in settings), settings


def shown_texts(frame):
    """The display texts (a DataFrame of str) of an AppTest dataframe drawn from a Styler."""
    from streamlit import dataframe_util

    return dataframe_util.convert_arrow_bytes_to_pandas_df(frame.proto.arrow_data.styler.display_values).astype(str)


def shown_rates(frame, columns) -> list[str]:
    """The display texts of ``columns`` of an AppTest dataframe drawn from a Styler, each checked
    to have one decimal."""
    import re

    shown = shown_texts(frame)
    texts = [v for c in columns for v in shown[c]]
    assert texts and all(re.fullmatch(r"\d+\.\d", t) for t in texts), texts
    return texts

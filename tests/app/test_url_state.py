"""The address ↔ state mechanism (app/url_state.py): its table and checks as plain functions,
then through AppTest on the demo cache (built once per session in a temporary folder).

Browser-only behaviour (Back / Forward, fresh browser contexts, requests) is in
tests/e2e/test_url_state.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import url_state
from ood_core.params import Param

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
FIRST_RUN_TIMEOUT = 180
TIMEOUT = 90


# -- the table and its checks (no Streamlit run) --------------------------------------------------

def test_every_url_key_is_unique_and_documented():
    urls = [c.url for c in url_state.CONTROLS]
    keys = [c.key for c in url_state.CONTROLS]
    assert len(set(urls)) == len(urls) and len(set(keys)) == len(keys)
    doc = url_state.__doc__
    for spec in url_state.CONTROLS:
        assert f"``{spec.url}``" in doc and spec.key in doc, f"{spec.url} / {spec.key} missing from the docstring"
    assert "``p.<name>``" in doc


def test_every_widget_key_of_the_table_is_a_view_control():
    """A key renamed in a view without the table (or the reverse) would silently stop sharing."""
    sources = "\n".join(p.read_text() for p in [ROOT / "app" / "main.py", *(ROOT / "app" / "views").glob("*.py")])
    for spec in url_state.CONTROLS:
        assert re.search(rf"""["']{re.escape(spec.key)}["']""", sources), f"no view uses the key {spec.key!r}"


@pytest.mark.parametrize(("url", "raw", "value", "notice"), [
    ("n.top", "15", 15.0, None),
    ("n.top", "500", 50.0, "above its maximum 50"),
    ("n.over", "-3", 0.0, "below its minimum 0"),
    ("n.over", "12", 10.0, "steps"),          # 5-point steps
    ("n.top", "nan", 10.0, "Ignored n.top=nan"),
    ("s.n", "20", 12, "above its maximum 12"),
    ("ci", "on", True, None),
    ("pos", "treu", False, "Ignored pos=treu"),
    ("mode", "oracle", "defaults", "Ignored mode=oracle"),
    ("n.share", "important", "important", None),
])
def test_static_values_are_clamped_or_dropped_with_a_notice(url, raw, value, notice):
    got, message = url_state.parse(url_state.BY_URL[url], raw)
    assert got == value and type(got) is type(value)
    assert (message is None) if notice is None else (notice in message), message


def test_dynamic_values_use_the_options_and_ranges_given_by_the_view():
    spec = url_state.BY_URL["roc"]
    assert url_state.parse(spec, "demo-noise", options=["demo-letters", "demo-noise"]) == ("demo-noise", None)
    value, notice = url_state.parse(spec, "cifar", options=["demo-letters", "demo-noise"])
    assert value == "demo-letters" and "Ignored roc=cifar" in notice
    value, notice = url_state.parse(url_state.BY_URL["i.idx"], "5000", high=999)
    assert value == 999 and "above its maximum 999" in notice
    value, notice = url_state.parse(url_state.BY_URL["ood"], "demo-noise,bogus", options=["demo-noise"])
    assert value == ["demo-noise"] and "bogus" in notice
    assert url_state.parse(url_state.BY_URL["ood"], "", options=["demo-noise"]) == ([], None)  # none chosen
    assert url_state.parse(url_state.BY_URL["i.src"], "sample", options=["Upload", "Sample from a dataset"]) == (
        "Sample from a dataset", None)
    assert url_state.encode(url_state.BY_URL["i.src"], "Sample from a dataset") == "sample"


def test_a_hyperparameter_out_of_range_is_clamped_and_a_bad_one_dropped():
    p_a = Param("p_a", 90.0, low=0.0, high=99.0, step=1.0)
    value, notice = url_state.parse_param(p_a, "500")
    assert value == 99.0 and "p.p_a=500" in notice and "using 99" in notice
    value, notice = url_state.parse_param(p_a, "nan")
    assert value == 90.0 and notice.startswith("Ignored p.p_a=nan")
    k = Param("k", 50, kind="int", low=1, high=1000)
    assert url_state.parse_param(k, "5000")[0] == 1000
    assert url_state.parse_param(k, "2.5")[0] == 50  # not an integer: the default


# -- through the app --------------------------------------------------------------------------------


def run(at: AppTest) -> AppTest:
    at.run(timeout=FIRST_RUN_TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def make_app(**query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    return at


def query(at: AppTest) -> dict[str, str]:
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def warnings(at: AppTest) -> str:
    return "\n".join(w.value for w in at.warning)


def test_an_untouched_view_has_a_clean_address(demo_app):
    at = run(make_app())
    assert query(at) == {}
    at.toggle(key="ood_positive").set_value(True)
    run(at)
    assert query(at) == {"pos": "on"}


def test_out_of_range_and_unknown_values_are_named(demo_app):
    at = run(make_app(page="tune", method="line", **{"p.p_a": "500", "p.zzz": "3", "colour": "red"}))
    text = warnings(at)
    assert "p.p_a=500" in text and "using 99" in text
    assert "unknown address parameter colour=red" in text and "Ignored p.zzz=3" in text
    assert at.slider(key="param_p_a").value == 99.0
    assert query(at) == {"p.p_a": "99"}  # the page is the path; the default method is left out


def test_neurons_sliders_come_back(demo_app):
    at = run(make_app(page="neurons", **{"n.top": "15", "n.over": "30", "n.share": "important", "n.p_a": "80"}))
    assert not at.warning
    assert at.slider(key="neurons_top").value == 15.0  # it used to come back as 10
    assert at.slider(key="neurons_over").value == 30.0
    assert at.radio(key="neurons_denominator").value == "important"
    assert at.slider(key="neurons_p_a").value == 80.0
    at.slider(key="neurons_top").set_value(20.0)
    run(at)
    assert query(at)["n.top"] == "20"


def test_an_empty_ood_selection_stays_empty(demo_app):
    at = run(make_app())
    at.multiselect(key="ood").set_value([])  # "Clear all"
    run(at)
    assert at.multiselect(key="ood").value == []
    assert "Choose at least one OOD set" in warnings(at)
    assert query(at) == {"ood": ""}
    run(at)  # a later rerun keeps it empty (it used to bring all five back)
    assert at.multiselect(key="ood").value == []
    shared = run(make_app(ood=""))
    assert shared.multiselect(key="ood").value == []


def test_sidebar_values_from_the_address_are_checked(demo_app):
    at = run(make_app(model="resnet-404", ood="demo-noise,cifar10-c", methods="msp,nope"))
    text = warnings(at)
    assert "Ignored model=resnet-404" in text and "cifar10-c" in text and "nope" in text
    assert at.selectbox(key="model").value == "demo-cnn"
    assert at.multiselect(key="ood").value == ["demo-noise"] and at.multiselect(key="methods").value == ["msp"]


def test_compare_controls_come_back(demo_app):
    at = run(make_app(methods="msp,energy", ood="demo-letters,demo-noise", pos="on", roc="demo-noise",
                      latex="average"))
    assert not at.warning
    assert at.toggle(key="ood_positive").value is True
    assert at.selectbox(key="roc_ood").value == "demo-noise"
    assert at.radio(key="export_latex_layout").value == "average"
    bad = run(make_app(roc="demo-bogus"))
    assert "Ignored roc=demo-bogus" in warnings(bad) and bad.selectbox(key="roc_ood").value == "demo-letters"


def test_a_sweep_link_shows_the_result(demo_app):
    link = {"page": "sweep", "method": "react", "s.x": "clip_percentile", "s.n": "3", "s.val": "demo-letters",
            "s.by": "auroc", "s.run": "on"}
    at = run(make_app(**link))
    assert not at.warning, warnings(at)
    assert at.selectbox(key="sweep_axis1").value == "clip_percentile" and at.slider(key="sweep_points").value == 3
    assert at.selectbox(key="sweep_val_ood").value == "demo-letters"
    assert at.radio(key="sweep_objective").value == "auroc"
    table = at.dataframe[0].value  # best on validation vs oracle: the sweep ran on load
    assert any("oracle" in str(i) for i in table.index)
    assert query(at)["s.run"] == "on"
    at.slider(key="sweep_points").set_value(4)
    run(at)
    assert "s.run" not in query(at)  # the shown settings have no result yet


def test_inspect_sample_comes_back_clamped(demo_app):
    at = run(make_app(page="inspect", **{"i.src": "sample", "i.set": "demo-letters", "i.idx": "5000"}))
    assert at.radio(key="inspect_source").value == "Sample from a dataset"
    assert at.selectbox(key="inspect_dataset").value == "demo-letters"
    assert at.number_input(key="inspect_index").value == 999
    assert "i.idx=5000" in warnings(at) and "above its maximum 999" in warnings(at)
    assert query(at)["i.idx"] == "999"

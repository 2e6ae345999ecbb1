"""The Tune page in a real browser: its metrics are not cut off; a hidden hyperparameter keeps
its value across the fragment reruns that hide and show it.

Found: the ID-accuracy delta read "…vs the unmodified mo…" in a quarter of the page. Streamlit
cuts a metric's label and delta to one line with an ellipsis; the test measures every element
of every ``st.metric`` (scrollWidth > clientWidth on an element that hides its overflow).
A switch reruns only the Tune fragment, where Streamlit drops the state of a widget that was
not drawn: AppTest reruns the whole script, so only a browser shows that case.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e import harness

_missing = harness.missing_requirement()
if _missing:
    pytest.skip(f"browser tests need Playwright and Chromium: {_missing}", allow_module_level=True)

pytestmark = pytest.mark.e2e

# (text of the metric, the elements of it whose text is cut off)
_CUT_JS = """() => Array.from(document.querySelectorAll("[data-testid='stMetric']")).map(m => [
  m.innerText.replace(/\\s+/g, ' ').trim(),
  Array.from(m.querySelectorAll('*'))
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
    .map(e => (e.getAttribute('data-testid') || e.tagName) + ': ' + e.innerText.trim().slice(0, 60))])"""


@pytest.mark.parametrize("width", [1024, 1400])
def test_tune_metrics_are_not_cut_off(browser: Any, app_url: str, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        query = {"page": "tune", "method": "line", "p.use_ac": "false"}  # a non-zero change on every delta
        harness.open_app(page, f"{app_url}/?{urlencode(query)}", main=lambda p: p.get_by_test_id("stMetric"))
        metrics = page.evaluate(_CUT_JS)
        assert len(metrics) == 4, metrics
        cut = [(text, elements) for text, elements in metrics if elements]
        assert not cut, f"cut off at {width} px: {cut}"
    finally:
        context.close()


def test_a_hidden_hyperparameter_keeps_its_value_in_the_browser(page: Any, app_url: str) -> None:
    query = {"page": "tune", "method": "line", "p.delta": "2.5"}
    harness.open_app(page, f"{app_url}/?{urlencode(query)}", main=lambda p: p.get_by_test_id("stMetric"))
    sliders = page.get_by_role("slider")
    assert sliders.count() == 3 and float(sliders.first.input_value()) == pytest.approx(2.5)  # δ, p_a, p_w
    clip = page.get_by_role("switch", name=re.compile("activation clipping"))
    label = page.locator(".st-key-param_use_ac").get_by_text("activation clipping")  # the input is covered
    harness.after_rerun(page, lambda: label.click())  # off: δ has no effect, its slider goes
    assert not clip.is_checked() and sliders.count() == 2
    assert page.get_by_text("of ID-validation activations").count() == 0
    harness.after_rerun(page, lambda: label.click())  # on again: δ comes back at its value
    assert clip.is_checked() and sliders.count() == 3
    assert float(sliders.first.input_value()) == pytest.approx(2.5)

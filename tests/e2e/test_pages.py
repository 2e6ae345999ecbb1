"""Every page of the dashboard in a real browser (Chromium via Playwright), on the demo.

Each page is opened by its address and must show its main element with no exception box;
a full-page screenshot of each goes to ``$OOD_LENS_SCREENSHOT_DIR/<page>.png`` (a temporary folder;
``scripts/take_screenshots.py`` points it at ``docs/screenshots/`` to retake the README images).
The Tune page's slider must change the metrics, and the numbers shown must be the
library's (``evaluate_method`` in-process on the same cache); a shared URL must restore
the page, method, hyperparameters and OOD selection.
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from app import fmt
from tests.e2e import harness

_missing = harness.missing_requirement()
if _missing:
    pytest.skip(f"browser tests need Playwright and Chromium: {_missing}", allow_module_level=True)

pytestmark = pytest.mark.e2e

Locate = Callable[[Any], Any]

# slug → (path, heading, main element). Compare is the default page, served at "/".
PAGES: dict[str, tuple[str, str, Locate]] = {
    "compare": ("/", "Compare methods", lambda p: p.get_by_test_id("stDataFrame")),
    "tune": ("/tune", "Tune a method", lambda p: p.get_by_test_id("stMetric")),
    "neurons": ("/neurons", "Neurons", lambda p: p.get_by_test_id("stMetric").filter(has_text="Overlap")),
    "inspect": ("/inspect", "Inspect an image", lambda p: p.get_by_test_id("stFileUploader")),
    "sweep": ("/sweep", "Sweep hyperparameters", lambda p: p.locator(".st-key-sweep_run")),
}


def metric_text(page: Any, label: str) -> str:
    """The value shown by the ``st.metric`` whose label contains ``label``."""
    metric = page.get_by_test_id("stMetric").filter(has_text=label).first
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def query_of(page: Any) -> dict[str, str]:
    """The page's current query parameters (last value of each)."""
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


def assert_no_exception(page: Any) -> None:
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, f"the page shows an exception: {boxes.first.inner_text()[:500]}"


@pytest.mark.parametrize("slug", list(PAGES))
def test_page_opens(page: Any, app_url: str, slug: str) -> None:
    path, heading, main = PAGES[slug]
    harness.open_app(page, app_url + path, main=main)
    assert page.get_by_role("heading", name=heading).first.is_visible()
    assert main(page).first.is_visible()
    if slug == "compare":
        assert page.locator(".st-key-roc_chart").is_visible()
    if slug == "tune":
        assert page.get_by_test_id("stDataFrame").first.is_visible() and page.get_by_role("slider").count() >= 1
    assert_no_exception(page)
    errors = page.get_by_test_id("stAlertContentError")
    assert errors.count() == 0, f"the page shows an error: {errors.first.inner_text()}"
    if slug == "sweep":  # the page's point is the grid: run it and see the chart and the table
        harness.after_rerun(page, lambda: page.locator(".st-key-sweep_run button").click())
        page.locator(".st-key-sweep_chart").wait_for(state="visible")
        page.get_by_test_id("stDataFrame").first.wait_for(state="visible")  # best-on-validation vs oracle
        assert_no_exception(page)
    if slug != "inspect":  # Inspect's screenshot is taken with an uploaded image (test_uploads.py)
        shot = harness.full_page_screenshot(page, slug)
        assert shot.stat().st_size > 10_000


def test_tune_slider_changes_metrics(page: Any, app_url: str, demo_bench: Any) -> None:
    from ood_core.benchmark import evaluate_method

    harness.open_app(page, app_url + "/tune", main=PAGES["tune"][2])
    slider = page.get_by_role("slider").first
    start_value = float(slider.input_value())
    before = harness.metric_values(page)
    assert len(before) == 4, before  # FPR95, AUROC, ID accuracy of the head, FPR95 vs Energy
    slider.focus()
    after = before
    for _ in range(10):  # one step may round to the same 1-decimal percentages: step until it shows
        harness.after_rerun(page, lambda: page.keyboard.press("ArrowRight"))
        after = harness.metric_values(page)
        if after != before:
            break
    assert after != before, f"metrics did not change after moving the slider: {before}"
    new_value = float(slider.input_value())
    assert new_value > start_value
    # Tune's default method is LINe; its first slider is its first numeric hyperparameter.
    first = next(p for p in demo_bench.scorer("line").declared_params() if p.kind in {"float", "int"})
    assert float(query_of(page)[f"p.{first.name}"]) == pytest.approx(new_value), "the URL does not follow the slider"
    # The number on screen is the library's, at the slider's new value.
    result = evaluate_method(demo_bench, "line", {first.name: new_value})
    assert metric_text(page, "FPR95 (avg") == fmt.rate(result.average.fpr95)
    assert metric_text(page, "AUROC (avg") == fmt.rate(result.average.auroc)
    assert_no_exception(page)


def test_shared_url_restores_state(page: Any, app_url: str, demo_bench: Any) -> None:
    from ood_core.benchmark import evaluate_method

    oods = ["demo-noise", "demo-letters"]
    query = {"page": "tune", "method": "line", "ood": ",".join(oods), "p.delta": "2.5", "p.use_wp": "false"}
    harness.open_app(page, f"{app_url}/?{urlencode(query)}", main=PAGES["tune"][2])
    assert page.get_by_role("heading", name="Tune a method").first.is_visible()
    assert float(page.get_by_role("slider").first.input_value()) == pytest.approx(2.5)
    assert not page.get_by_role("switch", name="weight pruning (WP)").is_checked()
    assert page.get_by_role("switch", name="activation pruning (AP)").is_checked()
    chips = page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect").first
    for name in oods:
        assert name in chips.inner_text()
    assert "demo-faces" not in chips.inner_text()
    # The metrics are those of LINe at δ = 2.5 without weight pruning on exactly these sets.
    result = evaluate_method(demo_bench, "line", {"delta": 2.5, "use_wp": False}, ood=oods)
    assert metric_text(page, "FPR95 (avg") == fmt.rate(result.average.fpr95)
    assert metric_text(page, "AUROC (avg") == fmt.rate(result.average.auroc)
    # ... and the address still describes the view (shareable again).
    shown = query_of(page)
    # the page is the path (a legacy ?page= link is read once); LINe is the default method, left out
    assert urlparse(page.url).path == "/tune" and "page" not in shown and "method" not in shown
    assert float(shown["p.delta"]) == pytest.approx(2.5) and shown["p.use_wp"] == "false"
    assert shown.get("ood", "").split(",") == oods
    assert_no_exception(page)

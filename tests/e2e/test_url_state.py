"""Shareable addresses, Back / Forward and offline operation in a real browser (Chromium).

* For each page: every control set to a non-default value through the UI, the resulting
  address opened in a fresh browser context (a new Streamlit session), and the same widget
  values and the same numbers (metrics, page text, table cells, chart data) read back.
* Back after page moves returns to each previous page, Forward goes forward again.
* A request listener on every context of this module fails the test when a request leaves
  127.0.0.1 / localhost (the favicon used to come from a font CDN).
* An out-of-range address value is clamped with a visible notice; an unknown key is dropped
  with a visible notice.

The model and ID-set controls have one option each on the demo cache, so they cannot be set to
a non-default value here; the AppTest tests (tests/app/test_url_state.py) cover their checks.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from tests.e2e import harness

_missing = harness.missing_requirement()
if _missing:
    pytest.skip(f"browser tests need Playwright and Chromium: {_missing}", allow_module_level=True)

pytestmark = pytest.mark.e2e

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
ACTION_TIMEOUT_MS = 60_000
SWEEP_TIMEOUT_MS = 180_000  # the sweep re-runs on load of a shared link
RUN_START_MS = 15_000  # an action's rerun is seen finishing within this (else: settle and check)

# slug → (path, heading, main element shown once the page has run)
PAGES: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    "compare": ("/", "Compare methods", lambda p: p.locator(".st-key-roc_chart")),
    "tune": ("/tune", "Tune a method", lambda p: p.get_by_test_id("stMetric")),
    "neurons": ("/neurons", "Neurons", lambda p: p.get_by_test_id("stMetric").filter(has_text="Overlap")),
    "inspect": ("/inspect", "Inspect an image", lambda p: p.locator(".st-key-inspect_source")),
    "sweep": ("/sweep", "Sweep hyperparameters", lambda p: p.locator(".st-key-sweep_run")),
}
# The widget keys of each page (app/url_state.py CONTROLS) and the sidebar's.
SIDEBAR_KEYS = ("model", "id", "ood", "methods")
PAGE_KEYS: dict[str, tuple[str, ...]] = {
    "compare": ("compare_mode", "compare_ci", "ood_positive", "export_latex_layout", "roc_ood"),
    "tune": ("method", "param_clip_by", "param_clip_value"),
    "neurons": ("neurons_top", "neurons_over", "neurons_denominator", "neurons_p_a"),
    "sweep": ("method", "sweep_axis1", "sweep_axis2", "sweep_points", "sweep_val_ood", "sweep_objective",
              "sweep_figure"),
    "inspect": ("inspect_source", "inspect_dataset", "inspect_index", "inspect_method"),
}


# -- requests ------------------------------------------------------------------------------------

class RequestLog:
    """Every request of the contexts it watches; :meth:`outside` lists those that leave localhost.

    A deep link such as ``/tune?...`` makes the page request ``/tune/_stcore/health`` (404)
    before ``/_stcore/health``: Streamlit's frontend probes the path and its parent as possible
    base URLs of the server (``PD()`` in its index.js, 1.67). Both stay on this host, so the
    listener allows them; nothing to fix on our side.
    """

    def __init__(self) -> None:
        self.urls: list[str] = []

    def watch(self, context: Any) -> Any:
        context.on("request", lambda request: self.urls.append(request.url))
        return context

    def outside(self) -> list[str]:
        return [u for u in self.urls
                if urlparse(u).scheme not in {"data", "blob", "about"} and urlparse(u).hostname not in LOCAL_HOSTS]


@pytest.fixture
def requests_log() -> Iterator[RequestLog]:
    log = RequestLog()
    yield log
    # every test of this module doubles as an offline check of the pages it visited
    assert not log.outside(), f"requests left localhost: {sorted(set(log.outside()))}"


@pytest.fixture
def new_page(browser: Any, app_url: str, requests_log: RequestLog) -> Iterator[Callable[[], Any]]:
    """A factory of pages, each in its own fresh browser context (= a new Streamlit session)."""
    contexts: list[Any] = []

    def make() -> Any:
        context = requests_log.watch(browser.new_context(viewport=harness.VIEWPORT))
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


# -- driving widgets ------------------------------------------------------------------------------

def widget(page: Any, key: str) -> Any:
    return page.locator(f".st-key-{key}")


def act(page: Any, action: Callable[[], Any], timeout_ms: float = SWEEP_TIMEOUT_MS) -> None:
    """Do ``action`` and wait for its rerun to finish and the page to settle.

    A very short rerun can go running → notRunning between two observer callbacks and not be
    counted (the observer reads the attribute's current value), so a missing count only waits
    ``RUN_START_MS`` before the settle check, never the whole timeout.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = harness.run_count(page)
    action()
    try:
        harness.wait_runs(page, before, timeout_ms=RUN_START_MS)
    except PlaywrightTimeout:
        pass
    harness.wait_settled(page, timeout_ms=timeout_ms)


def choose(page: Any, key: str, option: str, typed: str | None = None) -> None:
    """Pick ``option`` in the selectbox ``key`` (typing ``typed`` first to filter a long list)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = widget(page, key).locator("input").first
    wanted = page.get_by_role("option", name=option, exact=True)
    for attempt in range(3):  # a click while the page re-lays out (a chart drawn late) can miss the list
        box.scroll_into_view_if_needed()
        box.click()
        if typed:
            box.fill(typed)
        try:
            wanted.wait_for(state="visible", timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    act(page, wanted.click)


def click_label(page: Any, key: str, label: str) -> None:
    """Click the radio option / segmented-control button / toggle of ``key`` labelled ``label``."""
    act(page, lambda: widget(page, key).get_by_text(label, exact=True).click())


def press(page: Any, key: str, keyname: str, times: int = 1) -> None:
    """Press ``keyname`` on the slider ``key`` ``times`` times (each press is one rerun)."""
    slider = widget(page, key).get_by_role("slider")
    slider.focus()
    for _ in range(times):
        act(page, lambda: page.keyboard.press(keyname))


def remove_chip(page: Any, key: str, value: str) -> None:
    act(page, lambda: widget(page, key).get_by_role("button", name=f"Remove {value}").click())


def nav(page: Any, title: str) -> None:
    act(page, lambda: page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click())


# -- reading a view -----------------------------------------------------------------------------

_WIDGET_JS = """
el => {
  const parts = [];
  el.querySelectorAll("input").forEach(i => {  // sliders are <input type=range>
    if (i.type === "checkbox" || i.type === "radio") {
      if (i.checked) parts.push(i.type + "=" + (i.closest("label") ? i.closest("label").innerText : "on"));
    }
    else parts.push("input=" + i.value);
  });
  el.querySelectorAll("[data-testid*='Active']").forEach(b => parts.push("active=" + b.innerText));
  parts.push("text=" + el.innerText.trim());
  return parts.join(" | ");
}
"""

# The numbers a view shows: table cells (the grid's accessible table), chart traces, page text.
_NUMBERS_JS = """
() => {
  const main = document.querySelector("[data-testid='stMain']");
  const tables = Array.from(main.querySelectorAll("[data-testid='stDataFrame']")).map(
      t => Array.from(t.querySelectorAll("table tr")).map(r => r.innerText).join("\\n"));
  const charts = Array.from(main.querySelectorAll(".js-plotly-plot")).map(
      c => JSON.stringify((c.data || []).map(t => [t.name, t.x, t.y, t.z])));
  return {text: main.innerText, tables: tables, charts: charts};
}
"""


def widget_values(page: Any, keys: tuple[str, ...]) -> dict[str, str]:
    values = {}
    for key in keys:
        located = widget(page, key)
        assert located.count() == 1, f"no widget with key {key!r} on {page.url}"
        values[key] = located.evaluate(_WIDGET_JS)
    return values


def snapshot(page: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """What a reader sees: every control's value, the sidebar, the numbers and the page text."""
    harness.wait_rendered(page)
    numbers = page.evaluate(_NUMBERS_JS)
    return {"widgets": widget_values(page, (*SIDEBAR_KEYS, *keys)), **numbers}


def query_of(page: Any) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query, keep_blank_values=True).items()}


def notices(page: Any) -> str:
    return "\n".join(page.get_by_test_id("stAlertContentWarning").all_inner_texts())


def open_page(page: Any, url: str, slug: str, timeout_ms: float = ACTION_TIMEOUT_MS) -> None:
    harness.open_app(page, url, main=PAGES[slug][2], timeout_ms=timeout_ms)
    assert page.get_by_test_id("stMain").get_by_role("heading", name=PAGES[slug][1]).first.is_visible()


def assert_restored(new_page: Callable[[], Any], original: Any, slug: str,
                    timeout_ms: float = ACTION_TIMEOUT_MS) -> None:
    """Open ``original``'s address in a fresh context; the view must be the same."""
    keys = PAGE_KEYS[slug]
    expected = snapshot(original, keys)
    url = original.url
    assert urlparse(url).path == PAGES[slug][0], f"the page is not the address's path: {url}"
    shared = new_page()
    open_page(shared, url, slug, timeout_ms)
    for key in keys:  # a control drawn only after the page's numbers (Inspect's histogram picker)
        widget(shared, key).wait_for(state="attached", timeout=timeout_ms)
    harness.wait_settled(shared)
    restored = snapshot(shared, keys)
    assert restored["widgets"] == expected["widgets"]
    assert restored["tables"] == expected["tables"]
    assert restored["charts"] == expected["charts"]
    assert restored["text"] == expected["text"]
    assert query_of(shared) == query_of(original), "the restored view writes another address"
    assert not shared.get_by_test_id("stException").count()


# -- the tests -----------------------------------------------------------------------------------

def test_compare_restores_from_its_address(new_page: Callable[[], Any], app_url: str) -> None:
    page = new_page()
    # three methods keep the tuned and interval views quick on a loaded machine
    open_page(page, f"{app_url}/?methods=msp,energy,knn", "compare")
    remove_chip(page, "ood", "demo-faces")
    remove_chip(page, "methods", "knn")
    click_label(page, "ood_positive", "FPR95 with OOD as the positive class (OpenOOD / pytorch-ood convention)")
    click_label(page, "compare_mode", "tuned on validation")
    click_label(page, "compare_ci", "95 % intervals")
    click_label(page, "export_latex_layout", "average only")
    choose(page, "roc_ood", "demo-noise")
    query = query_of(page)
    assert query == {"ood": "demo-letters,demo-textures,demo-photos,demo-noise", "methods": "msp,energy",
                     "mode": "tuned", "ci": "on", "pos": "on", "roc": "demo-noise", "latex": "average"}, query
    assert_restored(new_page, page, "compare")


def test_tune_restores_from_its_address(new_page: Callable[[], Any], app_url: str) -> None:
    page = new_page()
    open_page(page, f"{app_url}/tune", "tune")
    choose(page, "method", "ReAct (react)", typed="react")
    press(page, "param_clip_percentile", "ArrowLeft", 3)  # 90 → 89.7, then hidden (kept) by clip_by = value
    choose(page, "param_clip_by", "value")
    press(page, "param_clip_value", "ArrowRight", 2)
    query = query_of(page)
    assert query["method"] == "react" and query["p.clip_by"] == "value", query
    assert float(query["p.clip_percentile"]) == pytest.approx(89.7), query
    assert "p.clip_value" in query, query
    assert_restored(new_page, page, "tune")


def test_neurons_restores_from_its_address(new_page: Callable[[], Any], app_url: str) -> None:
    page = new_page()
    open_page(page, f"{app_url}/neurons", "neurons")
    press(page, "neurons_top", "ArrowRight", 5)  # x = 15 (it used to come back as 10)
    press(page, "neurons_over", "ArrowLeft", 2)
    click_label(page, "neurons_denominator", "neurons important to ≥1 class")
    press(page, "neurons_p_a", "ArrowLeft", 2)
    assert query_of(page) == {"n.top": "15", "n.over": "10", "n.share": "important", "n.p_a": "88"}, query_of(page)
    assert_restored(new_page, page, "neurons")


def test_sweep_restores_its_settings_and_result(new_page: Callable[[], Any], app_url: str) -> None:
    page = new_page()
    open_page(page, f"{app_url}/sweep", "sweep")
    choose(page, "sweep_axis1", "p_a")
    choose(page, "sweep_axis2", "use_ap")
    press(page, "sweep_points", "ArrowLeft", 2)  # 3 points per axis: a 3 × 2 grid
    choose(page, "sweep_val_ood", "demo-letters")
    click_label(page, "sweep_objective", "highest AUROC")
    act(page, lambda: widget(page, "sweep_run").get_by_role("button").click())
    widget(page, "sweep_chart").wait_for(state="visible", timeout=SWEEP_TIMEOUT_MS)
    figure = widget(page, "sweep_figure").locator("label").nth(2)  # not the first: the default
    act(page, figure.click)
    query = query_of(page)
    assert {k: query.get(k) for k in ("s.x", "s.y", "s.n", "s.val", "s.by", "s.run")} == {
        "s.x": "p_a", "s.y": "use_ap", "s.n": "3", "s.val": "demo-letters", "s.by": "auroc", "s.run": "on"}, query
    assert "s.show" in query, query
    assert_restored(new_page, page, "sweep", timeout_ms=SWEEP_TIMEOUT_MS)


def test_inspect_restores_from_its_address(new_page: Callable[[], Any], app_url: str) -> None:
    page = new_page()
    open_page(page, f"{app_url}/inspect", "inspect")
    click_label(page, "inspect_source", "Sample from a dataset")
    choose(page, "inspect_dataset", "demo-letters")
    index = widget(page, "inspect_index").locator("input")
    index.fill("7")
    act(page, lambda: index.press("Enter"))
    widget(page, "inspect_method").wait_for(state="visible")
    choose(page, "inspect_method", "Energy")
    query = query_of(page)
    assert {k: query.get(k) for k in ("i.src", "i.set", "i.idx", "i.hist")} == {
        "i.src": "sample", "i.set": "demo-letters", "i.idx": "7", "i.hist": "energy"}, query
    assert_restored(new_page, page, "inspect")


def test_back_and_forward_walk_the_pages(new_page: Callable[[], Any], app_url: str) -> None:
    """Compare → Tune → Neurons → Sweep → Inspect, then Back to each page in turn and Forward;
    the request listener (``requests_log``) sees every page load."""
    page = new_page()
    open_page(page, f"{app_url}/", "compare")
    visited = ["compare"]
    for slug, title in (("tune", "Tune"), ("neurons", "Neurons"), ("sweep", "Sweep"), ("inspect", "Inspect an image")):
        nav(page, title)
        PAGES[slug][2](page).first.wait_for(state="visible")
        visited.append(slug)

    def shows(slug: str) -> None:
        PAGES[slug][2](page).first.wait_for(state="visible")
        heading = page.get_by_test_id("stMain").get_by_role("heading", name=PAGES[slug][1]).first
        assert heading.is_visible(), f"expected the {slug} page at {page.url}"
        assert urlparse(page.url).path == PAGES[slug][0]

    for slug in reversed(visited[:-1]):
        act(page, page.go_back)
        shows(slug)
    for slug in visited[1:3]:
        act(page, page.go_forward)
        shows(slug)
    # each entry is the view it was written for: Back undoes a slider move, Forward redoes it
    top = widget(page, "neurons_top").get_by_role("slider")
    press(page, "neurons_top", "ArrowRight")
    assert query_of(page) == {"n.top": "11"} and float(top.input_value()) == 11.0
    act(page, page.go_back)
    shows("neurons")
    assert query_of(page) == {} and float(top.input_value()) == 10.0
    act(page, page.go_forward)
    assert query_of(page) == {"n.top": "11"} and float(top.input_value()) == 11.0


def test_an_out_of_range_value_is_clamped_with_a_notice(new_page: Callable[[], Any], app_url: str) -> None:
    page = new_page()
    open_page(page, f"{app_url}/tune?{urlencode({'method': 'line', 'p.p_a': '500'})}", "tune")
    assert "p.p_a=500" in notices(page) and "using 99" in notices(page), notices(page)
    assert float(widget(page, "param_p_a").get_by_role("slider").input_value()) == 99.0
    assert query_of(page).get("p.p_a") == "99"  # the address now says what is shown


def test_an_unknown_key_is_dropped_with_a_notice(new_page: Callable[[], Any], app_url: str) -> None:
    page = new_page()
    open_page(page, f"{app_url}/neurons?{urlencode({'colour': 'red', 'n.top': '15'})}", "neurons")
    assert re.search(r"unknown address parameter colour=red", notices(page)), notices(page)
    assert query_of(page) == {"n.top": "15"}, "the unknown key stays in the address"
    assert float(widget(page, "neurons_top").get_by_role("slider").input_value()) == 15.0

"""Fixtures of the real-browser tests: one Streamlit server and one Chromium per session.

* ``app_url``: ``streamlit run app/main.py`` on a free loopback port with
  ``OOD_LENS_CACHE`` = the session cache of ``tests/conftest.py``; the first page load
  (which builds the demo feature cache and fits the scorers) happens here, once.
* ``browser``: Debian Chromium driven by Playwright (``harness.launch_browser``).
* ``page``: a fresh browser context (a new Streamlit session) at 1400×1000 per test; on a
  failure its screenshot and the server log tail are written next to the test's tmp dir.
* ``demo_bench`` / ``demo_model``: the same demo benchmark and model in-process, to check
  the numbers the browser shows against the library.

The test modules skip themselves (module level) when Playwright or Chromium is absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e import harness

HEALTH_TIMEOUT_S = 120.0
FIRST_LOAD_TIMEOUT_MS = 300_000  # first run: builds the demo cache (progress bar) and fits every scorer
ACTION_TIMEOUT_MS = 60_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Remember each phase's report on the item (the ``page`` fixture reads it on teardown)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _check_demo_model() -> None:
    """Fail (not skip) with one clear line when the shipped demo weights are missing."""
    from ood_core.models import create_model
    from ood_core.registry import OODLensError

    try:
        create_model("demo-cnn")
    except OODLensError as error:
        pytest.fail(f"the dashboard's default view needs the demo model: {error}", pytrace=False)


@pytest.fixture(scope="session")
def app_server(session_cache_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.StreamlitServer]:
    """The dashboard served on 127.0.0.1:<free port>, stopped at the end of the session."""
    _check_demo_model()
    logs = tmp_path_factory.mktemp("e2e-server")
    server = harness.StreamlitServer(cache_dir=Path(session_cache_dir), log_path=logs / "streamlit.log")
    server.start(health_timeout=HEALTH_TIMEOUT_S)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One Chromium for the session."""
    with harness.browser_session() as chromium:
        yield chromium


@pytest.fixture(scope="session")
def app_url(app_server: harness.StreamlitServer, browser: Any) -> str:
    """The server's URL, after one full first load of the default (Compare) view."""
    context = browser.new_context(viewport=harness.VIEWPORT)
    page = context.new_page()
    try:
        harness.open_app(page, app_server.url + "/", main=lambda p: p.get_by_test_id("stDataFrame"),
                         timeout_ms=FIRST_LOAD_TIMEOUT_MS)
    except Exception as error:  # noqa: BLE001 - re-raised with the server's side of the story
        pytest.fail(f"first load of the dashboard failed: {error}\n--- server log ---\n{app_server.log_tail()}",
                    pytrace=False)
    finally:
        context.close()
    return app_server.url


@pytest.fixture
def page(browser: Any, app_url: str, app_server: harness.StreamlitServer, request: pytest.FixtureRequest,
         tmp_path: Path) -> Iterator[Any]:
    """A new browser context (= a new Streamlit session) per test, 1400×1000."""
    context = browser.new_context(viewport=harness.VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:  # evidence for a failed run: what the browser showed, what the server said
            tab.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            (tmp_path / "streamlit.log").write_text(app_server.log_tail(20_000))
            print(f"e2e failure artefacts: {tmp_path}")
        except Exception:  # noqa: BLE001 - never mask the real failure
            pass
    context.close()


@pytest.fixture(scope="session")
def demo_bench(app_url: str) -> Any:
    """The demo benchmark in-process (the server has built its cache by now)."""
    from app import resources
    from ood_core.benchmark import load_benchmark

    return load_benchmark(resources.DEMO_MODEL, resources.DEMO_ID, list(resources.DEMO_OODS), progress=False)


@pytest.fixture(scope="session")
def demo_model(app_url: str) -> Any:
    """The demo model in-process, in eval mode (to score uploads the way the app must)."""
    from ood_core.models import create_model

    return create_model("demo-cnn").eval()

"""Drive the dashboard in a real browser: a Streamlit server process, Chromium, and waits.

Shared by the end-to-end tests (``tests/e2e/``) and the latency benchmark
(``bench/bench_app_latency.py``). Only loopback traffic: the server listens on 127.0.0.1
and Chromium is launched with its background networking switched off.

Waiting rule: an action (key press, upload, navigation) is complete when the page's
script state has gone ``running`` → ``notRunning`` at least once *after* the action
(:func:`after_rerun`); checking ``notRunning`` alone races with the rerun's start. Then the
DOM must be quiet for a moment, with no skeleton left (:func:`wait_settled`): on a loaded
2-core machine Chromium draws lazily loaded elements seconds after the server's run has
ended, so an idle app can still show half of its metrics.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_MAIN = REPO_ROOT / "app" / "main.py"
CHROMIUM = os.environ.get("OOD_LENS_CHROMIUM", "/usr/bin/chromium")
# Debian Chromium as root on a closed network.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic")
VIEWPORT = {"width": 1400, "height": 1000}
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
# A test run never rewrites the README's images: scripts/take_screenshots.py points this at docs/.
SCREENSHOT_DIR = Path(os.environ.get("OOD_LENS_SCREENSHOT_DIR",
                                     Path(tempfile.gettempdir()) / "ood-lens-screenshots"))

# Counts script runs in the page: each running → notRunning transition of the stApp root.
# performance.now() of the last run's start and end are kept for the latency benchmark.
_OBSERVER_JS = """
() => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app) return -1;
  if (window.__oodLens === undefined || window.__oodLens.app !== app) {
    const state = {app: app, runs: 0, idleAt: 0, runningAt: 0, sawRunning: false};
    window.__oodLens = state;
    // Walk every record, not just the current value: a running -> notRunning pair delivered in
    // one batch would otherwise never be counted (each record's new value is the next one's old
    // value; the last record's is the attribute's current value).
    new MutationObserver(records => {
      records.forEach((record, i) => {
        const s = i + 1 < records.length ? records[i + 1].oldValue : app.getAttribute('data-test-script-state');
        if (s === 'running' && !state.sawRunning) { state.sawRunning = true; state.runningAt = performance.now(); }
        else if (s === 'notRunning' && state.sawRunning) {
          state.sawRunning = false; state.runs += 1; state.idleAt = performance.now();
        }
      });
    }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state'], attributeOldValue: true});
  }
  return window.__oodLens.runs;
}
"""


class E2EError(RuntimeError):
    """The browser harness could not start the server or the browser."""


def missing_requirement() -> str | None:
    """Why browser tests cannot run here (no Playwright, no Chromium), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StreamlitServer:
    """``streamlit run app/main.py`` on a loopback port, its output in ``log_path``."""

    cache_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, health_timeout: float = 120.0) -> "StreamlitServer":
        """Start the server and wait until ``/_stcore/health`` answers ``ok``."""
        env = {**os.environ, "OOD_LENS_CACHE": str(self.cache_dir), **self.extra_env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        command = [sys.executable, "-m", "streamlit", "run", str(APP_MAIN), "--server.headless", "true",
                   "--server.address", "127.0.0.1", "--server.port", str(self.port),
                   "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._log = log
        deadline = time.monotonic() + health_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise E2EError(f"streamlit exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise E2EError(f"streamlit not healthy after {health_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server process we started (by its id), then kill it if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def launch_browser(playwright: Any, headless: bool = True) -> Any:
    """Debian Chromium through Playwright (browser downloads are impossible here)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=headless)


def run_count(page: Any) -> int:
    """Script runs finished since the observer was installed (installs it when missing)."""
    return int(page.evaluate(_OBSERVER_JS))


def wait_idle(page: Any, timeout_ms: float = 60_000) -> None:
    """Wait until no script run is in progress."""
    page.wait_for_selector(IDLE, timeout=timeout_ms)


# Installs (once per document) a MutationObserver that stamps the last DOM change under stApp.
_QUIET_JS = """
quietMs => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app) return false;
  if (window.__oodQuiet === undefined || window.__oodQuiet.app !== app) {
    const q = {app: app, last: performance.now()};
    window.__oodQuiet = q;
    new MutationObserver(() => { q.last = performance.now(); })
      .observe(app, {subtree: true, childList: true, characterData: true, attributes: true});
  }
  // A skeleton stands in for an element whose lazily loaded code has not arrived yet.
  return app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector("[data-testid='stSkeleton'], [data-testid='stSkeletonElement']")
    && performance.now() - window.__oodQuiet.last >= quietMs;
}
"""
SETTLE_MS = 400


def wait_settled(page: Any, quiet_ms: float = SETTLE_MS, timeout_ms: float = 60_000) -> None:
    """Wait until no script run is in progress, no skeleton waits for its element and the page
    has not changed for ``quiet_ms``."""
    page.evaluate(_QUIET_JS, quiet_ms)  # install the observer now, so the quiet period is real
    page.wait_for_function(_QUIET_JS, arg=quiet_ms, timeout=timeout_ms, polling=50)


def wait_runs(page: Any, after: int, timeout_ms: float = 60_000) -> None:
    """Wait for a finished run beyond ``after`` and an idle app."""
    page.wait_for_function(
        "n => window.__oodLens && window.__oodLens.runs > n && window.__oodLens.app.getAttribute("
        "'data-test-script-state') === 'notRunning'", arg=after, timeout=timeout_ms)


def after_rerun(page: Any, action: Callable[[], Any], timeout_ms: float = 60_000) -> None:
    """Do ``action``, wait for the rerun it triggers to finish and for the page to settle."""
    before = run_count(page)
    action()
    wait_runs(page, before, timeout_ms)
    wait_settled(page, timeout_ms=timeout_ms)


def open_app(page: Any, url: str, main: Callable[[Any], Any] | None = None, timeout_ms: float = 60_000) -> None:
    """Load ``url``; wait for the app to be idle and, if given, for ``main(page)`` (a locator) to show."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    if main is not None:
        main(page).first.wait_for(state="visible", timeout=timeout_ms)
    wait_idle(page, timeout_ms)
    wait_settled(page, timeout_ms=timeout_ms)
    run_count(page)  # install the run observer for the actions that follow


def metric_values(page: Any) -> list[str]:
    """Texts of every ``st.metric`` value on the page, in document order."""
    return [text.strip() for text in page.get_by_test_id("stMetricValue").all_inner_texts()]


def percent(text: str) -> float:
    """``"12.34 %"`` → 12.34."""
    match = re.search(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    if match is None:
        raise ValueError(f"no number in {text!r}")
    return float(match.group())


def wait_rendered(page: Any, timeout_ms: float = 30_000) -> None:
    """Wait until lazily loaded elements have replaced their skeletons and every plotly
    chart has drawn its SVG (the script can be idle before the browser has drawn them)."""
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stSkeleton'], [data-testid='stSkeletonElement']\")"
        " && Array.from(document.querySelectorAll(\"[data-testid='stPlotlyChart']\"))"
        ".every(c => c.querySelector('.main-svg'))", timeout=timeout_ms)


def full_page_screenshot(page: Any, name: str, directory: Path = SCREENSHOT_DIR) -> Path:
    """A PNG of the whole page (Streamlit scrolls inside its main block, so the viewport is
    stretched to the content's height for the shot and restored afterwards)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    wait_rendered(page)
    height = page.evaluate(
        "() => { const m = document.querySelector(\"[data-testid='stMain']\") || document.body;"
        " return Math.max(m.scrollHeight, document.body.scrollHeight); }")
    original = page.viewport_size or VIEWPORT
    try:
        page.set_viewport_size({"width": original["width"], "height": int(max(original["height"], min(height, 6000)))})
        page.wait_for_timeout(400)  # let plotly re-layout after the resize
        wait_rendered(page)
        page.screenshot(path=str(path), full_page=True, animations="disabled")
    finally:
        page.set_viewport_size(original)
    return path


@contextmanager
def browser_session(headless: bool = True) -> Iterator[Any]:
    """``with browser_session() as browser:`` a launched Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright, headless=headless)
        try:
            yield browser
        finally:
            browser.close()


# -- slider-latency probes shared by bench/bench_app_latency.py and bench/bench_app_sessions.py --

# keydown time in the page's clock (capture phase: before the slider's own handler runs)
KEYDOWN_JS = """
() => { if (!window.__oodKeyHooked) { window.__oodKeyHooked = true;
  document.addEventListener('keydown', () => { window.__oodKeyAt = performance.now(); }, {capture: true}); } }
"""

# performance.now() when the metric texts first differ from `before` (a MutationObserver:
# Streamlit streams the metrics before the charts of the same rerun, so this is when the
# user sees the new numbers; the rerun's end also waits for the charts).
WATCH_METRICS_JS = """
(before) => {
  window.__oodMetricsAt = null;
  if (window.__oodMetricsObserver) window.__oodMetricsObserver.disconnect();
  const read = () => Array.from(document.querySelectorAll("[data-testid='stMetricValue']")).map(e => e.innerText.trim());
  const observer = new MutationObserver(() => {
    if (window.__oodMetricsAt === null && JSON.stringify(read()) !== JSON.stringify(before))
      window.__oodMetricsAt = performance.now();
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
  window.__oodMetricsObserver = observer;
}
"""

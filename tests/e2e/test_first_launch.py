"""The first launch in a real browser: a fresh server on an EMPTY cache (the demo is built).

* Something is on screen within 2 s of opening the page: the title drawn before the heavy
  imports (``app/first_launch.py``), timed in the page's own clock from navigation start (on a
  machine so loaded that Streamlit's own shell comes late, within 1 s of that shell).
* One overall progress bar covers the whole build: "stage k of n" with counts and a time
  left, its value never goes back and never reads 100 % while the build runs.
* The page then works (Compare's table, no exception).

This is the suite's one cold demo build (a minute or more on 2 CPU cores); it runs its own
server, not the session's (whose cache is already built).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness

_missing = harness.missing_requirement()
if _missing:
    pytest.skip(f"browser tests need Playwright and Chromium: {_missing}", allow_module_level=True)

pytestmark = pytest.mark.e2e

FIRST_PAINT_BUDGET_MS = 2000.0
BUILD_TIMEOUT_S = 900.0

# Streamlit's own front end (its bundle loaded, the app shell mounted) before the script can draw
# anything: on a loaded 2-core box that alone can pass 2 s (a one-line app: 1.9-2.4 s at load 8),
# so the script's share is also bounded on its own. Measured shares: ~0.4 s idle, 0.5 s on a
# loaded CI run (shell 1,737 ms, title 2,243 ms); the blank page this replaced lasted ~16 s.
FRONT_END_SHARE_MS = 1000.0

# [ms since navigation start when Streamlit's app shell appeared, when the title became visible],
# polled every 25 ms.
_TITLE_VISIBLE_JS = """
() => {
  if (window.__oodShellAt === undefined && document.querySelector("[data-testid='stApp']"))
    window.__oodShellAt = performance.now();
  const title = Array.from(document.querySelectorAll('h1')).find(h => h.innerText.includes('OOD Lens'));
  if (!title) return false;
  const box = title.getBoundingClientRect();
  return box.width > 0 && box.height > 0 ? [window.__oodShellAt ?? performance.now(), performance.now()] : false;
}
"""
_PROGRESS_JS = """
() => {
  const bar = document.querySelector("[data-testid='stProgress']");
  const table = document.querySelector("[data-testid='stDataFrame']");
  if (!bar) return [null, null, !!table];
  const value = bar.querySelector("[role='progressbar']");
  return [bar.innerText, value ? Number(value.getAttribute('aria-valuenow')) : null, !!table];
}
"""


def test_cold_start_shows_the_title_at_once_then_one_overall_progress(tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    server = harness.StreamlitServer(cache_dir=cache, log_path=tmp_path / "streamlit.log").start()
    try:
        with harness.browser_session() as browser:
            context = browser.new_context(viewport=harness.VIEWPORT)
            page = context.new_page()
            page.goto(server.url + "/", wait_until="domcontentloaded")
            handle = page.wait_for_function(_TITLE_VISIBLE_JS, timeout=60_000, polling=25)
            shell_ms, first_paint_ms = (float(v) for v in handle.json_value())
            print(f"title visible {first_paint_ms:.0f} ms after navigation start, Streamlit's shell at "
                  f"{shell_ms:.0f} ms (cold server, empty cache)")
            texts: list[str] = []
            values: list[float] = []
            deadline = time.monotonic() + BUILD_TIMEOUT_S
            table = False
            while not table and time.monotonic() < deadline:
                text, value, table = page.evaluate(_PROGRESS_JS)
                if text and (not texts or texts[-1] != text):
                    texts.append(text)
                if value is not None:
                    values.append(value)
                time.sleep(0.1)
            assert table, f"no table after {BUILD_TIMEOUT_S:.0f} s; progress seen: {texts[-3:]}\n{server.log_tail()}"
            harness.wait_idle(page, timeout_ms=120_000)
            page.get_by_test_id("stDataFrame").first.wait_for(state="visible")
            boxes = page.get_by_test_id("stException")
            assert boxes.count() == 0, boxes.first.inner_text()[:500]
            context.close()
    finally:
        server.stop()

    print("\n".join(texts[:3] + ["…"] + texts[-3:]))
    # within 2 s; when Streamlit's own shell came late (a loaded machine), within 1 s of it
    assert first_paint_ms <= max(FIRST_PAINT_BUDGET_MS, shell_ms + FRONT_END_SHARE_MS), \
        f"title first visible after {first_paint_ms:.0f} ms (Streamlit's shell at {shell_ms:.0f} ms)"
    staged = [t for t in texts if re.search(r"stage \d+ of (\d+)", t)]
    assert staged, f"no 'stage k of n' in the progress texts: {texts}"
    counts = {int(re.search(r"stage \d+ of (\d+)", t).group(1)) for t in staged}
    assert len(counts) == 1 and counts.pop() >= 8, f"the plan changed or is short: {staged}"
    stages = [int(re.search(r"stage (\d+) of", t).group(1)) for t in staged]
    assert stages == sorted(stages), "the stage number went back"
    assert any(re.search(r"demo-\w+ \(test\), [\d,]+ of 1,000 images", t) for t in staged), staged
    assert any(re.search(r"about [\d a-z]+ left|a few seconds left", t) for t in staged), "no time left shown"
    assert len(values) > 10 and values == sorted(values), f"the bar went back (or was never read): {values}"
    assert all(v < 100 for v in values), "the bar read 100 % while work went on"
    assert all("100.0 % done" not in t for t in texts)

"""Slider latency of the dashboard in a real browser: key press → updated metrics, and key
press → the whole rerun with both charts drawn.

The Tune page (LINe, the default tuned method) is opened by URL in Debian Chromium
(Playwright); its ``p_a`` slider (``--slider``; the first slider when that key is absent) gets
keyboard focus and ``ArrowRight`` (``ArrowLeft`` when the range's end is nearer) is pressed
``--moves`` times (after one warm-up move). Each move is timed in the page's own clock from the
``keydown`` event to
* **metrics shown**: the metric texts first differ (a MutationObserver on the page), and
* **whole rerun**: the later of the rerun's end (the app's script state back to
  ``notRunning``) and the last DOM change inside the page's plotly charts (the score
  histogram and the ROC redrawn; a chart counts as drawn once nothing in it has changed for
  ``CHART_QUIET_MS``).
Every move is a new slider value, so each one is a fresh ``evaluate_method`` on the server (no
cached result is reused). Both medians are judged against the target (≤ 300 ms).

Scales:
  demo   demo-cnn on demo-mnist (800 ID test images) vs the five demo OOD sets (5,000).
  cifar  densenet100-cifar10 on cifar10 vs isun, dtd10, mnist. Its cache is built first with
         ``python -m precompute --model densenet100-cifar10 --id cifar10 --ood isun dtd10 mnist``
         (several minutes on 2 CPU cores; ``--limit N`` shrinks every split to N images).
The row counts actually measured are printed with the figures.

Run:  python bench/bench_app_latency.py                      (demo)
      python bench/bench_app_latency.py --scale both --limit 2000 --json /tmp/latency.json
Exit code: 0 when both medians pass at every measured scale, 1 otherwise, 2 when it cannot run here.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import environment, format_ms, format_table, write_json
from tests.e2e import harness

TARGET_MS = 300.0
FIRST_LOAD_TIMEOUT_MS = 900_000  # may build the demo cache and fit every scorer
MOVE_TIMEOUT_MS = 60_000
CHART_QUIET_MS = 300  # no change inside any chart for this long after the rerun: drawn
CHART_WAIT_MS = 3_000  # after the rerun, stop waiting for a chart that does not change
METHOD = "line"
# LINe's p_a (percent of neurons dropped, step 1), from 86 upwards (set by the URL): every step
# changes the scores at both scales (on the CIFAR DenseNet p_a ≤ 85 all give the same masks) and
# the one-decimal metric texts more often than δ's 0.01 steps do
SLIDER_KEY = "param_p_a"
START = {"p.p_a": "86"}


@dataclass(frozen=True)
class Scale:
    """One benchmark configuration the app is opened on."""

    name: str
    model: str
    id_dataset: str
    oods: tuple[str, ...]


SCALES = {
    "demo": Scale("demo", "demo-cnn", "demo-mnist",
                  ("demo-letters", "demo-textures", "demo-photos", "demo-faces", "demo-noise")),
    "cifar": Scale("cifar", "densenet100-cifar10", "cifar10", ("isun", "dtd10", "mnist")),
}


@dataclass
class LatencyResult:
    """Latencies (ms) of one scale, in the page's clock. ``metrics_ms``: keydown → the new metric
    texts are in the page; ``whole_ms``: keydown → the rerun finished *and* every chart redrawn
    (both judged); ``page_ms``: keydown → the script state back to ``notRunning``;
    ``charts_ms``: keydown → the last change inside a chart; ``wall_ms``: keydown → done seen
    from this process (adds Playwright's round trips and the quiet period). ``whole_ms`` counts
    only the moves that redrew every chart, ``metrics_ms`` only those that changed the texts."""

    scale: str
    rows: dict[str, int]
    page_ms: list[float] = field(default_factory=list)
    metrics_ms: list[float] = field(default_factory=list)
    whole_ms: list[float] = field(default_factory=list)
    charts_ms: list[float] = field(default_factory=list)
    charts_redrawn: list[int] = field(default_factory=list)  # charts that changed, per move
    charts_total: int = 0
    wall_ms: list[float] = field(default_factory=list)
    to_start_ms: list[float] = field(default_factory=list)  # keydown → the server's rerun starts
    run_ms: list[float] = field(default_factory=list)       # rerun start → end (script + drawing deltas)
    unchanged: int = 0  # moves whose rerun finished with the same metric texts (rounding)
    first_load_s: float = 0.0

    @property
    def median_ms(self) -> float:
        """Median keydown → metrics shown (the target's figure)."""
        return statistics.median(self.metrics_ms) if self.metrics_ms else float("nan")

    @property
    def whole_median_ms(self) -> float:
        """Median keydown → the rerun done with every chart drawn (the second judged figure)."""
        return statistics.median(self.whole_ms) if self.whole_ms else float("nan")

    @property
    def metrics_passed(self) -> bool:
        return bool(self.metrics_ms) and self.median_ms <= TARGET_MS

    @property
    def whole_passed(self) -> bool:
        return bool(self.whole_ms) and self.whole_median_ms <= TARGET_MS

    @property
    def passed(self) -> bool:
        return self.metrics_passed and self.whole_passed


# performance.now() of the last DOM change inside any plotly chart, and which charts changed
# (plotly redraws its SVG in place: every trace path, axis tick and legend entry is a mutation)
_WATCH_CHARTS_JS = """
() => {
  const w = {last: null, charts: new Set()};
  window.__oodCharts = w;
  if (window.__oodChartObserver) window.__oodChartObserver.disconnect();
  const observer = new MutationObserver(records => {
    const now = performance.now();
    for (const r of records) {
      const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      const chart = node && node.closest("[data-testid='stPlotlyChart']");
      if (chart) { w.last = now; w.charts.add(chart); }
    }
  });
  observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
  window.__oodChartObserver = observer;
}
"""
_DONE_JS = """
([runs, before, quietMs, chartWaitMs]) => {
  const s = window.__oodLens, w = window.__oodCharts;
  if (!s || s.runs <= runs || s.app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const now = Array.from(document.querySelectorAll("[data-testid='stMetricValue']")).map(e => e.innerText.trim());
  const changed = JSON.stringify(now) !== JSON.stringify(before);
  const t = performance.now();
  if (!changed && t - s.idleAt <= 1500) return false;
  const total = document.querySelectorAll("[data-testid='stPlotlyChart']").length;
  const allRedrawn = w.charts.size >= total || t - s.idleAt > chartWaitMs;
  return allRedrawn && t - Math.max(w.last || 0, s.idleAt) >= quietMs;
}
"""


def build_cifar_cache(cache_dir: Path, limit: int | None) -> None:
    """``python -m precompute`` for the CIFAR-10 scale (resumes; finished entries are kept)."""
    scale = SCALES["cifar"]
    command = [sys.executable, "-m", "precompute", "--model", scale.model, "--id", scale.id_dataset,
               "--ood", *scale.oods, "--cache-dir", str(cache_dir)]
    if limit is not None:
        command += ["--limit", str(limit)]
    print("building the CIFAR-10 cache (several minutes on 2 CPU cores):\n  " + " ".join(command), flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=harness.REPO_ROOT, env={**os.environ, "OOD_LENS_CACHE": str(cache_dir)})
    if completed.returncode != 0:
        raise SystemExit(f"precompute failed with exit code {completed.returncode}")
    print(f"cache ready in {time.perf_counter() - started:.0f} s", flush=True)


def cached_rows(scale: Scale, cache_dir: Path) -> dict[str, int]:
    """Rows per split of the cache the app will load (what "scale" means in the report)."""
    from ood_core.benchmark import load_benchmark

    bench = load_benchmark(scale.model, scale.id_dataset, list(scale.oods), cache_root=cache_dir,
                           build_missing=False, progress=False)
    return {f"{scale.id_dataset}/test": len(bench.id_test), f"{scale.id_dataset}/val": len(bench.id_val),
            **{name: len(feats) for name, feats in bench.ood.items()}}


def measure(page: Any, server_url: str, scale: Scale, moves: int, slider_key: str = SLIDER_KEY) -> LatencyResult:
    """Open Tune on ``scale`` and time ``moves`` ArrowRight presses on the ``slider_key`` slider."""
    query = {"page": "tune", "model": scale.model, "id": scale.id_dataset, "ood": ",".join(scale.oods),
             "method": METHOD, **(START if slider_key == SLIDER_KEY else {})}
    result = LatencyResult(scale=scale.name, rows={})
    started = time.perf_counter()
    print(f"[{scale.name}] opening Tune (the first load may build the cache and fit the scorers)…", flush=True)
    harness.open_app(page, f"{server_url}/?{urlencode(query)}", main=lambda p: p.get_by_test_id("stMetric"),
                     timeout_ms=FIRST_LOAD_TIMEOUT_MS)
    result.first_load_s = time.perf_counter() - started
    errors = page.get_by_test_id("stAlertContentError")
    if errors.count():
        raise SystemExit(f"[{scale.name}] the app shows an error: {errors.first.inner_text()}")
    page.evaluate(harness.KEYDOWN_JS)
    keyed = page.locator(f".st-key-{slider_key}").get_by_role("slider")  # a native range input
    slider = keyed.first if keyed.count() else page.get_by_role("slider").first
    slider.focus()
    key = _direction(slider, moves + 1)
    for move in range(moves + 1):  # move 0 warms up (first figures, first plotly serialisation)
        before = harness.metric_values(page)
        runs = harness.run_count(page)
        page.evaluate(harness.WATCH_METRICS_JS, before)
        page.evaluate(_WATCH_CHARTS_JS)
        wall_start = time.perf_counter()
        page.keyboard.press(key)
        page.wait_for_function(_DONE_JS, arg=[runs, before, CHART_QUIET_MS, CHART_WAIT_MS],
                               timeout=MOVE_TIMEOUT_MS, polling=10)
        wall = (time.perf_counter() - wall_start) * 1e3
        key_at, start_at, idle_at, metrics_at, charts_at, redrawn, total = page.evaluate(
            "() => [window.__oodKeyAt, window.__oodLens.runningAt, window.__oodLens.idleAt, window.__oodMetricsAt,"
            " window.__oodCharts.last, window.__oodCharts.charts.size,"
            " document.querySelectorAll(\"[data-testid='stPlotlyChart']\").length]")
        whole_at = max(idle_at, charts_at if charts_at is not None else idle_at)
        changed = harness.metric_values(page) != before
        value = slider.input_value()
        if move == 0:
            print(f"[{scale.name}] warm-up move: {whole_at - key_at:.0f} ms", flush=True)
            continue
        result.page_ms.append(float(idle_at - key_at))
        if redrawn >= total:  # a move whose scores did not change redraws nothing: not a rerun with charts
            result.whole_ms.append(float(whole_at - key_at))
        if charts_at is not None:
            result.charts_ms.append(float(charts_at - key_at))
        result.charts_redrawn.append(int(redrawn))
        result.charts_total = int(total)
        if metrics_at is not None:
            result.metrics_ms.append(float(metrics_at - key_at))
        result.wall_ms.append(wall)
        result.to_start_ms.append(float(start_at - key_at))
        result.run_ms.append(float(idle_at - start_at))
        result.unchanged += 0 if changed else 1
        shown = f"metrics shown {metrics_at - key_at:6.1f} ms, " if metrics_at is not None else ""
        drawn = f"charts drawn {charts_at - key_at:7.1f} ms" if charts_at is not None else "no chart changed"
        print(f"[{scale.name}] move {move:2d}: slider {value:>6}  {shown}whole rerun {whole_at - key_at:7.1f} ms "
              f"(key → run start {start_at - key_at:6.1f}, run end {idle_at - key_at:6.1f}, {drawn}, "
              f"{min(redrawn, total)} of {total} charts redrawn)" + ("" if changed else "  (metrics text unchanged)"),
              flush=True)
    return result


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _direction(slider: Any, presses: int) -> str:
    """``ArrowRight``, or ``ArrowLeft`` when ``presses`` steps to the right would pass the
    slider's maximum (a key press at the end of the range triggers no rerun)."""
    value, high, step = (slider.get_attribute(name) for name in ("value", "max", "step"))
    try:
        room = (float(high) - float(value)) / float(step or 1)
    except (TypeError, ValueError):
        return "ArrowRight"
    return "ArrowRight" if room >= presses else "ArrowLeft"


def report(results: Sequence[LatencyResult]) -> str:
    target = f"≤ {TARGET_MS:.0f} ms"
    headers = ["scale", "rows (ID test / OOD)", "moves timed (metrics / whole)", "metrics shown median ms",
               "min–max ms", target,
               "whole rerun (charts drawn) median ms", "min–max ms", target, "run end ms", "charts drawn ms",
               "key→start ms", "wall ms"]
    rows = []
    for r in results:
        id_rows = next((v for k, v in r.rows.items() if k.endswith("/test")), 0)
        ood_rows = sum(v for k, v in r.rows.items() if "/" not in k)
        spread = lambda v: (f"{format_ms(min(v))}–{format_ms(max(v))}" if v else "n/a")  # noqa: E731
        rows.append([r.scale, f"{id_rows:,} / {ood_rows:,}", f"{len(r.metrics_ms)} / {len(r.whole_ms)}",
                     format_ms(r.median_ms),
                     spread(r.metrics_ms), "PASS" if r.metrics_passed else "FAIL",
                     format_ms(r.whole_median_ms), spread(r.whole_ms), "PASS" if r.whole_passed else "FAIL",
                     format_ms(_median(r.page_ms)), format_ms(_median(r.charts_ms)), format_ms(_median(r.to_start_ms)),
                     format_ms(_median(r.wall_ms))])
    return format_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="examples:\n  python bench/bench_app_latency.py --scale demo\n"
               "  python bench/bench_app_latency.py --scale cifar --limit 2000\n")
    parser.add_argument("--scale", choices=["demo", "cifar", "both"], default="demo")
    parser.add_argument("--moves", type=int, default=10, help="timed slider moves per scale")
    parser.add_argument("--slider", default=SLIDER_KEY, help="widget key of the slider moved (LINe's p_a)")
    parser.add_argument("--limit", type=int, default=None,
                        help="CIFAR scale: cap every split at N images when building its cache (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache root (default: $OOD_LENS_CACHE or ~/.cache/ood-lens)")
    parser.add_argument("--no-build", action="store_true", help="do not run precompute for the CIFAR scale")
    parser.add_argument("--server-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the server (torch intra-op threads); default: torch's own choice")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    missing = harness.missing_requirement()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    from ood_core import paths

    cache_dir = (args.cache_dir or paths.cache_root()).expanduser()
    scales = [SCALES[s] for s in (("demo", "cifar") if args.scale == "both" else (args.scale,))]
    if any(s.name == "cifar" for s in scales) and not args.no_build:
        build_cifar_cache(cache_dir, args.limit)
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    log = Path(tempfile.mkdtemp(prefix="ood-lens-bench-")) / "streamlit.log"
    threads = {} if args.server_threads is None else {"OMP_NUM_THREADS": str(args.server_threads),
                                                       "MKL_NUM_THREADS": str(args.server_threads)}
    server = harness.StreamlitServer(cache_dir=cache_dir, log_path=log, extra_env=threads).start()
    results: list[LatencyResult] = []
    try:
        with harness.browser_session() as browser:
            for scale in scales:
                context = browser.new_context(viewport=harness.VIEWPORT)
                try:
                    result = measure(context.new_page(), server.url, scale, args.moves, args.slider)
                finally:
                    context.close()
                result.rows = cached_rows(scale, cache_dir)
                results.append(result)
    except Exception:
        print(f"--- server log ({log}) ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
    print()
    print(report(results))
    for r in results:
        redrawn = sum(n >= r.charts_total for n in r.charts_redrawn)
        print(f"{r.scale}: rows {r.rows}; first load {r.first_load_s:.1f} s; "
              f"{r.unchanged} of {len(r.page_ms)} moves left the metric text unchanged; "
              f"{redrawn} of {len(r.charts_redrawn)} moves redrew all {r.charts_total} charts "
              "(the medians count only the moves that changed what they time)")
    verdict = all(r.passed for r in results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"server torch threads: {args.server_threads or 'default'}; load average {load:.1f} on {os.cpu_count()} CPUs "
          f"(at the start: {load_at_start:.1f})")
    for r in results:
        print(f"[{r.scale}] slider → updated metrics: median {format_ms(r.median_ms)} ms "
              f"({'PASS' if r.metrics_passed else 'FAIL'}); slider → whole rerun, charts drawn: median "
              f"{format_ms(r.whole_median_ms)} ms ({'PASS' if r.whole_passed else 'FAIL'}); "
              f"target ≤ {TARGET_MS:.0f} ms")
    print(f"both medians ≤ {TARGET_MS:.0f} ms at every scale: {'PASS' if verdict else 'FAIL'}")
    if args.json:
        write_json(args.json, {"target_ms": TARGET_MS, "environment": environment(),
                               "server_threads": args.server_threads, "load_at_start": load_at_start,
                               "results": [{**r.__dict__, "median_ms": r.median_ms,
                                            "whole_median_ms": r.whole_median_ms,
                                            "metrics_passed": r.metrics_passed, "whole_passed": r.whole_passed,
                                            "passed": r.passed} for r in results]})
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())

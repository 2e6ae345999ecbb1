"""Ten concurrent browser sessions on one dashboard server: each answers a slider move, and the
server holds the feature cache once.

One Streamlit server is started on the demo (``$OOD_LENS_CACHE``, default
``~/.cache/ood-lens``; its first load builds the demo cache when it is missing). One Chromium
(Playwright) opens ``--sessions`` browser contexts — each a Streamlit session of its own — on
the Tune page (LINe, every session at the same setting), then every session presses
``ArrowRight`` on its first slider (δ) *at the same moment*: the server runs ten reruns at once.
Each session must show new metric texts; its latency is measured in the page's own clock, from
``keydown`` to the new metrics on screen (as ``bench_app_latency.py`` does). With
``--distinct`` session *i* starts at δ = 1.00 + 0.10·(i − 1) instead (from the URL), so the
concurrent moves score ten different settings.

Memory: the resident set (RSS, and PSS from ``/proc/<pid>/smaps_rollup``) of the server
process and its children, read from ``/proc`` before any session, after the first session
(the cache loaded and the scorers fitted), after all sessions opened and after their slider
moves. Sessions share the one ``st.cache_resource`` benchmark, so the growth from one session
to all of them must stay far below one copy of the cache per extra session; the cache's tensor
size (every feature set, validation set, training statistic and the head, as the app loads
them) is printed for comparison. A new setting adds its result and masks (memoised per
setting, shared by every session): the verdict reads the memory once all sessions are open,
before the moves.

Run:  python bench/bench_app_sessions.py
      python bench/bench_app_sessions.py --sessions 10 --distinct --json /tmp/sessions.json
Exit code: 0 when every session answered its slider move, 1 otherwise, 2 when it cannot run here.
"""
from __future__ import annotations

import argparse
import os
import statistics
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

FIRST_LOAD_TIMEOUT_MS = 900_000  # may build the demo cache and fit every scorer
OPEN_TIMEOUT_MS = 180_000        # the other sessions open while the server is busy with them all
MOVE_TIMEOUT_MS = 60_000         # ten reruns at once on 2 CPU cores
MODEL, ID_DATASET = "demo-cnn", "demo-mnist"
OODS = ("demo-letters", "demo-textures", "demo-photos", "demo-faces", "demo-noise")
METHOD = "line"
START_DELTA, DELTA_STEP = 1.0, 0.1  # session i starts at δ = 1.00 + 0.10·i: ten distinct settings
MIB = 1024 * 1024
# One copy of the cache per extra session would grow the server by the cache's size each; the
# verdict's bound is half of that (what does grow: Streamlit's per-session state and messages).
MAX_GROWTH_PER_SESSION = 0.5

# no run in progress and new metric texts on screen (or a run ended 1.5 s ago with the same
# texts). New texts alone end the wait, so a session is judged by what it shows, whatever the
# harness's run counter saw (it once missed runs whose flips came in one batch; now fixed).
_DONE_JS = """
([runs, before]) => {
  const s = window.__oodLens;
  if (!s || s.app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const now = Array.from(document.querySelectorAll("[data-testid='stMetricValue']")).map(e => e.innerText.trim());
  return JSON.stringify(now) !== JSON.stringify(before) || (s.runs > runs && performance.now() - s.idleAt > 1500);
}
"""


# -- the server's memory, from /proc ---------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc/<n>/stat's parent field)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _kib(path: str, field_name: str) -> int:
    """A ``<field>: <n> kB`` line of a /proc file, in KiB (0 when unreadable)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class Memory:
    """Resident memory of the server process tree at one moment (bytes)."""

    label: str
    rss: int
    pss: int
    processes: int


def server_memory(pid: int, label: str) -> Memory:
    """RSS (shared pages counted in each process) and PSS (shared pages split between the
    processes sharing them) of ``pid`` and its descendants."""
    pids = [pid, *_children(pid)]
    return Memory(label, sum(_kib(f"/proc/{p}/status", "VmRSS") for p in pids) * 1024,
                  sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids) * 1024, len(pids))


def cache_tensor_bytes(cache_dir: Path) -> tuple[int, dict[str, int]]:
    """Bytes of every tensor the app holds for the demo benchmark (as ``get_benchmark`` loads it:
    test and validation OOD sets, ID test / val, training statistics, head), and per part."""
    import torch

    from ood_core.benchmark import load_benchmark
    from ood_core.datasets.outliers import val_outliers_name

    bench = load_benchmark(MODEL, ID_DATASET, list(OODS), cache_root=cache_dir, build_missing=False, progress=False,
                           val_ood_datasets=[val_outliers_name(ID_DATASET)])

    def feature_bytes(features: Any) -> int:
        return sum(v.nelement() * v.element_size() for v in vars(features).values() if isinstance(v, torch.Tensor))

    parts = {"ID test + val": feature_bytes(bench.id_test) + feature_bytes(bench.id_val),
             "OOD test sets": sum(feature_bytes(f) for f in bench.ood.values()),
             "validation OOD": sum(feature_bytes(f) for f in bench.val_ood.values()),
             "training statistics + head": sum(t.nelement() * t.element_size() for t in bench.stats.values())
             + sum(t.nelement() * t.element_size() for t in (bench.head_weight, bench.head_bias))}
    return sum(parts.values()), parts


# -- the sessions ----------------------------------------------------------------------------------
@dataclass
class Session:
    """One browser context on the Tune page and its slider move."""

    number: int
    page: Any
    start_delta: float | None  # None: the method's default
    before_value: str = ""
    after_value: str = ""
    before_metrics: list[str] = field(default_factory=list)
    runs: int = 0
    metrics_ms: float | None = None  # keydown → new metric texts on screen (page clock)
    rerun_ms: float | None = None    # keydown → the rerun finished (page clock)
    changed: bool = False
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.changed and not self.error


def tune_url(server_url: str, delta: float | None) -> str:
    query = {"model": MODEL, "id": ID_DATASET, "ood": ",".join(OODS), "method": METHOD,
             **({"p.delta": f"{delta:.2f}"} if delta is not None else {})}
    return f"{server_url}/tune?{urlencode(query)}"


def open_session(browser: Any, server_url: str, number: int, wait: bool, timeout_ms: float,
                 distinct: bool) -> Session:
    """A new context (= a new Streamlit session) on Tune; ``wait``: until its metrics are shown."""
    context = browser.new_context(viewport=harness.VIEWPORT)
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    session = Session(number, page, START_DELTA + DELTA_STEP * (number - 1) if distinct else None)
    if wait:
        ready(session, tune_url(server_url, session.start_delta), timeout_ms)
    else:
        page.goto(tune_url(server_url, session.start_delta), wait_until="domcontentloaded")
    return session


def _metrics(page: Any) -> Any:
    return page.get_by_test_id("stMetric")


def ready(session: Session, url: str | None, timeout_ms: float) -> None:
    """Wait until the session shows Tune's metrics and is idle (``url``: open it first)."""
    if url is not None:
        harness.open_app(session.page, url, main=_metrics, timeout_ms=timeout_ms)
    else:
        _metrics(session.page).first.wait_for(state="visible", timeout=timeout_ms)
        harness.wait_idle(session.page, timeout_ms)
        harness.wait_settled(session.page, timeout_ms=timeout_ms)
        harness.run_count(session.page)
    errors = session.page.get_by_test_id("stAlertContentError")
    if errors.count():
        raise SystemExit(f"session {session.number}: the app shows an error: {errors.first.inner_text()}")


def press_all(sessions: Sequence[Session]) -> None:
    """Focus every session's first slider, then press ArrowRight in each, one right after the
    other (no waiting in between: the server gets every rerun at once)."""
    for s in sessions:
        s.page.evaluate(harness.KEYDOWN_JS)
        slider = s.page.get_by_role("slider").first
        slider.focus()
        s.before_value = slider.input_value()
        s.before_metrics = harness.metric_values(s.page)
        s.runs = harness.run_count(s.page)
        s.page.evaluate(harness.WATCH_METRICS_JS, s.before_metrics)
    for s in sessions:
        s.page.keyboard.press("ArrowRight")


def collect(session: Session) -> None:
    """Wait for the session's rerun and read its figures."""
    page = session.page
    try:
        page.wait_for_function(_DONE_JS, arg=[session.runs, session.before_metrics], timeout=MOVE_TIMEOUT_MS,
                               polling=10)
        key_at, idle_at, metrics_at, runs = page.evaluate(
            "() => [window.__oodKeyAt, window.__oodLens.idleAt, window.__oodMetricsAt, window.__oodLens.runs]")
        session.rerun_ms = float(idle_at - key_at) if runs > session.runs else None  # None: the run was not seen
        session.metrics_ms = float(metrics_at - key_at) if metrics_at is not None else None
        session.after_value = page.get_by_role("slider").first.input_value()
        session.changed = harness.metric_values(page) != session.before_metrics
        if session.after_value == session.before_value:
            session.error = "the slider did not move"
    except Exception as error:  # noqa: BLE001 - reported per session, with what the page showed
        session.error = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        try:
            state = page.evaluate("() => [document.querySelector(\"[data-testid='stApp']\")"
                                  ".getAttribute('data-test-script-state'), window.__oodLens && window.__oodLens.runs]")
            session.after_value = page.get_by_role("slider").first.input_value()
            shot = Path(tempfile.gettempdir()) / f"ood-lens-session-{session.number}.png"
            page.screenshot(path=str(shot))
            session.error += f" (script state {state[0]}, runs {session.runs} → {state[1]}; screenshot {shot})"
        except Exception:  # noqa: BLE001 - the page itself may be gone
            pass


def report(sessions: Sequence[Session], memory: Sequence[Memory], cache_bytes: int, parts: dict[str, int]) -> str:
    rows = [[f"session {s.number}", s.before_value, s.after_value, format_ms(s.metrics_ms), format_ms(s.rerun_ms),
             "yes" if s.changed else "NO", s.error or "ok"] for s in sessions]
    answered = [s.metrics_ms for s in sessions if s.answered and s.metrics_ms is not None]
    reruns = [s.rerun_ms for s in sessions if s.rerun_ms is not None]
    if answered:
        rows.append(["median", "", "", format_ms(statistics.median(answered)),
                     format_ms(statistics.median(reruns) if reruns else None), "", ""])
    lines = [format_table(["session", "δ before", "δ after", "metrics shown ms", "rerun done ms",
                           "metrics changed", "status"], rows), ""]
    base = memory[0]
    lines.append(format_table(
        ["server memory", "RSS MiB", "PSS MiB", "Δ RSS MiB", "processes"],
        [[m.label, f"{m.rss / MIB:.1f}", f"{m.pss / MIB:.1f}", f"{(m.rss - base.rss) / MIB:+.1f}", str(m.processes)]
         for m in memory]))
    lines.append("")
    lines.append(f"the cache's tensors as the app holds them: {cache_bytes / MIB:.1f} MiB ("
                 + ", ".join(f"{k} {v / MIB:.1f}" for k, v in parts.items()) + ")")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="examples:\n  python bench/bench_app_sessions.py\n"
               "  python bench/bench_app_sessions.py --sessions 4 --json /tmp/sessions.json\n")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent browser sessions (≥ 2)")
    parser.add_argument("--distinct", action="store_true",
                        help="start each session at another δ, so the concurrent moves score distinct settings")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache root (default: $OOD_LENS_CACHE or ~/.cache/ood-lens)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.sessions < 2:
        parser.error("--sessions must be at least 2")
    missing = harness.missing_requirement()
    if missing or not Path("/proc/self/status").exists():
        print(f"cannot run: {missing or 'no /proc to read the memory from'}", file=sys.stderr)
        return 2
    from ood_core import paths

    cache_dir = (args.cache_dir or paths.cache_root()).expanduser()
    log = Path(tempfile.mkdtemp(prefix="ood-lens-sessions-")) / "streamlit.log"
    server = harness.StreamlitServer(cache_dir=cache_dir, log_path=log).start()
    pid = server.process.pid
    memory = [server_memory(pid, "server started, no session")]
    sessions: list[Session] = []
    try:
        with harness.browser_session() as browser:
            started = time.perf_counter()
            print("session 1: opening Tune (the first load may build the cache and fit the scorers)…", flush=True)
            sessions.append(open_session(browser, server.url, 1, wait=True, timeout_ms=FIRST_LOAD_TIMEOUT_MS,
                                         distinct=args.distinct))
            print(f"session 1 ready in {time.perf_counter() - started:.1f} s", flush=True)
            memory.append(server_memory(pid, "after session 1 opened"))
            started = time.perf_counter()
            others = [open_session(browser, server.url, n, wait=False, timeout_ms=OPEN_TIMEOUT_MS,
                                   distinct=args.distinct) for n in range(2, args.sessions + 1)]  # opened together: concurrent first runs
            for s in others:
                ready(s, None, OPEN_TIMEOUT_MS)
            sessions += others
            print(f"sessions 2-{args.sessions} ready in {time.perf_counter() - started:.1f} s", flush=True)
            memory.append(server_memory(pid, f"after {args.sessions} sessions opened"))
            press_all(sessions)
            for s in sessions:
                collect(s)
            memory.append(server_memory(pid, f"after {args.sessions} slider moves"))
            for s in sessions:
                s.page.context.close()
    except Exception:
        print(f"--- server log ({log}) ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
    cache_bytes, parts = cache_tensor_bytes(cache_dir)
    print()
    print(report(sessions, memory, cache_bytes, parts))
    extra = len(sessions) - 1
    growth = memory[2].rss - memory[1].rss  # first session → all sessions open (before the moves)
    per_session = growth / extra
    shared = per_session <= MAX_GROWTH_PER_SESSION * cache_bytes
    print(f"growth from 1 to {len(sessions)} open sessions: {growth / MIB:+.1f} MiB RSS = {per_session / MIB:+.2f} "
          f"MiB per extra session, {per_session / cache_bytes:.2f}× the cache (one copy per session would be "
          f"1.00×; bound {MAX_GROWTH_PER_SESSION:.2f}×): {'one copy of the cache' if shared else 'MORE THAN ONE COPY?'}")
    print(f"the {len(sessions)} concurrent slider moves added {(memory[3].rss - memory[2].rss) / MIB:+.1f} MiB "
          f"({'distinct settings' if args.distinct else 'one new setting'}: results and masks memoised per setting)")
    ok = all(s.answered for s in sessions)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"every session answered its slider move: {'PASS' if ok else 'FAIL'} "
          f"({sum(s.answered for s in sessions)} of {len(sessions)})")
    if args.json:
        write_json(args.json, {"environment": environment(), "cache_bytes": cache_bytes, "cache_parts": parts,
                               "memory": memory, "shared_cache": shared,
                               "sessions": [{k: v for k, v in vars(s).items() if k != "page"} for s in sessions]})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

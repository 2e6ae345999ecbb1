"""The Tune page's preview at ImageNet scale on the CPU: slider value → preview metrics, slider
value → exact metrics, and the memory of the process holding the benchmark.

The benchmark is ``SyntheticSettings.imagenet()`` (``ood_core.synthetic``: 50,000 ID + 40,000 OOD
rows, D = 2,048, K = 1,000, 20,000 training rows for the statistics, a 10,000-row KNN bank), on
the CPU, which is above ``ood_core.preview.PREVIEW_ABOVE_MACS``: the app previews it. For every
method (or ``--methods``):

* **preview**: the sub-benchmark of ``ood_core.preview`` (the app's, built once; every
  ``--budgets`` row budget, default the app's ``PREVIEW_ROWS``), then ``--moves`` slider moves,
  each a new value of the method's first slider (``bench.bench_scoring.slider_values``), each
  ``evaluate_method`` on the sub-benchmark: what the app computes before it draws the preview
  (the method at its defaults and Energy are computed once and reused, as in the app). The
  median of the moves after the first is judged against 300 ms (the first move of a method
  also builds what its scorer keeps per tensor; it is printed);
* **exact**: one further move on the full benchmark (``--no-exact`` skips it; LINe and KNN take
  minutes here);
* **memory**: the resident set size after the benchmark is built and the generator's training
  split dropped (what the app holds: its tensors' bytes are listed by field), and the peak.

The script, like the app (``app/main.py``), sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads:
on a loaded 2-core machine OpenMP's spinning threads made a 1,000 × 1,000 logsumexp 80 ms
instead of 1 ms. Figures are in-process (no browser): the page adds its rerun and drawing
(``bench/bench_app_latency.py`` measures those for the demo).

Run:  python -m bench.bench_preview                                  (≈ 10-30 min on 2 cores)
      python -m bench.bench_preview --no-exact --budgets 500,1000,2000,4000 --methods react,dice,energy
Exit code: 0 when every timed method's preview median is ≤ 300 ms at the app's budget, else 1.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as the app does

import argparse  # noqa: E402
import gc  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench._common import environment, format_ms, format_table, write_json  # noqa: E402
from bench.bench_scoring import slider_values  # noqa: E402
from ood_core import preview  # noqa: E402
from ood_core.benchmark import Benchmark, available_methods, evaluate_method  # noqa: E402
from ood_core.synthetic import SyntheticSettings, synthesize  # noqa: E402

TARGET_MS = 300.0
REFERENCE = "energy"  # what the Tune page also shows (computed once, like the method's defaults)


@dataclass
class MethodTiming:
    """One method's slider moves (ms): ``preview_ms`` per move on the subsample, ``exact_ms`` one
    move on the full benchmark (None when not run)."""

    method: str
    param: str | None
    budget: int
    preview_ms: list[float] = field(default_factory=list)
    exact_ms: float | None = None
    error: str = ""

    @property
    def median_ms(self) -> float:
        """Median preview move after the first (the first alone when there is one move)."""
        moves = self.preview_ms[1:] or self.preview_ms
        return statistics.median(moves) if moves else float("nan")

    @property
    def passed(self) -> bool:
        return not self.error and self.median_ms <= TARGET_MS


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def tensor_bytes(bench: Benchmark) -> dict[str, int]:
    """Bytes the benchmark's tensors hold, by field, each storage counted once (the ID test and OOD
    sets are views of one block): ``"penultimate"``, ``"logits"``, ..., ``"statistics"``, ``"head"``."""
    seen: set[int] = set()
    out: dict[str, int] = {}

    def add(name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen:
            return
        seen.add(storage.data_ptr())
        out[name] = out.get(name, 0) + storage.nbytes()

    for feats in (bench.id_test, bench.id_val, *bench.ood.values(), *bench.val_ood.values()):
        for name in ("penultimate", "logits", "prepool_max", "odin_logits", "labels"):
            add(name, getattr(feats, name))
    for tensor in bench.stats.values():
        add("statistics", tensor)
    add("head", bench.head_weight)
    add("head", bench.head_bias)
    return out


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def time_moves(bench: Benchmark, method: str, moves: int, budget: int) -> MethodTiming:
    """``moves`` slider moves of ``method`` on ``bench`` (the preview sub-benchmark)."""
    scorer = bench.scorer(method)
    param, settings = slider_values(scorer, moves)
    timing = MethodTiming(method, param, budget)
    try:
        evaluate_method(bench, method)  # the Tune page's "defaults" column: computed once, reused
        for hparams in settings:
            started = time.perf_counter()
            evaluate_method(bench, method, hparams)
            timing.preview_ms.append((time.perf_counter() - started) * 1e3)
    except Exception as error:  # noqa: BLE001 - reported in the table
        timing.error = f"{type(error).__name__}: {error}"
    return timing


def time_exact(bench: Benchmark, timing: MethodTiming) -> None:
    """One exact move: the method at a value no preview move used, on every row."""
    _, settings = slider_values(bench.scorer(timing.method), len(timing.preview_ms) + 1)
    started = time.perf_counter()
    try:
        evaluate_method(bench, timing.method, settings[-1])
        timing.exact_ms = (time.perf_counter() - started) * 1e3
    except Exception as error:  # noqa: BLE001
        timing.error = timing.error or f"{type(error).__name__}: {error}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="examples:\n  python -m bench.bench_preview\n"
                                            "  python -m bench.bench_preview --no-exact --budgets 1000,2000,4000\n")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: every available one)")
    parser.add_argument("--budgets", default=str(preview.PREVIEW_ROWS), help="comma-separated preview row budgets")
    parser.add_argument("--moves", type=int, default=4, help="slider moves per method on the preview")
    parser.add_argument("--no-exact", action="store_true", help="skip the exact move on the full benchmark")
    parser.add_argument("--scale", choices=["imagenet", "small"], default="imagenet",
                        help="small: 5,000 + 4,000 rows with the same D and K (a quick check of the script)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]

    rss_start = rss_bytes()
    settings = SyntheticSettings.imagenet()
    if args.scale == "small":
        from ood_core.synthetic import OODSet

        settings = settings.replace(id_test=5_000, ood=(OODSet("ood", 4_000),), train=4_000, knn_bank=4_000)
    started = time.perf_counter()
    bench = synthesize(settings, device="cpu").benchmark  # the training split is dropped with the Synthetic
    gc.collect()
    built_s = time.perf_counter() - started
    held = tensor_bytes(bench)
    rss_held = rss_bytes()
    features = sum(held.get(k, 0) for k in ("penultimate", "logits", "prepool_max", "odin_logits"))
    rows = len(bench.id_test) + sum(len(f) for f in bench.ood.values())
    print(f"benchmark: {len(bench.id_test):,} ID + {rows - len(bench.id_test):,} OOD rows, D = {settings.dim}, "
          f"K = {settings.classes}; built in {built_s:.0f} s; one full re-score = {preview.rescore_macs(bench):.2e} "
          f"head multiply-adds (preview above {preview.PREVIEW_ABOVE_MACS:.0e}: "
          f"{'previewed' if preview.needs_preview(bench) else 'NOT previewed'})", flush=True)
    print("tensors held (fp32): " + ", ".join(f"{k} {gib(v)}" for k, v in held.items())
          + f"; total {gib(sum(held.values()))}", flush=True)
    print(f"RSS holding the benchmark {gib(rss_held)} (process at start {gib(rss_start)}); "
          f"peak RSS while generating it {gib(peak_rss_bytes())}", flush=True)
    print(f"a float16 store would hold the per-row feature tensors in {gib(features / 2)} instead of {gib(features)} "
          "(arithmetic, not measured here)", flush=True)

    methods = args.methods.split(",") if args.methods else [m for m in available_methods(bench)]
    results: list[MethodTiming] = []
    for budget in budgets:
        started = time.perf_counter()
        subsample = preview.benchmark_subsample(bench, budget)
        sub = preview.preview_benchmark(bench, subsample)
        print(f"\n[{budget:,} rows] {preview.preview_label(subsample)}; built in "
              f"{(time.perf_counter() - started) * 1e3:.0f} ms", flush=True)
        evaluate_method(sub, REFERENCE)  # the page's reference column: computed once, reused
        for method in methods:
            timing = time_moves(sub, method, args.moves, budget)
            if not args.no_exact and budget == budgets[-1] and not timing.error:
                time_exact(bench, timing)
            results.append(timing)
            exact = f", exact {format_ms(timing.exact_ms)} ms" if timing.exact_ms is not None else ""
            print(f"  {method:12s} preview moves {[round(t) for t in timing.preview_ms]} ms{exact}"
                  + (f"  ERROR {timing.error}" if timing.error else ""), flush=True)

    headers = ["method", "slider", "rows", "first move ms", "preview median ms", f"≤ {TARGET_MS:.0f} ms",
               "exact ms", "exact / preview"]
    table = [[r.method, r.param or "—", f"{r.budget:,}", format_ms(r.preview_ms[0] if r.preview_ms else None),
              format_ms(r.median_ms), "PASS" if r.passed else ("ERROR" if r.error else "FAIL"),
              format_ms(r.exact_ms),
              f"{r.exact_ms / r.median_ms:,.0f}×" if r.exact_ms and r.median_ms > 0 else "—"] for r in results]
    print()
    print(format_table(headers, table))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch threads {torch.get_num_threads()}, load average {load:.1f} on {os.cpu_count()} CPUs")
    judged = preview.PREVIEW_ROWS if preview.PREVIEW_ROWS in budgets else budgets[-1]  # the app's, when measured
    failed = [r.method for r in results if r.budget == judged and not r.passed]
    print(f"preview median ≤ {TARGET_MS:.0f} ms for every method at {judged:,} rows: "
          + ("PASS" if not failed else f"FAIL ({', '.join(failed)})"))
    if args.json:
        write_json(args.json, {"target_ms": TARGET_MS, "environment": environment(), "load_average": load,
                               "settings": settings, "tensor_bytes": held, "rss_held": rss_held,
                               "peak_rss": peak_rss_bytes(), "built_s": built_s,
                               "results": [{**r.__dict__, "median_ms": r.median_ms, "passed": r.passed}
                                           for r in results]})
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

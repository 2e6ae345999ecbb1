"""Tuning every method on validation data: wall time per method and in total, against a bare pass.

For each scale, every available method is fitted first (``Benchmark.scorer``; fitting is not
timed), then, method by method and interleaved (evaluate, tune, evaluate, so a burst of load
from another process hits both sides of the ratio):

* ``eval ms``: one bare :func:`ood_core.benchmark.evaluate_method` pass at the defaults
  (score the ID test set and every OOD set, every metric), after one untimed warm-up call
  (which builds the per-tensor memos, as the first slider move in the app does): the faster
  of the calls just before and just after the tuning (the less disturbed by other processes);
* ``tune s``: :func:`ood_core.tuning.tune_method` under the ``validation`` protocol (the ID
  validation split against ``val-outliers:<id>``; every point of the method's declared grid,
  then the test figures at the choice), what ``python -m ood_core.report --tuned`` and
  ``python -m ood_core.reproduce`` run;
* ``oracle s`` (``--oracle``): the same under the ``oracle`` protocol (the test sets: more rows
  per point), which ``python -m ood_core.reproduce`` also runs.

Judged: the total validation tuning time against its target, and the ratio total tune /
total bare pass (how many bare passes tuning everything costs). Absolute seconds on a shared
2-core machine are noise (bench/README.md); the ratio is measured in the same run.

Scales:
  demo   demo-cnn on demo-mnist vs the five demo OOD sets (built on first use, as the app does);
         target: every method tuned in ≤ 60 s on 2 cores.
  cifar  densenet100-cifar10 on cifar10 vs isun, dtd10, mnist from the cache (never built here;
         skipped with a message when an entry, val-outliers:cifar10 included, is absent);
         target ≤ 5 min.

Run:  python -m bench.bench_tuning                      (demo and cifar)
      python -m bench.bench_tuning --scale demo --oracle --json /tmp/tuning.json
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import environment, format_ratio, format_table, write_json


@dataclass(frozen=True)
class Scale:
    name: str
    model: str
    id_dataset: str
    ood: tuple[str, ...]
    target_s: float
    build: bool  # build missing entries (the demo) or skip when absent (CIFAR)


SCALES = {
    "demo": Scale("demo", "demo-cnn", "demo-mnist",
                  ("demo-letters", "demo-textures", "demo-photos", "demo-faces", "demo-noise"), 60.0, True),
    "cifar": Scale("cifar", "densenet100-cifar10", "cifar10", ("isun", "dtd10", "mnist"), 300.0, False),
}


@dataclass
class MethodTiming:
    method: str
    points: int
    eval_ms: float
    tune_s: float
    oracle_s: float | None = None


@dataclass
class ScaleResult:
    scale: str
    model: str
    rows: dict[str, int]
    methods: list[MethodTiming] = field(default_factory=list)
    skipped: str = ""
    target_s: float = 0.0

    @property
    def total_tune_s(self) -> float:
        return sum(m.tune_s for m in self.methods)

    @property
    def total_eval_s(self) -> float:
        return sum(m.eval_ms for m in self.methods) / 1000.0

    @property
    def total_oracle_s(self) -> float | None:
        values = [m.oracle_s for m in self.methods]
        return None if not values or None in values else sum(values)

    @property
    def passed(self) -> bool | None:
        return None if self.skipped else self.total_tune_s <= self.target_s


def load(scale: Scale) -> Any:
    """The scale's benchmark with its validation outliers (the demo is built / repaired first)."""
    from ood_core.benchmark import load_benchmark
    from ood_core.datasets.outliers import val_outliers_name

    return load_benchmark(scale.model, scale.id_dataset, list(scale.ood), build_missing=scale.build,
                          repair=scale.build, progress=False, with_odin=scale.build,
                          val_ood_datasets=[val_outliers_name(scale.id_dataset)])


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_methods(bench: Any, methods: Sequence[str] | None = None, oracle: bool = False,
                 log=lambda _: None) -> list[MethodTiming]:
    """Per method: bare evaluate (before and after), validation tuning, optionally the oracle."""
    from ood_core.benchmark import available_methods, evaluate_method
    from ood_core.tuning import Protocol, grid_size, tune_method

    names = [m for m in (methods or available_methods(bench)) if m in available_methods(bench)]
    validation = Protocol("validation", tuple(bench.val_ood))
    out = []
    for method in names:
        bench.scorer(method)  # fit once, untimed
        evaluate_method(bench, method)  # untimed warm-up: per-tensor memos (KNN's search, LINe's grouping)
        before = _seconds(lambda: evaluate_method(bench, method))
        tune = _seconds(lambda: tune_method(bench, method, validation))
        after = _seconds(lambda: evaluate_method(bench, method))
        oracle_s = _seconds(lambda: tune_method(bench, method, Protocol("oracle"))) if oracle else None
        out.append(MethodTiming(method, grid_size(bench.scorer(method)), 1000.0 * min(before, after), tune, oracle_s))
        log(f"  {method}: {tune:.2f} s")
    return out


def run_scale(scale: Scale, methods: Sequence[str] | None, oracle: bool, loader=load) -> ScaleResult:
    from ood_core.registry import OODLensError

    try:
        bench = loader(scale)
    except (OODLensError, FileNotFoundError) as error:  # an absent or stale cache entry, no pack
        return ScaleResult(scale.name, scale.model, {}, skipped=" ".join(str(error).split()), target_s=scale.target_s)
    result = ScaleResult(scale.name, scale.model, dict(bench.rows), target_s=scale.target_s)
    result.methods = time_methods(bench, methods, oracle)
    return result


def method_table(result: ScaleResult) -> str:
    rows = [[m.method, str(m.points), f"{m.eval_ms:.1f}", f"{m.tune_s:.2f}", f"{1000 * m.tune_s / m.points:.1f}",
             format_ratio(1000 * m.tune_s / m.eval_ms if m.eval_ms else None),
             "—" if m.oracle_s is None else f"{m.oracle_s:.2f}"] for m in result.methods]
    oracle = result.total_oracle_s
    rows.append(["total", str(sum(m.points for m in result.methods)), f"{1000 * result.total_eval_s:.1f}",
                 f"{result.total_tune_s:.2f}", "", format_ratio(result.total_tune_s / result.total_eval_s
                                                                if result.total_eval_s else None),
                 "—" if oracle is None else f"{oracle:.2f}"])
    return format_table(["method", "points", "eval ms", "tune s", "ms/point", "× eval", "oracle s"], rows)


def main(argv: Sequence[str] | None = None, scales: dict[str, Scale] | None = None, loader=load) -> int:
    """CLI entry point; returns 1 when a target is missed (``scales`` / ``loader``: for a smoke test)."""
    scales = dict(scales or SCALES)
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tuning", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", choices=[*scales, "both"], default="both")
    parser.add_argument("--methods", nargs="+", default=None, help="methods to time (default: all available)")
    parser.add_argument("--oracle", action="store_true", help="also time the oracle protocol (tuned on the test sets)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    chosen = list(scales) if args.scale == "both" else [args.scale]
    results = []
    for name in chosen:
        scale = scales[name]
        print(f"== {name}: {scale.model} on {scale.id_dataset} vs {', '.join(scale.ood)}; validation protocol "
              f"(val-outliers:{scale.id_dataset}); target ≤ {scale.target_s:g} s", flush=True)
        result = run_scale(scale, args.methods, args.oracle, loader)
        results.append(result)
        if result.skipped:
            print(f"   skipped: {result.skipped}\n")
            continue
        print("   rows: " + ", ".join(f"{k.removesuffix('/test')} {v:,}" for k, v in result.rows.items()))
        print(method_table(result))
        verdict = "PASS" if result.passed else "FAIL"
        print(f"{verdict}: tuning every method on {name} took {result.total_tune_s:.1f} s (target ≤ "
              f"{scale.target_s:g} s), {result.total_tune_s / result.total_eval_s:.0f}× one bare evaluate_method "
              f"pass over all methods ({1000 * result.total_eval_s:.0f} ms)\n")
    if args.json_path:
        write_json(args.json_path, {"environment": environment(), "arguments": vars(args),
                                    "scales": [{**asdict(r), "total_tune_s": r.total_tune_s,
                                                "total_eval_s": r.total_eval_s, "total_oracle_s": r.total_oracle_s,
                                                "passed": r.passed} for r in results]})
    return 1 if any(r.passed is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

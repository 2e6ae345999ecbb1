"""Bootstrap intervals + paired comparisons: the vectorised table against a plain sklearn loop.

For a table of methods × OOD sets (synthetic scores, with ties), ``ood_core.bootstrap.bootstrap_table``
computes B = 1000 replicates of FPR95 and AUROC for every method, set and the average over
sets, percentile intervals, and paired differences to the best method. The reference is the
plain loop over the same resamples: per replicate, ``ood_core.metrics.fpr_at_95_tpr`` and
sklearn's ``roc_auc_score`` on the resampled scores. The loop is timed on a subset — one
method × every OOD set × ``--loop-replicates`` replicates — and extrapolated linearly to the
whole table (× methods × B / loop replicates; the output says so); the two are timed
interleaved in the same run (judge the ratio, not the seconds), and the subset's replicate
values are checked to agree with the table's.

Scales: ``demo`` (800 ID test scores, 5 OOD sets of 1,000; target: the whole 26-method table
≤ 10 s on 2 cores) and ``cifar`` (9,000 ID; sets of 8,925 / 1,200 / 10,000 / 1,000 / 1,000;
timed and printed, no target).

Run:  python -m bench.bench_bootstrap                    (≈ 1 min on 2 loaded cores)
      python -m bench.bench_bootstrap --scale demo --json out.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import environment, format_ratio, format_table, write_json
from ood_core import metrics
from ood_core.bootstrap import (AVERAGE, BootstrapTable, Difference, Resamples, bootstrap_table, make_resamples,
                                replicate_metrics_many)

TABLE_TARGET_S = 10.0  # the whole demo-scale table, B = 1000, 26 methods × 5 sets


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark table: n ID test scores, {OOD set: m}, methods, target (s or None)."""

    name: str
    n_id: int
    ood_sets: Mapping[str, int]
    methods: int = 26
    target_s: float | None = None
    repeats: int = 3          # interleaved rounds (table + loop subset); the median is reported
    loop_replicates: int = 100  # replicates of the loop subset (one method × every set)


SCALES: dict[str, Scale] = {
    "demo": Scale("demo", 800, {"svhn": 1000, "lsun": 1000, "isun": 1000, "textures": 1000, "places": 1000},
                  target_s=TABLE_TARGET_S),
    "cifar": Scale("cifar", 9000, {"isun": 8925, "lsun-r": 1200, "places": 10000, "svhn": 1000, "dtd": 1000},
                   repeats=1, loop_replicates=50),
}


def synthetic_scores(scale: Scale, seed: int = 0) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """{method: (ID scores (n,), {set: OOD scores (m,)})} float64, higher = more ID.

    Every method scores the same images: a shared latent "difficulty" per image plus method
    noise, the ID shift growing with the method's index, each OOD set a little nearer or
    farther. Ties: every third method is rounded to 0.01, every seventh to integers (heavy
    ties, a few distinct values: flagged degenerate), and method 1 is method 0 plus tiny
    noise (a near-identical pair, which the paired bootstrap should not call different).
    """
    rng = np.random.default_rng(seed)
    id_latent = rng.normal(0.0, 1.0, scale.n_id)
    ood_latent = {name: rng.normal(0.0, 1.0, m) for name, m in scale.ood_sets.items()}
    set_shift = {name: 0.25 * i for i, name in enumerate(scale.ood_sets)}
    out: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for k in range(scale.methods):
        name = f"method-{k:02d}"
        if k == 1:  # near-identical to method 0
            ids, oods = out["method-00"]
            out[name] = (ids + 1e-4 * rng.normal(size=ids.size),
                         {s: v + 1e-4 * rng.normal(size=v.size) for s, v in oods.items()})
            continue
        separation = 0.6 + 0.06 * k
        ids = separation + id_latent + 0.5 * rng.normal(size=scale.n_id)
        oods = {s: ood_latent[s] - set_shift[s] + 0.5 * rng.normal(size=v.size) for s, v in ood_latent.items()}
        if k % 7 == 6:
            ids, oods = np.round(ids), {s: np.round(v) for s, v in oods.items()}
        elif k % 3 == 2:
            ids, oods = np.round(ids, 2), {s: np.round(v, 2) for s, v in oods.items()}
        out[name] = (ids, oods)
    return out


def loop_subset(scores: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], method: str,
                resamples: Resamples, replicates: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The plain loop: {set: (fpr95, auroc) over the first ``replicates`` replicates} of one
    method, one ``metrics.fpr_at_95_tpr`` and one sklearn ``roc_auc_score`` call per replicate."""
    from sklearn.metrics import roc_auc_score

    ids, oods = scores[method]
    out = {}
    for name, ood in oods.items():
        id_index, ood_index = resamples.pair(name)
        fpr, auroc = [], []
        labels = np.r_[np.ones(ids.size), np.zeros(ood.size)]
        for b in range(replicates):
            a, o = ids[id_index[b]], ood[ood_index[b]]
            fpr.append(metrics.fpr_at_95_tpr(a, o))
            auroc.append(roc_auc_score(labels, np.r_[a, o]))
        out[name] = (np.array(fpr), np.array(auroc))
    return out


@dataclass
class ScaleResult:
    """Figures of one scale (seconds unless named otherwise)."""

    scale: str
    n_id: int
    ood_sets: dict[str, int]
    methods: int
    n_boot: int
    table_s: float               # median wall time of the whole table (resamples drawn inside)
    table_cpu_s: float           # its process CPU time
    table_runs_s: list[float]
    loop_subset_s: float         # median wall time of the loop subset
    loop_replicates: int
    loop_extrapolated_s: float   # the loop subset × methods × B / loop_replicates
    vector_subset_s: float       # the same subset (one method × every set, B replicates), vectorised
    max_abs_diff: float          # subset: table replicate values vs the loop's
    significant: dict[str, int] = field(default_factory=dict)  # metric → methods significantly worse (average)
    excluded: list[str] = field(default_factory=list)
    target_s: float | None = None
    load_before: tuple[float, ...] | None = None
    load_after: tuple[float, ...] | None = None

    @property
    def speedup(self) -> float:
        """Extrapolated loop / vectorised table (both measured in this run)."""
        return self.loop_extrapolated_s / self.table_s if self.table_s > 0 else float("nan")

    @property
    def passed(self) -> bool | None:
        return None if self.target_s is None else self.table_s <= self.target_s


def _load() -> tuple[float, ...] | None:
    load = environment()["load_average"]
    return None if load is None else tuple(round(x, 2) for x in load)


def run_scale(scale: Scale, n_boot: int = 1000, seed: int = 0, repeats: int | None = None,
              loop_replicates: int | None = None, log: Any = print) -> tuple[ScaleResult, BootstrapTable]:
    """Time the whole table and the loop subset, interleaved; check they agree."""
    repeats = scale.repeats if repeats is None else repeats
    loop_replicates = min(n_boot, scale.loop_replicates if loop_replicates is None else loop_replicates)
    load_before = _load()
    scores = synthetic_scores(scale, seed)
    excluded = [m for m, (ids, _) in scores.items() if metrics.degenerate_reasons(ids)]
    resamples = make_resamples(scale.n_id, scale.ood_sets, n_boot, seed)
    first = next(iter(scores))

    def table_call() -> BootstrapTable:
        return bootstrap_table(scores, n_boot=n_boot, seed=seed, exclude_from_best=excluded)

    log(f"{scale.name}: {scale.methods} methods × {len(scale.ood_sets)} sets, n = {scale.n_id:,}, "
        f"m = {', '.join(f'{m:,}' for m in scale.ood_sets.values())}, B = {n_boot}; {repeats} interleaved round(s)")
    table_runs, table_cpu, loop_runs = [], [], []
    table = None
    loop = {}
    for round_index in range(repeats):
        order = ("table", "loop") if round_index % 2 == 0 else ("loop", "table")
        for what in order:
            start, cpu = time.perf_counter(), time.process_time()
            if what == "table":
                table = table_call()
                table_runs.append(time.perf_counter() - start)
                table_cpu.append(time.process_time() - cpu)
            else:
                loop = loop_subset(scores, first, resamples, loop_replicates)
                loop_runs.append(time.perf_counter() - start)
        log(f"  round {round_index + 1}: table {table_runs[-1]:.2f} s, loop subset {loop_runs[-1]:.2f} s")
    assert table is not None
    start = time.perf_counter()
    ids, oods = scores[first]
    vector = replicate_metrics_many(ids, oods, resamples)
    vector_s = time.perf_counter() - start
    diff = max(float(np.abs(table.replicates[first][name][metric][:loop_replicates] - loop[name][i]).max())
               for name in scale.ood_sets for i, metric in enumerate(("fpr95", "auroc")))
    diff = max(diff, max(float(np.abs(vector[name][i][:loop_replicates] - loop[name][i]).max())
                         for name in scale.ood_sets for i in (0, 1)))
    loop_s = statistics.median(loop_runs)
    significant = {metric: sum(d.significant for d in table.comparisons[AVERAGE][metric].differences.values())
                   for metric in ("fpr95", "auroc")}
    result = ScaleResult(scale.name, scale.n_id, dict(scale.ood_sets), scale.methods, n_boot,
                         table_s=statistics.median(table_runs), table_cpu_s=statistics.median(table_cpu),
                         table_runs_s=table_runs, loop_subset_s=loop_s, loop_replicates=loop_replicates,
                         loop_extrapolated_s=loop_s * scale.methods * n_boot / loop_replicates,
                         vector_subset_s=vector_s, max_abs_diff=diff, significant=significant, excluded=excluded,
                         target_s=scale.target_s, load_before=load_before, load_after=_load())
    return result, table


def average_table(table: BootstrapTable, limit: int | None = None) -> str:
    """One row per method: average FPR95 / AUROC (%) with intervals and the paired Δ to the best
    (* = significant)."""
    headers = ["method", "FPR95 %", "95 % interval", "Δ best", "Δ interval", "AUROC %", "95 % interval", "Δ best",
               "Δ interval"]
    rows = []
    for method in table.methods[:limit]:
        cells = [method + (" ‡" if method in table.excluded_from_best else "")]
        for metric in ("fpr95", "auroc"):
            iv = getattr(table.intervals[method][AVERAGE], metric)
            comparison = table.comparisons[AVERAGE][metric]
            d = comparison.differences.get(method)
            cells += [f"{100 * iv.point:.2f}", f"[{100 * iv.lo:.2f}, {100 * iv.hi:.2f}]",
                      "best" if method == comparison.best else ("—" if d is None else
                                                                 f"{100 * d.point:+.2f}{'*' if d.significant else ''}"),
                      "—" if d is None else f"[{100 * d.lo:+.2f}, {100 * d.hi:+.2f}]"]
        rows.append(cells)
    return format_table(headers, rows)


def pair_line(table: BootstrapTable, a: str, b: str, group: str = AVERAGE) -> str:
    """a − b on one group from the table's paired replicates, e.g. 'FPR95 +0.00 [-0.10, +0.10] ns; …' (pt)."""
    parts = []
    for metric in ("fpr95", "auroc"):
        point = getattr(table.intervals[a][group], metric).point - getattr(table.intervals[b][group], metric).point
        d = Difference.of(point, table.replicates[a][group][metric] - table.replicates[b][group][metric], table.level)
        parts.append(f"{metric.upper()} {100 * d.point:+.2f} pt "
                     f"[{100 * d.lo:+.2f}, {100 * d.hi:+.2f}] {'significant' if d.significant else 'not significant'}")
    return "; ".join(parts)


def summary_table(results: Sequence[ScaleResult]) -> str:
    headers = ["scale", "methods×sets", "B", "table s", "table cpu s", "loop subset s", "loop reps",
               "loop extrap. s", "speed-up", "subset vectorised s", "max |Δ|", "target"]
    rows = [[r.scale, f"{r.methods}×{len(r.ood_sets)}", str(r.n_boot), f"{r.table_s:.2f}", f"{r.table_cpu_s:.2f}",
             f"{r.loop_subset_s:.2f}", f"1×{len(r.ood_sets)}×{r.loop_replicates}", f"{r.loop_extrapolated_s:,.0f}",
             format_ratio(r.speedup), f"{r.vector_subset_s:.3f}", f"{r.max_abs_diff:.1e}",
             "—" if r.passed is None else f"{'PASS' if r.passed else 'FAIL'} (≤ {r.target_s:.0f} s)"]
            for r in results]
    return format_table(headers, rows)


def main(argv: Sequence[str] | None = None, scales: Mapping[str, Scale] | None = None) -> int:
    """CLI entry point; ``scales`` replaces :data:`SCALES` (a smoke test passes a tiny one)."""
    scales = dict(scales or SCALES)
    parser = argparse.ArgumentParser(prog="python -m bench.bench_bootstrap", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", choices=[*scales, "both"] if len(scales) > 1 else list(scales),
                        default="both" if len(scales) > 1 else next(iter(scales)))
    parser.add_argument("--replicates", type=int, default=1000, help="B, bootstrap replicates")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default: per scale)")
    parser.add_argument("--loop-replicates", type=int, default=None,
                        help="replicates of the sklearn loop subset (default: per scale); extrapolated to B")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=26, help="rows of the per-method average table to print")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.replicates < 1 or (args.repeats is not None and args.repeats < 1):
        parser.error("--replicates and --repeats must be ≥ 1")
    chosen = list(scales) if args.scale == "both" else [args.scale]
    print(f"bench_bootstrap: numpy {np.__version__}, load average {_load()}")
    results, tables = [], {}
    for name in chosen:
        result, table = run_scale(scales[name], args.replicates, args.seed, args.repeats, args.loop_replicates)
        results.append(result)
        tables[name] = table
        if args.show > 0:
            print(f"\n== {name}: average over {len(result.ood_sets)} OOD sets, {args.replicates} paired replicates "
                  f"(‡ = degenerate, never 'best'; * = interval of Δ excludes 0)")
            print(average_table(table, args.show))
        print(f"   methods significantly worse than the best on average: FPR95 {result.significant['fpr95']}, "
              f"AUROC {result.significant['auroc']} of {result.methods}")
        if {"method-00", "method-01"} <= set(table.methods):
            print("   near-identical pair (method-01 = method-00 + 1e-4 noise), paired on average: "
                  + pair_line(table, "method-01", "method-00"))
    print("\n== Timing (wall seconds, median of the interleaved rounds; judge the speed-up, not the seconds)")
    print("   loop extrap. = the sklearn loop on 1 method × every set × 'loop reps' replicates, measured here and "
          "extrapolated linearly to every method and B replicates; speed-up = loop extrap. / table; "
          "max |Δ| = subset replicate values, table vs loop")
    print(summary_table(results))
    print("   load average before/after: " + "; ".join(f"{r.scale} {r.load_before} → {r.load_after}" for r in results))
    failed = [r for r in results if r.passed is False]
    for r in results:
        if r.passed is not None:
            print(f"  {'PASS' if r.passed else 'FAIL'}  {r.scale} table ≤ {r.target_s:.0f} s: {r.table_s:.2f} s")
    if args.json_path:
        payload = {"environment": environment(), "arguments": vars(args),
                   "results": [asdict(r) | {"speedup": r.speedup, "passed": r.passed} for r in results],
                   "tables": {name: t.as_dict() for name, t in tables.items()}}
        print(f"\nwrote {write_json(args.json_path, payload)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

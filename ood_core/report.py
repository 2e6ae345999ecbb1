"""``python -m ood_core.report``: every method's OOD metrics on a cached benchmark.

Builds missing cache entries first (progress on stderr), then prints the report on
stdout as a table (percent, two decimals), Markdown, JSON or CSV. JSON / CSV are a stable
interface: records ``{method, ood, fpr95, auroc, aupr_in, aupr_out}`` with rates as
fractions in [0, 1]; ``ood == "average"`` holds the unweighted mean over OOD sets.

Every format says what the figures come from: the model's fingerprint (and checkpoint), the
rows scored per set, the ``--limit`` of a subset, and the files skipped as unreadable; JSON
carries them as top-level fields (``model_fingerprint``, ``checkpoint``, ``limit``, ``rows``,
``skipped``), CSV as extra columns. A degenerate setting (collapsed or tied scores, a head at
chance) is marked, never ranked: ``degenerate`` in JSON / CSV, ``‡`` in the tables.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any, Sequence

from ood_core import cli_args
from ood_core.registry import OODLensError, did_you_mean

METRIC_KEYS = ("fpr95", "auroc", "aupr_in", "aupr_out")
METRIC_TITLES = ("FPR95", "AUROC", "AUPR-In", "AUPR-Out")
AVERAGE = "average"
DEGENERATE_MARK = "‡"

EPILOG = """\
examples:
  python -m ood_core.report --model densenet100-cifar10 --id cifar10 --ood isun dtd10 mnist
  python -m ood_core.report --model demo-cnn --id demo-mnist --ood demo-letters demo-noise --format json
  python -m ood_core.report --model resnet20-cifar10 --id cifar10 --ood isun --limit 500 \\
      --methods energy react line --hparam react.clip_percentile=95 --format csv

FPR95 treats ID as positive (the papers' convention); lower is better, higher is better
for the other three. Missing cache entries are built first (see python -m precompute).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = cli_args.ArgumentParser(
        prog="python -m ood_core.report",
        description="Score every available OOD method on a cached benchmark and print FPR95 / AUROC / "
                    "AUPR-In / AUPR-Out per OOD set and on average.",
        epilog=EPILOG, formatter_class=cli_args.HelpFormatter)
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="the weights file the cache was built from with precompute --checkpoint")
    parser.add_argument("--id", dest="id_dataset", required=True, metavar="DATASET", help="ID dataset")
    parser.add_argument("--ood", nargs="+", required=True, metavar="DATASET", help="OOD datasets")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="methods to report; default: every method the cache supports")
    parser.add_argument("--format", choices=("table", "json", "csv", "markdown"), default="table",
                        help="output format; markdown: FPR95 / AUROC per OOD set and on average, for READMEs")
    parser.add_argument("--hparam", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="override one hyperparameter (repeatable), e.g. react.clip_percentile=95")
    parser.add_argument("--cache-dir", default=None, help="cache root; default: $OOD_LENS_CACHE or ~/.cache/ood-lens")
    parser.add_argument("--device", default="cpu", type=cli_args.device,
                        help="device to score on: auto, cpu, cuda, cuda:N, mps (building uses CUDA when available)")
    parser.add_argument("--limit", type=cli_args.positive_int, default=None,
                        help="cap every split at a stratified subset of N images when building")
    parser.add_argument("--no-odin", action="store_true", help="do not build ODIN logits (ODIN is then skipped)")
    parser.add_argument("--no-build", action="store_true", help="fail instead of building missing entries")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_hparams(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["react.clip_percentile=95"]`` → ``{"react": {"percentile": "95"}}`` (values validated later)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.strip().rpartition(".")
        if not sep or not dot or not method or not name:
            raise OODLensError(f"--hparam {item!r} is not of the form METHOD.NAME=VALUE")
        out.setdefault(method, {})[name] = value.strip()
    return out


def records(results: Sequence[Any]) -> list[dict[str, Any]]:
    """One record per (method, OOD set) plus ``ood="average"``; rates as fractions."""
    rows = []
    for result in results:
        for ood, metrics in [*result.metrics.items(), (AVERAGE, result.average)]:
            rows.append({"method": result.method, "ood": ood,
                         **{key: float(getattr(metrics, key)) for key in METRIC_KEYS}})
    return rows


def provenance(bench: Any) -> dict[str, Any]:
    """What the figures come from, as the JSON report's top-level fields."""
    return {"model_key": bench.model_key, "model_fingerprint": bench.model_fingerprint,
            "checkpoint": bench.checkpoint, "limit": bench.limit, "rows": dict(bench.rows),
            "skipped": {key: list(items) for key, items in bench.skipped.items()}}


def to_json(bench: Any, id_accuracy: float, results: Sequence[Any]) -> str:
    payload = {"model": bench.model, "id": bench.id_dataset, "id_accuracy": float(id_accuracy),
               "results": records(results), "hparams": {r.method: r.hparams for r in results},
               "degenerate": {r.method: list(r.degenerate) for r in results}, **provenance(bench)}
    return json.dumps(payload, indent=2, default=str, allow_nan=False)


def to_csv(bench: Any, results: Sequence[Any]) -> str:
    """The records, with their provenance as extra columns: degenerate (why, or empty), rows of
    ID test and of the OOD set (summed for the average), the limit, the files skipped as
    unreadable in the set (``set: file; ...``) and the model fingerprint."""
    buffer = io.StringIO()
    extra = ["degenerate", "id_rows", "ood_rows", "limit", "skipped", "model_fingerprint"]
    writer = csv.DictWriter(buffer, fieldnames=["method", "ood", *METRIC_KEYS, *extra], lineterminator="\n")
    writer.writeheader()
    id_rows = bench.rows.get(f"{bench.id_dataset}/test")
    degenerate = {r.method: "; ".join(r.degenerate) for r in results}
    for record in records(results):
        ood = record["ood"]
        ood_rows = sum(bench.rows.get(f"{o}/test", 0) for o in bench.ood) if ood == AVERAGE \
            else bench.rows.get(f"{ood}/test")
        sets = bench.ood if ood == AVERAGE else [ood]
        skipped = [f"{o}: {item}" for o in sets for item in bench.skipped.get(f"{o}/test", [])]
        writer.writerow({**record, "degenerate": degenerate[record["method"]], "id_rows": id_rows,
                         "ood_rows": ood_rows, "limit": "" if bench.limit is None else bench.limit,
                         "skipped": "; ".join(skipped), "model_fingerprint": bench.model_fingerprint})
    return buffer.getvalue()


def describe_sources(bench: Any) -> list[str]:
    """Lines saying what the figures come from: weights, rows per set, the subset, skipped files."""
    weights = f"{bench.model} weights {bench.model_fingerprint}" + (
        f" (checkpoint {bench.checkpoint})" if bench.checkpoint else "")
    rows = ", ".join(f"{key.removesuffix('/test')} {n:,}" for key, n in bench.rows.items())
    lines = [f"Computed from {weights}; test rows per set: {rows} "
             f"({bench.rows.get(f'{bench.id_dataset}/test', 0):,} ID test)."]
    if bench.limit is not None:
        lines.append(f"Subset: every split capped at a stratified --limit {bench.limit} images, "
                     "not the full benchmark.")
    for key, items in bench.skipped.items():
        lines.append(f"Skipped as unreadable in {key}: {', '.join(items)}.")
    return lines


def _degenerate_footnote(results: Sequence[Any]) -> list[str]:
    return [f"{DEGENERATE_MARK} {r.method}: degenerate setting, not comparable ({'; '.join(r.degenerate)})."
            for r in results if r.degenerate]


def _label(result: Any) -> str:
    return result.method + (f" {DEGENERATE_MARK}" if result.degenerate else "")


def to_markdown(bench: Any, id_accuracy: float, results: Sequence[Any]) -> str:
    """A Markdown table: one row per method, FPR95 / AUROC (%) per OOD set and on average."""
    oods = [*results[0].metrics, "average"]
    lines = [f"{bench.model} on {bench.id_dataset}: ID accuracy {100 * id_accuracy:.2f} %. Cells: FPR95 / AUROC "
             "in % (FPR95 lower is better, AUROC higher).", "",
             "| method | " + " | ".join(oods) + " |", "|---" * (len(oods) + 1) + "|"]
    for result in results:
        cells = [result.metrics[o] if o != "average" else result.average for o in oods]
        lines.append(f"| {_label(result)} | " + " | ".join(f"{100 * m.fpr95:.1f} / {100 * m.auroc:.1f}"
                                                              for m in cells) + " |")
    return "\n".join([*lines, "", *describe_sources(bench), *_degenerate_footnote(results)]) + "\n"


def to_table(bench: Any, id_accuracy: float, results: Sequence[Any]) -> str:
    """Fixed-width table: one row per method, a column group per OOD set + average (percent)."""
    if not results:
        return "no results\n"
    groups = [*results[0].metrics.keys(), AVERAGE]
    method_width = max(6, *(len(_label(r)) for r in results))
    cell = 8
    group_width = len(METRIC_TITLES) * (cell + 1) - 1
    lines = [f"{bench.model} on {bench.id_dataset}: ID accuracy {100 * id_accuracy:.2f} %  "
             f"(FPR95 lower is better; AUROC, AUPR-In, AUPR-Out higher is better; all in %)", ""]
    lines.append(" " * method_width + " | " + " | ".join(g[:group_width].center(group_width) for g in groups))
    lines.append("method".ljust(method_width) + " | "
                 + " | ".join(" ".join(t.rjust(cell) for t in METRIC_TITLES) for _ in groups))
    lines.append("-" * len(lines[-1]))
    for result in results:
        cells = []
        for group in groups:
            metrics = result.average if group == AVERAGE else result.metrics[group]
            cells.append(" ".join(f"{100 * getattr(metrics, key):{cell}.2f}" for key in METRIC_KEYS))
        suffix = ""
        if abs(result.id_accuracy - result.base_id_accuracy) > 1e-12:
            suffix = f"   (modified head ID acc. {100 * result.id_accuracy:.2f} %)"
        lines.append(_label(result).ljust(method_width) + " | " + " | ".join(cells) + suffix)
    return "\n".join([*lines, "", *describe_sources(bench), *_degenerate_footnote(results)]) + "\n"


def _check_methods(methods: Sequence[str] | None, hparams: dict[str, dict[str, str]]) -> None:
    """Unknown method names and invalid hyperparameter values fail before anything is built."""
    from ood_core.scorers import create_scorer, list_scorers

    known = list_scorers()
    unknown = list(dict.fromkeys(m for m in [*(methods or []), *hparams] if m not in known))
    if unknown:
        raise OODLensError(f"unknown method(s) {', '.join(unknown)}; {did_you_mean(unknown[0], known)}"
                           f"known methods: {', '.join(known)}")
    if methods:
        stray = [m for m in hparams if m not in methods]
        if stray:
            raise OODLensError(f"--hparam names method(s) {', '.join(stray)} that are not reported")
    for method, values in hparams.items():
        scorer = create_scorer(method)
        for key, value in values.items():
            try:
                scorer.resolve({key: value})
            except ValueError as exc:  # HyperparameterError: one line naming the value
                raise OODLensError(f"--hparam {method}.{key}={value}: {exc}") from None


def run(args: argparse.Namespace) -> str:
    """Build / load the benchmark, evaluate the methods, return the formatted report."""
    from ood_core.benchmark import available_methods, evaluate_method, load_benchmark

    hparams = parse_hparams(args.hparam)
    _check_methods(args.methods, hparams)  # before any (slow) building
    bench = load_benchmark(args.model, args.id_dataset, args.ood, cache_root=args.cache_dir, device=args.device,
                           build_missing=not args.no_build, limit=args.limit, progress=not args.quiet,
                           with_odin=not args.no_odin, checkpoint=args.checkpoint)
    available = available_methods(bench)
    methods = list(dict.fromkeys(args.methods)) if args.methods else available
    stray = [m for m in hparams if m not in methods]
    if stray:
        raise OODLensError(f"--hparam names method(s) {', '.join(stray)} that are not reported")
    results = []
    for method in methods:
        if method not in available:
            print(f"skipping {method}: the cache lacks what it needs", file=sys.stderr)
            continue
        results.append(evaluate_method(bench, method, hparams.get(method)))
    if not results:
        raise OODLensError("no method could be evaluated on this cache")
    id_accuracy = results[0].base_id_accuracy
    if args.format == "json":
        return to_json(bench, id_accuracy, results) + "\n"
    if args.format == "csv":
        return to_csv(bench, results)
    if args.format == "markdown":
        return to_markdown(bench, id_accuracy, results)
    return to_table(bench, id_accuracy, results)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 with one ``error:`` line for user errors)."""
    return cli_args.run_command(build_parser(), lambda args: sys.stdout.write(run(args)), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m ood_core.report``: every method's OOD metrics on a cached benchmark.

Builds missing cache entries first (progress on stderr), then prints the report on
stdout as a table (percent, two decimals), Markdown, JSON or CSV. JSON / CSV are a stable
interface: records ``{method, ood, fpr95, auroc, aupr_in, aupr_out}`` with rates as
fractions in [0, 1]; ``ood == "average"`` holds the unweighted mean over OOD sets
(:mod:`ood_core.report_formats`).

``--tuned`` reports every method at hyperparameters chosen on validation data
(:mod:`ood_core.tuning`; by default the ID validation split against ``val-outliers:<id>``,
synthetic outliers made from the ID validation images: no test set is read); ``--oracle``
adds the test-tuned oracle beside it, labelled; ``--ci`` adds 95 % bootstrap intervals and a
paired bootstrap against each column's best method (:mod:`ood_core.bootstrap`).

Every format says what the figures come from: the model's fingerprint (and checkpoint), the
rows scored per set, the ``--limit`` of a subset, and the files skipped as unreadable; JSON
carries them as top-level fields (``model_fingerprint``, ``checkpoint``, ``limit``, ``rows``,
``skipped``), CSV as extra columns. A degenerate setting (collapsed or tied scores, a head at
chance) is marked, never ranked: ``degenerate`` in JSON / CSV, ``‡`` in the tables.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from ood_core import cli_args
from ood_core.registry import OODLensError, did_you_mean
from ood_core.report_formats import (  # noqa: F401  (re-exported: the report's stable names)
    AVERAGE,
    DEGENERATE_MARK,
    METRIC_KEYS,
    METRIC_TITLES,
    Report,
    records,
    to_csv,
    to_json,
    to_markdown,
    to_table,
)

LEAVE_ONE_OUT = "leave-one-out"

EPILOG = """\
examples:
  python -m ood_core.report --model densenet100-cifar10 --id cifar10 --ood isun dtd10 mnist
  python -m ood_core.report --model demo-cnn --id demo-mnist --ood demo-letters demo-noise --format json
  python -m ood_core.report --model resnet20-cifar10 --id cifar10 --ood isun --limit 500 \\
      --methods energy react line --hparam react.clip_percentile=95 --format csv
  python -m ood_core.report --model demo-cnn --id demo-mnist --ood demo-letters demo-noise --tuned --ci
  python -m ood_core.report ... --tuned --val-ood leave-one-out --accuracy-budget 1 --oracle

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
    parser.add_argument("--download", action="store_true",
                        help="when building, let torchvision datasets and pretrained weights download what is not "
                             "cached (default: never touch the network)")
    tuning = parser.add_argument_group("each method at a validated setting")
    tuning.add_argument("--tuned", action="store_true",
                        help="choose every method's hyperparameters on validation data (its declared grid; no test "
                             "set is read) and report the test figures at the chosen setting")
    tuning.add_argument("--val-ood", nargs="+", default=None, metavar="DATASET",
                        help="validation OOD set(s) for --tuned, never among --ood; default: val-outliers:<ID> "
                             "(synthetic outliers made from the ID validation images); 'leave-one-out': tune for "
                             "each test set on the other test sets")
    tuning.add_argument("--accuracy-budget", type=float, default=None, metavar="PTS",
                        help="a modified head may lose at most PTS points of ID validation accuracy")
    tuning.add_argument("--objective", choices=("fpr95", "auroc"), default="fpr95",
                        help="what the selection optimises (fpr95: lowest, ties broken by AUROC)")
    tuning.add_argument("--oracle", action="store_true",
                        help="also show the test-tuned oracle (tuned on the test sets themselves: optimistic, labelled)")
    uncertainty = parser.add_argument_group("uncertainty")
    uncertainty.add_argument("--ci", action="store_true",
                             help="95 %% bootstrap intervals for FPR95 / AUROC and a paired bootstrap against each "
                                  "column's best method")
    uncertainty.add_argument("--bootstrap", type=cli_args.positive_int, default=1000, metavar="B",
                             help="bootstrap resamples for --ci")
    uncertainty.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
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


def _protocol(args: argparse.Namespace, kind: str | None = None) -> Any:
    """The tuning protocol the flags ask for (``kind="oracle"``: the oracle's)."""
    from ood_core.datasets.outliers import val_outliers_name
    from ood_core.tuning import Protocol

    budget = None if args.accuracy_budget is None else args.accuracy_budget / 100.0
    if kind == "oracle":
        return Protocol("oracle", (), args.objective, budget)
    if args.val_ood == [LEAVE_ONE_OUT]:
        return Protocol("leave-one-out", (), args.objective, budget)
    if args.val_ood and LEAVE_ONE_OUT in args.val_ood:
        raise OODLensError(f"--val-ood {LEAVE_ONE_OUT} cannot be combined with named sets")
    val_ood = tuple(args.val_ood or [val_outliers_name(args.id_dataset)])
    clash = [name for name in val_ood if name in args.ood]
    if clash:
        raise OODLensError(f"--val-ood {', '.join(clash)} is also a test set (--ood); tuning never reads a test set")
    return Protocol("validation", val_ood, args.objective, budget)


def _check_options(args: argparse.Namespace) -> None:
    """Option combinations that cannot work fail before anything is built."""
    tuning_only = [flag for flag, given in (("--val-ood", args.val_ood is not None),
                                            ("--accuracy-budget", args.accuracy_budget is not None)) if given]
    if tuning_only and not args.tuned:
        raise OODLensError(f"{' and '.join(tuning_only)} only apply with --tuned")
    if args.accuracy_budget is not None and not 0 <= args.accuracy_budget <= 100:
        raise OODLensError(f"--accuracy-budget {args.accuracy_budget:g} is not a number of points in [0, 100]")
    if args.tuned:
        protocol = _protocol(args)
        if protocol.kind == "leave-one-out" and len(set(args.ood)) < 2:
            raise OODLensError("--val-ood leave-one-out needs at least two --ood sets")
        if protocol.kind == "leave-one-out" and args.ci:
            raise OODLensError("--ci needs one setting per method; leave-one-out picks one per OOD set "
                               "(use the default validation set or --val-ood DATASET)")


def _progress(args: argparse.Namespace):
    """(on_progress callback, close) drawing one tqdm bar on stderr, or no-ops with --quiet."""
    if args.quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="setting", file=sys.stderr, leave=False)

    def update(description: str, done: int, total: int) -> None:
        bar.total = total
        bar.set_description(description, refresh=False)
        bar.update(done - bar.n)
    return update, bar.close


def run(args: argparse.Namespace) -> str:
    """Build / load the benchmark, evaluate (or tune) the methods, return the formatted report."""
    from ood_core.benchmark import available_methods, evaluate_method, load_benchmark
    from ood_core.tuning import tune_benchmark

    hparams = parse_hparams(args.hparam)
    _check_methods(args.methods, hparams)  # before any (slow) building
    _check_options(args)
    if getattr(args, "download", False):
        import os

        os.environ["OOD_LENS_DOWNLOAD"] = "1"  # read by ood_core.paths.downloads_allowed
    protocol = _protocol(args) if args.tuned else None
    val_ood = protocol.val_ood if protocol is not None else ()
    bench = load_benchmark(args.model, args.id_dataset, args.ood, cache_root=args.cache_dir, device=args.device,
                           build_missing=not args.no_build, limit=args.limit, progress=not args.quiet,
                           with_odin=not args.no_odin, checkpoint=args.checkpoint, val_ood_datasets=val_ood)
    available = available_methods(bench)
    methods = list(dict.fromkeys(args.methods)) if args.methods else available
    stray = [m for m in hparams if m not in methods]
    if stray:
        raise OODLensError(f"--hparam names method(s) {', '.join(stray)} that are not reported")
    for method in [m for m in methods if m not in available]:
        print(f"skipping {method}: the cache lacks what it needs", file=sys.stderr)
    methods = [m for m in methods if m in available]
    if not methods:
        raise OODLensError("no method could be evaluated on this cache")
    report = Report(bench=bench, results=[])
    on_progress, close = _progress(args)
    try:
        if protocol is not None:
            report.tuned = tune_benchmark(bench, methods, protocol, hparams, on_progress=on_progress)
            report.results = [report.tuned[m].result for m in methods]
        else:
            report.results = [evaluate_method(bench, m, hparams.get(m)) for m in methods]
        if args.oracle:
            report.oracle = tune_benchmark(bench, methods, _protocol(args, "oracle"), hparams, on_progress=on_progress)
    finally:
        close()
    if args.ci:
        from ood_core.bootstrap import bootstrap_table

        report.intervals = bootstrap_table({r.method: (r.id_scores, r.ood_scores) for r in report.results},
                                           n_boot=args.bootstrap, seed=args.seed,
                                           exclude_from_best=[r.method for r in report.results if r.degenerate])
    if args.format == "json":
        return to_json(report) + "\n"
    if args.format == "csv":
        return to_csv(report)
    if args.format == "markdown":
        return to_markdown(report)
    return to_table(report)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 with one ``error:`` line for user errors)."""
    return cli_args.run_command(build_parser(), lambda args: sys.stdout.write(run(args)), argv)


if __name__ == "__main__":
    sys.exit(main())

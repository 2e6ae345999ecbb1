"""``python -m ood_core.reproduce``: build what is missing, compute every figure, write the page."""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ood_core import cli_args, paths
from ood_core.reproduce.compute import ModelReport, model_report
from ood_core.reproduce.render import TITLES, RunInfo, render

ID_DATASET = "cifar10"
OOD_SETS = ("isun", "dtd10", "mnist", "noise-gaussian", "noise-uniform")
DEFAULT_MODELS = ("densenet100-cifar10", "resnet20-cifar10")
DEFAULT_OUT = "docs/results.md"

EPILOG = f"""\
what it does, per model: build any missing cache entry (progress bars on stderr; the ID
splits, {', '.join(OOD_SETS)} and the validation outliers
val-outliers:{ID_DATASET}), then score every method at its published defaults, tuned on
validation data (no test set read) and tuned on the test sets (the oracle, labelled), run
LINe's ablation and δ sweep, OPNP's variants and percentile grid, DICE's sparsity sweep, NAP
alone and combined, LINe's neuron overlap, and judge the seed papers' orderings with a paired
bootstrap. The page goes to --out.

examples:
  python -m ood_core.reproduce                                   # both models, full benchmark
  python -m ood_core.reproduce --models resnet20-cifar10 --limit 300 --out /tmp/results.md
  python -m ood_core.reproduce --odin                            # also build ODIN logits (3x precompute)

A --limit run builds stratified subsets in a separate cache (<cache root>-limit<N>, unless
--cache-dir is given), so it never replaces the full cache's entries; its page says "subset"
in every section.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = cli_args.ArgumentParser(
        prog="python -m ood_core.reproduce",
        description="Reproduce the seed papers' CIFAR-10 comparisons (DICE, LINe, OPNP, NAP and their baselines) on "
                    "the benchmark pack and write them, with the published figures, as one Markdown page.",
        epilog=EPILOG, formatter_class=cli_args.HelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(TITLES), metavar="MODEL",
                        help=f"models to run, among {', '.join(TITLES)}")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="restrict to these methods (default: every method the cache supports); sections and "
                             "orderings whose methods are left out are omitted")
    parser.add_argument("--odin", action="store_true",
                        help="build ODIN-perturbed logits and include ODIN (triples the precompute on CPU)")
    parser.add_argument("--limit", type=cli_args.positive_int, default=None, metavar="N",
                        help="quick run: cap every split at a stratified subset of N images (separate cache)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="PATH", help="where to write the Markdown page")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="cache root; default: $OOD_LENS_CACHE or ~/.cache/ood-lens (with --limit: that path "
                             "with -limit<N> appended)")
    parser.add_argument("--device", default="cpu", type=cli_args.device,
                        help="device to score on: auto, cpu, cuda, cuda:N, mps (building uses CUDA when available)")
    parser.add_argument("--bootstrap", type=cli_args.positive_int, default=1000, metavar="B",
                        help="paired bootstrap resamples behind each ordering's significance")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    return parser


def cache_dir(args: argparse.Namespace) -> Path:
    """The cache root: --cache-dir, else the default one (a sibling ``<root>-limit<N>`` for a subset)."""
    if args.cache_dir is not None:
        return Path(args.cache_dir).expanduser()
    root = paths.cache_root()
    return root if args.limit is None else root.with_name(f"{root.name}-limit{args.limit}")


def git_commit(repo: Path = paths.REPO_ROOT, ignore: Sequence[str] = ()) -> str:
    """``git rev-parse --short HEAD`` plus ``-dirty`` when the work tree has other changes than
    ``ignore`` (read-only: no index refresh); ``unknown`` outside a git checkout."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", *argv], cwd=repo, capture_output=True, text=True,
                              check=True, timeout=30).stdout
    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = [line[3:].strip() for line in git("status", "--porcelain").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if [p for p in changed if p not in ignore] else "")


def machine(device: str) -> str:
    """CPU model, cores, torch version and devices, in one line."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    built = "cuda" if torch.cuda.is_available() else "cpu"
    return f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}; built on {built}, scored on {device}"


def _progress(quiet: bool) -> tuple[Any, Callable[[], None]]:
    """(on_progress for tuning, close): one tqdm bar on stderr, or nothing with --quiet."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="setting", file=sys.stderr, leave=False)

    def update(description: str, done: int, total: int) -> None:
        if done < bar.n:  # a new tuning run
            bar.reset()
        bar.total = total
        bar.set_description(description, refresh=False)
        bar.update(done - bar.n)
    return update, bar.close


def load(model: str, args: argparse.Namespace) -> Any:
    """The model's benchmark on the pack, built first where entries are missing."""
    from ood_core.benchmark import load_benchmark
    from ood_core.datasets.outliers import val_outliers_name

    return load_benchmark(model, ID_DATASET, OOD_SETS, cache_root=cache_dir(args), device=args.device,
                          build_missing=True, limit=args.limit, progress=not args.quiet, with_odin=args.odin,
                          val_ood_datasets=[val_outliers_name(ID_DATASET)])


def run(args: argparse.Namespace, argv: Sequence[str], loader: Callable[[str, argparse.Namespace], Any] = load) -> str:
    """Compute every model's report and write the page to ``args.out``; returns the page.
    With ``--quiet`` the library's warnings (e.g. KNN's k capped on a small subset) are muted too."""
    library = logging.getLogger("ood_core")
    level = library.level
    if args.quiet:
        library.setLevel(logging.ERROR)
    try:
        return _run(args, argv, loader)
    finally:
        library.setLevel(level)


def _run(args: argparse.Namespace, argv: Sequence[str], loader: Callable[[str, argparse.Namespace], Any]) -> str:
    from ood_core.datasets.outliers import val_outliers_name
    from ood_core.tuning import Protocol

    start, started = time.perf_counter(), dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    log = (lambda _: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    if args.limit is not None and args.cache_dir is None:
        log(f"subset run: cache {cache_dir(args)}")
    _check_methods(args.methods)
    reports: list[ModelReport] = []
    for model in dict.fromkeys(args.models):
        log(f"{model}: loading (building what is missing)")
        bench = loader(model, args)
        protocol = Protocol("validation", tuple(bench.val_ood) or (val_outliers_name(bench.id_dataset),))
        on_progress, close = _progress(args.quiet)
        try:
            reports.append(model_report(bench, protocol, args.methods, n_boot=args.bootstrap, seed=args.seed,
                                        on_progress=on_progress, log=log))
        finally:
            close()
    out = Path(args.out)
    try:
        relative = str(out.resolve().relative_to(paths.REPO_ROOT))
    except ValueError:
        relative = ""
    info = RunInfo(command=" ".join(["python -m ood_core.reproduce", *map(shlex.quote, argv)]),
                   commit=git_commit(ignore=[relative]), machine=machine(args.device), started=started,
                   seconds=time.perf_counter() - start, with_odin=args.odin, limit=args.limit,
                   n_boot=args.bootstrap, seed=args.seed)
    page = render(info, reports)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    log(f"wrote {out} ({_minutes(info.seconds)})")
    return page


def _check_methods(methods: Sequence[str] | None) -> None:
    """Unknown method names fail before anything is built."""
    from ood_core.registry import OODLensError, did_you_mean
    from ood_core.scorers import list_scorers

    known = list_scorers()
    unknown = [m for m in methods or () if m not in known]
    if unknown:
        raise OODLensError(f"unknown method(s) {', '.join(unknown)}; {did_you_mean(unknown[0], known)}"
                           f"known methods: {', '.join(known)}")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def main(argv: Sequence[str] | None = None,
         loader: Callable[[str, argparse.Namespace], Any] = load) -> int:
    """Entry point; returns the exit status (2 with one ``error:`` line for user errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_args.run_command(build_parser(), lambda args: run(args, argv, loader), argv)

"""``python -m precompute``: build the feature cache for a benchmark, or one entry.

Errors users can hit (unknown names, missing checkpoints, unreadable folders, stale
caches) print one ``error: ...`` line on stderr and exit with status 2; Ctrl-C keeps the
chunks written so far and exits with 130.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

EPILOG = """\
examples:
  # everything a report on DenseNet-BC-100 / CIFAR-10 needs (ID train/val/test + 3 OOD sets)
  python -m precompute --model densenet100-cifar10 --id cifar10 --ood isun dtd10 mnist

  # a quick smoke run: 200 images per split, no ODIN pass
  python -m precompute --model resnet20-cifar10 --id cifar10 --ood isun --limit 200 --no-odin

  # one entry, rebuilt from scratch (what a "stale cache" error asks for)
  python -m precompute --model densenet100-cifar10 --dataset isun --split test --rebuild

  # what can be built, and what is cached
  python -m precompute --list

An interrupted build (Ctrl-C, kill) keeps its finished chunks: run the same command
again to resume. The cache lives in $OOD_LENS_CACHE (default ~/.cache/ood-lens).
"""

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the epilog's examples as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="Run a classifier once over ID and OOD image sets and cache logits, penultimate "
                    "features, pre-pool maxima, ODIN-perturbed logits and training statistics, so every "
                    "OOD method can then be scored from the cache.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    what = parser.add_argument_group("what to build")
    what.add_argument("--model", help="registered model name (see --list)")
    what.add_argument("--id", dest="id_dataset", metavar="DATASET",
                      help="ID dataset: builds its train/val/test entries and the training statistics")
    what.add_argument("--ood", nargs="*", default=[], metavar="DATASET", help="OOD datasets (test split)")
    what.add_argument("--checkpoint", default=None, metavar="PATH",
                      help="local weights file for --model (default: the model's own weights)")
    what.add_argument("--dataset", help="lower-level form: build the single entry --dataset/--split")
    what.add_argument("--split", default="test", help="split for --dataset (train, val or test)")
    what.add_argument("--list", action="store_true", help="list models, datasets and cached entries, then exit")
    how = parser.add_argument_group("how")
    how.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1' ...")
    how.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    how.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes for decoding")
    how.add_argument("--limit", type=int, default=None,
                     help="cap every split at a stratified subset of N images (seed 0); default: all")
    how.add_argument("--no-odin", action="store_true", help="skip the ODIN input-perturbation pass")
    how.add_argument("--odin-eps", type=float, nargs="+", default=None, metavar="EPS",
                     help="ODIN step sizes ε (normalised input space); default: the ODIN scorer's grid "
                          "(0.0014 0.0028)")
    how.add_argument("--odin-temperature", type=float, default=None,
                     help="ODIN temperature T; default: the ODIN scorer's (1000)")
    how.add_argument("--rebuild", action="store_true", help="discard existing entries and chunks and rebuild")
    how.add_argument("--cache-dir", default=None, help="cache root; default: $OOD_LENS_CACHE or ~/.cache/ood-lens")
    how.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _list(cache_dir: str | None) -> None:
    from ood_core import paths
    from ood_core.cache.store import list_cached
    from ood_core.datasets import dataset_info, list_datasets
    from ood_core.models import list_models

    print("models:   " + ", ".join(list_models()))
    print("datasets:")
    for name in list_datasets():
        try:
            info = dataset_info(name)
            print(f"  {name:<16} {info.kind:<4} splits={','.join(info.splits):<15} {info.description}")
        except Exception:  # a prefix entry (folder:<path>) has no info of its own
            print(f"  {name}")
    root = cache_dir or str(paths.cache_root())
    cached = list_cached(root)
    print(f"cached in {root}:" + ("" if cached else " (nothing)"))
    for model, datasets in cached.items():
        for dataset, splits in datasets.items():
            print(f"  {model} / {dataset}: {' '.join(splits)}")


def run(args: argparse.Namespace) -> None:
    """Do what the parsed arguments ask (raises OODLensError on user errors)."""
    from ood_core.registry import OODLensError

    if args.list:
        _list(args.cache_dir)
        return
    if not args.model:
        raise OODLensError("--model is required (see --list for the registered models)")
    if args.limit is not None and args.limit < 1:
        raise OODLensError(f"--limit must be a positive number of images, got {args.limit}")
    if args.batch_size < 1:
        raise OODLensError(f"--batch-size must be positive, got {args.batch_size}")
    common = dict(device=args.device, batch_size=args.batch_size, limit=args.limit, num_workers=args.num_workers,
                  odin_eps=args.odin_eps, odin_temperature=args.odin_temperature, progress=not args.quiet,
                  rebuild=args.rebuild)
    if args.dataset:
        if args.id_dataset or args.ood:
            raise OODLensError("use either --dataset/--split (one entry) or --id/--ood (a benchmark), not both")
        from ood_core.cache.builder import build_features
        from ood_core.datasets import create_dataset
        from ood_core.models import create_model

        model = create_model(args.model, **({"checkpoint": args.checkpoint} if args.checkpoint else {}))
        dataset = create_dataset(args.dataset, args.split)
        entry = build_features(model, dataset, args.split, args.cache_dir, with_odin=not args.no_odin
                               and args.split != "train", model_name=args.model, dataset_name=args.dataset,
                               **common)
        print(f"cached {args.model} / {args.dataset} / {args.split} in {entry}", file=sys.stderr)
        return
    if not args.id_dataset:
        raise OODLensError("give --id DATASET (with optional --ood ...) or --dataset D --split S; see --help")
    from ood_core.cache.builder import ensure_entries

    entries = ensure_entries(args.model, args.id_dataset, args.ood, args.cache_dir, with_odin=not args.no_odin,
                             checkpoint=args.checkpoint, **common)
    print(f"cache ready: {len(entries)} entries for {args.model} / {args.id_dataset} "
          f"(+ {', '.join(args.ood) or 'no OOD sets'})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from ood_core.cache.builder import BuildInterrupted
    from ood_core.registry import OODLensError

    try:
        run(args)
    except BuildInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OODLensError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

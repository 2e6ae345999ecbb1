"""``python -m precompute``: build the feature cache for a benchmark, or one entry.

Errors users can hit (unknown names, bad arguments, missing checkpoints, unreadable
folders) print one ``error: ...`` line on stderr and exit with status 2; Ctrl-C keeps the
chunks written so far and exits with 130. Every existing entry is checked as a reader checks
it (weights, images, checksum, finite values): a stale one is rebuilt, and the log says why,
so this command is the one every "stale cache" error names. The training statistics are those
the registered methods read (``ood_core.statistics.required_statistics``); a stored statistic
of another version than the registered one is recomputed alone, from the cached training
features.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

DEFAULT_CHUNK_BATCHES = 8  # = ood_core.cache.builder.DEFAULT_CHUNK_BATCHES (not imported: --help stays fast)

EPILOG = """\
examples:
  # everything a report on DenseNet-BC-100 / CIFAR-10 needs (ID train/val/test + 3 OOD sets)
  python -m precompute --model densenet100-cifar10 --id cifar10 --ood isun dtd10 mnist

  # a quick smoke run: 200 images per split, no ODIN pass
  python -m precompute --model resnet20-cifar10 --id cifar10 --ood isun --limit 200 --no-odin

  # one entry, rebuilt from scratch
  python -m precompute --model densenet100-cifar10 --dataset isun --split test --rebuild

  # your own weights for a registered architecture (cached apart from the model's own weights)
  python -m precompute --model resnet20-cifar10 --checkpoint my_resnet20.th --id cifar10 --ood isun

  # what can be built, and what is cached
  python -m precompute --list

  # the same build shared by 4 processes on this machine (CPU: gloo; GPUs: NCCL, one per rank),
  # or by several machines (torchrun --nnodes 2 --node_rank R --rdzv_endpoint HOST:PORT ...)
  torchrun --nproc_per_node 4 -m precompute --model resnet50 --id imagenet --ood inaturalist sun places textures

  # ImageNet-scale features stored as float16 (half the disk and mapped memory)
  python -m precompute --model resnet50 --id imagenet --ood textures --dtype float16

An interrupted build (Ctrl-C, kill, a torchrun rank that died) keeps its finished chunks: run
the same command again, with any number of processes, to resume; nothing finished is computed
again. Under torchrun every entry's missing chunks are split into one contiguous range per
rank, each rank writes its own chunks, and rank 0 joins them into the entry (the same rows and
tensors as one process) and computes the training statistics from the whole training split. Entries whose weights, images or files changed are rebuilt; training
statistics that are missing or of an older version are computed from the cached features. A second build
of the same entries waits for the first, then reuses its result. The cache lives in
$OOD_LENS_CACHE (default ~/.cache/ood-lens).
"""

def build_parser() -> argparse.ArgumentParser:
    from ood_core import cli_args

    parser = cli_args.ArgumentParser(
        prog="python -m precompute",
        description="Run a classifier once over ID and OOD image sets and cache logits, penultimate "
                    "features, pre-pool maxima, ODIN-perturbed logits and training statistics, so every "
                    "OOD method can then be scored from the cache.",
        epilog=EPILOG, formatter_class=cli_args.HelpFormatter)
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
    how.add_argument("--device", default="auto", type=cli_args.device,
                     help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', 'mps'")
    how.add_argument("--batch-size", type=cli_args.positive_int, default=128, help="images per forward pass")
    how.add_argument("--chunk-batches", type=cli_args.positive_int, default=DEFAULT_CHUNK_BATCHES,
                     help="batches per resumable chunk (what an interruption can lose, and the unit shared "
                          "between torchrun ranks)")
    how.add_argument("--dtype", choices=("float32", "float16"), default=None,
                     help="how to store the features and logits; float16 halves disk and memory. Not given: an "
                          "existing entry keeps its dtype, a new one is float32")
    how.add_argument("--threads", type=cli_args.positive_int, default=None,
                     help="CPU threads per process (torchrun sets 1 per rank; default: torch's choice)")
    how.add_argument("--download", action="store_true",
                     help="let torchvision datasets and pretrained weights download what is not cached "
                          "(default: never touch the network)")
    how.add_argument("--num-workers", type=cli_args.non_negative_int, default=0,
                     help="DataLoader worker processes for decoding (0: decode in this process)")
    how.add_argument("--limit", type=cli_args.positive_int, default=None,
                     help="cap every split at a stratified subset of N images (seed 0); default: all")
    how.add_argument("--no-odin", action="store_true", help="skip the ODIN input-perturbation pass")
    how.add_argument("--odin-eps", type=cli_args.non_negative_float, nargs="+", default=None, metavar="EPS",
                     help="ODIN step sizes ε ≥ 0 (normalised input space); default: the ODIN scorer's grid "
                          "(0.0014 0.0028)")
    how.add_argument("--odin-temperature", type=cli_args.positive_float, default=None,
                     help="ODIN temperature T > 0; default: the ODIN scorer's (1000)")
    how.add_argument("--rebuild", action="store_true",
                     help="discard existing entries and interrupted chunks and rebuild everything "
                          "(stale entries are rebuilt without it)")
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
            print(f"  {name:<22} {info.kind:<4} splits={','.join(info.splits):<15} {info.description}")
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
    import os

    import torch

    from ood_core import distributed
    from ood_core.cache.store import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.download:
        os.environ["OOD_LENS_DOWNLOAD"] = "1"
    ranks = distributed.setup(resolve_device(args.device))
    _build(args, ranks.is_main)
    distributed.teardown()  # only after success: a failed rank makes torchrun stop the others


def _build(args: argparse.Namespace, is_main: bool) -> None:
    from ood_core.registry import OODLensError

    common = dict(device=args.device, batch_size=args.batch_size, limit=args.limit, num_workers=args.num_workers,
                  odin_eps=args.odin_eps, odin_temperature=args.odin_temperature, progress=not args.quiet,
                  rebuild=args.rebuild, chunk_batches=args.chunk_batches, store_dtype=args.dtype)
    if args.dataset:
        if args.id_dataset or args.ood:
            raise OODLensError("use either --dataset/--split (one entry) or --id/--ood (a benchmark), not both")
        from ood_core.cache.builder import build_features
        from ood_core.cache.provenance import load_model
        from ood_core.datasets import canonical_dataset_name, create_dataset

        model, ref = load_model(args.model, args.checkpoint, args.cache_dir)
        name = canonical_dataset_name(args.dataset)
        dataset = create_dataset(name, args.split)
        entry = build_features(model, dataset, args.split, args.cache_dir, with_odin=not args.no_odin
                               and args.split != "train", model_name=ref.name, dataset_name=name,
                               checkpoint=ref.checkpoint, **common)
        if is_main:
            print(f"cached {ref.key} / {name} / {args.split} in {entry}", file=sys.stderr)
        return
    if not args.id_dataset:
        raise OODLensError("give --id DATASET (with optional --ood ...) or --dataset D --split S; see --help")
    from ood_core.cache.ensure import ensure_entries
    from ood_core.statistics import required_statistics

    # The training statistics every registered method reads; only missing or stale ones are computed.
    entries = ensure_entries(args.model, args.id_dataset, args.ood, args.cache_dir, with_odin=not args.no_odin,
                             checkpoint=args.checkpoint, statistics=required_statistics(), **common)
    if is_main:
        print(f"cache ready: {len(entries)} entries for {args.model} / {args.id_dataset} "
              f"(+ {', '.join(args.ood) or 'no OOD sets'})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 with one ``error:`` line for user errors, 130 on
    Ctrl-C, the finished chunks kept)."""
    from ood_core import cli_args

    return cli_args.run_command(build_parser(), run, argv)

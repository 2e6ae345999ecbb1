"""Run a model over a dataset split once and store the result as a cache entry.

:func:`build_features` takes model and dataset *objects*; the training statistics are built by
:mod:`.stats_builder` and a whole benchmark, by name, by :func:`ood_core.cache.ensure.ensure_entries`
(the front door used by ``python -m precompute``, the report CLI and the app). Builds are resumable: results are written as atomic chunks (one
per ``chunk_batches`` batches, :mod:`.forward`), an interrupted build keeps them, and the next
run with the same plan computes only the missing chunks.

An existing entry is reused only when it passes every check a reader makes (same weights,
same images, intact checksum, finite tensors) and matches the request (limit, ODIN grid);
otherwise it is rebuilt, and the log says why. One build at a time holds an entry (and a
whole benchmark, in ``ensure_entries``): a second one waits, then reuses the result.
"""
from __future__ import annotations

import hashlib
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from ood_core import distributed, paths
from ood_core.cache import store
from ood_core.cache.forward import ProgressCallback, check_finite_outputs, concatenate, run_chunks
from ood_core.cache.provenance import ModelRef
from ood_core.datasets.base import ImageDataset
from ood_core.locks import LOCK_FILE, build_lock
from ood_core.models.base import OODModel
from ood_core.records import ODIN_EPS_GRID, ODIN_TEMPERATURE
from ood_core.registry import OODLensError

DEFAULT_CHUNK_BATCHES = 8
# How the float tensors of an entry are stored: float32 (default) or the opt-in float16, which
# halves the disk and mapped memory of an ImageNet-scale cache (readers upcast on the device).
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
FLOAT16_MAX = 65504.0


def stderr_log(message: str) -> None:
    """The default ``log``: one line on stderr."""
    print(message, file=sys.stderr)


def odin_settings(odin_eps: Sequence[float] | None, odin_temperature: float | None) -> tuple[tuple[float, ...], float]:
    """(ε grid, T) for the ODIN pass: the ODIN scorer's defaults where not given; every ε must be
    finite and ≥ 0, T finite and > 0 (:class:`OODLensError` otherwise, before any work)."""

    eps = tuple(float(e) for e in (odin_eps if odin_eps is not None else ODIN_EPS_GRID))
    temperature = float(odin_temperature if odin_temperature is not None else ODIN_TEMPERATURE)
    if not eps or not all(math.isfinite(e) and e >= 0 for e in eps):
        raise OODLensError(f"ODIN step sizes ε must be finite and ≥ 0, got {list(eps)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise OODLensError(f"ODIN temperature T must be finite and > 0, got {temperature}")
    return eps, temperature


def entry_label(model_key: str, dataset_name: str, split: str) -> str:
    """How progress events name an entry: ``"demo-cnn / demo-letters / test"`` (the tqdm bar's
    description, and the stage key of :class:`ood_core.progress.ProgressTracker`)."""
    return f"{model_key} / {dataset_name} / {split}"


def subset_indices(dataset: ImageDataset, limit: int | None) -> list[int]:
    """All indices, or a stratified subset of ``limit`` of them (seed 0, stable order)."""
    n = len(dataset)
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise OODLensError(f"--limit must be positive, got {limit}")
    from ood_core.datasets.splits import stratified_subset

    return sorted(int(i) for i in stratified_subset([int(dataset.label(i)) for i in range(n)], limit, 0))


@dataclass(frozen=True)
class Request:
    """What an entry must match to be reused instead of rebuilt."""

    limit: int | None
    with_odin: bool
    odin_eps: tuple[float, ...]
    odin_temperature: float
    store_dtype: str | None = "float32"  # None: any (a reader of the entry upcasts either)

    def mismatch(self, manifest: dict) -> str | None:
        if manifest.get("limit") != self.limit:
            return f"limit {manifest.get('limit')} → {self.limit}"
        stored = manifest.get("store_dtype", "float32")
        if self.store_dtype is not None and stored != self.store_dtype:
            return f"stored as {stored}, asked for {self.store_dtype}"
        if self.with_odin:
            have = tuple(float(e) for e in manifest.get("odin_eps") or ())
            if "odin_logits" not in manifest.get("shapes", {}) or have != self.odin_eps \
                    or float(manifest.get("odin_temperature") or 0) != self.odin_temperature:
                return "ODIN logits missing or computed for another ε grid"
        return None


def build_features(
    model: OODModel,
    dataset: ImageDataset,
    split: str,
    cache_root: Path | str | None = None,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 128,
    limit: int | None = None,
    num_workers: int = 0,
    odin_eps: Sequence[float] | None = None,
    odin_temperature: float | None = None,
    with_odin: bool = False,
    progress: bool = True,
    rebuild: bool = False,
    on_progress: ProgressCallback | None = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
    chunk_batches: int = DEFAULT_CHUNK_BATCHES,
    checkpoint: str | None = None,
    log: Callable[[str], None] | None = None,
    store_dtype: str | None = None,
) -> Path:
    """Cache ``model``'s outputs on ``dataset`` (one split) and return the entry directory.

    Stores logits (N, K), penultimate (N, D), prepool_max (N, C) when the model has it,
    labels / predictions / source_index (N,) int64 and, with ``with_odin``, odin_logits
    (E, N, K) for the ε grid. A complete entry is reused when it matches the request (limit,
    ODIN grid) and passes the checks a reader makes (same weights, same images, checksum,
    finite tensors); otherwise it is rebuilt and ``log`` says why. ``rebuild`` also discards
    the chunks of an interrupted build. ``checkpoint``: the weights file ``model`` was loaded
    from, when not its own (the entry then lives under ``<model name>@<fingerprint>``).
    Corrupt images are skipped and listed in the manifest by :meth:`ImageDataset.describe`.
    ``store_dtype``: ``"float32"`` or ``"float16"`` for the stored float tensors; None: a complete
    entry is reused whichever it holds, and a new one is float32.

    Under torchrun (:mod:`ood_core.distributed`) every rank calls this with the same arguments:
    the main rank decides and finalises, the missing chunks are shared out in contiguous ranges.
    """
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    ranks = distributed.current()
    log = (log or stderr_log) if ranks.is_main else _silent
    ref = ModelRef(model_name or model.name, model.fingerprint(), checkpoint)
    dataset_name = dataset_name or dataset.info.name
    eps, temperature = odin_settings(odin_eps, odin_temperature)
    if store_dtype is not None and store_dtype not in STORE_DTYPES:
        raise OODLensError(f"store dtype must be one of {', '.join(STORE_DTYPES)}, got {store_dtype!r}")
    request = Request(limit, with_odin, eps, temperature, store_dtype)
    entry = store.entry_dir(root, ref.key, dataset_name, split)
    label = f"{ref.key}/{dataset_name}/{split}"
    with main_rank_lock(entry / LOCK_FILE, f"cache entry {label}", log):
        dataset_fingerprint = dataset.fingerprint()
        reuse = False
        if ranks.is_main:
            store.remove_stale_temp_files(entry)
            if rebuild:
                store.remove_chunks(entry)
            elif store.is_complete(entry):
                stale, why = reuse_problem(entry, ref, dataset_name, split, dataset_fingerprint, request)
                reuse = why is None
                if stale:  # not merely built for another request (limit, ODIN grid)
                    log(f"rebuilding {label}: it {why}")
        if distributed.from_main(reuse):
            return entry
        _build_entry(model, dataset, entry, ref, dataset_name, split, dataset_fingerprint, request,
                     device=distributed.rank_device(store.resolve_device(device)), batch_size=batch_size,
                     num_workers=num_workers, progress=progress and ranks.is_main,
                     on_progress=on_progress if ranks.is_main else None, chunk_batches=chunk_batches)
    return entry


def _silent(message: str) -> None:
    """The ``log`` of the ranks other than the main one: one voice per job."""


def main_rank_lock(path: Path, what: str, log: Callable[[str], None] | None = None):
    """:func:`~ood_core.locks.build_lock` on the main rank; nothing on the others, which follow
    the main rank through barriers (taking the lock too would deadlock them against it)."""
    return build_lock(path, what, log) if distributed.current().is_main else nullcontext()


def reuse_problem(entry: Path, ref: ModelRef, dataset_name: str, split: str, dataset_fingerprint: str,
                   request: Request) -> tuple[bool, str | None]:
    """(stale, why) the complete ``entry`` cannot serve ``request``; why is None when it can.
    Stale: a check a reader makes fails; otherwise it was built for another request."""
    try:
        manifest = store.read_manifest(entry, ref.key, dataset_name, split)
        mismatch = request.mismatch(manifest)
        if mismatch is not None:
            return False, mismatch
        store.load_entry(entry, ref.key, dataset_name, split,
                         expected=store.Expected(ref.fingerprint, dataset_fingerprint))
    except store.StaleCacheError as error:
        return True, store.problems_text(error)
    return False, None


def _build_entry(model: OODModel, dataset: ImageDataset, entry: Path, ref: ModelRef, dataset_name: str, split: str,
                 dataset_fingerprint: str, request: Request, *, device: torch.device, batch_size: int,
                 num_workers: int, progress: bool, on_progress: ProgressCallback | None, chunk_batches: int) -> None:
    """Compute what the chunks of an interrupted build of the same plan lack, then write the entry."""
    indices = subset_indices(dataset, request.limit)
    if not indices:
        raise OODLensError(f"dataset {dataset_name} split {split} has no images")
    per_chunk = batch_size * chunk_batches
    n_chunks = -(-len(indices) // per_chunk)
    odin_eps = list(request.odin_eps) if request.with_odin else []
    plan = {
        "model": ref.name, "model_key": ref.key, "model_fingerprint": ref.fingerprint, "dataset": dataset_name,
        "dataset_fingerprint": dataset_fingerprint, "split": split, "limit": request.limit,
        "rows_requested": len(indices), "batch_size": batch_size, "chunk_batches": chunk_batches,
        "indices_sha": hashlib.sha256(str(indices).encode()).hexdigest()[:16],
        "with_odin": request.with_odin, "odin_eps": odin_eps,
        "odin_temperature": request.odin_temperature, "transform": model.preprocessing.describe(),
    }
    ranks = distributed.current()
    # The main rank keeps or discards an interrupted build's chunks; every rank then sees the
    # same finished set (nothing is written before the broadcast) and takes its contiguous share.
    done = set(distributed.from_main(store.prepare_chunks(entry, plan) if ranks.is_main else None))
    todo = [c for c in range(n_chunks) if c not in done]
    mine = distributed.split_evenly(todo, ranks)
    desc = entry_label(ref.key, dataset_name, split)
    total = len(indices)

    def rows_of(chunks: Iterable[int]) -> int:
        return sum(min(per_chunk, total - c * per_chunk) for c in chunks)

    # what progress counts: the whole entry in one process, this rank's share under torchrun
    shown = (rows_of(done), total) if not ranks.distributed else (0, rows_of(mine))
    if mine:
        if on_progress is not None:  # the pass starts (the first batch can take a while)
            on_progress(desc, *shown)
        run_chunks(model, dataset, entry, indices, mine, per_chunk, total, shown, desc if not ranks.distributed
                   else f"{desc} (rank {ranks.rank} of {ranks.world_size})",
                   device=device, batch_size=batch_size, num_workers=num_workers, with_odin=request.with_odin,
                   eps=request.odin_eps, temperature=request.odin_temperature, progress=progress,
                   on_progress=on_progress, model_name=ref.name)
    elif on_progress is not None:
        on_progress(desc, total, total)
    distributed.barrier()  # every rank's chunks are written
    if ranks.is_main:
        _finalise(model, dataset, entry, ref, dataset_name, split, dataset_fingerprint, request, plan, n_chunks,
                  total, desc)
    distributed.barrier()  # the entry is complete before any rank moves on


def _finalise(model: OODModel, dataset: ImageDataset, entry: Path, ref: ModelRef, dataset_name: str, split: str,
              dataset_fingerprint: str, request: Request, plan: dict, n_chunks: int, total: int, desc: str) -> None:
    """Concatenate the chunks in order and write the entry (the main rank, once all chunks exist)."""
    odin_eps = plan["odin_eps"]
    tensors, skipped = concatenate(store.read_chunks(entry, n_chunks))
    if tensors is None:
        raise OODLensError(f"dataset {dataset_name} split {split}: none of its {total} images could be read")
    check_finite_outputs(tensors, desc)
    skipped_items = [dataset.describe(i) for i in skipped]
    if skipped:
        shown = ", ".join(skipped_items[: store.MAX_REPORTED_SKIPS])
        more = " ..." if len(skipped) > store.MAX_REPORTED_SKIPS else ""
        print(f"{desc}: skipped {len(skipped)} unreadable images: {shown}{more}", file=sys.stderr)
    manifest = {
        "model": ref.name, "model_key": ref.key, "model_fingerprint": ref.fingerprint, "checkpoint": ref.checkpoint,
        "dataset": dataset_name, "dataset_fingerprint": dataset_fingerprint, "split": split,
        "transform": plan["transform"], "limit": request.limit,
        "skipped_corrupt": {"count": len(skipped), "indices": skipped[: store.MAX_REPORTED_SKIPS],
                            "items": skipped_items[: store.MAX_REPORTED_SKIPS]},
        "odin_eps": odin_eps, "odin_temperature": request.odin_temperature,
        "class_names": list(model.class_names), "num_classes": model.num_classes,
        "feature_dim": model.feature_dim, "store_dtype": request.store_dtype or "float32",
    }
    store.write_entry(entry, stored_as(tensors, request.store_dtype or "float32", desc), manifest)


def stored_as(tensors: dict[str, torch.Tensor], store_dtype: str, desc: str) -> dict[str, torch.Tensor]:
    """The float tensors cast to ``store_dtype`` (integers untouched). float16 refuses values
    beyond its range (±65504) instead of storing ±inf: the entry would then fail every read."""
    dtype = STORE_DTYPES[store_dtype]
    if dtype == torch.float32:
        return tensors
    out = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            peak = float(tensor.abs().max()) if tensor.numel() else 0.0
            if peak > FLOAT16_MAX:
                raise OODLensError(f"{desc}: its {name} reach {peak:.4g}, beyond float16's range (65504); "
                                   "store this model's cache as float32 (drop --dtype float16)")
            tensor = tensor.to(dtype)
        out[name] = tensor
    return out

"""Run a model over a dataset split once and store the result as a cache entry.

The core functions take model and dataset *objects* (:func:`build_features`,
:func:`build_train_stats`); :func:`ensure_entries` is the name-based front door used by
``python -m precompute``, the report CLI and the app. Builds are resumable: results are
written as atomic chunks (one per ``chunk_batches`` batches), an interrupted build keeps
them, and the next run with the same plan computes only the missing chunks.

An existing entry is reused only when it passes every check a reader makes (same weights,
same images, intact checksum, finite tensors) and matches the request (limit, ODIN grid);
otherwise it is rebuilt, and the log says why. One build at a time holds an entry (and a
whole benchmark, in :func:`ensure_entries`): a second one waits, then reuses the result.
"""
from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ood_core import paths
from ood_core.cache import store
from ood_core.cache.provenance import ModelRef, load_model
from ood_core.datasets.base import ImageDataset, TransformedDataset, collate_skip_corrupt
from ood_core.locks import LOCK_FILE, build_lock
from ood_core.models.base import OODModel
from ood_core.registry import OODLensError

LOGIT_TOLERANCE = 1e-4
DEFAULT_CHUNK_BATCHES = 8

ProgressCallback = Callable[[str, int, int], None]
BENCHMARK_LOCK = ".benchmark.lock"
STATS_LOCK = ".train_stats.lock"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class ModelWrapperError(OODLensError):
    """The model's logits are not ``penultimate @ W.T + b``: its wrapper is wrong."""


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build; ``chunks_kept`` chunks of ``entry`` survive for the next run."""

    def __init__(self, entry: Path, chunks_kept: int) -> None:
        super().__init__(f"interrupted; {chunks_kept} chunks kept, re-run the same command to resume")
        self.entry = entry
        self.chunks_kept = chunks_kept


def _odin_settings(odin_eps: Sequence[float] | None, odin_temperature: float | None) -> tuple[tuple[float, ...], float]:
    """(ε grid, T) for the ODIN pass: the ODIN scorer's defaults where not given; every ε must be
    finite and ≥ 0, T finite and > 0 (:class:`OODLensError` otherwise, before any work)."""
    from ood_core.scorers.odin import ODIN_EPS_GRID, ODIN_TEMPERATURE

    eps = tuple(float(e) for e in (odin_eps if odin_eps is not None else ODIN_EPS_GRID))
    temperature = float(odin_temperature if odin_temperature is not None else ODIN_TEMPERATURE)
    if not eps or not all(math.isfinite(e) and e >= 0 for e in eps):
        raise OODLensError(f"ODIN step sizes ε must be finite and ≥ 0, got {list(eps)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise OODLensError(f"ODIN temperature T must be finite and > 0, got {temperature}")
    return eps, temperature


def subset_indices(dataset: ImageDataset, limit: int | None) -> list[int]:
    """All indices, or a stratified subset of ``limit`` of them (seed 0, stable order)."""
    n = len(dataset)
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise OODLensError(f"--limit must be positive, got {limit}")
    from ood_core.datasets.splits import stratified_subset

    return sorted(int(i) for i in stratified_subset([int(dataset.label(i)) for i in range(n)], limit, 0))


def check_logits(logits: Tensor, penultimate: Tensor, weight: Tensor, bias: Tensor, model_name: str) -> float:
    """Relative error ‖z − (h Wᵀ + b)‖ / ‖z‖; raises :class:`ModelWrapperError` above 1e-4.

    Scorers recompute logits from cached h with the cached head, so the two must agree.
    """
    expected = torch.addmm(bias.double(), penultimate.double(), weight.double().T)
    error = float((logits.double() - expected).norm() / expected.norm().clamp(min=1e-12))
    if not error < LOGIT_TOLERANCE:
        raise ModelWrapperError(
            f"model {model_name}: logits differ from penultimate @ W.T + b (relative error {error:.2e} "
            f">= {LOGIT_TOLERANCE:.0e}); its wrapper must return the input of the final Linear as penultimate")
    return error


@dataclass(frozen=True)
class _Request:
    """What an entry must match to be reused instead of rebuilt."""

    limit: int | None
    with_odin: bool
    odin_eps: tuple[float, ...]
    odin_temperature: float

    def mismatch(self, manifest: dict) -> str | None:
        if manifest.get("limit") != self.limit:
            return f"limit {manifest.get('limit')} → {self.limit}"
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
    """
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    log = log or _stderr
    ref = ModelRef(model_name or model.name, model.fingerprint(), checkpoint)
    dataset_name = dataset_name or dataset.info.name
    eps, temperature = _odin_settings(odin_eps, odin_temperature)
    request = _Request(limit, with_odin, eps, temperature)
    entry = store.entry_dir(root, ref.key, dataset_name, split)
    label = f"{ref.key}/{dataset_name}/{split}"
    with build_lock(entry / LOCK_FILE, f"cache entry {label}", log):
        store.remove_stale_temp_files(entry)
        dataset_fingerprint = dataset.fingerprint()
        if rebuild:
            store.remove_chunks(entry)
        elif store.is_complete(entry):
            stale, why = _reuse_problem(entry, ref, dataset_name, split, dataset_fingerprint, request)
            if why is None:
                return entry
            if stale:  # not merely built for another request (limit, ODIN grid)
                log(f"rebuilding {label}: it {why}")
        _build_entry(model, dataset, entry, ref, dataset_name, split, dataset_fingerprint, request,
                     device=store.resolve_device(device), batch_size=batch_size, num_workers=num_workers,
                     progress=progress, on_progress=on_progress, chunk_batches=chunk_batches)
    return entry


def _reuse_problem(entry: Path, ref: ModelRef, dataset_name: str, split: str, dataset_fingerprint: str,
                   request: "_Request") -> tuple[bool, str | None]:
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
        return True, "; ".join(why for _, why in error.problems) or str(error)
    return False, None


def _build_entry(model: OODModel, dataset: ImageDataset, entry: Path, ref: ModelRef, dataset_name: str, split: str,
                 dataset_fingerprint: str, request: "_Request", *, device: torch.device, batch_size: int,
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
    done = set(store.prepare_chunks(entry, plan))
    todo = [c for c in range(n_chunks) if c not in done]
    desc = f"{ref.key} / {dataset_name} / {split}"
    total = len(indices)
    done_items = sum(min(per_chunk, total - c * per_chunk) for c in done)

    if todo:
        _run_chunks(model, dataset, entry, indices, todo, per_chunk, total, done_items, desc,
                    device=device, batch_size=batch_size, num_workers=num_workers, with_odin=request.with_odin,
                    eps=request.odin_eps, temperature=request.odin_temperature, progress=progress,
                    on_progress=on_progress, model_name=ref.name)
    elif on_progress is not None:
        on_progress(desc, total, total)

    tensors, skipped = _concatenate(store.read_chunks(entry, n_chunks))
    if tensors is None:
        raise OODLensError(f"dataset {dataset_name} split {split}: none of its {total} images could be read")
    _check_finite_outputs(tensors, desc)
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
        "feature_dim": model.feature_dim,
    }
    store.write_entry(entry, tensors, manifest)


def _check_finite_outputs(tensors: dict[str, Tensor], desc: str) -> None:
    """The model's outputs must be finite: NaN or ±inf would be ranked as if they were scores."""
    for name, bad in store.non_finite_counts(tensors).items():
        raise OODLensError(f"{desc}: the model produced {bad} non-finite values in its {name}; "
                           "check the model and its inputs")


def _run_chunks(model: OODModel, dataset: ImageDataset, entry: Path, indices: list[int], todo: list[int],
                per_chunk: int, total: int, done_items: int, desc: str, *, device: torch.device,
                batch_size: int, num_workers: int, with_odin: bool, eps: tuple[float, ...],
                temperature: float, progress: bool, on_progress: ProgressCallback | None,
                model_name: str) -> None:
    """Compute and write the chunks ``todo`` (each ``per_chunk`` items of ``indices``)."""
    # Every chunk but the dataset's last holds exactly chunk_batches full batches, so one
    # loader over the missing chunks' items yields batches that never straddle two chunks.
    wanted = [i for c in todo for i in indices[c * per_chunk:(c + 1) * per_chunk]]
    loader = DataLoader(TransformedDataset(dataset, model.transform(), wanted), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, collate_fn=collate_skip_corrupt,
                        pin_memory=device.type == "cuda")
    model = model.to(device).eval()
    weight, bias = model.head_weight, model.head_bias
    if with_odin:
        from ood_core.models.perturb import odin_perturbed_logits
    bar = tqdm(total=total, initial=done_items, desc=desc, unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    written = 0
    chunk_iter = iter(todo)
    current = next(chunk_iter)
    parts: list[dict[str, Tensor]] = []
    skipped: list[int] = []
    seen_in_chunk = 0
    chunk_size = min(per_chunk, total - current * per_chunk)
    processed = done_items
    try:
        for images, labels, source_index, skipped_here in loader:
            skipped.extend(int(i) for i in skipped_here)
            batch_items = len(labels) + len(skipped_here)
            if images is not None:
                images = images.to(device, non_blocking=True)
                with torch.inference_mode():
                    out = model(images)
                    check_logits(out.logits, out.penultimate, weight, bias, model_name)
                part = {"logits": out.logits.float(), "penultimate": out.penultimate.float(),
                        "labels": labels, "source_index": source_index}
                if out.prepool_max is not None:
                    part["prepool_max"] = out.prepool_max.float()
                if with_odin:
                    # Needs input gradients: outside inference_mode, on a fresh leaf tensor.
                    part["odin_logits"] = odin_perturbed_logits(model, images.clone(), temperature, eps).detach().float()
                parts.append({k: v.detach().cpu() for k, v in part.items()})
            seen_in_chunk += batch_items
            processed += batch_items
            bar.update(batch_items)
            if on_progress is not None:
                on_progress(desc, processed, total)
            if seen_in_chunk >= chunk_size:
                store.write_chunk(entry, current, _chunk_tensors(parts, skipped))
                written += 1
                parts, skipped, seen_in_chunk = [], [], 0
                current = next(chunk_iter, None)
                if current is None:
                    break
                chunk_size = min(per_chunk, total - current * per_chunk)
    except KeyboardInterrupt:
        bar.close()
        raise BuildInterrupted(entry, len(store.existing_chunks(entry))) from None
    finally:
        bar.close()


def _chunk_tensors(parts: list[dict[str, Tensor]], skipped: list[int]) -> dict[str, Tensor]:
    """One chunk's tensors: per-batch parts concatenated plus the skipped indices."""
    out: dict[str, Tensor] = {"skipped": torch.tensor(skipped, dtype=torch.long)}
    if parts:
        for name in parts[0]:
            dim = 1 if name == "odin_logits" else 0
            out[name] = torch.cat([p[name] for p in parts], dim=dim)
    return out


def _concatenate(chunks: list[dict[str, Tensor]]) -> tuple[dict[str, Tensor] | None, list[int]]:
    """Join chunk tensors into entry tensors (adds ``predictions``); ``None`` if no rows."""
    skipped = [int(i) for c in chunks for i in c["skipped"].tolist()]
    filled = [c for c in chunks if "logits" in c]
    if not filled:
        return None, skipped
    tensors: dict[str, Tensor] = {}
    for name in filled[0]:
        if name == "skipped":
            continue
        dim = 1 if name == "odin_logits" else 0
        tensors[name] = torch.cat([c[name] for c in filled], dim=dim).contiguous()
    tensors["predictions"] = tensors["logits"].argmax(dim=1)
    return tensors, skipped


def build_train_stats(
    model: OODModel,
    train_dataset: ImageDataset,
    val_dataset: ImageDataset | None,
    cache_root: Path | str | None = None,
    *,
    rebuild: bool = False,
    model_name: str | None = None,
    dataset_name: str | None = None,
    checkpoint: str | None = None,
    log: Callable[[str], None] | None = None,
    **build_kwargs,
) -> Path:
    """Ensure the ID train (and val) entries exist, then compute and store the training
    statistics of :mod:`ood_core.train_stats` with the head. Returns their directory.

    ``build_kwargs`` go to :func:`build_features` (device, batch_size, limit, progress, ...).
    Statistics are reused while they pass a reader's checks (weights, checksum, finite) and
    were computed from the current train / val entries; otherwise they are recomputed.
    ``rebuild`` rebuilds the train entry and the statistics; a valid val entry is kept
    whatever its ODIN grid.
    """
    from ood_core.train_stats import compute_train_stats

    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    log = log or _stderr
    ref = ModelRef(model_name or model.name, model.fingerprint(), checkpoint)
    dataset_name = dataset_name or train_dataset.info.name
    common = {**build_kwargs, "with_odin": False, "model_name": ref.name, "dataset_name": dataset_name,
              "checkpoint": checkpoint, "log": log}
    folder = store.train_stats_dir(root, ref.key, dataset_name)
    with build_lock(folder / STATS_LOCK, f"training statistics of {ref.key}/{dataset_name}", log):
        store.remove_stale_temp_files(folder)
        train_entry = build_features(model, train_dataset, "train", root, rebuild=rebuild, **common)
        entries = {"train": train_entry}
        if val_dataset is not None:
            val_entry = store.entry_dir(root, ref.key, dataset_name, "val")
            # Any valid val entry of this limit serves, whatever its ODIN grid (ensure_entries
            # builds it first, with ODIN logits); with_odin=False: only the limit is compared.
            _, why = (True, "missing") if not store.is_complete(val_entry) else _reuse_problem(
                val_entry, ref, dataset_name, "val", val_dataset.fingerprint(),
                _Request(build_kwargs.get("limit"), False, (), 0.0))
            if why is not None:
                build_features(model, val_dataset, "val", root, **common)
            entries["val"] = val_entry
        sources = {split: store.manifest_digest(store.read_manifest(entry, ref.key, dataset_name, split))
                   for split, entry in entries.items()}
        if not rebuild:
            why = stats_problem(root, ref, dataset_name, sources)
            if why is None:
                return folder
            if why != "is missing":
                log(f"recomputing the training statistics of {ref.key}/{dataset_name} (the stored ones: {why})")

        train, _ = store.load_entry(train_entry, ref.key, dataset_name, "train")
        val_features = store.load_entry(entries["val"], ref.key, dataset_name, "val")[0]["penultimate"] \
            if "val" in entries else None
        labels = train["labels"]
        if bool((labels < 0).any()):
            raise OODLensError(f"dataset {dataset_name} train split has unlabeled images; training statistics "
                               "need labels")
        weight, bias = model.head_weight.detach().float().cpu(), model.head_bias.detach().float().cpu()
        stats = compute_train_stats(train["penultimate"], train["logits"], labels, weight, bias, val_features)
        return store.save_train_stats(root, ref.key, dataset_name, stats, weight, bias, {
            "model_name": ref.name, "model_fingerprint": ref.fingerprint, "checkpoint": ref.checkpoint,
            "sources": sources, "limit": build_kwargs.get("limit"), "rows": int(labels.numel()),
        })


def stats_problem(cache_root: Path, model: ModelRef, id_dataset: str, sources: dict[str, str]) -> str | None:
    """Why the training statistics of (``model``, ``id_dataset``) cannot be used (None when they
    can), phrased to follow "the statistics": ``"is missing"``, a failed reader check, or
    other train / val entries than ``sources`` (``split → manifest digest``) behind them."""
    if not (store.train_stats_dir(cache_root, model.key, id_dataset) / store.TRAIN_STATS_MANIFEST).is_file():
        return "is missing"
    try:
        manifest = store.load_train_stats(cache_root, model.key, id_dataset,
                                          expected_fingerprint=model.fingerprint)[3]
    except store.StaleCacheError as error:
        return "; ".join(why for _, why in error.problems) or str(error)
    if manifest.get("sources") != sources:
        return store.STATS_SOURCES_CHANGED
    return None


def _stats_outdated(root: Path, ref: ModelRef, id_dataset: str) -> bool:
    """From the manifests alone: the statistics are missing or were computed from other train /
    val entries than the cached ones (their other checks are left to the reader)."""
    try:
        manifest = store.read_manifest(store.train_stats_dir(root, ref.key, id_dataset), ref.key, id_dataset,
                                       store.TRAIN_STATS_LABEL, kind="train_stats",
                                       manifest_file=store.TRAIN_STATS_MANIFEST)
        sources = {split: store.manifest_digest(store.read_manifest(store.entry_dir(root, ref.key, id_dataset, split),
                                                                    ref.key, id_dataset, split))
                   for split in ("train", "val")}
    except store.StaleCacheError:
        return True
    return manifest.get("sources") != sources


def ensure_entries(
    model_name: str,
    id_dataset: str,
    ood_datasets: Iterable[str] = (),
    cache_root: Path | str | None = None,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 128,
    limit: int | None = None,
    num_workers: int = 0,
    with_odin: bool = True,
    odin_eps: Sequence[float] | None = None,
    odin_temperature: float | None = None,
    progress: bool = True,
    rebuild: bool = False,
    on_progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
    reuse_cached_limit: bool = False,
    checkpoint: str | None = None,
    verify: bool = True,
    model: tuple[OODModel, ModelRef] | None = None,
) -> dict[tuple[str, str], Path]:
    """Build whatever is missing or stale for (model, ID dataset, OOD datasets), by name.

    ID train / val / test entries, the training statistics, and each OOD set's test entry.
    ODIN logits go to ID val/test and OOD test entries (never train) when ``with_odin``.
    Returns ``{(dataset, split): entry directory}`` under the canonical dataset names.

    ``verify`` (what ``python -m precompute`` does): every existing entry must pass a reader's
    checks or it is rebuilt, the log saying why. Without it (the report and the app, which
    check on reading), only missing entries and entries built for another request are built.
    Entries built with another ``limit`` are rebuilt, except that with ``reuse_cached_limit``
    and ``limit=None`` the ID test entry's limit is adopted (use what is cached).
    ``checkpoint``: a local weights file for the model (its entries then live under
    ``<model>@<fingerprint>``); ``model``: the model and its :class:`ModelRef` when the caller
    has already built them. The whole benchmark is locked while this runs.
    """
    from ood_core.datasets import canonical_dataset_name, create_dataset

    id_dataset = canonical_dataset_name(id_dataset)  # unknown names fail now, before any work
    ood_list = [name for name in dict.fromkeys(canonical_dataset_name(n) for n in ood_datasets) if name != id_dataset]
    eps, temperature = _odin_settings(odin_eps, odin_temperature)
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    log = log or _stderr
    net, ref = model if model is not None else load_model(model_name, checkpoint, root)
    common = dict(device=device, batch_size=batch_size, limit=limit, num_workers=num_workers, odin_eps=eps,
                  odin_temperature=temperature, progress=progress, on_progress=on_progress, model_name=ref.name,
                  checkpoint=ref.checkpoint, log=log)
    with build_lock(store.train_stats_dir(root, ref.key, id_dataset) / BENCHMARK_LOCK,
                    f"benchmark {ref.key}/{id_dataset}", log):
        id_test = store.entry_dir(root, ref.key, id_dataset, "test")
        if reuse_cached_limit and limit is None and not rebuild and store.is_complete(id_test):
            try:
                common["limit"] = store.read_manifest(id_test, ref.key, id_dataset, "test").get("limit")
            except store.StaleCacheError:
                pass
        request = _Request(common["limit"], with_odin, eps, temperature)

        def unverified_ok(dataset: str, split: str, odin: bool) -> bool:
            """Without ``verify``: complete and built for this request (a reader checks the rest)."""
            entry = store.entry_dir(root, ref.key, dataset, split)
            if rebuild or not store.is_complete(entry):
                return False
            try:
                manifest = store.read_manifest(entry, ref.key, dataset, split)
            except store.StaleCacheError:
                return True  # the reader names it, with the command that repairs it
            return _Request(request.limit, odin, eps, temperature).mismatch(manifest) is None

        out: dict[tuple[str, str], Path] = {}
        # val and test first (with ODIN), so the training statistics find val already built.
        for dataset, split in [(id_dataset, "val"), (id_dataset, "test"), *((name, "test") for name in ood_list)]:
            if not verify and unverified_ok(dataset, split, with_odin):
                out[(dataset, split)] = store.entry_dir(root, ref.key, dataset, split)
                continue
            out[(dataset, split)] = build_features(net, create_dataset(dataset, split), split, root,
                                                   with_odin=with_odin, rebuild=rebuild, dataset_name=dataset,
                                                   **common)
        # The statistics follow the train / val entries (val may just have been rebuilt for ODIN).
        if verify or not unverified_ok(id_dataset, "train", False) or _stats_outdated(root, ref, id_dataset):
            build_train_stats(net, create_dataset(id_dataset, "train"), create_dataset(id_dataset, "val"), root,
                              rebuild=rebuild, dataset_name=id_dataset,
                              **{k: v for k, v in common.items() if k not in {"odin_eps", "odin_temperature"}})
        out[(id_dataset, "train")] = store.entry_dir(root, ref.key, id_dataset, "train")
    return out

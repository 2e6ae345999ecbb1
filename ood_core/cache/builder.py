"""Run a model over a dataset split once and store the result as a cache entry.

The core functions take model and dataset *objects* (:func:`build_features`,
:func:`build_train_stats`); :func:`ensure_entries` is the name-based front door used by
``python -m precompute``, the report CLI and the app. Builds are resumable: results are
written as atomic chunks (one per ``chunk_batches`` batches), an interrupted build keeps
them, and the next run with the same plan computes only the missing chunks.
"""
from __future__ import annotations

import hashlib
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
from ood_core.datasets.base import ImageDataset, TransformedDataset, collate_skip_corrupt
from ood_core.models.base import OODModel
from ood_core.registry import OODLensError

LOGIT_TOLERANCE = 1e-4
DEFAULT_CHUNK_BATCHES = 8

ProgressCallback = Callable[[str, int, int], None]


class ModelWrapperError(OODLensError):
    """The model's logits are not ``penultimate @ W.T + b``: its wrapper is wrong."""


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build; ``chunks_kept`` chunks of ``entry`` survive for the next run."""

    def __init__(self, entry: Path, chunks_kept: int) -> None:
        super().__init__(f"interrupted; {chunks_kept} chunks kept, re-run the same command to resume")
        self.entry = entry
        self.chunks_kept = chunks_kept


def _odin_defaults() -> tuple[tuple[float, ...], float]:
    """The ε grid and temperature the ODIN scorer offers (single source of truth: its module)."""
    from ood_core.scorers.odin import ODIN_EPS_GRID, ODIN_TEMPERATURE

    return tuple(ODIN_EPS_GRID), float(ODIN_TEMPERATURE)


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
) -> Path:
    """Cache ``model``'s outputs on ``dataset`` (one split) and return the entry directory.

    Stores logits (N, K), penultimate (N, D), prepool_max (N, C) when the model has it,
    labels / predictions / source_index (N,) int64 and, with ``with_odin``, odin_logits
    (E, N, K) for the ε grid. A complete entry matching the request (limit, ODIN grid) is
    reused unless ``rebuild``; one built from other weights raises
    :class:`~ood_core.cache.store.StaleCacheError`. Corrupt images are skipped and counted.
    """
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    model_name = model_name or model.name
    dataset_name = dataset_name or dataset.info.name
    default_eps, default_temperature = _odin_defaults()
    eps = tuple(float(e) for e in (odin_eps if odin_eps is not None else default_eps))
    temperature = float(odin_temperature if odin_temperature is not None else default_temperature)
    request = _Request(limit, with_odin, eps, temperature)
    entry = store.entry_dir(root, model_name, dataset_name, split)
    fingerprint = model.fingerprint()

    if rebuild:
        store.remove_chunks(entry)
        (entry / store.MANIFEST_FILE).unlink(missing_ok=True)
    elif store.is_complete(entry):
        manifest = store.read_manifest(entry, model_name, dataset_name, split)
        if manifest.get("model_fingerprint") != fingerprint:
            raise store.StaleCacheError(
                f"cache entry {model_name}/{dataset_name}/{split} was built from other weights; rebuild it "
                f"with `{store.rebuild_command(model_name, dataset_name, split)}`")
        if request.mismatch(manifest) is None:
            return entry

    run_device = store.resolve_device(device)
    indices = subset_indices(dataset, limit)
    if not indices:
        raise OODLensError(f"dataset {dataset_name} split {split} has no images")
    per_chunk = batch_size * chunk_batches
    n_chunks = -(-len(indices) // per_chunk)
    plan = {
        "model": model_name, "model_fingerprint": fingerprint, "dataset": dataset_name,
        "dataset_fingerprint": dataset.fingerprint(), "split": split, "limit": limit,
        "rows_requested": len(indices), "batch_size": batch_size, "chunk_batches": chunk_batches,
        "indices_sha": hashlib.sha256(str(indices).encode()).hexdigest()[:16],
        "with_odin": with_odin, "odin_eps": list(eps) if with_odin else [],
        "odin_temperature": temperature, "transform": model.preprocessing.describe(),
    }
    done = set(store.prepare_chunks(entry, plan))
    todo = [c for c in range(n_chunks) if c not in done]
    desc = f"{model_name} / {dataset_name} / {split}"
    total = len(indices)
    done_items = sum(min(per_chunk, total - c * per_chunk) for c in done)

    if todo:
        _run_chunks(model, dataset, entry, indices, todo, per_chunk, total, done_items, desc,
                    device=run_device, batch_size=batch_size, num_workers=num_workers, with_odin=with_odin,
                    eps=eps, temperature=temperature, progress=progress, on_progress=on_progress,
                    model_name=model_name)
    elif on_progress is not None:
        on_progress(desc, total, total)

    tensors, skipped = _concatenate(store.read_chunks(entry, n_chunks))
    if tensors is None:
        raise OODLensError(f"dataset {dataset_name} split {split}: none of its {total} images could be read")
    if skipped:
        shown = ", ".join(str(i) for i in skipped[: store.MAX_REPORTED_SKIPS])
        more = " ..." if len(skipped) > store.MAX_REPORTED_SKIPS else ""
        print(f"{desc}: skipped {len(skipped)} unreadable images: {shown}{more}", file=sys.stderr)
    manifest = {
        "model": model_name, "model_fingerprint": fingerprint, "dataset": dataset_name,
        "dataset_fingerprint": plan["dataset_fingerprint"], "split": split,
        "transform": plan["transform"], "limit": limit,
        "skipped_corrupt": {"count": len(skipped), "indices": skipped[: store.MAX_REPORTED_SKIPS]},
        "odin_eps": list(eps) if with_odin else [], "odin_temperature": temperature,
        "class_names": list(model.class_names), "num_classes": model.num_classes,
        "feature_dim": model.feature_dim,
    }
    store.write_entry(entry, tensors, manifest)
    return entry


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
    **build_kwargs,
) -> Path:
    """Ensure the ID train (and val) entries exist, then compute and store the training
    statistics of :mod:`ood_core.train_stats` with the head. Returns their directory.

    ``build_kwargs`` go to :func:`build_features` (device, batch_size, limit, progress, ...).
    Statistics are recomputed when either feature entry was rebuilt since. ``rebuild``
    rebuilds the train entry and the statistics; the val entry is only built when missing.
    """
    from ood_core.train_stats import compute_train_stats

    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    model_name = model_name or model.name
    dataset_name = dataset_name or train_dataset.info.name
    build_kwargs = {**build_kwargs, "with_odin": False}
    train_entry = build_features(model, train_dataset, "train", root, rebuild=rebuild, model_name=model_name,
                                 dataset_name=dataset_name, **build_kwargs)
    sources = {"train": store.manifest_digest(store.read_manifest(train_entry, model_name, dataset_name, "train"))}
    val_entry = None
    if val_dataset is not None:
        val_entry = store.entry_dir(root, model_name, dataset_name, "val")
        # Any complete val entry serves (ensure_entries builds it first, with ODIN logits).
        if not store.is_complete(val_entry):
            build_features(model, val_dataset, "val", root, model_name=model_name,
                           dataset_name=dataset_name, **build_kwargs)
        sources["val"] = store.manifest_digest(store.read_manifest(val_entry, model_name, dataset_name, "val"))

    fingerprint = model.fingerprint()
    folder = store.train_stats_dir(root, model_name, dataset_name)
    if not rebuild and (folder / store.TRAIN_STATS_MANIFEST).is_file():
        try:
            manifest = store.read_manifest(folder, model_name, dataset_name, "train", kind="train_stats",
                                           manifest_file=store.TRAIN_STATS_MANIFEST)
        except store.StaleCacheError:
            manifest = {}
        if manifest.get("sources") == sources and manifest.get("model_fingerprint") == fingerprint:
            return folder

    train, _ = store.load_entry(train_entry, model_name, dataset_name, "train")
    val_features = store.load_entry(val_entry, model_name, dataset_name, "val")[0]["penultimate"] \
        if val_entry is not None else None
    labels = train["labels"]
    if bool((labels < 0).any()):
        raise OODLensError(f"dataset {dataset_name} train split has unlabeled images; training statistics need labels")
    weight, bias = model.head_weight.detach().float().cpu(), model.head_bias.detach().float().cpu()
    stats = compute_train_stats(train["penultimate"], train["logits"], labels, weight, bias, val_features)
    return store.save_train_stats(root, model_name, dataset_name, stats, weight, bias, {
        "model_fingerprint": fingerprint, "sources": sources,
        "limit": build_kwargs.get("limit"), "rows": int(labels.numel()),
    })


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
    check_fingerprint: bool = True,
    log: Callable[[str], None] | None = None,
    reuse_cached_limit: bool = False,
    checkpoint: str | None = None,
) -> dict[tuple[str, str], Path]:
    """Build whatever is missing for (model, ID dataset, OOD datasets), by name.

    ID train / val / test entries, the training statistics, and each OOD set's test entry.
    ODIN logits go to ID val/test and OOD test entries (never train) when ``with_odin``.
    Returns ``{(dataset, split): entry directory}``. The model is only constructed when
    something must be built, or to check fingerprints (``check_fingerprint``).
    Entries built with another ``limit`` are rebuilt, except that with
    ``reuse_cached_limit`` and ``limit=None`` the ID test entry's limit is adopted (use
    what is cached; the report CLI and the app do this). ``checkpoint`` is a local weights
    file for the model (its fingerprint then differs from the default weights' cache).
    """
    from ood_core.datasets import create_dataset, dataset_info
    from ood_core.models import create_model

    for name in (id_dataset, *ood_datasets):  # unknown names fail now, before any work
        dataset_info(name)
    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    log = log or (lambda message: print(message, file=sys.stderr))
    ood_list = [name for name in dict.fromkeys(ood_datasets) if name != id_dataset]
    default_eps, default_temperature = _odin_defaults()
    eps = tuple(float(e) for e in (odin_eps if odin_eps is not None else default_eps))
    temperature = float(odin_temperature if odin_temperature is not None else default_temperature)
    id_test = store.entry_dir(root, model_name, id_dataset, "test")
    if reuse_cached_limit and limit is None and not rebuild and store.is_complete(id_test):
        limit = store.read_manifest(id_test, model_name, id_dataset, "test").get("limit")
    wanted = [(id_dataset, "train", False), (id_dataset, "val", with_odin), (id_dataset, "test", with_odin)]
    wanted += [(name, "test", with_odin) for name in ood_list]

    def needs_build(dataset: str, split: str, odin: bool) -> bool:
        entry = store.entry_dir(root, model_name, dataset, split)
        if rebuild or not store.is_complete(entry):
            return True
        manifest = store.read_manifest(entry, model_name, dataset, split)
        return _Request(limit, odin, eps, temperature).mismatch(manifest) is not None

    stats_folder = store.train_stats_dir(root, model_name, id_dataset)
    missing = [w for w in wanted if needs_build(*w)]
    if not missing and not check_fingerprint and (stats_folder / store.TRAIN_STATS_MANIFEST).is_file():
        return {(d, s): store.entry_dir(root, model_name, d, s) for d, s, _ in wanted}

    model = create_model(model_name, **({"checkpoint": checkpoint} if checkpoint else {}))
    common = dict(device=device, batch_size=batch_size, limit=limit, num_workers=num_workers,
                  odin_eps=eps, odin_temperature=temperature, progress=progress, on_progress=on_progress,
                  model_name=model_name)
    if check_fingerprint:
        fingerprint = model.fingerprint()
        for dataset, split, _ in wanted:
            entry = store.entry_dir(root, model_name, dataset, split)
            if not rebuild and store.is_complete(entry):
                manifest = store.read_manifest(entry, model_name, dataset, split)
                if manifest.get("model_fingerprint") != fingerprint:
                    raise store.StaleCacheError(
                        f"cache entry {model_name}/{dataset}/{split} was built from other weights; rebuild it "
                        f"with `{store.rebuild_command(model_name, dataset, split)}`")
    for dataset, split, _ in missing:
        log(f"building {model_name} / {dataset} / {split}")
    out: dict[tuple[str, str], Path] = {}
    # val and test first (with ODIN), so train stats find val already built.
    for dataset, split, odin in wanted[1:]:
        out[(dataset, split)] = build_features(model, create_dataset(dataset, split), split, root,
                                               with_odin=odin, rebuild=rebuild,
                                               dataset_name=dataset, **common)
    build_train_stats(model, create_dataset(id_dataset, "train"), create_dataset(id_dataset, "val"), root,
                      rebuild=rebuild, dataset_name=id_dataset, **common)
    out[(id_dataset, "train")] = store.entry_dir(root, model_name, id_dataset, "train")
    return out

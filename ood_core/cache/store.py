"""The on-disk feature cache: format, manifests, atomic chunked writes, loading, validation.

Layout (docs/architecture.md)::

    <root>/<model>/<dataset>/<split>/features.safetensors   logits, penultimate, prepool_max?,
                                                             labels, predictions, source_index,
                                                             odin_logits? (E, N, K)
    <root>/<model>/<dataset>/<split>/manifest.json          written LAST: no manifest = incomplete
    <root>/<model>/<dataset>/<split>/chunks/00000.safetensors  partial results while building
    <root>/<model>/<id dataset>/train_stats.{safetensors,json}

Every write goes to a temporary file in the same directory, is fsync'ed, then
``os.replace``'d into place, so a crash never leaves a half-written file under a final
name. No pickle anywhere: tensors are safetensors, metadata is JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ood_core import __version__
from ood_core.registry import OODLensError
from ood_core.scorers.base import FeatureSet

FORMAT_VERSION = 1
FEATURES_FILE = "features.safetensors"
MANIFEST_FILE = "manifest.json"
CHUNKS_DIR = "chunks"
CHUNK_PLAN_FILE = "plan.json"
TRAIN_STATS_FILE = "train_stats.safetensors"
TRAIN_STATS_MANIFEST = "train_stats.json"
TOOL = f"ood-lens {__version__}"

# Tensors every features entry holds, and the optional ones.
REQUIRED_TENSORS = ("logits", "penultimate", "labels", "predictions", "source_index")
OPTIONAL_TENSORS = ("prepool_max", "odin_logits")
MAX_REPORTED_SKIPS = 20


class StaleCacheError(OODLensError):
    """A cache entry is missing, incomplete, corrupt, of another format, or built from other weights."""


def rebuild_command(model: str, dataset: str, split: str) -> str:
    """The shell command that rebuilds one entry (quoted in every staleness message)."""
    return f"python -m precompute --model {model} --dataset {dataset} --split {split} --rebuild"


def _stale(model: str, dataset: str, split: str, why: str) -> StaleCacheError:
    return StaleCacheError(f"cache entry {model}/{dataset}/{split} {why}; rebuild it with "
                           f"`{rebuild_command(model, dataset, split)}`")


# -- paths ------------------------------------------------------------------------
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def safe_name(name: str) -> str:
    """A directory name for ``name``: itself when it is filesystem-safe, else a sanitised
    form plus a short hash (``folder:/data/x`` → ``folder_data_x-1a2b3c4d``) so two
    different names never share a directory."""
    if _SAFE.match(name) and name not in {".", ".."}:
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[-60:]
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def entry_dir(cache_root: Path | str, model: str, dataset: str, split: str) -> Path:
    """Directory of one (model, dataset, split) features entry."""
    return Path(cache_root) / safe_name(model) / safe_name(dataset) / safe_name(split)


def train_stats_dir(cache_root: Path | str, model: str, id_dataset: str) -> Path:
    """Directory holding ``train_stats.{safetensors,json}`` for (model, ID dataset)."""
    return Path(cache_root) / safe_name(model) / safe_name(id_dataset)


# -- atomic writes ------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    try:  # makes the rename itself durable; not supported on every filesystem
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_replace(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, fsync the result, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    text = json.dumps(payload, indent=2, sort_keys=False)
    _atomic_replace(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def atomic_save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> None:
    """Write named tensors as one safetensors file atomically (tensors are copied to CPU)."""
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    _atomic_replace(path, lambda tmp: save_file(cpu, str(tmp)))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- chunks (resumable builds) ---------------------------------------------------------
def chunk_path(entry: Path, index: int) -> Path:
    return entry / CHUNKS_DIR / f"{index:05d}.safetensors"


def existing_chunks(entry: Path) -> list[int]:
    """Indices of the chunks already written (complete, thanks to the atomic writes)."""
    folder = entry / CHUNKS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob("[0-9]*.safetensors") if p.stem.isdigit())


def prepare_chunks(entry: Path, plan: Mapping[str, Any]) -> list[int]:
    """Keep the chunks of an interrupted build of the *same* plan (model, samples, batch
    layout, ODIN grid); discard them otherwise. Returns the indices that can be reused."""
    folder = entry / CHUNKS_DIR
    plan_file = folder / CHUNK_PLAN_FILE
    if plan_file.is_file():
        try:
            same = json.loads(plan_file.read_text(encoding="utf-8")) == json.loads(json.dumps(plan))
        except (OSError, ValueError):
            same = False
        if same:
            return existing_chunks(entry)
    if folder.exists():
        shutil.rmtree(folder)
    atomic_write_json(plan_file, plan)
    return []


def write_chunk(entry: Path, index: int, tensors: Mapping[str, Tensor]) -> None:
    atomic_save_tensors(chunk_path(entry, index), tensors)


def read_chunks(entry: Path, count: int) -> list[dict[str, Tensor]]:
    """Chunks ``0 .. count-1`` in order; a missing one means the build is not finished."""
    chunks = []
    for index in range(count):
        path = chunk_path(entry, index)
        if not path.is_file():
            raise OODLensError(f"chunk {path} is missing; re-run the build to resume")
        chunks.append(load_file(str(path), device="cpu"))
    return chunks


def remove_chunks(entry: Path) -> None:
    shutil.rmtree(entry / CHUNKS_DIR, ignore_errors=True)


# -- features entries -------------------------------------------------------------------
def describe_tensors(tensors: Mapping[str, Tensor]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(shapes, dtypes) as the manifest records them."""
    shapes = {name: list(t.shape) for name, t in tensors.items()}
    dtypes = {name: str(t.dtype).removeprefix("torch.") for name, t in tensors.items()}
    return shapes, dtypes


def write_entry(entry: Path, tensors: Mapping[str, Tensor], manifest: Mapping[str, Any]) -> None:
    """Write ``features.safetensors`` then the manifest (last: it marks the entry complete),
    then drop the chunks. ``manifest`` gets ``shapes``, ``dtypes``, ``rows``, format fields."""
    missing = [name for name in REQUIRED_TENSORS if name not in tensors]
    if missing:
        raise ValueError(f"features entry lacks tensors {missing}")
    shapes, dtypes = describe_tensors(tensors)
    full = {"format_version": FORMAT_VERSION, "kind": "features", **manifest,
            "rows": int(tensors["logits"].shape[0]), "shapes": shapes, "dtypes": dtypes,
            "created": manifest.get("created") or _now(), "build_id": uuid.uuid4().hex, "tool": TOOL}
    (entry / MANIFEST_FILE).unlink(missing_ok=True)  # an old manifest must not vouch for new tensors
    atomic_save_tensors(entry / FEATURES_FILE, tensors)
    atomic_write_json(entry / MANIFEST_FILE, full)
    remove_chunks(entry)


def is_complete(entry: Path) -> bool:
    """True when the entry has both its tensors and its manifest (written last)."""
    return (entry / MANIFEST_FILE).is_file() and (entry / FEATURES_FILE).is_file()


def read_manifest(entry: Path, model: str = "?", dataset: str = "?", split: str = "?",
                  *, kind: str = "features", manifest_file: str = MANIFEST_FILE) -> dict[str, Any]:
    """The manifest of an entry; :class:`StaleCacheError` when missing, unreadable or of
    another format version / kind."""
    path = entry / manifest_file
    if not path.is_file():
        raise _stale(model, dataset, split, f"is missing or incomplete (no {manifest_file} in {entry})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _stale(model, dataset, split, f"has an unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise _stale(model, dataset, split, "has an unreadable manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise _stale(model, dataset, split,
                     f"has cache format version {version!r}, this version reads {FORMAT_VERSION}")
    if manifest.get("kind") != kind:
        raise _stale(model, dataset, split, f"is of kind {manifest.get('kind')!r}, expected {kind!r}")
    return manifest


def _check_fingerprint(manifest: Mapping[str, Any], expected: str | None, model: str, dataset: str,
                       split: str) -> None:
    if expected is not None and manifest.get("model_fingerprint") != expected:
        raise _stale(model, dataset, split,
                     f"was built from other weights (fingerprint {manifest.get('model_fingerprint')}, "
                     f"the model now registered has {expected})")


def _check_tensors(tensors: Mapping[str, Tensor], manifest: Mapping[str, Any], model: str, dataset: str,
                   split: str) -> None:
    shapes, dtypes = describe_tensors(tensors)
    if shapes != manifest.get("shapes") or dtypes != manifest.get("dtypes"):
        raise _stale(model, dataset, split, "has tensors that do not match its manifest (shapes/dtypes)")
    rows = manifest.get("rows")
    if "logits" in tensors and rows != tensors["logits"].shape[0]:
        raise _stale(model, dataset, split, f"has {tensors['logits'].shape[0]} rows, its manifest says {rows}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load_to_device(path: Path, device: torch.device) -> dict[str, Tensor]:
    """mmap'ed read straight onto ``device`` (one move), stored dtypes kept."""
    return load_file(str(path), device=str(device))


def _upcast(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # Upcast on the device the tensors already live on: fp16 → fp32 on the host dominates load time.
    return {name: t.float() if t.is_floating_point() and t.dtype != torch.float32 else t
            for name, t in tensors.items()}


def load_entry(entry: Path, model: str = "?", dataset: str = "?", split: str = "?", *,
               device: str | torch.device = "cpu",
               expected_fingerprint: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors on ``device``, manifest) of a features entry, validated.

    Raises :class:`StaleCacheError` for a missing manifest or tensor file, a format
    mismatch, tensors that do not match the manifest, or (when ``expected_fingerprint``
    is given) a model fingerprint different from it.
    """
    manifest = read_manifest(entry, model, dataset, split)
    _check_fingerprint(manifest, expected_fingerprint, model, dataset, split)
    path = entry / FEATURES_FILE
    if not path.is_file():
        raise _stale(model, dataset, split, f"has a manifest but no {FEATURES_FILE}")
    try:
        tensors = _load_to_device(path, resolve_device(device))
    except Exception as exc:  # truncated / foreign file
        raise _stale(model, dataset, split, f"has an unreadable {FEATURES_FILE} ({exc})") from None
    _check_tensors(tensors, manifest, model, dataset, split)
    return _upcast(tensors), manifest


def feature_set(tensors: Mapping[str, Tensor], manifest: Mapping[str, Any]) -> FeatureSet:
    """A :class:`FeatureSet` from loaded entry tensors and its manifest."""
    return FeatureSet(
        logits=tensors["logits"],
        penultimate=tensors["penultimate"],
        labels=tensors["labels"],
        prepool_max=tensors.get("prepool_max"),
        odin_logits=tensors.get("odin_logits"),
        odin_eps=tuple(float(e) for e in manifest.get("odin_eps") or ()) if "odin_logits" in tensors else (),
        odin_temperature=float(manifest.get("odin_temperature") or 1000.0),
    )


def load_features(cache_root: Path | str, model: str, dataset: str, split: str, *,
                  device: str | torch.device = "cpu",
                  expected_fingerprint: str | None = None) -> FeatureSet:
    """The cached :class:`FeatureSet` of (model, dataset, split) on ``device``."""
    tensors, manifest = load_entry(entry_dir(cache_root, model, dataset, split), model, dataset, split,
                                   device=device, expected_fingerprint=expected_fingerprint)
    return feature_set(tensors, manifest)


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """16 hex chars identifying one written entry (changes whenever it is rebuilt)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


# -- training statistics --------------------------------------------------------------------
def save_train_stats(cache_root: Path | str, model: str, id_dataset: str, stats: Mapping[str, Tensor],
                     head_weight: Tensor, head_bias: Tensor, manifest: Mapping[str, Any]) -> Path:
    """Store the statistics of :mod:`ood_core.train_stats` with the head (``head_weight``,
    ``head_bias``) as ``train_stats.safetensors`` + ``train_stats.json`` (written last)."""
    folder = train_stats_dir(cache_root, model, id_dataset)
    tensors = {**stats, "head_weight": head_weight, "head_bias": head_bias}
    shapes, dtypes = describe_tensors(tensors)
    full = {"format_version": FORMAT_VERSION, "kind": "train_stats", "model": model, "dataset": id_dataset,
            **manifest, "stats": sorted(stats), "shapes": shapes, "dtypes": dtypes,
            "created": _now(), "build_id": uuid.uuid4().hex, "tool": TOOL}
    (folder / TRAIN_STATS_MANIFEST).unlink(missing_ok=True)
    atomic_save_tensors(folder / TRAIN_STATS_FILE, tensors)
    atomic_write_json(folder / TRAIN_STATS_MANIFEST, full)
    return folder


def load_train_stats(cache_root: Path | str, model: str, id_dataset: str, *,
                     device: str | torch.device = "cpu", expected_fingerprint: str | None = None
                     ) -> tuple[dict[str, Tensor], Tensor, Tensor, dict[str, Any]]:
    """(stats, head_weight (K, D), head_bias (K,), manifest), validated like a features entry."""
    folder = train_stats_dir(cache_root, model, id_dataset)
    manifest = read_manifest(folder, model, id_dataset, "train", kind="train_stats",
                             manifest_file=TRAIN_STATS_MANIFEST)
    _check_fingerprint(manifest, expected_fingerprint, model, id_dataset, "train")
    path = folder / TRAIN_STATS_FILE
    if not path.is_file():
        raise _stale(model, id_dataset, "train", f"has a manifest but no {TRAIN_STATS_FILE}")
    try:
        tensors = _load_to_device(path, resolve_device(device))
    except Exception as exc:
        raise _stale(model, id_dataset, "train", f"has an unreadable {TRAIN_STATS_FILE} ({exc})") from None
    shapes, _ = describe_tensors(tensors)
    if shapes != manifest.get("shapes"):
        raise _stale(model, id_dataset, "train", "has training statistics that do not match their manifest")
    tensors = _upcast(tensors)
    head_weight = tensors.pop("head_weight")
    head_bias = tensors.pop("head_bias")
    return tensors, head_weight, head_bias, manifest


# -- listing ------------------------------------------------------------------------------
def list_cached(cache_root: Path | str) -> dict[str, dict[str, list[str]]]:
    """Complete entries under ``cache_root``: ``{model: {dataset: [splits]}}``, names as
    recorded in the manifests, sorted."""
    found: dict[str, dict[str, list[str]]] = {}
    root = Path(cache_root)
    if not root.is_dir():
        return found
    for manifest_path in sorted(root.glob(f"*/*/*/{MANIFEST_FILE}")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict) or manifest.get("kind") != "features":
            continue
        if not (manifest_path.parent / FEATURES_FILE).is_file():
            continue
        model, dataset, split = manifest.get("model"), manifest.get("dataset"), manifest.get("split")
        if not (model and dataset and split):
            continue
        found.setdefault(model, {}).setdefault(dataset, []).append(split)
    order = {"train": 0, "val": 1, "test": 2}
    return {m: {d: sorted(s, key=lambda x: (order.get(x, 9), x)) for d, s in sorted(ds.items())}
            for m, ds in sorted(found.items())}

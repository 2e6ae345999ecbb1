"""Cache manifests: the format's names, the checks every read makes, and the staleness error.

Each entry's manifest (strict JSON, written after its tensor file) records what the entry was
built from (model key and fingerprint, dataset fingerprint, split, limit, ...), the shapes and
dtypes of its tensors and the sha256 of its tensor file. A read checks the entry's identity,
the fingerprints it is given, the checksum, the tensors' shapes and that they are finite, and
refuses a stale entry with :class:`StaleCacheError`. :mod:`.store` writes and loads entries,
:mod:`.stats_store` the training statistics.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ood_core import __version__
from ood_core.registry import OODLensError

FORMAT_VERSION = 2  # 2: sha256 checksums, model keys and dataset fingerprints checked on read
FEATURES_FILE = "features.safetensors"
MANIFEST_FILE = "manifest.json"
TRAIN_STATS_FILE = "train_stats.safetensors"
TRAIN_STATS_MANIFEST = "train_stats.json"
TRAIN_STATS_LABEL = "train_stats"  # the "split" that names training statistics in messages
STATS_SOURCES_CHANGED = "were computed from other train / val entries than the cached ones"
TOOL = f"ood-lens {__version__}"


class StaleCacheError(OODLensError):
    """A cache entry is missing, incomplete, corrupt, of another format, or built from other
    weights or other images. ``problems``: ``(entry label, why)`` for each entry concerned; the
    message names them and the one command that rebuilds them."""

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


def rebuild_command(model: str, dataset: str, split: str) -> str:
    """The shell command that rebuilds one entry (quoted in single-entry staleness messages)."""
    return f"python -m precompute --model {model} --dataset {dataset} --split {split} --rebuild"


def stale(model: str, dataset: str, split: str, why: str) -> StaleCacheError:
    """The error for one entry ``model/dataset/split`` that ``why`` (a phrase following its label)."""
    label = f"{model}/{dataset}/{split}"
    return StaleCacheError(f"cache entry {label} {why}; rebuild it with `{rebuild_command(model, dataset, split)}`",
                           problems=((label, why),))


def problems_text(error: StaleCacheError) -> str:
    """The ``why`` phrases of ``error``, joined (its message when it names none)."""
    return "; ".join(why for _, why in error.problems) or str(error)


@dataclass(frozen=True)
class Expected:
    """What a cache entry must have been built from to be read: the weights' fingerprint and the
    dataset's current fingerprint (None: not checked). Its model key, dataset and split are
    checked against the names the entry is read under."""

    model_fingerprint: str | None = None
    dataset_fingerprint: str | None = None


def now() -> str:
    """The current UTC time as the manifests record it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """16 hex chars identifying one written entry (changes whenever it is rebuilt)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


# -- checksums ------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    """sha256 of a file, memoised per process by its identity (any write changes ctime)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 (hex) of the file at ``path``."""
    stat = path.stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def check_checksum(path: Path, manifest: Mapping[str, Any], model: str, dataset: str, split: str) -> None:
    """``path`` matches the sha256 its manifest records."""
    recorded = (manifest.get("checksums") or {}).get(path.name)
    if recorded is None:
        raise stale(model, dataset, split, f"records no checksum for {path.name}")
    if file_sha256(path) != recorded:
        raise stale(model, dataset, split, f"has a {path.name} that does not match its checksum (changed on disk)")


# -- tensors ----------------------------------------------------------------------------------
def describe_tensors(tensors: Mapping[str, Tensor]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(shapes, dtypes) as the manifest records them."""
    shapes = {name: list(t.shape) for name, t in tensors.items()}
    dtypes = {name: str(t.dtype).removeprefix("torch.") for name, t in tensors.items()}
    return shapes, dtypes


def non_finite_counts(tensors: Mapping[str, Tensor]) -> dict[str, int]:
    """``{name: count}`` of the NaN / ±inf values in each floating-point tensor that has any."""
    counts = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            counts[name] = int((~torch.isfinite(tensor)).sum())
    return counts


def check_tensors(tensors: Mapping[str, Tensor], manifest: Mapping[str, Any], model: str, dataset: str,
                  split: str) -> None:
    """Loaded tensors match the manifest's shapes, dtypes and rows and are finite."""
    shapes, dtypes = describe_tensors(tensors)
    if shapes != manifest.get("shapes") or dtypes != manifest.get("dtypes"):
        raise stale(model, dataset, split, "has tensors that do not match its manifest (shapes/dtypes)")
    rows = manifest.get("rows")
    if "logits" in tensors and rows != tensors["logits"].shape[0]:
        raise stale(model, dataset, split, f"has {tensors['logits'].shape[0]} rows, its manifest says {rows}")
    for name, bad in non_finite_counts(tensors).items():
        raise stale(model, dataset, split, f"holds {bad} non-finite value{'s' if bad != 1 else ''} in {name}")


# -- reading and checking a manifest ---------------------------------------------------------------
def read_manifest(entry: Path, model: str = "?", dataset: str = "?", split: str = "?",
                  *, kind: str = "features", manifest_file: str = MANIFEST_FILE) -> dict[str, Any]:
    """The manifest of an entry; :class:`StaleCacheError` when missing, unreadable or of
    another format version / kind."""
    path = entry / manifest_file
    if not path.is_file():
        raise stale(model, dataset, split, f"is missing or incomplete (no {manifest_file} in {entry})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise stale(model, dataset, split, f"has an unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise stale(model, dataset, split, "has an unreadable manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise stale(model, dataset, split,
                    f"has cache format version {version!r}, this version reads {FORMAT_VERSION}")
    if manifest.get("kind") != kind:
        raise stale(model, dataset, split, f"is of kind {manifest.get('kind')!r}, expected {kind!r}")
    return manifest


def check_provenance(manifest: Mapping[str, Any], expected: Expected | None, model: str, dataset: str,
                     split: str) -> None:
    """The entry is what the caller asks for: its recorded identity and fingerprints match."""
    recorded = (manifest.get("model_key", manifest.get("model")), manifest.get("dataset"),
                manifest.get("split") if manifest.get("kind") == "features" else TRAIN_STATS_LABEL)
    if "?" not in (model, dataset, split) and recorded != (model, dataset, split):
        raise stale(model, dataset, split, f"holds the manifest of {'/'.join(map(str, recorded))}")
    if expected is None:
        return
    if expected.model_fingerprint is not None and manifest.get("model_fingerprint") != expected.model_fingerprint:
        raise stale(model, dataset, split,
                    f"was built from other weights (fingerprint {manifest.get('model_fingerprint')}, "
                    f"the model now has {expected.model_fingerprint})")
    if expected.dataset_fingerprint is not None and manifest.get("dataset_fingerprint") != expected.dataset_fingerprint:
        raise stale(model, dataset, split, "was built from other images (the dataset's images changed since)")


# -- listing ------------------------------------------------------------------------------
def list_cached(cache_root: Path | str) -> dict[str, dict[str, list[str]]]:
    """Complete entries under ``cache_root``: ``{model key: {dataset: [splits]}}``, names as
    recorded in the manifests (``name@fingerprint`` for another checkpoint), sorted."""
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
        model = manifest.get("model_key", manifest.get("model"))
        dataset, split = manifest.get("dataset"), manifest.get("split")
        if not (model and dataset and split):
            continue
        found.setdefault(model, {}).setdefault(dataset, []).append(split)
    order = {"train": 0, "val": 1, "test": 2}
    return {m: {d: sorted(s, key=lambda x: (order.get(x, 9), x)) for d, s in sorted(ds.items())}
            for m, ds in sorted(found.items())}

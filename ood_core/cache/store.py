"""The on-disk feature cache: format, manifests, atomic chunked writes, loading, validation.

Layout (docs/architecture.md)::

    <root>/<model>/<dataset>/<split>/features.safetensors   logits, penultimate, prepool_max?,
                                                             labels, predictions, source_index,
                                                             odin_logits? (E, N, K)
    <root>/<model>/<dataset>/<split>/manifest.json          written LAST: no manifest = incomplete
    <root>/<model>/<dataset>/<split>/chunks/00000.safetensors  partial results while building
    <root>/<model>/<id dataset>/train_stats.{safetensors,json}

``<model>`` is the model's registered name for its own weights and ``<name>@<fingerprint>``
for another checkpoint (``--checkpoint``), so two checkpoints never share an entry.

Every write goes to a temporary file in the same directory, is fsync'ed, then
``os.replace``'d into place, so a crash never leaves a half-written file under a final
name; each manifest records the sha256 of its tensor file. Every read checks the entry's
identity (model, dataset, split), the model and dataset fingerprints it is given, the
checksum, the tensors' shapes and that they are finite, and refuses a stale entry with
:class:`StaleCacheError`. No pickle anywhere: tensors are safetensors, metadata strict JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ood_core import __version__
from ood_core.registry import OODLensError
from ood_core.scorers.base import FeatureSet

FORMAT_VERSION = 2  # 2: sha256 checksums, model keys and dataset fingerprints checked on read
FEATURES_FILE = "features.safetensors"
MANIFEST_FILE = "manifest.json"
CHUNKS_DIR = "chunks"
CHUNK_PLAN_FILE = "plan.json"
TRAIN_STATS_FILE = "train_stats.safetensors"
TRAIN_STATS_MANIFEST = "train_stats.json"
TRAIN_STATS_LABEL = "train_stats"  # the "split" that names training statistics in messages
STATS_SOURCES_CHANGED = "were computed from other train / val entries than the cached ones"
TOOL = f"ood-lens {__version__}"

# Tensors every features entry holds, and the optional ones.
REQUIRED_TENSORS = ("logits", "penultimate", "labels", "predictions", "source_index")
OPTIONAL_TENSORS = ("prepool_max", "odin_logits")
MAX_REPORTED_SKIPS = 20


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


def _stale(model: str, dataset: str, split: str, why: str) -> StaleCacheError:
    label = f"{model}/{dataset}/{split}"
    return StaleCacheError(f"cache entry {label} {why}; rebuild it with `{rebuild_command(model, dataset, split)}`",
                           problems=((label, why),))


@dataclass(frozen=True)
class Expected:
    """What a cache entry must have been built from to be read: the weights' fingerprint and the
    dataset's current fingerprint (None: not checked). Its model key, dataset and split are
    checked against the names the entry is read under."""

    model_fingerprint: str | None = None
    dataset_fingerprint: str | None = None


# -- paths ------------------------------------------------------------------------
_SAFE = re.compile(r"^[A-Za-z0-9._@-]+$")


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


TEMP_SUFFIX = ".tmp"


def _atomic_replace(path: Path, write: Any) -> str:
    """Call ``write(tmp_path)``, fsync the result, then rename it onto ``path``; returns the
    sha256 (hex) of what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        digest = hashlib.sha256()
        with open(tmp, "rb+") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return digest.hexdigest()


def atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented strict JSON to ``path`` atomically (NaN / inf raise ``ValueError``)."""
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False)
    _atomic_replace(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def atomic_save_tensors(path: Path, tensors: Mapping[str, Tensor]) -> str:
    """Write named tensors as one safetensors file atomically (tensors are copied to CPU);
    returns the file's sha256 (hex), which the manifest records."""
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return _atomic_replace(path, lambda tmp: save_file(cpu, str(tmp)))


def remove_stale_temp_files(folder: Path) -> None:
    """Delete the temporary files an interrupted writer left in ``folder`` and its chunks.
    Call it holding the folder's build lock: then no live writer owns them."""
    for directory in (folder, folder / CHUNKS_DIR):
        if directory.is_dir():
            for leftover in directory.glob(f".*{TEMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)


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
    full["checksums"] = {FEATURES_FILE: atomic_save_tensors(entry / FEATURES_FILE, tensors)}
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


def check_provenance(manifest: Mapping[str, Any], expected: Expected | None, model: str, dataset: str,
                      split: str) -> None:
    """The entry is what the caller asks for: its recorded identity and fingerprints match."""
    recorded = (manifest.get("model_key", manifest.get("model")), manifest.get("dataset"),
                manifest.get("split") if manifest.get("kind") == "features" else TRAIN_STATS_LABEL)
    if "?" not in (model, dataset, split) and recorded != (model, dataset, split):
        raise _stale(model, dataset, split, f"holds the manifest of {'/'.join(map(str, recorded))}")
    if expected is None:
        return
    if expected.model_fingerprint is not None and manifest.get("model_fingerprint") != expected.model_fingerprint:
        raise _stale(model, dataset, split,
                     f"was built from other weights (fingerprint {manifest.get('model_fingerprint')}, "
                     f"the model now has {expected.model_fingerprint})")
    if expected.dataset_fingerprint is not None and manifest.get("dataset_fingerprint") != expected.dataset_fingerprint:
        raise _stale(model, dataset, split, "was built from other images (the dataset's images changed since)")


def _check_checksum(path: Path, manifest: Mapping[str, Any], model: str, dataset: str, split: str) -> None:
    recorded = (manifest.get("checksums") or {}).get(path.name)
    if recorded is None:
        raise _stale(model, dataset, split, f"records no checksum for {path.name}")
    if file_sha256(path) != recorded:
        raise _stale(model, dataset, split, f"has a {path.name} that does not match its checksum (changed on disk)")


def non_finite_counts(tensors: Mapping[str, Tensor]) -> dict[str, int]:
    """``{name: count}`` of the NaN / ±inf values in each floating-point tensor that has any."""
    counts = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            counts[name] = int((~torch.isfinite(tensor)).sum())
    return counts


def _check_tensors(tensors: Mapping[str, Tensor], manifest: Mapping[str, Any], model: str, dataset: str,
                   split: str) -> None:
    shapes, dtypes = describe_tensors(tensors)
    if shapes != manifest.get("shapes") or dtypes != manifest.get("dtypes"):
        raise _stale(model, dataset, split, "has tensors that do not match its manifest (shapes/dtypes)")
    rows = manifest.get("rows")
    if "logits" in tensors and rows != tensors["logits"].shape[0]:
        raise _stale(model, dataset, split, f"has {tensors['logits'].shape[0]} rows, its manifest says {rows}")
    for name, bad in non_finite_counts(tensors).items():
        raise _stale(model, dataset, split, f"holds {bad} non-finite value{'s' if bad != 1 else ''} in {name}")


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


def _load_checked(path: Path, manifest: Mapping[str, Any], device: str | torch.device, model: str, dataset: str,
                  split: str) -> dict[str, Tensor]:
    """The tensor file of an entry, after its checksum, then its shapes and finiteness, are checked."""
    if not path.is_file():
        raise _stale(model, dataset, split, f"has a manifest but no {path.name}")
    _check_checksum(path, manifest, model, dataset, split)
    try:
        tensors = _load_to_device(path, resolve_device(device))
    except Exception as exc:  # truncated / foreign file
        raise _stale(model, dataset, split, f"has an unreadable {path.name} ({exc})") from None
    _check_tensors(tensors, manifest, model, dataset, split)
    return tensors


def load_entry(entry: Path, model: str = "?", dataset: str = "?", split: str = "?", *,
               device: str | torch.device = "cpu", expected: Expected | None = None,
               expected_fingerprint: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors on ``device``, manifest) of a features entry, validated.

    ``model`` is the model key the entry lives under. Raises :class:`StaleCacheError` for a
    missing manifest or tensor file, a format mismatch, a manifest of another entry, a model or
    dataset fingerprint other than ``expected``'s (``expected_fingerprint``: the model's alone),
    a file that does not match its checksum, tensors that do not match the manifest, or
    non-finite values.
    """
    if expected is None and expected_fingerprint is not None:
        expected = Expected(model_fingerprint=expected_fingerprint)
    manifest = read_manifest(entry, model, dataset, split)
    check_provenance(manifest, expected, model, dataset, split)
    tensors = _load_checked(entry / FEATURES_FILE, manifest, device, model, dataset, split)
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
    full["checksums"] = {TRAIN_STATS_FILE: atomic_save_tensors(folder / TRAIN_STATS_FILE, tensors)}
    atomic_write_json(folder / TRAIN_STATS_MANIFEST, full)
    return folder


def load_train_stats(cache_root: Path | str, model: str, id_dataset: str, *,
                     device: str | torch.device = "cpu", expected_fingerprint: str | None = None
                     ) -> tuple[dict[str, Tensor], Tensor, Tensor, dict[str, Any]]:
    """(stats, head_weight (K, D), head_bias (K,), manifest), validated like a features entry
    (``model``: the model key; staleness messages call it ``<model>/<id dataset>/train_stats``)."""
    folder = train_stats_dir(cache_root, model, id_dataset)
    manifest = read_manifest(folder, model, id_dataset, TRAIN_STATS_LABEL, kind="train_stats",
                             manifest_file=TRAIN_STATS_MANIFEST)
    check_provenance(manifest, Expected(model_fingerprint=expected_fingerprint), model, id_dataset,
                      TRAIN_STATS_LABEL)
    tensors = _upcast(_load_checked(folder / TRAIN_STATS_FILE, manifest, device, model, id_dataset,
                                    TRAIN_STATS_LABEL))
    head_weight = tensors.pop("head_weight")
    head_bias = tensors.pop("head_bias")
    return tensors, head_weight, head_bias, manifest


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

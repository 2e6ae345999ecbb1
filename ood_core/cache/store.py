"""The on-disk feature cache: layout, atomic chunked writes, features entries, loading.

Layout (docs/architecture.md)::

    <root>/<model>/<dataset>/<split>/features.safetensors   logits, penultimate, prepool_max?,
                                                             labels, predictions, source_index,
                                                             odin_logits? (E, N, K)
    <root>/<model>/<dataset>/<split>/manifest.json          written LAST: no manifest = incomplete
    <root>/<model>/<dataset>/<split>/chunks/00000.safetensors  partial results while building
    <root>/<model>/<id dataset>/train_stats.{safetensors,json}   (:mod:`.stats_store`)

``<model>`` is the model's registered name for its own weights and ``<name>@<fingerprint>``
for another checkpoint (``--checkpoint``), so two checkpoints never share an entry.

Every write goes to a temporary file in the same directory, is fsync'ed, then
``os.replace``'d into place, so a crash never leaves a half-written file under a final
name; each manifest records the sha256 of its tensor file. Every read makes the checks of
:mod:`.manifest` (identity, fingerprints, checksum, shapes, finite values) and refuses a stale
entry with :class:`StaleCacheError`. No pickle anywhere: tensors are safetensors, metadata
strict JSON. The names of :mod:`.manifest` are importable from here too.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ood_core.cache.manifest import (  # noqa: F401 (re-exported: callers use these as store.X)
    FEATURES_FILE, FORMAT_VERSION, MANIFEST_FILE, STATS_SOURCES_CHANGED, TOOL, TRAIN_STATS_FILE, TRAIN_STATS_LABEL,
    TRAIN_STATS_MANIFEST, Expected, StaleCacheError, check_checksum, check_provenance, check_tensors, describe_tensors,
    file_sha256, list_cached, manifest_digest, non_finite_counts, now, problems_text, read_manifest, rebuild_command,
    stale)
from ood_core.registry import OODLensError
from ood_core.records import FeatureSet

CHUNKS_DIR = "chunks"
CHUNK_PLAN_FILE = "plan.json"

# Tensors every features entry holds, and the optional ones.
REQUIRED_TENSORS = ("logits", "penultimate", "labels", "predictions", "source_index")
OPTIONAL_TENSORS = ("prepool_max", "odin_logits")
MAX_REPORTED_SKIPS = 20


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
def write_entry(entry: Path, tensors: Mapping[str, Tensor], manifest: Mapping[str, Any]) -> None:
    """Write ``features.safetensors`` then the manifest (last: it marks the entry complete),
    then drop the chunks. ``manifest`` gets ``shapes``, ``dtypes``, ``rows``, format fields."""
    missing = [name for name in REQUIRED_TENSORS if name not in tensors]
    if missing:
        raise ValueError(f"features entry lacks tensors {missing}")
    shapes, dtypes = describe_tensors(tensors)
    full = {"format_version": FORMAT_VERSION, "kind": "features", **manifest,
            "rows": int(tensors["logits"].shape[0]), "shapes": shapes, "dtypes": dtypes,
            "created": manifest.get("created") or now(), "build_id": uuid.uuid4().hex, "tool": TOOL}
    (entry / MANIFEST_FILE).unlink(missing_ok=True)  # an old manifest must not vouch for new tensors
    full["checksums"] = {FEATURES_FILE: atomic_save_tensors(entry / FEATURES_FILE, tensors)}
    atomic_write_json(entry / MANIFEST_FILE, full)
    remove_chunks(entry)


def is_complete(entry: Path) -> bool:
    """True when the entry has both its tensors and its manifest (written last)."""
    return (entry / MANIFEST_FILE).is_file() and (entry / FEATURES_FILE).is_file()


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load_to_device(path: Path, device: torch.device) -> dict[str, Tensor]:
    """mmap'ed read straight onto ``device`` (one move), stored dtypes kept."""
    return load_file(str(path), device=str(device))


def upcast(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # Upcast on the device the tensors already live on: fp16 → fp32 on the host dominates load time.
    return {name: t.float() if t.is_floating_point() and t.dtype != torch.float32 else t
            for name, t in tensors.items()}


def load_checked(path: Path, manifest: Mapping[str, Any], device: str | torch.device, model: str, dataset: str,
                  split: str) -> dict[str, Tensor]:
    """The tensor file of an entry, after its checksum, then its shapes and finiteness, are checked."""
    if not path.is_file():
        raise stale(model, dataset, split, f"has a manifest but no {path.name}")
    check_checksum(path, manifest, model, dataset, split)
    try:
        tensors = _load_to_device(path, resolve_device(device))
    except Exception as exc:  # truncated / foreign file
        raise stale(model, dataset, split, f"has an unreadable {path.name} ({exc})") from None
    check_tensors(tensors, manifest, model, dataset, split)
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
    tensors = load_checked(entry / FEATURES_FILE, manifest, device, model, dataset, split)
    return upcast(tensors), manifest


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

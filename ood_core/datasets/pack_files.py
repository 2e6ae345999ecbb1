"""The benchmark pack's files (``ood_core.paths.benchmark_root()``): find, verify, unpack.

Tarballs are unpacked once into ``cache_root()/datasets/<dataset>/<tarball stem>/`` (never
into the pack): extracted into a temporary folder next to it, then moved into place with
``os.replace``, so a reader never sees a half-unpacked folder. The tarball's sha256 is
checked against the pack's ``SHA256SUMS`` before unpacking and recorded in a marker file;
later calls only compare the tarball's size and mtime with the marker.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import warnings
from pathlib import Path

from ood_core import paths
from ood_core.locks import build_lock
from ood_core.registry import OODLensError

__all__ = ["MARKER_NAME", "expected_sha256", "pack_file", "unpack_tarball"]

MARKER_NAME = ".ood-lens-unpacked.json"


def pack_file(relative: str) -> Path:
    """Absolute path of ``relative`` inside the pack; a clear error if it is not there."""
    root = paths.benchmark_root()
    path = root / relative
    if not root.is_dir():
        raise OODLensError(
            f"benchmark pack not found at {root}; set $OOD_LENS_BENCHMARK to the folder holding the pack"
        )
    if not path.exists():
        raise OODLensError(
            f"benchmark pack file {relative!r} not found in {root}; "
            "set $OOD_LENS_BENCHMARK to the folder holding the pack"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(relative: str) -> str | None:
    """The pack's ``SHA256SUMS`` entry for ``relative`` (lines ``<sha>  [./]<path>``), or None."""
    sums = paths.benchmark_root() / "SHA256SUMS"
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and parts[1].lstrip("*").removeprefix("./") == relative:
            return parts[0].lower()
    return None


def _verify(path: Path, relative: str) -> str:
    """sha256 of ``path``, checked against ``SHA256SUMS`` (a mismatch raises; no entry warns)."""
    actual = _sha256(path)
    expected = expected_sha256(relative)
    if expected is None:
        warnings.warn(f"no SHA256SUMS entry for {relative} in {paths.benchmark_root()}; not verified",
                      stacklevel=3)
    elif actual != expected:
        raise OODLensError(f"checksum mismatch for {path}: sha256 {actual}, SHA256SUMS says {expected}")
    return actual


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _matches(marker: dict | None, identity: dict) -> bool:
    return marker is not None and all(marker.get(key) == value for key, value in identity.items())


def unpack_tarball(dataset: str, relative: str) -> Path:
    """Unpack the pack's tarball ``relative`` into ``cache_root()/datasets/<dataset>/<stem>/``.

    Reuses an earlier unpack when its marker matches the tarball's size and mtime (no
    hashing then). Otherwise, holding a lock beside the folder (a concurrent unpacker waits,
    then reuses the result), removes what a killed unpack left, verifies the sha256,
    extracts into a temporary sibling folder and ``os.replace``-s it into place.

    Returns:
        the folder holding the tarball's contents.
    """
    tarball = pack_file(relative)
    stat = tarball.stat()
    stem = tarball.name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".tar")
    destination = paths.cache_root() / "datasets" / dataset / stem
    identity = {"tarball": relative, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    if _matches(_read_marker(destination), identity):
        return destination

    destination.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(destination.parent / f".{stem}.lock", f"the unpacked {relative}"):
        # Holding the lock, no other unpacker is at work: staging folders are a killed one's.
        for leftover in destination.parent.glob(f".{stem}.unpacking-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if _matches(_read_marker(destination), identity):
            return destination  # another process unpacked it while this one waited
        sha256 = _verify(tarball, relative)
        staging = Path(tempfile.mkdtemp(prefix=f".{stem}.unpacking-", dir=destination.parent))
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the unpacked folder is a normal one
        try:
            with tarfile.open(tarball) as archive:
                archive.extractall(staging, filter="data")  # "data": no absolute paths, links out, devices
            (staging / MARKER_NAME).write_text(json.dumps({**identity, "sha256": sha256}))
            if destination.exists():  # stale (pack changed, or unpacked without a marker)
                shutil.rmtree(destination)
            os.replace(staging, destination)
        except tarfile.TarError as error:
            raise OODLensError(f"cannot unpack {tarball}: {error}") from error
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return destination

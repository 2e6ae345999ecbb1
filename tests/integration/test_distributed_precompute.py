"""``torchrun --nproc_per_node 2 -m precompute`` on the CPU (gloo): the cache it builds is the
single-process cache, and a rank killed mid-run loses nothing and costs nothing twice.

Both builds run with one thread per process (torchrun's default), the same batches and the
same chunks, so the tensors are compared bit for bit. The training statistics are reduced
across the ranks (float64 sums of each rank's rows, gathered rows for the KNN bank and the
activation samples), so the sums are taken in another order: they are compared at float
tolerance (relative 1e-6 of each tensor's scale; most come out equal). Each torchrun start costs a few seconds of imports per rank.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ood_core.cache import store

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("dist_launcher.py")
CHUNK_ROWS = 8  # --batch-size 4 × --chunk-batches 2: every entry of --limit 40 has 5 chunks
TIMEOUT_S = 600


def _args(folder: Path, cache: Path) -> list[str]:
    return ["--model", "demo-cnn", "--id", "demo-mnist", "--ood", f"folder:{folder}", "--limit", "40",
            "--batch-size", "4", "--chunk-batches", "2", "--quiet", "--cache-dir", str(cache)]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("OOD_LENS_CACHE", None)
    return env


def _torchrun(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 small RGB images in a flat folder (an unlabeled OOD set)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (20 + i % 7, 24, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def single_process_cache(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("single")
    done = subprocess.run([sys.executable, "-m", "precompute", *_args(image_folder, cache)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return cache


def _entries(cache: Path) -> list[Path]:
    return sorted(p.parent.relative_to(cache) for p in cache.rglob(store.MANIFEST_FILE))


def assert_same_cache(reference: Path, other: Path) -> None:
    """Same entries, same rows in the same order, bit-identical tensors; statistics at float tolerance."""
    entries = _entries(reference)
    assert len(entries) == 4 and _entries(other) == entries  # demo-mnist train / val / test, the folder
    for entry in entries:
        a, b = load_file(str(reference / entry / store.FEATURES_FILE)), load_file(str(other / entry / store.FEATURES_FILE))
        assert sorted(a) == sorted(b), entry
        assert torch.equal(a["source_index"], b["source_index"]), f"{entry}: other rows or order"
        for name in a:
            assert torch.equal(a[name], b[name]), f"{entry}: {name} differs"
        ma = json.loads((reference / entry / store.MANIFEST_FILE).read_text())
        mb = json.loads((other / entry / store.MANIFEST_FILE).read_text())
        for key in ("rows", "shapes", "dtypes", "dataset_fingerprint", "model_fingerprint", "checksums", "odin_eps"):
            assert ma[key] == mb[key], f"{entry}: manifest {key}"
        assert not (other / entry / store.CHUNKS_DIR).exists()
    stats = [p.relative_to(reference) for p in reference.rglob(store.TRAIN_STATS_FILE)]
    assert len(stats) == 1
    sa, sb = load_file(str(reference / stats[0])), load_file(str(other / stats[0]))
    assert sorted(sa) == sorted(sb)
    for name in sa:
        a, b = sa[name].double(), sb[name].double()
        if name == "vim_eigenvectors":
            # With 40 training rows and D = 256, most eigenvalues are 0 and their eigenvectors are
            # any basis of that space, each vector up to its sign: the leading axes (distinct
            # eigenvalues) must agree up to sign, and the whole basis must be orthonormal.
            assert float((b.T @ b - torch.eye(b.shape[1], dtype=b.dtype)).abs().max()) < 1e-5
            a, b = (a[:, :10].T @ b[:, :10]).diagonal().abs(), torch.ones(10, dtype=a.dtype)
        error = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(a.abs().max()) if a.numel() else 0.0
        assert error <= 1e-6 * scale + 1e-9, f"statistic {name}: differs by {error:.3g} (scale {scale:.3g})"


def test_torchrun_two_ranks_builds_the_single_process_cache(image_folder: Path, single_process_cache: Path,
                                                             tmp_path: Path) -> None:
    cache = tmp_path / "torchrun"
    done = _torchrun("-m", "precompute", *_args(image_folder, cache), env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("cache ready") == 1  # one voice: rank 0's
    assert_same_cache(single_process_cache, cache)


def test_a_killed_rank_loses_nothing_and_nothing_finished_is_computed_twice(
        image_folder: Path, single_process_cache: Path, tmp_path: Path) -> None:
    cache, log, marker = tmp_path / "torchrun", tmp_path / "chunks.log", tmp_path / "killed"
    env = _env(OOD_LENS_TEST_CHUNK_LOG=str(log), OOD_LENS_TEST_KILL=f"1:{os.sep}demo-mnist{os.sep}test:{marker}")

    first = _torchrun(str(LAUNCHER), *_args(image_folder, cache), env=env)
    assert first.returncode != 0 and marker.is_file(), first.stderr[-3000:]
    test_entry = store.entry_dir(cache, "demo-cnn", "demo-mnist", "test")
    assert not store.is_complete(test_entry)  # the job died inside this entry...
    kept = store.existing_chunks(test_entry)
    assert 2 in kept  # ...after rank 1 finished its first chunk (rank 1's share is chunks 2-4 of 0-4)
    assert store.is_complete(store.entry_dir(cache, "demo-cnn", "demo-mnist", "val"))  # built before it
    first_run = log.read_text().splitlines()

    second = _torchrun(str(LAUNCHER), *_args(image_folder, cache), env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    written = [tuple(line.split()[1:]) for line in log.read_text().splitlines()]
    twice = [chunk for chunk, count in collections.Counter(written).items() if count > 1]
    assert not twice, f"chunks computed twice: {twice}"
    again = {tuple(line.split()[1:]) for line in first_run} & {tuple(line.split()[1:]) for line in
                                                                log.read_text().splitlines()[len(first_run):]}
    assert not again
    # every chunk of every entry was finished exactly once over the two runs
    per_entry = collections.defaultdict(set)
    for entry, index in written:
        per_entry[entry].add(int(index))
    assert len(per_entry) == 4, per_entry
    for entry, chunks in per_entry.items():
        rows = json.loads((Path(entry) / store.MANIFEST_FILE).read_text())["rows"]  # 40, or the folder's 30
        assert chunks == set(range(-(-rows // CHUNK_ROWS))), entry
    assert_same_cache(single_process_cache, cache)

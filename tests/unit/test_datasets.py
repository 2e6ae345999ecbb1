"""Dataset registry, image folders, the benchmark pack, torchvision wrappers and splits."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ood_core import paths
from ood_core.datasets import (
    create_dataset,
    dataset_info,
    list_datasets,
    stratified_split,
    stratified_subset,
)
from ood_core.datasets import benchmark_pack, pack_files
from ood_core.datasets.benchmark_pack import CIFAR10_CLASSES
from ood_core.datasets.folders import ImageFolderDataset
from ood_core.datasets.pack_files import MARKER_NAME
from ood_core.datasets.torchvision_sets import CIFAR100_CLASSES
from ood_core.registry import OODLensError, UnknownNameError

PACK = paths.benchmark_root()
needs_pack = pytest.mark.skipif(not (PACK / "SHA256SUMS").is_file(), reason=f"benchmark pack not at {PACK}")


def _save(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (8, 6), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def _jpeg_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------

def test_labelled_folder_sorted_classes_and_labels(tmp_path: Path) -> None:
    for cls, color in (("zebra", (255, 0, 0)), ("ant", (0, 255, 0)), ("moth", (0, 0, 255))):
        for i in (2, 1):
            _save(tmp_path / cls / f"{i}.PNG", color)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    dataset = create_dataset(f"folder:{tmp_path}")
    assert isinstance(dataset, ImageFolderDataset)
    assert dataset.class_names == ("ant", "moth", "zebra")
    assert len(dataset) == 6
    rel = [p.relative_to(tmp_path).as_posix() for p in dataset.paths]
    assert rel == sorted(rel)
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image is not None and image.size == (8, 6)
        assert label == dataset.class_names.index(dataset.path(index).parent.name)
    # Colours prove the right file was decoded for the right class.
    assert dataset[0][0].getpixel((0, 0)) == (0, 255, 0)
    assert dataset.info.class_names == ("ant", "moth", "zebra")


def test_flat_folder_is_recursive_and_unlabeled(tmp_path: Path) -> None:
    _save(tmp_path / "b.jpg", (10, 10, 10), fmt="JPEG")
    _save(tmp_path / "a.webp", (20, 20, 20), fmt="WEBP")
    _save(tmp_path / "nested" / "deeper" / "c.bmp", (30, 30, 30))
    _save(tmp_path / ".hidden" / "d.png", (40, 40, 40))
    _save(tmp_path / ".e.png", (50, 50, 50))
    (tmp_path / "readme.md").write_text("x")
    dataset = ImageFolderDataset(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in dataset.paths] == ["a.webp", "b.jpg", "nested/deeper/c.bmp"]
    assert dataset.class_names == ()
    assert [dataset[i][1] for i in range(len(dataset))] == [-1, -1, -1]
    assert all(dataset[i][0] is not None for i in range(len(dataset)))


def test_corrupt_files_yield_none_and_load_raises(tmp_path: Path) -> None:
    _save(tmp_path / "0_good.png", (1, 2, 3))
    (tmp_path / "1_garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    full = _jpeg_bytes()
    (tmp_path / "2_truncated.jpg").write_bytes(full[: len(full) // 2])
    (tmp_path / "3_good.jpg").write_bytes(full)
    dataset = ImageFolderDataset(tmp_path)
    images = [dataset[i][0] for i in range(len(dataset))]
    assert [image is None for image in images] == [False, True, True, False]
    assert images[3].size == (64, 64)
    for index in (1, 2):
        with pytest.raises(Exception):
            dataset.load(index)


def test_missing_empty_and_imageless_folders_raise(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(OODLensError, match=str(missing)):
        create_dataset(f"folder:{missing}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OODLensError, match=str(empty)):
        ImageFolderDataset(empty)
    text_only = tmp_path / "text"
    (text_only / "cls").mkdir(parents=True)
    (text_only / "cls" / "a.txt").write_text("x")
    with pytest.raises(OODLensError, match="no image files"):
        ImageFolderDataset(text_only)
    a_file = _save(tmp_path / "one.png", (0, 0, 0))
    with pytest.raises(OODLensError, match="not a folder"):
        ImageFolderDataset(a_file)


def test_folder_fingerprint_tracks_files(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", (0, 0, 0))
    _save(tmp_path / "b.png", (9, 9, 9))
    first = ImageFolderDataset(tmp_path).fingerprint()
    assert ImageFolderDataset(tmp_path).fingerprint() == first
    assert ImageFolderDataset(tmp_path, split="val").fingerprint() != first
    _save(tmp_path / "b.png", (9, 9, 9), size=(40, 40))  # same name, different size
    assert ImageFolderDataset(tmp_path).fingerprint() != first


# ---------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------

def test_stratified_split_is_exact_disjoint_proportional_and_seeded() -> None:
    rng = np.random.default_rng(3)
    labels = rng.permutation(np.repeat(np.arange(4), [400, 300, 200, 100])).tolist()
    kept, held = stratified_split(labels, 100, seed=0)
    assert len(held) == 100 and len(kept) == 900
    assert held == sorted(held) and kept == sorted(kept)
    assert set(kept).isdisjoint(held) and set(kept) | set(held) == set(range(1000))
    counts = Counter(labels[i] for i in held)
    assert [counts[c] for c in range(4)] == [40, 30, 20, 10]
    assert stratified_split(labels, 100, seed=0) == (kept, held)
    assert stratified_split(labels, 100, seed=1)[1] != held
    # Fractions, and largest-remainder rounding keeps the total exact.
    _, held_fraction = stratified_split(labels, 0.1, seed=0)
    assert len(held_fraction) == 100
    _, odd = stratified_split([0, 0, 0, 1, 1, 1, 2, 2, 2, 2], 5, seed=0)
    odd_counts = Counter([0, 0, 0, 1, 1, 1, 2, 2, 2, 2][i] for i in odd)
    assert sum(odd_counts.values()) == 5 and max(odd_counts.values()) - min(odd_counts.values()) <= 1


@pytest.mark.parametrize("holdout", [-1, 11, 0.0, 1.0, 1.5])
def test_stratified_split_rejects_bad_sizes(holdout) -> None:
    with pytest.raises(OODLensError):
        stratified_split(list(range(10)), holdout, seed=0)


def test_stratified_subset_balanced_and_unlabeled() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 5
    subset = stratified_subset(labels, 30, seed=0)
    counts = Counter(labels[i] for i in subset)
    # class 2 gives all 5 it has, the other two share the rest equally (12 / 13)
    assert counts[2] == 5 and sorted([counts[0], counts[1]]) == [12, 13]
    assert subset == sorted(subset) and len(set(subset)) == 30
    assert stratified_subset(labels, 30, seed=0) == subset
    assert stratified_subset(labels, 1000, seed=0) == list(range(len(labels)))
    unlabeled = [-1] * 100
    random_subset = stratified_subset(unlabeled, 10, seed=5)
    assert len(random_subset) == 10 and random_subset != list(range(10))
    assert stratified_subset(unlabeled, 10, seed=6) != random_subset
    with pytest.raises(OODLensError):
        stratified_subset(labels, 0, seed=0)


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------

def test_unknown_name_lists_known_datasets() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_dataset("no-such-set")
    message = str(info.value)
    for name in ("cifar10", "isun", "dtd10", "mnist", "tv-cifar10", "folder:<name>"):
        assert name in message
    assert set(("cifar10", "isun", "dtd10", "mnist", "tv-svhn")) <= set(list_datasets())
    with pytest.raises(UnknownNameError):
        dataset_info("no-such-set")


def test_the_registry_lives_in_ood_core_registry() -> None:
    import ood_core.datasets as datasets
    from ood_core import registry

    assert datasets.DATASETS is registry.DATASETS and datasets.register_dataset is registry.register_dataset
    assert registry.DATASET_INFOS["cifar10"] is dataset_info("cifar10")
    assert "demo-mnist" in registry.DATASET_FINGERPRINTS and "folder:" not in registry.DATASET_FINGERPRINTS


def test_unknown_split_lists_splits(tmp_path: Path) -> None:
    with pytest.raises(OODLensError, match="train, val, test"):
        create_dataset("cifar10", "validation")
    with pytest.raises(OODLensError, match="its splits are: test"):
        create_dataset("isun", "train")
    with pytest.raises(OODLensError, match="its splits are: test"):
        create_dataset(f"folder:{tmp_path}", "train")


def test_dataset_info_is_cheap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No pack and an empty cache: info must come from the registration table alone.
    monkeypatch.setenv("OOD_LENS_BENCHMARK", str(tmp_path / "no-pack"))
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path / "cache"))
    info = dataset_info("cifar10")
    assert info.kind == "id" and info.splits == ("train", "val", "test")
    assert info.class_names == CIFAR10_CLASSES
    for name in ("isun", "dtd10", "mnist", "tv-svhn"):
        assert dataset_info(name).kind == "ood" and dataset_info(name).splits == ("test",)
        assert "\n" not in dataset_info(name).description
    assert dataset_info("folder:/some/where").source == "/some/where"
    assert dataset_info("tv-cifar100").class_names == CIFAR100_CLASSES
    assert not (tmp_path / "cache").exists()


def test_cifar100_class_names() -> None:
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)


# ---------------------------------------------------------------------------------------
# Benchmark pack (real data, one unpack per test session)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pack_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ood-lens-cache")


@pytest.fixture
def pack_cache(pack_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OOD_LENS_CACHE", str(pack_cache_dir))
    monkeypatch.delenv("OOD_LENS_BENCHMARK", raising=False)
    return pack_cache_dir


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@needs_pack
def test_cifar10_splits(pack_cache: Path) -> None:
    before = _snapshot(PACK)
    train, val, test = (create_dataset("cifar10", split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (10000, 1000, 9000)
    assert set(val.paths).isdisjoint(test.paths)
    assert len(set(val.paths) | set(test.paths)) == 10000
    assert Counter(val.labels) == {c: 100 for c in range(10)}
    assert Counter(test.labels) == {c: 900 for c in range(10)}
    assert Counter(train.labels) == {c: 1000 for c in range(10)}
    for dataset in (train, val, test):
        assert dataset.info.class_names == CIFAR10_CLASSES
        for index in range(0, len(dataset), 997):
            assert dataset.label(index) == CIFAR10_CLASSES.index(dataset.path(index).parent.name)
    image, label = val[5]
    assert image.size == (32, 32) and image.mode == "RGB" and 0 <= label <= 9
    # Unpacked into the cache, and the pack is untouched.
    assert all(pack_cache in p.parents for p in (train.path(0), test.path(0)))
    assert (pack_cache / "datasets" / "cifar10" / "cifar10-test" / MARKER_NAME).is_file()
    assert _snapshot(PACK) == before
    # Fingerprints: stable across constructions, different between splits.
    prints = {split: create_dataset("cifar10", split).fingerprint() for split in ("train", "val", "test")}
    assert prints == {"train": train.fingerprint(), "val": val.fingerprint(), "test": test.fingerprint()}
    assert len(set(prints.values())) == 3


@needs_pack
def test_second_create_reuses_the_unpacked_folder(pack_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = create_dataset("dtd10")
    marker = (pack_cache / "datasets" / "dtd10" / "dtd10" / MARKER_NAME).read_text()

    def forbidden(*args, **kwargs):
        raise AssertionError("the tarball was read again")

    # A reuse neither hashes nor opens the tarball.
    monkeypatch.setattr(pack_files, "_sha256", forbidden)
    monkeypatch.setattr(pack_files.tarfile, "open", forbidden)
    second = create_dataset("dtd10")
    assert second.paths == first.paths
    assert (pack_cache / "datasets" / "dtd10" / "dtd10" / MARKER_NAME).read_text() == marker


@needs_pack
def test_ood_sets_from_the_pack(pack_cache: Path) -> None:
    isun, dtd, mnist = create_dataset("isun"), create_dataset("dtd10"), create_dataset("mnist")
    assert (len(isun), len(dtd), len(mnist)) == (8925, 1200, 10000)
    assert set(isun.labels) == {-1} and set(dtd.labels) == {-1}
    assert isun[0][0].size == (32, 32)
    assert dtd[7][0] is not None and min(dtd[7][0].size) == 96
    image, label = mnist[123]
    assert image.mode == "L" and image.size == (28, 28) and label == -1
    assert np.array_equal(np.asarray(image), mnist.digits[123])
    assert Counter(mnist.digit_labels.tolist())[1] > 1000  # real digits, not zeros
    assert mnist.fingerprint() == create_dataset("mnist").fingerprint()


# ---------------------------------------------------------------------------------------
# Benchmark pack mechanics on a tiny fake pack
# ---------------------------------------------------------------------------------------

def _fake_pack(root: Path, members: dict[str, bytes], sha: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tarball = root / "isun.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in members.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    digest = sha or hashlib.sha256(tarball.read_bytes()).hexdigest()
    (root / "SHA256SUMS").write_text(f"{digest}  ./isun.tar.gz\n")
    return tarball


def _png(color: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (color, color, color)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_unpack_is_atomic_verified_and_redone_when_the_pack_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pack, cache = tmp_path / "pack", tmp_path / "cache"
    monkeypatch.setenv("OOD_LENS_BENCHMARK", str(pack))
    monkeypatch.setenv("OOD_LENS_CACHE", str(cache))
    _fake_pack(pack, {f"iSUN/iSUN_patches/{i}.png": _png(i) for i in range(3)})
    dataset = create_dataset("isun")
    assert len(dataset) == 3 and dataset[2][0].getpixel((0, 0)) == (2, 2, 2)
    assert sorted(p.name for p in pack.iterdir()) == ["SHA256SUMS", "isun.tar.gz"]
    # no temporary folder left (the lock file that serialises unpackers stays)
    assert sorted(p.name for p in (cache / "datasets" / "isun").iterdir()) == [".isun.lock", "isun"]
    # A new tarball (different size) is noticed through the marker and unpacked again.
    _fake_pack(pack, {f"iSUN/iSUN_patches/{i}.png": _png(i) for i in range(5)})
    assert len(create_dataset("isun")) == 5


def test_checksum_mismatch_and_unsafe_tarballs_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OOD_LENS_BENCHMARK", str(tmp_path / "bad-sum"))
    _fake_pack(tmp_path / "bad-sum", {"iSUN/iSUN_patches/0.png": _png(0)}, sha="0" * 64)
    with pytest.raises(OODLensError, match="checksum mismatch"):
        create_dataset("isun")
    monkeypatch.setenv("OOD_LENS_BENCHMARK", str(tmp_path / "escape"))
    _fake_pack(tmp_path / "escape", {"../../outside.png": _png(0)})
    with pytest.raises(OODLensError, match="cannot unpack"):
        create_dataset("isun")
    assert not (tmp_path / "outside.png").exists()
    left = [p.name for p in (tmp_path / "cache" / "datasets" / "isun").iterdir()]
    assert left == [".isun.lock"]  # staging cleaned up


def test_missing_pack_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_LENS_BENCHMARK", str(tmp_path / "nowhere"))
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path / "cache"))
    for name in ("cifar10", "mnist"):
        with pytest.raises(OODLensError, match="OOD_LENS_BENCHMARK") as info:
            create_dataset(name)
        assert str(tmp_path / "nowhere") in str(info.value)


# ---------------------------------------------------------------------------------------
# torchvision sets
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tv-cifar10", "tv-cifar100", "tv-svhn", "tv-mnist", "tv-fashionmnist"])
def test_torchvision_sets_without_files_raise_a_clear_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_LENS_DATA", str(tmp_path))
    with pytest.raises(OODLensError) as info:
        create_dataset(name)
    message = str(info.value)
    assert message.startswith(f"{name} is not at {tmp_path}")
    assert "download=True" in message and "$OOD_LENS_DATA" in message
    assert not any(tmp_path.iterdir())  # nothing downloaded or created


@needs_pack
def test_tv_mnist_wraps_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torchvision's MNIST layout: <root>/MNIST/raw/<idx files>; it checks that the training
    # files exist too, so the test files stand in for them (only the test split is read).
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for kind in ("images-idx3", "labels-idx1"):
        with gzip.open(PACK / "mnist-test" / f"t10k-{kind}-ubyte.gz") as source:
            data = source.read()
        for prefix in ("t10k", "train"):
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(data)
    monkeypatch.setenv("OOD_LENS_DATA", str(tmp_path))
    dataset = create_dataset("tv-mnist")
    assert len(dataset) == 10000 and dataset.labels[:3] == [-1, -1, -1]
    image, label = dataset[42]
    assert image.mode == "L" and label == -1
    pack_digits = benchmark_pack._read_idx(PACK / "mnist-test" / "t10k-images-idx3-ubyte.gz", 2051, 3)
    assert np.array_equal(np.asarray(image), pack_digits[42])
    assert dataset.fingerprint() == create_dataset("tv-mnist").fingerprint()

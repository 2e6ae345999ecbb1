"""Validation outliers (``val-outliers:<id>``) and the noise sets (``noise-gaussian``, ``noise-uniform``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ood_core import paths
from ood_core.cache import ensure, store
from ood_core.datasets import (
    create_dataset,
    dataset_fingerprint,
    dataset_info,
    demo_mnist,
    list_datasets,
    noise,
    outliers,
)
from ood_core.datasets.base import DatasetInfo
from ood_core.datasets.outliers import (
    CORRUPTIONS,
    VAL_OUTLIERS_PREFIX,
    ValOutliersDataset,
    corruption_order,
    val_outliers_name,
)
from ood_core.registry import DATASET_INFOS, DATASETS, OODLensError, UnknownNameError
from tests.conftest import FAKE_ID, FAKE_MODEL, MemoryDataset

PACK = paths.benchmark_root()
needs_pack = pytest.mark.skipif(not (PACK / "SHA256SUMS").is_file(), reason=f"benchmark pack not at {PACK}")

DEMO_VO = "val-outliers:demo-mnist"


def _arrays(dataset) -> list[np.ndarray]:
    return [np.asarray(dataset[i][0]) for i in range(len(dataset))]


# ---------------------------------------------------------------------------------------
# val-outliers:<id>
# ---------------------------------------------------------------------------------------

def test_names_and_registration() -> None:
    assert VAL_OUTLIERS_PREFIX == "val-outliers:"
    assert val_outliers_name("cifar10") == "val-outliers:cifar10"
    names = list_datasets()
    assert {"noise-gaussian", "noise-uniform", "val-outliers:<name>"} <= set(names)
    # what `python -m precompute --list` prints for the prefix entry
    listed = dataset_info("val-outliers:<name>")
    assert listed.kind == "ood" and "cifar10" in listed.description and "demo-mnist" in listed.description
    with pytest.raises(UnknownNameError, match="unknown dataset '<name>'"):
        create_dataset("val-outliers:<name>")


def test_demo_val_outliers_shape_info_and_describe() -> None:
    info = dataset_info(DEMO_VO)
    assert info.name == DEMO_VO and info.kind == "ood" and info.splits == ("test",) and info.class_names == ()
    assert info.description == ("Synthetic outliers from demo-mnist val (tile shuffle / blend / blur / "
                                "pixel permutation), 200 images")
    dataset = create_dataset(DEMO_VO)
    assert isinstance(dataset, ValOutliersDataset) and dataset.info == info
    assert len(dataset) == 200 == len(create_dataset("demo-mnist", "val"))
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image is not None and image.mode == "L" and image.size == (28, 28) and label == -1
    assert dataset.describe(0) == "val 0 (item 0): blur (Gaussian, sigma = size/8)"
    assert dataset.describe(1) == "val 1 (item 1): tile shuffle 4x4"
    assert dataset.describe(2).startswith("val 2 (item 2): blend 50/50 with val ")
    assert dataset.describe(3) == "val 3 (item 3): pixel permutation"
    with pytest.raises(OODLensError, match="its splits are: test"):
        create_dataset(DEMO_VO, "val")


def test_corruptions_cycle_in_a_seeded_order() -> None:
    order = corruption_order(0)
    assert sorted(order) == sorted(CORRUPTIONS)
    assert order == ("blur", "tile-shuffle", "blend", "pixel-permutation")  # the documented order (seed 0)
    dataset = create_dataset(DEMO_VO)
    kinds = [dataset.kind(i) for i in range(len(dataset))]
    assert kinds[:8] == list(order) * 2
    assert {kind: kinds.count(kind) for kind in CORRUPTIONS} == {kind: 50 for kind in CORRUPTIONS}
    assert corruption_order(1) != order or corruption_order(2) != order  # seeded, not fixed


def test_each_corruption_changes_its_source_and_keeps_low_level_statistics() -> None:
    source = create_dataset("demo-mnist", "val")
    dataset = create_dataset(DEMO_VO)
    labels = [source.label(i) for i in range(len(source))]
    for index in range(len(dataset)):
        before, after = np.asarray(source[index][0]), np.asarray(dataset[index][0])
        assert before.shape == after.shape and after.dtype == np.uint8
        assert not np.array_equal(before, after), dataset.describe(index)
        kind = dataset.kind(index)
        if kind in ("tile-shuffle", "pixel-permutation"):
            # both only move pixels: the histogram is exactly the source's
            assert np.array_equal(np.sort(before, axis=None), np.sort(after, axis=None))
        elif kind == "blur":
            assert abs(float(after.mean()) - float(before.mean())) < 3.0  # brightness kept
            assert after.std() < before.std()
        else:  # blend: with a digit of another class
            partner = int(dataset.describe(index).split("with val ")[1].split(" ")[0])
            assert labels[partner] != labels[index]
            expected = np.rint((before.astype(float) + np.asarray(source[partner][0])) / 2)
            assert np.array_equal(after, expected.astype(np.uint8))


def test_tile_shuffle_moves_every_tile() -> None:
    pixels = np.arange(32 * 32 * 3, dtype=np.int64).reshape(32, 32, 3) % 251
    out = outliers.tile_shuffle(pixels.astype(np.uint8), np.random.default_rng(0))
    tiles = lambda a: [a[r:r + 8, c:c + 8].tobytes() for r in range(0, 32, 8) for c in range(0, 32, 8)]  # noqa: E731
    before, after = tiles(pixels.astype(np.uint8)), tiles(out)
    assert sorted(before) == sorted(after)
    assert all(b != a for b, a in zip(before, after))


def test_gaussian_blur_keeps_a_constant_image_and_the_mean() -> None:
    flat = np.full((28, 28), 77, dtype=np.uint8)
    assert np.array_equal(outliers.gaussian_blur(flat, 3.5), flat)
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    blurred = outliers.gaussian_blur(rgb, 4.0)
    assert blurred.shape == rgb.shape
    assert np.allclose(blurred.mean(axis=(0, 1)), rgb.mean(axis=(0, 1)), atol=2.0)


def test_builds_are_byte_identical_and_seeded() -> None:
    first = _arrays(create_dataset(DEMO_VO))
    demo_mnist.clear_caches()
    again = create_dataset(DEMO_VO)
    assert [a.tobytes() for a in first] == [a.tobytes() for a in _arrays(again)]
    # item by item, in any order (each item has its own generator)
    for index in (150, 3, 77):
        assert np.asarray(again[index][0]).tobytes() == first[index].tobytes()
    other_seed = _arrays(create_dataset(DEMO_VO, seed=1))
    assert any(a.tobytes() != b.tobytes() for a, b in zip(first, other_seed))


def test_fingerprint_is_cheap_and_follows_recipe_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_images(self, index):
        raise AssertionError("the fingerprint built an image")

    monkeypatch.setattr(ValOutliersDataset, "load", no_images)
    base = dataset_fingerprint(DEMO_VO, "test")
    dataset = create_dataset(DEMO_VO)
    assert dataset.fingerprint() == base and dataset._source is None  # the val split was not even opened
    assert len(base) == 16 and base != dataset_fingerprint("demo-mnist", "val")
    assert create_dataset(DEMO_VO, seed=1).fingerprint() != base
    monkeypatch.setattr(outliers, "RECIPE_VERSION", outliers.RECIPE_VERSION + 1)
    bumped = dataset_fingerprint(DEMO_VO, "test")
    assert bumped != base
    monkeypatch.setattr(demo_mnist, "GENERATOR_VERSION", demo_mnist.GENERATOR_VERSION + 1)  # the source changes
    assert dataset_fingerprint(DEMO_VO, "test") not in (base, bumped)


@pytest.mark.parametrize("name,fragments", [
    ("val-outliers:noise-uniform", ["'noise-uniform' is an OOD set", "cifar10", "demo-mnist"]),
    ("val-outliers:isun", ["'isun' is an OOD set"]),
    ("val-outliers:val-outliers:demo-mnist", ["is an OOD set"]),
    ("val-outliers:nope", ["unknown dataset 'nope'", "ID datasets with a val split: ", "demo-mnist"]),
    ("val-outliers:demo-mnistt", ["did you mean 'demo-mnist'?"]),
])
def test_bad_sources_fail_with_one_line(name: str, fragments: list[str]) -> None:
    for call in (lambda: dataset_info(name), lambda: create_dataset(name), lambda: dataset_fingerprint(name, "test")):
        with pytest.raises(OODLensError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{name}: ")
        for fragment in fragments:
            assert fragment in message
    if "nope" in name:
        with pytest.raises(UnknownNameError):
            create_dataset(name)


def test_an_id_set_without_val_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    info = DatasetInfo("no-val-id", "test set", kind="id", splits=("train", "test"))
    monkeypatch.setitem(DATASET_INFOS, "no-val-id", info)
    monkeypatch.setitem(DATASETS._builders, "no-val-id", lambda split="test", **kw: MemoryDataset("no-val-id", split))
    expected = r"^val-outliers:no-val-id: 'no-val-id' has no val split \(its splits are: train, test\)"
    with pytest.raises(OODLensError, match=expected):
        create_dataset("val-outliers:no-val-id")


@pytest.fixture
def rgb_id_set(monkeypatch: pytest.MonkeyPatch):
    """Registers ``rgb-id``: 8×8 RGB images of 3 classes whose val image 5 is unreadable."""
    def build(split: str = "test", **kw):
        return MemoryDataset("rgb-id", split, n=24, seed={"train": 0, "val": 1, "test": 2}[split],
                             corrupt=(5,) if split == "val" else ())
    info = DatasetInfo("rgb-id", "test set", kind="id", splits=("train", "val", "test"))
    monkeypatch.setitem(DATASET_INFOS, "rgb-id", info)
    monkeypatch.setitem(DATASETS._builders, "rgb-id", build)
    return "rgb-id"


def test_any_registered_id_set_with_unreadable_images(rgb_id_set: str) -> None:
    name = val_outliers_name(rgb_id_set)
    assert dataset_info(name).description.endswith(", one per val image")  # size unknown without building
    dataset, source = create_dataset(name), create_dataset(rgb_id_set, "val")
    assert len(dataset) == 24
    items = [dataset[i] for i in range(len(dataset))]
    assert items[5][0] is None  # an unreadable source gives an unreadable outlier
    for index, (image, label) in enumerate(items):
        assert label == -1
        if index == 5:
            continue
        # blend partners skip the unreadable image 5 and still give an image
        assert image is not None and image.mode == "RGB" and image.size == (8, 8), dataset.describe(index)
        assert not np.array_equal(np.asarray(image), np.asarray(source[index][0])), dataset.describe(index)


def test_modes_and_sizes_are_kept() -> None:
    rng = np.random.default_rng(0)
    for mode, shape in (("L", (28, 28)), ("RGB", (32, 32, 3)), ("RGBA", (32, 32, 4))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        partner = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB")  # other size and mode
        for kind in CORRUPTIONS:
            out = outliers.corrupt(image, kind, np.random.default_rng(1), partner)
            assert out.mode == mode and out.size == image.size
    palette = Image.new("P", (16, 16))
    assert outliers.corrupt(palette, "blur", np.random.default_rng(0)).mode == "RGB"


def test_the_cache_entry_of_a_prefixed_name(tmp_path: Path, fake_benchmark_names) -> None:
    """The colon is no problem for the cache layout: the entry lives in a sanitised, hashed folder
    and a second build reuses it (the fingerprint recorded at build time is the one readers compute)."""
    name = val_outliers_name(FAKE_ID)
    logs: list[str] = []
    entries = ensure.ensure_entries(FAKE_MODEL, FAKE_ID, [name], tmp_path, with_odin=False, progress=False,
                                    log=logs.append)
    entry = entries[(name, "test")]
    assert entry == store.entry_dir(tmp_path, FAKE_MODEL, name, "test") and store.is_complete(entry)
    folder = entry.parent.name
    assert ":" not in folder and folder.startswith("val-outliers_") and entry.parent.parent == tmp_path / FAKE_MODEL
    manifest = json.loads((entry / store.MANIFEST_FILE).read_text())
    assert manifest["dataset"] == name and manifest["dataset_fingerprint"] == dataset_fingerprint(name, "test")
    def written() -> dict[Path, int]:
        return {path: path.stat().st_mtime_ns for path in entry.rglob("*") if path.is_file() and path.name != ".lock"}

    before = written()
    logs.clear()
    ensure.ensure_entries(FAKE_MODEL, FAKE_ID, [name], tmp_path, with_odin=False, progress=False, log=logs.append)
    assert not any("rebuilding" in line for line in logs), logs
    assert written() == before  # reused, not rebuilt (only the entry's lock file is touched)


@needs_pack
def test_cifar10_val_outliers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path))
    monkeypatch.delenv("OOD_LENS_BENCHMARK", raising=False)
    name = val_outliers_name("cifar10")
    assert dataset_info(name).description == ("Synthetic outliers from cifar10 val (tile shuffle / blend / blur / "
                                              "pixel permutation), 1,000 images")
    fingerprint = dataset_fingerprint(name, "test")
    assert not (tmp_path / "datasets").exists()  # identified without unpacking anything
    dataset, source = create_dataset(name), create_dataset("cifar10", "val")
    assert len(dataset) == 1000 and dataset.fingerprint() == fingerprint
    first = []
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.mode == "RGB" and image.size == (32, 32) and label == -1
        assert not np.array_equal(np.asarray(image), np.asarray(source[index][0])), dataset.describe(index)
        first.append(np.asarray(image).tobytes())
    assert dataset.describe(202) == "val 202 (bird/0032.jpg): blend 50/50 with val 707 (horse/0074.jpg)"
    again = create_dataset(name)
    assert [np.asarray(again[i][0]).tobytes() for i in range(len(again))] == first


# ---------------------------------------------------------------------------------------
# noise-gaussian, noise-uniform
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["noise-gaussian", "noise-uniform"])
def test_noise_sets(name: str) -> None:
    info = dataset_info(name)
    assert info.kind == "ood" and info.splits == ("test",) and "1,000 32x32 RGB" in info.description
    dataset = create_dataset(name)
    assert len(dataset) == 1000
    image, label = dataset[17]
    assert image.mode == "RGB" and image.size == (32, 32) and label == -1
    fingerprint = dataset_fingerprint(name, "test")
    assert dataset.fingerprint() == fingerprint
    with pytest.raises(OODLensError, match="its splits are: test"):
        create_dataset(name, "train")
    first = np.stack(_arrays(dataset))
    noise.clear_caches()
    assert np.stack(_arrays(create_dataset(name))).tobytes() == first.tobytes()
    assert not np.array_equal(np.stack(_arrays(create_dataset(name, seed=1))), first)
    assert create_dataset(name, seed=1).fingerprint() != fingerprint


def test_noise_statistics_and_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    gaussian = noise.noise_arrays("noise-gaussian").astype(np.float64)
    assert np.allclose(gaussian.mean(axis=(0, 1, 2)), 255 * np.asarray(noise.CIFAR10_MEAN), atol=1.0)
    ratio = gaussian.std(axis=(0, 1, 2)) / (255 * np.asarray(noise.CIFAR10_STD))
    assert np.all((ratio > 0.9) & (ratio <= 1.0))  # clipping to [0, 255] trims the tails a little
    uniform = noise.noise_arrays("noise-uniform")
    assert uniform.min() == 0 and uniform.max() == 255 and abs(float(uniform.mean()) - 127.5) < 0.5
    prints = {name: dataset_fingerprint(name, "test") for name in ("noise-gaussian", "noise-uniform")}
    assert prints["noise-gaussian"] != prints["noise-uniform"]
    monkeypatch.setattr(noise, "NOISE_VERSION", noise.NOISE_VERSION + 1)
    assert all(dataset_fingerprint(name, "test") != value for name, value in prints.items())

"""The ImageNet benchmark's named datasets (ood_core/datasets/imagenet.py) on tiny generated folders.

Reference computations: torchvision's own ``ImageFolder`` over all 1,000 wnid folders gives the
class index of every image (the order its ImageNet heads use); the OOD sets must hold exactly the
files written; the held-out split must partition the train folder.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ood_core.datasets import create_dataset, dataset_fingerprint, dataset_info
from ood_core.datasets.imagenet import IMAGENET_OOD_SETS, imagenet_val_size, imagenet_wnids
from ood_core.registry import OODLensError

# Real wnids at both ends of the sorted list and in between: 0 (tench), 1, 2, 500, 999.
WNIDS = ("n01440764", "n01443537", "n01484850", "n03180011", "n15075141")
OOD_NAMES = tuple(spec.name for spec in IMAGENET_OOD_SETS)
# Where each OOD set's images go inside its folder (the published archives' own layouts).
OOD_SUBFOLDERS = {
    "inaturalist": ("images",), "sun": ("images",), "places": ("images",),
    "textures": ("banded", "zigzagged"), "openimage-o": ("images",),
    "ninco": ("amphiuma_means", "caracal"), "ssb-hard": ("n00470682", "n12345678"),
}


def _jpeg(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_imagenet_tree(data_root: Path, wnids=WNIDS, train_per_class: int = 3, val_per_class: int = 2,
                        ood_per_set: int = 2, size: int = 40) -> dict[str, list[Path]]:
    """Tiny ImageNet-style folders under ``data_root`` (the documented layout): returns the files
    written per set (``imagenet-train``, ``imagenet-val`` and each OOD set's name)."""
    written: dict[str, list[Path]] = {"imagenet-train": [], "imagenet-val": []}
    seed = 0
    for part, per_class in (("train", train_per_class), ("val", val_per_class)):
        for wnid in wnids:
            for i in range(per_class):
                path = data_root / "imagenet" / part / wnid / f"{wnid}_{i}.JPEG"
                _jpeg(path, seed, size)
                written[f"imagenet-{part}"].append(path)
                seed += 1
    for spec in IMAGENET_OOD_SETS:
        written[spec.name] = []
        subfolders = OOD_SUBFOLDERS[spec.name]
        for i in range(ood_per_set):
            name = f"{spec.folder.replace('/', '_')}_{i}.jpg"
            path = data_root / "ood" / spec.folder / subfolders[i % len(subfolders)] / name
            _jpeg(path, seed, size)
            written[spec.name].append(path)
            seed += 1
    return written


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("OOD_LENS_DATA", str(root))
    return root


# ---------------------------------------------------------------------------------------------

def test_infos_are_free_and_describe_the_layout(data_root: Path) -> None:
    """--list describes every set without any file present (nothing scanned)."""
    info = dataset_info("imagenet")
    assert info.kind == "id" and info.splits == ("train", "val", "test")
    assert info.class_names == imagenet_wnids() and len(info.class_names) == 1000
    for spec in IMAGENET_OOD_SETS:
        ood = dataset_info(spec.name)
        assert ood.kind == "ood" and ood.splits == ("test",)
        assert f"$OOD_LENS_DATA/ood/{spec.folder}" in ood.description
    assert not any(data_root.iterdir())


def test_wnid_list_is_timms_and_torchvisions_order() -> None:
    from timm.data import ImageNetInfo
    from torchvision.models import ResNet50_Weights

    timm_info = ImageNetInfo("imagenet-1k")
    wnids = imagenet_wnids()
    assert list(wnids) == [timm_info.index_to_label_name(k) for k in range(1000)]
    # The descriptions at those indices are torchvision's category names (its head's order).
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    for k in (0, 1, 2, 500, 999):
        assert timm_info.index_to_description(k).split(",")[0].lower() == categories[k].lower()


@pytest.mark.parametrize("name", OOD_NAMES)
def test_missing_ood_set_is_one_line_naming_folder_and_origin(name: str, data_root: Path) -> None:
    spec = next(s for s in IMAGENET_OOD_SETS if s.name == name)
    with pytest.raises(OODLensError) as info:
        create_dataset(name)
    message = str(info.value)
    assert "\n" not in message
    assert str(data_root / "ood" / spec.folder) in message
    assert ("http" in message or "github.com" in message) and spec.origin in message


def test_missing_imagenet_is_one_line_naming_folder(data_root: Path) -> None:
    for split, part in (("test", "val"), ("train", "train"), ("val", "train")):
        with pytest.raises(OODLensError) as info:
            create_dataset("imagenet", split)
        message = str(info.value)
        assert "\n" not in message and str(data_root / "imagenet" / part) in message
        assert "image-net.org" in message


def test_empty_ood_folder_is_one_line(data_root: Path) -> None:
    (data_root / "ood" / "SUN").mkdir(parents=True)
    with pytest.raises(OODLensError, match=r"^sun: no image files .*SUN.*huangrui") as info:
        create_dataset("sun")
    assert "\n" not in str(info.value)


def test_imagenet_labels_are_torchvisions_class_indices(data_root: Path) -> None:
    """Labels equal torchvision ImageFolder's targets over all 1,000 wnid folders (most empty)."""
    from torchvision.datasets import ImageFolder

    written = write_imagenet_tree(data_root)
    full = data_root / "full-val"
    for wnid in imagenet_wnids():
        (full / wnid).mkdir(parents=True)
    for path in written["imagenet-val"]:
        os.link(path, full / path.parent.name / path.name)
    reference = ImageFolder(str(full), allow_empty=True)

    test = create_dataset("imagenet", "test")
    assert len(test) == len(reference.samples) == len(WNIDS) * 2
    assert [p.name for p in test.paths] == [Path(p).name for p, _ in reference.samples]
    assert list(test.labels) == list(reference.targets)
    assert sorted(set(test.labels)) == [0, 1, 2, imagenet_wnids().index("n03180011"), 999]
    assert test.class_names == imagenet_wnids()
    image, label = test[0]
    assert image is not None and label == 0


def test_imagenet_val_is_held_out_of_train(data_root: Path) -> None:
    written = write_imagenet_tree(data_root, train_per_class=4)
    train, val = create_dataset("imagenet", "train"), create_dataset("imagenet", "val")
    train_files = {p.name for p in written["imagenet-train"]}
    assert len(val) == imagenet_val_size(len(train_files)) == len(train_files) // 5
    assert not set(train.paths) & set(val.paths)
    assert {p.name for p in train.paths} | {p.name for p in val.paths} == train_files
    wnids = imagenet_wnids()
    for dataset in (train, val):  # each image keeps its own folder's class index
        assert all(wnids[label] == path.parent.name for path, label in zip(dataset.paths, dataset.labels))
    # Deterministic, and the three splits are identified apart.
    assert create_dataset("imagenet", "val").paths == val.paths
    prints = {dataset_fingerprint("imagenet", split) for split in ("train", "val", "test")}
    assert len(prints) == 3
    assert imagenet_val_size(1_281_167) == 10_000


def test_imagenet_fingerprint_follows_the_files(data_root: Path) -> None:
    written = write_imagenet_tree(data_root)
    before = dataset_fingerprint("imagenet", "test")
    assert dataset_fingerprint("imagenet", "test") == before
    target = written["imagenet-val"][3]
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert dataset_fingerprint("imagenet", "test") != before


def test_imagenet_rejects_foreign_and_flat_folders(data_root: Path) -> None:
    write_imagenet_tree(data_root)
    _jpeg(data_root / "imagenet" / "val" / "not_a_wnid" / "x.JPEG", 1)
    with pytest.raises(OODLensError, match=r"not ImageNet-1k WordNet ids \(e.g. 'not_a_wnid'\)"):
        create_dataset("imagenet", "test")
    flat = data_root / "imagenet" / "flat"
    _jpeg(flat / "ILSVRC2012_val_00000001.JPEG", 2)
    os.rename(data_root / "imagenet" / "val", data_root / "imagenet" / "val-sorted")
    os.rename(flat, data_root / "imagenet" / "val")
    with pytest.raises(OODLensError, match="holds no <wnid>/ class folders"):
        create_dataset("imagenet", "test")


def test_archives_are_unpacked_by_torchvision_imagenet(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With only the ILSVRC-2012 archives present, torchvision's ImageNet prepares the folder."""
    import torchvision.datasets as tvd

    root = data_root / "imagenet"
    root.mkdir()
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"")
    (root / "ILSVRC2012_img_val.tar").write_bytes(b"")
    calls = []

    def fake_imagenet(path: str, split: str):  # stands in for the MD5 check and the unpacking
        calls.append((path, split))
        _jpeg(Path(path) / split / "n01440764" / "ILSVRC2012_val_00000293.JPEG", 3)

    monkeypatch.setattr(tvd, "ImageNet", fake_imagenet)
    test = create_dataset("imagenet", "test")
    assert calls == [(str(root), "val")] and list(test.labels) == [0]
    create_dataset("imagenet", "test")
    assert len(calls) == 1  # unpacked once


def test_ood_sets_read_every_image_unlabeled(data_root: Path) -> None:
    written = write_imagenet_tree(data_root, ood_per_set=3)
    (data_root / "ood" / "dtd" / "labels").mkdir(parents=True)
    (data_root / "ood" / "dtd" / "labels" / "train1.txt").write_text("banded/banded_0001.jpg\n")
    for name in OOD_NAMES:
        dataset = create_dataset(name)
        assert sorted(dataset.paths) == sorted(written[name]) and set(dataset.labels) == {-1}
        assert dataset.info.name == name and dataset[0][0] is not None


def test_openood_image_list_selects_the_test_images(data_root: Path) -> None:
    written = write_imagenet_tree(data_root, ood_per_set=4)
    lists = data_root / "ood" / "benchmark_imglist" / "imagenet"
    lists.mkdir(parents=True)
    root = data_root / "ood" / "openimage_o"
    chosen = written["openimage-o"][1:3]
    lines = [f"openimage_o/{p.relative_to(root).as_posix()} -1" for p in chosen]
    (lists / "test_openimage_o.txt").write_text("\n".join(lines) + "\n")
    dataset = create_dataset("openimage-o")
    assert list(dataset.paths) == sorted(chosen)
    assert len(create_dataset("ninco")) == 4  # no list for it: every image
    (lists / "test_openimage_o.txt").write_text(lines[0] + "\nopenimage_o/images/absent.jpg -1\n")
    with pytest.raises(OODLensError, match="1 image.* listed in .*absent.jpg"):
        create_dataset("openimage-o")


def test_torchvision_sets_download_only_when_allowed(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=downloads_allowed(): off → no socket is opened; on → torchvision tries, and a
    network failure is one line."""
    opened = []

    def no_network(*args, **kwargs):
        opened.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.delenv("OOD_LENS_DOWNLOAD", raising=False)
    with pytest.raises(OODLensError, match="is not at .*OOD_LENS_DOWNLOAD=1"):
        create_dataset("tv-mnist")
    assert not opened
    monkeypatch.setenv("OOD_LENS_DOWNLOAD", "1")
    with pytest.raises(OODLensError, match="tv-mnist could not be downloaded into") as info:
        create_dataset("tv-mnist")
    assert opened and "\n" not in str(info.value)

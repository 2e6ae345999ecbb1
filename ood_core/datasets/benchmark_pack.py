"""Datasets of the read-only benchmark pack (``ood_core.paths.benchmark_root()``).

* ``cifar10`` — ID. ``train``: ``cifar10-train1k`` (1,000 per class); ``val``: 1,000 images
  held out of ``cifar10-test`` (stratified, seed 0, 100 per class); ``test``: the other 9,000.
* ``isun`` — 8,925 unlabeled iSUN patches (OOD).
* ``dtd10`` — 1,200 DTD textures of 10 classes, used as OOD (labels -1).
* ``mnist`` — the 10,000 official MNIST test digits, ``"L"`` images, used as OOD (labels -1).

The tarballs are unpacked into the cache by :func:`ood_core.datasets.pack_files.unpack_tarball`;
each set is identified by :func:`pack_identity` (its files' checksums), without unpacking.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.datasets.folders import ImageFolderDataset
from ood_core.datasets.pack_files import expected_sha256, pack_file, unpack_tarball
from ood_core.datasets.splits import stratified_split
from ood_core.registry import OODLensError, register_dataset

__all__ = [
    "CIFAR10_CLASSES",
    "MNISTDigits",
    "pack_identity",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_VAL_SIZE = 1000
SPLIT_SEED = 0

INFOS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10",
        "CIFAR-10 (JPEG, benchmark pack): train 10,000 (1,000/class); val 1,000 and test 9,000 from the test set.",
        kind="id", splits=("train", "val", "test"), class_names=CIFAR10_CLASSES,
        source="benchmark pack: cifar10-train1k.tar.gz, cifar10-test.tar.gz",
    ),
    "isun": DatasetInfo(
        "isun", "iSUN: 8,925 unlabeled 32x32 scene patches (OOD set of ODIN, Energy, ReAct, DICE, LINe).",
        kind="ood", source="benchmark pack: isun.tar.gz",
    ),
    "dtd10": DatasetInfo(
        "dtd10", "Describable Textures, first 10 of 47 classes: 1,200 images, used as OOD (labels -1).",
        kind="ood", source="benchmark pack: dtd10.tar.gz",
    ),
    "mnist": DatasetInfo(
        "mnist", "MNIST official test set: 10,000 28x28 grayscale digits, used as OOD (labels -1).",
        kind="ood", source="benchmark pack: mnist-test/",
    ),
}

PACK_FILES: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10-train1k.tar.gz", "cifar10-test.tar.gz"),
    "isun": ("isun.tar.gz",),
    "dtd10": ("dtd10.tar.gz",),
    "mnist": ("mnist-test/t10k-images-idx3-ubyte.gz", "mnist-test/t10k-labels-idx1-ubyte.gz"),
}
PACK_VERSION = 1  # bump when a builder here reads the same files differently


def pack_identity(name: str, split: str) -> tuple[str, ...]:
    """What identifies a pack set's split without unpacking it: the reader's version, the
    split rule and each source file's sha256 as ``SHA256SUMS`` lists it (its size and
    modification time where the pack has no such list)."""
    items = [f"pack-v{PACK_VERSION}"]
    if name == "cifar10" and split != "train":
        items.append(f"held-out val {CIFAR10_VAL_SIZE}, seed {SPLIT_SEED}")
    for relative in PACK_FILES[name]:
        expected = expected_sha256(relative)
        if expected is None:
            stat = pack_file(relative).stat()
            expected = f"size={stat.st_size} mtime_ns={stat.st_mtime_ns}"
        items.append(f"{relative}:{expected}")
    return tuple(items)


def _cifar10_folder(part: str) -> Path:
    """The unpacked ``train1k`` or ``test`` class-folder root of the CIFAR-10 tarballs."""
    stem = "cifar10-train1k" if part == "train1k" else "cifar10-test"
    root = unpack_tarball("cifar10", f"{stem}.tar.gz") / part
    if not root.is_dir():
        raise OODLensError(f"{stem}.tar.gz does not hold the expected folder {part}/")
    return root


def _check_split(name: str, split: str) -> None:
    splits = INFOS[name].splits
    if split not in splits:
        raise OODLensError(f"dataset {name!r} has no split {split!r}; its splits are: {', '.join(splits)}")


def _identified(name: str):
    """``fingerprint=`` for :func:`register_dataset`: the pack identity of ``name``'s splits."""
    return lambda split: pack_identity(name, split)


@register_dataset("cifar10", INFOS["cifar10"], fingerprint=_identified("cifar10"))
def build_cifar10(split: str = "test", **kw) -> ImageFolderDataset:
    """CIFAR-10 from the pack; ``val`` and ``test`` are disjoint parts of the pack's test set."""
    _check_split("cifar10", split)
    root = _cifar10_folder("train1k" if split == "train" else "test")
    dataset = ImageFolderDataset(root, split=split, name="cifar10", labelled=True, info=INFOS["cifar10"],
                                 identity=pack_identity("cifar10", split))
    if dataset.class_names != CIFAR10_CLASSES:
        raise OODLensError(f"unexpected CIFAR-10 class folders in {root}: {', '.join(dataset.class_names)}")
    if split == "train":
        return dataset
    test, val = stratified_split(dataset.labels, CIFAR10_VAL_SIZE, seed=SPLIT_SEED)
    return dataset.select(val if split == "val" else test, split)


@register_dataset("isun", INFOS["isun"], fingerprint=_identified("isun"))
def build_isun(split: str = "test", **kw) -> ImageFolderDataset:
    """iSUN patches (unlabeled)."""
    _check_split("isun", split)
    root = unpack_tarball("isun", "isun.tar.gz") / "iSUN" / "iSUN_patches"
    return ImageFolderDataset(root, split=split, name="isun", labelled=False, info=INFOS["isun"],
                              identity=pack_identity("isun", split))


@register_dataset("dtd10", INFOS["dtd10"], fingerprint=_identified("dtd10"))
def build_dtd10(split: str = "test", **kw) -> ImageFolderDataset:
    """DTD, 10 classes, as an OOD set (labels -1)."""
    _check_split("dtd10", split)
    root = unpack_tarball("dtd10", "dtd10.tar.gz") / "dtd10"
    return ImageFolderDataset(root, split=split, name="dtd10", labelled=False, info=INFOS["dtd10"],
                              identity=pack_identity("dtd10", split))


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """An IDX file (gzip): big-endian int32 magic and ``ndim`` sizes, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    header = np.frombuffer(data, dtype=">i4", count=1 + ndim)
    if int(header[0]) != magic:
        raise OODLensError(f"{path} is not an IDX file with magic {magic} (found {int(header[0])})")
    shape = tuple(int(s) for s in header[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + ndim))
    if body.size != int(np.prod(shape)):
        raise OODLensError(f"{path} is truncated: expected {int(np.prod(shape))} bytes of data, found {body.size}")
    return body.reshape(shape)


class MNISTDigits(ImageDataset):
    """The pack's MNIST test digits as ``"L"`` images, labels -1 (OOD for CIFAR models).

    ``digits``: ``(N, 28, 28)`` uint8; ``digit_labels``: ``(N,)`` uint8, the true digits.
    """

    IMAGES = "mnist-test/t10k-images-idx3-ubyte.gz"
    LABELS = "mnist-test/t10k-labels-idx1-ubyte.gz"

    def __init__(self, split: str = "test") -> None:
        self.split = split
        self.info = INFOS["mnist"]
        self._files = (pack_file(self.IMAGES), pack_file(self.LABELS))
        self.digits = _read_idx(self._files[0], magic=2051, ndim=3)
        self.digit_labels = _read_idx(self._files[1], magic=2049, ndim=1)
        if len(self.digits) != len(self.digit_labels):
            raise OODLensError(f"MNIST images ({len(self.digits)}) and labels ({len(self.digit_labels)}) differ in count")

    def __len__(self) -> int:
        return len(self.digits)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.digits[index])  # 2-D uint8 → mode "L"

    def fingerprint_items(self) -> Iterator[str]:
        return iter(pack_identity("mnist", self.split))


@register_dataset("mnist", INFOS["mnist"], fingerprint=_identified("mnist"))
def build_mnist(split: str = "test", **kw) -> MNISTDigits:
    """MNIST test digits from the pack's IDX files (read directly, nothing unpacked)."""
    _check_split("mnist", split)
    return MNISTDigits(split)

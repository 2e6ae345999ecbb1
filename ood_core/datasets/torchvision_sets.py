"""torchvision datasets (``tv-*``), read from ``ood_core.paths.data_root()``.

Nothing is downloaded unless downloads are allowed (``ood_core.paths.downloads_allowed()``:
``$OOD_LENS_DOWNLOAD=1``, set by ``--download`` on the CLIs); then torchvision's own
``download=True`` fetches and checks the files into the data root. Otherwise absent files raise
an :class:`OODLensError` that says how to fetch them (or where ``$OOD_LENS_DATA`` should point).

* ID: ``tv-cifar10``, ``tv-cifar100`` — ``train`` (the official training set), ``val``
  (10 % of the official test set, stratified, seed 0) and ``test`` (the other 90 %).
* OOD (labels -1, split ``test``): ``tv-svhn``, ``tv-mnist``, ``tv-fashionmnist``.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image
from torch.utils.data import Dataset

from ood_core import paths
from ood_core.cli_args import one_line
from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.datasets.benchmark_pack import CIFAR10_CLASSES
from ood_core.datasets.splits import stratified_split
from ood_core.registry import OODLensError, register_dataset

__all__ = ["CIFAR100_CLASSES", "TorchvisionDataset"]

VAL_FRACTION = 0.1
SPLIT_SEED = 0

# CIFAR-100 fine labels in label order (alphabetical, as in the dataset's meta file).
CIFAR100_CLASSES: tuple[str, ...] = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split())

_ID_SPLITS = ("train", "val", "test")


def _open_tv(name: str, class_name: str, split: str) -> Dataset:
    """Instantiate ``torchvision.datasets.<class_name>`` for ``split`` from the data root; when its
    files are absent and :func:`ood_core.paths.downloads_allowed`, again with ``download=True``
    (torchvision checks the archive's MD5). Files already present are never re-checked or fetched."""
    import torchvision.datasets as tvd  # imported lazily: only the tv-* sets need it

    root = paths.data_root()
    cls = getattr(tvd, class_name)

    def open_it(download: bool) -> Dataset:
        if class_name == "SVHN":
            return cls(str(root), split="train" if split == "train" else "test", download=download)
        return cls(str(root), train=split == "train", download=download)

    try:
        return open_it(download=False)
    except (RuntimeError, FileNotFoundError, OSError) as error:
        if not paths.downloads_allowed():
            raise OODLensError(
                f"{name} is not at {root}: download it with torchvision (download=True) "
                "on a machine with network, or set $OOD_LENS_DATA, or allow downloads "
                "(--download, or OOD_LENS_DOWNLOAD=1)"
            ) from error
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints progress: never into a report
            return open_it(download=True)
    except Exception as error:  # any network or archive failure: one line
        raise OODLensError(
            f"{name} could not be downloaded into {root} ({type(error).__name__}: {one_line(error)[:200]}); "
            "download it with torchvision (download=True) on a machine with network and copy it there, "
            "or set $OOD_LENS_DATA"
        ) from error


def _targets(dataset: Dataset) -> list[int]:
    """All labels of a torchvision dataset without decoding images."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = getattr(dataset, "labels")
    return [int(t) for t in targets]


class TorchvisionDataset(ImageDataset):
    """A torchvision dataset (``transform=None``) seen through ``indices``.

    Args:
        dataset: the torchvision dataset; its items are ``(PIL.Image, target)``.
        info: the registered :class:`DatasetInfo`.
        split: split name.
        indices: positions of ``dataset`` kept, in order (``None``: all).
        labelled: ``False`` reports every label as -1 (an OOD set).
    """

    def __init__(self, dataset: Dataset, info: DatasetInfo, split: str,
                 indices: Sequence[int] | None = None, labelled: bool = True) -> None:
        self.dataset = dataset
        self.info = info
        self.split = split
        self.indices: list[int] = list(range(len(dataset))) if indices is None else list(indices)
        targets = _targets(dataset)
        self.labels: list[int] = [targets[i] if labelled else -1 for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Image.Image:
        image, _ = self.dataset[self.indices[index]]
        return image

    def label(self, index: int) -> int:
        return self.labels[index]

    def fingerprint_items(self) -> Iterator[str]:
        """The torchvision class and size, the indices kept, and the size and modification
        time of every file of the dataset's own folder (a re-download changes them)."""
        yield f"{type(self.dataset).__name__}:{len(self.dataset)}"
        yield from map(str, self.indices)
        base, files = _own_files(self.dataset)
        for path in files:
            stat = path.stat()
            yield f"{path.relative_to(base).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}"


def _own_files(dataset: Dataset) -> tuple[Path, list[Path]]:
    """(base, files): the files of this torchvision dataset alone, not of the shared data root
    (CIFAR: ``root/base_folder``; MNIST-like: ``raw_folder``; SVHN: ``root/filename``)."""
    root = Path(getattr(dataset, "root", ""))
    for attribute in ("base_folder", "raw_folder"):
        sub = getattr(dataset, attribute, None)
        folder = root / sub if isinstance(sub, str) else None
        if folder is not None and folder.is_dir():
            return folder, sorted(p for p in folder.rglob("*") if p.is_file())
    filename = getattr(dataset, "filename", None)
    if isinstance(filename, str) and (root / filename).is_file():
        return root, [root / filename]
    return root, []


def _register(name: str, class_name: str, info: DatasetInfo) -> None:
    """Register ``name`` as the torchvision dataset ``class_name`` (ID sets get train/val/test)."""
    is_id = info.kind == "id"

    def build(split: str = "test", **kw) -> TorchvisionDataset:
        if split not in info.splits:
            raise OODLensError(f"dataset {name!r} has no split {split!r}; its splits are: {', '.join(info.splits)}")
        dataset = _open_tv(name, class_name, split)
        if not is_id:
            return TorchvisionDataset(dataset, info, split, labelled=False)
        if split == "train":
            return TorchvisionDataset(dataset, info, split)
        test, val = stratified_split(_targets(dataset), VAL_FRACTION, seed=SPLIT_SEED)
        return TorchvisionDataset(dataset, info, split, indices=val if split == "val" else test)

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = f"{info.description}"
    register_dataset(name, info)(build)


_register("tv-cifar10", "CIFAR10", DatasetInfo(
    "tv-cifar10", "CIFAR-10 via torchvision (lossless): train 50,000; val 1,000 and test 9,000 from the test set.",
    kind="id", splits=_ID_SPLITS, class_names=CIFAR10_CLASSES, source="torchvision.datasets.CIFAR10"))
_register("tv-cifar100", "CIFAR100", DatasetInfo(
    "tv-cifar100", "CIFAR-100 via torchvision: train 50,000; val 1,000 and test 9,000 from the test set.",
    kind="id", splits=_ID_SPLITS, class_names=CIFAR100_CLASSES, source="torchvision.datasets.CIFAR100"))
_register("tv-svhn", "SVHN", DatasetInfo(
    "tv-svhn", "SVHN test set via torchvision: 26,032 32x32 house-number digits, used as OOD (labels -1).",
    kind="ood", source="torchvision.datasets.SVHN"))
_register("tv-mnist", "MNIST", DatasetInfo(
    "tv-mnist", "MNIST test set via torchvision: 10,000 28x28 grayscale digits, used as OOD (labels -1).",
    kind="ood", source="torchvision.datasets.MNIST"))
_register("tv-fashionmnist", "FashionMNIST", DatasetInfo(
    "tv-fashionmnist", "Fashion-MNIST test set via torchvision: 10,000 28x28 grayscale garments, used as OOD (labels -1).",
    kind="ood", source="torchvision.datasets.FashionMNIST"))

"""The ImageNet-1k OOD benchmark of the papers, as named datasets read from folders.

Everything lives under ``ood_core.paths.data_root()`` (``$OOD_LENS_DATA``)::

    $OOD_LENS_DATA/
      imagenet/train/<wnid>/*.JPEG       ILSVRC-2012 training images (1,281,167)
      imagenet/val/<wnid>/*.JPEG         ILSVRC-2012 validation images (50,000), sorted by class
      ood/iNaturalist/                   the MOS subsets (10,000 images each) ...
      ood/SUN/
      ood/Places/
      ood/dtd/images/<class>/*.jpg       Describable Textures, all 5,640 images
      ood/openimage_o/                   OpenOOD v1.5's OpenImage-O, NINCO and SSB-hard
      ood/ninco/
      ood/ssb_hard/
      ood/benchmark_imglist/imagenet/    optional: OpenOOD's image lists (test_openimage_o.txt, ...)

* ``imagenet`` — ID, labelled by WordNet-id folder with the model's class index: the position
  of the wnid among the 1,000 ImageNet-1k wnids sorted (torchvision's and timm's order), whatever
  subset of folders is present. Splits: ``test`` = the whole ``val`` folder (the papers' 50,000
  test images); ``val`` = 10,000 images held out of the ``train`` folder (stratified by class,
  seed 0; a train folder of fewer than 50,000 images gives a fifth of its images), so no test
  image is ever used for tuning; ``train`` = the rest of the ``train`` folder (training statistics).
  torchvision's ``ImageNet`` layout is the same folders (plus its ``meta.bin``); when a folder is
  absent but the ILSVRC-2012 archives are in ``imagenet/`` (``ILSVRC2012_devkit_t12.tar.gz`` with
  ``ILSVRC2012_img_val.tar`` / ``ILSVRC2012_img_train.tar``), ``torchvision.datasets.ImageNet``
  unpacks and sorts them there once.
* ``inaturalist``, ``sun``, ``places``, ``textures`` (the OOD sets of MOS, ReAct, DICE, LINe) and
  ``openimage-o``, ``ninco``, ``ssb-hard`` (OpenOOD v1.5) — unlabeled (-1), split ``test``: every
  image under the set's folder (any depth). For the three OpenOOD sets, when OpenOOD's list
  ``ood/benchmark_imglist/imagenet/test_<set>.txt`` is present, only the images it lists are used
  (OpenImage-O's archive also holds OpenOOD's validation images).

Folders are read by :class:`~ood_core.datasets.folders.ImageFolderDataset` (sorted paths,
corrupt files skipped by the builder, identity = every file's path, size and modification time).
A missing set raises a one-line :class:`OODLensError` naming the folder expected and where the
papers got the images. Nothing here is downloaded.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ood_core import paths
from ood_core.datasets.base import DatasetInfo
from ood_core.datasets.folders import ImageFolderDataset
from ood_core.datasets.splits import stratified_split
from ood_core.registry import OODLensError, register_dataset

__all__ = [
    "IMAGENET_OOD_SETS",
    "ImageNetFolder",
    "OODSetSpec",
    "imagenet_root",
    "imagenet_wnids",
    "ood_set_folder",
]

VAL_SIZE = 10_000          # images held out of the train folder as the ``val`` split
SMALL_TRAIN = 50_000       # below this many train images, a fifth is held out instead
SPLIT_SEED = 0
SPLIT_VERSION = 1          # bump when the split rule changes (it is part of the fingerprint)
IMAGENET_SOURCE = "ILSVRC-2012 from https://image-net.org/download-images (login required)"


def _timm_info_file(name: str) -> Path | None:
    """A file of timm's ``data/_info`` folder, found without importing timm (fast at start-up)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "_info" / name
    return path if path.is_file() else None


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k WordNet ids in class-index order (sorted: torchvision's ``ImageNet`` /
    ``ImageFolder`` order, which torchvision's and timm's ImageNet heads use), from timm's list."""
    path = _timm_info_file("imagenet_synsets.txt")
    if path is None:
        raise OODLensError("the ImageNet-1k class list (timm's data/_info/imagenet_synsets.txt) is missing; "
                           "install timm (pip install -r requirements.txt)")
    wnids = tuple(path.read_text().split())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise OODLensError(f"{path} is not the sorted list of the 1,000 ImageNet-1k WordNet ids")
    return wnids


def _wnids_or_empty() -> tuple[str, ...]:
    try:
        return imagenet_wnids()
    except OODLensError:
        return ()


def imagenet_root() -> Path:
    """``data_root()/imagenet``: holds ``train/<wnid>/`` and ``val/<wnid>/``."""
    return paths.data_root() / "imagenet"


IMAGENET_INFO = DatasetInfo(
    "imagenet",
    "ImageNet-1k (ILSVRC-2012): test = the 50,000 validation images; val = 10,000 held out of train "
    "(stratified, seed 0); train = the rest. Folders $OOD_LENS_DATA/imagenet/{train,val}/<wnid>/.",
    kind="id", splits=("train", "val", "test"), class_names=_wnids_or_empty(),
    source="$OOD_LENS_DATA/imagenet/{train,val}/<wnid>/*.JPEG (torchvision ImageNet layout)",
)


class ImageNetFolder(ImageFolderDataset):
    """An ImageNet folder of ``<wnid>/`` class sub-folders, labelled with ImageNet-1k class indices.

    ``labels[i]`` is the index of the image's wnid in :func:`imagenet_wnids` (0..999), not its
    position among the folders present, so a partial folder still scores the model's accuracy
    right; ``class_names`` is the full wnid list.
    """

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split=split, name="imagenet", labelled=True, info=IMAGENET_INFO)
        wnids = imagenet_wnids()
        index = {wnid: k for k, wnid in enumerate(wnids)}
        foreign = [name for name in self.class_names if name not in index]
        if foreign:
            raise OODLensError(
                f"{root} holds {len(foreign)} folder(s) that are not ImageNet-1k WordNet ids "
                f"(e.g. {foreign[0]!r}); it must hold only <wnid>/ class folders such as n01440764/"
            )
        position_to_class = [index[name] for name in self.class_names]
        self.labels = tuple(position_to_class[label] for label in self.labels)
        self.class_names = wnids

    def fingerprint_items(self) -> Iterator[str]:
        """The split rule (version, sizes, seed), then every file's path, size and time."""
        yield f"imagenet-split-v{SPLIT_VERSION} val={VAL_SIZE} small<{SMALL_TRAIN}:1/5 seed={SPLIT_SEED}"
        yield from super().fingerprint_items()


def _has_class_folders(folder: Path) -> bool:
    return any(entry.is_dir() and not entry.name.startswith(".") for entry in os.scandir(folder))


def _prepare_with_torchvision(root: Path, part: str) -> None:
    """Unpack ``ILSVRC2012_img_<part>.tar`` (and the devkit) into ``root/<part>/<wnid>/`` with
    ``torchvision.datasets.ImageNet``, which checks the archives' MD5 and sorts the images."""
    import torchvision.datasets as tvd

    try:
        tvd.ImageNet(str(root), split=part)
    except Exception as error:  # a corrupt or partial archive
        raise OODLensError(f"torchvision could not unpack the ILSVRC-2012 {part} archive in {root} "
                           f"({type(error).__name__}: {' '.join(str(error).split())[:200]})") from error


def _imagenet_part(part: str) -> ImageNetFolder:
    """``imagenet/train`` or ``imagenet/val`` as an :class:`ImageNetFolder` (split set by the caller)."""
    root = imagenet_root()
    folder = root / part
    archives = [root / "ILSVRC2012_devkit_t12.tar.gz", root / f"ILSVRC2012_img_{part}.tar"]
    if not folder.is_dir() and all(path.is_file() for path in archives):
        _prepare_with_torchvision(root, part)
    count = "1,281,167 training" if part == "train" else "50,000 validation"
    if not folder.is_dir():
        raise OODLensError(
            f"imagenet: no folder {folder}; it must hold the {count} images of {IMAGENET_SOURCE} in "
            f"<wnid>/ class folders (torchvision's ImageNet layout), or put ILSVRC2012_img_{part}.tar and "
            f"ILSVRC2012_devkit_t12.tar.gz in {root} (set $OOD_LENS_DATA to move the root)"
        )
    if not _has_class_folders(folder):
        raise OODLensError(
            f"imagenet: {folder} holds no <wnid>/ class folders; sort the images by class "
            f"(torchvision.datasets.ImageNet does it from ILSVRC2012_devkit_t12.tar.gz)"
        )
    return ImageNetFolder(folder, split=part)


def imagenet_val_size(train_size: int) -> int:
    """How many train images the ``val`` split holds out: 10,000, or a fifth of a small folder."""
    return VAL_SIZE if train_size >= SMALL_TRAIN else train_size // 5


@register_dataset("imagenet", IMAGENET_INFO)
def build_imagenet(split: str = "test", **kw) -> ImageNetFolder:
    """ImageNet-1k: ``test`` = the val folder; ``val`` / ``train`` = disjoint parts of the train folder."""
    if split not in IMAGENET_INFO.splits:
        raise OODLensError(f"dataset 'imagenet' has no split {split!r}; its splits are: train, val, test")
    if split == "test":
        dataset = _imagenet_part("val")
        dataset.split = "test"
        return dataset
    train = _imagenet_part("train")
    kept, held_out = stratified_split(train.labels, imagenet_val_size(len(train)), seed=SPLIT_SEED)
    return train.select(held_out if split == "val" else kept, split)


# ---------------------------------------------------------------------------------------------
# OOD sets
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OODSetSpec:
    """One OOD test set of the ImageNet benchmark: where it lives and where the papers got it."""

    name: str              # registered dataset name
    folder: str            # relative to data_root()/"ood"
    title: str
    images: str            # the published size, in words
    origin: str            # where the papers got it (shown when the folder is missing)
    openood_list: str = ""  # OpenOOD v1.5's image-list name (test_<x>.txt), for its three sets


_MOS = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/{}.tar.gz (the MOS subsets used by ReAct, DICE, LINe)"
_OPENOOD = ("OpenOOD v1.5 (github.com/Jingkang50/OpenOOD: python scripts/download/download.py --contents datasets "
            "--dataset_mode dataset --datasets {0}; it unpacks data/images_largescale/{0} and the image lists "
            "data/benchmark_imglist)")

IMAGENET_OOD_SETS: tuple[OODSetSpec, ...] = (
    OODSetSpec("inaturalist", "iNaturalist", "iNaturalist", "10,000 plant images of 110 concepts absent from ImageNet-1k",
               _MOS.format("iNaturalist")),
    OODSetSpec("sun", "SUN", "SUN", "10,000 scene images of 50 concepts absent from ImageNet-1k", _MOS.format("SUN")),
    OODSetSpec("places", "Places", "Places", "10,000 scene images of 50 concepts absent from ImageNet-1k",
               _MOS.format("Places")),
    OODSetSpec("textures", "dtd/images", "Textures (DTD)", "all 5,640 images of the 47 texture classes",
               "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz (unpacks dtd/images/)"),
    OODSetSpec("openimage-o", "openimage_o", "OpenImage-O", "15,869 test images of OpenOOD v1.5's list",
               _OPENOOD.format("openimage_o"), "test_openimage_o.txt"),
    OODSetSpec("ninco", "ninco", "NINCO", "5,879 images of 64 classes without ImageNet-1k objects",
               _OPENOOD.format("ninco"), "test_ninco.txt"),
    OODSetSpec("ssb-hard", "ssb_hard", "SSB-hard", "49,000 ImageNet-21k images of 980 semantically shifted classes",
               _OPENOOD.format("ssb_hard"), "test_ssb_hard.txt"),
)


def ood_root() -> Path:
    """``data_root()/ood``: the OOD sets' folders."""
    return paths.data_root() / "ood"


def ood_set_folder(spec: OODSetSpec) -> Path:
    return ood_root() / spec.folder


def openood_list_file(spec: OODSetSpec) -> Path | None:
    """OpenOOD's image list of ``spec`` when present (``ood/benchmark_imglist/imagenet/test_<x>.txt``)."""
    if not spec.openood_list:
        return None
    path = ood_root() / "benchmark_imglist" / "imagenet" / spec.openood_list
    return path if path.is_file() else None


def _listed_indices(dataset: ImageFolderDataset, spec: OODSetSpec, list_file: Path) -> list[int]:
    """Positions of the files an OpenOOD list names. Its lines are ``<openood folder>/<path> <label>``
    relative to OpenOOD's ``images_largescale/``; the folder part is this set's folder here."""
    openood_folder = spec.openood_list[len("test_"):-len(".txt")]
    position = {path.relative_to(dataset.root).as_posix(): k for k, path in enumerate(dataset.paths)}
    wanted, missing = [], []
    for line in list_file.read_text().splitlines():
        if not line.strip():
            continue
        relative = line.split()[0]
        relative = relative.split("/", 1)[1] if relative.startswith(openood_folder + "/") else relative
        (wanted if relative in position else missing).append(relative)
    if missing:
        raise OODLensError(f"{spec.name}: {len(missing)} image(s) listed in {list_file} are not under "
                           f"{dataset.root} (e.g. {missing[0]})")
    return sorted(position[relative] for relative in wanted)


def _ood_info(spec: OODSetSpec) -> DatasetInfo:
    return DatasetInfo(
        spec.name, f"{spec.title}: {spec.images}; ImageNet OOD test set (labels -1), "
                   f"folder $OOD_LENS_DATA/ood/{spec.folder}/.",
        kind="ood", source=f"$OOD_LENS_DATA/ood/{spec.folder} ({spec.origin})",
    )


def _register_ood(spec: OODSetSpec) -> None:
    info = _ood_info(spec)

    def build(split: str = "test", **kw) -> ImageFolderDataset:
        if split != "test":
            raise OODLensError(f"dataset {spec.name!r} has no split {split!r}; its splits are: test")
        folder = ood_set_folder(spec)
        if not folder.is_dir():
            raise OODLensError(f"{spec.name}: no folder {folder} (expected: {spec.title}, {spec.images}); "
                               f"the papers got it from {spec.origin}; set $OOD_LENS_DATA to move the root")
        try:
            dataset = ImageFolderDataset(folder, split=split, name=spec.name, labelled=False, info=info)
        except OODLensError as error:  # an empty folder
            raise OODLensError(f"{spec.name}: {error}; the papers got it from {spec.origin}") from error
        list_file = openood_list_file(spec)
        if list_file is not None:
            dataset = dataset.select(_listed_indices(dataset, spec, list_file), split)
        return dataset

    build.__name__ = f"build_{spec.name.replace('-', '_')}"
    build.__doc__ = info.description
    register_dataset(spec.name, info)(build)


for _spec in IMAGENET_OOD_SETS:
    _register_ood(_spec)

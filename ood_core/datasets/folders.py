"""Image folders: ``folder:<path>`` and the building block of the benchmark-pack sets.

Layouts (like torchvision's ``ImageFolder``):

* **labelled**: ``root/<class>/.../*.png`` — the root holds class sub-folders and no image
  files; classes sorted alphabetically give label indices 0..K-1.
* **flat**: any other folder — every image file under ``root`` (recursively), label -1.

Image files are matched by extension (case-insensitive); hidden files and folders are
ignored. Paths are sorted, so the order (and therefore every index, split and cache row)
is deterministic. Symbolic links are followed, but no directory is entered twice (a link
back into the tree, or a second link to the same folder, is skipped), so a link loop can
never multiply the images.
"""
from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.registry import OODLensError, register_dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "scan_image_folder"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(folder: Path, visited: set[tuple[int, int]] | None = None) -> Iterator[Path]:
    """Every image file under ``folder`` (recursive, hidden entries skipped, unsorted).

    Links are followed, but each real directory (device, inode) is entered once: ``visited``
    is shared by the scans of one folder, so a loop or a duplicate link adds nothing.
    """
    visited = set() if visited is None else visited
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        identity = os.stat(directory)
        if (identity.st_dev, identity.st_ino) in visited:
            subdirs[:] = []
            continue
        visited.add((identity.st_dev, identity.st_ino))
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if _is_image(name):
                yield Path(directory, name)


def scan_image_folder(root: str | os.PathLike) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Scan an image folder.

    Returns:
        ``(paths, labels, class_names)``: sorted absolute file paths, their labels (class
        index for a labelled folder, -1 for a flat one) and the sorted class names
        (empty for a flat folder).

    Raises:
        OODLensError: the folder is missing, not a folder, or holds no image files.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise OODLensError(f"image folder not found: {root}")
    if not root.is_dir():
        raise OODLensError(f"not a folder: {root}")
    entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
    class_dirs = sorted(e.name for e in entries if e.is_dir())
    top_images = [e for e in entries if e.is_file() and _is_image(e.name)]
    visited = {(os.stat(root).st_dev, os.stat(root).st_ino)}
    if class_dirs and not top_images:
        # Labelled: one class per top-level sub-folder (kept even if empty, so label indices
        # always equal the position in the sorted class list).
        pairs = sorted((path, label) for label, name in enumerate(class_dirs)
                       for path in _walk_images(root / name, visited))
        paths = [p for p, _ in pairs]
        labels = [label for _, label in pairs]
        class_names: tuple[str, ...] = tuple(class_dirs)
    else:
        visited.clear()  # the root itself is walked now
        paths = sorted(_walk_images(root, visited))
        labels = [-1] * len(paths)
        class_names = ()
    if not paths:
        raise OODLensError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder: {root}"
        )
    return paths, labels, class_names


class ImageFolderDataset(ImageDataset):
    """Images of a folder (labelled class sub-folders, or a flat folder of unlabeled images).

    Args:
        root: the folder.
        split: the split name this dataset stands for (recorded in the fingerprint).
        name: dataset name (default ``folder:<root>``).
        labelled: ``None`` uses the folder's labels; ``False`` forces -1 (a labelled folder
            used as an OOD set, e.g. ``dtd10``); ``True`` requires class sub-folders.
        info: the :class:`DatasetInfo` to expose (default: built from the scan).
        indices: keep only these positions of the sorted scan (held-out splits), in order.
        identity: what identifies a built-in folder (its pack file's checksum and version);
            None (any other folder) identifies it by its files' paths, sizes and times.

    Items are ``(PIL.Image | None, label)``; the image is returned in its file's own mode.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", name: str | None = None, *,
                 labelled: bool | None = None, info: DatasetInfo | None = None,
                 indices: Sequence[int] | None = None, identity: Sequence[str] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.identity = tuple(identity) if identity is not None else None
        self.split = split
        paths, labels, class_names = scan_image_folder(self.root)
        if labelled and not class_names:
            raise OODLensError(f"expected class sub-folders (a labelled image folder) in: {self.root}")
        if labelled is False:
            labels = [-1] * len(labels)
        if indices is not None:
            paths = [paths[i] for i in indices]
            labels = [labels[i] for i in indices]
        self.paths: tuple[Path, ...] = tuple(paths)
        self.labels: tuple[int, ...] = tuple(labels)
        self.class_names = class_names
        name = name or f"folder:{self.root}"
        self.info = info or DatasetInfo(
            name=name,
            description=f"Images from the folder {self.root} ({'labelled by class sub-folder' if class_names else 'unlabeled'}).",
            kind="ood",
            splits=(split,),
            class_names=class_names if labelled is not False else (),
            source=str(self.root),
        )

    def select(self, indices: Sequence[int], split: str) -> "ImageFolderDataset":
        """A copy holding only items ``indices`` (in that order) as split ``split``; no rescan."""
        subset = copy.copy(self)
        subset.paths = tuple(self.paths[i] for i in indices)
        subset.labels = tuple(self.labels[i] for i in indices)
        subset.split = split
        return subset

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        """The file behind item ``index``."""
        return self.paths[index]

    def load(self, index: int) -> Image.Image:
        """Decode the file fully (raises on a corrupt or truncated file; no mode conversion)."""
        # Read the bytes first so no file handle outlives the call, even when decoding fails.
        image = Image.open(io.BytesIO(self.paths[index].read_bytes()))
        image.load()
        return image

    def label(self, index: int) -> int:
        return self.labels[index]

    def describe(self, index: int) -> str:
        return self.paths[index].relative_to(self.root).as_posix()

    def fingerprint_items(self) -> Iterator[str]:
        """A built-in folder's ``identity``; any other folder: its resolved absolute path, then
        ``"<path relative to root>:<size in bytes>:<mtime in ns>"`` per item, in order."""
        if self.identity is not None:
            yield from self.identity
            return
        yield str(self.root.resolve())
        for path in self.paths:
            stat = path.stat()
            yield f"{path.relative_to(self.root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}"


def _folder_info(rest: str) -> DatasetInfo:
    """Cheap info for ``folder:<path>`` (nothing is scanned)."""
    return DatasetInfo(
        name=f"folder:{rest}",
        description=f"Images from the folder {rest} (class sub-folders give labels, else unlabeled).",
        kind="ood",
        splits=("test",),
        source=rest,
    )


def canonical_folder(path: str) -> str:
    """``folder:<path>`` names one folder whatever the working directory: its absolute, resolved path."""
    return str(Path(path).expanduser().resolve())


@register_dataset("folder:", _folder_info)
def build_folder(path: str, split: str = "test", **kw) -> ImageFolderDataset:
    """``folder:<path>`` → :class:`ImageFolderDataset` (split ``test``)."""
    return ImageFolderDataset(path, split=split, name=f"folder:{path}", **kw)

"""What every registered dataset returns.

``create_dataset(name, split)`` → :class:`ImageDataset`: a map-style torch Dataset whose
items are ``(PIL.Image | None, label)``; ``None`` marks an unreadable / corrupt image,
which the feature builder skips, counts and reports (nothing else is lost). Labels are
class indices, or -1 for unlabeled (OOD) sets. The model's transform is applied by
:class:`TransformedDataset`, not by the dataset, so one dataset serves every model.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset


def fingerprint_of(name: str, split: str, items: Iterable[object]) -> str:
    """16 hex chars of sha256 over ``name``, ``split`` and each item (one line each)."""
    digest = hashlib.sha256(f"{name}|{split}".encode())
    for item in items:
        digest.update(f"\n{item}".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    kind: str  # "id" (labelled, has train/val/test) or "ood" (test only)
    splits: tuple[str, ...] = ("test",)
    class_names: tuple[str, ...] = ()
    source: str = ""  # where the files come from (path, package)


class ImageDataset(Dataset):
    """Base: subclasses set ``info`` and implement ``__len__``, ``load(index)`` and ``label(index)``."""

    info: DatasetInfo
    split: str

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        """The image at ``index`` (may raise on a corrupt file)."""
        raise NotImplementedError

    def label(self, index: int) -> int:
        return -1

    def __getitem__(self, index: int) -> tuple[Image.Image | None, int]:
        try:
            image = self.load(index)
            image.load()
        except Exception:  # corrupt or unreadable: the builder counts and reports these
            image = None
        return image, self.label(index)

    def fingerprint(self) -> str:
        """A stable identifier of the exact samples (16 hex chars): :func:`fingerprint_of` the
        name, split and :meth:`fingerprint_items`. The cache records it at build time and
        compares it on every read (``ood_core.datasets.dataset_fingerprint``)."""
        return fingerprint_of(self.info.name, self.split, self.fingerprint_items())

    def fingerprint_items(self) -> Iterable[object]:
        """What identifies the samples (file names, sizes and times, versions, seeds); subclasses
        refine. The default, the number of samples, suits only data that cannot change."""
        return (f"n={len(self)}",)

    def describe(self, index: int) -> str:
        """How to find item ``index`` (a file's relative path for folders); used to list skipped files."""
        return f"item {index}"


class TransformedDataset(Dataset):
    """Applies a model transform; yields ``(tensor | None, label, index)``."""

    def __init__(self, base: ImageDataset, transform: Callable[[Image.Image], Tensor],
                 indices: list[int] | None = None) -> None:
        self.base = base
        self.transform = transform
        self.indices = list(range(len(base))) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        image, label = self.base[index]
        tensor = None
        if image is not None:
            try:
                tensor = self.transform(image)
            except Exception:
                tensor = None
        return tensor, label, index


def collate_skip_corrupt(batch):
    """Collate ``(tensor | None, label, index)`` items, dropping ``None`` images.

    Returns ``(images (B, C, H, W) or None, labels (B,), indices (B,), skipped_indices list)``.
    """
    good = [item for item in batch if item[0] is not None]
    skipped = [item[2] for item in batch if item[0] is None]
    if not good:
        return None, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    indices = torch.tensor([item[2] for item in good], dtype=torch.long)
    return images, labels, indices, skipped

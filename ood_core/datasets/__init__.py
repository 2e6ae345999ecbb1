"""Datasets: ``create_dataset(name, split) -> ImageDataset``, ``dataset_info``, ``list_datasets``.

Names (see ``docs/architecture.md``): ``cifar10``, ``isun``, ``dtd10``, ``mnist`` (the
benchmark pack), ``folder:<path>`` (any image folder), ``tv-*`` (torchvision sets,
``download=False``) and ``demo-*`` (the embedded demo sets, ``datasets/demo.py``).

>>> from ood_core.datasets import create_dataset, dataset_info
>>> dataset_info("cifar10").splits
('train', 'val', 'test')
>>> ds = create_dataset("folder:/path/to/images")        # doctest: +SKIP
>>> image, label = ds[0]                                 # PIL image (or None if corrupt), int

The registry (``DATASETS``, ``register_dataset`` and its info and fingerprint tables) lives
in :mod:`ood_core.registry`; ``DATASETS`` and ``register_dataset`` are re-exported here.
A source module registers a builder ``(split, **kw) -> ImageDataset`` together with its
:class:`DatasetInfo`, so that :func:`dataset_info` and :func:`list_datasets` are free
(nothing is unpacked or scanned until :func:`create_dataset` is called)::

    @register_dataset("my-set", DatasetInfo("my-set", "One line.", kind="ood"))
    def build_my_set(split: str = "test", **kw) -> ImageDataset: ...

A prefix name (ending in ``:``) receives the rest of the name as its first argument and
may pass a callable ``rest -> DatasetInfo`` as its info.

A built-in set whose identity is a version (generated data, a checksummed archive) also
registers ``fingerprint=split -> items``, the same items its datasets' ``fingerprint_items``
give: :func:`dataset_fingerprint` then identifies it without unpacking or generating
anything. Other sets (folders) are identified by building them (a scan of their files).
"""
from __future__ import annotations

from typing import Callable, Union

from ood_core.datasets.base import (
    DatasetInfo,
    ImageDataset,
    TransformedDataset,
    collate_skip_corrupt,
    fingerprint_of,
)
from ood_core.registry import (
    DATASET_FINGERPRINTS,
    DATASET_INFOS,
    DATASETS,
    OODLensError,
    register_dataset,
    unknown_name,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageDataset",
    "canonical_dataset_name",
    "dataset_fingerprint",
    "TransformedDataset",
    "collate_skip_corrupt",
    "create_dataset",
    "dataset_info",
    "list_datasets",
    "register_dataset",
    "stratified_split",
    "stratified_subset",
]

InfoSpec = Union[DatasetInfo, Callable[[str], DatasetInfo], None]


def list_datasets() -> list[str]:
    """Registered dataset names, in registration order (prefix entries as ``folder:<name>``)."""
    return DATASETS.names()


def _info_spec(name: str) -> tuple[InfoSpec, str | None]:
    """``(info spec, rest of the name for a prefix entry or None)``; unknown → UnknownNameError."""
    if name in DATASET_INFOS and not name.endswith(":"):
        return DATASET_INFOS[name], None
    for prefix, spec in DATASET_INFOS.items():
        if prefix.endswith(":") and name.startswith(prefix) and len(name) > len(prefix):
            return spec, name[len(prefix):]
    raise unknown_name("dataset", name, list_datasets())


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset, without unpacking or scanning files.

    Raises :class:`UnknownNameError` (listing the known names) for an unknown name.
    """
    spec, rest = _info_spec(name)
    if isinstance(spec, DatasetInfo):
        return spec
    if spec is not None and rest is not None:
        return spec(rest)
    # A builder registered without info: build it once (its default split) and remember.
    info = DATASETS.create(name).info
    if rest is None:
        DATASET_INFOS[name] = info
    return info


def canonical_dataset_name(name: str) -> str:
    """The name under which ``name`` is cached: ``folder:<path>`` with the folder's absolute,
    resolved path (so one relative name from two working directories never shares an entry);
    every other name as it is. Unknown names raise :class:`UnknownNameError`; a derived name
    such as ``val-outliers:<id>`` is checked whole (its ``<id>``), before any work starts."""
    spec, rest = _info_spec(name)
    if rest is not None and callable(spec) and not name.startswith("folder:"):
        spec(rest)
    if name.startswith("folder:"):
        from ood_core.datasets.folders import canonical_folder

        return "folder:" + canonical_folder(name[len("folder:"):])
    return name


def dataset_fingerprint(name: str, split: str) -> str:
    """What identifies the samples of ``name``/``split`` now (16 hex chars), as recorded in the
    cache at build time: a version for built-in sets (nothing unpacked or generated), the
    files' paths, sizes and modification times for folders (a scan)."""
    if name in DATASET_FINGERPRINTS:
        return fingerprint_of(name, split, DATASET_FINGERPRINTS[name](split))
    return create_dataset(name, split).fingerprint()


def create_dataset(name: str, split: str = "test", **kw) -> ImageDataset:
    """Build dataset ``name`` for ``split`` (``"train"``, ``"val"`` or ``"test"``).

    Returns:
        an :class:`ImageDataset` whose items are ``(PIL.Image | None, label int)``.

    Raises:
        UnknownNameError: unknown ``name`` (the message lists the known names).
        OODLensError: ``split`` is not one of the dataset's splits, or its files are missing.
    """
    spec, rest = _info_spec(name)
    info = spec if isinstance(spec, DatasetInfo) else None
    if spec is not None and rest is not None and not isinstance(spec, DatasetInfo):
        info = spec(rest)
    # Builders registered without info check their split themselves.
    if info is not None and split not in info.splits:
        raise OODLensError(
            f"dataset {name!r} has no split {split!r}; its splits are: {', '.join(info.splits)}"
        )
    return DATASETS.create(name, split=split, **kw)


from ood_core.datasets.splits import stratified_split, stratified_subset  # noqa: E402

# Importing the package registers every source, in list_datasets' order.
from ood_core.datasets import benchmark_pack, folders, torchvision_sets  # noqa: E402,F401
from ood_core.datasets import imagenet  # noqa: E402,F401
from ood_core.datasets import demo  # noqa: E402,F401
from ood_core.datasets import noise, outliers  # noqa: E402,F401

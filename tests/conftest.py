"""Session fixtures shared by the test suite.

* Every test session gets its own feature cache (``$OOD_LENS_CACHE``) unless the caller
  set one, so no test writes into ``~/.cache/ood-lens``.
* ``fake_model`` / ``fake_dataset``: factories of a tiny :class:`OODModel` and an in-memory
  :class:`ImageDataset` for cache / builder / benchmark tests (no weights, no files).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from ood_core.datasets.base import DatasetInfo, ImageDataset
from ood_core.models.base import OODModel, Preprocessing


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """A per-session ``$OOD_LENS_CACHE`` (kept when the environment already names one)."""
    if os.environ.get("OOD_LENS_CACHE"):
        yield os.environ["OOD_LENS_CACHE"]
        return
    path = tmp_path_factory.mktemp("ood-lens-cache")
    os.environ["OOD_LENS_CACHE"] = str(path)
    yield str(path)
    os.environ.pop("OOD_LENS_CACHE", None)


class TinyModel(OODModel):
    """Conv(3→D, 3×3) → ReLU → (GAP = penultimate, spatial max = prepool_max) → Linear(D→K).

    ``fail_after``: raise RuntimeError on that forward call (simulates a crash mid-build);
    ``forward_calls`` counts ``forward_features`` calls; ``broken`` returns features that are
    not the head's input (a wrong wrapper).
    """

    def __init__(self, name: str = "tiny", num_classes: int = 3, feature_dim: int = 6, seed: int = 0) -> None:
        super().__init__(name, num_classes, feature_dim,
                         Preprocessing(input_size=8, resize=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
                         class_names=tuple(f"class{i}" for i in range(num_classes)))
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, feature_dim, 3, padding=1)
        self.fc = nn.Linear(feature_dim, num_classes)
        self.forward_calls = 0
        self.fail_after: int | None = None
        self.broken = False

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.fail_after is not None and self.forward_calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.forward_calls += 1
        maps = torch.relu(self.conv(x))
        return maps.mean((2, 3)), maps.amax((2, 3))

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def forward(self, x: Tensor):
        out = super().forward(x)
        if self.broken:  # logits no longer equal head(penultimate)
            out.penultimate = out.penultimate * 1.5
        return out


class MemoryDataset(ImageDataset):
    """``n`` small RGB images whose colour depends on the class (so the task is learnable);
    indices in ``corrupt`` fail to load like a truncated file."""

    def __init__(self, name: str = "mem", split: str = "test", n: int = 30, num_classes: int = 3,
                 labelled: bool = True, corrupt: tuple[int, ...] = (), seed: int = 0, shift: float = 0.0) -> None:
        self.info = DatasetInfo(name, "in-memory test images", kind="id" if labelled else "ood",
                                splits=("train", "val", "test"),
                                class_names=tuple(f"class{i}" for i in range(num_classes)))
        self.split = split
        rng = np.random.default_rng(seed)
        self.labels = [i % num_classes for i in range(n)]
        base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [120, 120, 120]], dtype=np.float64)
        self.pixels = [np.clip(base[y % 4] * (1 - shift) + 255 * shift * rng.random(3) + rng.normal(0, 20, (8, 8, 3)),
                               0, 255).astype(np.uint8) for y in self.labels]
        self.labelled = labelled
        self.corrupt = set(corrupt)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        if index in self.corrupt:
            raise OSError("image file is truncated")
        return Image.fromarray(self.pixels[index])

    def label(self, index: int) -> int:
        return self.labels[index] if self.labelled else -1

    def fingerprint_items(self):
        return range(len(self))


@pytest.fixture
def fake_model() -> Callable[..., TinyModel]:
    """Factory: ``fake_model(name="tiny", num_classes=3, feature_dim=6, seed=0)``."""
    return TinyModel


@pytest.fixture
def fake_dataset() -> Callable[..., MemoryDataset]:
    """Factory: ``fake_dataset(name, split, n, num_classes, labelled, corrupt, seed, shift)``."""
    return MemoryDataset


FAKE_MODEL, FAKE_ID = "test-bench-tiny", "test-bench-id"
FAKE_OOD_A, FAKE_OOD_B = "test-bench-ood-a", "test-bench-ood-b"


@pytest.fixture
def fake_benchmark_names(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Registers FAKE_MODEL and the FAKE_* datasets for one test (undone after it); counts model
    builds in ``["model"]``. FAKE_MODEL honours ``checkpoint=`` (a torch state_dict file) and
    its default weights change when a test sets ``["weights_version"]`` (a re-released checkpoint)."""
    from ood_core.models.loading import load_into, read_state_dict
    from ood_core.registry import DATASET_INFOS, DATASETS, MODELS

    built = {"model": 0, "weights_version": 0}

    def build_model(checkpoint: str | None = None, **kw):
        built["model"] += 1
        model = TinyModel(name=FAKE_MODEL)
        with torch.no_grad():  # make class 0/1/2 ↔ red/green/blue so ID accuracy is meaningful
            model.conv.weight.zero_()
            model.conv.bias.zero_()
            for c in range(3):
                model.conv.weight[c, c, 1, 1] = 1.0
            model.fc.weight.copy_(torch.eye(3, 6) * 4)
            model.fc.bias.add_(0.01 * built["weights_version"])
        if checkpoint is not None:
            load_into(model, read_state_dict(checkpoint), checkpoint)
        return model

    def dataset_builder(name, labelled, shift, n):
        def build(split: str = "test", **kw):
            seed = {"train": 0, "val": 1, "test": 2}[split]
            return MemoryDataset(name=name, split=split, n=n, labelled=labelled, seed=seed + int(10 * shift), shift=shift)
        return build

    monkeypatch.setitem(MODELS._builders, FAKE_MODEL, build_model)
    for name, labelled, shift, n in [(FAKE_ID, True, 0.0, 24), (FAKE_OOD_A, False, 0.9, 12), (FAKE_OOD_B, False, 0.6, 15)]:
        monkeypatch.setitem(DATASETS._builders, name, dataset_builder(name, labelled, shift, n))
        info = DatasetInfo(name, "test set", kind="id" if labelled else "ood",
                           splits=("train", "val", "test") if labelled else ("test",))
        monkeypatch.setitem(DATASET_INFOS, name, info)
    return built


DEMO_MODEL, DEMO_ID = "demo-cnn", "demo-mnist"
DEMO_OODS = ("demo-letters", "demo-textures", "demo-photos", "demo-faces", "demo-noise")


@pytest.fixture(scope="session")
def demo_cache_root(tmp_path_factory: pytest.TempPathFactory):
    """A cache root holding the embedded demo benchmark, built once per test session (the demo
    weights are committed: a demo that does not build fails the tests that use it)."""
    from ood_core.benchmark import load_benchmark

    root = tmp_path_factory.mktemp("demo-cache")
    load_benchmark(DEMO_MODEL, DEMO_ID, list(DEMO_OODS), cache_root=root, progress=False, build_device="cpu",
                   log=lambda message: None)
    return root


@pytest.fixture(scope="session")
def demo_benchmark(demo_cache_root):
    """The demo benchmark loaded from :func:`demo_cache_root` (shared: treat it as read-only)."""
    from ood_core.benchmark import load_benchmark

    return load_benchmark(DEMO_MODEL, DEMO_ID, list(DEMO_OODS), cache_root=demo_cache_root, build_missing=False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's conv-heavy tests on one intra-op thread: on a busy 2-core machine two
    OpenMP threads were measured 10-20x slower (spin-waiting) than one; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""Where things live on disk; each location can be overridden by an environment variable."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(__file__).resolve().parent


def cache_root() -> Path:
    """Feature cache root: ``$OOD_LENS_CACHE`` or ``~/.cache/ood-lens``."""
    return Path(os.environ.get("OOD_LENS_CACHE", Path.home() / ".cache" / "ood-lens")).expanduser()


def benchmark_root() -> Path:
    """The read-only benchmark pack: ``$OOD_LENS_BENCHMARK`` or ``<repo>/../shared/benchmark``."""
    return Path(os.environ.get("OOD_LENS_BENCHMARK", REPO_ROOT.parent / "shared" / "benchmark")).expanduser()


def data_root() -> Path:
    """Root of the datasets read from disk (torchvision sets, the ImageNet benchmark folders):
    ``$OOD_LENS_DATA`` or ``~/.cache/ood-lens/data``."""
    return Path(os.environ.get("OOD_LENS_DATA", cache_root() / "data")).expanduser()


def weights_dir() -> Path:
    """Weights shipped inside the package (the embedded demo model)."""
    return PACKAGE_ROOT / "weights"


def downloads_allowed() -> bool:
    """Whether datasets and pretrained weights may be downloaded: ``$OOD_LENS_DOWNLOAD`` is ``1``
    (``--download`` on the CLIs sets it). Off by default: the product runs offline, and a missing
    file is a one-line error naming where it is expected."""
    return os.environ.get("OOD_LENS_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")

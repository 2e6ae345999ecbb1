"""Checkpoint helpers shared by the model families: find, read and strictly load a state_dict.

Every failure a user can cause (a wrong path, a corrupt file, a checkpoint for another
architecture) raises :class:`CheckpointError` with a one-line message that says what is
wrong and how to point to another file (``checkpoint=`` in Python, ``--checkpoint`` on the CLI).
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ood_core.paths import benchmark_root
from ood_core.registry import OODLensError

# Wrapper keys under which training scripts commonly nest the weights (DICE: "state_dict").
_NESTED_KEYS = ("state_dict", "model", "model_state_dict")
_HOW_TO_OVERRIDE = "pass checkpoint=<path> (CLI: --checkpoint PATH)"


def _load_failure(error: BaseException) -> str:
    """What ``torch.load`` objected to, without its advice to turn the safe loader off."""
    text = str(error)
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, flags=re.S)
    if detail:
        return f"{type(error).__name__}: {' '.join(detail.group(1).split())[:200]}"
    if "weights_only" in text:
        return type(error).__name__
    return error_summary(error)


def error_summary(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (truncated): keeps the user-facing error on one line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit] if lines else ''}"


class CheckpointError(OODLensError):
    """A checkpoint is missing, unreadable, or does not fit the model's architecture."""


class PretrainedWeightsError(OODLensError):
    """Pretrained weights of a library model (torchvision / timm) are not available offline."""


# What every "weights not cached" message offers besides a local checkpoint.
ALLOW_DOWNLOAD = "allow the download (CLI: --download; env: OOD_LENS_DOWNLOAD=1)"


def torch_hub_checkpoints() -> Path:
    """torch hub's weight cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``,
    default ``~/.cache/torch/hub/checkpoints``): where torchvision's weights are looked up and downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache (where timm's weights live), read from the environment *now*, in
    huggingface_hub's own order: ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``,
    ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``. (huggingface_hub reads these
    once, at import; reading them per call lets a caller or a test point the cache elsewhere.)"""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def benchmark_weight_path(filename: str) -> Path:
    """The default location of a benchmark-pack checkpoint: ``benchmark_root()/weights/<filename>``."""
    return benchmark_root() / "weights" / filename


def resolve_checkpoint(checkpoint: str | Path | None, default_filename: str) -> Path:
    """``checkpoint`` if given (``~`` expanded), else the benchmark pack's ``weights/<default_filename>``."""
    if checkpoint is not None:
        return Path(checkpoint).expanduser()
    return benchmark_weight_path(default_filename)


def read_state_dict(path: str | Path, strip_prefix: str | None = "module.") -> dict[str, Tensor]:
    """Read a state_dict with ``torch.load(map_location="cpu", weights_only=True)`` (no pickle code).

    Accepts a bare state_dict or one nested under ``state_dict`` / ``model`` /
    ``model_state_dict`` (extra entries such as ``epoch`` are ignored). When *every* key
    starts with ``strip_prefix`` (DataParallel's ``module.``) the prefix is removed.

    Raises:
        CheckpointError: the file is missing, cannot be read, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; {_HOW_TO_OVERRIDE}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before it refuses
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip / EOF / weights_only errors all mean "unreadable"
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is not a PyTorch file of plain tensors ({_load_failure(error)}); "
            f"OOD Lens loads weights with weights_only=True, which never runs code from the file; "
            f"{_HOW_TO_OVERRIDE}"
        ) from error
    state_dict = loaded
    if isinstance(loaded, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(loaded.get(key), Mapping):
                state_dict = loaded[key]
                break
    if not isinstance(state_dict, Mapping) or not any(isinstance(v, Tensor) for v in state_dict.values()):
        raise CheckpointError(f"checkpoint {path} holds no state_dict of tensors; {_HOW_TO_OVERRIDE}")
    state_dict = {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}
    if strip_prefix and all(k.startswith(strip_prefix) for k in state_dict):
        state_dict = {k[len(strip_prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _preview(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def describe_mismatch(module: nn.Module, state_dict: Mapping[str, Tensor]) -> str | None:
    """One line naming the first few missing / unexpected keys and shape mismatches, or None if it fits."""
    expected = module.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked counter (akamaster's
    # ResNets); BatchNorm itself fills it in on load, and it does not affect inference.
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_preview(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_preview(shapes, 2)}")
    return "; ".join(parts) or None


def load_into(module: nn.Module, state_dict: Mapping[str, Tensor], source: str | Path) -> None:
    """Strictly load ``state_dict`` into ``module``.

    Raises:
        CheckpointError: keys or shapes differ; the message lists the first few differences.
    """
    mismatch = describe_mismatch(module, state_dict)
    if mismatch is not None:
        raise CheckpointError(
            f"checkpoint {source} does not fit {type(module).__name__}: {mismatch}; {_HOW_TO_OVERRIDE}"
        )
    module.load_state_dict(state_dict, strict=True)


def load_checkpoint(module: nn.Module, checkpoint: str | Path | None, default_filename: str,
                    strip_prefix: str | None = "module.") -> Path:
    """Resolve, read and strictly load a checkpoint into ``module``; returns the path used."""
    path = resolve_checkpoint(checkpoint, default_filename)
    if checkpoint is None and not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}; {_HOW_TO_OVERRIDE} or set $OOD_LENS_BENCHMARK to the benchmark pack"
        )
    load_into(module, read_state_dict(path, strip_prefix=strip_prefix), path)
    return path

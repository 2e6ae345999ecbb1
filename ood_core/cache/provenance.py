"""Which weights a cache entry stands for, and the one command that rebuilds a benchmark.

A model is cached under a *key*: its registered name for its own weights, and
``<name>@<fingerprint>`` for any other checkpoint, so two checkpoints of one model never
share an entry. Readers construct the model to take its fingerprint (a hash of every
parameter) and compare it with what each entry recorded; the weights a report names are
therefore exactly the weights its figures come from.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ood_core import paths
from ood_core.cache import store
from ood_core.models.base import OODModel

KEY_SEPARATOR = "@"


@dataclass(frozen=True)
class ModelRef:
    """A registered model with the weights it was built from.

    name: the registered name; fingerprint: :meth:`OODModel.fingerprint` of those weights;
    checkpoint: the absolute path of a ``--checkpoint`` file, or None for the model's own weights.
    """

    name: str
    fingerprint: str
    checkpoint: str | None = None

    @property
    def key(self) -> str:
        """The cache key: ``name``, or ``name@fingerprint`` for another checkpoint."""
        return self.name if self.checkpoint is None else f"{self.name}{KEY_SEPARATOR}{self.fingerprint}"


def split_key(key: str) -> tuple[str, str | None]:
    """``"demo-cnn@1a2b…"`` → ``("demo-cnn", "1a2b…")``; a plain name → ``(name, None)``."""
    name, separator, fingerprint = key.partition(KEY_SEPARATOR)
    return (name, fingerprint or None) if separator else (key, None)


def recorded_checkpoint(cache_root: Path, key: str) -> str | None:
    """The checkpoint path that the entries cached under ``key`` were built from, if any records it."""
    for manifest_path in sorted((cache_root / store.safe_name(key)).glob(f"*/*/{store.MANIFEST_FILE}")):
        try:
            checkpoint = json.loads(manifest_path.read_text(encoding="utf-8")).get("checkpoint")
        except (OSError, ValueError, AttributeError):
            continue
        if checkpoint:
            return str(checkpoint)
    return None


def load_model(model: str, checkpoint: str | None = None, cache_root: Path | str | None = None
               ) -> tuple[OODModel, ModelRef]:
    """Construct ``model`` (a registered name or a cache key ``name@fingerprint``) and identify it.

    A key without ``checkpoint`` uses the checkpoint its entries recorded. Raises
    :class:`~ood_core.cache.store.StaleCacheError` when a key's checkpoint now holds other
    weights, and the model registry's errors for unknown names or unreadable weights.
    """
    from ood_core.models import create_model

    root = Path(cache_root) if cache_root is not None else paths.cache_root()
    name, key_fingerprint = split_key(model)
    if key_fingerprint is not None and checkpoint is None:
        checkpoint = recorded_checkpoint(root, model)
        if checkpoint is None:
            raise store.StaleCacheError(f"no cache entry of {model} records its checkpoint; "
                                        f"pass --model {name} --checkpoint PATH")
    path = str(Path(checkpoint).expanduser().resolve()) if checkpoint is not None else None
    net = create_model(name, **({"checkpoint": path} if path is not None else {}))
    ref = ModelRef(name=name, fingerprint=net.fingerprint(), checkpoint=path)
    if key_fingerprint is not None and ref.fingerprint != key_fingerprint:
        raise store.StaleCacheError(
            f"the checkpoint {path} cached as {model} now holds other weights (fingerprint {ref.fingerprint}); "
            f"build them with `{precompute_command(ref, '<ID dataset>', ())}`")
    return net, ref


def precompute_command(model: ModelRef, id_dataset: str, ood_datasets: Sequence[str], *, limit: int | None = None,
                       with_odin: bool = True, cache_root: Path | str | None = None) -> str:
    """The ``python -m precompute`` command that builds, or rebuilds whatever is stale in, a
    benchmark with these options (it rebuilds stale entries by itself: no ``--rebuild``)."""
    argv = ["python", "-m", "precompute", "--model", model.name, "--id", id_dataset]
    if ood_datasets:
        argv += ["--ood", *ood_datasets]
    if limit is not None:
        argv += ["--limit", str(limit)]
    if not with_odin:
        argv.append("--no-odin")
    if model.checkpoint is not None:
        argv += ["--checkpoint", model.checkpoint]
    if cache_root is not None and Path(cache_root).resolve() != paths.cache_root().resolve():
        argv += ["--cache-dir", str(cache_root)]
    return shlex.join(argv)

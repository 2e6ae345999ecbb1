"""Several processes building one cache: ``torchrun`` ranks, or one plain process.

``torchrun --nproc_per_node N -m precompute ...`` (or multi-node torchrun) starts N processes
with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` in their environment;
:func:`setup` joins them into one process group (gloo on the CPU, NCCL on CUDA). Without those
variables nothing is initialised and :data:`SINGLE` describes the one process, so the same
code runs both ways. The training statistics are reduced with :func:`all_reduce_sum` (float64
sums) and :func:`all_gather_cat` (rows kept from every rank); see :mod:`ood_core.statistics`.

How a build is shared (``ood_core.cache.builder``):

* every entry is cut into the resumable chunks of a single-process build (same rows, same
  batches); the main rank decides what to reuse and writes the chunk plan, then the chunks
  still missing are split into one **contiguous** range per rank (:func:`split_evenly`): no
  row is dropped, none is computed twice, and no ``DistributedSampler`` padding;
* each rank writes its chunks atomically (temporary file, fsync, rename), so a rank that dies
  leaves only finished chunks, which the restarted job keeps;
* after a barrier the main rank concatenates the chunks in order and writes the entry: the
  same tensors, in the same order, as one process gives.

The cache root must be one filesystem every rank sees (multi-node: a shared mount). Locks are
taken by the main rank only: the others follow it through barriers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ood_core.registry import OODLensError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in its job: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The rank that takes locks, decides, logs, draws progress bars and finalises entries."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()


def from_environment(environ: dict[str, str] | None = None) -> Ranks:
    """The :class:`Ranks` torchrun describes in ``environ`` (default ``os.environ``); one process
    without those variables. Malformed values are a one-line error."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        ranks = Ranks(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    except ValueError:
        raise OODLensError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers, got {env.get('RANK')!r} / "
                           f"{env.get('WORLD_SIZE')!r} / {env.get('LOCAL_RANK')!r}") from None
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size:
        raise OODLensError(f"RANK {ranks.rank} is not in [0, WORLD_SIZE={ranks.world_size})")
    return ranks


_current: Ranks = SINGLE


def current() -> Ranks:
    """This process's :class:`Ranks` (:data:`SINGLE` until :func:`setup` joined a group)."""
    return _current


def setup(device: torch.device) -> Ranks:
    """Join the torchrun process group when launched by torchrun (gloo for a CPU ``device``,
    NCCL for CUDA, each rank on ``cuda:LOCAL_RANK``); a plain process stays :data:`SINGLE`.

    Returns this process's :class:`Ranks`; call :func:`teardown` at the end.
    """
    global _current
    ranks = from_environment()
    if not ranks.distributed:
        _current = SINGLE
        return SINGLE
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)
            # NCCL for the GPU tensors, gloo for the float64 statistics summed on the CPU
            dist.init_process_group(backend="cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group(backend="gloo")
    _current = ranks
    return ranks


def teardown() -> None:
    """Leave the process group (after a last barrier, so no rank exits while others still write)."""
    global _current
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _current = SINGLE


def rank_device(device: torch.device, ranks: Ranks | None = None) -> torch.device:
    """Each rank's own GPU: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a distributed job."""
    ranks = ranks or current()
    if device.type == "cuda" and ranks.distributed and device.index is None:
        return torch.device("cuda", ranks.local_rank)
    return device


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if current().distributed:
        dist.barrier()


def from_main(value: T) -> T:
    """The main rank's ``value`` on every rank (a picklable object), so every rank takes the
    decision the main rank took; in one process, ``value`` itself."""
    if not current().distributed:
        return value
    box: list[Any] = [value if current().is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: the rank's GPU under NCCL alone, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(value: Tensor) -> Tensor:
    """The sum of ``value`` over every rank (float64 sums stay float64), on ``value``'s device."""
    if not current().distributed:
        return value
    out = value.to(_collective_device()).contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(value.device)


def all_gather_cat(value: Tensor) -> Tensor:
    """Every rank's ``value`` (any number of rows each) concatenated along dim 0 in rank order."""
    if not current().distributed:
        return value
    parts: list[Any] = [None] * current().world_size
    dist.all_gather_object(parts, value.cpu())
    return torch.cat(parts, 0).to(value.device)


def share_bounds(n: int, ranks: Ranks | None = None) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous share of n items: rank r gets r·n/w .. (r+1)·n/w
    (floor division), so the shares cover every item exactly once, in order."""
    ranks = ranks or current()
    return ranks.rank * n // ranks.world_size, (ranks.rank + 1) * n // ranks.world_size


def split_evenly(items: Sequence[T], ranks: Ranks | None = None) -> list[T]:
    """This rank's contiguous share of ``items`` (:func:`share_bounds`)."""
    start, stop = share_bounds(len(items), ranks)
    return list(items[start:stop])

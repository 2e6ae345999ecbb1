"""Helpers shared by the speed benchmarks in ``bench/``: timing, tables, JSON, environment.

Absolute times on shared 2-core machines are noise; every benchmark here prints them but
judges *ratios* measured within one run (e.g. a method against the dense-matmul floor).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch


def default_device() -> torch.device:
    """CUDA when present, else CPU (the benchmarks are device-agnostic)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so a wall-clock reading covers them (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds of one benchmarked callable.

    first_ms:  the first call (cold: allocations, memoised masks, per-tensor caches)
    median_ms: median of the timed repeats after the first call (steady state)
    min_ms:    fastest timed repeat (the least disturbed by other processes)
    cpu_ms:    median process CPU time of the timed repeats (all threads; less sensitive to
               other processes than wall time, but counts every thread's work)
    repeats_ms: every timed repeat, in order
    """

    first_ms: float
    median_ms: float
    min_ms: float = math.nan
    cpu_ms: float = math.nan
    repeats_ms: tuple[float, ...] = field(default_factory=tuple)


def time_call(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: bool = True) -> Timing:
    """Time ``fn()``: one first (warm-up) call, then ``repeats`` calls; median of those.

    With ``warmup=False`` no separate first call is made and ``first_ms`` is the first repeat
    (for callables so slow that a separate warm-up would blow the time budget).
    """
    return time_interleaved({"fn": fn}, repeats, device, warmup)["fn"]


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int, device: torch.device,
                     warmup: bool = True, extra_rounds_budget_s: float = 0.0,
                     max_repeats: int | None = None) -> dict[str, Timing]:
    """Time several callables *interleaved*: one warm-up call each, then ``repeats`` rounds
    calling each once, the order rotated every round.

    Interleaving makes a ratio between them fair on a shared machine: a burst of load from
    another process hits every callable of a round, not only the one that happened to run then.
    After ``repeats`` rounds, further rounds run (up to ``max_repeats``) while the rounds so far
    took less than ``extra_rounds_budget_s`` in total: cheap calls get a robust median, calls
    that take seconds stay at ``repeats``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    names = list(fns)
    first: dict[str, float] = {}
    if warmup:
        for name in names:
            first[name] = _elapsed_ms(fns[name], device)[0]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    limit = max(repeats, max_repeats or repeats)
    spent_ms, round_index = 0.0, 0
    while round_index < repeats or (round_index < limit and spent_ms < extra_rounds_budget_s * 1e3):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, cpu_elapsed = _elapsed_ms(fns[name], device)
            wall[name].append(elapsed)
            cpu[name].append(cpu_elapsed)
            spent_ms += elapsed
        round_index += 1
    return {name: Timing(first_ms=first.get(name, wall[name][0]), median_ms=float(statistics.median(wall[name])),
                         min_ms=min(wall[name]), cpu_ms=float(statistics.median(cpu[name])),
                         repeats_ms=tuple(wall[name]))
            for name in names}


def _elapsed_ms(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, (time.process_time() - cpu_start) * 1e3


def format_ms(value: float | None) -> str:
    """Milliseconds with a width-friendly precision; '—' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(value: float | None, suffix: str = "×") -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "—"
    return f"{value:.1f}{suffix}" if value < 100 else f"{value:,.0f}{suffix}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def environment() -> dict[str, Any]:
    """What the numbers were measured on (recorded in the JSON output)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None  # strict JSON has no NaN / inf
    return value


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` (dataclasses, dicts, lists, numbers) as indented strict JSON."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
    return out

"""Build locks: one writer per cache entry (and per benchmark) at a time, across processes.

A lock is an ``fcntl.flock`` on a small file beside what it guards; the kernel releases it
when its holder exits or is killed, so a crash never leaves a lock behind. A second builder
waits, saying which process it waits for, and then finds the first one's result.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: builds are not serialised (documented in the README)
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


@contextmanager
def build_lock(path: Path, what: str, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock ``path`` (created if needed) for the ``with`` block.

    ``what`` names what is guarded in the message ``log`` gets while this waits for another holder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                if log is not None:
                    log(f"{what} is being built by pid {holder}; waiting for it to finish")
                fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)

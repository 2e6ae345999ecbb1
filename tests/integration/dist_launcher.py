"""``python -m precompute`` as a torchrun script, with two test hooks set by environment:

* ``OOD_LENS_TEST_CHUNK_LOG=<file>``: every chunk a rank finishes is appended to the file as
  ``<rank> <entry dir> <chunk index>`` (what ``test_distributed_precompute`` counts to show
  that nothing finished is computed twice);
* ``OOD_LENS_TEST_KILL=<rank>:<entry substring>:<marker file>``: that rank SIGKILLs itself
  right after finishing its first chunk of an entry whose path contains the substring, once
  (the marker file records that it happened, so the restarted job runs through).

Not a test module (no ``test_`` prefix): ``torchrun tests/integration/dist_launcher.py ...``.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from ood_core.cache import store  # noqa: E402

_write_chunk = store.write_chunk


def _logged_write_chunk(entry, index, tensors):  # type: ignore[no-untyped-def]
    _write_chunk(entry, index, tensors)
    rank = os.environ.get("RANK", "0")
    log = os.environ.get("OOD_LENS_TEST_CHUNK_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{rank} {entry} {index}\n")
    kill = os.environ.get("OOD_LENS_TEST_KILL")
    if kill:
        kill_rank, part, marker = kill.split(":", 2)
        if rank == kill_rank and part in str(entry) and not Path(marker).exists():
            Path(marker).write_text(f"rank {rank} killed after chunk {index} of {entry}\n")
            os.kill(os.getpid(), signal.SIGKILL)


store.write_chunk = _logged_write_chunk

if __name__ == "__main__":
    from precompute.cli import main

    sys.exit(main(sys.argv[1:]))

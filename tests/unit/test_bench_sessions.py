"""The server-memory reading of bench/bench_app_sessions.py (/proc: a process and its children)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_app_sessions import server_memory

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")


def test_server_memory_counts_the_process_and_its_children() -> None:
    import os

    # this process may already have children (the browser tests' server lives for the whole session)
    alone = server_memory(os.getpid(), "alone")
    assert alone.processes >= 1 and alone.rss > 10 * 1024 * 1024 and 0 < alone.pss <= alone.rss
    # a child holding 64 MiB of its own: the tree's memory grows by about that much
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(64 << 20); "
                              "b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        both = server_memory(os.getpid(), "with a child")
        assert both.processes == alone.processes + 1
        assert both.rss - alone.rss > 60 * 1024 * 1024
    finally:
        child.kill()
        child.wait()

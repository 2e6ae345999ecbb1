"""The dashboard's first second: a title and one status line before the heavy imports.

The first script run of a server process imports torch and ``ood_core`` (the scorers, the
datasets): seconds on a cold start, during which the page would stay blank. :func:`splash`
draws the title and what is happening *before* those imports (``app/main.py`` calls it right
after ``st.set_page_config``), and :meth:`Splash.clear` removes it once the sidebar is drawn;
the demo's cache build then shows its own overall progress (``resources.load_benchmark_with_progress``).
This module imports nothing heavy (Streamlit and :mod:`ood_core.paths` only).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import streamlit as st

# Imported (with torch) by app.resources: once it is loaded, a run is fast and needs no splash.
HEAVY_MODULE = "ood_core.benchmark"
# The demo's training statistics manifest: the last file its first build writes (a hint only;
# every entry is checked when the benchmark loads). Names as in app.resources / ood_core.cache.store.
DEMO_STATS_MANIFEST = ("demo-cnn", "demo-mnist", "train_stats.json")
FIRST_LAUNCH = "Preparing the demo (first launch)"


@dataclass
class Splash:
    """The placeholder :func:`splash` drew into (None when nothing was drawn)."""

    placeholder: Any = None

    def clear(self) -> None:
        """Remove the splash (the real page takes its place)."""
        if self.placeholder is not None:
            self.placeholder.empty()
            self.placeholder = None


def demo_cache_present() -> bool:
    """Whether the demo's cache looks built (no torch needed to tell)."""
    from ood_core.paths import cache_root

    return cache_root().joinpath(*DEMO_STATS_MANIFEST).is_file()


def status_text(first_launch: bool) -> str:
    """The line under the title while the libraries load."""
    if first_launch:
        return (f"{FIRST_LAUNCH}: loading PyTorch and the OOD methods, then building the demo's feature "
                "cache (about a minute on 2 CPU cores; a progress bar follows)…")
    return "Starting: loading PyTorch and the OOD methods…"


def splash() -> Splash:
    """Draw the title and a status line, on a server's first run only (later runs find the heavy
    modules imported and draw their page at once)."""
    if HEAVY_MODULE in sys.modules:
        return Splash()
    placeholder = st.empty()
    with placeholder.container():
        st.title("OOD Lens")
        st.caption(status_text(not demo_cache_present()))
    return Splash(placeholder)

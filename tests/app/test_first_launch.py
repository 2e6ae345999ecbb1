"""The splash of app/first_launch.py: the title and a status line before the heavy imports,
drawn on a server's first run only and removed once the page takes over. (The browser test
tests/e2e/test_first_launch.py times it on a cold server.)"""
from __future__ import annotations

import pytest

st_testing = pytest.importorskip("streamlit.testing.v1")


def _script(clear: bool) -> None:
    from app import first_launch

    splash = first_launch.splash()
    if clear:
        splash.clear()


def _run(clear: bool):
    at = st_testing.AppTest.from_function(_script, kwargs={"clear": clear}, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def cold(monkeypatch, tmp_path):
    """A server's first run (the heavy module not imported yet) on an empty cache."""
    from app import first_launch

    monkeypatch.setattr(first_launch, "HEAVY_MODULE", "not_imported_yet_module")
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path))
    return tmp_path


def test_first_run_on_an_empty_cache_says_the_demo_is_being_prepared(cold) -> None:
    at = _run(clear=False)
    assert [t.value for t in at.title] == ["OOD Lens"]
    assert at.caption[0].value.startswith("Preparing the demo (first launch): loading PyTorch")


def test_first_run_with_a_built_demo_just_says_starting(cold) -> None:
    from app import first_launch

    manifest = cold.joinpath(*first_launch.DEMO_STATS_MANIFEST)
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    at = _run(clear=False)
    assert at.caption[0].value.startswith("Starting: loading PyTorch")


def test_the_splash_goes_once_the_page_is_drawn(cold) -> None:
    at = _run(clear=True)
    assert not at.title and not at.caption


def test_no_splash_once_the_libraries_are_loaded(monkeypatch) -> None:
    from app import first_launch

    monkeypatch.setattr(first_launch, "HEAVY_MODULE", "streamlit")  # loaded: a later run of the server
    at = _run(clear=False)
    assert not at.title and not at.caption


def test_progress_text_names_the_stage_counts_overall_share_and_time_left() -> None:
    from app.resources import progress_text
    from ood_core.progress import ProgressTracker, Stage

    now = [0.0]
    tracker = ProgressTracker(then=[Stage("fit", "first scoring of the methods", 8, "method", 500.0)],
                              clock=lambda: now[0])
    assert progress_text(tracker.snapshot()).endswith("planning the build: loading the model…")
    tracker.plan([Stage("a", "demo-letters (test)", 1000, cost=1500.0)])
    tracker.begin("a")
    now[0] = 20.0
    tracker.update("a", 600)  # 900 of 2,000 cost units in 20 s: 1,100 more take about 24 s
    text = progress_text(tracker.snapshot())
    assert text == ("Preparing the demo (first launch) · stage 1 of 2: demo-letters (test), 600 of 1,000 images · "
                    "45.0 % done · about 25 s left")
    tracker.finish("a")
    assert "stage 1 of 2 done" in progress_text(tracker.snapshot())

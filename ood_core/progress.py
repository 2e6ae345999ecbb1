"""One overall progress over a build of several stages: "stage k of n", counts, fraction, ETA.

A build (the demo's first launch in the app) runs stages one after another: a model pass over
each dataset split, the training statistics, the app's first scoring of the methods. Their
plan is known before the first one starts (:func:`ood_core.cache.ensure.ensure_entries` makes
it), so one bar can cover them all. :class:`ProgressTracker` takes the plan, receives
``(stage key, done, total)`` events (the builders' ``on_progress`` callback) and gives
:class:`Snapshot` s: the stage number, its counts, the overall fraction weighted by each
stage's estimated cost, and the time left estimated from the rate so far.

Pure Python with an injected clock, so it is unit-tested without a build
(``tests/unit/test_progress.py``); the app draws the snapshots (``app/resources.py``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable

# The overall fraction stays below this until close(): a bar must not sit at 100 % while work continues.
MAX_OPEN_FRACTION = 0.999


@dataclass(frozen=True)
class Stage:
    """One step of a build.

    key: what progress events name (for a cache entry, the builder's description of it);
    label: what a user reads ("demo-letters (test)"); total: items of work (images,
    statistics, methods), ≥ 1; unit: the item's name, singular; cost: the stage's estimated
    cost relative to the other stages (None: ``total``), what the overall fraction and the
    time left are weighted by.
    """

    key: str
    label: str
    total: int
    unit: str = "image"
    cost: float | None = None

    @property
    def weight(self) -> float:
        return float(self.total if self.cost is None else self.cost)


@dataclass(frozen=True)
class Snapshot:
    """What a progress bar shows at one moment.

    index: the current stage's 1-based number (0 before any stage began); count: stages in
    the plan; stage / done: the current stage and its items done; fraction: overall work done
    in [0, 1], below 1 until the tracker is closed; elapsed_s: seconds since the first stage
    began; eta_s: estimated seconds left (None until enough work has been timed);
    finished: the tracker was closed; note: what happens outside any stage (e.g. planning).
    """

    index: int
    count: int
    stage: Stage | None
    done: int
    fraction: float
    elapsed_s: float
    eta_s: float | None
    finished: bool
    note: str = ""


class ProgressTracker:
    """The overall progress of a planned sequence of stages.

    ``stages``: the plan known now; ``then``: stages that always come last (a caller's own
    steps after a build whose plan comes later, through :meth:`plan`); ``listener``: called
    with a :class:`Snapshot` after every change; ``clock``: seconds (``time.monotonic``).
    The time left is the remaining cost divided by the rate so far (cost done per second since
    the first stage began), given once ``min_eta_fraction`` of the cost is done and
    ``min_eta_s`` have passed. A stage that ends without any event (it had nothing to do) is
    dropped from the plan; an event naming a stage not in the plan adds it (before ``then``).
    """

    def __init__(self, stages: Iterable[Stage] = (), *, then: Iterable[Stage] = (),
                 listener: Callable[[Snapshot], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 min_eta_fraction: float = 0.02, min_eta_s: float = 1.0) -> None:
        self._stages: list[Stage] = []
        self._then: list[Stage] = []
        self._done: dict[str, int] = {}
        self._reported: set[str] = set()  # stages that received at least one event
        self._current: str | None = None
        self._note = ""
        self._started: float | None = None
        self._finished = False
        self._listener = listener
        self._clock = clock
        self.min_eta_fraction = min_eta_fraction
        self.min_eta_s = min_eta_s
        for stage in then:
            self._add(stage, self._then)
        self.plan(stages, notify=False)

    # -- the plan ---------------------------------------------------------------------------------
    @property
    def stages(self) -> list[Stage]:
        """The plan, in order (the ``then`` stages last)."""
        return [*self._stages, *self._then]

    def _find(self, key: str) -> Stage | None:
        return next((s for s in self.stages if s.key == key), None)

    def _add(self, stage: Stage, into: list[Stage]) -> None:
        if stage.total < 1:
            raise ValueError(f"stage {stage.key!r} has total {stage.total}; a stage has at least one item")
        if self._find(stage.key) is None:
            into.append(stage)
            self._done.setdefault(stage.key, 0)

    def plan(self, stages: Iterable[Stage], *, notify: bool = True) -> None:
        """Add ``stages`` (in order, before the ``then`` stages); keys already planned are kept."""
        for stage in stages:
            self._add(stage, self._stages)
        if notify:
            self._notify()

    # -- events -----------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """Say what happens outside any stage (e.g. "preparing the images of demo-letters"); the
        next stage to begin clears it."""
        self._note = text
        self._notify()

    def begin(self, key: str) -> None:
        """The stage ``key`` starts (nothing done yet): it becomes the current one."""
        if self._find(key) is None:
            return  # not planned: its first event (if any) adds it
        self._start_clock()
        self._current = key
        self._note = ""
        self._notify()

    def update(self, key: str, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` items of stage ``key`` are done (``total``: its planned one when
        None; another total replaces the planned one and keeps its cost per item)."""
        stage = self._find(key)
        if stage is None:
            stage = Stage(key, key, max(int(total or 1), 1))
            self._add(stage, self._stages)
        elif total is not None and int(total) != stage.total and int(total) >= 1:
            scaled = None if stage.cost is None else stage.cost * int(total) / stage.total
            self._replace(stage, replace(stage, total=int(total), cost=scaled))
        self._start_clock()
        self._reported.add(key)
        self._current = key
        self._note = ""
        self._done[key] = max(0, int(done))
        self._notify()

    def finish(self, key: str) -> None:
        """The stage ``key`` ended: all of it is done, or, when it received no event (it had
        nothing to do), it leaves the plan."""
        stage = self._find(key)
        if stage is None:
            return
        if key in self._reported:
            self._done[key] = stage.total
        else:
            for stages in (self._stages, self._then):
                if stage in stages:
                    stages.remove(stage)
            self._done.pop(key, None)
        if self._current == key:
            self._current = None
        self._notify()

    def close(self) -> None:
        """Everything is done (the fraction reaches 1)."""
        self._finished = True
        self._current = None
        self._notify()

    # -- reading ----------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        stages = self.stages
        now = self._clock()
        elapsed = 0.0 if self._started is None else max(0.0, now - self._started)
        total_weight = sum(s.weight for s in stages)
        done_weight = sum(s.weight * min(1.0, self._done.get(s.key, 0) / s.total) for s in stages)
        fraction = 1.0 if self._finished else (
            min(MAX_OPEN_FRACTION, done_weight / total_weight) if total_weight > 0 else 0.0)
        eta = None
        if not self._finished and total_weight > 0 and done_weight / total_weight >= self.min_eta_fraction \
                and elapsed >= self.min_eta_s and done_weight > 0:
            eta = (total_weight - done_weight) * elapsed / done_weight
        current = self._find(self._current) if self._current is not None else None
        if current is not None:
            index = stages.index(current) + 1
        else:  # between stages: the last one that ended (0 before any began)
            ended = [i + 1 for i, s in enumerate(stages) if s.key in self._reported]
            index = len(stages) if self._finished else max(ended, default=0)
        return Snapshot(index=index, count=len(stages), stage=current,
                        done=self._done.get(current.key, 0) if current is not None else 0,
                        fraction=fraction, elapsed_s=elapsed, eta_s=eta, finished=self._finished,
                        note=self._note)

    # -- internals --------------------------------------------------------------------------------
    def _replace(self, old: Stage, new: Stage) -> None:
        for stages in (self._stages, self._then):
            if old in stages:
                stages[stages.index(old)] = new

    def _start_clock(self) -> None:
        if self._started is None:
            self._started = self._clock()

    def _notify(self) -> None:
        if self._listener is not None:
            self._listener(self.snapshot())


def time_left_words(seconds: float | None) -> str:
    """An ETA in words: None → ``"estimating the time left"``; 4 → ``"a few seconds left"``;
    42 → ``"about 40 s left"``."""
    if seconds is None or not math.isfinite(seconds):
        return "estimating the time left"
    words = duration_words(seconds)
    return f"{words} left" if words.startswith("a few") else f"about {words} left"


def duration_words(seconds: float | None) -> str:
    """A rough duration for an ETA: ``None`` → ``""``; 4 → ``"a few seconds"``; 42 → ``"40 s"``;
    95 → ``"1 min 35 s"``; 3,700 → ``"1 h 2 min"`` (rounded to what an estimate can promise)."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return "a few seconds"
    rounded = int(round(seconds / 5) * 5)
    if rounded < 60:
        return f"{rounded} s"
    if rounded < 3600:
        minutes, rest = divmod(rounded, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    hours, rest = divmod(int(round(seconds / 60)), 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")

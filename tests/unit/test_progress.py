"""The overall build progress (ood_core.progress): stage k of n, weighted fraction, ETA, and the
plan ensure_entries gives it before the first stage starts."""
from __future__ import annotations

import pytest

from ood_core.progress import MAX_OPEN_FRACTION, ProgressTracker, Snapshot, Stage, duration_words, time_left_words
from tests.conftest import FAKE_ID, FAKE_MODEL, FAKE_OOD_A, FAKE_OOD_B


class Clock:
    """A hand-moved clock (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tracker(*stages: Stage, then: tuple[Stage, ...] = (), **kw) -> tuple[ProgressTracker, Clock, list[Snapshot]]:
    clock, seen = Clock(), []
    return ProgressTracker(stages, then=then, listener=seen.append, clock=clock, **kw), clock, seen


A, B, C = Stage("a", "A", 100), Stage("b", "B", 300), Stage("c", "C", 10, "statistic", cost=100.0)


def test_stage_k_of_n_counts_and_fraction_weighted_by_cost() -> None:
    t, clock, seen = tracker(A, B, C)
    assert t.snapshot().index == 0 and t.snapshot().count == 3 and t.snapshot().fraction == 0.0
    t.begin("a")
    snap = seen[-1]
    assert (snap.index, snap.count, snap.stage, snap.done) == (1, 3, A, 0)
    t.update("a", 50, 100)
    assert seen[-1].fraction == pytest.approx(50 / 500)  # costs 100 + 300 + 100
    t.finish("a")
    t.begin("b")
    t.update("b", 150)
    snap = seen[-1]
    assert (snap.index, snap.stage.label, snap.done, snap.stage.total) == (2, "B", 150, 300)
    assert snap.fraction == pytest.approx(250 / 500)
    t.finish("b")
    t.update("c", 5, 10)  # C weighs its cost (100), not its 10 items
    assert seen[-1].index == 3 and seen[-1].fraction == pytest.approx(450 / 500)


def test_never_at_100_percent_while_open_and_monotone() -> None:
    t, clock, seen = tracker(A, B)
    for key, stage in (("a", A), ("b", B)):
        t.begin(key)
        for done in range(0, stage.total + 1, 25):
            clock.now += 0.5
            t.update(key, done)
        t.finish(key)
    fractions = [s.fraction for s in seen]
    assert fractions == sorted(fractions)  # never goes back
    assert max(fractions) == MAX_OPEN_FRACTION < 1.0  # all work done, but not closed yet
    t.close()
    assert seen[-1].fraction == 1.0 and seen[-1].finished and seen[-1].index == seen[-1].count == 2


def test_eta_from_the_elapsed_rate() -> None:
    t, clock, seen = tracker(A, B, min_eta_fraction=0.02, min_eta_s=1.0)
    t.begin("a")
    t.update("a", 1)
    assert seen[-1].eta_s is None  # 0.25 % done: too early to say
    clock.now += 10.0
    t.update("a", 100)             # 100 of 400 cost units in 10 s → 300 more take 30 s
    assert seen[-1].elapsed_s == pytest.approx(10.0)
    assert seen[-1].eta_s == pytest.approx(30.0)
    clock.now += 10.0
    t.finish("a")
    t.begin("b")
    t.update("b", 100)             # 200 of 400 in 20 s → 20 s left
    assert seen[-1].eta_s == pytest.approx(20.0)
    t.close()
    assert seen[-1].eta_s is None


def test_then_stages_stay_last_and_a_late_plan_goes_before_them() -> None:
    fit = Stage("fit", "scoring", 8, "method")
    t, _, seen = tracker(then=(fit,))
    assert [s.key for s in t.stages] == ["fit"]
    t.plan([A, B])
    assert [s.key for s in t.stages] == ["a", "b", "fit"] and seen[-1].count == 3
    t.plan([A])  # a key already planned is kept once
    assert [s.key for s in t.stages] == ["a", "b", "fit"]


def test_a_stage_with_nothing_to_do_leaves_the_plan_and_an_unplanned_one_joins_it() -> None:
    t, clock, seen = tracker(A, B)
    t.begin("a")
    t.finish("a")  # no event: it had nothing to do (a reused entry)
    assert [s.key for s in t.stages] == ["b"] and seen[-1].count == 1
    t.update("x", 3, 12)  # a rebuild the plan did not expect
    assert [s.key for s in t.stages] == ["b", "x"]
    assert (seen[-1].index, seen[-1].count, seen[-1].stage.total, seen[-1].done) == (2, 2, 12, 3)


def test_a_changed_total_keeps_the_cost_per_item() -> None:
    t, _, seen = tracker(A, C)  # C: 10 statistics, cost 100
    t.update("c", 0, 2)          # only 2 statistics are stale
    stage = next(s for s in t.stages if s.key == "c")
    assert stage.total == 2 and stage.weight == pytest.approx(20.0)


def test_a_note_says_what_happens_between_stages_until_the_next_begins() -> None:
    t, _, seen = tracker(A)
    t.note("preparing the images of A")
    assert seen[-1].note == "preparing the images of A" and seen[-1].stage is None and seen[-1].index == 0
    t.begin("a")
    assert seen[-1].note == "" and seen[-1].stage == A


def test_stage_needs_an_item() -> None:
    with pytest.raises(ValueError):
        ProgressTracker([Stage("empty", "nothing", 0)])


@pytest.mark.parametrize("seconds, words", [(None, ""), (4, "a few seconds"), (42, "40 s"), (58, "1 min"),
                                            (95, "1 min 35 s"), (600, "10 min"), (3700, "1 h 2 min")])
def test_duration_words(seconds, words) -> None:
    assert duration_words(seconds) == words


@pytest.mark.parametrize("seconds, words", [(None, "estimating the time left"), (3, "a few seconds left"),
                                            (42, "about 40 s left"), (125, "about 2 min 5 s left")])
def test_time_left_words(seconds, words) -> None:
    assert time_left_words(seconds) == words


def test_ensure_entries_plans_every_stage_before_the_first_starts(tmp_path, fake_benchmark_names) -> None:
    """The plan (one stage per entry to build, train, the statistics) is known before any work;
    stages then run in that order with counts, and a second call plans nothing."""
    from ood_core.cache.ensure import ensure_entries

    first_plan: list[list[str]] = []
    snapshots: list[Snapshot] = []

    def listen(snap: Snapshot) -> None:
        if snap.stage is not None and not first_plan:  # the first stage begins: the plan is complete
            first_plan.append([s.label for s in t.stages])
        snapshots.append(snap)

    t = ProgressTracker(then=[Stage("app", "scoring", 2, "method")], listener=listen)
    ensure_entries(FAKE_MODEL, FAKE_ID, [FAKE_OOD_A, FAKE_OOD_B], tmp_path, device="cpu", progress=False,
                   batch_size=8, tracker=t, log=lambda _: None)
    assert first_plan == [[f"{FAKE_ID} (val)", f"{FAKE_ID} (test)", f"{FAKE_OOD_A} (test)", f"{FAKE_OOD_B} (test)",
                           f"{FAKE_ID} (train)", f"training statistics of {FAKE_ID}", "scoring"]]
    planning = [s for s in snapshots if s.index == 0]
    assert planning and all(s.note.startswith("preparing the images of") for s in planning[1:])
    assert all(s.count == 7 for s in snapshots if s.index > 0)
    started = [s.index for s in snapshots if s.stage is not None]
    assert started == sorted(started) and set(started) == set(range(1, 7))  # every build stage, in order
    ood_b = [s for s in snapshots if s.stage is not None and s.stage.label == f"{FAKE_OOD_B} (test)"]
    assert ood_b[-1].done == ood_b[-1].stage.total == 15 and ood_b[-1].stage.unit == "image"
    fractions = [s.fraction for s in snapshots]
    assert fractions == sorted(fractions) and fractions[-1] < 1.0  # the "then" stage is still to come

    again = ProgressTracker()
    ensure_entries(FAKE_MODEL, FAKE_ID, [FAKE_OOD_A, FAKE_OOD_B], tmp_path, device="cpu", progress=False,
                   tracker=again, log=lambda _: None)
    assert again.stages == []

"""Every cached loader of the app, keyed by strings.

* ``st.cache_resource``: one object per process shared by every session, never copied:
  the benchmark (cache tensors + fitted scorers), the model (for uploads), each method's
  result at one hyperparameter setting. Treated as read-only.
* ``st.cache_data``: small pickled tables only, with ``max_entries``.
Heavy arguments travel in ``_``-prefixed parameters, which Streamlit does not hash.

Validation data: a benchmark is loaded with ``val-outliers:<id>`` (synthetic outliers made
from the ID validation images, :mod:`ood_core.datasets.outliers`) in ``bench.val_ood`` when
the cache holds it (the embedded demo builds it on its first launch); the "tuned on
validation" view of Compare selects hyperparameters on it, never on a test set, and
:func:`validation_problem` says how to build it when it is missing.

Tuning (:func:`tuned_method`) runs once per (benchmark fingerprint, method, protocol) in the
process and is kept in :func:`_tuning_store`, a ``st.cache_resource`` object, rather than
behind ``st.cache_resource`` itself: the tuning draws a progress bar, which a cached function
would record and replay on every later hit.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Mapping, Sequence

import streamlit as st

from ood_core import benchmark as bench_api
from ood_core.datasets.outliers import VAL_OUTLIERS_PREFIX, val_outliers_name
from ood_core.progress import ProgressTracker, Snapshot, Stage, time_left_words
from ood_core.registry import OODLensError

DEMO_MODEL = "demo-cnn"
DEMO_ID = "demo-mnist"
DEMO_OODS = ("demo-letters", "demo-textures", "demo-photos", "demo-faces", "demo-noise")
DEFAULT_METHODS = ("msp", "energy", "react", "dice", "line", "ash-s", "knn", "vim")

ProgressCallback = Callable[[str, int, int], None]


def hparams_key(hparams: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """A hashable, order-independent key for a hyperparameter dict."""
    return tuple(sorted((hparams or {}).items()))


@st.cache_data(max_entries=8, ttl=60, show_spinner=False)
def cached_configs() -> dict[str, dict[str, list[str]]]:
    """``{model: {dataset: [splits]}}`` of complete cache entries, plus the demo (built on demand)."""
    configs = {DEMO_MODEL: {DEMO_ID: ["test", "val"], **{name: ["test"] for name in DEMO_OODS}}}
    try:
        for model, datasets in bench_api.list_cached().items():
            merged = configs.setdefault(model, {})
            for dataset, splits in datasets.items():
                merged[dataset] = sorted(set(merged.get(dataset, [])) | set(splits))
    except Exception:  # noqa: BLE001 - an unreadable cache folder must not take the app down
        pass
    return configs


def id_datasets(configs: Mapping[str, Mapping[str, list[str]]], model: str) -> list[str]:
    """Datasets of ``model`` with both a ``val`` and a ``test`` split (usable as ID)."""
    return [d for d, splits in configs.get(model, {}).items() if {"val", "test"} <= set(splits)]


def ood_datasets(configs: Mapping[str, Mapping[str, list[str]]], model: str, id_dataset: str) -> list[str]:
    """Datasets of ``model`` with a ``test`` split other than the ID set (validation outliers
    ``val-outliers:*`` excluded: they select hyperparameters, they are never a test set)."""
    usable = {d: splits for d, splits in configs.get(model, {}).items()
              if d != id_dataset and "test" in splits and not d.startswith(VAL_OUTLIERS_PREFIX)}
    return [d for d, splits in usable.items() if not {"val"} <= set(splits)] or list(usable)


def builds_on_demand(model: str) -> bool:
    """Whether the app builds (and repairs) ``model``'s cache itself: only the embedded demo."""
    return model == DEMO_MODEL


def validation_sets(model: str, id_dataset: str) -> tuple[str, ...]:
    """The validation OOD sets to load with a benchmark: ``(val-outliers:<id>,)`` for the demo on
    its own ID set (built on demand) and for a cache that holds that entry; ``()`` otherwise."""
    name = val_outliers_name(id_dataset)
    if builds_on_demand(model) and id_dataset == DEMO_ID:
        return (name,)
    return (name,) if "test" in cached_configs().get(model, {}).get(name, []) else ()


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@st.cache_resource(max_entries=6, show_spinner=False)
def get_benchmark(model: str, id_dataset: str, oods: tuple[str, ...],
                  val_oods: tuple[str, ...] = ()) -> bench_api.Benchmark:
    """The benchmark for (model key, ID, OOD sets, validation OOD sets), loaded once per
    process and shared by all sessions; every entry is checked on loading (weights, images,
    checksums, finite values).

    Never builds (a cached function must not draw the progress bar: Streamlit would replay
    it); :func:`load_benchmark_with_progress` builds (or repairs) the demo cache first.
    """
    return bench_api.load_benchmark(model, id_dataset, list(oods), device=_device(), build_missing=False,
                                    progress=False, val_ood_datasets=list(val_oods))


VALIDATION_RETRY_S = 60.0  # a cache whose validation entry failed to load is tried again after this


@st.cache_resource(show_spinner=False)
def _validation_failures() -> dict[tuple[str, str, tuple[str, ...]], tuple[float, str]]:
    """(model, ID, validation sets) → (time, one-line reason) of a validation entry that failed to
    load (stale, unreadable), so that a rerun does not check every entry again at once."""
    return {}


def load_benchmark_with_progress(model: str, id_dataset: str, oods: tuple[str, ...]) -> bench_api.Benchmark:
    """:func:`get_benchmark` with the validation sets of :func:`validation_sets`; on the demo's
    first launch, build its cache (validation outliers included) under an ``st.progress`` bar.

    Only the embedded demo is built (or, when stale, rebuilt) from the app; other models read
    what ``precompute`` built (whatever its ``limit``), and a stale entry is shown as the
    one-line error naming the command that rebuilds it: the app never runs a model over a
    dataset otherwise. A stale or unreadable validation entry of another model does not stop
    the benchmark from loading: it loads without it, and :func:`validation_problem` says why.
    """
    val_oods = validation_sets(model, id_dataset)
    failures = _validation_failures()
    failure_key = (model, id_dataset, val_oods)
    recent = failures.get(failure_key)
    if val_oods and recent is not None and time.monotonic() - recent[0] < VALIDATION_RETRY_S:
        return get_benchmark(model, id_dataset, tuple(oods))
    try:
        return get_benchmark(model, id_dataset, tuple(oods), val_oods)
    except OODLensError as error:
        if not builds_on_demand(model):
            if not val_oods:
                raise
            bench = get_benchmark(model, id_dataset, tuple(oods))  # the test sets alone: raises if they fail too
            failures[failure_key] = (time.monotonic(), friendly_error(error))
            return bench
    return _build_demo(model, id_dataset, tuple(oods), val_oods)


SCORING_STAGE = "app / first scoring"
# The first scoring of one method on the demo, in the build's cost unit (a forward pass per image):
# measured 50-230 (8 methods in 4-5 s, the build at 100-350 units a second on 2 loaded CPU cores).
SCORING_COST_PER_METHOD = 100.0


def progress_text(snap: Snapshot | None, title: str = "Preparing the demo (first launch)") -> str:
    """The overall progress of a demo build in one line (None: before the tracker exists):
    ``Preparing the demo (first launch) · stage 3 of 10: demo-letters (test), 600 of 1,000 images ·
    34.5 % done · about 40 s left``."""
    from app import fmt

    if snap is None or (snap.index == 0 and snap.stage is None):  # before the first stage
        doing = snap.note if snap is not None and snap.note else "loading the model"
        return f"{title} · planning the build: {doing}…"
    if snap.stage is not None:
        stage = (f"stage {snap.index} of {snap.count}: {snap.stage.label}, "
                 f"{snap.done:,} of {fmt.count(snap.stage.total, snap.stage.unit)}")
    else:
        stage = f"stage {snap.index} of {snap.count} done" + (f"; {snap.note}" if snap.note else "")
    return f"{title} · {stage} · {fmt.rate(snap.fraction)} done · {time_left_words(snap.eta_s)}"


def _build_demo(model: str, id_dataset: str, oods: tuple[str, ...], val_oods: tuple[str, ...]) -> bench_api.Benchmark:
    """Build (or repair) the demo's cache under ONE progress bar over every stage (each entry's
    model pass, the training statistics, then the first scoring of the sidebar's methods, so the
    page opens on computed numbers): "stage k of n", counts, overall % and time left."""
    from app.first_launch import FIRST_LAUNCH, demo_cache_present

    title = "Repairing the demo's cache" if demo_cache_present() else FIRST_LAUNCH
    methods = selection()[3]
    bar = st.progress(0.0, text=progress_text(None, title))
    note = st.empty()  # the build's log lines (e.g. waiting for another session's build)
    scoring = [Stage(SCORING_STAGE, "first scoring of the methods", len(methods), "method",
                     SCORING_COST_PER_METHOD * len(methods))] if methods else []
    tracker = ProgressTracker(then=scoring,
                              listener=lambda snap: bar.progress(snap.fraction, text=progress_text(snap, title)))
    try:
        bench_api.load_benchmark(model, id_dataset, list(oods), device="cpu", build_missing=True, progress=False,
                                 build_device=_device(), repair=True, log=lambda line: note.caption(line),
                                 val_ood_datasets=list(val_oods), tracker=tracker)
        bench = get_benchmark(model, id_dataset, tuple(oods), val_oods)
        if methods:
            tracker.begin(SCORING_STAGE)
            for done, method in enumerate(methods, 1):
                try:
                    evaluate(bench, method, None, oods)  # what Compare shows first, kept in method_result
                except Exception:  # noqa: BLE001 - the page shows this method's error itself
                    pass
                tracker.update(SCORING_STAGE, done)
        tracker.close()
    finally:
        bar.empty()
        note.empty()
    return bench


def validation_problem(bench: bench_api.Benchmark) -> str | None:
    """None when ``bench`` holds its validation outliers; otherwise one Markdown line saying why
    it does not, with the ``python -m precompute`` command that builds them (same model,
    checkpoint, ``--limit``, ODIN option and cache folder as the cached benchmark)."""
    from ood_core.cache.provenance import ModelRef, precompute_command

    name = val_outliers_name(bench.id_dataset)
    if name in bench.val_ood:
        return None
    ref = ModelRef(bench.model, bench.model_fingerprint, bench.checkpoint)
    command = precompute_command(ref, bench.id_dataset, [name], limit=bench.limit,
                                 with_odin=bench.id_test.odin_logits is not None, cache_root=bench.cache_root)
    failure = _validation_failures().get((bench.model_key or bench.model, bench.id_dataset, (name,)))
    why = (f"its validation entry could not be read ({failure[1]})" if failure is not None
           else f"this cache has no `{name}` entry (synthetic outliers made from the {bench.id_dataset} val split)")
    return (f"Tuning on validation needs the validation outliers `{name}`: {why}. Build them with\n\n"
            f"`{command}`\n\nthen reload the page.")


@st.cache_resource(max_entries=256, show_spinner=False)
def method_result(fingerprint: str, method: str, hp_key: tuple[tuple[str, Any], ...],
                  oods: tuple[str, ...], _bench: bench_api.Benchmark) -> bench_api.MethodResult:
    """``evaluate_method`` at one setting, shared read-only by every session."""
    return bench_api.evaluate_method(_bench, method, dict(hp_key), ood=list(oods))


def evaluate(bench: bench_api.Benchmark, method: str, hparams: Mapping[str, Any] | None = None,
             oods: tuple[str, ...] | None = None) -> bench_api.MethodResult:
    """Cached ``evaluate_method`` keyed by the benchmark fingerprint and the resolved hyperparameters."""
    names = tuple(oods) if oods is not None else tuple(bench.ood)
    return method_result(bench.fingerprint + "|" + bench.model, method, hparams_key(hparams), names, _bench=bench)


def preview_of(bench: bench_api.Benchmark, oods: Sequence[str]) -> tuple[Any, bench_api.Benchmark] | None:
    """``(subsample, preview benchmark)`` when a slider move on ``bench`` (scoring ``oods``) shows a
    preview first (``ood_core.preview.needs_preview``: a large benchmark on the CPU), else None
    (on a GPU and for the demo and CIFAR caches: every move re-scores everything)."""
    from ood_core import preview

    if not preview.needs_preview(bench, oods):
        return None
    return _preview(bench.fingerprint + "|" + bench.model, preview.PREVIEW_ROWS, preview.PREVIEW_SEED, _bench=bench)


@st.cache_resource(max_entries=6, show_spinner=False)
def _preview(fingerprint: str, budget: int, seed: int, _bench: bench_api.Benchmark):
    """The preview's subsample and sub-benchmark, built once per loaded benchmark (its tensors are
    index-selects made once; it shares the benchmark's fitted scorers)."""
    from ood_core import preview

    subsample = preview.benchmark_subsample(_bench, budget, seed)
    return subsample, preview.preview_benchmark(_bench, subsample)


class _ExactJobs:
    """Exact evaluations of a previewed benchmark, run off the script thread on one worker (the
    CPU is the limit: two at once only share it), shared by every session.

    A script waits for its job while touching the page every :data:`EXACT_POLL_S` (each Streamlit
    call lets a newer slider move stop the run at once), so a move never waits for the exact
    figures of an older one. A job that has not started when its session asks for others is
    cancelled; a running one finishes and is kept (a later move back to that value reuses it).
    Failed jobs are not kept (the next run tries again, as ``st.cache_resource`` does).
    """

    def __init__(self, max_entries: int = 64) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.max_entries = max_entries
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ood-lens-exact")
        self._jobs: OrderedDict[Hashable, tuple[Any, str]] = OrderedDict()  # key → (future, session)
        self._lock = threading.Lock()

    def finished(self, key: Hashable) -> Any | None:
        """The result of ``key`` when its job has finished without error, else None."""
        with self._lock:
            found = self._jobs.get(key)
        future = found[0] if found is not None else None
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def submit(self, key: Hashable, session: str, work: Callable[[], Any], keep: set[Hashable]):
        """The future of ``key`` (started now with ``work`` unless known); first cancels every job
        of ``session`` that has not started and is not in ``keep``."""
        with self._lock:
            for other, (future, owner) in list(self._jobs.items()):
                if owner == session and other not in keep and future.cancel():
                    del self._jobs[other]
            found = self._jobs.get(key)
            if found is not None and not found[0].cancelled() and not (found[0].done() and found[0].exception()):
                self._jobs.move_to_end(key)
                return found[0]
            future = self._executor.submit(work)
            self._jobs[key] = (future, session)
            while len(self._jobs) > self.max_entries:
                self._jobs.popitem(last=False)
            return future


EXACT_POLL_S = 0.2


@st.cache_resource(show_spinner=False)
def _exact_jobs() -> _ExactJobs:
    return _ExactJobs()


def _session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


Requests = Sequence[tuple[str, Mapping[str, Any] | None]]


def _exact_keys(bench: bench_api.Benchmark, requests: Requests, oods: Sequence[str]) -> list[tuple]:
    """One key per request, from the *resolved* hyperparameters: a setting at the defaults and the
    defaults themselves (the first load of the page) are one job, not two of seconds each."""
    fingerprint = bench.fingerprint + "|" + bench.model
    return [(fingerprint, method, hparams_key(bench.scorer(method).resolve(hparams)), tuple(oods))
            for method, hparams in requests]


def finished_exact(bench: bench_api.Benchmark, requests: Requests,
                   oods: Sequence[str]) -> list[bench_api.MethodResult] | None:
    """The exact results of every ``(method, hparams)`` when all are computed already (a move back
    to an earlier value: no preview needed), else None. Starts nothing."""
    found = [_exact_jobs().finished(key) for key in _exact_keys(bench, requests, oods)]
    return None if any(result is None for result in found) else found


def exact_results(bench: bench_api.Benchmark, requests: Requests, oods: tuple[str, ...],
                  on_wait: Callable[[float], None]) -> list[bench_api.MethodResult]:
    """``evaluate_method`` of each ``(method, hparams)`` on the full ``bench``, computed off the
    script thread (:class:`_ExactJobs`); ``on_wait(seconds so far)`` runs every
    :data:`EXACT_POLL_S` until all are ready (it must draw something: that is where a newer
    slider move stops this run). Raises what the evaluation raised."""
    from concurrent.futures import wait

    jobs, session = _exact_jobs(), _session_id()
    keys = _exact_keys(bench, requests, oods)
    started = time.monotonic()
    while True:
        # (re)submitted each round: a job another session cancelled before it started runs again
        futures = [jobs.submit(key, session, _evaluation(bench, method, hparams, oods), set(keys))
                   for key, (method, hparams) in zip(keys, requests)]
        _, pending = wait(futures, timeout=EXACT_POLL_S)
        if not pending and not any(future.cancelled() for future in futures):
            return [future.result() for future in futures]
        on_wait(time.monotonic() - started)


def _evaluation(bench: bench_api.Benchmark, method: str, hparams: Mapping[str, Any] | None,
                oods: tuple[str, ...]) -> Callable[[], bench_api.MethodResult]:
    return lambda: bench_api.evaluate_method(bench, method, dict(hparams or {}), ood=list(oods))


class _TuningStore:
    """A bounded, thread-safe LRU of :class:`~ood_core.tuning.TunedMethod` shared by every
    session, with one lock per key so that two sessions never tune the same thing at once."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key]

    def key_lock(self, key: Hashable) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                old, _ = self._entries.popitem(last=False)
                self._key_locks.pop(old, None)


@st.cache_resource(show_spinner=False)
def _tuning_store() -> _TuningStore:
    return _TuningStore()


def validation_protocol(bench: bench_api.Benchmark):
    """The Compare page's protocol: ``bench.id_dataset`` val vs ``val-outliers:<id>``, lowest FPR95."""
    from ood_core.tuning import Protocol

    return Protocol("validation", (val_outliers_name(bench.id_dataset),))


def _tuning_key(bench: bench_api.Benchmark, method: str, protocol: Any) -> tuple:
    return (bench.fingerprint + "|" + bench.model, method, protocol)


def is_tuned(bench: bench_api.Benchmark, method: str, protocol: Any) -> bool:
    """Whether :func:`tuned_method` has this result already (no tuning, no progress to show)."""
    return _tuning_store().get(_tuning_key(bench, method, protocol)) is not None


def tuning_size(bench: bench_api.Benchmark, method: str) -> int:
    """How many settings tuning ``method`` scores (``ood_core.tuning.grid_size``)."""
    from ood_core.tuning import grid_size

    return grid_size(bench.scorer(method))


def tuned_method(bench: bench_api.Benchmark, method: str, protocol: Any,
                 on_point: Callable[[], None] | None = None):
    """``ood_core.tuning.tune_method``, once per (benchmark fingerprint, method, protocol) in the
    process, shared read-only by every session; ``on_point()`` after each scored setting (only
    when it runs)."""
    from ood_core.tuning import tune_method

    store = _tuning_store()
    key = _tuning_key(bench, method, protocol)
    found = store.get(key)
    if found is not None:
        return found
    with store.key_lock(key):
        found = store.get(key)  # another session may have tuned it while this one waited
        if found is None:
            found = tune_method(bench, method, protocol, on_point=on_point)
            store.put(key, found)
    return found


@st.cache_resource(max_entries=32, show_spinner=False)
def _bootstrap(fingerprint: str, mode: str, settings: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...],
               oods: tuple[str, ...], exclude: tuple[str, ...], n_boot: int, seed: int,
               _results: Mapping[str, bench_api.MethodResult]):
    from ood_core.bootstrap import bootstrap_table

    return bootstrap_table({m: (r.id_scores, {o: r.ood_scores[o] for o in oods}) for m, r in _results.items()},
                           n_boot=n_boot, seed=seed, exclude_from_best=exclude)


def bootstrap(bench: bench_api.Benchmark, results: Mapping[str, bench_api.MethodResult], oods: Sequence[str],
              mode: Hashable = "defaults", n_boot: int = 1000, seed: int = 0):
    """``ood_core.bootstrap.bootstrap_table`` of the shown ``results`` (method → result, in table
    order; degenerate settings never best), cached by the benchmark fingerprint, the mode
    (``"defaults"`` or the tuning protocol), each method's setting and the OOD sets."""
    settings = tuple((m, hparams_key(r.hparams)) for m, r in results.items())
    exclude = tuple(m for m, r in results.items() if r.degenerate)
    mode_key = mode if isinstance(mode, str) else repr(mode)  # a Protocol's repr names every field
    return _bootstrap(bench.fingerprint + "|" + bench.model, mode_key, settings, tuple(oods), exclude, n_boot, seed,
                      _results=results)


def scorer_summary(bench: bench_api.Benchmark, method: str) -> tuple[str, str]:
    """(title, one-line summary) of a method's scorer declaration."""
    scorer = bench.scorer(method)
    return scorer.title or method, scorer.summary


@st.cache_resource(max_entries=4, show_spinner=False)
def get_model(model_key: str, fingerprint: str):
    """The model of a cache key (its checkpoint too), in eval mode, for scoring uploads (the only
    place the app runs it); ``fingerprint``: the benchmark's, which these weights must have."""
    from ood_core.cache.provenance import load_model
    from ood_core.cache.store import StaleCacheError

    net, ref = load_model(model_key)
    if ref.fingerprint != fingerprint:
        raise StaleCacheError(f"{model_key}'s weights changed since its cache was loaded; reload the page")
    return net.eval().to(_device())


@st.cache_resource(max_entries=8, show_spinner=False)
def get_dataset(name: str, split: str):
    """A dataset object (for re-loading a cached row's image by its ``source_index``)."""
    from ood_core.datasets import create_dataset

    return create_dataset(name, split)


@st.cache_data(max_entries=64, show_spinner=False)
def dataset_description(name: str) -> str:
    try:
        from ood_core.datasets import dataset_info

        return dataset_info(name).description
    except Exception:  # noqa: BLE001 - a description is optional
        return ""


def method_title(name: str) -> str:
    """A scorer's display title (falls back to the registry name)."""
    try:
        from ood_core.scorers import create_scorer

        return create_scorer(name).title or name
    except Exception:  # noqa: BLE001
        return name


def friendly_error(error: Exception) -> str:
    """One line for ``st.error``."""
    if isinstance(error, OODLensError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def selection() -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """The sidebar's (model, ID set, OOD sets, methods) from session state."""
    state = st.session_state
    return (state.get("model", DEMO_MODEL), state.get("id", DEMO_ID), tuple(state.get("ood", DEMO_OODS)),
            tuple(state.get("methods", DEFAULT_METHODS)))


def selected_benchmark() -> bench_api.Benchmark | None:
    """The benchmark of the sidebar's selection, or None after showing a one-line ``st.error``."""
    model, id_dataset, oods, _ = selection()
    if not oods:
        st.warning("Choose at least one OOD set in the sidebar.")
        return None
    try:
        return load_benchmark_with_progress(model, id_dataset, oods)
    except Exception as error:  # noqa: BLE001 - shown as one line, the rest of the app stays usable
        st.error(f"Cannot load {model} / {id_dataset}: {friendly_error(error)}")
        return None


def selected() -> tuple[bench_api.Benchmark, tuple[str, ...], tuple[str, ...]] | None:
    """(benchmark, OOD sets, methods) of the sidebar's selection, or None after saying why."""
    bench = selected_benchmark()
    if bench is None:
        return None
    _, _, oods, methods = selection()
    return bench, oods, methods

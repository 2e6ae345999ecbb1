"""Every cached loader of the app, keyed by strings.

* ``st.cache_resource``: one object per process shared by every session, never copied:
  the benchmark (cache tensors + fitted scorers), the model (for uploads), each method's
  result at one hyperparameter setting. Treated as read-only.
* ``st.cache_data``: small pickled tables only, with ``max_entries``.
Heavy arguments travel in ``_``-prefixed parameters, which Streamlit does not hash.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import streamlit as st

from ood_core import benchmark as bench_api
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
    """Datasets of ``model`` with a ``test`` split other than the ID set."""
    return [d for d, splits in configs.get(model, {}).items()
            if d != id_dataset and "test" in splits and not {"val"} <= set(splits)] or \
        [d for d, splits in configs.get(model, {}).items() if d != id_dataset and "test" in splits]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@st.cache_resource(max_entries=6, show_spinner=False)
def get_benchmark(model: str, id_dataset: str, oods: tuple[str, ...]) -> bench_api.Benchmark:
    """The benchmark for (model key, ID, OOD sets), loaded once per process and shared by all
    sessions; every entry is checked on loading (weights, images, checksums, finite values).

    Never builds (a cached function must not draw the progress bar: Streamlit would replay
    it); :func:`load_benchmark_with_progress` builds (or repairs) the demo cache first.
    """
    return bench_api.load_benchmark(model, id_dataset, list(oods), device=_device(), build_missing=False,
                                    progress=False)


def load_benchmark_with_progress(model: str, id_dataset: str, oods: tuple[str, ...]) -> bench_api.Benchmark:
    """:func:`get_benchmark`; on the demo's first launch, build its cache under an ``st.progress`` bar.

    Only the embedded demo is built (or, when stale, rebuilt) from the app; other models read
    what ``precompute`` built (whatever its ``limit``), and a stale entry is shown as the
    one-line error naming the command that rebuilds it: the app never runs a model over a
    dataset otherwise.
    """
    try:
        return get_benchmark(model, id_dataset, tuple(oods))
    except OODLensError:
        if model != DEMO_MODEL:
            raise
    bar = st.progress(0.0, text="Building the demo feature cache (first launch only)…")

    def on_progress(description: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Building the demo feature cache: {description}")

    try:
        bench_api.load_benchmark(model, id_dataset, list(oods), device="cpu", build_missing=True, progress=False,
                                 on_progress=on_progress, build_device=_device(), repair=True, log=lambda _: None)
    finally:
        bar.empty()
    return get_benchmark(model, id_dataset, tuple(oods))


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

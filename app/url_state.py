"""URL query parameters ↔ session state, in one place, so a view is shared by its address.

Query parameters (all optional)::

    page=tune  model=demo-cnn  id=demo-mnist  ood=demo-letters,demo-noise
    methods=msp,energy,line    method=line    p.delta=1.5  p.use_wp=false

``read_once()`` copies them into ``st.session_state`` at the start of a session;
``write()`` puts the current state back after the widgets ran. Hyperparameters of the tuned
method live in the session under ``param_<name>`` (the keys of their widgets) and in the
URL as ``p.<name>``.
"""
from __future__ import annotations

from typing import Any, Iterable

import streamlit as st

from ood_core.params import HyperparameterError, Param

LIST_KEYS = ("ood", "methods")
SCALAR_KEYS = ("page", "model", "id", "method")
PARAM_PREFIX = "param_"      # session-state / widget key of a tuned hyperparameter
URL_PARAM_PREFIX = "p."      # its query-parameter name
_LOADED = "_url_loaded"
_PENDING = "_url_params"     # hyperparameters from the URL, applied when their widgets are built
PERSISTENT_KEYS = ("model", "id", "ood", "methods", "method")


def read_once() -> None:
    """Copy the URL's query parameters into session state, once per session."""
    state = st.session_state
    if state.get(_LOADED):
        return
    state[_LOADED] = True
    query = st.query_params
    for key in SCALAR_KEYS:
        if key in query and query[key]:
            state[f"url_{key}" if key == "page" else key] = query[key]
    for key in LIST_KEYS:
        if key in query:
            state[key] = [v for v in query[key].split(",") if v]
    state[_PENDING] = {k[len(URL_PARAM_PREFIX):]: v for k, v in query.to_dict().items()
                       if k.startswith(URL_PARAM_PREFIX)}


def keep_alive(keys: Iterable[str] = PERSISTENT_KEYS) -> None:
    """Re-assign widget-backed values so Streamlit keeps them while their widget is off-page."""
    state = st.session_state
    for key in keys:
        if key in state:
            state[key] = state[key]
    for key in [k for k in state if isinstance(k, str) and k.startswith(PARAM_PREFIX)]:
        state[key] = state[key]


def initial_page() -> str | None:
    """The page named by the URL on the session's first run (consumed once)."""
    return st.session_state.pop("url_page", None)


def parse_param(param: Param, raw: Any) -> tuple[Any, str | None]:
    """(value, notice): a URL string validated like every other hyperparameter value
    (:meth:`Param.validate`); an invalid one is dropped for the default, and the notice says so."""
    try:
        return param.validate(raw), None
    except HyperparameterError as error:
        return param.default, (f"Ignored {URL_PARAM_PREFIX}{param.name}={raw} from the address ({error}); "
                                f"using the default {format_value(param.default)}.")


def pending_param(name: str) -> Any | None:
    """A hyperparameter value given in the URL and not yet applied (then forgotten)."""
    return st.session_state.get(_PENDING, {}).pop(name, None)


def clear_params() -> None:
    """Forget every tuned hyperparameter (when the tuned method changes)."""
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(PARAM_PREFIX)]:
        del st.session_state[key]


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def set_page(page: str) -> None:
    """Remember the current page (its ``url_path``) for :func:`write`."""
    st.session_state["_current_page"] = page


def write() -> None:
    """Mirror the state into the URL (only keys whose value changed are sent).

    Safe to call from a fragment: a slider moved inside one updates the address too.
    """
    state = st.session_state
    page = state.get("_current_page")
    params = {k[len(PARAM_PREFIX):]: v for k, v in state.items()
              if isinstance(k, str) and k.startswith(PARAM_PREFIX)}
    wanted: dict[str, str] = {}
    if page:
        wanted["page"] = page
    for key in ("model", "id", "method"):
        if state.get(key):
            wanted[key] = str(state[key])
    for key in LIST_KEYS:
        if key in state:
            wanted[key] = ",".join(state[key])
    for name, value in params.items():
        wanted[URL_PARAM_PREFIX + name] = format_value(value)
    query = st.query_params
    current = query.to_dict()
    for key in [k for k in current if k not in wanted and (k in SCALAR_KEYS or k in LIST_KEYS
                                                             or k.startswith(URL_PARAM_PREFIX))]:
        del query[key]
    for key, value in wanted.items():
        if current.get(key) != value:
            query[key] = value

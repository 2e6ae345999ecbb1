"""Widgets built from a scorer's :class:`Param` declarations (never written per method).

float → slider (low/high/step); int → slider; bool → toggle; choice → selectbox;
``log=True`` → select_slider over log-spaced values. Every widget's key is
``param_<name>`` (stable for browser tests and mirrored in the URL as ``p.<name>``).
A param with unit ``"activation"`` is an absolute activation value: its caption shows the
percentile of ID-validation activations it corresponds to.

Only the params with an effect are drawn (:meth:`Param.is_active`: ReAct's ``clip_value``
only while ``clip_by`` is ``"value"``); a hidden one keeps its value in session state and is
still returned (it has no effect on the score). Params are drawn in the scorer's display order
(:meth:`Scorer.display_params`), one display block (a group, or a switch with what it
enables) per column, blocks filling the columns row by row.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import streamlit as st
from torch import Tensor

from app import fmt, url_state
from ood_core import stages
from ood_core.params import Param, display_blocks, visible_params

LOG_STEPS = 49


def widget_key(param: Param) -> str:
    return f"{url_state.PARAM_PREFIX}{param.name}"


def log_options(param: Param) -> list[float]:
    """Log-spaced values over [low, high] (3 significant digits), including the default."""
    low = float(param.low if param.low is not None else 1e-3)
    high = float(param.high if param.high is not None else 1e3)
    values = {float(f"{v:.3g}") for v in np.geomspace(max(low, 1e-12), high, LOG_STEPS)}
    values.add(float(param.default))
    return sorted(v for v in values if low <= v <= high) or [float(param.default)]


def _snap(param: Param, value: Any) -> Any:
    """``value`` (already valid for ``param``) placed on ``param``'s widget (a log option, ...)."""
    value = param.validate(value)
    if param.kind in {"float", "int"} and param.log:
        options = log_options(param)
        return min(options, key=lambda o: abs(np.log(max(o, 1e-12)) - np.log(max(float(value), 1e-12))))
    if param.kind == "float":
        return float(value)
    if param.kind == "int":
        return int(value)
    return value


def _initialise(param: Param) -> str:
    """Put the widget's starting value (URL, else the current one, else the default) into state."""
    key = widget_key(param)
    from_url = url_state.pending_param(param.name)
    if from_url is not None:
        value, notice = url_state.parse_param(param, from_url)
        if notice:
            st.warning(notice, icon="⚠️")
        st.session_state[key] = _snap(param, value)
    elif key not in st.session_state:
        st.session_state[key] = _snap(param, param.default)
    else:
        st.session_state[key] = _snap(param, st.session_state[key])
    return key


def param_widget(param: Param, *, activations_sorted: Tensor | None = None, container: Any = st,
                 initialised: bool = False) -> Any:
    """Draw one hyperparameter's widget and return its current value."""
    key = widget_key(param) if initialised else _initialise(param)
    label = param.label or param.name
    if param.unit and param.unit not in {"activation"}:
        label = f"{label} [{param.unit}]"
    help_text = param.help or None
    if param.kind == "bool":
        value = container.toggle(label, key=key, help=help_text)
    elif param.kind == "choice":
        value = container.selectbox(label, list(param.choices), key=key, help=help_text, format_func=str)
    elif param.log:
        value = container.select_slider(label, options=log_options(param), key=key, help=help_text,
                                        format_func=lambda v: f"{v:g}")
    elif param.kind == "int":
        value = container.slider(label, min_value=int(param.low if param.low is not None else 0),
                                 max_value=int(param.high if param.high is not None else 100),
                                 step=int(param.step or 1), key=key, help=help_text)
    else:
        low = float(param.low if param.low is not None else 0.0)
        high = float(param.high if param.high is not None else 1.0)
        step = float(param.step) if param.step else (high - low) / 100.0
        value = container.slider(label, min_value=low, max_value=high, step=step, key=key, help=help_text)
    if param.unit == "activation" and activations_sorted is not None and activations_sorted.numel():
        share = stages.value_to_percentile(activations_sorted, float(value))
        container.caption(f"{label} = {fmt.number(value)} ≈ {fmt.percentile(share)} of ID-validation activations")
    return value


def param_widgets(params: Sequence[Param], *, activations_sorted: Tensor | None = None,
                  columns: int = 1) -> dict[str, Any]:
    """A method's widgets, ``params`` in display order (:meth:`Scorer.display_params`); returns
    ``{name: value}`` for every param, the hidden (inactive) ones at their kept values.

    Each display block goes in one column (its switch above what it enables); the blocks fill
    ``columns`` columns row by row, a row per ``st.columns`` so that the order reads left to right.
    """
    if not params:
        st.caption("This method has no hyperparameters.")
        return {}
    # every value first (URL, kept or default), hidden ones included: the visible set depends on
    # the controllers' current values, and re-assigning a hidden value keeps it in session state
    # (a fragment rerun otherwise drops the state of a widget it did not draw: δ back at default)
    values = {p.name: st.session_state[_initialise(p)] for p in params}
    shown = visible_params(params, values)
    blocks = display_blocks(shown)
    for start in range(0, len(blocks), columns):
        slots = st.columns(columns) if columns > 1 else [st]
        for slot, block in zip(slots, blocks[start:start + columns]):
            for p in block:
                values[p.name] = param_widget(p, activations_sorted=activations_sorted, container=slot,
                                              initialised=True)
    return values


def changed_from_defaults(values: Mapping[str, Any], params: Sequence[Param]) -> dict[str, Any]:
    """The values that differ from their declared defaults."""
    return {p.name: values[p.name] for p in params if p.name in values and values[p.name] != p.default}

"""URL query parameters ↔ session state, in one place, so a view is shared by its address.

The page is the address's path (``/``: Compare, ``/tune``, ``/neurons``, ``/inspect``,
``/sweep``); every control of every page is a query parameter. :data:`CONTROLS` is the one
table: widget key (the views keep theirs) → stable URL key → how a URL value is parsed and
checked. A value equal to its default is left out of the address, so an untouched view has a
clean URL and moving between pages adds exactly one browser-history entry (Back / Forward then
walk the pages; each entry restores the view it was written for).

::

    URL key       widget key           value (default: left out of the address)
    ------------- -------------------- ------------------------------------------------------------
    ``model``     model                a cached model (demo-cnn)
    ``id``        id                   its ID dataset (demo-mnist)
    ``ood``       ood                  OOD sets, comma-separated (the five demo sets); empty ``ood=``: none chosen
    ``methods``   methods              methods, comma-separated (msp,energy,react,dice,line,ash-s,knn,vim)
    ``method``    method               the method of Tune and Sweep (line)
    ``p.<name>``  param_<name>         a hyperparameter of that method, clamped to its range (its declared default)
    ``mode``      compare_mode         Compare: ``tuned`` (defaults)
    ``ci``        compare_ci           Compare: 95 % intervals, ``on`` / ``off`` (off)
    ``pos``       ood_positive         Compare: FPR95 with OOD as positive, ``on`` / ``off`` (off)
    ``roc``       roc_ood              Compare: the ROC's OOD set, one of ``ood`` (the first)
    ``latex``     export_latex_layout  Compare: LaTeX layout, ``blocks`` / ``average`` (blocks)
    ``n.top``     neurons_top          Neurons: x, top-x % neurons per class, 1–50 step 1 (10)
    ``n.over``    neurons_over         Neurons: o, % of classes, 0–90 step 5 (20)
    ``n.share``   neurons_denominator  Neurons: ``D`` / ``important`` (D)
    ``n.p_a``     neurons_p_a          Neurons: p_a of the LINe mask view, 0–99 step 1 (LINe's default)
    ``s.x``       sweep_axis1          Sweep: first axis, a hyperparameter of ``method`` (its first)
    ``s.y``       sweep_axis2          Sweep: second axis or ``(none)`` ((none))
    ``s.n``       sweep_points         Sweep: points per axis, 2–12 (5)
    ``s.val``     sweep_val_ood        Sweep: the validation OOD set, one of ``ood`` (the last)
    ``s.by``      sweep_objective      Sweep: ``fpr95`` / ``auroc`` (fpr95)
    ``s.show``    sweep_figure         Sweep: the figure shown (the selection's validation figure)
    ``s.run``     sweep_ran            Sweep: ``on`` = the result is shown; opening the link re-runs the sweep
    ``i.src``     inspect_source       Inspect: ``upload`` / ``sample`` (upload)
    ``i.set``     inspect_dataset      Inspect: the sampled dataset, the ID set or one of ``ood`` (the ID set)
    ``i.idx``     inspect_index        Inspect: the sample's index, clamped to 0 – len − 1 (0)
    ``i.hist``    inspect_method       Inspect: the method whose histogram is shown (the first)
    ``page``      —                    legacy ``/?page=tune``: opens that page, read once, never written

Flow: :func:`sync` (start of each run in ``main``) reads the address on a session's first run
and on a Back / Forward run (``is_history_navigation``): a value the table can check alone is
applied at once; one whose options are known only on its page (``roc`` needs the chosen OOD
sets) waits, *pending*, until the view calls :func:`control` just before building the widget.
A bad value is clamped to its range (``p.p_a=500`` → 99) or replaced by the default, and an
unknown key is dropped, each with a visible notice. :func:`write` (end of each run and of each
fragment with controls) mirrors the state back into the address in one update.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import streamlit as st

from ood_core.params import HyperparameterError, Param

Kind = Literal["choice", "list", "bool", "int", "float"]
PARAM_PREFIX = "param_"      # session-state / widget key of a tuned hyperparameter
URL_PARAM_PREFIX = "p."      # its query-parameter name
LEGACY_PAGE = "page"         # ``?page=<slug>``: read on a session's first run, never written
NOTICE_ICON = "⚠️"

_LOADED = "_url_loaded"
_PENDING = "_url_pending"          # {widget key: raw URL value} not applied yet (options unknown so far)
_PENDING_PARAMS = "_url_params"    # {param name: raw URL value}, applied when its widget is built
_DEFAULTS = "_url_defaults"        # {widget key: default} registered by control() (dynamic defaults)
_PARAM_DEFAULTS = "_url_param_defaults"  # {param name: default} of the method whose widgets were built
_NOTICES = "_url_notices"          # notices to show at the top of the page (kept across a switch_page)
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Control:
    """One control: its widget key, its URL key and how a URL value is checked.

    ``choices`` / ``low``–``high`` given here make the control *static* (checked as soon as the
    address is read); otherwise the view passes them to :func:`control`. ``aliases`` maps a
    short URL word to the widget's value (``sample`` → "Sample from a dataset"); ``default``
    None: the view's (:func:`control`), else the first option.
    """

    key: str
    url: str
    kind: Kind
    default: Any = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    aliases: Mapping[str, Any] = field(default_factory=dict)
    marker: bool = False  # not a widget: a request read once by the view (:func:`requested`)

    @property
    def static(self) -> bool:
        if self.marker:
            return False
        if self.kind == "bool":
            return True
        if self.kind == "choice":
            return bool(self.choices)
        if self.kind in ("int", "float"):
            return self.low is not None and self.high is not None and self.default is not None
        return False


CONTROLS: tuple[Control, ...] = (
    # sidebar (shared by every page)
    Control("model", "model", "choice"),
    Control("id", "id", "choice"),
    Control("ood", "ood", "list"),
    Control("methods", "methods", "list"),
    Control("method", "method", "choice", default="line"),
    # Compare
    Control("compare_mode", "mode", "choice", default="defaults", choices=("defaults", "tuned")),
    Control("compare_ci", "ci", "bool", default=False),
    Control("ood_positive", "pos", "bool", default=False),
    Control("roc_ood", "roc", "choice"),
    Control("export_latex_layout", "latex", "choice"),
    # Neurons
    Control("neurons_top", "n.top", "float", default=10.0, low=1.0, high=50.0, step=1.0),
    Control("neurons_over", "n.over", "float", default=20.0, low=0.0, high=90.0, step=5.0),
    Control("neurons_denominator", "n.share", "choice", default="D", choices=("D", "important")),
    Control("neurons_p_a", "n.p_a", "float", low=0.0, high=99.0, step=1.0),
    # Sweep
    Control("sweep_axis1", "s.x", "choice"),
    Control("sweep_axis2", "s.y", "choice", default="(none)"),
    Control("sweep_points", "s.n", "int", default=5, low=2, high=12, step=1),
    Control("sweep_val_ood", "s.val", "choice"),
    Control("sweep_objective", "s.by", "choice", default="fpr95", choices=("fpr95", "auroc")),
    Control("sweep_figure", "s.show", "choice"),
    Control("sweep_ran", "s.run", "bool", default=False, marker=True),
    # Inspect
    Control("inspect_source", "i.src", "choice",
            aliases={"upload": "Upload", "sample": "Sample from a dataset"}),
    Control("inspect_dataset", "i.set", "choice"),
    Control("inspect_index", "i.idx", "int", default=0, low=0, step=1),
    Control("inspect_method", "i.hist", "choice"),
)
BY_KEY: dict[str, Control] = {c.key: c for c in CONTROLS}
BY_URL: dict[str, Control] = {c.url: c for c in CONTROLS}
# Compare's bool controls write on/off (the URL words of old links); the others' words are the same
_BOOL_WORDS = ("on", "off")


# -- reading the address ------------------------------------------------------------------------

def _history_navigation() -> bool:
    """Whether this run was started by the browser's Back / Forward (the frontend's popstate;
    Streamlit 1.67 sets ``is_history_navigation`` on the run's context)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # pragma: no cover - an older layout of Streamlit
        return False
    ctx = get_script_run_ctx()
    return bool(getattr(ctx, "is_history_navigation", False))


def sync() -> None:
    """Apply the address to the session: on its first run, and on each Back / Forward run (the
    history entry's address is then the view to show; what it does not name is at its default)."""
    state = st.session_state
    first = not state.get(_LOADED)
    if not first and not _history_navigation():
        return
    state[_LOADED] = True
    query = st.query_params.to_dict()  # last value of each key
    pending: dict[str, str] = {}
    pending_params: dict[str, str] = {}
    notices: list[str] = []
    if first and query.get(LEGACY_PAGE):
        state["url_page"] = query[LEGACY_PAGE]
    if not first:  # a history entry: what it leaves out is at its default
        for spec in CONTROLS:
            if spec.url not in query and spec.key in state:
                del state[spec.key]
        for key in [k for k in state if isinstance(k, str) and k.startswith(PARAM_PREFIX)]:
            if URL_PARAM_PREFIX + key[len(PARAM_PREFIX):] not in query:
                del state[key]
    known_params = (_param_names(query.get("method") or BY_KEY["method"].default)  # imports torch: only if needed
                    if any(k.startswith(URL_PARAM_PREFIX) for k in query) else None)
    for key, raw in query.items():
        if key == LEGACY_PAGE:
            continue
        if key.startswith(URL_PARAM_PREFIX):
            name = key[len(URL_PARAM_PREFIX):]
            if known_params is None or name in known_params:
                pending_params[name] = raw
            else:
                notices.append(f"Ignored {key}={raw} from the address: the method has no hyperparameter "
                               f"{name!r} (it has {', '.join(sorted(known_params)) or 'none'}).")
            continue
        spec = BY_URL.get(key)
        if spec is None:
            notices.append(f"Ignored the unknown address parameter {key}={raw}.")
        elif spec.static:
            value, notice = parse(spec, raw)
            state[spec.key] = value
            if notice:
                notices.append(notice)
        else:
            pending[spec.key] = raw
    state[_PENDING] = pending
    state[_PENDING_PARAMS] = pending_params
    state[_NOTICES] = [*state.get(_NOTICES, []), *notices]


def _param_names(method: str) -> set[str] | None:
    """The hyperparameter names ``method`` declares, or None when it is not a known method."""
    from ood_core.scorers import create_scorer, list_scorers

    if method not in list_scorers():
        return None
    try:
        return {p.name for p in create_scorer(method).declared_params()}
    except Exception:  # noqa: BLE001 - a method that cannot be built: its page says why
        return None


def show_notices() -> None:
    """Show (once) the notices about the address collected by :func:`sync`."""
    for notice in st.session_state.pop(_NOTICES, []):
        st.warning(notice, icon=NOTICE_ICON)


def initial_page() -> str | None:
    """The page named by a legacy ``?page=`` on the session's first run (consumed once)."""
    return st.session_state.pop("url_page", None)


def query_without_page() -> dict[str, str]:
    """The address's parameters less ``page`` (what a legacy ``?page=`` link switches with)."""
    return {k: v for k, v in st.query_params.to_dict().items() if k != LEGACY_PAGE}


# -- parsing and checking one value --------------------------------------------------------------

def format_value(value: Any) -> str:
    """A value as the address writes it (``true``/``false``, 6 significant digits)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def encode(spec: Control, value: Any) -> str:
    """``value`` of ``spec``'s widget as its URL string."""
    if spec.kind == "bool":
        return _BOOL_WORDS[0] if value else _BOOL_WORDS[1]
    if spec.kind == "list":
        return ",".join(str(v) for v in value)
    for word, aliased in spec.aliases.items():
        if aliased == value:
            return word
    return format_value(value)


def _number(raw: str) -> float | None:
    try:
        number = float(str(raw).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _ignored(spec: Control, raw: str, why: str, default: Any) -> tuple[Any, str]:
    shown = encode(spec, default) if default is not None else "none"
    return default, f"Ignored {spec.url}={raw} from the address ({why}); using the default {shown}."


def parse(spec: Control, raw: str, *, options: Sequence[Any] | None = None, default: Any = None,
          low: float | None = None, high: float | None = None) -> tuple[Any, str | None]:
    """(value, notice) for the URL string ``raw`` of ``spec``: a number clamped into its range (and
    put on its step), a choice or list item matched against ``options``, a bool from its words.
    A value that cannot be read is replaced by ``default``; the notice says what happened."""
    options = list(options if options is not None else spec.choices)
    default = spec.default if default is None else default
    if default is None and options and spec.kind == "choice":
        default = options[0]
    low = spec.low if low is None else low
    high = spec.high if high is None else high
    text = str(raw).strip()
    if spec.kind == "bool":
        word = text.lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS, None
        return _ignored(spec, raw, "not on/off", default)
    if spec.kind in ("int", "float"):
        number = _number(text)
        if number is None:
            return _ignored(spec, raw, "not a finite number", default)
        value = min(max(number, low if low is not None else number), high if high is not None else number)
        if spec.step:
            base = low if low is not None else 0.0
            value = base + round((value - base) / spec.step) * spec.step
            value = min(value, high) if high is not None else value
        value = int(round(value)) if spec.kind == "int" else float(round(value, 9))
        if value == number:
            return value, None
        if low is not None and number < low:
            why = f"below its minimum {format_value(low)}"
        elif high is not None and number > high:
            why = f"above its maximum {format_value(high)}"
        else:
            why = "not on the control's steps"
        return value, f"{spec.url}={raw} from the address is {why}: using {format_value(value)}."
    if spec.kind == "list":
        items = [v for v in text.split(",") if v]
        kept = [v for v in dict.fromkeys(items) if v in options]
        unknown = [v for v in items if v not in options]
        if unknown:
            return kept, (f"Ignored {', '.join(unknown)} in {spec.url}= from the address (not available; "
                          f"choose from {', '.join(map(str, options))}).")
        return kept, None
    value = spec.aliases.get(text, spec.aliases.get(text.lower(), text))
    for option in options:
        if option == value or str(option) == str(value):
            return option, None
    return _ignored(spec, raw, f"not one of {', '.join(encode(spec, o) for o in options)}", default)


# -- building a widget ---------------------------------------------------------------------------

def control(key: str, *, options: Sequence[Any] | None = None, default: Any = None,
            low: float | None = None, high: float | None = None) -> Any:
    """Call just before building the widget ``key`` (a key of :data:`CONTROLS`): puts the value
    it must show into ``st.session_state[key]`` and returns it.

    That value is the address's (when pending: checked against ``options`` / ``low``–``high``,
    which a view passes when they are known only now, with a notice when clamped or dropped),
    else the session's (quietly brought back into the options or range), else ``default``
    (None: the table's, else the first option). The widget is then built with ``key=key``.
    Returns None (nothing set) when ``options`` is given and empty.
    """
    spec = BY_KEY[key]
    state = st.session_state
    options = list(options) if options is not None else (list(spec.choices) if spec.choices else None)
    if options is not None and not options and spec.kind != "list":
        return None
    if default is None:
        default = spec.default if spec.default is not None else (options[0] if options else None)
        if spec.kind == "list" and default is None:
            default = list(options or [])
    low = spec.low if low is None else low
    high = spec.high if high is None else high
    state.setdefault(_DEFAULTS, {})[key] = default
    pending = state.get(_PENDING, {})
    if key in pending:
        value, notice = parse(spec, pending.pop(key), options=options, default=default, low=low, high=high)
        if notice:
            st.warning(notice, icon=NOTICE_ICON)
    elif key in state:
        value = _valid_or_default(spec, state[key], options, default, low, high)
    else:
        value = default
    state[key] = value
    return value


def _valid_or_default(spec: Control, value: Any, options: list[Any] | None, default: Any,
                      low: float | None, high: float | None) -> Any:
    """A kept value brought back into the current options / range (the sidebar changed)."""
    if spec.kind == "list":
        if options is None:
            return list(value)
        kept = [v for v in value if v in options]
        # everything gone (another model): start from the default; an empty choice stays empty
        return kept if (kept or not value) else list(default)
    if spec.kind in ("int", "float") and isinstance(value, (int, float)):
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        return int(value) if spec.kind == "int" else float(value)
    if options is not None and value not in options:
        return default
    return value


def slider_bounds(key: str) -> dict[str, Any]:
    """``min_value`` / ``max_value`` / ``step`` of a static numeric control's slider: the range the
    address is clamped to is the widget's own (one declaration, in :data:`CONTROLS`)."""
    spec = BY_KEY[key]
    return {"min_value": spec.low, "max_value": spec.high, "step": spec.step}


def requested(key: str) -> bool:
    """Whether the address asks for a bool marker (``s.run=on``); consumed once."""
    spec = BY_KEY[key]
    raw = st.session_state.get(_PENDING, {}).pop(key, None)
    if raw is None:
        return False
    value, notice = parse(spec, raw)
    if notice:
        st.warning(notice, icon=NOTICE_ICON)
    return bool(value)


# -- hyperparameters (p.<name>) --------------------------------------------------------------------

def declare_params(params: Iterable[Param]) -> None:
    """Record the defaults of the method whose widgets are drawn (a default stays out of the URL)."""
    st.session_state[_PARAM_DEFAULTS] = {p.name: p.default for p in params}


def pending_param(name: str) -> Any | None:
    """A hyperparameter value given in the URL and not yet applied (then forgotten)."""
    return st.session_state.get(_PENDING_PARAMS, {}).pop(name, None)


def parse_param(param: Param, raw: Any) -> tuple[Any, str | None]:
    """(value, notice): a URL string validated like every other hyperparameter value
    (:meth:`Param.validate`). A number outside [low, high] is clamped to it (``p.p_a=500`` → 99);
    a value that cannot be read is replaced by the default. The notice says which."""
    try:
        return param.validate(raw), None
    except HyperparameterError as error:
        clamped = _clamp_param(param, raw)
        if clamped is not None:
            return clamped, (f"{URL_PARAM_PREFIX}{param.name}={raw} from the address is out of range ({error}); "
                             f"using {format_value(clamped)}.")
        return param.default, (f"Ignored {URL_PARAM_PREFIX}{param.name}={raw} from the address ({error}); "
                               f"using the default {format_value(param.default)}.")


def _clamp_param(param: Param, raw: Any) -> Any | None:
    """``raw`` clamped into ``param``'s range when it is a finite number of the right kind, else None."""
    if param.kind not in ("float", "int"):
        return None
    number = _number(str(raw))
    if number is None or (param.kind == "int" and number != int(number)):
        return None
    if param.low is not None:
        number = max(number, param.low)
    if param.high is not None:
        number = min(number, param.high)
    try:
        return param.validate(int(number) if param.kind == "int" else number)
    except HyperparameterError:
        return None


def clear_params() -> None:
    """Forget every tuned hyperparameter (when the tuned method changes)."""
    state = st.session_state
    for key in [k for k in state if isinstance(k, str) and k.startswith(PARAM_PREFIX)]:
        del state[key]
    state[_PENDING_PARAMS] = {}
    state[_PARAM_DEFAULTS] = {}


# -- keeping and writing -----------------------------------------------------------------------------

def keep_alive() -> None:
    """Re-assign every control's value so Streamlit keeps it while its widget is off-page."""
    state = st.session_state
    for key in [*BY_KEY, *[k for k in state if isinstance(k, str) and k.startswith(PARAM_PREFIX)]]:
        if key in state:
            state[key] = state[key]


def wanted_query() -> dict[str, str]:
    """The address of the current state: every control that differs from its default, in table
    order, then the hyperparameters; values still pending are kept as the address gave them."""
    state = st.session_state
    defaults = {**{c.key: c.default for c in CONTROLS}, **state.get(_DEFAULTS, {})}
    pending = state.get(_PENDING, {})
    wanted: dict[str, str] = {}
    for spec in CONTROLS:
        if spec.key in pending:
            wanted[spec.url] = pending[spec.key]
        elif spec.key in state:
            value = state[spec.key]
            if value is None or (defaults.get(spec.key) is not None and value == defaults[spec.key]):
                continue
            wanted[spec.url] = encode(spec, value)
    param_defaults = state.get(_PARAM_DEFAULTS, {})
    for key in sorted(k for k in state if isinstance(k, str) and k.startswith(PARAM_PREFIX)):
        name = key[len(PARAM_PREFIX):]
        value = state[key]
        if name in param_defaults and value == param_defaults[name]:
            continue
        wanted[URL_PARAM_PREFIX + name] = format_value(value)
    for name, raw in state.get(_PENDING_PARAMS, {}).items():
        wanted.setdefault(URL_PARAM_PREFIX + name, str(raw))
    return wanted


def write() -> None:
    """Mirror the state into the address, in one update and only when it changed (each update
    is one browser-history entry). Safe to call from a fragment: a slider moved inside one
    updates the address too."""
    wanted = wanted_query()
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)

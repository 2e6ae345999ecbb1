"""Hyperparameter declarations (:class:`Param`) and their one validation path.

A scorer declares its hyperparameters as ``Param`` objects; the CLI (``--hparam``), the API,
the URL state and the app's widgets all validate values through :meth:`Param.validate`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence, Union

from ood_core.registry import OODLensError

ParamKind = Literal["float", "int", "bool", "choice"]


@dataclass(frozen=True)
class Relative:
    """A search grid given as multiples of the param's (model-specific) default, for values on
    a multiplicative scale whose size depends on the model (δ and clip values are activations:
    1.0 on the CIFAR DenseNet, several times that on other networks)."""

    factors: tuple[float, ...]


SearchGrid = Union[tuple[Any, ...], Relative]

# Grids shared by several methods. Percentiles close to 100 are spaced on 100 − p (log-like:
# 20, 10, 5, 2.5, 1, 0.5 % kept or clipped); activations (δ, c) as multiples of the default.
PRUNE_PERCENTILES = (50.0, 70.0, 80.0, 90.0, 95.0, 97.5, 99.0)
CLIP_PERCENTILES = (80.0, 90.0, 95.0, 97.5, 99.0, 99.5)
ACTIVATION_FACTORS = Relative((0.25, 0.5, 1.0, 2.0, 4.0))
TEMPERATURES = (0.5, 1.0, 2.0, 5.0, 10.0)


class HyperparameterError(OODLensError, ValueError):
    """A hyperparameter value that is unknown, malformed, non-finite or out of range (one line)."""


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _parse_number(value: Any) -> float | None:
    """``value`` as a float when it is a real number or a string of one (bools excluded), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Param:
    """One hyperparameter declaration.

    ``low``/``high``/``step`` bound numeric params (inclusive). ``choices`` lists the
    values of a ``"choice"`` param. ``log`` asks the UI for a log-scale widget.

    ``search``: the grid a tuner searches (:mod:`ood_core.tuning`): explicit values, or
    :class:`Relative` multiples of the default; None: not tuned. The default is always added
    to the grid, so a tuned setting is never worse on validation than the default.
    ``active_when``: ``(other param, value)`` when this param has an effect only while the other
    has that value (ReAct's ``clip_value`` only when ``clip_by == "value"``); tuners skip an
    inactive param and the app hides its widget (its value is kept, and has no effect).
    ``group``: a display group (``"clip"``, ``"weights"``): the app draws a group's params
    together, in one column; a controlled param joins its controller's group.
    """

    name: str
    default: Any
    kind: ParamKind = "float"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""
    unit: str = ""
    log: bool = False
    label: str = ""  # display label, e.g. "δ (clip)"; falls back to name
    search: SearchGrid | None = None
    active_when: tuple[str, Any] | None = None
    group: str = ""

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """Whether this param has an effect under ``values`` (the method's full setting)."""
        if self.active_when is None:
            return True
        other, wanted = self.active_when
        return values.get(other) == wanted

    def validate(self, value: Any) -> Any:
        """``value`` (a Python value or the string a CLI / URL gives) as this param's kind.

        The one validation path of the CLI, the API, the URL and the widgets: numbers must be
        finite and inside [low, high], an ``int`` param takes only integral values, a choice is
        matched by value (``"0.0028"`` is the float choice 0.0028), a bool is ``True``/``False``,
        0/1 or one of true/false/yes/no/on/off. Anything else raises :class:`HyperparameterError`.
        """
        if self.kind == "bool":
            return self._validate_bool(value)
        if self.kind == "choice":
            return self._validate_choice(value)
        number = _parse_number(value)
        if number is None:
            raise self._error(value, f"is not a number (expected {'an integer' if self.kind == 'int' else 'a number'})")
        if not math.isfinite(number):
            raise self._error(value, "is not a finite number")
        if self.kind == "int":
            if number != int(number):
                raise self._error(value, "is not an integer")
            number = int(number)
        if self.low is not None and number < self.low:
            raise self._error(value, f"is below its minimum {self.low:g}")
        if self.high is not None and number > self.high:
            raise self._error(value, f"is above its maximum {self.high:g}")
        return number

    def _validate_bool(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise self._error(value, "is not a boolean (use true/false, yes/no, on/off or 1/0)")

    def _validate_choice(self, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
        for choice in self.choices:
            if isinstance(choice, bool) or isinstance(value, bool):
                if choice is value or (isinstance(value, str) and value.lower() == str(choice).lower()):
                    return choice
            elif isinstance(choice, numbers.Real):
                number = _parse_number(value)
                if isinstance(value, str) and number is not None and number == choice:
                    return choice
                if isinstance(value, numbers.Real) and value == choice:
                    return choice
            elif value == choice:
                return choice
        raise self._error(value, f"is not one of {', '.join(str(c) for c in self.choices)}")

    def _error(self, value: Any, why: str) -> HyperparameterError:
        return HyperparameterError(f"{self.name}={value!r} {why}")


# -- display order --------------------------------------------------------------------------

def display_order(params: Sequence[Param], order: Sequence[str] = ()) -> tuple[Param, ...]:
    """``params`` in the order a UI shows them.

    ``order``: an explicit order (a permutation of the names, checked by
    :func:`declaration_problems`); empty: declaration order, with every controlled param moved
    right after its controller (LINe: use_ac, delta, use_ap, p_a, ...), recursively.
    """
    if order:
        by_name, named = {p.name: p for p in params}, set(order)
        return tuple(by_name[name] for name in order if name in by_name) + tuple(
            p for p in params if p.name not in named)
    names = {p.name for p in params}
    dependents: dict[str, list[Param]] = {}
    for p in params:
        if p.active_when is not None and p.active_when[0] in names:
            dependents.setdefault(p.active_when[0], []).append(p)
    out: dict[str, Param] = {}

    def emit(p: Param) -> None:
        if p.name in out:  # a cycle (reported by declaration_problems) ends here
            return
        out[p.name] = p
        for child in dependents.get(p.name, []):
            emit(child)

    for p in params:
        if p.active_when is None or p.active_when[0] not in names:
            emit(p)
    for p in params:  # params caught in a cycle, in declaration order
        emit(p)
    return tuple(out.values())


def display_blocks(params: Sequence[Param]) -> list[tuple[Param, ...]]:
    """Consecutive runs of ``params`` (already in display order) drawn together: a declared
    ``group``, or a controller with the params it controls; any other param is a block alone."""
    by_name = {p.name: p for p in params}

    def block_key(p: Param, depth: int = 0) -> str:
        if p.group:
            return "group:" + p.group
        # a controlled param joins its controller's block (depth bounds a declared cycle)
        if p.active_when is not None and p.active_when[0] in by_name and depth < len(by_name):
            return block_key(by_name[p.active_when[0]], depth + 1)
        return "param:" + p.name

    blocks: list[list[Param]] = []
    last = None
    for p in params:
        key = block_key(p)
        if blocks and key == last:
            blocks[-1].append(p)
        else:
            blocks.append([p])
        last = key
    return [tuple(b) for b in blocks]


def visible_params(params: Sequence[Param], values: Mapping[str, Any]) -> tuple[Param, ...]:
    """The params with an effect under ``values``: active, and their controller visible too."""
    by_name = {p.name: p for p in params}

    def visible(p: Param, depth: int = 0) -> bool:
        if not p.is_active(values):
            return False
        controller = by_name.get(p.active_when[0]) if p.active_when is not None else None
        return controller is None or depth > len(by_name) or visible(controller, depth + 1)

    return tuple(p for p in params if visible(p))


def declaration_problems(params: Sequence[Param], order: Sequence[str] = ()) -> list[str]:
    """What is wrong with a method's declarations (empty when nothing): duplicate names, an
    ``order`` that is not a permutation of the names, an ``active_when`` naming an undeclared
    param, itself, or a value its controller does not take."""
    problems: list[str] = []
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        problems.append(f"duplicate param names in {names}")
    if order and sorted(order) != sorted(names):
        problems.append(f"display order {list(order)} is not a permutation of {names}")
    by_name = {p.name: p for p in params}
    for p in params:
        if p.active_when is None:
            continue
        other, wanted = p.active_when
        controller = by_name.get(other)
        if controller is None or other == p.name:
            problems.append(f"{p.name}: active_when names {other!r}, not another declared param")
            continue
        try:
            valid = controller.validate(wanted)
        except HyperparameterError as error:
            problems.append(f"{p.name}: active_when value {wanted!r} is invalid for {other} ({error})")
            continue
        if valid != wanted or type(valid) is not type(wanted):
            problems.append(f"{p.name}: active_when value {wanted!r} is not a value of {other} ({valid!r})")
        seen, link = {p.name}, controller
        while link is not None and link.active_when is not None:  # follow the chain of controllers
            if link.name in seen:
                problems.append(f"{p.name}: its active_when chain is a cycle through {link.name}")
                break
            seen.add(link.name)
            link = by_name.get(link.active_when[0])
    return problems

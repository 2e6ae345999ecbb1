"""Hyperparameter validation: one path (``Param.validate`` / ``Scorer.resolve``) for the CLI,
the API, the URL and the widgets. Finite numbers only, integers that are integers, choices
compared by value, booleans parsed strictly; anything else is a one-line
:class:`HyperparameterError`, never a raw ``ValueError`` from ``int()`` and never a silent change.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import pytest

from ood_core.registry import OODLensError
from ood_core.scorers import create_scorer, list_scorers
from ood_core.params import HyperparameterError, Param

NAMES = list_scorers()


def test_error_type_is_a_one_line_user_error() -> None:
    assert issubclass(HyperparameterError, OODLensError) and issubclass(HyperparameterError, ValueError)


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf, "nan", "NaN", "inf", "-inf", "Infinity"])
def test_non_finite_numbers_are_refused(raw: Any) -> None:
    """Found: ``--hparam energy.temperature=nan`` exited 0 and printed 0.0 / 0.0."""
    with pytest.raises(HyperparameterError, match="temperature"):
        create_scorer("energy").resolve({"temperature": raw})
    with pytest.raises(HyperparameterError, match="p_a"):  # found: a traceback
        create_scorer("line").resolve({"p_a": raw})


@pytest.mark.parametrize("raw", [2.7, "2.7", "2.5e1x", "abc", "", None, [3], True])
def test_integers_must_be_integers(raw: Any) -> None:
    """Found: ``k=2.7`` silently became 2."""
    with pytest.raises(HyperparameterError, match="k"):
        create_scorer("knn").resolve({"k": raw})


@pytest.mark.parametrize("raw,expected", [(3, 3), ("3", 3), (3.0, 3), ("3.0", 3), (" 7 ", 7)])
def test_integral_values_are_accepted(raw: Any, expected: int) -> None:
    value = create_scorer("knn").resolve({"k": raw})["k"]
    assert value == expected and type(value) is int


@pytest.mark.parametrize("raw,expected", [(True, True), (False, False), ("true", True), ("False", False),
                                          ("1", True), ("0", False), ("yes", True), ("off", False), (1, True),
                                          (0, False)])
def test_booleans_parse_strictly(raw: Any, expected: bool) -> None:
    assert create_scorer("line").resolve({"use_ac": raw})["use_ac"] is expected


@pytest.mark.parametrize("raw", ["treu", "", "2", 2, 0.5, None, "yes please"])
def test_malformed_booleans_are_refused(raw: Any) -> None:
    """Found: ``line.use_ac=treu`` silently became False."""
    with pytest.raises(HyperparameterError, match="use_ac"):
        create_scorer("line").resolve({"use_ac": raw})


@pytest.mark.parametrize("raw", ["0.0028", 0.0028, "2.8e-3", "0.00280"])
def test_numeric_choices_compare_by_value(raw: Any) -> None:
    """Found: ``--hparam odin.epsilon=0.0028`` was refused (compared as a string)."""
    value = create_scorer("odin").resolve({"epsilon": raw})["epsilon"]
    assert value == 0.0028 and isinstance(value, float)
    assert create_scorer("odin").resolve({"epsilon": "0"})["epsilon"] == 0.0


@pytest.mark.parametrize("raw", ["0.003", "nan", "percent", 1])
def test_unknown_choices_are_refused(raw: Any) -> None:
    with pytest.raises(HyperparameterError, match="epsilon"):
        create_scorer("odin").resolve({"epsilon": raw})
    with pytest.raises(HyperparameterError, match="clip_by"):
        create_scorer("react").resolve({"clip_by": "percentil"})


def test_string_choices_are_matched_exactly() -> None:
    assert create_scorer("react").resolve({"clip_by": "value"})["clip_by"] == "value"
    assert create_scorer("react").resolve({"clip_by": " value "})["clip_by"] == "value"


def _outside(param: Param) -> Iterator[Any]:
    """Values every numeric param must refuse: non-finite, just outside each bound, junk."""
    yield from (math.nan, math.inf, -math.inf, "nan", "junk")
    if param.kind in ("float", "int"):
        span = float(param.high) - float(param.low)
        nudge = max(span * 1e-6, 1e-9) if param.kind == "float" else 1
        yield float(param.low) - nudge if param.kind == "float" else int(param.low) - nudge
        yield float(param.high) + nudge if param.kind == "float" else int(param.high) + nudge


def _params() -> Iterator[tuple[str, Param]]:
    for name in NAMES:
        for param in create_scorer(name).declared_params():
            yield name, param


@pytest.mark.parametrize("name,param", list(_params()), ids=lambda v: getattr(v, "name", v))
def test_every_declared_param_refuses_what_is_outside_it(name: str, param: Param) -> None:
    """Property over the registry (found: 133 of 527 out-of-range values accepted through the
    API, 18 crashed with raw ValueErrors): range ends are accepted unchanged, everything
    outside is a HyperparameterError that names the parameter."""
    scorer = create_scorer(name)
    if param.kind in ("float", "int"):
        for end in (param.low, param.high):
            assert scorer.resolve({param.name: end})[param.name] == end
        values = list(_outside(param))
    elif param.kind == "bool":
        values = ["maybe", 2, math.nan]
    else:
        values = ["not-a-choice", math.nan]
    for raw in values:
        with pytest.raises(HyperparameterError) as caught:
            scorer.resolve({param.name: raw})
        message = str(caught.value)
        assert param.name in message and "\n" not in message, message


def test_unknown_names_are_hyperparameter_errors() -> None:
    with pytest.raises(HyperparameterError, match="no hyperparameter 'deltta'.*did you mean 'delta'"):
        create_scorer("line").resolve({"deltta": 1.0})

"""Conditional hyperparameters, their display order and the Tune page's text.

* Declarations (no app): every registered scorer's ``active_when`` names a declared param and a
  value it takes, its display order is a permutation of its params, each switch comes right
  before what it enables.
* AppTest (the demo cache of ``test_app.py``): only active params get a widget, in display
  order; a hidden param keeps its value and the numbers shown are ``evaluate_method``'s at the
  widgets' values, hidden ones included; the Tune page's numbers are in one format.
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from app import fmt
from ood_core import stages
from ood_core.benchmark import evaluate_method
from ood_core.params import Param, declaration_problems, display_blocks, display_order, visible_params
from ood_core.scorers import create_scorer, list_scorers
from test_app import demo_cache, make_app, run  # noqa: F401 - the AppTest fixture and helpers of test_app.py

SCORERS = [name for name in list_scorers() if not name.endswith("<name>")]
PARAM_PREFIX = "param_"


# -- declarations ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCORERS)
def test_every_scorer_declares_valid_conditions_and_a_display_order(name: str) -> None:
    scorer = create_scorer(name)
    declared = scorer.declared_params()
    assert declaration_problems(declared, scorer.display_order) == []
    shown = scorer.display_params()
    assert sorted(p.name for p in shown) == sorted(p.name for p in declared)  # a permutation
    position = {p.name: i for i, p in enumerate(shown)}
    for p in declared:
        if p.active_when is not None:  # the switch comes first, in the same display block
            assert position[p.active_when[0]] < position[p.name], (name, p.name)
            block = next(b for b in display_blocks(shown) if p in b)
            assert p.active_when[0] in {q.name for q in block}, (name, p.name)
    groups = [b[0].group for b in display_blocks(shown) if b[0].group]
    assert len(groups) == len(set(groups)), f"{name}: a display group is split: {groups}"


def test_declaration_problems_are_found() -> None:
    use = Param("use", True, kind="bool")
    mode = Param("mode", "a", kind="choice", choices=("a", "b"))
    assert declaration_problems((use, Param("x", 1.0, active_when=("missing", True)))) != []
    assert declaration_problems((mode, Param("x", 1.0, active_when=("mode", "c")))) != []
    assert declaration_problems((use, Param("x", 1.0, active_when=("use", "yes")))) != []  # not the bool itself
    assert declaration_problems((Param("x", 1.0, active_when=("x", 1.0)),)) != []
    cycle = (Param("a", True, kind="bool", active_when=("b", True)), Param("b", True, kind="bool",
                                                                           active_when=("a", True)))
    assert any("cycle" in problem for problem in declaration_problems(cycle))
    assert declaration_problems((use, mode), order=("use",)) != []  # not a permutation
    assert declaration_problems((use, mode, Param("x", 1.0, active_when=("mode", "b"))), order=("mode", "x", "use")) == []


def names(params: Any) -> list[str]:
    return [p.name for p in params]


def test_the_display_order_puts_each_switch_before_what_it_enables() -> None:
    line = create_scorer("line")
    assert names(line.display_params()) == ["use_ac", "delta", "use_ap", "p_a", "use_wp", "p_w"]
    assert names(display_order(line.declared_params())) == names(line.display_params())  # the default agrees
    assert names(create_scorer("react").display_params()) == ["clip_by", "clip_percentile", "clip_value"]
    blocks = display_blocks(create_scorer("opnp+react").display_params())
    assert [names(b) for b in blocks] == [["clip_by", "clip_percentile", "clip_value"],
                                          ["q_w_high", "q_w_low"], ["q_n_high", "q_n_low"]]
    react = create_scorer("react").display_params()
    assert names(visible_params(react, {"clip_by": "value"})) == ["clip_by", "clip_value"]
    assert names(visible_params(line.display_params(), {"use_ac": False, "use_ap": True, "use_wp": False})) == [
        "use_ac", "use_ap", "p_a", "use_wp"]


def test_no_method_has_a_switch_that_turns_it_into_another_method() -> None:
    """Found: ASH-S's "variant" selector made it ASH-P or ASH-B; OPNP showed a ReAct clip switch.
    Variants are registered methods now: no choice param selects a method or a stage."""
    for name in SCORERS:
        for p in create_scorer(name).declared_params():
            assert p.name not in {"variant", "use_clip", "react", "clip"}, (name, p.name)
    assert not any("clip" in p.name for p in create_scorer("opnp").declared_params())


# -- the Tune page -------------------------------------------------------------------------------

def param_keys(at: Any) -> list[str]:
    """Keys of the hyperparameter widgets on the page, in document order."""
    keys: list[str] = []

    def walk(node: Any) -> None:
        key = getattr(node, "key", None)
        if isinstance(key, str) and key.startswith(PARAM_PREFIX):
            keys.append(key)
        for _, child in sorted(getattr(node, "children", {}).items()):
            walk(child)

    walk(at.main)
    return keys


def tune(method: str, **params: str) -> Any:
    return run(make_app("tune", method=method, **{f"p.{name}": value for name, value in params.items()}))


def oods_of(at: Any) -> list[str]:
    from app import resources

    try:
        return list(at.session_state["ood"])
    except KeyError:
        return list(resources.DEMO_OODS)


def assert_metrics_are(at: Any, bench: Any, method: str, values: dict[str, Any]) -> None:
    """FPR95 and AUROC on screen are evaluate_method's at ``values``."""
    result = evaluate_method(bench, method, values, ood=oods_of(at))
    shown = {m.label.split(" (")[0]: m.value for m in at.metric}
    assert shown["FPR95"] == fmt.rate(result.average.fpr95), (shown, values)
    assert shown["AUROC"] == fmt.rate(result.average.auroc), (shown, values)


@pytest.mark.parametrize("mode, shown, hidden", [("percentile", "clip_percentile", "clip_value"),
                                                 ("value", "clip_value", "clip_percentile")])
def test_react_shows_only_the_active_clip(demo_cache, mode: str, shown: str, hidden: str) -> None:
    at = tune("react", clip_by=mode)
    assert not at.error, [e.value for e in at.error]
    assert param_keys(at) == ["param_clip_by", PARAM_PREFIX + shown]
    activation_captions = [c.value for c in at.caption if "ID-validation activations" in c.value]
    assert len(activation_captions) == (1 if mode == "value" else 0), activation_captions


def test_opnp_without_the_clip_shows_no_clip_widgets(demo_cache) -> None:
    at = tune("opnp")
    assert param_keys(at) == ["param_q_w_high", "param_q_w_low", "param_q_n_high", "param_q_n_low"]


def test_opnp_react_shows_one_clip_widget_per_mode(demo_cache) -> None:
    pruning = ["param_q_w_high", "param_q_w_low", "param_q_n_high", "param_q_n_low"]
    at = tune("opnp+react", clip_by="percentile")
    assert param_keys(at) == ["param_clip_by", "param_clip_percentile", *pruning]  # clip, weights, neurons
    at.selectbox(key="param_clip_by").set_value("value")
    run(at)
    assert param_keys(at) == ["param_clip_by", "param_clip_value", *pruning]


def test_line_hides_delta_while_clipping_is_off_and_keeps_its_value(demo_cache, demo_benchmark) -> None:
    at = tune("line", use_ac="false", delta="0.5")
    assert param_keys(at) == ["param_use_ac", "param_use_ap", "param_p_a", "param_use_wp", "param_p_w"]
    assert not [c.value for c in at.caption if "ID-validation activations" in c.value]
    # the hidden δ still goes to scoring at its value, and has no effect there
    assert_metrics_are(at, demo_benchmark, "line", {"use_ac": False, "delta": 0.5})
    assert_metrics_are(at, demo_benchmark, "line", {"use_ac": False})
    at.toggle(key="param_use_ac").set_value(True)
    run(at)
    assert param_keys(at) == ["param_use_ac", "param_delta", "param_use_ap", "param_p_a", "param_use_wp",
                              "param_p_w"]
    assert at.slider(key="param_delta").value == pytest.approx(0.5)  # kept while hidden
    assert_metrics_are(at, demo_benchmark, "line", {"use_ac": True, "delta": 0.5})


def test_a_hidden_clip_keeps_its_value_and_scores_equal_evaluate_method(demo_cache, demo_benchmark) -> None:
    at = tune("react", clip_by="value", clip_value="1.5", clip_percentile="70")
    assert param_keys(at) == ["param_clip_by", "param_clip_value"]
    assert at.session_state["param_clip_percentile"] == pytest.approx(70.0)  # hidden, kept
    assert_metrics_are(at, demo_benchmark, "react", {"clip_by": "value", "clip_value": 1.5, "clip_percentile": 70.0})
    assert_metrics_are(at, demo_benchmark, "react", {"clip_by": "value", "clip_value": 1.5})
    at.selectbox(key="param_clip_by").set_value("percentile")
    run(at)
    assert param_keys(at) == ["param_clip_by", "param_clip_percentile"]
    assert at.slider(key="param_clip_percentile").value == pytest.approx(70.0)
    assert at.session_state["param_clip_value"] == pytest.approx(1.5)
    assert_metrics_are(at, demo_benchmark, "react", {"clip_by": "percentile", "clip_percentile": 70.0})


RATE = re.compile(r"^\d{1,3}\.\d %$")
POINTS = re.compile(r"^[+-]\d{1,3}\.\d pt$")


def test_tune_text_is_in_one_format_with_short_deltas(demo_cache, demo_benchmark) -> None:
    """Found: "73.7" / "92.04" / "0" side by side, "…vs the unmodified mo…" cut off, "62.3th percentile"."""
    at = tune("line", delta="0.5")
    fpr, auroc, accuracy, reference = at.metric
    for metric in (fpr, auroc, accuracy):
        assert RATE.match(metric.value), metric.value
        assert POINTS.match(metric.delta), metric.delta  # "+1.2 pt": nothing to cut off in a quarter column
    assert POINTS.match(reference.value) and not reference.delta, (reference.value, reference.delta)
    changes = next(c.value for c in at.caption if c.value.startswith("Changes:"))
    assert "defaults" in changes and "unmodified model" in changes, changes
    # the table: rates and differences with one decimal
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    shown = convert_arrow_bytes_to_pandas_df(at.dataframe[0].proto.arrow_data.styler.display_values)
    for column in shown.columns:
        pattern = r"^[+-]\d+\.\d$" if "Δ" in str(column) else r"^\d+\.\d$"
        assert shown[column].astype(str).str.match(pattern).all(), (column, shown[column].tolist())
    # δ's caption: the percentile in words (an ordinal only for a whole percentile)
    share = stages.value_to_percentile(demo_benchmark.stats["val_activations_sorted"], 0.5)
    caption = next(c.value for c in at.caption if "ID-validation activations" in c.value)
    assert caption == f"δ (clip) = 0.5 ≈ {fmt.percentile(share)} of ID-validation activations"
    assert not re.search(r"\d\.\d+(st|nd|rd|th)\b|\b(1|2|3)th\b", caption), caption


def test_unchanged_deltas_are_grey_without_an_arrow(demo_cache) -> None:
    at = tune("line")  # the method's defaults: every change is zero
    for metric in at.metric[:2]:  # FPR95 and AUROC, each against the method's defaults
        assert metric.delta == fmt.points(0.0)
        enum = metric.proto.DESCRIPTOR.fields_by_name
        assert enum["color"].enum_type.values_by_number[metric.proto.color].name == "GRAY", metric.proto
        assert enum["direction"].enum_type.values_by_number[metric.proto.direction].name == "NONE", metric.proto

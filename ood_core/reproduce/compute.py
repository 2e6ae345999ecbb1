"""Pure functions from a loaded :class:`~ood_core.benchmark.Benchmark` to small rows of figures.

Nothing here reads files or prints: every function takes a benchmark (cached features, or a
synthetic one from :mod:`ood_core.synthetic`) and returns dataclasses the renderer formats.
Rates are fractions in [0, 1]; averages are unweighted over the benchmark's test OOD sets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ood_core import neurons, stages
from ood_core.benchmark import MethodResult, available_methods, evaluate_method
from ood_core.registry import OODLensError
from ood_core.report_formats import chosen_label, format_hparams
from ood_core.reproduce import orderings
from ood_core.reproduce.published import LINE_OVERLAP
from ood_core.tuning import ORACLE_LABEL, Protocol, ProgressCallback, tune_benchmark, tune_method

DELTA_FACTORS: tuple[float | None, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, None)  # None: no AC (δ = ∞)
DICE_SPARSITIES = (0.0, 50.0, 70.0, 90.0, 95.0, 99.0)
OPNP_GRID = ("q_w_low", (0.0, 10.0, 30.0, 50.0), "q_n_high", (0.0, 1.0, 5.0, 10.0))
NAP_PAIRS = (("nap-e", "energy"), ("nap-m", "msp"), ("nap-r", "react"), ("nap-d", "dice"), ("nap-a", "ash-s"),
             ("nap-k", "knn"))
LINE_STAGES = (("energy", "Energy", "energy", {}), ("ac", "+AC", "line", {"use_ap": False, "use_wp": False}),
               ("ac+ap", "AC+AP (w/o WP)", "line", {"use_wp": False}),
               ("ac+wp", "AC+WP (w/o AP)", "line", {"use_ap": False}), ("full", "AC+AP+WP (LINe)", "line", {}))
OVERLAP_TOP_PERCENT = 10.0


@dataclass(frozen=True)
class Figures:
    """FPR95 / AUROC on average and per OOD set (``set → (fpr95, auroc)``); degenerate: why
    the setting must not be ranked (empty when it can be)."""

    fpr95: float
    auroc: float
    per_set: Mapping[str, tuple[float, float]]
    degenerate: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: MethodResult) -> "Figures":
        return cls(float(result.average.fpr95), float(result.average.auroc),
                   {name: (float(m.fpr95), float(m.auroc)) for name, m in result.metrics.items()},
                   tuple(result.degenerate))


@dataclass(frozen=True)
class MethodRow:
    """One method at its defaults, tuned on validation data (with the setting chosen) and
    tuned on the test sets (the oracle)."""

    method: str
    defaults: Figures
    tuned: Figures
    chosen: str
    oracle: Figures
    oracle_chosen: str


@dataclass(frozen=True)
class SettingRow:
    """One setting of a sweep or an ablation (``key`` ties it to a published figure)."""

    key: str
    label: str
    setting: str
    figures: Figures


@dataclass(frozen=True)
class Grid:
    """Average FPR95 over a 2-D grid of one method's hyperparameters (the others at defaults)."""

    method: str
    row_param: str
    rows: tuple[float, ...]
    col_param: str
    cols: tuple[float, ...]
    fpr95: tuple[tuple[float, ...], ...]
    default: tuple[float, float]


@dataclass(frozen=True)
class NapRow:
    variant: str
    partner: str
    partner_figures: Figures
    nap: Figures
    combined: Figures


@dataclass(frozen=True)
class OverlapRow:
    """LINe's Table 8: share of neurons important to more than ``over_percent`` % of the classes."""

    over_percent: float
    over_d: float
    over_important: float
    paper: float | None


@dataclass(frozen=True)
class Check:
    """An identity that must hold if the compositions are right (rules out a class of bugs)."""

    what: str
    max_abs_diff: float
    passed: bool


@dataclass
class ModelReport:
    """Everything the page shows about one model."""

    model: str
    id_dataset: str
    ood_sets: tuple[str, ...]
    id_accuracy: float
    rows: dict[str, int]
    limit: int | None
    protocol: str
    oracle_protocol: str
    methods: list[MethodRow]
    skipped_methods: list[str] = field(default_factory=list)
    ablation: list[SettingRow] = field(default_factory=list)
    delta: list[SettingRow] = field(default_factory=list)
    opnp: list[SettingRow] = field(default_factory=list)
    opnp_grid: Grid | None = None
    dice: list[SettingRow] = field(default_factory=list)
    nap: list[NapRow] = field(default_factory=list)
    overlap: list[OverlapRow] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    verdicts: list[orderings.Verdict] = field(default_factory=list)
    facts: dict[str, float] = field(default_factory=dict)

    def row(self, method: str) -> MethodRow | None:
        return next((r for r in self.methods if r.method == method), None)


def _setting(bench: Any, method: str, hparams: Mapping[str, Any]) -> str:
    """The active numeric / choice hyperparameters of a setting (switches are in the row's label)."""
    scorer = bench.scorer(method)
    values = scorer.resolve(hparams)
    return format_hparams({p.name: values[p.name] for p in scorer.declared_params()
                           if p.kind != "bool" and p.is_active(values)})


def setting_row(bench: Any, key: str, label: str, method: str, hparams: Mapping[str, Any]) -> SettingRow:
    return SettingRow(key, label, _setting(bench, method, hparams), Figures.of(evaluate_method(bench, method, hparams)))


def line_ablation(bench: Any) -> list[SettingRow]:
    """LINe's ablation at defaults: Energy, +AC, AC+AP, AC+WP, AC+AP+WP."""
    return [setting_row(bench, key, label, method, fixed) for key, label, method, fixed in LINE_STAGES]


def line_delta(bench: Any) -> list[SettingRow]:
    """LINe at δ = factor × the model's default δ (the rest at defaults), and without AC."""
    default = float(bench.scorer("line").resolve()["delta"])
    activations = bench.stats.get("val_activations_sorted")
    rest = _setting(bench, "line", {"use_ac": False})  # the active params other than δ
    rows = []
    for factor in DELTA_FACTORS:
        if factor is None:
            figures = Figures.of(evaluate_method(bench, "line", {"use_ac": False}))
            rows.append(SettingRow("inf", "∞ (no AC)", f"δ = ∞, {rest}", figures))
            continue
        delta = float(f"{min(max(factor * default, 0.01), 20.0):.4g}")
        where = "" if activations is None else \
            f" (p{stages.value_to_percentile(activations, delta):.1f} of ID-val activations)"
        figures = Figures.of(evaluate_method(bench, "line", {"delta": delta}))
        rows.append(SettingRow(f"x{factor:g}", f"{factor:g} × default", f"δ = {delta:g}{where}, {rest}", figures))
    return rows


def opnp_variants(bench: Any, methods: Sequence[str]) -> list[SettingRow]:
    wanted = ("energy", "react", "opp", "onp", "opnp", "opnp+react")
    return [setting_row(bench, m, m, m, {}) for m in wanted if m in methods]


def opnp_grid(bench: Any) -> Grid:
    row_param, rows, col_param, cols = OPNP_GRID
    values = bench.scorer("opnp").resolve()
    cells = tuple(tuple(float(evaluate_method(bench, "opnp", {row_param: r, col_param: c}).average.fpr95)
                        for c in cols) for r in rows)
    return Grid("opnp", row_param, rows, col_param, cols, cells, (float(values[row_param]), float(values[col_param])))


def dice_sweep(bench: Any, methods: Sequence[str]) -> list[SettingRow]:
    rows = [setting_row(bench, f"p{p:g}", f"DICE p = {p:g}", "dice", {"sparsity": p}) for p in DICE_SPARSITIES]
    if "dice+react" in methods:
        rows.append(setting_row(bench, "dice+react", "DICE + ReAct", "dice+react", {}))
    return rows


def nap_rows(defaults: Mapping[str, Figures]) -> list[NapRow]:
    return [NapRow(combo, partner, defaults[partner], defaults["nap"], defaults[combo])
            for combo, partner in NAP_PAIRS if {combo, partner, "nap"} <= set(defaults)]


def overlap_rows(bench: Any) -> list[OverlapRow]:
    contribution = bench.stats["class_contribution"]
    return [OverlapRow(o, neurons.neuron_overlap(contribution, OVERLAP_TOP_PERCENT, o, "D"),
                       neurons.neuron_overlap(contribution, OVERLAP_TOP_PERCENT, o, "important"),
                       LINE_OVERLAP.get(o)) for o in (20.0, 30.0)]


def _max_diff(a: MethodResult, b: MethodResult) -> float:
    pairs = [(a.id_scores, b.id_scores), *((a.ood_scores[n], b.ood_scores[n]) for n in a.ood_scores)]
    return max(float((x.double() - y.double()).abs().max()) for x, y in pairs)


def consistency_checks(bench: Any, energy: MethodResult, methods: Sequence[str]) -> list[Check]:
    """Switching every stage off must give Energy back (up to float rounding)."""
    candidates = (("LINe with AC, AP and WP off = Energy", "line",
                   {"use_ac": False, "use_ap": False, "use_wp": False}),
                  ("OPNP with all four percentages 0 = Energy", "opnp",
                   {"q_w_high": 0.0, "q_w_low": 0.0, "q_n_high": 0.0, "q_n_low": 0.0}))
    checks = []
    for what, method, hparams in candidates:
        if method in methods:
            diff = _max_diff(evaluate_method(bench, method, hparams), energy)
            scale = max(1.0, float(energy.id_scores.abs().max()))
            checks.append(Check(what, diff, diff <= 1e-4 * scale))
    return checks


def facts_of(bench: Any, defaults: Mapping[str, MethodResult], methods: Sequence[str]) -> dict[str, float]:
    """Measured quantities the explanations of failed orderings refer to."""
    facts: dict[str, float] = {"dim": float(bench.head_weight.shape[1])}
    if "energy" in defaults:
        facts["energy_fpr"] = 100 * float(defaults["energy"].average.fpr95)
    if "react" in methods:
        facts["react_c"] = float(bench.scorer("react").threshold())
        facts["react_c1_fpr"] = 100 * float(evaluate_method(bench, "react", {"clip_by": "value", "clip_value": 1.0})
                                            .average.fpr95)
    if "dice+react" in methods:
        facts["dice_react_c"] = float(bench.scorer("dice+react").threshold())
    if "line" in methods:
        facts["delta"] = float(bench.scorer("line").resolve()["delta"])
        activations = bench.stats.get("val_activations_sorted")
        if activations is not None:
            facts["delta_clipped"] = 100.0 - stages.value_to_percentile(activations, facts["delta"])
    if "opp" in defaults:
        facts["opp_fpr"] = 100 * float(defaults["opp"].average.fpr95)
        facts["q_w_high"] = float(defaults["opp"].hparams["q_w_high"])
    return facts


def _variant_results(bench: Any, mode: str, protocol: Protocol | None, plain: Mapping[str, MethodResult],
                     available: Sequence[str]) -> dict[str, MethodResult]:
    """The result of every ordering variant under ``mode`` (plain methods reuse ``plain``)."""
    out = {}
    for key, variant in orderings.VARIANTS.items():
        if variant.method not in available:
            continue
        if not variant.fixed and variant.method in plain:
            out[key] = plain[variant.method]
        elif mode == "defaults":
            out[key] = evaluate_method(bench, variant.method, dict(variant.fixed))
        else:
            out[key] = tune_method(bench, variant.method, protocol, dict(variant.fixed)).result
    return out


def model_report(bench: Any, protocol: Protocol, methods: Sequence[str] | None = None, *, n_boot: int = 1000,
                 seed: int = 0, on_progress: ProgressCallback | None = None,
                 log: Callable[[str], None] = lambda _: None) -> ModelReport:
    """Every figure of one model's section of the page, computed on ``bench``.

    protocol: the validation protocol the "tuned" figures use (e.g. ``Protocol("validation",
    ("val-outliers:cifar10",))``); the oracle is tuned on the test sets and labelled so.
    methods: the methods of the main table (default: every method the benchmark supports).
    n_boot / seed: the paired bootstrap behind each ordering's significance.
    """
    available = available_methods(bench)
    requested = list(dict.fromkeys(methods or available))
    methods = [m for m in requested if m in available]
    skipped = [m for m in requested if m not in available]
    if not methods:
        raise OODLensError(f"no method could be evaluated on {bench.model}: the cache lacks what they need")
    oracle_protocol = Protocol("oracle", (), protocol.objective, protocol.accuracy_budget)
    log(f"{bench.model}: evaluating {len(methods)} methods at their defaults")
    defaults = {m: evaluate_method(bench, m) for m in methods}
    log(f"{bench.model}: tuning on validation data ({protocol.describe(bench.id_dataset)})")
    tuned = tune_benchmark(bench, methods, protocol, on_progress=on_progress)
    log(f"{bench.model}: tuning the oracle on the test sets")
    oracle = tune_benchmark(bench, methods, oracle_protocol, on_progress=on_progress)
    rows = [MethodRow(m, Figures.of(defaults[m]), Figures.of(tuned[m].result), chosen_label(tuned[m]),
                      Figures.of(oracle[m].result), chosen_label(oracle[m])) for m in methods]
    first = next(iter(defaults.values()))
    report = ModelReport(
        model=bench.model, id_dataset=bench.id_dataset, ood_sets=tuple(bench.ood), id_accuracy=first.base_id_accuracy,
        rows=dict(bench.rows), limit=bench.limit, protocol=protocol.describe(bench.id_dataset),
        oracle_protocol=oracle_protocol.describe(bench.id_dataset), methods=rows, skipped_methods=skipped)
    log(f"{bench.model}: ablations and sweeps at defaults")
    if "line" in methods:
        report.ablation, report.delta = line_ablation(bench), line_delta(bench)
    if "opnp" in methods:
        report.opnp, report.opnp_grid = opnp_variants(bench, methods), opnp_grid(bench)
    if "dice" in methods:
        report.dice = dice_sweep(bench, methods)
    report.nap = nap_rows({m: Figures.of(r) for m, r in defaults.items()})
    if "class_contribution" in bench.stats:
        report.overlap = overlap_rows(bench)
    if "energy" in defaults:
        report.checks = consistency_checks(bench, defaults["energy"], methods)
    report.facts = facts_of(bench, defaults, methods)
    log(f"{bench.model}: orderings (tuning LINe's ablation variants, paired bootstrap B = {n_boot})")
    results = {"defaults": _variant_results(bench, "defaults", None, defaults, methods),
               "tuned": _variant_results(bench, "tuned", protocol, {m: t.result for m, t in tuned.items()}, methods),
               "oracle": _variant_results(bench, "oracle", oracle_protocol,
                                          {m: t.result for m, t in oracle.items()}, methods)}
    report.verdicts = orderings.judge(results, report.facts, n_boot=n_boot, seed=seed)
    return report


__all__ = ["Check", "Figures", "Grid", "MethodRow", "ModelReport", "NapRow", "ORACLE_LABEL", "OverlapRow",
           "SettingRow", "model_report"]

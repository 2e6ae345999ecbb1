"""The report's formats (table, Markdown, JSON, CSV) of one :class:`Report`.

JSON / CSV are a stable interface: records ``{method, ood, fpr95, auroc, aupr_in, aupr_out}``
with rates as fractions in [0, 1]; ``ood == "average"`` holds the unweighted mean over OOD
sets. Options add fields beside those, never change them:

* tuned (``--tuned``): ``hparams`` (the setting the figures use), ``val_fpr95`` / ``val_auroc``
  (the selection figures at that setting) and ``default_val_fpr95`` / ``default_val_auroc``
  (at the defaults); the top-level ``protocol`` says what the selection read.
* oracle (``--oracle``): ``oracle_fpr95`` / ``oracle_auroc`` / ``oracle_hparams``, figures of
  the test-tuned oracle, labelled ``oracle_label`` at the top level.
* intervals (``--ci``): ``fpr95_ci_low`` / ``fpr95_ci_high`` / ``auroc_ci_low`` /
  ``auroc_ci_high`` (95 % bootstrap intervals), ``fpr95_best`` / ``auroc_best`` (the best method
  of the column) and ``fpr95_tied_with_best`` / ``auroc_tied_with_best`` (its paired difference
  to the best is not significant); the top-level ``bootstrap`` gives B, the seed and the level.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

METRIC_KEYS = ("fpr95", "auroc", "aupr_in", "aupr_out")
METRIC_TITLES = ("FPR95", "AUROC", "AUPR-In", "AUPR-Out")
AVERAGE = "average"
DEGENERATE_MARK = "‡"
TIED_MARK = "≈"  # not significantly different from the column's best (paired bootstrap)


@dataclass
class Report:
    """What a report shows. results: the figures (``MethodResult``, defaults or tuned);
    tuned / oracle: method → ``TunedMethod`` (None when not asked); intervals: a
    ``BootstrapTable`` of ``results`` (None without ``--ci``)."""

    bench: Any
    results: list[Any]
    tuned: dict[str, Any] | None = None
    oracle: dict[str, Any] | None = None
    intervals: Any | None = None

    @property
    def id_accuracy(self) -> float:
        return self.results[0].base_id_accuracy

    @property
    def groups(self) -> list[str]:
        return [*self.results[0].metrics, AVERAGE]

    @property
    def protocol(self) -> Any | None:
        return next(iter(self.tuned.values())).protocol if self.tuned else None


def format_hparams(values: dict[str, Any]) -> str:
    """``"delta=2, p_a=50"`` (numbers without trailing zeros); ``"defaults"`` when empty."""
    if not values:
        return "defaults"
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _choice(tuned: Any, group: str) -> Any | None:
    """The ``Tuned`` behind a record's figures (None for the average when choices differ per set)."""
    if group != AVERAGE:
        return tuned.choices[group]
    choices = list(tuned.choices.values())
    return choices[0] if all(c is choices[0] for c in choices) else None


def chosen_label(tuned: Any) -> str:
    """The hyperparameters a tuned row uses, as changed from the defaults, for the tables."""
    shared = _choice(tuned, AVERAGE)
    if shared is not None:
        return format_hparams(shared.changed) + (f" ({shared.note})" if shared.note else "")
    return "; ".join(f"{name}: {format_hparams(c.changed)}" for name, c in tuned.choices.items())


def records(report: Report) -> list[dict[str, Any]]:
    """One record per (method, OOD set) plus ``ood="average"``; rates as fractions."""
    rows = []
    for result in report.results:
        for group, metrics in [*result.metrics.items(), (AVERAGE, result.average)]:
            record: dict[str, Any] = {"method": result.method, "ood": group,
                                      **{key: float(getattr(metrics, key)) for key in METRIC_KEYS}}
            if report.tuned is not None:
                record.update(_tuned_fields(report.tuned[result.method], group))
            if report.oracle is not None:
                oracle = report.oracle[result.method]
                figures = oracle.result.average if group == AVERAGE else oracle.result.metrics[group]
                record.update(oracle_fpr95=float(figures.fpr95), oracle_auroc=float(figures.auroc),
                              oracle_hparams=dict(oracle.choices[next(iter(oracle.choices))].params))
            if report.intervals is not None:
                record.update(_interval_fields(report.intervals, result.method, group))
            rows.append(record)
    return rows


def _tuned_fields(tuned: Any, group: str) -> dict[str, Any]:
    choice = _choice(tuned, group)
    choices = list(tuned.choices.values()) if choice is None else [choice]
    mean = lambda values: float(sum(values) / len(values))  # noqa: E731
    return {"hparams": dict(choice.params) if choice is not None else {n: dict(c.params) for n, c in tuned.choices.items()},
            "val_fpr95": mean([c.selected.fpr95 for c in choices]), "val_auroc": mean([c.selected.auroc for c in choices]),
            "default_val_fpr95": mean([c.default.fpr95 for c in choices]),
            "default_val_auroc": mean([c.default.auroc for c in choices])}


def _interval_fields(table: Any, method: str, group: str) -> dict[str, Any]:
    found = table.intervals[method][group]
    out: dict[str, Any] = {}
    for metric in ("fpr95", "auroc"):
        interval = getattr(found, metric)
        comparison = table.comparisons[group][metric]
        difference = comparison.differences.get(method)
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = interval.lo, interval.hi
        out[f"{metric}_best"] = comparison.best == method
        out[f"{metric}_tied_with_best"] = bool(difference is not None and comparison.best != method
                                               and not difference.significant)
    return out


def provenance(bench: Any) -> dict[str, Any]:
    """What the figures come from, as the JSON report's top-level fields."""
    return {"model_key": bench.model_key, "model_fingerprint": bench.model_fingerprint,
            "checkpoint": bench.checkpoint, "limit": bench.limit, "rows": dict(bench.rows),
            "skipped": {key: list(items) for key, items in bench.skipped.items()}}


def to_json(report: Report) -> str:
    bench = report.bench
    payload: dict[str, Any] = {
        "model": bench.model, "id": bench.id_dataset, "id_accuracy": float(report.id_accuracy),
        "results": records(report), "hparams": {r.method: r.hparams for r in report.results},
        "degenerate": {r.method: list(r.degenerate) for r in report.results}, **provenance(bench)}
    if report.tuned is not None:
        payload["protocol"] = {**report.protocol.as_dict(), "description": report.protocol.describe(bench.id_dataset),
                               "validation_rows": {name: int(f.logits.shape[0]) for name, f in bench.val_ood.items()}}
        payload["tuning"] = {m: {name: c.as_dict() for name, c in t.choices.items()} for m, t in report.tuned.items()}
    if report.oracle is not None:
        payload["oracle_label"] = next(iter(report.oracle.values())).protocol.describe(bench.id_dataset)
    if report.intervals is not None:
        table = report.intervals
        payload["bootstrap"] = {"replicates": table.n_boot, "seed": table.seed, "level": table.level,
                                "resampled": "ID test scores and each OOD set's scores, the same resamples for "
                                             "every method (paired)"}
    return json.dumps(payload, indent=2, default=str, allow_nan=False)


def to_csv(report: Report) -> str:
    """The records, with their provenance as extra columns: degenerate (why, or empty), rows of
    ID test and of the OOD set (summed for the average), the limit, the files skipped as
    unreadable in the set (``set: file; ...``) and the model fingerprint; then the option
    fields (dicts as JSON)."""
    bench = report.bench
    rows = records(report)
    buffer = io.StringIO()
    extra = ["degenerate", "id_rows", "ood_rows", "limit", "skipped", "model_fingerprint"]
    optional = [key for key in rows[0] if key not in ("method", "ood", *METRIC_KEYS)] if rows else []
    writer = csv.DictWriter(buffer, fieldnames=["method", "ood", *METRIC_KEYS, *extra, *optional], lineterminator="\n")
    writer.writeheader()
    id_rows = bench.rows.get(f"{bench.id_dataset}/test")
    degenerate = {r.method: "; ".join(r.degenerate) for r in report.results}
    for record in rows:
        ood = record["ood"]
        ood_rows = sum(bench.rows.get(f"{o}/test", 0) for o in bench.ood) if ood == AVERAGE \
            else bench.rows.get(f"{ood}/test")
        sets = bench.ood if ood == AVERAGE else [ood]
        skipped = [f"{o}: {item}" for o in sets for item in bench.skipped.get(f"{o}/test", [])]
        flat = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in record.items()}
        writer.writerow({**flat, "degenerate": degenerate[record["method"]], "id_rows": id_rows,
                         "ood_rows": ood_rows, "limit": "" if bench.limit is None else bench.limit,
                         "skipped": "; ".join(skipped), "model_fingerprint": bench.model_fingerprint})
    return buffer.getvalue()


def describe_sources(report: Report) -> list[str]:
    """Lines saying what the figures come from: weights, rows per set, the subset, skipped
    files, the tuning protocol, the oracle and the intervals."""
    bench = report.bench
    weights = f"{bench.model} weights {bench.model_fingerprint}" + (
        f" (checkpoint {bench.checkpoint})" if bench.checkpoint else "")
    rows = ", ".join(f"{key.removesuffix('/test')} {n:,}" for key, n in bench.rows.items())
    lines = [f"Computed from {weights}; test rows per set: {rows} "
             f"({bench.rows.get(f'{bench.id_dataset}/test', 0):,} ID test)."]
    if bench.limit is not None:
        lines.append(f"Subset: every split capped at a stratified --limit {bench.limit} images, "
                     "not the full benchmark.")
    for key, items in bench.skipped.items():
        lines.append(f"Skipped as unreadable in {key}: {', '.join(items)}.")
    if report.tuned is not None:
        sizes = ", ".join(f"{name} {int(f.logits.shape[0]):,}" for name, f in bench.val_ood.items())
        lines.append(report.protocol.describe(bench.id_dataset)
                     + f" Selection rows: {bench.id_dataset} val {int(bench.id_val.logits.shape[0]):,}"
                     + (f", {sizes}." if sizes else "."))
    if report.oracle is not None:
        lines.append("Oracle column: " + next(iter(report.oracle.values())).protocol.describe(bench.id_dataset))
    if report.intervals is not None:
        table = report.intervals
        lines.append(f"[lo, hi]: {100 * table.level:g} % bootstrap intervals ({table.n_boot:,} resamples of the ID "
                     f"test and OOD scores, seed {table.seed}); {TIED_MARK}: not significantly different from the "
                     "column's best method (paired bootstrap on the same resamples).")
    return lines


def _degenerate_footnote(results: Sequence[Any]) -> list[str]:
    return [f"{DEGENERATE_MARK} {r.method}: degenerate setting, not comparable ({'; '.join(r.degenerate)})."
            for r in results if r.degenerate]


def _label(result: Any) -> str:
    return result.method + (f" {DEGENERATE_MARK}" if result.degenerate else "")


def _title(report: Report, what: str) -> str:
    mode = "tuned on validation" if report.tuned is not None else "published defaults"
    if report.tuned is not None and report.protocol.is_oracle:
        mode = "ORACLE, tuned on the test sets"
    return (f"{report.bench.model} on {report.bench.id_dataset} ({mode}): ID accuracy "
            f"{100 * report.id_accuracy:.2f} %. {what}")


def _cell(report: Report, result: Any, group: str) -> str:
    metrics = result.average if group == AVERAGE else result.metrics[group]
    if report.intervals is None:
        return f"{100 * metrics.fpr95:.1f} / {100 * metrics.auroc:.1f}"
    parts = []
    for metric in ("fpr95", "auroc"):
        interval = getattr(report.intervals.intervals[result.method][group], metric)
        comparison = report.intervals.comparisons[group][metric]
        difference = comparison.differences.get(result.method)
        mark = "*" if comparison.best == result.method else (
            TIED_MARK if difference is not None and not difference.significant else "")
        parts.append(f"{100 * getattr(metrics, metric):.1f}{mark} [{100 * interval.lo:.1f}, {100 * interval.hi:.1f}]")
    return " / ".join(parts)


def to_markdown(report: Report) -> str:
    """A Markdown table: one row per method, FPR95 / AUROC (%) per OOD set and on average, plus
    the chosen hyperparameters (tuned) and the oracle's average (with ``--oracle``)."""
    groups = report.groups
    header = ["method", *groups]
    if report.tuned is not None:
        header.append("chosen (vs defaults)")
    if report.oracle is not None:
        header.append("oracle avg (test-tuned)")
    what = "Cells: FPR95 / AUROC in % (FPR95 lower is better, AUROC higher)"
    if report.intervals is not None:
        what += "; * best in its column"
    lines = [_title(report, what + "."), "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for result in report.results:
        cells = [_cell(report, result, g) for g in groups]
        if report.tuned is not None:
            cells.append(chosen_label(report.tuned[result.method]))
        if report.oracle is not None:
            oracle = report.oracle[result.method].result.average
            cells.append(f"{100 * oracle.fpr95:.1f} / {100 * oracle.auroc:.1f}")
        lines.append(f"| {_label(result)} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *describe_sources(report), *_degenerate_footnote(report.results)]) + "\n"


def to_table(report: Report) -> str:
    """Fixed-width table: one row per method, a column group per OOD set + average (percent)."""
    results = report.results
    groups = report.groups
    method_width = max(6, *(len(_label(r)) for r in results))
    cell = 8
    group_width = len(METRIC_TITLES) * (cell + 1) - 1
    lines = [_title(report, "(FPR95 lower is better; AUROC, AUPR-In, AUPR-Out higher is better; all in %)"), ""]
    lines.append(" " * method_width + " | " + " | ".join(g[:group_width].center(group_width) for g in groups))
    lines.append("method".ljust(method_width) + " | "
                 + " | ".join(" ".join(t.rjust(cell) for t in METRIC_TITLES) for _ in groups))
    lines.append("-" * len(lines[-1]))
    for result in results:
        cells = []
        for group in groups:
            metrics = result.average if group == AVERAGE else result.metrics[group]
            cells.append(" ".join(f"{100 * getattr(metrics, key):{cell}.2f}" for key in METRIC_KEYS))
        suffix = ""
        if abs(result.id_accuracy - result.base_id_accuracy) > 1e-12:
            suffix = f"   (modified head ID acc. {100 * result.id_accuracy:.2f} %)"
        if report.tuned is not None:
            suffix += f"   chosen: {chosen_label(report.tuned[result.method])}"
        if report.oracle is not None:
            oracle = report.oracle[result.method].result.average
            suffix += f"   oracle avg {100 * oracle.fpr95:.2f} / {100 * oracle.auroc:.2f}"
        lines.append(_label(result).ljust(method_width) + " | " + " | ".join(cells) + suffix)
    if report.intervals is not None:
        lines += ["", "95 % intervals (FPR95 [lo, hi] / AUROC [lo, hi], average over sets):"]
        lines += [f"  {_label(r).ljust(method_width)}  {_cell(report, r, AVERAGE)}" for r in results]
    return "\n".join([*lines, "", *describe_sources(report), *_degenerate_footnote(results)]) + "\n"

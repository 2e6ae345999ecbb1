"""``python -m ood_core.report``: JSON / CSV schema, table, hyperparameter overrides, errors."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from ood_core import report
from ood_core.benchmark import evaluate_method, load_benchmark
from tests.conftest import FAKE_ID, FAKE_MODEL, FAKE_OOD_A, FAKE_OOD_B

BASE = ["--model", FAKE_MODEL, "--id", FAKE_ID, "--ood", FAKE_OOD_A, FAKE_OOD_B, "--quiet", "--no-odin"]


def _run(capsys, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    code = report.main([*BASE, "--cache-dir", str(tmp_path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_schema_and_values(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    code, out, _ = _run(capsys, tmp_path, "--format", "json", "--methods", "msp", "energy",
                        "--hparam", "energy.temperature=2")
    assert code == 0
    payload = json.loads(out)
    assert payload["model"] == FAKE_MODEL and payload["id"] == FAKE_ID
    assert 0.0 <= payload["id_accuracy"] <= 1.0
    assert [(r["method"], r["ood"]) for r in payload["results"]] == [
        (m, o) for m in ("msp", "energy") for o in (FAKE_OOD_A, FAKE_OOD_B, "average")]
    for record in payload["results"]:
        assert set(record) == {"method", "ood", "fpr95", "auroc", "aupr_in", "aupr_out"}
        assert all(0.0 <= record[k] <= 1.0 for k in report.METRIC_KEYS)
    bench = load_benchmark(FAKE_MODEL, FAKE_ID, [FAKE_OOD_A, FAKE_OOD_B], cache_root=tmp_path, progress=False)
    expected = evaluate_method(bench, "energy", {"temperature": 2.0})
    energy_a = payload["results"][3]
    assert energy_a["auroc"] == pytest.approx(expected.metrics[FAKE_OOD_A].auroc)
    assert payload["results"][5]["fpr95"] == pytest.approx(expected.average.fpr95)
    assert payload["id_accuracy"] == pytest.approx(expected.base_id_accuracy)
    assert payload["hparams"]["energy"] == {"temperature": 2.0}


def test_csv_has_the_same_records(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    _, out_json, _ = _run(capsys, tmp_path, "--format", "json", "--methods", "msp", "knn")
    code, out_csv, _ = _run(capsys, tmp_path, "--format", "csv", "--methods", "msp", "knn")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out_csv)))
    records = json.loads(out_json)["results"]
    assert len(rows) == len(records) == 6
    for row, record in zip(rows, records):
        assert row["method"] == record["method"] and row["ood"] == record["ood"]
        for key in report.METRIC_KEYS:
            assert float(row[key]) == pytest.approx(record[key])


def test_table_lists_every_available_method_in_percent(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    code, out, err = _run(capsys, tmp_path)
    assert code == 0
    from ood_core.scorers import list_scorers

    rows = [line.split("|")[0].strip().removesuffix(f" {report.DEGENERATE_MARK}")
            for line in out.splitlines() if "|" in line][2:]
    assert "odin" not in rows and {"msp", "energy", "knn"} <= set(rows)
    assert set(rows) <= set(list_scorers())
    assert "ID accuracy" in out and FAKE_OOD_A in out and "average" in out
    bench = load_benchmark(FAKE_MODEL, FAKE_ID, [FAKE_OOD_A, FAKE_OOD_B], cache_root=tmp_path, progress=False)
    msp = evaluate_method(bench, "msp")
    msp_line = next(line for line in out.splitlines() if line.startswith("msp "))
    assert f"{100 * msp.metrics[FAKE_OOD_A].auroc:.2f}" in msp_line
    assert err == "" or "Traceback" not in err


@pytest.mark.parametrize("extra,message", [
    (["--methods", "no-such"], "unknown method"),
    (["--hparam", "energy.temperature"], "METHOD.NAME=VALUE"),
    (["--methods", "energy", "--hparam", "energy.temperature=-5"], "temperature"),
    (["--methods", "energy", "--hparam", "msp.temperature=1"], "not reported"),
    (["--hparam", "nope.x=1"], "unknown method"),
    (["--limit", "0"], "positive"),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path: Path, fake_benchmark_names, extra, message) -> None:
    code, out, err = _run(capsys, tmp_path, *extra)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_parse_hparams() -> None:
    assert report.parse_hparams(["line.delta=1.5", "line.p_a = 90", "dice+react.sparsity=70"]) == {
        "line": {"delta": "1.5", "p_a": "90"}, "dice+react": {"sparsity": "70"}}


def test_tuned_json_adds_choice_protocol_and_validation_figures(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    _, plain, _ = _run(capsys, tmp_path, "--format", "json", "--methods", "energy", "react")
    code, out, _ = _run(capsys, tmp_path, "--format", "json", "--methods", "energy", "react", "--tuned", "--oracle")
    assert code == 0
    payload, default_payload = json.loads(out), json.loads(plain)
    assert payload["protocol"]["kind"] == "validation" and payload["protocol"]["oracle"] is False
    assert payload["protocol"]["val_ood"] == [f"val-outliers:{FAKE_ID}"]
    assert "no test set read" in payload["protocol"]["description"]
    assert "oracle" in payload["oracle_label"] and "optimistic" in payload["oracle_label"]
    for record, before in zip(payload["results"], default_payload["results"]):
        assert {"method", "ood", *report.METRIC_KEYS} <= set(record)
        assert {"hparams", "val_fpr95", "val_auroc", "default_val_fpr95", "default_val_auroc",
                "oracle_fpr95", "oracle_auroc", "oracle_hparams"} <= set(record)
        assert record["val_fpr95"] <= record["default_val_fpr95"] + 1e-12
        if record["hparams"] == payload["tuning"][record["method"]][FAKE_OOD_A]["hparams"] and \
                record["hparams"] == default_payload["hparams"][record["method"]]:
            assert record["fpr95"] == before["fpr95"]  # tuning kept the defaults: same test figures


def test_tuned_markdown_names_the_choice_and_the_protocol(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    code, out, _ = _run(capsys, tmp_path, "--format", "markdown", "--methods", "energy", "line", "--tuned", "--oracle")
    assert code == 0
    assert "(tuned on validation)" in out and "| chosen (vs defaults) | oracle avg (test-tuned) |" in out
    assert f"Hyperparameters tuned on {FAKE_ID} val vs val-outliers:{FAKE_ID} (no test set read)" in out
    assert "Oracle column:" in out and "optimistic" in out


def test_ci_adds_interval_fields_beside_the_existing_ones(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    code, out, _ = _run(capsys, tmp_path, "--format", "csv", "--methods", "msp", "energy", "--ci", "--bootstrap", "200")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0])[:6] == ["method", "ood", *report.METRIC_KEYS]
    for row in rows:
        assert 0.0 <= float(row["fpr95_ci_low"]) <= float(row["fpr95_ci_high"]) <= 1.0
        assert row["fpr95_best"] in ("True", "False") and row["auroc_tied_with_best"] in ("True", "False")
    assert all(set(row["method"]).isdisjoint("·↓") for row in rows)


@pytest.mark.parametrize("extra, message", [
    (["--val-ood", FAKE_OOD_A, "--tuned"], "is also a test set"),
    (["--accuracy-budget", "1"], "only apply with --tuned"),
    (["--tuned", "--val-ood", "leave-one-out", "--ci"], "--ci needs one setting per method"),
    (["--tuned", "--val-ood", "val-outliers:nope"], "unknown dataset 'nope'"),
])
def test_tuning_option_errors_are_one_line(capsys, tmp_path: Path, fake_benchmark_names, extra, message) -> None:
    code, _, err = _run(capsys, tmp_path, "--methods", "energy", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1

"""``python -m ood_core.reproduce`` on a synthetic benchmark (no pack needed) and its CLI."""
from __future__ import annotations

import dataclasses
import re

import pytest

from ood_core import paths
from ood_core.benchmark import evaluate_method
from ood_core.reproduce import cli, orderings
from ood_core.reproduce.compute import model_report
from ood_core.reproduce.orderings import CLAIMS, UNEXPLAINED, Verdict, explain, judge
from ood_core.reproduce.published import PUBLISHED, SOURCES
from ood_core.reproduce.render import RunInfo, render
from ood_core.synthetic import OODSet, SyntheticSettings, make_synthetic
from ood_core.tuning import ORACLE_LABEL, Protocol

# Every method an ordering or a section reads; the rest would only slow the tuning down.
METHODS = ["msp", "energy", "react", "dice", "dice+react", "line", "opp", "onp", "opnp", "nap", "nap-e", "knn"]
VAL = "val-outliers:synthetic"


def synthetic_bench(seed: int = 3):
    settings = SyntheticSettings.toy(classes=6, dim=40, train=300, val=120, id_test=200, seed=seed,
                                     ood=(OODSet("far", 120, "far"), OODSet("near", 120, "near"),
                                          OODSet("origin", 100, "origin"), OODSet(VAL, 120, "mixed")))
    bench = make_synthetic(settings)
    bench.val_ood = {VAL: bench.ood.pop(VAL)}  # validation only: never a test set
    bench.rows.pop(f"{VAL}/test")
    return bench


@pytest.fixture(scope="module")
def bench():
    return synthetic_bench()


@pytest.fixture(scope="module")
def report(bench):
    return model_report(bench, Protocol("validation", (VAL,)), METHODS, n_boot=100)


def info(**changes) -> RunInfo:
    base = RunInfo(command="python -m ood_core.reproduce", commit="abc1234-dirty", machine="test CPU, 2 cores",
                   started="2026-12-02 00:00 UTC", seconds=12.0, with_odin=False, limit=None, n_boot=100, seed=0)
    return dataclasses.replace(base, **changes)


def test_the_page_has_every_section(report):
    page = render(info(), [report])
    for heading in ("# Reproducing", "## Caveats", "## Orderings", "## Published CIFAR-10 figures beside ours",
                    "### Every method: defaults, tuned on validation, oracle (tuned on the test sets)",
                    "### Per OOD set, tuned on validation",
                    "### LINe: ablation and δ, at defaults", "### OPNP, at defaults",
                    "### DICE sparsity sweep and DICE + ReAct", "### NAP alone and combined",
                    "### LINe's Table 8: neuron overlap", "### Consistency checks"):
        assert heading in page, heading
    assert "OPNP's average FPR95 over q_w_low × q_n_high" in page
    for fact in ("abc1234-dirty", "test CPU, 2 cores", "python -m ood_core.reproduce", "JPEG",
                 "orderings, not absolute", "ODIN | skipped"):
        assert fact in page, fact
    for source in SOURCES:
        assert source in page
    assert "24.56 %" in page and "23.39 %" in page  # LINe's Table 8 beside ours
    assert "<" not in page.replace("<br>", "")  # plain Markdown, no stray HTML


def test_every_claim_is_judged_at_defaults_and_tuned(report):
    judged = {(v.claim.key, v.mode) for v in report.verdicts}
    assert judged == {(c.key, mode) for c in CLAIMS for mode in ("defaults", "tuned")}
    page = render(info(), [report])
    for claim in CLAIMS:
        assert f"| {claim.text} |" in page


def test_explanations_only_for_claims_that_do_not_hold(report):
    for verdict in report.verdicts:
        assert bool(verdict.explanation) == (not verdict.holds), verdict
        assert verdict.holds == (verdict.worse_fpr95 > verdict.better_fpr95)
        assert verdict.margin == pytest.approx(verdict.worse_fpr95 - verdict.better_fpr95)
        assert verdict.lo <= verdict.margin <= verdict.hi or not verdict.significant


def test_the_oracle_is_labelled_wherever_it_appears(report):
    page = render(info(), [report])
    assert ORACLE_LABEL in page
    for line in page.splitlines():
        if "oracle" in line.lower():
            assert ORACLE_LABEL in line or "tuned on the test sets" in line.lower(), line


def test_a_subset_run_says_so_in_every_section(report):
    page = render(info(limit=50), [report])
    headings = [line for line in page.splitlines() if line.startswith("## ") or line.startswith("### ")]
    assert headings and all("subset" in h for h in headings), [h for h in headings if "subset" not in h]
    full = [line for line in render(info(), [report]).splitlines() if line.startswith("#")]
    assert not any("subset" in h for h in full)


def test_odin_flag_is_stated(report):
    assert "ODIN | included" in render(info(with_odin=True), [report])


def _verdict(results, claim_key):
    return next(v for v in judge(results, {}, n_boot=100) if v.claim.key == claim_key and v.mode == "defaults")


def test_the_verdict_follows_the_numbers(bench):
    msp, energy = evaluate_method(bench, "msp"), evaluate_method(bench, "energy")
    as_is = _verdict({"defaults": {"energy": energy, "msp": msp}}, "energy>msp")
    flipped = _verdict({"defaults": {"energy": msp, "msp": energy}}, "energy>msp")
    assert as_is.holds == (msp.average.fpr95 > energy.average.fpr95)
    assert flipped.holds != as_is.holds
    assert flipped.margin == pytest.approx(-as_is.margin)
    assert (flipped.lo, flipped.hi) == pytest.approx((-as_is.hi, -as_is.lo))
    assert flipped.significant == as_is.significant
    same = _verdict({"defaults": {"energy": energy, "msp": energy}}, "energy>msp")
    assert not same.holds and not same.significant and same.margin == 0
    assert same.explanation.startswith("The gap (+0.0 pt) is within bootstrap noise")


def _failed(claim_key: str, mode: str = "defaults", **changes) -> Verdict:
    claim = next(c for c in CLAIMS if c.key == claim_key)
    base = Verdict(claim, mode, better_fpr95=0.9, worse_fpr95=0.5, margin=-0.4, lo=-0.45, hi=-0.35, significant=True)
    return dataclasses.replace(base, **changes)


def test_the_explanation_that_applies_is_printed():
    facts = {"react_c": 0.40, "react_c1_fpr": 50.0, "energy_fpr": 60.0}
    text = explain(_failed("react>energy"), facts)
    assert "c = 0.40" in text and "docs/methods.md §2.5" in text
    # The same failure when the threshold is not low: that explanation does not apply.
    assert explain(_failed("react>energy"), {**facts, "react_c": 1.0}) == UNEXPLAINED
    # Generic explanations read the same claim under other protocols ...
    tuned_holds = _failed("nap-e>nap", others={"defaults": (0.9, 0.5), "tuned": (0.5, 0.55)})
    assert "With hyperparameters chosen on validation data it holds (+5.0 pt)" in explain(tuned_holds, {})
    oracle_holds = _failed("nap-e>nap", mode="tuned", others={"tuned": (0.9, 0.5), "oracle": (0.5, 0.52)})
    assert "Tuned on the test sets (oracle) it holds (+2.0 pt)" in explain(oracle_holds, {})
    hurt = _failed("nap-e>nap", mode="tuned", others={"defaults": (0.4, 0.5), "tuned": (0.9, 0.5)})
    assert "made NAP-E worse on the test sets (40.0 at defaults → 90.0 tuned)" in explain(hurt, {})
    # ... or per OOD set: holding on the natural images, failing on the noise sets.
    split = _failed("energy>msp", per_set={"isun": (0.5, 0.7), "mnist": (0.4, 0.8), "noise-gaussian": (1.0, 0.6),
                                           "noise-uniform": (1.0, 0.7)})
    text = explain(split, {})
    assert "natural-image sets (isun, mnist: +30.0 pt on average)" in text
    assert "noise sets (noise-gaussian, noise-uniform: -35.0 pt)" in text and "Energy has FPR95 100.0" in text
    failing_everywhere = dataclasses.replace(split, per_set={"isun": (0.7, 0.5), "noise-gaussian": (1.0, 0.6)})
    assert explain(failing_everywhere, {}) == UNEXPLAINED
    assert explain(_failed("nap-e>nap"), {}) == UNEXPLAINED
    assert explain(_failed("nap-e>nap", margin=0.1), {}) == ""  # holds: nothing to explain
    # A fact the benchmark lacks never breaks the page: that explanation is skipped.
    assert explain(_failed("line>dice+react", margin=-0.01, lo=-0.02, hi=-0.005), {}) == UNEXPLAINED


def test_explanations_are_keyed_by_known_claims():
    assert set(orderings.EXPLANATIONS) <= {c.key for c in CLAIMS}
    for claim in CLAIMS:
        assert claim.better in orderings.VARIANTS and claim.worse in orderings.VARIANTS


def test_published_rows_name_their_source():
    assert all(row.source in SOURCES for row in PUBLISHED)
    line = {row.method: row.fpr95 for row in PUBLISHED if row.source.startswith("LINe")}
    assert line["line"] == 14.71 and line["dice+react"] == 16.48  # docs/methods.md §7.3


def test_help_explains_itself(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--models", "--limit", "--out", "--cache-dir", "--odin", "--quiet", "docs/results.md", "subset"):
        assert option in out


@pytest.mark.parametrize("argv", [["--models", "nope"], ["--limit", "0"], ["--methods", "nope"]])
def test_bad_arguments_are_one_line_errors(argv, capsys, tmp_path):
    assert cli.main([*argv, "--out", str(tmp_path / "r.md"), "--quiet"], loader=pytest.fail) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "r.md").exists()


def test_a_subset_gets_its_own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path / "cache"))
    args = cli.build_parser().parse_args(["--limit", "20"])
    assert cli.cache_dir(args) == tmp_path / "cache-limit20"
    assert cli.cache_dir(cli.build_parser().parse_args([])) == tmp_path / "cache"
    assert cli.cache_dir(cli.build_parser().parse_args(["--limit", "20", "--cache-dir", str(tmp_path)])) == tmp_path


def test_commit_and_machine():
    assert re.fullmatch(r"([0-9a-f]{4,40}(-dirty)?|unknown)", cli.git_commit())
    assert "torch" in cli.machine("cpu") and "cores" in cli.machine("cpu")


def test_the_cli_writes_the_page(tmp_path, capsys):
    out = tmp_path / "docs" / "results.md"
    argv = ["--models", "resnet20-cifar10", "--methods", "msp", "energy", "react", "nap", "nap-e",
            "--bootstrap", "50", "--out", str(out), "--quiet"]
    # The loader stands in for load_benchmark: a synthetic benchmark, no pack needed.
    assert cli.main(argv, loader=lambda model, args: synthetic_bench(seed=5)) == 0
    page = out.read_text(encoding="utf-8")
    assert "python -m ood_core.reproduce --models resnet20-cifar10" in page
    assert "| NAP-E > NAP |" in page and "| Energy > MSP |" in page
    assert "### LINe: ablation" not in page  # LINe was left out: its sections are omitted
    assert capsys.readouterr().err == ""  # --quiet


@pytest.mark.skipif(not (paths.benchmark_root() / "weights").is_dir(), reason="benchmark pack not found")
def test_a_tiny_run_on_the_pack(tmp_path):
    out = tmp_path / "results.md"
    argv = ["--models", "resnet20-cifar10", "--limit", "20", "--cache-dir", str(tmp_path / "cache"),
            "--methods", "msp", "energy", "react", "line", "--bootstrap", "20", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    page = out.read_text(encoding="utf-8")
    assert "ResNet-20 (`resnet20-cifar10`) (subset: --limit 20)" in page
    assert all(name in page for name in ("isun", "dtd10", "mnist", "noise-gaussian", "noise-uniform"))

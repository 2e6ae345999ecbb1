"""``python -m precompute`` (and the report CLI) as users run them: in a subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ood_core.paths import REPO_ROOT, benchmark_root, weights_dir
from precompute.cli import main

HAS_PACK = (benchmark_root() / "weights" / "densenet100-cifar10.pth.tar").is_file()
HAS_DEMO = (weights_dir() / "demo_cnn.safetensors").is_file()


def _run(*args: str, cache: Path, module: str = "precompute", timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OOD_LENS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


def test_help_explains_usage(tmp_path: Path) -> None:
    result = _run("--help", cache=tmp_path)
    assert result.returncode == 0
    for text in ("--model", "--id", "--ood", "--limit", "--no-odin", "--rebuild", "examples:", "(default: 128)"):
        assert text in result.stdout


def test_list_shows_models_datasets_and_cache(tmp_path: Path) -> None:
    result = _run("--list", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "densenet100-cifar10" in result.stdout and "cifar10" in result.stdout and "(nothing)" in result.stdout


def test_unknown_model_in_a_subprocess(tmp_path: Path) -> None:
    _assert_one_line_error(_run("--model", "no-such-model", "--id", "cifar10", cache=tmp_path),
                           "unknown model", "densenet100-cifar10")


@pytest.mark.parametrize("args,fragments", [
    (["--model", "densenet100-cifar10", "--id", "cifar10", "--ood", "no-such-set"], ["unknown dataset", "isun"]),
    (["--id", "cifar10"], ["--model is required"]),
    (["--model", "densenet100-cifar10"], ["--id"]),
    (["--model", "densenet100-cifar10", "--id", "cifar10", "--limit", "0"], ["positive"]),
    (["--model", "densenet100-cifar10", "--dataset", "isun", "--split", "train"], ["split"]),
    (["--model", "densenet100-cifar10", "--dataset", "isun", "--id", "cifar10"], ["not both"]),
    (["--model", "resnet20-cifar10", "--id", "cifar10", "--checkpoint", "/no/such/weights.th"],
     ["checkpoint not found", "/no/such/weights.th"]),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys, args, fragments) -> None:
    # In-process (same main() as python -m precompute) to keep the suite fast.
    code = main([*args, "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    _assert_one_line_error(subprocess.CompletedProcess(args, code, "", err), *fragments)


def test_empty_folder_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(_run("--model", "resnet20-cifar10", "--dataset", f"folder:{empty}", cache=tmp_path))


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    result = _run("--model", "no-such-model", "--id", "cifar10", "--ood", "isun", cache=tmp_path,
                  module="ood_core.report")
    _assert_one_line_error(result, "unknown model")
    assert result.stdout == ""


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PACK, reason="benchmark pack not available")
def test_densenet_cifar10_isun_end_to_end(tmp_path: Path) -> None:
    result = _run("--model", "densenet100-cifar10", "--id", "cifar10", "--ood", "isun", "--limit", "20",
                  "--no-odin", "--batch-size", "10", "--quiet", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = _run("--list", cache=tmp_path).stdout
    assert "densenet100-cifar10 / cifar10: train val test" in listed and "densenet100-cifar10 / isun: test" in listed
    report = _run("--model", "densenet100-cifar10", "--id", "cifar10", "--ood", "isun", "--format", "json",
                  "--methods", "msp", "energy", "--no-odin", "--quiet", cache=tmp_path, module="ood_core.report")
    assert report.returncode == 0, report.stderr
    payload = json.loads(report.stdout)
    assert "building" not in report.stderr  # reused the cache built with --limit 20
    assert payload["id"] == "cifar10" and len(payload["results"]) == 4
    assert payload["id_accuracy"] > 0.5  # 20 CIFAR-10 images: a working DenseNet gets most right
    assert all(r["auroc"] > 0.5 for r in payload["results"])


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PACK, reason="benchmark pack not available")
def test_ctrl_c_keeps_chunks_and_resumes(tmp_path: Path) -> None:
    args = ["--model", "resnet20-cifar10", "--dataset", "cifar10", "--split", "test", "--limit", "400",
            "--batch-size", "2", "--no-odin", "--quiet"]
    env = {**os.environ, "OOD_LENS_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "precompute", *args], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chunks = tmp_path / "resnet20-cifar10" / "cifar10" / "test" / "chunks"
    deadline = time.monotonic() + 120
    while not list(chunks.glob("0000[1-9].safetensors")) and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "re-run the same command to resume" in err and "Traceback" not in err
    kept = len(list(chunks.glob("[0-9]*.safetensors")))
    assert kept >= 2
    finished = _run(*args, cache=tmp_path)
    assert finished.returncode == 0, finished.stderr
    manifest = json.loads((chunks.parent / "manifest.json").read_text())
    assert manifest["rows"] == 400 and not chunks.exists()


@pytest.mark.skipif(not HAS_DEMO, reason="demo-cnn weights not trained yet (python -m precompute.train_demo)")
def test_demo_end_to_end(tmp_path: Path) -> None:
    result = _run("--model", "demo-cnn", "--id", "demo-mnist", "--ood", "demo-letters", "demo-noise",
                  "--limit", "100", "--quiet", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    report = _run("--model", "demo-cnn", "--id", "demo-mnist", "--ood", "demo-letters", "demo-noise",
                  "--format", "csv", "--quiet", cache=tmp_path, module="ood_core.report")
    assert report.returncode == 0, report.stderr
    lines = report.stdout.strip().splitlines()
    # the stable columns first, then what the figures come from (the subset is disclosed)
    assert lines[0] == ("method,ood,fpr95,auroc,aupr_in,aupr_out,degenerate,id_rows,ood_rows,limit,skipped,"
                        "model_fingerprint")
    assert all(line.split(",")[9] == "100" for line in lines[1:])
    assert any(line.startswith("odin,demo-letters,") for line in lines)


def test_chunk_batches_default_is_the_builders() -> None:
    """The CLI repeats the builder's default (importing the builder would load torch for --help)."""
    from ood_core.cache import builder
    from precompute import cli

    assert cli.DEFAULT_CHUNK_BATCHES == builder.DEFAULT_CHUNK_BATCHES
    assert cli.build_parser().parse_args([]).chunk_batches == builder.DEFAULT_CHUNK_BATCHES

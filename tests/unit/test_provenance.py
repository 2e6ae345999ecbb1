"""Every figure comes from exactly the weights, images and tensors it names, or the tool refuses
with the one command that fixes it (found items 3–7 of the trust issue, each reproduced first).

The fake benchmark of ``tests/conftest.py`` runs through the two CLIs in-process:
``python -m precompute`` builds, ``python -m ood_core.report`` reads.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ood_core import report
from ood_core.cache import store
from precompute.cli import main as precompute_main
from tests.conftest import FAKE_ID, FAKE_MODEL, FAKE_OOD_A, FAKE_OOD_B

OODS = [FAKE_OOD_A, FAKE_OOD_B]


def _precompute(cache: Path, *extra: str, oods: list[str] = OODS) -> int:
    return precompute_main(["--model", FAKE_MODEL, "--id", FAKE_ID, "--ood", *oods, "--quiet", "--no-odin",
                            "--cache-dir", str(cache), *extra])


def _report(capsys, cache: Path, *extra: str, oods: list[str] = OODS) -> tuple[int, str, str]:
    capsys.readouterr()
    code = report.main(["--model", FAKE_MODEL, "--id", FAKE_ID, "--ood", *oods, "--quiet", "--no-odin",
                        "--cache-dir", str(cache), "--methods", "msp", "energy", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys, cache: Path, *extra: str, oods: list[str] = OODS) -> dict:
    code, out, err = _report(capsys, cache, "--format", "json", *extra, oods=oods)
    assert code == 0, err
    return json.loads(out)


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _command_in(message: str) -> list[str]:
    """The single repair command quoted in an error message, as argv for ``precompute.cli.main``."""
    commands = re.findall(r"`([^`]+)`", message)
    assert len(commands) == 1, message
    argv = shlex.split(commands[0])
    assert argv[:3] == ["python", "-m", "precompute"], commands[0]
    return argv[3:] + ["--quiet"]


def _entry(cache: Path, dataset: str, split: str = "test", model: str = FAKE_MODEL) -> Path:
    return store.entry_dir(cache, model, dataset, split)


# -- 3. the model fingerprint is checked on every read ------------------------------------------------
def test_another_checkpoint_never_passes_for_the_default_weights(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    """Found: precompute with --checkpoint (other weights), then report without it: exit 0 and the
    other weights' accuracy printed under the model's name."""
    from ood_core.models import create_model

    other = create_model(FAKE_MODEL)
    with torch.no_grad():
        other.fc.weight.mul_(-1.0)  # a different model: its accuracy collapses
    checkpoint = tmp_path / "other.pth"
    torch.save(other.state_dict(), checkpoint)
    assert _precompute(tmp_path / "cache", "--checkpoint", str(checkpoint)) == 0

    err = _one_line_error(*_report(capsys, tmp_path / "cache", "--no-build"))
    assert "python -m precompute --model test-bench-tiny" in err and "--checkpoint" not in err

    mine = _json(capsys, tmp_path / "cache", "--checkpoint", str(checkpoint), "--no-build")
    default = _json(capsys, tmp_path / "cache")  # builds the default weights' own entries
    assert default["model_fingerprint"] == create_model(FAKE_MODEL).fingerprint()
    assert mine["model_fingerprint"] == other.fingerprint() != default["model_fingerprint"]
    assert mine["checkpoint"] == str(checkpoint.resolve()) and default["checkpoint"] is None
    assert default["id_accuracy"] > 0.9 > mine["id_accuracy"]


def test_changed_default_weights_are_refused_until_rebuilt(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    """Found: a benchmark pack whose ResNet-20 weights changed kept serving the old numbers."""
    assert _precompute(tmp_path) == 0
    fake_benchmark_names["weights_version"] = 1  # the same name now loads other weights
    err = _one_line_error(*_report(capsys, tmp_path))
    assert "other weights" in err
    assert precompute_main(_command_in(err)) == 0
    payload = _json(capsys, tmp_path)
    from ood_core.models import create_model

    assert payload["model_fingerprint"] == create_model(FAKE_MODEL).fingerprint()


# -- 4. the dataset fingerprint is compared on every read --------------------------------------------
def _images(folder: Path, count: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def test_a_folder_that_grew_is_refused_then_rebuilt(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    """Found: a folder: dataset that grew from 46 to 146 images kept serving 46 rows."""
    folder = tmp_path / "imgs"
    _images(folder, 10)
    oods = [FAKE_OOD_A, f"folder:{folder}"]
    assert _precompute(tmp_path / "cache", oods=oods) == 0
    assert _json(capsys, tmp_path / "cache", oods=oods)["rows"][f"folder:{folder}/test"] == 10
    _images(folder, 5, start=10)
    err = _one_line_error(*_report(capsys, tmp_path / "cache", oods=oods))
    assert "images changed" in err
    assert precompute_main(_command_in(err)) == 0
    assert _json(capsys, tmp_path / "cache", oods=oods)["rows"][f"folder:{folder}/test"] == 15


def test_relative_folders_from_two_directories_never_share_an_entry(capsys, tmp_path: Path, monkeypatch,
                                                                    fake_benchmark_names) -> None:
    """Found: ``folder:imgs`` from two working directories with different images shared one entry."""
    _images(tmp_path / "a" / "imgs", 6)
    _images(tmp_path / "b" / "imgs", 9, start=50)
    rows = []
    for where in ("a", "b"):
        monkeypatch.chdir(tmp_path / where)
        assert _precompute(tmp_path / "cache", oods=[FAKE_OOD_A, "folder:imgs"]) == 0
        payload = _json(capsys, tmp_path / "cache", oods=[FAKE_OOD_A, "folder:imgs"])
        rows.append({k: v for k, v in payload["rows"].items() if k.startswith("folder:")})
    assert rows == [{f"folder:{tmp_path / 'a' / 'imgs'}/test": 6}, {f"folder:{tmp_path / 'b' / 'imgs'}/test": 9}]


def test_a_symlink_loop_does_not_multiply_images(tmp_path: Path) -> None:
    """Found: a symlink loop inside a folder turned 10 files into 410 rows."""
    from ood_core.datasets import create_dataset
    from ood_core.datasets.folders import scan_image_folder

    _images(tmp_path / "imgs", 10)
    os.symlink(tmp_path / "imgs", tmp_path / "imgs" / "loop")
    os.symlink(tmp_path / "imgs", tmp_path / "imgs" / "again")
    paths, _, _ = scan_image_folder(tmp_path / "imgs")
    assert len(paths) == 10
    assert len(create_dataset(f"folder:{tmp_path / 'imgs'}")) == 10


# -- 5. content is verified ------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["copied-over", "flipped-bytes"])
def test_tampered_features_are_refused(capsys, tmp_path: Path, fake_benchmark_names, damage: str) -> None:
    """Found: one OOD set's features copied over another's, or flipped bytes, gave plausible numbers."""
    assert _precompute(tmp_path) == 0
    target = _entry(tmp_path, FAKE_OOD_B) / store.FEATURES_FILE
    if damage == "copied-over":
        target.write_bytes((_entry(tmp_path, FAKE_OOD_A) / store.FEATURES_FILE).read_bytes())
    else:
        data = bytearray(target.read_bytes())
        data[-20] ^= 0xFF  # inside the last tensor's values: still a readable safetensors file
        target.write_bytes(bytes(data))
    err = _one_line_error(*_report(capsys, tmp_path))
    assert f"{FAKE_OOD_B}/test" in err and "checksum" in err
    assert precompute_main(_command_in(err)) == 0
    assert _report(capsys, tmp_path)[0] == 0


def test_non_finite_rows_are_refused(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    """Found: NaN rows in a cache entry gave plausible numbers with exit 0 (here written with a
    valid checksum, as a model that produced NaN would)."""
    assert _precompute(tmp_path) == 0
    entry = _entry(tmp_path, FAKE_OOD_A)
    tensors, manifest = store.load_entry(entry, FAKE_MODEL, FAKE_OOD_A, "test")
    tensors["penultimate"][3] = float("nan")
    kept = {k: v for k, v in manifest.items() if k not in {"rows", "shapes", "dtypes", "checksums", "format_version",
                                                           "kind", "created", "build_id", "tool"}}
    store.write_entry(entry, tensors, kept)
    err = _one_line_error(*_report(capsys, tmp_path))
    assert "non-finite" in err and f"{FAKE_OOD_A}/test" in err


# -- 6. repair advice that repairs -------------------------------------------------------------------
def test_corrupt_training_statistics_are_repaired_by_the_named_command(capsys, tmp_path: Path,
                                                                       fake_benchmark_names) -> None:
    """Found: a corrupt train_stats advised ``--split train --rebuild``, which rebuilt features only."""
    assert _precompute(tmp_path) == 0
    stats = store.train_stats_dir(tmp_path, FAKE_MODEL, FAKE_ID) / store.TRAIN_STATS_FILE
    data = bytearray(stats.read_bytes())
    data[-8] ^= 0xFF
    stats.write_bytes(bytes(data))
    err = _one_line_error(*_report(capsys, tmp_path))
    assert "train_stats" in err
    assert precompute_main(_command_in(err)) == 0
    assert _report(capsys, tmp_path)[0] == 0


def test_one_command_repairs_every_stale_entry_with_the_same_options(capsys, tmp_path: Path,
                                                                      fake_benchmark_names) -> None:
    """Found: hints dropped --limit / --no-odin and fixed one entry per run."""
    assert _precompute(tmp_path, "--limit", "12") == 0
    for dataset, split in [(FAKE_OOD_A, "test"), (FAKE_ID, "val")]:
        path = _entry(tmp_path, dataset, split) / store.FEATURES_FILE
        path.write_bytes(path.read_bytes()[:-4] + b"\x00\x00\x80\x7f")  # last float becomes +inf
    err = _one_line_error(*_report(capsys, tmp_path))
    assert f"{FAKE_OOD_A}/test" in err and f"{FAKE_ID}/val" in err
    argv = _command_in(err)
    assert "--limit 12" in " ".join(argv) and "--no-odin" in argv and "--rebuild" not in argv
    assert precompute_main(argv) == 0
    payload = _json(capsys, tmp_path)
    assert payload["limit"] == 12


def test_a_bad_device_is_named_not_blamed_on_the_cache(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    """Found: ``report --device bogus`` blamed the cache and advised a rebuild."""
    assert _precompute(tmp_path) == 0
    err = _one_line_error(*_report(capsys, tmp_path, "--device", "bogus"))
    assert "--device" in err and "bogus" in err and "rebuild" not in err and "cache" not in err


# -- 7. subsets and skipped files are disclosed --------------------------------------------------------
def test_every_report_format_discloses_rows_limit_skips_and_fingerprint(capsys, tmp_path: Path,
                                                                          fake_benchmark_names) -> None:
    """Found: a --limit 300 cache printed tables and JSON that looked like the full benchmark."""
    folder = tmp_path / "imgs"
    _images(folder, 8)
    (folder / "broken.png").write_bytes(b"not an image")
    oods = [FAKE_OOD_A, f"folder:{folder}"]
    assert _precompute(tmp_path / "cache", "--limit", "12", oods=oods) == 0
    from ood_core.models import create_model

    fingerprint = create_model(FAKE_MODEL).fingerprint()
    payload = _json(capsys, tmp_path / "cache", oods=oods)
    assert payload["limit"] == 12 and payload["model_fingerprint"] == fingerprint
    assert payload["rows"] == {f"{FAKE_ID}/test": 12, f"{FAKE_OOD_A}/test": 12, f"folder:{folder}/test": 8}
    assert payload["skipped"] == {f"folder:{folder}/test": ["broken.png"]}
    assert set(payload["results"][0]) == {"method", "ood", "fpr95", "auroc", "aupr_in", "aupr_out"}  # stable
    for fmt in ("table", "markdown"):
        code, out, err = _report(capsys, tmp_path / "cache", "--format", fmt, oods=oods)
        assert code == 0, err
        assert fingerprint in out and "broken.png" in out and "--limit 12" in out, fmt
        assert f"{FAKE_ID} 12, {FAKE_OOD_A} 12, folder:{folder} 8 (12 ID test)" in out, fmt
    code, out, err = _report(capsys, tmp_path / "cache", "--format", "csv", oods=oods)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2 * 3  # two methods × (two sets + average): nothing else in the file
    folder_row = next(r for r in rows if r["ood"] == f"folder:{folder}")
    assert (folder_row["limit"], folder_row["id_rows"], folder_row["ood_rows"]) == ("12", "12", "8")
    assert folder_row["skipped"] == f"folder:{folder}: broken.png" and folder_row["model_fingerprint"] == fingerprint

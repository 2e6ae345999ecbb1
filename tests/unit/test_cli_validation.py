"""The smaller trust findings (item 8): arguments validated before any work, names suggested,
ODIN's settings checked, clean checkpoint errors, concurrent builds, leftovers cleaned."""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch

from ood_core import report
from ood_core.cache import builder, ensure, store
from ood_core.registry import OODLensError, UnknownNameError
from precompute.cli import main as precompute_main
from tests.conftest import FAKE_ID, FAKE_MODEL, FAKE_OOD_A

NO_CUDA = not torch.cuda.is_available()


def _one_line_error(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


PRECOMPUTE = ["--model", FAKE_MODEL, "--id", FAKE_ID, "--ood", FAKE_OOD_A, "--quiet"]


@pytest.mark.parametrize("extra,fragment", [
    (["--device", "bogus"], "--device"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--batch-size", "0"], "--batch-size"),
    (["--odin-temperature", "0"], "--odin-temperature"),
    (["--odin-temperature", "nan"], "--odin-temperature"),
    (["--odin-temperature", "inf"], "--odin-temperature"),
    (["--odin-eps", "0.0014", "-0.001"], "--odin-eps"),
    (["--odin-eps", "nan"], "--odin-eps"),
    (["--limit", "-3"], "--limit"),
    pytest.param(["--device", "cuda"], "CUDA", marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
])
def test_precompute_refuses_bad_arguments_before_any_work(capsys, tmp_path: Path, fake_benchmark_names,
                                                          extra: list[str], fragment: str) -> None:
    """Found: --device bogus, --device cuda without a GPU and --num-workers -1 gave tracebacks;
    ODIN temperature 0 / NaN and ε < 0 were accepted (NaN reached a manifest)."""
    err = _one_line_error(capsys, precompute_main([*PRECOMPUTE, "--cache-dir", str(tmp_path), *extra]))
    assert fragment in err
    assert fake_benchmark_names["model"] == 0 and not any(tmp_path.iterdir())  # nothing built


@pytest.mark.parametrize("extra,fragment", [
    (["--device", "bogus"], "--device"),
    (["--limit", "0"], "--limit"),
    pytest.param(["--device", "cuda:0"], "CUDA", marks=pytest.mark.skipif(not NO_CUDA, reason="a GPU is present")),
])
def test_report_refuses_bad_arguments(capsys, tmp_path: Path, fake_benchmark_names, extra, fragment) -> None:
    code = report.main(["--model", FAKE_MODEL, "--id", FAKE_ID, "--ood", FAKE_OOD_A, "--quiet",
                        "--cache-dir", str(tmp_path), *extra])
    assert fragment in _one_line_error(capsys, code)


def test_odin_settings_are_validated_in_the_library_too(tmp_path: Path, fake_model, fake_dataset) -> None:
    for kwargs in ({"odin_temperature": math.nan}, {"odin_temperature": 0.0}, {"odin_eps": (0.001, -0.001)},
                   {"odin_eps": (math.inf,)}):
        with pytest.raises(OODLensError, match="ODIN"):
            builder.build_features(fake_model(), fake_dataset(n=6), "test", tmp_path, with_odin=True,
                                   progress=False, **kwargs)
    with pytest.raises(ValueError):
        store.atomic_write_json(tmp_path / "x.json", {"t": math.nan})  # strict JSON, never NaN
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("make,name,suggestion", [
    ("model", "resnet21-cifar10", "resnet20-cifar10"),
    ("dataset", "cifar-10", "cifar10"),
    ("method", "enrgy", "energy"),
])
def test_misspelt_names_get_a_suggestion(make: str, name: str, suggestion: str) -> None:
    from ood_core.datasets import create_dataset
    from ood_core.models import create_model
    from ood_core.scorers import create_scorer

    create = {"model": create_model, "dataset": create_dataset, "method": create_scorer}[make]
    with pytest.raises(UnknownNameError, match=f"did you mean '{suggestion}'"):
        create(name)


def test_report_suggests_method_names(capsys, tmp_path: Path, fake_benchmark_names) -> None:
    code = report.main(["--model", FAKE_MODEL, "--id", FAKE_ID, "--ood", FAKE_OOD_A, "--quiet",
                        "--cache-dir", str(tmp_path), "--methods", "enrgy"])
    assert "did you mean 'energy'" in _one_line_error(capsys, code)


def test_garbage_checkpoint_error_gives_no_unsafe_advice(tmp_path: Path) -> None:
    """Found: the error passed on torch's advice to set ``weights_only=False``."""
    import pickle
    from collections import Counter

    from ood_core.models.loading import CheckpointError, read_state_dict

    garbage, pickled = tmp_path / "garbage.pth", tmp_path / "object.pth"
    garbage.write_bytes(bytes(range(256)) * 4)
    pickled.write_bytes(pickle.dumps(Counter(a=1)))
    for path in (garbage, pickled):
        with pytest.raises(CheckpointError) as caught:
            read_state_dict(path)
        message = str(caught.value)
        assert "weights_only=False" not in message and "Re-running" not in message
        assert str(path) in message and "\n" not in message


def test_two_builds_of_one_entry_wait_for_each_other(tmp_path: Path, fake_model, fake_dataset) -> None:
    """Found: two builds of one entry raced and the loser exited with a temp-file path."""
    model, data = fake_model(), fake_dataset(n=40)
    original = model.forward_features
    started, second_waits = threading.Event(), threading.Event()

    def held_forward(x):  # the first build holds the entry until the second one says it waits
        started.set()
        second_waits.wait(30)
        return original(x)

    model.forward_features = held_forward
    results, errors, logs = [], [], []

    def log(line: str) -> None:
        logs.append(line)
        second_waits.set()

    def build() -> None:
        try:
            results.append(builder.build_features(model, data, "test", tmp_path, batch_size=4, progress=False,
                                                  log=log))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    first = threading.Thread(target=build)
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=build)
    second.start()
    first.join(60)
    second.join(60)
    assert errors == [] and len(results) == 2 and results[0] == results[1]
    assert model.forward_calls == 10  # 40 images in batches of 4, computed once
    assert any("being built by pid" in line for line in logs)
    assert not list(tmp_path.rglob("*.tmp"))


def test_builds_with_different_limits_never_mix(tmp_path: Path, fake_benchmark_names) -> None:
    """Found: a --limit 300 build and a full build of one benchmark both said "cache ready" and
    one got the other's cache. Now each build holds the benchmark while it works, so the
    cache is one build's or the other's, never a mixture."""
    errors: list[Exception] = []

    def build(limit: int | None) -> None:
        try:
            ensure.ensure_entries(FAKE_MODEL, FAKE_ID, [FAKE_OOD_A], tmp_path, limit=limit, with_odin=False,
                                   progress=False, log=lambda message: None)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=build, args=(limit,)) for limit in (12, None)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    limits = {json.loads(p.read_text())["limit"] for p in tmp_path.rglob(store.MANIFEST_FILE)}
    stats = json.loads((store.train_stats_dir(tmp_path, FAKE_MODEL, FAKE_ID) / store.TRAIN_STATS_MANIFEST).read_text())
    assert len(limits) == 1 and stats["limit"] in limits


def test_stale_temp_files_are_cleaned_at_the_next_build(tmp_path: Path, fake_model, fake_dataset) -> None:
    model, data = fake_model(), fake_dataset(n=8)
    entry = store.entry_dir(tmp_path, "tiny", "mem", "test")
    (entry / store.CHUNKS_DIR).mkdir(parents=True)
    leftovers = [entry / ".features.safetensors.abc.tmp", entry / store.CHUNKS_DIR / ".00000.safetensors.x.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    builder.build_features(model, data, "test", tmp_path, progress=False)
    assert not any(path.exists() for path in leftovers)


def test_a_killed_unpack_leaves_no_staging_folder_behind(tmp_path: Path, monkeypatch) -> None:
    """Found: a killed unpack left its staging folder forever."""
    from ood_core import paths
    from ood_core.datasets import benchmark_pack

    if not (paths.benchmark_root() / "isun.tar.gz").is_file():
        pytest.skip("the benchmark pack is not beside this checkout")
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path))
    staging = tmp_path / "datasets" / "isun" / ".isun.unpacking-killed"
    (staging / "iSUN").mkdir(parents=True)
    benchmark_pack.unpack_tarball("isun", "isun.tar.gz")
    assert not staging.exists()
    assert sorted(p.name for p in (tmp_path / "datasets" / "isun").iterdir() if not p.name.endswith(".lock")) == ["isun"]

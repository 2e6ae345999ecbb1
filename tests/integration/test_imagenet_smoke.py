"""The ImageNet recipe end to end on tiny generated folders (docs/imagenet.md).

Tiny ImageNet-style folders in ``tmp_path`` (three real wnids, four train and two validation images
per class, two images in every named OOD set) under ``$OOD_LENS_DATA``, a fresh ``$OOD_LENS_CACHE``,
random weights saved as a ``--checkpoint`` file, then:

1. ``python -m precompute --model M --checkpoint W --id imagenet --ood <the seven sets> --no-odin``
2. ``python -m ood_core.report ... --format json`` (every method, every set, finite figures)
3. the app's loader (``app/resources.py``: the cached configurations, then ``get_benchmark``).

Checked against reference computations: the cached test logits equal a direct forward pass of the
model loaded from the checkpoint (so every figure comes from exactly the weights it names), the
labels are the wnids' ImageNet-1k class indices, and the report's Energy AUROC equals scikit-learn's
on the cached logits. With K = 1,000 and three classes present, no method may fail or give NaN.

ResNet-50 and ViT-B/16 at 224×224, every method, take about 40 s each on a quiet 2-core CPU (1.5-2
minutes under load): both are in the default run. ``test_imagenet_recipe_quick`` runs the same
recipe with ``timm:resnet18`` and the methods whose fit is cheap (``-m "not slow"`` users keep a
fast check).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Callable

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from tests.unit.test_imagenet_sets import write_imagenet_tree

OODS = ("inaturalist", "sun", "places", "textures", "openimage-o", "ninco", "ssb-hard")
WNIDS = ("n01440764", "n03180011", "n15075141")  # class indices 0, 500-ish and 999
TRAIN_PER_CLASS, VAL_PER_CLASS, OOD_PER_SET = 4, 2, 2
QUICK_METHODS = ("msp", "maxlogit", "energy", "knn", "vim", "react", "dice", "ash-s", "opnp", "nap")


@pytest.fixture
def imagenet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread) -> Path:
    data = tmp_path / "data"
    write_imagenet_tree(data, wnids=WNIDS, train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS,
                        ood_per_set=OOD_PER_SET)
    monkeypatch.setenv("OOD_LENS_DATA", str(data))
    monkeypatch.setenv("OOD_LENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OOD_LENS_DOWNLOAD", raising=False)
    return tmp_path


def _random_checkpoint(path: Path, build: Callable[[], nn.Module]) -> str:
    torch.manual_seed(0)
    torch.save(build().state_dict(), path)
    return str(path)


def _report_json(model: str, checkpoint: str, methods: tuple[str, ...] | None) -> dict:
    from ood_core.report import main as report_main

    argv = ["--model", model, "--checkpoint", checkpoint, "--id", "imagenet", "--ood", *OODS, "--no-odin",
            "--no-build", "--format", "json", "--quiet"]
    if methods:
        argv += ["--methods", *methods]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert report_main(argv) == 0
    return json.loads(out.getvalue())


def _energy(logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits.double(), dim=1)


def run_recipe(model_name: str, checkpoint: str, methods: tuple[str, ...] | None = None) -> dict:
    """precompute → report → app loader; returns the report JSON after checking every step."""
    from precompute.cli import main as precompute_main

    from ood_core.datasets import create_dataset
    from ood_core.datasets.imagenet import imagenet_wnids
    from ood_core.models import create_model

    assert precompute_main(["--model", model_name, "--checkpoint", checkpoint, "--id", "imagenet", "--ood", *OODS,
                            "--no-odin", "--batch-size", "8", "--device", "cpu", "--quiet"]) == 0

    # 2. The report: every method on every set (and the average), finite, from these weights.
    report = _report_json(model_name, checkpoint, methods)
    model = create_model(model_name, checkpoint=checkpoint)
    assert report["model_fingerprint"] == model.fingerprint() and report["checkpoint"] == checkpoint
    assert report["rows"] == {"imagenet/test": len(WNIDS) * VAL_PER_CLASS, **{f"{n}/test": OOD_PER_SET for n in OODS}}
    reported = {(r["method"], r["ood"]): r for r in report["results"]}
    names = sorted({method for method, _ in reported})
    if methods:
        assert names == sorted(methods)
    assert len(reported) == len(names) * (len(OODS) + 1)
    for (method, ood), record in reported.items():
        for key in ("fpr95", "auroc", "aupr_in", "aupr_out"):
            assert math.isfinite(record[key]) and 0.0 <= record[key] <= 1.0, (method, ood, key, record[key])

    # 3. The app's loader: the cache shows up as a configuration and loads without building.
    from app import resources

    resources.cached_configs.clear()
    configs = resources.cached_configs()
    key = f"{model_name}@{model.fingerprint()}"
    assert resources.id_datasets(configs, key) == ["imagenet"]
    assert sorted(resources.ood_datasets(configs, key, "imagenet")) == sorted(OODS)
    bench = resources.get_benchmark(key, "imagenet", OODS)
    try:
        # The cached logits are the model's own on the test images (reference: a direct forward pass).
        test = create_dataset("imagenet", "test")
        transform = model.transform()
        images = torch.stack([transform(test[i][0]) for i in range(len(test))])
        with torch.inference_mode():
            direct = model(images).logits
        torch.testing.assert_close(bench.id_test.logits, direct, rtol=1e-4, atol=1e-4)
        wnids = imagenet_wnids()
        assert bench.id_test.labels.tolist() == [wnids.index(p.parent.name) for p in test.paths]
        assert bench.head_weight.shape[0] == 1000 and len(bench.id_val) == len(WNIDS) * TRAIN_PER_CLASS // 5

        # The report's Energy AUROC is scikit-learn's on the cached logits (ID positive).
        app_energy = resources.evaluate(bench, "energy")
        for ood in OODS:
            id_scores, ood_scores = _energy(bench.id_test.logits), _energy(bench.ood[ood].logits)
            truth = [1] * len(id_scores) + [0] * len(ood_scores)
            expected = roc_auc_score(truth, torch.cat([id_scores, ood_scores]).numpy())
            assert reported[("energy", ood)]["auroc"] == pytest.approx(expected, abs=1e-9)
            assert app_energy.metrics[ood].auroc == pytest.approx(expected, abs=1e-9)
    finally:
        resources.get_benchmark.clear()
        resources.method_result.clear()
    return report


def test_imagenet_recipe_quick(imagenet_env: Path) -> None:
    """The whole recipe with a small random timm network (default run)."""
    import timm

    checkpoint = _random_checkpoint(imagenet_env / "resnet18.pth",
                                    lambda: timm.create_model("resnet18", pretrained=False))
    run_recipe("timm:resnet18", checkpoint, QUICK_METHODS)


def test_imagenet_recipe_resnet50(imagenet_env: Path) -> None:
    from torchvision.models import resnet50

    checkpoint = _random_checkpoint(imagenet_env / "resnet50.pth", lambda: resnet50(weights=None))
    report = run_recipe("resnet50", checkpoint)
    assert len({r["method"] for r in report["results"]}) >= 20


def test_imagenet_recipe_vit_b16(imagenet_env: Path) -> None:
    import timm

    checkpoint = _random_checkpoint(imagenet_env / "vit_b16.pth",
                                    lambda: timm.create_model("vit_base_patch16_224", pretrained=False))
    report = run_recipe("vit-b16", checkpoint)
    assert len({r["method"] for r in report["results"]}) >= 20

"""The opt-in float16 feature store (``precompute --dtype float16``): half the bytes, read back
as float32, and every method's figures where the float32 store puts them, up to the rounding of
scores to float16 (which can only create ties, and ties never fake a better FPR95)."""
from __future__ import annotations

import json

import pytest
import torch

from ood_core.benchmark import evaluate_method, load_benchmark
from ood_core.cache import store
from ood_core.cache.builder import stored_as
from ood_core.cache.ensure import ensure_entries
from ood_core.registry import OODLensError
from ood_core.scorers import list_scorers
from ood_core.statistics import required_statistics

OODS = ["demo-letters", "demo-textures"]
LIMIT = 300


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("fp16")
    out = {}
    for dtype in ("float32", "float16"):
        ensure_entries("demo-cnn", "demo-mnist", OODS, root / dtype, limit=LIMIT, with_odin=False, progress=False,
                       statistics=required_statistics(), store_dtype=dtype, log=lambda line: None)
        out[dtype] = load_benchmark("demo-cnn", "demo-mnist", OODS, root / dtype, build_missing=False, limit=LIMIT,
                                    with_odin=False, progress=False)
    out["root"] = root
    return out


def test_float16_entries_hold_half_the_bytes_and_read_back_as_float32(caches: dict) -> None:
    root = caches["root"]
    for split in ("train", "val", "test"):
        half, full = (store.entry_dir(root / d, "demo-cnn", "demo-mnist", split) for d in ("float16", "float32"))
        manifest = json.loads((half / store.MANIFEST_FILE).read_text())
        assert manifest["store_dtype"] == "float16"
        assert manifest["dtypes"]["penultimate"] == manifest["dtypes"]["logits"] == "float16"
        assert manifest["dtypes"]["labels"] == "int64"
        ratio = (half / store.FEATURES_FILE).stat().st_size / (full / store.FEATURES_FILE).stat().st_size
        assert 0.45 < ratio < 0.7, ratio  # the int64 labels and indices keep their size
        tensors, _ = store.load_entry(half, "demo-cnn", "demo-mnist", split)
        reference, _ = store.load_entry(full, "demo-cnn", "demo-mnist", split)
        assert tensors["penultimate"].dtype == torch.float32
        torch.testing.assert_close(tensors["penultimate"], reference["penultimate"].half().float(), rtol=0, atol=0)


def _bounds(id32: torch.Tensor, ood32: torch.Tensor, error: float) -> tuple[float, float]:
    """How far FPR95 and AUROC may move when every score moves by at most ``error``.

    The 95 %-TPR threshold t (the ⌈0.95·n⌉-th largest ID score) moves by ≤ error, so only an OOD
    score within 2·error of t can change sides; only an (ID, OOD) pair closer than 2·error can
    change order. Returns (FPR95 bound, AUROC bound) as fractions.
    """
    t = id32.sort(descending=True).values[-(-95 * id32.numel() // 100) - 1]
    near = float(((ood32 - t).abs() <= 2 * error).double().mean())
    close = float(((id32[:, None] - ood32[None, :]).abs() <= 2 * error).double().mean())
    return near, close


def test_every_method_keeps_its_figures_on_the_float16_store(caches: dict) -> None:
    """FPR95 and AUROC move no more than the score rounding allows (:func:`_bounds`), and no
    setting turns degenerate or stops being so."""
    full, half = caches["float32"], caches["float16"]
    checked = 0
    for method in list_scorers():
        if method.endswith("<name>") or method == "odin":  # no ODIN pass in this cache
            continue
        a, b = evaluate_method(full, method), evaluate_method(half, method)
        assert bool(a.degenerate) == bool(b.degenerate), method
        for ood in OODS:
            error = max(float((a.id_scores - b.id_scores).abs().max()),
                        float((a.ood_scores[ood] - b.ood_scores[ood]).abs().max()))
            fpr_bound, auroc_bound = _bounds(a.id_scores.double(), a.ood_scores[ood].double(), error)
            assert abs(a.metrics[ood].fpr95 - b.metrics[ood].fpr95) <= fpr_bound + 1e-12, (method, ood)
            assert abs(a.metrics[ood].auroc - b.metrics[ood].auroc) <= auroc_bound + 1e-12, (method, ood)
            checked += 1
    assert checked >= 40


def test_a_float16_cache_is_reused_by_readers_and_rebuilt_only_on_request(caches: dict) -> None:
    root = caches["root"] / "float16"
    entry = store.entry_dir(root, "demo-cnn", "demo-mnist", "test")
    before = json.loads((entry / store.MANIFEST_FILE).read_text())["build_id"]
    kwargs = dict(limit=LIMIT, with_odin=False, progress=False, statistics=required_statistics(),
                  log=lambda line: None)
    ensure_entries("demo-cnn", "demo-mnist", OODS, root, **kwargs)  # no dtype asked: keep what is stored
    assert json.loads((entry / store.MANIFEST_FILE).read_text())["build_id"] == before
    ensure_entries("demo-cnn", "demo-mnist", ["demo-letters"], root, store_dtype="float32", **kwargs)
    rebuilt = json.loads((entry / store.MANIFEST_FILE).read_text())
    assert rebuilt["build_id"] != before and rebuilt["dtypes"]["penultimate"] == "float32"


def test_values_beyond_float16_range_are_refused() -> None:
    tensors = {"logits": torch.tensor([[1.0, 70000.0]]), "labels": torch.tensor([0])}
    with pytest.raises(OODLensError, match="beyond float16"):
        stored_as(tensors, "float16", "m / d / test")
    assert stored_as(tensors, "float32", "m / d / test") is tensors

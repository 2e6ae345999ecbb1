"""bench/bench_knn.py runs end to end on a tiny case (both backends, or torch alone without faiss)
and writes its JSON; the synthetic rows follow the imagenet preset's shape."""
from __future__ import annotations

import json

import pytest
import torch

from bench import bench_knn
from ood_core.fast import faiss_search, similarity

TINY = ["--banks", "300", "--ks", "5", "--queries", "40", "--repeats", "1"]


def test_rows_are_imagenet_shaped_and_the_bank_is_unit() -> None:
    maker = bench_knn.FeatureMaker(bench_knn.SyntheticSettings.imagenet())
    bank = maker.rows(50, normalise=True)
    queries = maker.rows(30, ood=True)
    assert bank.shape == (50, 2048) and queries.shape == (30, 2048) and bool((queries >= 0).all())
    torch.testing.assert_close(torch.linalg.vector_norm(bank, dim=1), torch.ones(50))


@pytest.mark.skipif(not faiss_search.available(), reason="faiss is not importable")
def test_the_bench_times_both_backends_and_checks_they_agree(tmp_path, capsys) -> None:
    out = tmp_path / "knn.json"
    assert bench_knn.main([*TINY, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["case"] == {"bank": 300, "k": 5, "queries": 40}
    assert result["faiss_ms"] > 0 and result["torch_ms"] > 0 and result["same_neighbours"] == 1.0
    assert result["max_abs_difference"] < 1e-5
    assert "EXTRAPOLATED (not measured)" in capsys.readouterr().out


def test_without_faiss_the_bench_times_torch_alone(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(faiss_search, "_import", lambda: (None, "ModuleNotFoundError: No module named 'faiss'"))
    similarity._note_once.cache_clear()
    out = tmp_path / "knn.json"
    assert bench_knn.main([*TINY, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["torch_ms"] > 0 and result["faiss_ms"] is None and result["auto_picks"] == "torch"
    assert "timing torch alone" in capsys.readouterr().out
    similarity._note_once.cache_clear()

"""KNN's banks: all training rows (α = 100 %) or the seeded 1 % subset (α = 1 %), chosen by the
``bank`` hyperparameter; the subset's rule, its scores against a brute force on those rows,
memoisation per bank, the backend switch, and the bank kept once per device."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from ood_core.fast import faiss_search, similarity
from ood_core.params import HyperparameterError
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import UnknownNameError
from ood_core.scorers import create_scorer
from ood_core.scorers import knn as knn_module
from ood_core.scorers.knn import BACKEND_VARIABLE, subset_rows, unit_rows


def bank_and_features(m: int = 3000, d: int = 24, n: int = 120, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    bank = F.normalize(torch.rand(m, d, generator=gen) + 0.1 * torch.randn(m, d, generator=gen), dim=1)
    h = torch.rand(n, d, generator=gen)
    feats = FeatureSet(logits=torch.zeros(n, 2), penultimate=h, labels=torch.zeros(n, dtype=torch.long))
    return bank, feats


def fitted(bank: torch.Tensor, **kwargs):
    ctx = FitContext(torch.zeros(2, bank.shape[1]), torch.zeros(2), {"knn_bank": bank})
    return create_scorer("knn", **kwargs).fit(ctx)


def brute_force(h: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """−(k-th smallest squared distance) in float64 from normalised h to ``rows``."""
    distances = torch.cdist(F.normalize(h.double(), dim=1), rows.double()).square()
    return -distances.sort(dim=1).values[:, k - 1]


@pytest.mark.parametrize("m", [1, 99, 100, 1000, 1234, 50_000, 1_281_167])
def test_the_subset_is_the_official_codes_int_m_alpha_rows_of_a_seeded_permutation(m: int) -> None:
    rows = subset_rows(m)
    assert rows.numel() == max(1, int(m * 0.01))  # run_imagenet.py: np.random.choice(M, int(M * ALPHA))
    generator = torch.Generator().manual_seed(0)
    assert set(rows.tolist()) == set(torch.randperm(m, generator=generator)[:rows.numel()].tolist())
    assert torch.equal(rows, rows.sort().values) and rows.unique().numel() == rows.numel()
    assert torch.equal(rows, subset_rows(m))  # the same rows on every call (and machine)


def test_imagenet_gives_the_papers_12811_rows() -> None:
    assert subset_rows(1_281_167).numel() == 12_811


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=pytest.mark.skipif(
    not faiss_search.available(), reason="faiss is not importable"))])
def test_each_bank_scores_by_the_distance_to_its_own_rows(backend: str) -> None:
    bank, feats = bank_and_features()
    scorer = fitted(bank, backend=backend)
    subset = bank[subset_rows(len(bank))]
    assert len(subset) == 30
    for k in (1, 10, 30):
        expected_all = brute_force(feats.penultimate, bank, k)
        expected_subset = brute_force(feats.penultimate, subset, k)
        for method in (scorer.score, scorer.reference):
            torch.testing.assert_close(method(feats, k=k).double(), expected_all, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(method(feats, k=k, bank="1%").double(), expected_subset, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(scorer.score(feats, k=10), scorer.score(feats, k=10, bank="1%"))


def test_a_k_above_the_subset_is_lowered_to_its_size_with_a_warning(caplog) -> None:
    bank, feats = bank_and_features()
    scorer = fitted(bank)
    with caplog.at_level(logging.WARNING, logger="ood_core.scorers.knn"):
        scores = scorer.score(feats, k=50, bank="1%")
    assert "k=50 exceeds the 30 rows of the '1%' bank" in caplog.text
    torch.testing.assert_close(scores, scorer.score(feats, k=30, bank="1%"))
    assert scorer.k_max("all") == 1000 and scorer.k_max("1%") == 30


def test_a_k_move_is_a_lookup_in_either_bank() -> None:
    bank, feats = bank_and_features()
    scorer = fitted(bank)
    h = feats.penultimate
    full, subset = scorer.similarities(h), scorer.similarities(h, "1%")
    assert full.shape == (len(h), 1000) and subset.shape == (len(h), 30)
    assert scorer.similarities(h) is full and scorer.similarities(h, "1%") is subset
    for k in (1, 5, 30):
        torch.testing.assert_close(scorer.score(feats, k=k, bank="1%"), -(2.0 - 2.0 * subset[:, k - 1]))


def test_the_bank_is_a_declared_choice_with_the_papers_values() -> None:
    param = create_scorer("knn").param("bank")
    assert (param.kind, param.default, param.choices, param.search) == ("choice", "all", ("all", "1%"), None)
    assert param.validate(" 1% ") == "1%"
    with pytest.raises(HyperparameterError, match="bank='10%' is not one of all, 1%"):
        create_scorer("knn").resolve({"bank": "10%"})
    assert [p.name for p in create_scorer("knn").display_params()] == ["k", "bank"]


def test_the_stored_bank_is_used_without_a_copy() -> None:
    bank, _ = bank_and_features()
    assert unit_rows(bank) is bank  # 10.5 GB at ImageNet's 1.28M rows: never copied when already unit
    with_zero = torch.cat([bank, torch.zeros(1, bank.shape[1])])
    assert unit_rows(with_zero) is with_zero  # a zero row (an all-zero feature) is not "off"
    scaled = bank * 2.0
    torch.testing.assert_close(unit_rows(scaled), bank)
    scorer = fitted(bank)
    assert scorer.bank("all") is bank


def test_features_on_another_device_get_the_bank_once() -> None:
    bank, _ = bank_and_features()
    scorer = fitted(bank)
    moved = scorer.bank("1%", "meta")
    assert moved.device.type == "meta" and moved.shape == (30, bank.shape[1])
    assert scorer.bank("1%", "meta") is moved  # kept: no transfer per search
    with pytest.raises(UnknownNameError, match="unknown KNN bank '2%'"):
        scorer.bank("2%")


def test_the_backend_comes_from_the_argument_or_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_VARIABLE, "torch")
    assert create_scorer("knn").backend == "torch"
    assert create_scorer("knn", backend="faiss").backend == "faiss"
    assert create_scorer("nap-k").partner.backend == "torch"
    monkeypatch.setenv(BACKEND_VARIABLE, "gpu")
    with pytest.raises(UnknownNameError, match="unknown KNN search backend 'gpu'; .*known KNN search backends: auto"):
        create_scorer("knn")
    monkeypatch.delenv(BACKEND_VARIABLE)
    assert create_scorer("knn").backend == "auto"


def test_without_faiss_the_scorer_searches_with_torch(monkeypatch) -> None:
    monkeypatch.setattr(faiss_search, "_import", lambda: (None, "ModuleNotFoundError: No module named 'faiss'"))
    similarity._note_once.cache_clear()
    bank, feats = bank_and_features(m=500)
    for backend in similarity.BACKENDS:
        scorer = fitted(bank, backend=backend)
        assert scorer.search_backend("cpu") == "torch"
        torch.testing.assert_close(scorer.score(feats, k=7).double(), brute_force(feats.penultimate, bank, 7),
                                   rtol=1e-5, atol=1e-5)
    similarity._note_once.cache_clear()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bank_name", knn_module.BANKS)
def test_cuda_scores_equal_cpu_scores_and_stay_on_the_gpu(bank_name: str) -> None:
    bank, feats = bank_and_features()
    cpu = fitted(bank).score(feats, k=10, bank=bank_name)
    scorer = fitted(bank.cuda())
    gpu_feats = feats.to("cuda")
    scores = scorer.score(gpu_feats, k=10, bank=bank_name)
    assert scores.device.type == "cuda" and scorer.bank(bank_name).device.type == "cuda"
    torch.testing.assert_close(scores.cpu(), cpu, rtol=1e-4, atol=1e-4)

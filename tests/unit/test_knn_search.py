"""KNN's top-k cosine search (ood_core.fast.similarity, ood_core.fast.faiss_search): torch and
faiss give the same similarities and the same neighbours (ties aside), both equal a float64
brute force, faiss's path is IndexFlatIP's search, tiles and chunks are crossed, the backend
choice falls back to torch with a note, and CUDA features stay on the GPU."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ood_core.fast import chunks, faiss_search, similarity
from ood_core.registry import UnknownNameError

needs_faiss = pytest.mark.skipif(not faiss_search.available(), reason="faiss is not importable")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def relu_data(n: int, m: int, d: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Queries (n, d) and a unit-row bank (m, d): non-negative, like pooled ReLU features."""
    gen = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.rand(8, d, generator=gen)
    bank = (means[torch.randint(0, 8, (m,), generator=gen)] + torch.randn(m, d, generator=gen)).relu()
    queries = (means[torch.randint(0, 8, (n,), generator=gen)] + torch.randn(n, d, generator=gen)).relu()
    return queries, F.normalize(bank, dim=1).contiguous()


def brute_force(queries: Tensor, bank: Tensor, k: int) -> Tensor:
    """(n, k) float64 descending cosine similarities, by a full float64 sort."""
    sims = F.normalize(queries.double(), dim=1) @ bank.double().T
    return sims.sort(dim=1, descending=True).values[:, :k]


def assert_same_neighbours(values: Tensor, indices: Tensor, other: Tensor, queries: Tensor, bank: Tensor,
                           tie: float = 1e-6) -> None:
    """``indices`` and ``other`` (n, k) name the same bank rows, except rows tied (within
    ``tie``) with the k-th similarity, which either search may keep; and every named row's
    own similarity is the value reported for it."""
    sims = F.normalize(queries.double(), dim=1) @ bank.double().T
    torch.testing.assert_close(sims.gather(1, indices).float(), values, rtol=0, atol=1e-5)
    kth = values[:, -1:].double()
    for mine, theirs, row_sims, threshold in zip(indices, other, sims, kth):
        clear = set(torch.nonzero(row_sims > threshold + tie).flatten().tolist())  # strictly above any tie
        assert clear <= set(mine.tolist()) and clear <= set(theirs.tolist())
        for extra in set(mine.tolist()) ^ set(theirs.tolist()):
            assert abs(float(row_sims[extra]) - float(threshold)) <= tie, "a non-tied neighbour differs"


@needs_faiss
@pytest.mark.parametrize(("n", "m", "d", "k"), [(300, 2000, 64, 1), (300, 2000, 64, 50), (257, 1500, 96, 1000),
                                                (40, 900, 16, 900)])
def test_faiss_and_torch_give_the_same_top_k(n: int, m: int, d: int, k: int) -> None:
    queries, bank = relu_data(n, m, d, seed=n + k)
    torch_values, torch_rows = similarity.top_cosine_neighbours(queries, bank, k, backend="torch")
    faiss_values, faiss_rows = similarity.top_cosine_neighbours(queries, bank, k, backend="faiss")
    expected = brute_force(queries, bank, k).float()
    torch.testing.assert_close(torch_values, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(faiss_values, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(faiss_values, torch_values, rtol=0, atol=1e-5)
    assert torch_rows.dtype == faiss_rows.dtype == torch.int64
    assert_same_neighbours(torch_values, torch_rows, faiss_rows, queries, bank)
    assert_same_neighbours(faiss_values, faiss_rows, torch_rows, queries, bank)


@needs_faiss
def test_exact_ties_may_swap_neighbours_but_not_values() -> None:
    """A bank with duplicated rows: tied similarities, the same values from both backends."""
    queries, bank = relu_data(64, 300, 32, seed=3)
    bank = torch.cat([bank, bank[:150]]).contiguous()  # rows 300.. duplicate rows 0..149 exactly
    for k in (1, 7, 200):
        torch_values, torch_rows = similarity.top_cosine_neighbours(queries, bank, k, backend="torch")
        faiss_values, faiss_rows = similarity.top_cosine_neighbours(queries, bank, k, backend="faiss")
        torch.testing.assert_close(faiss_values, torch_values, rtol=0, atol=1e-5)
        assert_same_neighbours(torch_values, torch_rows, faiss_rows, queries, bank)


@needs_faiss
def test_the_faiss_path_is_index_flat_ip_search() -> None:
    """The search IndexFlatIP runs (knn_inner_product), on the bank's memory instead of a copy."""
    import faiss

    queries, bank = relu_data(200, 1200, 48, seed=5)
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.numpy())
    expected_values, expected_rows = index.search(F.normalize(queries, dim=1).numpy(), 100)
    values, rows = faiss_search.top_inner_products(queries, bank, 100, with_indices=True)
    torch.testing.assert_close(values, torch.from_numpy(expected_values), rtol=0, atol=1e-6)
    assert_same_neighbours(values, rows, torch.from_numpy(expected_rows), queries, bank)


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_every_chunk_and_bank_tile_boundary_is_crossed(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 5 query rows and bank tiles of 12 rows (the torch backend merges per-tile top-k)."""
    queries, bank = relu_data(23, 131, 24, seed=7)
    monkeypatch.setattr(chunks, "ROW_CHUNK", 5)
    monkeypatch.setattr(chunks, "ELEMENT_BUDGET", 64)
    assert similarity.tiles(23, 131) == (5, 12)  # 5 query chunks (the last short) × 11 bank tiles (the last short)
    for k in (1, 13, 131):
        values, rows = similarity.top_cosine_neighbours(queries, bank, k, backend=backend)
        torch.testing.assert_close(values, brute_force(queries, bank, k).float(), rtol=0, atol=1e-5)
        sims = F.normalize(queries.double(), dim=1) @ bank.double().T
        torch.testing.assert_close(sims.gather(1, rows).float(), values, rtol=0, atol=1e-5)


def test_tiles_keep_the_whole_bank_while_enough_query_rows_fit() -> None:
    # ImageNet sizes: the 1 % bank is one GEMM per chunk; all 1.28M rows are tiled.
    rows, bank_rows = similarity.tiles(90_000, 12_811)
    assert bank_rows == 12_811 and rows * bank_rows <= chunks.ELEMENT_BUDGET and rows >= similarity.MIN_QUERY_ROWS
    rows, bank_rows = similarity.tiles(90_000, 1_281_167)
    assert rows == similarity.MIN_QUERY_ROWS and rows * bank_rows <= chunks.ELEMENT_BUDGET < rows * 1_281_167
    assert similarity.tiles(1, 1_281_167) == (chunks.rows_within_budget(1_281_167), 1_281_167)  # one query


def test_the_same_search_twice_is_bit_identical() -> None:
    queries, bank = relu_data(100, 700, 32, seed=9)
    for backend in similarity.BACKENDS:
        first = similarity.top_cosine_similarities(queries, bank, 30, backend)
        assert torch.equal(first, similarity.top_cosine_similarities(queries, bank, 30, backend)), backend


def test_bad_requests_are_one_line_errors() -> None:
    queries, bank = relu_data(4, 20, 8)
    with pytest.raises(UnknownNameError, match="unknown KNN search backend 'fais'; did you mean 'faiss'"):
        similarity.top_cosine_similarities(queries, bank, 3, backend="fais")
    with pytest.raises(ValueError, match=r"k=21 must be in 1\.\.20"):
        similarity.top_cosine_similarities(queries, bank, 21)
    with pytest.raises(ValueError, match="move the bank once"):
        similarity.top_cosine_similarities(queries, bank.to("meta"), 3)


def test_without_faiss_every_request_searches_with_torch_and_says_why(monkeypatch, caplog) -> None:
    monkeypatch.setattr(faiss_search, "_import", lambda: (None, "ModuleNotFoundError: No module named 'faiss'"))
    similarity._note_once.cache_clear()
    queries, bank = relu_data(30, 200, 16)
    expected = brute_force(queries, bank, 10).float()
    assert similarity.choose_backend("auto", "cpu", 200, 10) == "torch"
    assert not caplog.records  # auto falls back quietly: torch is the plan, not a failure
    with caplog.at_level(logging.WARNING, logger="ood_core.fast.similarity"):
        values = similarity.top_cosine_similarities(queries, bank, 10, backend="faiss")
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-5)
    assert "faiss is not importable (ModuleNotFoundError" in caplog.text and "searching with torch" in caplog.text
    with pytest.raises(RuntimeError, match="faiss is not importable"):
        faiss_search.top_inner_products(queries, bank, 10)
    similarity._note_once.cache_clear()


def test_the_backend_rule(monkeypatch, caplog) -> None:
    """auto: faiss on the CPU when importable; torch on CUDA unless faiss is asked for and can run there."""
    monkeypatch.setattr(faiss_search, "available", lambda: True)
    monkeypatch.setattr(faiss_search, "gpu_available", lambda: False)
    similarity._note_once.cache_clear()
    assert similarity.choose_backend("auto", "cpu", 12_811, 1000) == "faiss"
    assert similarity.choose_backend("torch", "cpu", 12_811, 1000) == "torch"
    assert similarity.choose_backend("auto", "cuda", 12_811, 1000) == "torch"
    with caplog.at_level(logging.WARNING, logger="ood_core.fast.similarity"):
        assert similarity.choose_backend("faiss", "cuda", 12_811, 1000) == "torch"
    assert "no faiss GPU build" in caplog.text
    monkeypatch.setattr(faiss_search, "gpu_available", lambda: True)
    assert similarity.choose_backend("faiss", "cuda", 12_811, 1000) == "faiss"
    assert similarity.choose_backend("faiss", "cuda", 12_811, faiss_search.GPU_MAX_K + 1) == "torch"
    similarity._note_once.cache_clear()


@needs_cuda
@pytest.mark.parametrize("backend", ["torch", "faiss", "auto"])
def test_cuda_features_are_searched_on_the_gpu(backend: str) -> None:
    queries, bank = relu_data(300, 3000, 64, seed=11)
    expected = brute_force(queries, bank, 100).float()
    values, rows = similarity.top_cosine_neighbours(queries.cuda(), bank.cuda(), 100, backend=backend)
    assert values.device.type == rows.device.type == "cuda"
    torch.testing.assert_close(values.cpu(), expected, rtol=0, atol=1e-4)

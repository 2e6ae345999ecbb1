"""Training statistics reduced across 2 gloo ranks equal one process's (float64 sums of each
rank's rows, gathered rows and activation samples; nothing averaged per rank)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from ood_core import distributed, statistics
from ood_core.statistics import compute_all_statistics

M, D, K, V = 301, 24, 5, 50  # odd M: the ranks hold 150 and 151 rows
SAMPLE = 1000  # fewer than M·D: the activation samples take the sampled path


def _data() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    h = torch.relu(torch.randn(M, D, generator=gen) + 0.3)
    weight, bias = torch.randn(K, D, generator=gen), torch.randn(K, generator=gen)
    labels = torch.randint(0, K, (M,), generator=gen)
    val = torch.relu(torch.randn(V, D, generator=gen))
    return h, h @ weight.T + bias, labels, weight, bias, val


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    statistics.MAX_SORTED_ACTIVATIONS = SAMPLE
    ranks = distributed.setup(torch.device("cpu"))
    assert ranks.distributed
    stats = compute_all_statistics(*_data())
    if ranks.is_main:
        save_file(stats, out)
    distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_give_the_single_process_statistics(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(statistics, "MAX_SORTED_ACTIVATIONS", SAMPLE)
    out = tmp_path / "stats.safetensors"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    reduced, single = load_file(str(out)), compute_all_statistics(*_data())
    assert sorted(reduced) == sorted(single)
    for name, value in single.items():
        a, b = value.double(), reduced[name].double()
        if name == "vim_eigenvectors":  # each axis up to its sign (M > D: distinct eigenvalues)
            a, b = a.abs(), b.abs()
        scale = float(a.abs().max()) if a.numel() else 0.0
        assert a.shape == b.shape, name
        assert float((a - b).abs().max()) <= 1e-6 * scale + 1e-9, name
    assert torch.equal(reduced["knn_bank"], single["knn_bank"])  # gathered in row order
    assert torch.equal(reduced["train_activations_sorted"], single["train_activations_sorted"])
    assert reduced["train_activations_sorted"].numel() == SAMPLE

"""The one cache policy (:class:`ood_core.memo.Memo`): identity, bounds, threads."""
from __future__ import annotations

import gc
import threading

import pytest
import torch

from ood_core.memo import Memo, tensor_bytes
from ood_core.scorers import create_scorer


def counting(value_of):
    calls: list[int] = []

    def compute():
        calls.append(1)
        return value_of()

    return compute, calls


def test_tensor_entries_hit_only_the_same_unmodified_tensor() -> None:
    memo = Memo(max_entries=2)
    a = torch.ones(3)
    compute, calls = counting(lambda: a.sum())
    assert memo.get("sum", compute, tensor=a) == 3 and memo.get("sum", compute, tensor=a) == 3
    assert len(calls) == 1
    a.add_(1)  # in place: the version counter moves, the entry is stale
    assert memo.get("sum", lambda: a.sum(), tensor=a) == 6
    b, c = torch.zeros(2), torch.zeros(4)
    memo.get("sum", lambda: b.sum(), tensor=b)
    memo.get("sum", lambda: c.sum(), tensor=c)  # evicts a's entry (max_entries=2)
    compute, calls = counting(lambda: a.sum())
    memo.get("sum", compute, tensor=a)
    assert len(calls) == 1


def test_freed_tensors_leave_the_memo() -> None:
    memo = Memo()
    x = torch.ones(1000)
    memo.get("double", lambda: x * 2, tensor=x)
    assert memo.nbytes == 4000
    del x
    gc.collect()
    assert memo.nbytes == 0 and len(memo) == 0


def test_byte_bound_counts_replacements_and_refuses_oversized_results() -> None:
    memo = Memo(max_bytes=100)  # room for two 40-byte results
    for key in range(3):
        memo.get(key, lambda: torch.ones(10))
    assert memo.nbytes == 80 and len(memo) == 2  # key 0 evicted, least recently used
    memo.put(2, torch.ones(20))  # the entry grew: counted again, the other one evicted
    assert memo.nbytes == 80 and len(memo) == 1
    compute, calls = counting(lambda: torch.ones(30))  # 120 bytes: above the whole bound
    assert memo.get("big", compute).numel() == 30 and memo.get("big", compute).numel() == 30
    assert len(calls) == 2 and memo.nbytes <= memo.max_bytes


def test_reused_only_builds_on_the_second_sight() -> None:
    memo = Memo()
    x = torch.arange(3.0)
    compute, calls = counting(lambda: x * 2)
    assert memo.get("k", compute, tensor=x, reused_only=True) is None and not calls
    assert torch.equal(memo.get("k", compute, tensor=x, reused_only=True), x * 2) and len(calls) == 1
    assert torch.equal(memo.get("k", compute, tensor=x, reused_only=True), x * 2) and len(calls) == 1
    small = Memo(max_bytes=100)  # a result above half the bound is never built: the caller goes direct
    assert all(small.get("k", compute, tensor=x, reused_only=True, expected_bytes=51) is None for _ in range(3))
    assert len(calls) == 1


def test_clearing_tensor_entries_keeps_value_entries() -> None:
    memo = Memo()
    x = torch.ones(4)
    memo.get("mask", lambda: torch.ones(2))
    memo.get("rows", lambda: x * 2, tensor=x)
    memo.clear(tensors_only=True)
    assert len(memo) == 1 and memo.nbytes == 8
    memo.clear()
    assert len(memo) == 0 and memo.nbytes == 0


def test_tensor_bytes_walks_containers() -> None:
    assert tensor_bytes((torch.ones(2), {"a": torch.ones(3, dtype=torch.float64)}, [1, "x"])) == 8 + 24


# Methods with memos, each moved along a different slider by its own "session".
SESSIONS = {
    "ash-s": [{"percentile": p} for p in (50.0, 70.0, 90.0, 95.0, 99.0)],
    "vim": [{"dim": d} for d in (2, 4, 8, 16, 24)],
    "knn": [{"k": k} for k in (1, 5, 10, 50, 100)],
    "opnp+react": [{"clip_by": "value", "clip_value": c} for c in (0.5, 1.0, 2.0)] + [{"q_w_low": 0.0}, {"q_n_high": 5.0}],
    "nap-r": [{"epsilon": e} for e in (0.1, 0.5, 1.0, 2.0, 5.0)],
    "line": [{"delta": d} for d in (0.5, 1.0, 2.0)] + [{"p_a": 50.0}, {"p_w": 50.0}],
}


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_concurrent_sessions_match_a_serial_run_within_the_bound(name: str, toy) -> None:
    """Eight sessions move sliders on ONE fitted scorer (Streamlit serves every session from
    one process): every result equals the serial run's, and no memo ever holds more than its
    bound (set small here, so entries are evicted while other threads read)."""
    moves = [(feats, hparams) for hparams in SESSIONS[name] for feats in (toy.id_feats, toy.ood_feats)]
    serial = create_scorer(name).fit(toy.ctx)
    expected = [serial.reference(feats, **hparams) for feats, hparams in moves]

    shared = create_scorer(name).fit(toy.ctx)
    memos = shared.memos()
    assert memos, f"{name} has no memo to test"
    for memo in memos:
        memo.max_bytes = 24 * 1024
    errors: list[str] = []
    over_bound: list[int] = []
    start = threading.Barrier(8)

    def session(offset: int) -> None:
        start.wait()
        for round_ in range(3):
            for i in range(len(moves)):
                j = (i + offset * 3 + round_) % len(moves)
                feats, hparams = moves[j]
                got = shared.score(feats, **hparams)
                if not torch.allclose(got, expected[j], rtol=1e-5, atol=1e-5):
                    errors.append(f"move {j} {hparams}: max |Δ| {float((got - expected[j]).abs().max()):.3g}")
                over_bound.extend(m.nbytes for m in memos if m.nbytes > m.max_bytes)

    threads = [threading.Thread(target=session, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:5]
    assert not over_bound

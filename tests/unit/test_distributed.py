"""ood_core.distributed: how ranks share chunks, and what torchrun's environment means."""
from __future__ import annotations

import pytest
import torch

from ood_core import distributed
from ood_core.distributed import Ranks
from ood_core.registry import OODLensError


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 100])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shares_are_contiguous_and_cover_every_item_once(n: int, world: int) -> None:
    items = list(range(n))
    shares = [distributed.split_evenly(items, Ranks(r, world)) for r in range(world)]
    assert [i for share in shares for i in share] == items  # in order, none dropped, none twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    for share in shares:
        assert share == list(range(share[0], share[0] + len(share))) if share else True


def test_environment_without_torchrun_is_one_process() -> None:
    assert distributed.from_environment({}) == distributed.SINGLE
    ranks = distributed.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert ranks == Ranks(3, 4, 1) and ranks.distributed and not ranks.is_main


@pytest.mark.parametrize("env", [{"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"},
                                 {"RANK": "0", "WORLD_SIZE": "0"}])
def test_malformed_environment_is_a_one_line_error(env: dict) -> None:
    with pytest.raises(OODLensError):
        distributed.from_environment(env)


def test_one_process_helpers_are_identities() -> None:
    assert distributed.current() == distributed.SINGLE
    assert distributed.from_main({"a": 1}) == {"a": 1}
    distributed.barrier()  # no group: returns at once
    assert distributed.rank_device(torch.device("cuda"), Ranks(1, 2, 1)) == torch.device("cuda", 1)
    assert distributed.rank_device(torch.device("cpu"), Ranks(1, 2, 1)) == torch.device("cpu")

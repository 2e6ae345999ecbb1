"""KNN against the official code's recipe (deeplearning-wisc/knn-ood, ``run_imagenet.py``):
normalise with ``x / ‖x‖ + 1e-10``, ``faiss.IndexFlatL2`` over the (sub-sampled) training
features, score ``−D[:, k−1]``; α = 1 % keeps ``int(M · 0.01)`` random training rows.

Ours must give the same scores (float tolerance) with either search backend and either bank.
The official subset comes from ``np.random.choice`` with its own seed; here the recipe is fed our
seeded rows, so the comparison is of the method, not of one random draw.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from ood_core.scorers import create_scorer
from ood_core.scorers.knn import subset_rows

faiss = pytest.importorskip("faiss")


def official_scores(train: np.ndarray, queries: np.ndarray, k: int) -> Tensor:
    """run_imagenet.py's KNN block on float32 features."""
    normalizer = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True) + 1e-10  # noqa: E731 (as in the code)
    index = faiss.IndexFlatL2(train.shape[1])
    index.add(np.ascontiguousarray(normalizer(train)).astype(np.float32))
    distances, _ = index.search(np.ascontiguousarray(normalizer(queries)).astype(np.float32), k)
    return torch.from_numpy(-distances[:, -1])


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize(("bank", "k"), [("all", 1), ("all", 50), ("all", 1000), ("1%", 1), ("1%", 10)])
def test_knn_equals_the_official_faiss_recipe(parity_data, backend: str, bank: str, k: int) -> None:
    train = parity_data.train_features.double().numpy()
    if bank == "1%":
        rows = subset_rows(len(train))
        assert len(rows) == int(len(train) * 0.01)  # the official int(M * ALPHA)
        train = train[rows.numpy()]
    scorer = create_scorer("knn", backend=backend).fit(parity_data.ctx)
    for feats in (parity_data.id_feats, parity_data.ood_feats):
        expected = official_scores(train, feats.penultimate.double().numpy(), k)
        torch.testing.assert_close(scorer.score(feats, k=k, bank=bank), expected, rtol=1e-4, atol=1e-4)

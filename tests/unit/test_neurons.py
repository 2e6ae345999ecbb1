"""LINe neuron-overlap statistics (docs/methods.md §3.10(f)) on hand-made contribution matrices."""
from __future__ import annotations

import math

import pytest
import torch

from ood_core.neurons import (class_overlap_matrix, important_neurons, importance_counts, neuron_overlap,
                              overlap_histogram)
from ood_core.registry import OODLensError

# K = 3 classes, D = 4 neurons. Top 25 % (one neuron per class: C > percentile(C[c], 75)):
# class 0 → neuron 0, class 1 → neuron 0, class 2 → neuron 3.
CONTRIBUTION = torch.tensor([
    [9.0, 1.0, 2.0, 3.0],
    [8.0, -1.0, 0.5, 0.0],
    [0.0, 1.0, 2.0, 7.0],
])


def test_important_neurons_by_hand() -> None:
    expected = torch.tensor([[True, False, False, False], [True, False, False, False], [False, False, False, True]])
    assert torch.equal(important_neurons(CONTRIBUTION, 25.0), expected)
    # top 50 %: class 0 keeps {0, 3}, class 1 {0, 2}, class 2 {2, 3}
    expected_50 = torch.tensor([[True, False, False, True], [True, False, True, False], [False, False, True, True]])
    assert torch.equal(important_neurons(CONTRIBUTION, 50.0), expected_50)
    assert not bool(important_neurons(CONTRIBUTION, 0.0).any())


def test_counts_and_histogram() -> None:
    assert torch.equal(importance_counts(CONTRIBUTION, 50.0), torch.tensor([2, 0, 2, 2]))
    torch.testing.assert_close(overlap_histogram(CONTRIBUTION, 25.0), torch.tensor([2 / 3, 0.0, 0.0, 1 / 3]))


def test_neuron_overlap_both_denominators() -> None:
    # top 25 %: n = (2, 0, 0, 1). Over 50 % of K = 1.5 classes: only neuron 0.
    assert neuron_overlap(CONTRIBUTION, 25.0, 50.0, denominator="D") == pytest.approx(1 / 4)
    assert neuron_overlap(CONTRIBUTION, 25.0, 50.0, denominator="important") == pytest.approx(1 / 2)
    # over 20 % (0.6 classes): neurons 0 and 3
    assert neuron_overlap(CONTRIBUTION, 25.0, 20.0, denominator="important") == pytest.approx(1.0)
    # over 70 % (2.1 classes): none
    assert neuron_overlap(CONTRIBUTION, 25.0, 70.0) == 0.0
    assert math.isnan(neuron_overlap(CONTRIBUTION, 0.0, 20.0, denominator="important"))


def test_class_overlap_matrix_is_jaccard() -> None:
    jaccard = class_overlap_matrix(CONTRIBUTION, 50.0)
    # sets {0,3}, {0,2}, {2,3}: every pair shares one of three neurons
    expected = torch.full((3, 3), 1 / 3)
    expected.fill_diagonal_(1.0)
    torch.testing.assert_close(jaccard, expected)
    assert torch.equal(class_overlap_matrix(CONTRIBUTION, 0.0), torch.zeros(3, 3))


def test_invalid_arguments_raise() -> None:
    with pytest.raises(OODLensError, match="denominator"):
        neuron_overlap(CONTRIBUTION, denominator="classes")  # type: ignore[arg-type]
    with pytest.raises(OODLensError, match="top_percent"):
        important_neurons(CONTRIBUTION, 150.0)

"""app.fmt: one number format for rates, correct plurals and ordinals."""
from __future__ import annotations

import math

import pytest

from app import fmt


@pytest.mark.parametrize("value, text", [(0.7368, "73.7 %"), (0.0, "0.0 %"), (1.0, "100.0 %"), (0.92044, "92.0 %"),
                                         (math.nan, "n/a"), (None, "n/a"), (math.inf, "n/a")])
def test_rate_one_decimal(value, text):
    assert fmt.rate(value) == text


@pytest.mark.parametrize("value, text", [(0.012, "+1.2 pt"), (-0.0004, "+0.0 pt"), (-0.2, "-20.0 pt"),
                                         (math.nan, "n/a")])
def test_points_signed(value, text):
    assert fmt.points(value) == text


@pytest.mark.parametrize("n, text", [(0, "0 neurons"), (1, "1 neuron"), (2, "2 neurons"), (1200, "1,200 neurons")])
def test_count_plural(n, text):
    assert fmt.count(n, "neuron") == text


def test_count_irregular_plural():
    assert fmt.count(3, "class", "classes") == "3 classes"


@pytest.mark.parametrize("n, text", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"),
                                     (13, "13th"), (21, "21st"), (62, "62nd"), (101, "101st"), (111, "111th")])
def test_ordinal(n, text):
    assert fmt.ordinal(n) == text


@pytest.mark.parametrize("p, text", [(62.0, "the 62nd percentile"), (62.3, "percentile 62.3"),
                                     (99.96, "the 100th percentile"), (1.0, "the 1st percentile")])
def test_percentile_words(p, text):
    assert fmt.percentile(p) == text


def test_number_significant():
    assert fmt.number(1.23456) == "1.23" and fmt.number(math.nan) == "n/a"

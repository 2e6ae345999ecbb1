"""The dashboard's one way to write numbers in text: rates, deltas, counts, ordinals.

Rates are fractions in [0, 1] shown in % with one decimal everywhere ("73.7 %"); differences
of rates are percentage points with a sign ("+1.2 pt"); counts get a thousands separator and
the right plural; percentiles get the right ordinal suffix. Non-finite values read "n/a".
Pure functions (no Streamlit): tables use :data:`RATE_FORMAT` for their rate columns.
"""
from __future__ import annotations

import math

RATE_DIGITS = 1
RATE_FORMAT = "{:.1f}"   # a rate column already in % (pandas Styler / column_config format)
NA = "n/a"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(float(value))


def rate(fraction: float | None, digits: int = RATE_DIGITS) -> str:
    """A fraction in [0, 1] as a percentage: ``0.7368`` → ``"73.7 %"``."""
    return f"{100 * float(fraction):.{digits}f} %" if _finite(fraction) else NA


def percent(value: float | None, digits: int = RATE_DIGITS) -> str:
    """A value already in percent: ``73.68`` → ``"73.7 %"``."""
    return f"{float(value):.{digits}f} %" if _finite(value) else NA


def points(delta_fraction: float | None, digits: int = RATE_DIGITS) -> str:
    """A difference of two rates (fractions) in percentage points: ``0.012`` → ``"+1.2 pt"``."""
    if not _finite(delta_fraction):
        return NA
    value = round(100 * float(delta_fraction), digits)
    return f"{value + 0.0:+.{digits}f} pt"  # + 0.0 turns -0.0 into 0.0


def number(value: float | None, significant: int = 3) -> str:
    """A score, threshold or activation with ``significant`` digits: ``1.2345`` → ``"1.23"``."""
    return f"{float(value):.{significant}g}" if _finite(value) else NA


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``count(1, "neuron")`` → ``"1 neuron"``; ``count(1200, "image")`` → ``"1,200 images"``."""
    word = singular if int(n) == 1 else (plural or f"{singular}s")
    return f"{int(n):,} {word}"


def ordinal(n: int) -> str:
    """``1`` → ``"1st"``, ``2`` → ``"2nd"``, ``11`` → ``"11th"``, ``62`` → ``"62nd"``."""
    n = int(n)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def percentile(p: float | None, digits: int = RATE_DIGITS) -> str:
    """A percentile position in words: ``62`` → ``"the 62nd percentile"``; a fractional one has no
    ordinal in English, so ``62.3`` → ``"percentile 62.3"``."""
    if not _finite(p):
        return NA
    rounded = round(float(p), digits)
    if rounded == int(rounded):
        return f"the {ordinal(int(rounded))} percentile"
    return f"percentile {rounded:.{digits}f}"

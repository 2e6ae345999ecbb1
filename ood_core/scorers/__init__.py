"""Scorer registry: ``create_scorer(name)`` returns an unfitted :class:`Scorer`.

Each method lives in its own module and registers itself with ``@register_scorer(name)``
(``ood_core.registry.SCORERS``) on a builder: the class itself, or a ``functools.partial`` of
it for a variant with other defaults or other declared stages (``ash-s``, ``opnp+react``).
"""
from __future__ import annotations

from ood_core.params import Param
from ood_core.records import FeatureSet, FitContext
from ood_core.registry import SCORERS
from ood_core.scorers.base import Scorer

register_scorer = SCORERS.register


def create_scorer(name: str, **default_overrides) -> Scorer:
    return SCORERS.create(name, **default_overrides)


def list_scorers() -> list[str]:
    return SCORERS.names()


# Importing a module registers its scorers. Order = display order in reports.
from ood_core.scorers import (  # noqa: E402,F401
    msp, maxlogit, energy, odin, mahalanobis, knn, vim, gradnorm, ash,
    react, dice, dice_react, line, opnp, nap,
)

__all__ = ["FeatureSet", "FitContext", "Param", "Scorer", "SCORERS", "create_scorer", "list_scorers",
           "register_scorer"]

"""DICE + ReAct, docs/methods.md §2.7: S = LSE((W ⊙ M_DICE)·min(h, c) + b).

A composition of two declared stages: ReAct's clip, then DICE's masked head (the official
ResNet path clips before the masked head). The CIFAR DenseNet has no such path; the
defaults (p = 90, c = 1.0 absolute) follow LINe's δ by analogy. ImageNet's commented demo
line uses p = 10 with c = 1.0.
"""
from __future__ import annotations

import functools

from ood_core.registry import SCORERS
from ood_core.scorers.composed import ClipStage, ComposedHeadScorer
from ood_core.scorers.dice import DiceMask

PAPER = "Sun & Li. DICE, ECCV 2022 (with ReAct's clipping, Sun, Guo, Li, NeurIPS 2021)."

SCORERS.register("dice+react")(functools.partial(
    ComposedHeadScorer, name="dice+react", title="DICE + ReAct", paper=PAPER,
    head_stages=(ClipStage("value", 90.0, 1.0), DiceMask(90.0)),
    # DICE's demo pairs its sparsity with the clip (p = 10 with c = 1.0, p = 15 with c = 1.5): tune them together.
    joint=(("clip_percentile", "clip_value", "sparsity"),),
    summary="DICE's sparse head on ReAct-clipped activations."))

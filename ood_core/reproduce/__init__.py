"""Reproduce the seed papers' CIFAR-10 comparisons on the benchmark pack: ``python -m ood_core.reproduce``.

One command builds what it needs (DenseNet-BC-100 and ResNet-20 on the pack's CIFAR-10 against
iSUN, DTD, MNIST and two noise sets, plus validation outliers), computes every figure and writes
``docs/results.md``:

* every method at its published defaults, tuned on validation data and tuned on the test sets
  (the oracle, labelled), averages and per OOD set;
* the seed papers' published CIFAR-10 figures beside ours, source named per row
  (:mod:`~ood_core.reproduce.published`, copied from docs/methods.md §7);
* LINe's ablation and δ sweep, OPNP's variants and percentile grid, DICE's sparsity sweep,
  NAP alone and combined, LINe's Table 8 neuron overlap;
* the papers' orderings judged on our figures with a paired bootstrap, and for each one that
  does not hold the explanation that the measurements support
  (:mod:`~ood_core.reproduce.orderings`).

Layers: :mod:`~ood_core.reproduce.compute` (pure functions, Benchmark → dataclasses),
:mod:`~ood_core.reproduce.render` (dataclasses → Markdown), :mod:`~ood_core.reproduce.cli`.
Everything but the CLI runs on a synthetic benchmark (``ood_core.synthetic``) without the pack.
"""
from ood_core.reproduce.cli import build_parser, main, run
from ood_core.reproduce.compute import ModelReport, model_report
from ood_core.reproduce.orderings import CLAIMS, Verdict, judge
from ood_core.reproduce.render import RunInfo, render

__all__ = ["CLAIMS", "ModelReport", "RunInfo", "Verdict", "build_parser", "judge", "main", "model_report", "render",
           "run"]

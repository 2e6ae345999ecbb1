"""Helpers for tests and speed benchmarks, not used by the app or the CLIs.

* :mod:`ood_core.testing.pytorch_ood`: pytorch-ood's detectors run on our cached features
  (the parity tests' and ``bench/bench_scoring.py``'s reference); pytorch-ood is a dev
  dependency, imported only when a detector is built.

The synthetic benchmarks they run on come from :mod:`ood_core.synthetic`.
"""

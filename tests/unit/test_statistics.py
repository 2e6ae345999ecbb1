"""Training statistics owned by methods (ood_core.statistics): the registry, the same numbers as
the single function that computed them all before, shared work done once, and — on the fake
benchmark of tests/conftest.py — a new method with a new statistic needing only its own code:
only the new statistic is computed, and a version bump is named with the command that repairs it."""
from __future__ import annotations

import dataclasses
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

import ood_core.statistics as statistics_module
from ood_core.benchmark import available_methods, evaluate_method, load_benchmark
from ood_core.cache import stats_store, store
from ood_core.records import FeatureSet
from ood_core.registry import SCORERS, UnknownNameError
from ood_core.scorers.base import Scorer
from ood_core.statistics import (
    TrainingData,
    compute_statistics,
    get_statistic,
    list_statistics,
    register_statistic,
    required_statistics,
)
from precompute.cli import main as precompute_main
from tests.conftest import FAKE_ID as ID, FAKE_MODEL as MODEL, FAKE_OOD_A as OOD_A, FAKE_OOD_B as OOD_B
from tests.conftest import TinyModel

NEW_STAT, NEW_METHOD = "test_only_feature_peak", "test-only-peak"


def _legacy_compute_train_stats(train_features, train_logits, train_labels, head_weight, head_bias,
                                val_features=None) -> dict[str, Tensor]:
    """``ood_core.train_stats.compute_train_stats`` as it was before the statistics were split up."""
    h, z, y, W, b = (train_features.double(), train_logits.double(), train_labels.long(), head_weight.double(),
                     head_bias.double())
    m, d = h.shape
    k = W.shape[0]
    counts = torch.bincount(y, minlength=k).double()
    sums = torch.zeros(k, d, dtype=torch.float64, device=h.device).index_add_(0, y, h)
    class_means = sums / counts.clamp(min=1).unsqueeze(1)
    centred = h - class_means[y]
    precision = torch.linalg.pinv(centred.T @ centred / m, hermitian=True)
    origin = -(torch.linalg.pinv(W) @ b)
    shifted = h - origin
    eigenvalues, eigenvectors = torch.linalg.eigh(shifted.T @ shifted / m)
    order = eigenvalues.argsort(descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    projections = (shifted @ eigenvectors) ** 2
    tail = torch.cat([projections.flip(1).cumsum(1).flip(1), torch.zeros(m, 1, dtype=h.dtype, device=h.device)], 1)
    opnp_weight = torch.softmax(z, dim=1).T @ h.abs() / m

    def sorted_sample(features: Tensor) -> Tensor:
        return features.reshape(-1).float().sort().values  # (fewer than 2M values: no subsampling)

    stats = {
        "feature_mean": h.mean(0), "class_means": class_means, "class_counts": counts,
        "class_contribution": W * class_means, "precision": precision, "vim_origin": origin,
        "vim_eigenvectors": eigenvectors, "vim_eigenvalues": eigenvalues,
        "vim_residual_norm_mean": tail.clamp(min=0).sqrt().mean(0), "train_max_logit_mean": z.max(1).values.mean(),
        "knn_bank": torch.nn.functional.normalize(h, dim=1), "opnp_weight_sensitivity": opnp_weight,
        "opnp_neuron_sensitivity": opnp_weight.mean(0), "train_activations_sorted": sorted_sample(h),
        "val_activations_sorted": sorted_sample(val_features if val_features is not None else h),
    }
    return {name: value.float().contiguous() for name, value in stats.items()}


def _training_data(seed: int = 0, k: int = 4, d: int = 12, m: int = 200, with_val: bool = True) -> TrainingData:
    gen = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(k, d, generator=gen), torch.randn(k, generator=gen)
    labels = torch.arange(k).repeat_interleave(m // k)
    h = (2.0 * torch.rand(k, d, generator=gen)[labels] + torch.randn(m, d, generator=gen)).relu()
    val = torch.randn(50, d, generator=gen).relu() if with_val else None
    return TrainingData(h, h @ weight.T + bias, labels, weight, bias, val)


# -- the registry and the numbers ---------------------------------------------------------------------
@pytest.mark.parametrize("with_val", [True, False])
def test_every_statistic_gives_exactly_the_numbers_of_the_single_function_it_replaces(with_val: bool) -> None:
    data = _training_data(with_val=with_val)
    ours = compute_statistics(list_statistics(), data)
    legacy = _legacy_compute_train_stats(data.features, data.logits, data.labels, data.head_weight, data.head_bias,
                                         data.val_features)
    assert set(ours) == set(legacy)  # every statistic registered, the methods' own included
    for name, value in legacy.items():
        assert ours[name].dtype == torch.float32 and ours[name].is_contiguous(), name
        assert torch.equal(ours[name], value), name


def test_statistics_are_registered_by_the_methods_that_own_them() -> None:
    owners = {"precision": "mahalanobis", "vim_eigenvectors": "vim", "train_max_logit_mean": "vim",
              "knn_bank": "knn", "opnp_weight_sensitivity": "opnp", "feature_mean": "statistics"}
    for name, module in owners.items():
        assert get_statistic(name).compute.__module__.endswith(f".{module}"), name
        assert get_statistic(name).version == 1 and get_statistic(name).doc, name
    needed = required_statistics()
    assert {"precision", "knn_bank", "class_contribution", "val_activations_sorted"} <= set(needed)
    assert set(needed) <= set(list_statistics())
    assert required_statistics(["knn", "msp"]) == ["knn_bank"]


def test_a_name_registers_once_and_an_unknown_name_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(statistics_module, "STATISTICS", dict(statistics_module.STATISTICS))
    with pytest.raises(ValueError, match="'knn_bank' is already registered"):
        register_statistic("knn_bank")(lambda data: data.h)
    with pytest.raises(ValueError, match="version must be an int"):
        register_statistic(NEW_STAT, version=0)
    with pytest.raises(UnknownNameError, match=r"unknown training statistic 'knn_bnk'; did you mean 'knn_bank'\? "
                                               r"known training statistics: .*precision"):
        compute_statistics(["feature_mean", "knn_bnk"], _training_data())


def test_shared_work_is_done_once(monkeypatch) -> None:
    data, calls = _training_data(), Counter()
    for name in ("eigh", "pinv"):
        original = getattr(torch.linalg, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch.linalg, name, counting)
    compute_statistics(["vim_origin", "vim_eigenvectors", "vim_eigenvalues", "vim_residual_norm_mean"], data)
    assert calls == {"eigh": 1, "pinv": 1}  # one eigendecomposition and one pinv(W) for four statistics
    first = data.class_means
    compute_statistics(["class_means", "class_contribution", "precision"], data)
    assert data.class_means is first


# -- a new method with a new statistic, on the fake benchmark ------------------------------------------
class PeakScorer(Scorer):
    """A throwaway method: how far a sample's features exceed the training maxima (higher = more ID)."""

    name = NEW_METHOD
    title = "Peak (test only)"
    needs = frozenset({"penultimate"})
    stats = frozenset({NEW_STAT, "feature_mean"})

    def reference(self, feats: FeatureSet, **hparams) -> Tensor:
        self.resolve(hparams)
        peak = self.fitted.stats[NEW_STAT].to(feats.penultimate.device)
        return -(feats.penultimate - peak).clamp(min=0).sum(1)


@pytest.fixture
def computed(monkeypatch, fake_benchmark_names) -> Counter:
    """Every statistic computed counts itself; the registry is a copy, dropped after the test."""
    counts: Counter = Counter()
    registry = {}
    for name, stat in statistics_module.STATISTICS.items():
        def counting(data, _stat=stat):
            counts[_stat.name] += 1
            return _stat.compute(data)

        registry[name] = dataclasses.replace(stat, compute=counting)
    monkeypatch.setattr(statistics_module, "STATISTICS", registry)
    return counts


@pytest.fixture
def forward_calls(monkeypatch) -> Counter:
    counts: Counter = Counter()
    original = TinyModel.forward_features

    def counting(self, x):
        counts["forward"] += 1
        return original(self, x)

    monkeypatch.setattr(TinyModel, "forward_features", counting)
    return counts


def _load(root: Path, **kw):
    return load_benchmark(MODEL, ID, [OOD_A, OOD_B], cache_root=root, progress=False, build_device="cpu",
                          log=lambda message: None, **kw)


def _stored(root: Path) -> tuple[dict[str, Tensor], dict]:
    folder = store.train_stats_dir(root, MODEL, ID)
    return load_file(str(folder / store.TRAIN_STATS_FILE)), stats_store.read_train_stats_manifest(root, MODEL, ID)


def _register_new_method(monkeypatch, counts: Counter) -> None:
    """What a new method's own file does: register its statistic and itself."""
    @register_statistic(NEW_STAT, version=1, shape="(D,)")
    def feature_peak(data: TrainingData) -> Tensor:
        """Per-unit maximum of the training features."""
        counts[NEW_STAT] += 1
        return data.h.amax(0)

    monkeypatch.setitem(SCORERS._builders, NEW_METHOD, PeakScorer)


def test_a_new_method_with_a_new_statistic_needs_only_its_own_code(tmp_path: Path, monkeypatch, computed,
                                                                   forward_calls) -> None:
    bench = _load(tmp_path)
    before, manifest = _stored(tmp_path)
    required = required_statistics()
    assert computed == Counter({name: 1 for name in required})  # what the registered methods read, once each
    assert manifest["statistics"] == {name: 1 for name in required} and set(bench.stats) == set(required)
    assert NEW_STAT not in before and NEW_METHOD not in available_methods(bench)

    _register_new_method(monkeypatch, computed)
    computed.clear()
    model_runs = forward_calls["forward"]
    bench = _load(tmp_path)
    assert computed == Counter({NEW_STAT: 1})  # only the new statistic, from the cached training features
    assert forward_calls["forward"] == model_runs  # the model did not run again
    after, manifest = _stored(tmp_path)
    assert set(after) == set(before) | {NEW_STAT}
    assert all(torch.equal(after[name], before[name]) for name in before)  # the others kept bit for bit
    assert manifest["statistics"] == {**{name: 1 for name in required}, NEW_STAT: 1}
    result = evaluate_method(bench, NEW_METHOD, {})
    assert NEW_METHOD in available_methods(bench) and torch.isfinite(result.id_scores).all()
    assert 0.0 <= result.average.auroc <= 1.0

    # The statistic's code changes: its version is bumped, and a reader that builds nothing refuses it.
    monkeypatch.setitem(statistics_module.STATISTICS, NEW_STAT,
                        dataclasses.replace(get_statistic(NEW_STAT), version=2))
    with pytest.raises(store.StaleCacheError) as caught:
        _load(tmp_path, build_missing=False)
    message = str(caught.value)
    assert f"train_stats holds statistic {NEW_STAT!r} version 1, this code needs version 2" in message
    assert caught.value.problems == ((f"{MODEL}/{ID}/train_stats",
                                      f"holds statistic {NEW_STAT!r} version 1, this code needs version 2"),)
    commands = re.findall(r"`([^`]+)`", message)
    assert len(commands) == 1 and commands[0].startswith("python -m precompute "), message
    computed.clear()
    assert precompute_main(shlex.split(commands[0])[3:] + ["--quiet"]) == 0  # the command the error names
    assert computed == Counter({NEW_STAT: 1}) and forward_calls["forward"] == model_runs
    repaired = _load(tmp_path, build_missing=False)
    assert _stored(tmp_path)[1]["statistics"][NEW_STAT] == 2
    assert torch.equal(repaired.stats[NEW_STAT], bench.stats[NEW_STAT])  # same code here, so the same numbers


def test_a_cache_written_before_versions_is_read_as_version_1(tmp_path: Path, computed) -> None:
    _load(tmp_path)
    path = store.train_stats_dir(tmp_path, MODEL, ID) / store.TRAIN_STATS_MANIFEST
    manifest = _stored(tmp_path)[1]
    del manifest["statistics"]  # as the manifests of the single-function era
    store.atomic_write_json(path, manifest)
    computed.clear()
    bench = _load(tmp_path, build_missing=False)
    assert set(bench.stats) == set(required_statistics()) and not computed

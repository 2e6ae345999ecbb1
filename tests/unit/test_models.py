"""Model registry and families: feature contract, real CIFAR weights, checkpoint errors, offline weights."""
from __future__ import annotations

import tarfile
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ood_core.models import MODELS, OODModel, create_model, list_models
from ood_core.models.cifar_densenet import CIFAR10_CLASSES, CIFAR100_CLASSES, CifarDenseNet
from ood_core.models.cifar_resnet import CifarResNet
from ood_core.models.loading import (CheckpointError, PretrainedWeightsError, describe_mismatch,
                                     read_state_dict)
from ood_core.models.timm_models import TimmModel, UnsupportedModelError
from ood_core.paths import benchmark_root
from ood_core.registry import OODLensError, UnknownNameError

WEIGHTS = benchmark_root() / "weights"
CIFAR_TAR = benchmark_root() / "cifar10-test.tar.gz"
needs_pack = pytest.mark.skipif(not CIFAR_TAR.is_file() or not WEIGHTS.is_dir(),
                                reason="benchmark pack not available")

CIFAR_MODELS = ["densenet100-cifar10", "densenet100-cifar100", "resnet20-cifar10", "resnet56-cifar10"]
# name → (build kwargs, input size, penultimate dim D, prepool_max width)
LIBRARY_MODELS = {
    "resnet50": ({"pretrained": False}, 224, 2048, 2048),
    "vit-b16": ({"pretrained": False}, 224, 768, 197),
    "timm:resnet18": ({"pretrained": False}, 224, 512, 512),
}
CHECKPOINT_FILES = {
    "densenet100-cifar10": "densenet100-cifar10.pth.tar",
    "densenet100-cifar100": "densenet100-cifar100.pth.tar",
    "resnet20-cifar10": "resnet20-cifar10.th",
    "resnet56-cifar10": "resnet56-cifar10.th",
}


@pytest.fixture(scope="module")
def cifar_images(tmp_path_factory) -> list[tuple[Image.Image, int]]:
    """20 real CIFAR-10 test images per class (200), extracted from the pack into a temp folder."""
    if not CIFAR_TAR.is_file():
        pytest.skip("benchmark pack not available")
    root = tmp_path_factory.mktemp("cifar10")
    per_class: dict[str, list[tarfile.TarInfo]] = defaultdict(list)
    with tarfile.open(CIFAR_TAR) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 3 and len(per_class[parts[1]]) < 20:
                per_class[parts[1]].append(member)
                archive.extract(member, root, filter="data")
                if len(per_class) == 10 and all(len(m) == 20 for m in per_class.values()):
                    break  # the archive is grouped by class: stop reading once every class is full
    assert sorted(per_class) == list(CIFAR10_CLASSES)
    return [(Image.open(root / m.name).convert("RGB"), CIFAR10_CLASSES.index(cls))
            for cls, members in sorted(per_class.items()) for m in members]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conv-heavy: see tests/conftest.py


def _batch(model: OODModel, images: list[tuple[Image.Image, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    transform = model.transform()
    x = torch.stack([transform(image) for image, _ in images])
    return x, torch.tensor([label for _, label in images])


def _check_contract(model: OODModel, x: torch.Tensor, feature_dim: int, prepool_width: int | None) -> None:
    with torch.no_grad():
        out = model(x)
    n = x.shape[0]
    assert out.logits.shape == (n, model.num_classes)
    assert out.penultimate.shape == (n, feature_dim) == (n, model.feature_dim)
    assert out.logits.dtype == out.penultimate.dtype == torch.float32
    if prepool_width is None:
        assert out.prepool_max is None
    else:
        assert out.prepool_max.shape == (n, prepool_width)
    # logits are exactly the head applied to the penultimate features
    recomputed = out.penultimate @ model.head_weight.T + model.head_bias
    assert torch.allclose(out.logits, recomputed, atol=1e-4, rtol=1e-5)
    assert model.head_weight.shape == (model.num_classes, feature_dim)
    assert len(model.class_names) == model.num_classes
    assert not model.training


def test_registry_lists_every_family() -> None:
    names = list_models()
    for name in [*CIFAR_MODELS, "resnet50", "vit-b16", "timm:<name>"]:
        assert name in names
    assert "timm:resnet18" in MODELS


def test_the_registry_lives_in_ood_core_registry() -> None:
    from ood_core import models, registry

    assert models.MODELS is registry.MODELS and models.register_model is registry.register_model
    assert models.method_defaults("resnet50", "dice") == {"sparsity": 70.0}
    assert models.method_defaults("resnet50", "no-such-method") == {}


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_model("densenet-imaginary")
    message = str(info.value)
    assert "densenet-imaginary" in message
    assert all(name in message for name in ["densenet100-cifar10", "resnet20-cifar10", "vit-b16"])
    with pytest.raises(UnknownNameError, match="no_such_timm_net"):
        create_model("timm:no_such_timm_net", pretrained=False)


@needs_pack
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_models_follow_the_contract(name: str) -> None:
    model = create_model(name)
    dim = 342 if name.startswith("densenet") else 64
    _check_contract(model, torch.randn(3, 3, 32, 32), dim, dim)
    assert model.preprocessing.input_size == 32


@pytest.fixture(scope="module")
def library_models() -> dict[str, OODModel]:
    """Each library model built once (random weights): ViT-B and ResNet-50 take seconds to initialise."""
    return {name: create_model(name, **spec[0]) for name, spec in LIBRARY_MODELS.items()}


@pytest.mark.parametrize("name", list(LIBRARY_MODELS))
def test_library_models_follow_the_contract(name: str, library_models) -> None:
    _, size, dim, width = LIBRARY_MODELS[name]
    model = library_models[name]
    assert model.preprocessing.input_size == size
    _check_contract(model, torch.randn(2, 3, size, size), dim, width)


def test_vit_prepool_max_is_the_cls_attention_row(library_models) -> None:
    """Compare with the attention probabilities timm's own (non-fused) Attention computes."""
    model = library_models["vit-b16"]
    attention = model.net.blocks[-1].attn
    attention.fused_attn = False  # makes timm materialise softmax(q kᵀ) and pass it through attn_drop
    captured = {}
    hook = attention.attn_drop.register_forward_hook(lambda _m, _i, out: captured.setdefault("p", out))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    hook.remove()
    attention.fused_attn = True
    expected = captured["p"][:, :, 0].mean(dim=1)  # (N, heads, T, T) → CLS row, mean over heads
    assert torch.allclose(out.prepool_max, expected, atol=1e-6)
    assert torch.allclose(out.prepool_max.sum(dim=1), torch.ones(2), atol=1e-5)


def test_timm_model_without_linear_head_is_rejected() -> None:
    import timm

    with pytest.raises(UnsupportedModelError, match="nn.Linear"):
        TimmModel("timm:headless", timm.create_model("resnet18", pretrained=False, num_classes=0))


@needs_pack
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_checkpoints_match_architecture_strictly(name: str) -> None:
    model = create_model(name, pretrained=False)
    state_dict = read_state_dict(WEIGHTS / CHECKPOINT_FILES[name])
    assert describe_mismatch(model, state_dict) is None
    model_keys = set(model.state_dict())
    assert set(state_dict) <= model_keys
    # only BatchNorm's counter may be absent (checkpoints older than PyTorch 0.4.1)
    assert all(key.endswith("num_batches_tracked") for key in model_keys - set(state_dict))
    loaded = create_model(name).state_dict()
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


def _accuracy(name: str, images: list[tuple[Image.Image, int]]) -> float:
    model = create_model(name)
    assert model.class_names == CIFAR10_CLASSES
    x, labels = _batch(model, images)
    with torch.no_grad():
        logits = model(x).logits
    return (logits.argmax(dim=1) == labels).float().mean().item()


PRETRAINED_CIFAR10 = ["densenet100-cifar10", "resnet20-cifar10", "resnet56-cifar10"]


@needs_pack
@pytest.mark.parametrize("name", PRETRAINED_CIFAR10)
def test_pretrained_cifar_models_classify_real_images(name: str, cifar_images) -> None:
    """10 images per class (100): the README measures 81-83 % on the JPEG test set; chance is 10 %."""
    subset = [item for i, item in enumerate(cifar_images) if i % 20 < 10]
    accuracy = _accuracy(name, subset)
    assert accuracy >= 0.70, f"{name}: {accuracy:.1%} on 100 JPEG CIFAR-10 test images"


@pytest.mark.slow
@needs_pack
@pytest.mark.parametrize("name", PRETRAINED_CIFAR10)
def test_pretrained_cifar_models_classify_200_real_images(name: str, cifar_images) -> None:
    accuracy = _accuracy(name, cifar_images)
    assert accuracy >= 0.70, f"{name}: {accuracy:.1%} on 200 JPEG CIFAR-10 test images"


@needs_pack
def test_densenet_penultimate_is_the_mean_of_the_prepool_map(cifar_images) -> None:
    model = create_model("densenet100-cifar10")
    x, _ = _batch(model, cifar_images[::25])  # 8 images, spread over the classes
    with torch.no_grad():
        out = model(x)
        maps = model.feature_map(x)
    assert maps.shape == (8, 342, 8, 8)
    assert torch.allclose(out.penultimate, maps.mean(dim=(2, 3)), atol=1e-6)
    assert torch.all(out.prepool_max >= out.penultimate - 1e-6)
    assert torch.all(out.penultimate >= 0)  # post-ReLU map


def test_cifar_class_names() -> None:
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)  # label order is alphabetical
    assert len(CifarDenseNet("x", 100, CIFAR100_CLASSES).class_names) == 100


def test_wrong_state_dict_raises_with_key_list(tmp_path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": CifarResNet("r", 3).state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        create_model("densenet100-cifar10", checkpoint=str(path))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "missing keys" in message and "unexpected keys" in message
    assert "block1.layer.0.bn1.weight" in message and "checkpoint=" in message


def test_shape_mismatch_is_reported(tmp_path) -> None:
    path = tmp_path / "densenet100.pth"
    torch.save(CifarDenseNet("d", 100).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatches: fc\.weight \(100, 342\) vs model \(10, 342\)"):
        create_model("densenet100-cifar10", checkpoint=str(path))


def test_unreadable_and_empty_checkpoints(tmp_path) -> None:
    garbage = tmp_path / "garbage.th"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_model("resnet20-cifar10", checkpoint=str(garbage))
    empty = tmp_path / "empty.th"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(CheckpointError, match="no state_dict"):
        create_model("resnet20-cifar10", checkpoint=str(empty))


def test_missing_checkpoint_says_how_to_point_elsewhere(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "nope.th"
    with pytest.raises(CheckpointError) as info:
        create_model("resnet56-cifar10", checkpoint=str(missing))
    assert str(missing) in str(info.value) and "--checkpoint" in str(info.value)
    monkeypatch.setenv("OOD_LENS_BENCHMARK", str(tmp_path))
    with pytest.raises(CheckpointError) as info:
        create_model("densenet100-cifar10")
    message = str(info.value)
    assert str(tmp_path / "weights" / "densenet100-cifar10.pth.tar") in message
    assert "OOD_LENS_BENCHMARK" in message and "checkpoint=" in message


def test_checkpoint_override_loads_those_weights(tmp_path) -> None:
    source = CifarResNet("r", 3)
    with torch.no_grad():
        source.linear.bias.copy_(torch.arange(10.0))
    path = tmp_path / "resnet20-custom.th"
    # DataParallel-style prefix, as in the pack's checkpoints
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("resnet20-cifar10", checkpoint=str(path))
    assert torch.equal(model.head_bias, torch.arange(10.0))


def test_fingerprint_changes_with_one_weight() -> None:
    model = create_model("resnet20-cifar10", pretrained=False)
    before = model.fingerprint()
    assert before == model.fingerprint() and len(before) == 16
    with torch.no_grad():
        model.layer2[0].conv1.weight[0, 0, 0, 0] += 1e-3
    assert model.fingerprint() != before


def test_resnet50_weights_not_cached_raise_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsError) as info:
        create_model("resnet50")
    message = str(info.value)
    assert "not cached" in message and "checkpoint=" in message and str(tmp_path) in message


def test_timm_weights_not_cached_raise_offline(tmp_path, monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    for name in ["vit-b16", "timm:resnet18"]:
        with pytest.raises(PretrainedWeightsError, match="not in the local cache.*checkpoint="):
            create_model(name)


def test_timm_pretrained_loads_from_the_local_cache(tmp_path, monkeypatch) -> None:
    """A cached file is loaded through timm's own pretrained-loading code, without any download."""
    import huggingface_hub
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(weights))
    model = create_model("timm:resnet18")
    assert torch.equal(model.head_weight, reference.fc.weight)
    assert torch.equal(model.net.conv1.weight, reference.conv1.weight)


def test_timm_checkpoint_override(tmp_path) -> None:
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("timm:resnet18", checkpoint=str(path))
    assert model.fingerprint() != create_model("timm:resnet18", pretrained=False).fingerprint()
    assert torch.equal(model.head_bias, reference.fc.bias)


def test_errors_are_oodlens_errors() -> None:
    for error in (CheckpointError, PretrainedWeightsError, UnsupportedModelError, UnknownNameError):
        assert issubclass(error, OODLensError)

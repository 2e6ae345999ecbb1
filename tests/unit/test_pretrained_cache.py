"""Pretrained weights come from the libraries' usual local caches, and the network is reached only
when downloads are allowed (``OOD_LENS_DOWNLOAD=1``, the CLIs' ``--download``).

The caches are pre-filled in ``tmp_path`` with random weights in the layout and under the file name
each library expects, and every socket connection and DNS lookup raises (and is recorded): a test
that loads weights proves nothing reached the network.

On torchvision's hash-in-filename check: ``resnet50-0676ba61.pth`` names the first hex digits of
the published file's sha256, and torch hub checks it only when it *downloads*; a cached file is
loaded as it is (``torch.hub.load_state_dict_from_url``). So a random state_dict saved under that
name loads, and the test checks the model holds exactly those random weights (its fingerprint,
not the file name, is what the feature cache records).
"""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ood_core.models import create_model
from ood_core.models.loading import PretrainedWeightsError, hf_hub_cache_dir, torch_hub_checkpoints

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every connection or DNS lookup raises OSError and is recorded in the returned list."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network disabled in this test")

    for target, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "getaddrinfo"),
                         (socket, "create_connection")):
        monkeypatch.setattr(target, name, refuse)
    return attempts


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TORCH_HOME and HF_HOME inside ``tmp_path`` (no HF_HUB_CACHE override), downloads not allowed."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "OOD_LENS_DOWNLOAD"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


def _hf_cached_file(hub_id: str, filename: str = "model.safetensors") -> Path:
    """Where huggingface_hub's cache keeps ``hub_id``'s ``filename`` at ``refs/main`` (= COMMIT)."""
    repo = hf_hub_cache_dir() / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    path = repo / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_cache_locations_follow_the_environment(caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert torch_hub_checkpoints() == caches / "torch" / "hub" / "checkpoints"
    assert hf_hub_cache_dir() == caches / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(caches / "elsewhere"))
    assert hf_hub_cache_dir() == caches / "elsewhere"


def test_resnet50_loads_from_a_prefilled_torch_hub_cache(caches: Path, network_attempts: list) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(1)
    reference = resnet50(weights=None)
    path = torch_hub_checkpoints() / "resnet50-0676ba61.pth"  # torchvision's IMAGENET1K_V1 file name
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_model("resnet50")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.net.state_dict()[key], value), key
    assert model.class_names[0] == "tench" and not network_attempts


def test_resnet50_not_cached_never_touches_the_network(caches: Path, network_attempts: list) -> None:
    with pytest.raises(PretrainedWeightsError) as info:
        create_model("resnet50")
    message = str(info.value)
    assert str(torch_hub_checkpoints() / "resnet50-0676ba61.pth") in message
    assert "OOD_LENS_DOWNLOAD=1" in message and "--download" in message and "\n" not in message
    assert not network_attempts


def test_resnet50_downloads_only_when_allowed(caches: Path, network_attempts: list,
                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("OOD_LENS_DOWNLOAD", "1")
    with pytest.raises(PretrainedWeightsError, match="cannot download resnet50 IMAGENET1K_V1 weights from "
                                                     "https://download.pytorch.org/") as info:
        create_model("resnet50")
    assert network_attempts and "\n" not in str(info.value)  # torchvision tried, and the failure is one line
    printed = capsys.readouterr()
    assert "Downloading" in printed.err and not printed.out  # torch hub's notice never lands in a report


def test_timm_loads_from_a_prefilled_hugging_face_cache(caches: Path, network_attempts: list) -> None:
    """``timm:<name>`` (and ``vit-b16``, the same code) read ``$HF_HOME/hub`` through timm's loader."""
    import timm

    torch.manual_seed(2)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    hub_id = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").hf_hub_id
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(_hf_cached_file(hub_id)))
    model = create_model("timm:vit_tiny_patch16_224")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.net.state_dict()[key], value), key
    assert not network_attempts


def test_vit_b16_resolves_its_hugging_face_file(caches: Path, network_attempts: list) -> None:
    """vit-b16's pretrained config points at the Hugging Face cache file written in timm's layout."""
    import timm

    from ood_core.models.timm_models import cached_pretrained_file

    config = timm.models.get_pretrained_cfg("vit_base_patch16_224").to_dict()
    assert cached_pretrained_file(config) is None
    path = _hf_cached_file(config["hf_hub_id"])
    path.write_bytes(b"placeholder")
    assert cached_pretrained_file(config) == path and not network_attempts


def test_timm_not_cached_never_touches_the_network(caches: Path, network_attempts: list) -> None:
    for name in ("vit-b16", "timm:vit_tiny_patch16_224"):
        with pytest.raises(PretrainedWeightsError) as info:
            create_model(name)
        message = str(info.value)
        assert str(hf_hub_cache_dir()) in message and "OOD_LENS_DOWNLOAD=1" in message and "\n" not in message
    assert not network_attempts


def test_timm_downloads_only_when_allowed(caches: Path, network_attempts: list,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Allowed: timm's own download into the Hugging Face cache is asked for (a real attempt with the
    network down spends huggingface_hub's ~50 s of retries, so timm.create_model is stood in for)."""
    import timm

    requests = []
    real_create = timm.create_model

    def create(name, pretrained=False, **kwargs):
        if pretrained:
            requests.append((name, kwargs.get("cache_dir")))
            raise OSError("network disabled in this test")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    monkeypatch.setenv("OOD_LENS_DOWNLOAD", "1")
    with pytest.raises(PretrainedWeightsError, match="cannot download the pretrained weights of timm model "
                                                     "'vit_base_patch16_224' into"):
        create_model("vit-b16")
    assert requests == [("vit_base_patch16_224", str(hf_hub_cache_dir()))]

"""torchvision ImageNet classifiers: ``resnet50`` (IMAGENET1K_V1, the weights of the DICE / ReAct /
LINe ImageNet tables).

Pretrained weights come through torchvision's own loading code, which reads torch hub's cache
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``). The product is offline
by default: when the file is not cached we raise :class:`PretrainedWeightsError` instead of
attempting a download, unless downloads are allowed (``ood_core.paths.downloads_allowed()``,
``--download``), in which case torchvision downloads the file into that cache.

On the hash in the file name (``resnet50-0676ba61.pth``): torch hub checks it (the first hex
digits of the file's sha256) only when it *downloads* the file; a file already in the cache is
loaded as it is. What identifies the weights actually used is the model fingerprint (sha256 of
every parameter) that the feature cache records and checks on every read.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ood_core.models.base import OODModel, Preprocessing, imagenet_input_note
from ood_core.models.loading import (
    ALLOW_DOWNLOAD,
    PretrainedWeightsError,
    error_summary,
    load_checkpoint,
    torch_hub_checkpoints,
)
from ood_core.paths import downloads_allowed
from ood_core.registry import register_method_defaults, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_PREPROCESSING = Preprocessing(input_size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def torch_hub_cached_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url`` (read from ``$TORCH_HOME`` now)."""
    return torch_hub_checkpoints() / Path(urlparse(url).path).name


class TorchvisionResNet(OODModel):
    """Wraps a torchvision ResNet; penultimate = flatten(avgpool(layer4)), prepool_max = layer4's spatial max."""

    def __init__(self, name: str, net: nn.Module, class_names: tuple[str, ...] | None,
                 preprocessing: Preprocessing = IMAGENET_PREPROCESSING) -> None:
        note = imagenet_input_note(preprocessing) if net.fc.out_features == 1000 else None
        super().__init__(name, net.fc.out_features, net.fc.in_features, preprocessing, class_names, note)
        self.net = net

    def feature_map(self, x: Tensor) -> Tensor:
        """layer4's output: (N, 3, 224, 224) → (N, 2048, 7, 7) float32 (post-ReLU)."""
        net = self.net
        out = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(out))))

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(penultimate (N, 2048), prepool_max (N, 2048))."""
        maps = self.feature_map(x)
        return torch.flatten(self.net.avgpool(maps), 1), maps.amax(dim=(2, 3))

    @property
    def head(self) -> nn.Linear:
        return self.net.fc


@register_model("resnet50")
def resnet50(pretrained: bool = True, checkpoint: str | None = None) -> TorchvisionResNet:
    """torchvision ResNet-50 with IMAGENET1K_V1 weights (``pretrained=False``: random weights).

    ``checkpoint`` is a local torchvision-layout state_dict (``conv1.weight``, ..., ``fc.bias``).
    """
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    weights = ResNet50_Weights.IMAGENET1K_V1
    # Weights first: a missing file fails before seconds are spent on initialisation.
    state_dict = torchvision_state_dict("resnet50", weights) if pretrained and checkpoint is None else None
    net = tv_resnet50(weights=None)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, "", strip_prefix="module.")
    elif state_dict is not None:
        net.load_state_dict(state_dict)
    return TorchvisionResNet("resnet50", net, tuple(weights.meta["categories"]))


def torchvision_state_dict(name: str, weights) -> dict[str, Tensor]:
    """The state_dict of torchvision ``weights`` (a ``WeightsEnum`` member) from torch hub's cache,
    downloaded into it only when :func:`ood_core.paths.downloads_allowed`.

    torchvision's own loader reads the file (``weights_only``); it checks the hash in the file
    name only on a download (see the module docstring).

    Raises:
        PretrainedWeightsError: not cached and downloads are not allowed (nothing touches the
            network), the download failed, or the cached file cannot be read (one line each).
    """
    cached = torch_hub_cached_file(weights.url)
    was_cached = cached.is_file()
    label = f"{name} {weights.name}"
    if not was_cached and not downloads_allowed():
        raise PretrainedWeightsError(
            f"{label} weights are not cached at {cached} and nothing is downloaded at run time; "
            f"copy {cached.name} there ({weights.url}), or {ALLOW_DOWNLOAD}, or pass checkpoint=<path> "
            f"(CLI: --checkpoint PATH), or pretrained=False"
        )
    try:
        # torch hub writes "Downloading: ..." to stdout: send it to stderr, never into a report.
        with contextlib.redirect_stdout(sys.stderr):
            return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:
        if not was_cached:
            raise PretrainedWeightsError(
                f"cannot download {label} weights from {weights.url} into {cached} ({error_summary(error)}); "
                f"copy the file there from a machine with network, or pass checkpoint=<path>"
            ) from error
        raise PretrainedWeightsError(
            f"cannot load the cached {label} weights {cached} ({error_summary(error)}); "
            f"delete the file or pass checkpoint=<path>"
        ) from error


# The published ImageNet ResNet-50 settings (docs/methods.md §2.2, §2.6–2.8, §3.10(d)).
register_method_defaults("resnet50", "line", delta=0.8, p_a=10.0, p_w=10.0)
register_method_defaults("resnet50", "dice", sparsity=70.0)
register_method_defaults("resnet50", "dice+react", sparsity=10.0, clip_by="value", clip_value=1.0)
register_method_defaults("resnet50", "ash-s", percentile=90.0)
register_method_defaults("resnet50", "knn", k=1000)

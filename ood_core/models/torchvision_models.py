"""torchvision ImageNet classifiers: ``resnet50`` (IMAGENET1K_V1, the weights of the DICE / ReAct /
LINe ImageNet tables).

Pretrained weights come through torchvision's own loading code, which reads torch hub's cache
(``torch.hub.get_dir()/checkpoints``). The product is offline, so when the file is not cached we
raise :class:`PretrainedWeightsError` instead of attempting a download.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ood_core.models.base import OODModel, Preprocessing, imagenet_input_note
from ood_core.models.loading import PretrainedWeightsError, error_summary, load_checkpoint
from ood_core.registry import register_method_defaults, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_PREPROCESSING = Preprocessing(input_size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def torch_hub_cached_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


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
    cached = torch_hub_cached_file(weights.url)
    wants_cached = pretrained and checkpoint is None
    if wants_cached and not cached.is_file():  # fail before spending seconds on initialisation
        raise PretrainedWeightsError(
            f"resnet50 IMAGENET1K_V1 weights are not cached at {cached} and nothing is downloaded at "
            f"run time; copy {cached.name} there, or pass checkpoint=<path> "
            f"(CLI: --checkpoint PATH), or pretrained=False"
        )
    net = tv_resnet50(weights=None)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, "", strip_prefix="module.")
    elif wants_cached:
        try:
            # torchvision's own loader: finds the cached file, checks its hash, never downloads here.
            net.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
        except Exception as error:
            raise PretrainedWeightsError(
                f"cannot load the cached resnet50 weights {cached} ({error_summary(error)}); "
                f"delete the file or pass checkpoint=<path>"
            ) from error
    return TorchvisionResNet("resnet50", net, tuple(weights.meta["categories"]))


# The published ImageNet ResNet-50 settings (docs/methods.md §2.2, §2.6–2.8, §3.10(d)).
register_method_defaults("resnet50", "line", delta=0.8, p_a=10.0, p_w=10.0)
register_method_defaults("resnet50", "dice", sparsity=70.0)
register_method_defaults("resnet50", "dice+react", sparsity=10.0, clip_by="value", clip_value=1.0)
register_method_defaults("resnet50", "ash-s", percentile=90.0)
register_method_defaults("resnet50", "knn", k=1000)

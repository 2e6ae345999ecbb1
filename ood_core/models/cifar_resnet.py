"""CIFAR ResNet-20 / ResNet-56 (He et al. 2016, §4.2), laid out like akamaster/pytorch_resnet_cifar10.

3x3 stem conv (16) → 3 stages of n basic blocks (16, 32, 64 channels; stride 2 at the start
of stages 2 and 3) → global average pool → ``linear`` (64 → 10). n = 3 for ResNet-20 and 9 for
ResNet-56. Shortcuts are parameter-free ("option A"): stride-2 subsampling plus zero padding of
the new channels, so the checkpoint holds no shortcut weights. The checkpoint's keys carry
DataParallel's ``module.`` prefix, which :func:`read_state_dict` strips.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ood_core.models.base import OODModel, Preprocessing, gap_and_max
from ood_core.models.cifar_densenet import CIFAR10_CLASSES, CIFAR10_INPUT_NOTE
from ood_core.models.loading import load_checkpoint
from ood_core.registry import register_model

# akamaster's training script normalises CIFAR with the ImageNet statistics.
CIFAR_RESNET_PREPROCESSING = Preprocessing(
    input_size=32, resize=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: x[:, :, ::2, ::2] with ``pad`` zero channels on each side."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C + 2·pad, H/2, W/2)."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = OptionAShortcut(planes // 4) if changes_shape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(OODModel):
    """ResNet-(6n+2) for 32x32 inputs; 64-d penultimate features."""

    def __init__(self, name: str, blocks_per_stage: int, num_classes: int = 10,
                 class_names: tuple[str, ...] | None = CIFAR10_CLASSES,
                 preprocessing: Preprocessing = CIFAR_RESNET_PREPROCESSING,
                 input_note: str | None = CIFAR10_INPUT_NOTE) -> None:
        super().__init__(name, num_classes, 64, preprocessing, class_names, input_note)
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            stage = []
            for index in range(blocks_per_stage):
                stage.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """The final ReLU map: (N, 3, 32, 32) → (N, 64, 8, 8) float32."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(out)))

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """penultimate = global average of the final map (N, 64); prepool_max = its spatial max (N, 64)."""
        return gap_and_max(self.feature_map(x))

    @property
    def head(self) -> nn.Linear:
        return self.linear


def _build(name: str, blocks_per_stage: int, pretrained: bool, checkpoint: str | None) -> CifarResNet:
    model = CifarResNet(name, blocks_per_stage)
    if pretrained or checkpoint is not None:
        load_checkpoint(model, checkpoint, f"{name}.th", strip_prefix="module.")
    return model


@register_model("resnet20-cifar10")
def resnet20_cifar10(pretrained: bool = True, checkpoint: str | None = None) -> CifarResNet:
    """ResNet-20 on CIFAR-10 (akamaster's ``resnet20-cifar10.th``)."""
    return _build("resnet20-cifar10", 3, pretrained, checkpoint)


@register_model("resnet56-cifar10")
def resnet56_cifar10(pretrained: bool = True, checkpoint: str | None = None) -> CifarResNet:
    """ResNet-56 on CIFAR-10 (akamaster's ``resnet56-cifar10.th``)."""
    return _build("resnet56-cifar10", 9, pretrained, checkpoint)

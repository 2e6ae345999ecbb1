"""DenseNet-BC-100 for CIFAR (Huang et al. 2017), laid out like the DICE / ReAct / LINe checkpoint.

Architecture: 3x3 stem conv (3 → 2·growth) → 3 dense blocks of 16 bottleneck layers
(BN-ReLU-1x1 conv to 4·growth, BN-ReLU-3x3 conv to growth, concatenated) with transition
layers (BN-ReLU-1x1 conv halving the channels, 2x2 average pool) between them → BN-ReLU →
8x8 average pool → ``fc``. Growth 12, compression 0.5, no dropout: 24 → 216 → 108 → 300 → 150 → 342
channels. Key names follow the checkpoint: ``conv1``, ``block1.layer.N.{bn1,conv1,bn2,conv2}``,
``trans1.{bn1,conv1}``, ..., ``block3``, ``bn1``, ``fc``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_core.models.base import OODModel, Preprocessing
from ood_core.models.loading import load_checkpoint
from ood_core.registry import register_method_defaults, register_model

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# CIFAR-100 fine labels in label order (alphabetical, as in the dataset's meta file).
CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

# What each CIFAR model expects (the Inspect page shows it beside an upload).
CIFAR10_INPUT_NOTE = ("32×32 colour photos of the 10 CIFAR-10 classes (plane, car, bird, cat, deer, dog, frog, "
                      "horse, ship, truck), one object filling the frame")
CIFAR100_INPUT_NOTE = ("32×32 colour photos of the 100 CIFAR-100 classes (animals, plants, vehicles, household "
                       "objects, people, scenes), one object filling the frame")

# The statistics the DICE checkpoint was trained with (not the ImageNet ones).
CIFAR_DENSENET_PREPROCESSING = Preprocessing(
    input_size=32, resize=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
)


class BottleneckLayer(nn.Module):
    """BN-ReLU-conv1x1(4·growth)-BN-ReLU-conv3x3(growth); output concatenated to the input."""

    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        inter_planes = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, inter_planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inter_planes)
        self.conv2 = nn.Conv2d(inter_planes, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C + growth, H, W)."""
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class DenseBlock(nn.Module):
    def __init__(self, num_layers: int, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[BottleneckLayer(in_planes + i * growth_rate, growth_rate)
                                     for i in range(num_layers)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class TransitionLayer(nn.Module):
    """BN-ReLU-conv1x1 (compression) then 2x2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class CifarDenseNet(OODModel):
    """DenseNet-BC (depth 100, growth 12, compression 0.5) for 32x32 inputs."""

    def __init__(self, name: str, num_classes: int, class_names: tuple[str, ...] | None = None,
                 depth: int = 100, growth_rate: int = 12, reduction: float = 0.5,
                 preprocessing: Preprocessing = CIFAR_DENSENET_PREPROCESSING, input_note: str | None = None) -> None:
        layers_per_block = (depth - 4) // 6  # bottleneck layers count twice (two convs)
        planes = 2 * growth_rate
        conv1 = nn.Conv2d(3, planes, kernel_size=3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for index in range(3):
            blocks.append(DenseBlock(layers_per_block, planes, growth_rate))
            planes += layers_per_block * growth_rate
            if index < 2:
                out_planes = int(planes * reduction)
                blocks.append(TransitionLayer(planes, out_planes))
                planes = out_planes
        if input_note is None:
            input_note = {10: CIFAR10_INPUT_NOTE, 100: CIFAR100_INPUT_NOTE}.get(num_classes)
        super().__init__(name, num_classes, planes, preprocessing, class_names, input_note)
        self.conv1 = conv1
        self.block1, self.trans1, self.block2, self.trans2, self.block3 = blocks
        self.bn1 = nn.BatchNorm2d(planes)
        self.fc = nn.Linear(planes, num_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """The final ReLU map before pooling: (N, 3, 32, 32) → (N, 342, 8, 8) float32."""
        out = self.trans1(self.block1(self.conv1(x)))
        out = self.trans2(self.block2(out))
        return F.relu(self.bn1(self.block3(out)))

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """penultimate = 8x8 average pool of the final ReLU map (N, 342); prepool_max = its spatial max (N, 342)."""
        maps = self.feature_map(x)
        # The checkpoint's code uses avg_pool2d(·, 8): the same as the global mean on 32x32 inputs,
        # and the mean keeps the feature 342-d if someone feeds a larger image.
        penultimate = maps.mean(dim=(2, 3))
        return penultimate, maps.amax(dim=(2, 3))

    @property
    def head(self) -> nn.Linear:
        return self.fc


def _build(name: str, num_classes: int, class_names: tuple[str, ...], filename: str,
           pretrained: bool, checkpoint: str | None) -> CifarDenseNet:
    model = CifarDenseNet(name, num_classes, class_names)
    if pretrained or checkpoint is not None:
        load_checkpoint(model, checkpoint, filename)
    return model


@register_model("densenet100-cifar10")
def densenet100_cifar10(pretrained: bool = True, checkpoint: str | None = None) -> CifarDenseNet:
    """DenseNet-BC-100 trained on CIFAR-10 (the DICE checkpoint ``densenet100-cifar10.pth.tar``)."""
    return _build("densenet100-cifar10", 10, CIFAR10_CLASSES, "densenet100-cifar10.pth.tar",
                  pretrained, checkpoint)


@register_model("densenet100-cifar100")
def densenet100_cifar100(pretrained: bool = True, checkpoint: str | None = None) -> CifarDenseNet:
    """DenseNet-BC-100 trained on CIFAR-100 (``densenet100-cifar100.pth.tar``)."""
    return _build("densenet100-cifar100", 100, CIFAR100_CLASSES, "densenet100-cifar100.pth.tar",
                  pretrained, checkpoint)


# LINe's CIFAR-100 demo runs p_a = 10 (keeps 90 % of neurons); CIFAR-10 uses the declared
# defaults (p_w = p_a = 90, δ = 1.0). docs/methods.md §3.10(d).
register_method_defaults("densenet100-cifar100", "line", p_a=10.0)

"""The uniform model wrapper every registered model returns (timm's feature API, for OOD).

``OODModel.forward(x)`` returns :class:`ModelOutputs`:
  logits       (N, K) float32  = head(penultimate), exactly
  penultimate  (N, D) float32  the input of the final Linear (after any pooling / norm)
  prepool_max  (N, C) float32  NAP's statistic: per-channel spatial max of the last
                               feature maps before global pooling (CNNs, C == D for GAP);
                               for ViT the head-averaged CLS attention row of the last
                               block, (N, T); None when unavailable.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class ModelOutputs:
    logits: Tensor
    penultimate: Tensor
    prepool_max: Tensor | None


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input: PIL → (mode) → Resize(resize) →
    CenterCrop(input_size) → ToTensor → Normalize(mean, std)."""

    input_size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_mode: str = "RGB"  # "RGB" or "L"
    # Resize interpolation ("bilinear", "bicubic", ...); timm models declare bicubic.
    interpolation: str = "bilinear"

    def transform(self):
        from torchvision import transforms as T

        return T.Compose([
            T.Lambda(lambda image: image.convert(self.image_mode)),
            T.Resize(self.resize, interpolation=T.InterpolationMode(self.interpolation)),
            T.CenterCrop(self.input_size),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])

    def describe(self) -> str:
        # The default interpolation is left out so existing descriptions (cache manifests) stay stable.
        resize = f"Resize({self.resize})" if self.interpolation == "bilinear" else \
            f"Resize({self.resize}, {self.interpolation})"
        return (f"{self.image_mode} {resize} CenterCrop({self.input_size}) "
                f"Normalize(mean={list(self.mean)}, std={list(self.std)})")


IMAGENET_INPUT_NOTE = ("colour photos of everyday objects, animals and scenes (the {classes:,} ImageNet classes), "
                      "one main object per image, resized and centre-cropped to {size}×{size}")


def generic_input_note(preprocessing: Preprocessing, num_classes: int) -> str:
    """The input a model expects, said from its preprocessing alone (no dataset known)."""
    colour = "greyscale" if preprocessing.image_mode == "L" else "colour"
    size = preprocessing.input_size
    return f"{size}×{size} {colour} images of its {num_classes:,} training classes (resized and centre-cropped)"


def imagenet_input_note(preprocessing: Preprocessing, num_classes: int = 1000) -> str:
    """The note of an ImageNet classifier (torchvision / timm; 1k, or 21k/22k for some timm heads)."""
    return IMAGENET_INPUT_NOTE.format(classes=num_classes, size=preprocessing.input_size)


def gap_and_max(maps: Tensor) -> tuple[Tensor, Tensor]:
    """A GAP network's final ReLU map (N, C, H, W) → (penultimate = its global average (N, C),
    prepool_max = its spatial max (N, C)), the pair NAP reads."""
    return maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))


class OODModel(nn.Module):
    """Base class: subclasses implement ``forward_features`` and ``head``."""

    def __init__(self, name: str, num_classes: int, feature_dim: int, preprocessing: Preprocessing,
                 class_names: tuple[str, ...] | None = None, input_note: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.preprocessing = preprocessing
        self.class_names = class_names or tuple(str(i) for i in range(num_classes))
        # What images the model was trained on, in words (the Inspect page shows it beside an upload).
        self.input_note = input_note or generic_input_note(preprocessing, num_classes)

    # -- to implement -------------------------------------------------------------
    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(penultimate (N, D), prepool_max (N, C) or None) for an input batch x (N, 3|1, H, W)."""
        raise NotImplementedError

    @property
    def head(self) -> nn.Linear:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------
    def forward(self, x: Tensor) -> ModelOutputs:
        penultimate, prepool_max = self.forward_features(x)
        return ModelOutputs(logits=self.head(penultimate), penultimate=penultimate, prepool_max=prepool_max)

    def logits(self, x: Tensor) -> Tensor:
        return self.forward(x).logits

    @property
    def head_weight(self) -> Tensor:
        """(K, D) float32."""
        return self.head.weight.detach()

    @property
    def head_bias(self) -> Tensor:
        """(K,) float32 (zeros when the head has no bias)."""
        bias = self.head.bias
        return bias.detach() if bias is not None else torch.zeros(self.num_classes, device=self.head.weight.device)

    def transform(self):
        return self.preprocessing.transform()

    def fingerprint(self) -> str:
        """sha256 over every parameter and buffer (names, dtypes, shapes, bytes); 16 hex chars."""
        digest = hashlib.sha256(self.name.encode())
        for key, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
            # reshape(-1): 0-d tensors (BatchNorm's num_batches_tracked) cannot be viewed as bytes.
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return digest.hexdigest()[:16]

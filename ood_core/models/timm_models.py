"""timm models: ``vit-b16`` (``vit_base_patch16_224``) and the generic prefix entry ``timm:<name>``.

Features use timm's own feature API: penultimate = ``forward_head(forward_features(x),
pre_logits=True)``, i.e. exactly the input of the classifier Linear (after pooling and any
``fc_norm`` / head norm). Preprocessing comes from ``timm.data.resolve_data_config``.

Pretrained weights are loaded by timm's own code from a local cache: the Hugging Face hub cache
(``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``; see
:func:`~ood_core.models.loading.hf_hub_cache_dir`) or torch hub's (for configs with a URL). By
default nothing is downloaded, and a model whose weights are not cached raises
:class:`PretrainedWeightsError` at once (instead of timm's minute of retries); when downloads are
allowed (``ood_core.paths.downloads_allowed()``, ``--download``) timm downloads them into that
Hugging Face cache.
"""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

from torch import Tensor, nn

from ood_core.models.base import OODModel, Preprocessing, imagenet_input_note
from ood_core.models.loading import (
    ALLOW_DOWNLOAD,
    PretrainedWeightsError,
    error_summary,
    hf_hub_cache_dir,
    load_checkpoint,
)
from ood_core.models.torchvision_models import torch_hub_cached_file
from ood_core.paths import downloads_allowed
from ood_core.registry import OODLensError, UnknownNameError, register_model

_HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class UnsupportedModelError(OODLensError):
    """The model exists but lacks what OOD Lens needs (a single Linear head, a CLS token)."""


def cached_pretrained_file(pretrained_cfg: dict) -> Path | None:
    """The locally cached weight file of a timm pretrained config, or None when not cached.

    Hugging Face hub layout (what ``huggingface_hub.try_to_load_from_cache`` reads, no network):
    ``<hf_hub_cache_dir()>/models--<org>--<name>/refs/main`` holds a commit hash, and the file is
    ``.../snapshots/<commit>/model.safetensors`` (or ``pytorch_model.bin``).
    """
    if pretrained_cfg.get("file"):
        return Path(pretrained_cfg["file"])
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        import huggingface_hub

        names = ((pretrained_cfg["hf_hub_filename"],) if pretrained_cfg.get("hf_hub_filename")
                 else _HF_FILENAMES)
        for filename in names:
            found = huggingface_hub.try_to_load_from_cache(hub_id, filename, cache_dir=str(hf_hub_cache_dir()))
            if isinstance(found, str):
                return Path(found)
    url = pretrained_cfg.get("url")
    if url and torch_hub_cached_file(url).is_file():
        return torch_hub_cached_file(url)
    return None


def timm_preprocessing(model: nn.Module) -> Preprocessing:
    """Resize(input / crop_pct) + CenterCrop(input) with the model's mean / std / interpolation."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    size = int(config["input_size"][-1])
    interpolation = config.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bilinear"  # timm's "random" etc. are training-time choices
    return Preprocessing(
        input_size=size, resize=int(math.floor(size / config.get("crop_pct", 1.0))),
        mean=tuple(float(v) for v in config["mean"]), std=tuple(float(v) for v in config["std"]),
        interpolation=interpolation,
    )


def _class_names(net: nn.Module, num_classes: int) -> tuple[str, ...] | None:
    """ImageNet class descriptions when the head is an ImageNet head, else None (→ "0", "1", ...)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(net)
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != num_classes:
        return None
    return tuple(info.index_to_description(i).split(",")[0] for i in range(num_classes))


def create_timm_network(timm_name: str, pretrained: bool, checkpoint: str | None) -> nn.Module:
    """``timm.create_model`` offline: random, from ``checkpoint``, or from cached pretrained weights."""
    import timm

    if not timm.is_model(timm_name):
        raise UnknownNameError(f"unknown timm model {timm_name!r}; see timm.list_models() for the names")
    if checkpoint is None and pretrained:
        pretrained_cfg = timm.models.get_pretrained_cfg(timm_name)
        cached = cached_pretrained_file(pretrained_cfg.to_dict()) if pretrained_cfg is not None else None
        if cached is None and pretrained_cfg is not None and downloads_allowed():
            return _download_timm_network(timm_name)
        if cached is None:
            raise PretrainedWeightsError(
                f"pretrained weights of timm model {timm_name!r} are not in the local cache "
                f"(Hugging Face hub {hf_hub_cache_dir()} / torch hub) and nothing is downloaded at run time; "
                f"{ALLOW_DOWNLOAD}, or pass checkpoint=<path> (CLI: --checkpoint PATH) or pretrained=False"
            )
        try:
            # timm's own loader (checkpoint filters, adaptations) reading the cached file.
            return timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)})
        except Exception as error:
            raise PretrainedWeightsError(
                f"cannot load cached weights {cached} for timm model {timm_name!r} ({error_summary(error)})"
            ) from error
    net = timm.create_model(timm_name, pretrained=False)
    if checkpoint is not None:
        load_checkpoint(net, checkpoint, "", strip_prefix="module.")
    return net


def _download_timm_network(timm_name: str) -> nn.Module:
    """``timm.create_model(pretrained=True)`` downloading into :func:`hf_hub_cache_dir` (downloads allowed)."""
    import timm

    try:
        with contextlib.redirect_stdout(sys.stderr):  # progress is never mixed into a report on stdout
            return timm.create_model(timm_name, pretrained=True, cache_dir=str(hf_hub_cache_dir()))
    except Exception as error:
        raise PretrainedWeightsError(
            f"cannot download the pretrained weights of timm model {timm_name!r} into {hf_hub_cache_dir()} "
            f"({error_summary(error)}); copy them into that cache from a machine with network, "
            f"or pass checkpoint=<path> (CLI: --checkpoint PATH)"
        ) from error


class TimmModel(OODModel):
    """Any timm classifier whose head is one ``nn.Linear``.

    prepool_max: per-channel spatial max when ``forward_features`` returns (N, C, H, W) maps,
    else None (token outputs; see :class:`TimmViT` for ViT's attention statistic).
    """

    def __init__(self, name: str, net: nn.Module) -> None:
        head = net.get_classifier()
        if not isinstance(head, nn.Linear):
            raise UnsupportedModelError(
                f"timm model {name!r} has a {type(head).__name__} classifier; OOD Lens needs a single "
                "nn.Linear head (logits = penultimate · Wᵀ + b)"
            )
        preprocessing = timm_preprocessing(net)
        class_names = _class_names(net, head.out_features)
        # An ImageNet head (its class names resolved) gets the ImageNet note; any other the generic one.
        note = imagenet_input_note(preprocessing, head.out_features) if class_names is not None else None
        super().__init__(name, head.out_features, head.in_features, preprocessing, class_names, note)
        self.net = net

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(penultimate (N, D), prepool_max (N, C) or None)."""
        features = self.net.forward_features(x)
        penultimate = self.net.forward_head(features, pre_logits=True)
        prepool_max = features.amax(dim=(2, 3)) if features.dim() == 4 else None
        return penultimate, prepool_max

    @property
    def head(self) -> nn.Linear:
        return self.net.get_classifier()


class TimmViT(TimmModel):
    """timm VisionTransformer with a CLS token; prepool_max = last block's CLS attention row (N, T).

    The row is softmax(q_cls · Kᵀ · head_dim^-½) averaged over heads, recomputed from the input of
    the last block's attention (captured by a forward hook) exactly as ``timm``'s ``Attention``
    lays out qkv: ``qkv(x).reshape(N, T, 3, heads, head_dim)``; q/k norms applied. T includes the
    CLS token itself (197 for 224x224 / patch 16).
    """

    def __init__(self, name: str, net: nn.Module) -> None:
        super().__init__(name, net)
        if getattr(net, "cls_token", None) is None or not hasattr(net, "blocks"):
            raise UnsupportedModelError(f"timm model {name!r} is not a VisionTransformer with a CLS token")

    def cls_attention(self, attn_input: Tensor) -> Tensor:
        """(N, T, C) normed tokens entering the last attention → (N, T) head-mean CLS attention row."""
        attn = self.net.blocks[-1].attn
        batch, tokens, _ = attn_input.shape
        qkv = attn.qkv(attn_input).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, T, head_dim)
        q, k = attn.q_norm(q), attn.k_norm(k)
        cls_query = q[:, :, :1] * attn.scale  # only the CLS row is needed: (N, heads, 1, head_dim)
        row = (cls_query @ k.transpose(-2, -1)).softmax(dim=-1)  # (N, heads, 1, T)
        return row.mean(dim=1).squeeze(1)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        captured: list[Tensor] = []
        hook = self.net.blocks[-1].attn.register_forward_pre_hook(
            lambda _module, args, *rest: captured.append(args[0]))
        try:
            features = self.net.forward_features(x)
        finally:
            hook.remove()
        penultimate = self.net.forward_head(features, pre_logits=True)
        return penultimate, self.cls_attention(captured[-1])


@register_model("vit-b16")
def vit_b16(pretrained: bool = True, checkpoint: str | None = None) -> TimmViT:
    """timm ``vit_base_patch16_224`` (ImageNet-1k fine-tuned); 768-d penultimate, (N, 197) prepool_max."""
    return TimmViT("vit-b16", create_timm_network("vit_base_patch16_224", pretrained, checkpoint))


@register_model("timm:")
def timm_model(timm_name: str, pretrained: bool = True, checkpoint: str | None = None) -> TimmModel:
    """Any timm model by name (``timm:resnet18``) whose classifier is a single ``nn.Linear``."""
    return TimmModel(f"timm:{timm_name}", create_timm_network(timm_name, pretrained, checkpoint))

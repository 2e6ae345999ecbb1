"""Models: ``create_model(name, **kw) -> OODModel`` (in eval mode), ``list_models()``.

The registry (``MODELS``, ``register_model`` and the per-model method defaults) lives in
:mod:`ood_core.registry`; it is re-exported here. Family modules register builders with
``@register_model("name")`` (a name ending in ``:`` is a prefix entry, e.g. ``timm:<name>``).
Builders take ``pretrained: bool = True`` and ``checkpoint: str | None = None`` (a local path
that overrides the default weights).
"""
from __future__ import annotations

from ood_core.models.base import ModelOutputs, OODModel, Preprocessing
from ood_core.registry import MODELS, method_defaults, register_method_defaults, register_model


def create_model(name: str, **kwargs) -> OODModel:
    """Build the registered model ``name`` in eval() mode.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the known names).
        OODLensError: weights are missing, unreadable or do not fit (see ``models.loading``).
    """
    return MODELS.create(name, **kwargs).eval()


def list_models() -> list[str]:
    """Registered model names; prefix entries appear as ``timm:<name>``."""
    return MODELS.names()


# Importing the package registers every family.
from ood_core.models import cifar_densenet, cifar_resnet, torchvision_models, timm_models  # noqa: E402,F401
from ood_core.models import demo_cnn  # noqa: E402,F401

__all__ = ["MODELS", "ModelOutputs", "OODModel", "Preprocessing", "create_model", "list_models",
           "method_defaults", "register_method_defaults", "register_model"]

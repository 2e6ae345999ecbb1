"""Model registry: ``create_model(name, **kw) -> OODModel`` (in eval mode), ``list_models()``.

Families register builders with ``@register_model("name")`` (a name ending in ``:`` is a
prefix entry, e.g. ``timm:<name>``). Builders take ``pretrained: bool = True`` and
``checkpoint: str | None = None`` (a local path that overrides the default weights).
"""
from __future__ import annotations

from typing import Any

from ood_core.models.base import ModelOutputs, OODModel, Preprocessing
from ood_core.registry import Registry

MODELS: Registry[OODModel] = Registry("model")
register_model = MODELS.register

# model name → method name → hyperparameter defaults that differ from the method's own
# (its declared defaults follow the CIFAR DenseNet papers; e.g. LINe's δ is absolute and
# depends on the model's activation scale). Applied by ``Benchmark.scorer``.
_METHOD_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {}


def register_method_defaults(model: str, method: str, **values: Any) -> None:
    """Declare ``model``-specific defaults for ``method`` (e.g. the published ImageNet settings)."""
    _METHOD_DEFAULTS.setdefault(model, {}).setdefault(method, {}).update(values)


def method_defaults(model: str, method: str) -> dict[str, Any]:
    """The defaults registered for (model, method); empty when the method's own apply."""
    return dict(_METHOD_DEFAULTS.get(model, {}).get(method, {}))


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


# Family modules register themselves on import (after register_model exists: they import it).
from ood_core.models import cifar_densenet, cifar_resnet, torchvision_models, timm_models  # noqa: E402,F401
from ood_core.models import demo_cnn  # noqa: E402,F401

__all__ = ["MODELS", "ModelOutputs", "OODModel", "Preprocessing", "create_model", "list_models",
           "method_defaults", "register_method_defaults", "register_model"]

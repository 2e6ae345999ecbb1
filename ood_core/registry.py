"""One tiny generic registry, in the style of timm's ``create_model``.

A registry maps a name to a builder. ``create(name, **kw)`` calls the builder;
an unknown name raises :class:`UnknownNameError` whose message lists the known
names, so a CLI can print it as a one-line error.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class OODLensError(Exception):
    """Base class for errors that the CLIs and the app show as one line (no traceback)."""


class UnknownNameError(OODLensError, KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'energy'? "`` for the closest known name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """The one-line error for an unknown ``kind`` name: a suggestion, then every known name."""
    known = list(known)
    return UnknownNameError(f"unknown {kind} {name!r}; {did_you_mean(name, known)}known {kind}s: {', '.join(known)}")


class Registry(Generic[T]):
    """A name → builder mapping.

    >>> models = Registry("model")
    >>> @models.register("tiny")
    ... def build_tiny(**kw): ...
    >>> models.names()
    ['tiny']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._prefix_builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``builder`` under ``name``.

        A name ending in ``:`` (e.g. ``"timm:"``) registers a *prefix* builder that
        receives the rest of the name as its first argument (``timm:resnet18`` →
        ``builder("resnet18", **kw)``).
        """

        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            table = self._prefix_builders if name.endswith(":") else self._builders
            if name in table:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            table[name] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        """Registered names in registration order; prefix entries are shown as ``prefix:<name>``."""
        return list(self._builders) + [f"{p}<name>" for p in self._prefix_builders]

    def __contains__(self, name: str) -> bool:
        return name in self._builders or any(name.startswith(p) for p in self._prefix_builders)

    def create(self, name: str, **kwargs) -> T:
        if name in self._builders:
            return self._builders[name](**kwargs)
        for prefix, builder in self._prefix_builders.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return builder(name[len(prefix):], **kwargs)
        raise unknown_name(self.kind, name, self.names())


# The registries live here, outside the packages that fill them, so a module can import its
# registry without importing (and so registering) its whole package first.
SCORERS: Registry = Registry("method")  # filled by the modules of ood_core.scorers


# Models: filled by the family modules of ood_core.models (importing that package imports them
# all); ``create_model`` and ``list_models`` live there. A builder takes ``pretrained: bool = True``
# and ``checkpoint: str | None = None`` and returns an ``OODModel``.
MODELS: Registry = Registry("model")
register_model = MODELS.register

# model name → method name → hyperparameter defaults that differ from the method's own (its
# declared defaults follow the CIFAR DenseNet papers; e.g. LINe's δ is absolute and depends on
# the model's activation scale). Applied by ``Benchmark.scorer``.
METHOD_DEFAULTS: dict[str, dict[str, dict[str, object]]] = {}


def register_method_defaults(model: str, method: str, **values: object) -> None:
    """Declare ``model``-specific defaults for ``method`` (e.g. the published ImageNet settings)."""
    METHOD_DEFAULTS.setdefault(model, {}).setdefault(method, {}).update(values)


def method_defaults(model: str, method: str) -> dict[str, object]:
    """The defaults registered for (model, method); empty when the method's own apply."""
    return dict(METHOD_DEFAULTS.get(model, {}).get(method, {}))


# Datasets: filled by the source modules of ood_core.datasets (importing that package imports
# them all); ``create_dataset``, ``dataset_info`` and ``dataset_fingerprint`` live there and read
# the two tables below. A builder takes ``(split, **kw)`` and returns an ``ImageDataset``.
DATASETS: Registry = Registry("dataset")
# name → its ``DatasetInfo`` (a prefix name → a callable mapping the rest of the name to one;
# None: the builder was registered without info). Filled at registration, so that
# ``dataset_info`` never builds a dataset.
DATASET_INFOS: dict[str, object] = {}
# name → ``split → the items identifying that split`` (built-in sets identified by a version).
DATASET_FINGERPRINTS: dict[str, Callable[[str], Iterable[object]]] = {}


def register_dataset(name: str, info: object = None,
                     fingerprint: Callable[[str], Iterable[object]] | None = None) -> Callable[[Callable], Callable]:
    """Decorator registering a dataset builder ``(split, **kw) -> ImageDataset`` under ``name``.

    Same as ``DATASETS.register(name)``, plus the optional ``info`` recorded for
    ``dataset_info`` (a ``DatasetInfo``, or for a prefix name ``"x:"`` a callable mapping the
    rest of the name to one). Without ``info``, ``dataset_info`` falls back to building the
    dataset once. ``fingerprint(split)``: the items that identify a split without building it
    (must equal what the built dataset's ``fingerprint_items`` gives).
    """
    register = DATASETS.register(name)

    def decorator(builder: Callable) -> Callable:
        register(builder)
        DATASET_INFOS[name] = info
        if fingerprint is not None:
            DATASET_FINGERPRINTS[name] = fingerprint
        return builder

    return decorator

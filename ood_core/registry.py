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

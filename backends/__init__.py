"""The backends: one module per framework, each with the same public names.

Each module (``reinmax.backends.torch``, ``.jax``, ``.tensorflow``, ``.numpy``) defines a
``BACKEND`` object (:class:`reinmax.api.Backend`) and binds the estimators to it. This package
only records which module serves which framework; importing it imports no framework, and a
backend module is imported the first time an array of its framework is seen.

A new framework is one module plus one :func:`register_backend` call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

__all__ = ["BACKENDS", "Registration", "register_backend", "registered"]


class Registration(NamedTuple):
    """A backend: its name, the framework module it needs and how to import its module."""

    name: str
    framework: str
    load: Callable[[], ModuleType]


def _torch() -> ModuleType:
    # Import statements rather than importlib: torch.compile can trace an import statement on
    # the first call in a fresh process, but never importlib.import_module.
    from reinmax.backends import torch as module

    return module


def _jax() -> ModuleType:
    from reinmax.backends import jax as module

    return module


def _tensorflow() -> ModuleType:
    from reinmax.backends import tensorflow as module

    return module


def _numpy() -> ModuleType:
    from reinmax.backends import numpy as module

    return module


_REGISTRY: dict[str, Registration] = {}


def register_backend(name: str, framework: str, load: Callable[[], ModuleType]) -> None:
    """Register a backend module for arrays of ``framework`` (a top-level module name).

    ``load()`` imports and returns the backend module, whose ``BACKEND`` says which arrays it
    owns. Backends are tried in registration order, so that NumPy, whose arrays other
    frameworks accept, comes last.
    """
    _REGISTRY[name] = Registration(name, framework, load)
    if "numpy" in _REGISTRY and name != "numpy":
        _REGISTRY["numpy"] = _REGISTRY.pop("numpy")


def registered() -> tuple[Registration, ...]:
    """Every registered backend, in the order dispatch tries them."""
    return tuple(_REGISTRY.values())


def imported() -> tuple[Registration, ...]:
    """The registered backends whose framework this process has already imported."""
    return tuple(r for r in _REGISTRY.values() if r.framework in sys.modules)


for _entry in (
    ("torch", "torch", _torch),
    ("jax", "jax", _jax),
    ("tensorflow", "tensorflow", _tensorflow),
    ("numpy", "numpy", _numpy),
):
    register_backend(*_entry)

BACKENDS = tuple(_REGISTRY)
"""The names of the built-in backends."""

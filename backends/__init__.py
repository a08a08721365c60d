"""The backends: one module per framework, each with the same public names.

Each module (``reinmax.backends.torch``, ``.jax``, ``.tensorflow``, ``.numpy``) defines

- ``BACKEND`` (:class:`reinmax.api.Backend`): what the estimators need of the framework, its
  array namespace, its RNG and its custom-gradient hook, and binds every estimator to it;
- ``DRIVER`` (:class:`Driver`): what the conformance suite, the tests and the tasks need to drive
  the framework from NumPy: arrays to and from NumPy, the gradient of a function, the compiled
  and vectorized transforms, and a scope in which float64 works.

This package records which module serves which framework. Importing it imports no framework; a
backend module is imported the first time an array of its framework is seen (or its driver is
asked for). Everything that is particular to a framework lives in its module and here, nowhere
else: a new framework is one module plus one :func:`register_backend` call.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, NamedTuple, Protocol

import numpy as np

__all__ = [
    "BACKENDS",
    "Driver",
    "DriverDefaults",
    "Registration",
    "available",
    "host_array",
    "imported",
    "load_driver",
    "load_module",
    "patched",
    "register_backend",
    "registered",
    "registered_names",
    "unregister_backend",
]

Array = Any
Call = Callable[[Array, Array, Array], tuple[Array, Array]]
Pullback = Callable[[Array, Array, Array, Array, Array], tuple[Array, Array, Array]]


class Driver(Protocol):
    """What drives a framework from NumPy: the conformance suite's, the tests' and the tasks'.

    Attributes:
        name: the backend's name.
        transforms: what :meth:`pullback` can do: ``"eager"``, and ``"compiled"`` and ``"vmap"``
            where the framework has them.
        preferred: the transform the tasks train with (what the quick conformance suite runs).
        native_autodiff: whether :meth:`vjp` differentiates any function of the framework (NumPy
            differentiates only this library's functions, through a tape).

    Examples:
        >>> import numpy as np
        >>> from reinmax.backends import load_driver
        >>> driver = load_driver("numpy")
        >>> driver.name, driver.to_numpy(driver.asarray([1, 2], "float32")).dtype
        ('numpy', dtype('float64'))
    """

    name: str
    transforms: tuple[str, ...]
    preferred: str
    native_autodiff: bool

    def asarray(self, x: Any, dtype: str) -> Array:
        """The host array ``x`` as an array of this framework of the dtype named ``dtype``
        (``"float64"``, ``"float32"``, ``"float16"``, ``"bfloat16"``, ``"int32"``, ``"bool"``)."""

    def to_numpy(self, x: Array) -> np.ndarray:
        """``x`` as a float64 NumPy array."""

    def vjp(self, fn: Callable, x: Array, cotangents: tuple) -> tuple[tuple, Array]:
        """``(outputs, grad)``: ``fn(x)``'s outputs (a tuple) and ``Σ_k ⟨cotangents_k, ∂out_k/∂x⟩``,
        eagerly, with the framework's own autodiff."""

    def grad(self, fn: Callable[[Array], Array], x: Array) -> Array:
        """The gradient at ``x`` of ``fn``, which returns a scalar."""

    def pullback(self, call: Call, transform: str, in_axes: tuple, dtype: str) -> Pullback:
        """``f(x, noise, tau, g, g_p) -> (first, soft, grad)`` for ``call(x, noise, tau) ->
        (first, soft)`` under ``transform``: eager, compiled by the framework's compiler, or
        vectorized over the leading axis with ``in_axes`` for ``(x, noise, tau, g, g_p)`` (None
        for an argument that is not mapped). ``dtype`` is the compute dtype, which some
        compilers are chosen by."""

    def patch_sampler(self, path: str, noise: np.ndarray) -> contextlib.AbstractContextManager:
        """A scope in which the framework's sampler ``path`` (``"torch.multinomial"``...) draws
        from ``noise`` (uniforms in an estimator's layout) instead of its generator: a categorical
        sampler by inverse CDF from one uniform per row, a uniform sampler by returning them."""

    def sampler_key(self) -> Any:
        """What a port that samples by itself takes as its generator (JAX: a key; else None)."""

    def float64(self) -> contextlib.AbstractContextManager:
        """A scope in which float64 arrays and computations work, restored on exit."""

    def enable_float64(self) -> None:
        """Turn float64 on for the whole process: for test and task setup, never a library."""


class DriverDefaults:
    """The :class:`Driver` methods of a framework whose ports take no generator and in which
    float64 always works (NumPy, PyTorch, TensorFlow): a driver inherits them.

    Examples:
        >>> from reinmax.backends import DriverDefaults, load_driver
        >>> isinstance(load_driver("numpy"), DriverDefaults)
        True
    """

    def sampler_key(self) -> Any:
        return None

    def float64(self) -> contextlib.AbstractContextManager:
        return nothing()

    def enable_float64(self) -> None:
        return None


class Registration(NamedTuple):
    """A backend: its name, the framework module it needs and how to import its module.

    ``prepare`` runs before the backend module is first imported (TensorFlow's: import torch
    first when it is installed, since importing the two the other way round crashes some builds).

    Examples:
        >>> from reinmax.backends import registered
        >>> [(r.name, r.framework) for r in registered() if r.name == "tensorflow"]
        [('tensorflow', 'tensorflow')]
    """

    name: str
    framework: str
    load: Callable[[], ModuleType]
    prepare: Callable[[], None] | None = None


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


def _torch_before_tensorflow() -> None:
    # Importing torch after tensorflow in one process crashes some builds.
    with contextlib.suppress(ImportError):
        importlib.import_module("torch")


_REGISTRY: dict[str, Registration] = {}


def register_backend(
    name: str,
    framework: str,
    load: Callable[[], ModuleType],
    prepare: Callable[[], None] | None = None,
) -> None:
    """Register a backend module for arrays of ``framework`` (a top-level module name).

    ``load()`` imports and returns the backend module, whose ``BACKEND`` says which arrays it
    owns and whose ``DRIVER`` drives it. Backends are tried in registration order, so that NumPy,
    whose arrays other frameworks accept, comes last.

    Examples:
        >>> from reinmax.backends import register_backend, registered_names, unregister_backend
        >>> register_backend("numpy_again", "numpy", lambda: __import__("reinmax.backends.numpy"))
        >>> "numpy_again" in registered_names()
        True
        >>> unregister_backend("numpy_again")
    """
    _REGISTRY[name] = Registration(name, framework, load, prepare)
    if "numpy" in _REGISTRY and name != "numpy":
        _REGISTRY["numpy"] = _REGISTRY.pop("numpy")


def registered_names() -> tuple[str, ...]:
    """The names of every registered backend.

    Examples:
        >>> from reinmax.backends import registered_names
        >>> registered_names()[-1]  # NumPy last: other frameworks accept its arrays
        'numpy'
    """
    return tuple(_REGISTRY)


def registered() -> tuple[Registration, ...]:
    """Every registered backend, in the order dispatch tries them.

    Examples:
        >>> from reinmax.backends import registered
        >>> "torch" in [r.name for r in registered()]
        True
    """
    return tuple(_REGISTRY.values())


def imported() -> tuple[Registration, ...]:
    """The registered backends whose framework this process has already imported.

    Examples:
        >>> import numpy
        >>> from reinmax.backends import imported
        >>> "numpy" in [r.name for r in imported()]
        True
    """
    return tuple(r for r in _REGISTRY.values() if r.framework in sys.modules)


def unregister_backend(name: str) -> None:
    """Remove a backend registered with :func:`register_backend`.

    Examples:
        >>> from reinmax.backends import register_backend, registered_names, unregister_backend
        >>> _ = register_backend("numpy_copy", "numpy", lambda: None)
        >>> unregister_backend("numpy_copy")
        >>> "numpy_copy" in registered_names()
        False
    """
    _REGISTRY.pop(name)


def load_module(name: str) -> ModuleType:
    """The module of backend ``name``, its framework imported (``ImportError`` if it is not
    installed; ``ValueError`` for an unknown name).

    Examples:
        >>> from reinmax.backends import load_module
        >>> load_module("numpy").__name__
        'reinmax.backends.numpy'
    """
    registration = _REGISTRY.get(name)
    if registration is None:
        raise ValueError(f"backend must be one of {', '.join(_REGISTRY)}, got {name!r}")
    if registration.framework not in sys.modules and registration.prepare is not None:
        registration.prepare()
    return registration.load()


def load_driver(name: str) -> Driver:
    """The driver of backend ``name`` (:func:`load_module`'s ``DRIVER``).

    Examples:
        >>> from reinmax.backends import load_driver
        >>> load_driver("numpy").transforms
        ('eager',)
    """
    return load_module(name).DRIVER


def available() -> list[str]:
    """The registered backends whose framework is installed, in registration order (NumPy
    first, as the reference of comparisons), each imported and ready.

    Examples:
        >>> from reinmax.backends import available
        >>> available()[0]
        'numpy'
    """
    names = []
    for name in ("numpy", *(n for n in _REGISTRY if n != "numpy")):
        try:
            load_driver(name)
        except ImportError:
            continue
        names.append(name)
    return names


def host_array(x: Any, dtype: str) -> np.ndarray:
    """``x`` as a NumPy array ready to become a framework array of the dtype named ``dtype``: in
    float64 when either is floating, so that every conversion rounds once, from float64.

    Examples:
        >>> from reinmax.backends import host_array
        >>> host_array([1, 2], "float32").dtype
        dtype('float64')
    """
    array = np.array(x)
    if array.dtype.kind == "f" or dtype.startswith(("float", "bfloat")):
        array = array.astype(np.float64)
    return array


@contextlib.contextmanager
def patched(targets: dict[str, Callable], path: str) -> Iterator[None]:
    """:meth:`Driver.patch_sampler`'s scope: ``path`` replaced by ``targets[path]`` meanwhile.

    Examples:
        >>> import numpy as np
        >>> from reinmax.backends import patched
        >>> with patched({"numpy.random.random": lambda *a, **k: 0.5}, "numpy.random.random"):
        ...     np.random.random()
        0.5
    """
    if path not in targets:
        raise ValueError(f"sampler must be one of {', '.join(sorted(targets))}, got {path!r}")
    module_name, _, attribute = path.rpartition(".")
    module = importlib.import_module(module_name)
    original = getattr(module, attribute)
    setattr(module, attribute, targets[path])
    try:
        yield
    finally:
        setattr(module, attribute, original)


def uniforms_of_shape(noise: Any, shape: Sequence[int]) -> Any:
    """``noise`` reshaped for a patched uniform sampler, refusing another number of values."""
    if int(np.prod(np.shape(noise))) != int(np.prod(shape)):
        raise ValueError(
            f"the port drew uniforms of shape {tuple(shape)}, the reference's noise has shape "
            f"{tuple(np.shape(noise))}"
        )
    return noise


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    """A scope that changes nothing: :meth:`Driver.float64` where float64 always works."""
    yield


for _entry in (
    ("torch", "torch", _torch),
    ("jax", "jax", _jax),
    ("tensorflow", "tensorflow", _tensorflow, _torch_before_tensorflow),
    ("numpy", "numpy", _numpy),
):
    register_backend(*_entry)

BACKENDS = tuple(_REGISTRY)
"""The names of the built-in backends."""

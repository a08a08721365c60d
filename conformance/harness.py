"""Run any estimator in any backend on host-drawn NumPy inputs, and get NumPy results back.

API (stable; used by the conformance checks and the tests)::

    BACKENDS                        the registered backends ("torch", "jax", "tensorflow", "numpy")
    TRANSFORMS                      ("eager", "compiled", "vmap")
    Result(hard, soft, grad)        the oracle's NamedTuple (float64 NumPy arrays, user layout)
    available_backends() -> list[str]
    driver(backend) -> reinmax.backends.Driver
    run(backend, estimator, logits, noise, tau, g, g_p, *, dtype, transform="eager", axis=-1,
        options=None) -> Result
    row_scale(g, g_p, tau, *, axis=-1) -> np.ndarray
    scaled_error(a, b, scale, dtype) -> float
    to_backend(backend, x, dtype) -> a framework array;  to_numpy(backend, x) -> float64 NumPy

``estimator`` is a registered name (called through the backend's public function, with
``options`` such as ``k``, ``gap``, ``hard``) or any :class:`reinmax.core.Estimator` (called
through the backend's ``estimate``, so a researcher's own estimator runs through every backend
the same way).

Everything particular to a framework is its backend's :class:`~reinmax.backends.Driver`: the
conversions, the gradient, and the transforms: ``"eager"``; ``"compiled"``
(``torch.compile(fullgraph=True)``, ``jax.jit``, ``tf.function(jit_compile=True)``); ``"vmap"``
(``torch.func.vmap``, ``jax.vmap``, ``tf.vectorized_map``) over the leading axis of ``logits``
(which must not be the category axis). NumPy supports only ``"eager"``. Under ``"compiled"`` and
``"vmap"`` the temperature travels as an array (a 0-d one for a number) so that a new value does
not recompile. Compiled functions are cached per (backend, estimator, options, axis, transform,
compute dtype); the framework then retraces only for new shapes or dtypes. Each run happens in
the driver's float64 scope (JAX's x64 for that run only), and nothing global is left changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from reinmax import backends
from reinmax.conformance.oracle import Result, numpy_dtype
from reinmax.core import Estimator

__all__ = [
    "BACKENDS",
    "TRANSFORMS",
    "Result",
    "available_backends",
    "row_scale",
    "run",
    "scaled_error",
    "to_backend",
]

BACKENDS = tuple(backends.registered_names())
TRANSFORMS = ("eager", "compiled", "vmap")
DTYPES = ("float64", "float32", "float16", "bfloat16")

_CACHE: dict[tuple, Callable] = {}
_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def available_backends() -> list[str]:
    """The installed backends, each imported and ready (NumPy first, the reference)."""
    return backends.available()


def driver(backend: str) -> backends.Driver:
    """The :class:`~reinmax.backends.Driver` of ``backend``, its framework imported."""
    return backends.load_driver(backend)


def row_scale(g: Any, g_p: Any, tau: Any = 1.0, *, axis: int = -1) -> np.ndarray:
    """The size of a row's gradient, against which rounding errors are measured.

    ``(max_j |g_j| + max_j |g_p,j|) · max(1, 1/τ)`` per row, broadcastable against the logits.
    Why: every rule is a sum of a few ``c · J(q) v`` terms with ``|J(q)v|_j ≤ 2 max|v|`` (as
    ``q`` is a probability vector) and ``c`` at most 2 (ReinMax) or ``1/τ`` (the tempered
    rules), so this bounds the gradient up to a small constant; a float computation of it is
    then off by a few ``eps`` of this size. Masked entries of ``g`` count too (harmless).
    """
    g = np.abs(np.asarray(g, dtype=np.float64))
    g_p = np.abs(np.asarray(g_p, dtype=np.float64))
    g, g_p = np.broadcast_arrays(g, g_p)
    size = np.max(g, axis=axis, keepdims=True) + np.max(g_p, axis=axis, keepdims=True)
    tau = np.asarray(tau, dtype=np.float64)
    if tau.ndim:
        batch = size.shape[: axis % g.ndim] + size.shape[axis % g.ndim + 1 :]
        tau = np.expand_dims(np.broadcast_to(tau, batch), axis % g.ndim)
    return size * np.maximum(1.0, 1.0 / tau)


def scaled_error(a: Any, b: Any, scale: Any, dtype: Any) -> float:
    """``max |a − b| / (eps(dtype) · scale)``: the error in units of the dtype's rounding.

    ``scale`` broadcasts against ``a`` (e.g. :func:`row_scale`); a zero scale counts as 1.
    Positions where both are NaN (or the same infinity) agree; NaN against a number is ``inf``.
    An empty array has error 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    scale = np.asarray(scale, dtype=np.float64)
    scale = np.where(scale > 0, scale, 1.0)
    eps = _EPS[str(numpy_dtype(dtype))]
    same = (np.isnan(a) & np.isnan(b)) | (a == b)
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(np.max(diff / (eps * scale)))


# ---------------------------------------------------------------------------------------------
# The function each backend runs: f(logits, noise, tau, g, g_p) -> (first, soft, grad)
# ---------------------------------------------------------------------------------------------


def _public_call(module: Any, estimator: str | Estimator, options: dict, axis: int) -> Callable:
    """``call(x, noise, tau) -> (first, soft)`` through the backend's public API."""
    if isinstance(estimator, Estimator):
        return lambda x, noise, tau: module.estimate(estimator, x, tau, axis=axis, noise=noise)
    fn = getattr(module, estimator)
    return lambda x, noise, tau: fn(x, tau, axis=axis, noise=noise, **options)


def _build(
    backend: str,
    estimator: Any,
    options: dict,
    axis: int,
    transform: str,
    in_axes: tuple,
    dtype: str,
) -> Callable:
    """The cached ``f(x, noise, tau, g, g_p) -> (first, soft, grad)`` on framework arrays."""
    key = (backend, estimator, tuple(sorted(options.items())), axis, transform, in_axes, dtype)
    f = _CACHE.get(key)
    if f is None:
        module = backends.load_module(backend)
        # Inside a vmapped function each row has lost the leading axis.
        inner_axis = axis - 1 if transform == "vmap" else axis
        call = _public_call(module, estimator, options, inner_axis)
        f = _CACHE[key] = driver(backend).pullback(call, transform, in_axes, dtype)
    return f


def to_backend(backend: str, x: Any, dtype: str) -> Any:
    """The host array ``x`` as a ``backend`` array of the dtype named ``dtype``."""
    return driver(backend).asarray(x, dtype)


def to_numpy(backend: str, x: Any) -> np.ndarray:
    """A ``backend`` array as float64 NumPy."""
    return driver(backend).to_numpy(x)


def run(
    backend: str,
    estimator: str | Estimator,
    logits: Any,
    noise: Any,
    tau: Any = 1.0,
    g: Any = None,
    g_p: Any = None,
    *,
    dtype: str = "float64",
    transform: str = "eager",
    axis: int = -1,
    options: dict | None = None,
) -> Result:
    """Run ``estimator`` in ``backend`` and return its ``(hard, soft, grad)`` as float64 NumPy.

    ``logits``, ``noise`` (user layout, docs/SPEC.md's table), ``tau`` (a number or an array
    broadcastable to the batch shape), ``g`` and ``g_p`` (cotangents of the two outputs,
    ``None`` for zeros) are host arrays; logits and cotangents are cast to ``dtype``, the noise
    and an array ``tau`` to the compute dtype (float32 for 16-bit dtypes). ``grad`` is the
    logits' cotangent, ``rule(g) + J(π) g_p``.
    """
    options = _checked(backend, estimator, transform, dtype, options)
    logits = np.asarray(logits)
    ndim = logits.ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for logits with {ndim} dimensions")
    axis %= ndim
    noise = np.asarray(noise, dtype=np.float64)
    g = np.zeros(logits.shape) if g is None else np.broadcast_to(g, logits.shape)
    g_p = np.zeros(logits.shape) if g_p is None else np.broadcast_to(g_p, logits.shape)
    compute = "float32" if dtype in ("float16", "bfloat16") else dtype
    in_axes, tau = _vmap_layout(transform, logits, axis, noise, tau)
    f = _build(backend, estimator, options, axis, transform, in_axes, compute)
    drive = driver(backend)
    with drive.float64():
        number = isinstance(tau, (int, float)) and not isinstance(tau, bool)
        # A number stays a number eagerly (what users pass); compiled and vmapped functions
        # take it as an array, so that a new value does not recompile.
        t = tau if number and transform == "eager" else drive.asarray(tau, compute)
        x, u = drive.asarray(logits, dtype), drive.asarray(noise, compute)
        first, soft, grad = f(x, u, t, drive.asarray(g, dtype), drive.asarray(g_p, dtype))
        return Result(drive.to_numpy(first), drive.to_numpy(soft), drive.to_numpy(grad))


def _checked(
    backend: str, estimator: Any, transform: str, dtype: str, options: dict | None
) -> dict:
    """The options of a run, once its backend, estimator, transform and dtype are checked."""
    if backend not in backends.registered_names():
        names = ", ".join(backends.registered_names())
        raise ValueError(f"backend must be one of {names}, got {backend!r}")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    supported = driver(backend).transforms
    if transform not in supported:
        raise ValueError(f"the {backend} backend supports only {supported}, got {transform!r}")
    if not isinstance(estimator, (str, Estimator)):
        raise TypeError(f"estimator must be a name or a reinmax.core.Estimator, got {estimator!r}")
    options = dict(options or {})
    if isinstance(estimator, Estimator) and options:
        raise ValueError("options apply to named estimators only; build the Estimator with them")
    return options


def _vmap_layout(
    transform: str, logits: np.ndarray, axis: int, noise: np.ndarray, tau: Any
) -> tuple[tuple, Any]:
    """``(in_axes, tau)`` for :meth:`Driver.pullback`: under vmap the leading axis of ``logits``
    is mapped, with the noise's row axis (1 behind Gumbel-Rao's draws) and a per-row ``τ``."""
    if transform != "vmap":
        return (), tau
    if logits.ndim < 2 or axis == 0:
        raise ValueError("vmap maps the leading axis, which must not be the category axis")
    tau = np.asarray(tau, dtype=np.float64)
    tau_axis = None if tau.ndim == 0 else 0
    if tau_axis == 0:
        tau = np.broadcast_to(tau, logits.shape[:axis] + logits.shape[axis + 1 :])
    noise_axis = 1 if noise.ndim == logits.ndim + 1 else 0
    return (0, noise_axis, tau_axis, 0, 0), tau

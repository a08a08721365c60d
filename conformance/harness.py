"""Run any estimator in any backend on host-drawn NumPy inputs, and get NumPy results back.

API (stable; used by the conformance checks and the tests)::

    BACKENDS                        ("numpy", "torch", "jax", "tensorflow")
    TRANSFORMS                      ("eager", "compiled", "vmap")
    Result(hard, soft, grad)        the oracle's NamedTuple (float64 NumPy arrays, user layout)
    available_backends() -> list[str]
    run(backend, estimator, logits, noise, tau, g, g_p, *, dtype, transform="eager", axis=-1,
        options=None) -> Result
    row_scale(g, g_p, tau, *, axis=-1) -> np.ndarray
    scaled_error(a, b, scale, dtype) -> float
    to_backend(backend, x, dtype) -> a framework array of a float dtype

``estimator`` is a docs/SPEC.md name (called through the backend's public function, with ``options``
such as ``k``, ``gap``, ``hard``) or any :class:`reinmax.core.Estimator` (called through the
backend's ``estimate``, so a researcher's own estimator runs through every backend the same way).

Transforms: ``"eager"``; ``"compiled"``: ``torch.compile(fullgraph=True)``, ``jax.jit``,
``tf.function(jit_compile=True)``; ``"vmap"``: ``torch.func.vmap``, ``jax.vmap``,
``tf.vectorized_map`` over the leading axis of ``logits`` (which must not be the category axis).
NumPy supports only ``"eager"``. Under ``"compiled"`` and ``"vmap"`` the temperature travels as
an array (a 0-d one for a number) so that a new value does not recompile. Compiled functions are
cached per (backend, estimator, options, axis, transform, torch compiler backend); the framework
then retraces only for new shapes or dtypes. ``torch.compile`` uses the backend named in
``TORCH_COMPILER`` per compute dtype (inductor for float32, ``aot_eager`` for float64), and the
first torch compile raises Dynamo's per-code recompile limit to 256 for the whole process.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

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

BACKENDS = ("numpy", "torch", "jax", "tensorflow")
TRANSFORMS = ("eager", "compiled", "vmap")
DTYPES = ("float64", "float32", "float16", "bfloat16")

# torch.compile backend per dtype: inductor generates code and takes seconds per graph, so by
# default it is used for float32 (the dtype people train in); float64 goes through Dynamo and
# AOTAutograd (fullgraph tracing of the custom Function forward and backward) without codegen.
TORCH_COMPILER = {"float32": "inductor", "float64": "aot_eager"}

_CACHE: dict[tuple, Callable] = {}
_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def available_backends() -> list[str]:
    """The installed backends, imported in a safe order (torch before tensorflow, JAX x64)."""
    found = ["numpy"]
    for name in ("torch", "jax", "tensorflow"):
        try:
            _framework(name)
        except ImportError:
            continue
        found.append(name)
    return found


def _framework(name: str) -> Any:
    if name == "tensorflow":
        with contextlib.suppress(ImportError):
            importlib.import_module("torch")
    module = importlib.import_module(name)
    if name == "jax":
        module.config.update("jax_enable_x64", True)
    importlib.import_module(f"reinmax.backends.{name}")
    return module


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


def _public_call(module: Any, estimator: str | Estimator, options: dict) -> Callable:
    """``call(logits, tau, axis, noise) -> (first, soft)`` through the backend's public API."""
    if isinstance(estimator, Estimator):
        return lambda x, tau, axis, noise: module.estimate(
            estimator, x, tau, axis=axis, noise=noise
        )
    fn = getattr(module, estimator)
    return lambda x, tau, axis, noise: fn(x, tau, axis=axis, noise=noise, **options)


def _torch_fn(call: Callable, axis: int) -> Callable:
    import torch

    def f(x, noise, tau, g, g_p):
        x = x.detach().requires_grad_(True)
        first, soft = call(x, tau, axis, noise)
        (grad,) = torch.autograd.grad((first, soft), (x,), (g, g_p))
        return first.detach(), soft.detach(), grad

    return f


def _torch_vmapped(call: Callable, axis: int, tau_dim: int | None, noise_dim: int) -> Callable:
    import torch

    def row(x, noise, tau, g, g_p):
        (first, soft), pullback = torch.func.vjp(lambda y: call(y, tau, axis, noise), x)
        (grad,) = pullback((g, g_p))
        return first, soft, grad

    return torch.func.vmap(row, in_dims=(0, noise_dim, tau_dim, 0, 0))


def _torch_compiled(call: Callable, axis: int, compiler: str) -> Callable:
    import torch

    # Every cached function shares one code object; each (estimator, dtype, shape) is a guarded
    # recompile of it, so raise Dynamo's per-code recompile limit above what a suite uses.
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name) and getattr(config, name) < 256:
            setattr(config, name, 256)
    forward = torch.compile(
        lambda x, noise, tau: call(x, tau, axis, noise), fullgraph=True, backend=compiler
    )

    def f(x, noise, tau, g, g_p):
        x = x.detach().requires_grad_(True)
        first, soft = forward(x, noise, tau)
        (grad,) = torch.autograd.grad((first, soft), (x,), (g, g_p))
        return first.detach(), soft.detach(), grad

    return f


def _jax_fn(call: Callable, axis: int) -> Callable:
    import jax

    def f(x, noise, tau, g, g_p):
        (first, soft), pullback = jax.vjp(lambda y: call(y, tau, axis, noise), x)
        (grad,) = pullback((g, g_p))
        return first, soft, grad

    return f


def _tf_fn(call: Callable, axis: int) -> Callable:
    import tensorflow as tf

    def f(x, noise, tau, g, g_p):
        with tf.GradientTape() as tape:
            tape.watch(x)
            first, soft = call(x, tau, axis, noise)
        grad = tape.gradient([first, soft], x, output_gradients=[g, g_p])
        return first, soft, grad

    return f


def _tf_vmapped(call: Callable, axis: int, tau_mapped: bool, noise_dim: int) -> Callable:
    import tensorflow as tf

    row = _tf_fn(call, axis)

    def f(x, noise, tau, g, g_p):
        # tf.vectorized_map maps axis 0 of every input: bring Gumbel-Rao's row axis to the front.
        if noise_dim:
            noise = tf.experimental.numpy.moveaxis(noise, noise_dim, 0)

        def one(args):
            xi, ni, ti, gi, gpi = args
            if noise_dim:
                ni = tf.experimental.numpy.moveaxis(ni, 0, noise_dim - 1)
            return row(xi, ni, ti if tau_mapped else tau, gi, gpi)

        taus = tau if tau_mapped else tf.zeros(tf.shape(x)[:1], dtype=tau.dtype)
        return tf.vectorized_map(one, (x, noise, taus, g, g_p))

    return f


def _build(
    backend: str,
    estimator: Any,
    options: dict,
    axis: int,
    transform: str,
    vmap_dims: tuple,
    compiler: str | None,
) -> Callable:
    """The cached ``f(x, noise, tau, g, g_p) -> (first, soft, grad)`` on framework arrays."""
    key = (backend, estimator, tuple(sorted(options.items())), axis, transform, vmap_dims, compiler)
    f = _CACHE.get(key)
    if f is not None:
        return f
    framework = _framework(backend) if backend != "numpy" else None
    module = importlib.import_module(f"reinmax.backends.{backend}")
    call = _public_call(module, estimator, options)
    # Inside a vmapped function each row has lost the leading axis.
    inner_axis = axis - 1 if transform == "vmap" else axis
    if backend == "torch":
        if transform == "eager":
            f = _torch_fn(call, inner_axis)
        elif transform == "compiled":
            f = _torch_compiled(call, inner_axis, compiler)
        else:
            f = _torch_vmapped(call, inner_axis, *vmap_dims)
    elif backend == "jax":
        f = _jax_fn(call, inner_axis)
        if transform == "compiled":
            f = framework.jit(f)
        elif transform == "vmap":
            tau_dim, noise_dim = vmap_dims
            f = framework.vmap(f, in_axes=(0, noise_dim, tau_dim, 0, 0))
    elif backend == "tensorflow":
        if transform == "vmap":
            tau_dim, noise_dim = vmap_dims
            f = framework.function(_tf_vmapped(call, inner_axis, tau_dim == 0, noise_dim))
        else:
            f = _tf_fn(call, inner_axis)
            if transform == "compiled":
                f = framework.function(f, jit_compile=True)
    else:
        f = _numpy_fn(module, call, inner_axis)
    _CACHE[key] = f
    return f


def _numpy_fn(module: Any, call: Callable, axis: int) -> Callable:
    def f(x, noise, tau, g, g_p):
        (first, soft), pullback = module.vjp(lambda y: call(y, tau, axis, noise), x)
        return first, soft, pullback(g, g_p)

    return f


# ---------------------------------------------------------------------------------------------
# Host <-> framework arrays
# ---------------------------------------------------------------------------------------------


def to_backend(backend: str, x: Any, dtype: str) -> Any:
    """The host array ``x`` as a ``backend`` array of the floating dtype ``dtype``."""
    if backend == "numpy":
        return np.asarray(x).astype(numpy_dtype(dtype))
    if backend == "torch":
        import torch

        # np.array copies: writable, and a 0-d input stays 0-d (ascontiguousarray would not).
        return torch.from_numpy(np.array(x, dtype=np.float64)).to(getattr(torch, dtype))
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(np.asarray(x, dtype=np.float64), dtype=getattr(jnp, dtype))
    import tensorflow as tf

    return tf.cast(tf.constant(np.asarray(x, dtype=np.float64)), getattr(tf, dtype))


def _to_numpy(x: Any) -> np.ndarray:
    if "torch" in sys.modules:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().to(torch.float64).numpy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x).astype(np.float64)


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
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if backend == "numpy" and transform != "eager":
        raise ValueError(f"the numpy backend supports only transform='eager', got {transform!r}")
    if not isinstance(estimator, (str, Estimator)):
        raise TypeError(f"estimator must be a name or a reinmax.core.Estimator, got {estimator!r}")
    options = dict(options or {})
    if isinstance(estimator, Estimator) and options:
        raise ValueError("options apply to named estimators only; build the Estimator with them")
    logits = np.asarray(logits)
    ndim = logits.ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for logits with {ndim} dimensions")
    axis %= ndim
    noise = np.asarray(noise, dtype=np.float64)
    g = np.zeros(logits.shape) if g is None else np.broadcast_to(g, logits.shape)
    g_p = np.zeros(logits.shape) if g_p is None else np.broadcast_to(g_p, logits.shape)
    compute = "float32" if dtype in ("float16", "bfloat16") else dtype
    batch = logits.shape[:axis] + logits.shape[axis + 1 :]

    tau_is_number = isinstance(tau, (int, float)) and not isinstance(tau, bool)
    vmap_dims: tuple = ()
    if transform == "vmap":
        if ndim < 2 or axis == 0:
            raise ValueError("vmap maps the leading axis, which must not be the category axis")
        tau_host = np.asarray(tau, dtype=np.float64)
        tau_dim = None if tau_host.ndim == 0 else 0
        if tau_dim == 0:
            tau_host = np.broadcast_to(tau_host, batch)
        noise_dim = 1 if noise.ndim == ndim + 1 else 0
        vmap_dims = (tau_dim, noise_dim)
    compiler = TORCH_COMPILER.get(compute, "inductor") if backend == "torch" else None
    if transform != "compiled":
        compiler = None
    f = _build(backend, estimator, options, axis, transform, vmap_dims, compiler)

    x = to_backend(backend, logits, dtype)
    u = to_backend(backend, noise, compute)
    if transform == "vmap":
        t = to_backend(backend, tau_host, compute)
    elif tau_is_number and transform == "eager":
        t = tau
    else:
        t = to_backend(backend, np.asarray(tau, dtype=np.float64), compute)
    cot = to_backend(backend, g, dtype), to_backend(backend, g_p, dtype)
    first, soft, grad = f(x, u, t, *cot)
    return Result(_to_numpy(first), _to_numpy(soft), _to_numpy(grad))

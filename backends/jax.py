"""JAX backend: each estimator's backward is registered with ``jax.custom_vjp``.

Works under ``jax.jit``, ``jax.vmap`` (also over PRNG keys) and ``jax.grad``. ``custom_vjp`` has
no forward mode: ``jax.jvp`` and ``jax.jacfwd`` raise JAX's own error, and higher-order
derivatives of the backward rule are not defined. Enable ``jax_enable_x64`` for float64.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from reinmax.api import array_api_float_bits, bind_module
from reinmax.backends import host_array, patched, uniforms_of_shape
from reinmax.core import inverse_cdf_index


class JaxBackend:
    name = "jax"
    keyword_aliases: ClassVar[dict[str, str]] = {}
    xp = jnp

    def owns(self, x: object) -> bool:
        return isinstance(x, jax.Array)

    def device(self, x: jax.Array) -> Any:
        return None

    def shape(self, x: Any) -> tuple:
        return tuple(x.shape)

    def float_bits(self, dtype: Any) -> int | None:
        return array_api_float_bits(jnp, dtype)

    def host_values(self, x: jax.Array) -> Any:
        # A traced value (jit, vmap, grad) has none; a concrete one on an accelerator would
        # sync. Read on the host with NumPy: a jnp operation here would be staged under jit.
        if isinstance(x, jax.core.Tracer) or any(d.platform != "cpu" for d in x.devices()):
            return None
        return np.asarray(x, dtype=np.float64)

    def uniform(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: jax.Array) -> jax.Array:
        if rng is None:
            raise ValueError(
                "rng is required in JAX: pass a PRNG key (jax.random.key(seed)), an int seed or a "
                "reinmax.Seed (portable noise), or explicit noise"
            )
        return jax.random.uniform(rng, shape, dtype=dtype)

    def custom_vjp(self, forward: Callable, backward: Callable, num_outputs: int) -> Callable:
        @jax.custom_vjp
        def op(x: jax.Array, a: jax.Array, b: jax.Array) -> tuple:
            return forward(x, a, b)[0]

        def op_forward(x: jax.Array, a: jax.Array, b: jax.Array) -> tuple:
            outputs, residuals = forward(x, a, b)
            return outputs, (a, b, outputs, residuals)

        def op_backward(saved: tuple, cotangents: tuple) -> tuple:
            a, b, outputs, residuals = saved
            return backward((a, b), outputs, residuals, cotangents), None, None

        op.defvjp(op_forward, op_backward)
        # One XLA computation per shape and dtype instead of one dispatch per primitive: eager
        # calls run compiled, and under the caller's own jit this inner jit is inlined.
        return jax.jit(op)


class JaxDriver:
    """Drives JAX from NumPy (:class:`reinmax.backends.Driver`).

    JAX computes in float32 unless ``jax_enable_x64`` is on: :meth:`float64` turns it on for a
    scope (the conformance suite runs every JAX check inside one) and restores it afterwards.
    """

    name = "jax"
    transforms = ("eager", "compiled", "vmap")
    preferred = "compiled"
    native_autodiff = True

    def asarray(self, x: Any, dtype: str) -> jax.Array:
        return jnp.asarray(host_array(x, dtype), dtype=getattr(jnp, dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x).astype(np.float64)

    def vjp(self, fn: Callable, x: jax.Array, cotangents: tuple) -> tuple[tuple, jax.Array]:
        def as_tuple(y: jax.Array) -> tuple:
            out = fn(y)
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

        outputs, pullback = jax.vjp(as_tuple, x)
        (grad,) = pullback(tuple(cotangents))
        return outputs, grad

    def grad(self, fn: Callable, x: jax.Array) -> jax.Array:
        return jax.grad(fn)(x)

    def pullback(self, call: Callable, transform: str, in_axes: tuple, dtype: str) -> Callable:
        def f(x, noise, tau, g, g_p):
            (first, soft), grad = self.vjp(lambda y: call(y, noise, tau), x, (g, g_p))
            return first, soft, grad

        if transform == "compiled":
            return jax.jit(f)
        if transform == "vmap":
            return jax.vmap(f, in_axes=in_axes)
        return f

    def patch_sampler(self, path: str, noise: np.ndarray) -> contextlib.AbstractContextManager:
        def categorical(key: Any, logits: jax.Array, axis: int = -1, shape: Any = None, **kw):
            logits = jnp.moveaxis(logits, axis, -1)
            u = jnp.asarray(uniforms_of_shape(noise, logits.shape[:-1]), dtype=logits.dtype)
            probs = jax.nn.softmax(logits, axis=-1)
            return inverse_cdf_index(probs, u.reshape(logits.shape[:-1]), xp=jnp)

        def uniform(key: Any, shape: Any = (), dtype: Any = float, minval=0.0, maxval=1.0):
            values = jnp.asarray(uniforms_of_shape(noise, tuple(shape)), dtype=dtype)
            return minval + (maxval - minval) * values.reshape(tuple(shape))

        targets = {"jax.random.categorical": categorical, "jax.random.uniform": uniform}
        return patched(targets, path)

    def sampler_key(self) -> Any:
        return jax.random.key(0)

    def float64(self) -> contextlib.AbstractContextManager:
        return jax.enable_x64(True)

    def enable_float64(self) -> None:
        jax.config.update("jax_enable_x64", True)


BACKEND = JaxBackend()
DRIVER = JaxDriver()
bind_module(globals(), BACKEND)

# distrax is optional: its distribution is imported on first use, not with this module.
_estimator_function = globals()["__getattr__"]


def __getattr__(name: str) -> Any:
    if name == "OneHotCategorical":
        if importlib.util.find_spec("distrax") is None:
            raise ImportError(
                "reinmax.backends.jax.OneHotCategorical needs distrax, which is not installed: "
                "pip install 'reinmax[distrax]'"
            )
        from reinmax.backends.distrax import OneHotCategorical

        return OneHotCategorical
    return _estimator_function(name)

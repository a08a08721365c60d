"""JAX backend: each estimator's backward is registered with ``jax.custom_vjp``.

Works under ``jax.jit``, ``jax.vmap`` (also over PRNG keys) and ``jax.grad``, also nested:
``jax.grad`` of ``jax.grad`` and ``jax.hessian`` give the derivative of the backward rule
(docs/SPEC.md, "Higher derivatives"). ``custom_vjp`` has no forward mode: ``jax.jvp`` and
``jax.jacfwd`` raise JAX's own error. Enable ``jax_enable_x64`` for float64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

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

    # reinmax.compat.gumbel_softmax: jax.random.gumbel and jax.nn.softmax.
    gumbel_keyword = "key"

    def gumbel(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: jax.Array) -> jax.Array:
        """``jax.random.gumbel(rng, shape, dtype)``."""
        if rng is None:
            raise ValueError("key is required in JAX: pass a PRNG key (jax.random.key(seed))")
        return jax.random.gumbel(rng, shape, dtype)

    def softmax(self, x: jax.Array, axis: int) -> jax.Array:
        """``jax.nn.softmax`` along ``axis``."""
        return jax.nn.softmax(x, axis=axis)

    def scalar(self, value: float, like: jax.Array) -> jax.Array:
        """``value`` as JAX holds a Python number (weakly typed) in arithmetic with ``like``."""
        return jnp.asarray(value, dtype=like.dtype)

    def seed_array(self, rng: object) -> bool:
        # An integer array of shape (): a traced step, a member of a vmap over seeds. (A typed
        # PRNG key has a key dtype, not an integer one, and is the framework's own RNG.)
        return (
            isinstance(rng, (jax.Array, np.ndarray))
            and rng.ndim == 0
            and jnp.issubdtype(rng.dtype, jnp.integer)
        )

    def wants_tau_grad(self, tau: object) -> bool:
        # Known only inside the custom_vjp (whether τ is perturbed): see custom_vjp.
        return False

    def custom_vjp(self, forward: Callable, backward: Callable, num_outputs: int) -> Callable:
        @jax.custom_vjp
        def op(x: jax.Array, noise: jax.Array, tau: jax.Array) -> tuple:
            return forward(x, noise, tau)[0]

        def op_forward(x: Any, noise: Any, tau: Any) -> tuple:
            # symbolic_zeros: each input comes with whether it is differentiated (perturbed);
            # τ's is carried as the structure () or (None,) (residuals hold arrays only).
            outputs, residuals = forward(x.value, noise.value, tau.value)
            flag = (None,) if tau.perturbed else ()
            return outputs, (noise.value, tau.value, outputs, residuals, flag)

        def op_backward(saved: tuple, cotangents: tuple) -> tuple:
            noise, tau, outputs, residuals, flag = saved
            zero = jax.custom_derivatives.SymbolicZero
            cotangents = tuple(None if isinstance(c, zero) else c for c in cotangents)
            grad, grad_tau = backward(noise, tau, outputs, residuals, cotangents, bool(flag))
            return grad, None, grad_tau

        op.defvjp(op_forward, op_backward, symbolic_zeros=True)
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

        targets: dict[str, Callable[..., Any]] = {
            "jax.random.categorical": categorical,
            "jax.random.uniform": uniform,
        }
        return patched(targets, path)

    def sampler_key(self) -> Any:
        return jax.random.key(0)

    def float64(self) -> contextlib.AbstractContextManager:
        return jax.enable_x64(True)

    def enable_float64(self) -> None:
        jax.config.update("jax_enable_x64", True)


BACKEND = JaxBackend()
DRIVER = JaxDriver()
_functions = bind_module(globals(), BACKEND)

# The functions' static types (reinmax/_names.pyi); at run time bind_module made them.
if TYPE_CHECKING:
    from reinmax._names import *  # noqa: F403

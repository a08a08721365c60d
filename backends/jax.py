"""JAX backend: each estimator's backward is registered with ``jax.custom_vjp``.

Works under ``jax.jit``, ``jax.vmap`` (also over PRNG keys) and ``jax.grad``. ``custom_vjp`` has
no forward mode: ``jax.jvp`` and ``jax.jacfwd`` raise JAX's own error, and higher-order
derivatives of the backward rule are not defined. Enable ``jax_enable_x64`` for float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reinmax.api import Functions, array_api_float_bits

__all__ = [
    "BACKEND",
    "estimate",
    "gapped_straight_through",
    "gumbel_rao",
    "gumbel_softmax",
    "reinforce",
    "reinmax",
    "straight_through",
]


class JaxBackend:
    name = "jax"
    xp = jnp

    def owns(self, x: object) -> bool:
        return isinstance(x, jax.Array)

    def device(self, x: jax.Array) -> Any:
        return None

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
                "rng is required in JAX: pass a PRNG key (jax.random.key(seed)) or explicit noise"
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


BACKEND = JaxBackend()
_functions = Functions(BACKEND)
estimate = _functions.estimate
straight_through = _functions.straight_through
reinmax = _functions.reinmax
gumbel_softmax = _functions.gumbel_softmax
gumbel_rao = _functions.gumbel_rao
gapped_straight_through = _functions.gapped_straight_through
reinforce = _functions.reinforce

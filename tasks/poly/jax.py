"""The polynomial-programming trainer in JAX: ``optax.adam`` on the shared objective, jitted."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from reinmax.backends import jax as fns
from reinmax.tasks.poly.problem import PolyConfig, Trainer, estimator_for, objective

__all__ = ["trainer"]


def trainer(theta0: np.ndarray, powers: np.ndarray, method: str, config: PolyConfig) -> Trainer:
    """Adam on ``method``'s gradient estimate, from logits ``theta0`` of shape ``(P, S, L, 2)``."""
    dtype = getattr(jnp, config.dtype)
    p = jnp.asarray(powers, dtype=dtype)
    estimator = estimator_for(method, config)
    optimizer = optax.adam(config.lr, eps=config.eps)
    state = {"theta": jnp.asarray(theta0, dtype=dtype)}
    state["opt"] = optimizer.init(state["theta"])

    def loss(theta: jax.Array, noise: jax.Array | None) -> tuple:
        return objective(fns, jax.lax.stop_gradient, method, estimator, theta, noise, p, config)

    @jax.jit
    def update(theta: jax.Array, opt_state: Any, noise: jax.Array | None) -> tuple:
        (_, sampled), grad = jax.value_and_grad(loss, has_aux=True)(theta, noise)
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, sampled

    def step(noise: np.ndarray | None) -> np.ndarray:
        state["theta"], state["opt"], sampled = update(state["theta"], state["opt"], noise)
        return np.asarray(sampled)

    return step, lambda: np.asarray(state["theta"]).copy()

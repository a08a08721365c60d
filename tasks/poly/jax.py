"""The polynomial-programming trainer in JAX: ``optax.adam`` on the shared objective, one jitted
step on the engine's mesh (:mod:`reinmax.tasks.parallel.jax`): the logits replicated, the
samples split over the devices."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from reinmax.backends import jax as fns
from reinmax.tasks.poly.problem import Hooks, Setup, Trainer, estimator_for, objective, step_noise

__all__ = ["trainer"]


def trainer(setup: Setup) -> Trainer:
    """Adam on ``method``'s gradient estimate, from logits ``theta0`` of shape ``(P, S, L, 2)``."""
    theta0, powers, method, config, seeds, engine = setup
    dtype = getattr(jnp, config.dtype)
    replicated = engine.replicated()
    p = jax.device_put(jnp.asarray(powers, dtype=dtype), replicated)
    estimator = estimator_for(method, config)
    optimizer = optax.adam(config.lr, eps=config.eps)
    state = {"theta": jax.device_put(jnp.asarray(theta0, dtype=dtype), replicated)}
    state["opt"] = jax.device_put(optimizer.init(state["theta"]), replicated)
    samples = engine.split(axis=2)  # of (P, S, samples, L, 2)
    hooks = Hooks(
        fns, jax.lax.stop_gradient, place=lambda x: jax.lax.with_sharding_constraint(x, samples)
    )

    def loss(theta: jax.Array, step: jax.Array) -> tuple:
        noise = None
        if estimator is not None:
            noise = step_noise(
                estimator, seeds, step, 0, config.samples, len(powers), config, xp=jnp
            )
        return objective(hooks, method, estimator, theta, noise, p, config)

    @jax.jit
    def update(theta: jax.Array, opt_state: Any, step: jax.Array) -> tuple:
        (_, sampled), grad = jax.value_and_grad(loss, has_aux=True)(theta, step)
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, sampled

    def step(t: int) -> np.ndarray:
        state["theta"], state["opt"], sampled = update(state["theta"], state["opt"], np.int32(t))
        return np.asarray(sampled)

    return step, lambda: np.asarray(state["theta"]).copy()

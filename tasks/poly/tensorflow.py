"""The polynomial-programming trainer in TensorFlow: Keras' Adam on the shared objective, in a
``tf.function``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from reinmax.backends import tensorflow as fns
from reinmax.tasks.poly.problem import PolyConfig, Trainer, estimator_for, objective

__all__ = ["trainer"]


def trainer(theta0: np.ndarray, powers: np.ndarray, method: str, config: PolyConfig) -> Trainer:
    """Adam on ``method``'s gradient estimate, from logits ``theta0`` of shape ``(P, S, L, 2)``."""
    dtype = getattr(tf, config.dtype)
    theta = tf.Variable(theta0, dtype=dtype)
    p = tf.constant(powers, dtype=dtype)
    estimator = estimator_for(method, config)
    optimizer = tf.keras.optimizers.Adam(learning_rate=config.lr, epsilon=config.eps)

    @tf.function
    def update(noise: tf.Tensor | None) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss, sampled = objective(
                fns, tf.stop_gradient, method, estimator, theta, noise, p, config
            )
        optimizer.apply_gradients([(tape.gradient(loss, theta), theta)])
        return sampled

    def step(noise: np.ndarray | None) -> np.ndarray:
        return update(None if noise is None else tf.constant(noise)).numpy()

    return step, lambda: theta.numpy().copy()

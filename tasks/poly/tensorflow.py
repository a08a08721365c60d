"""The polynomial-programming trainer in TensorFlow: Keras' Adam on the shared objective, in a
``tf.function``, under the engine's strategy (:mod:`reinmax.tasks.parallel.tensorflow`): each
replica draws its slice of the samples, its noise rows offset by its replica id."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from reinmax.backends import tensorflow as fns
from reinmax.tasks.poly.problem import Hooks, Setup, Trainer, estimator_for, objective, step_noise

__all__ = ["trainer"]


def trainer(setup: Setup) -> Trainer:
    """Adam on ``method``'s gradient estimate, from logits ``theta0`` of shape ``(P, S, L, 2)``."""
    theta0, powers, method, config, seeds, engine = setup
    dtype = getattr(tf, config.dtype)
    strategy = engine.strategy
    with strategy.scope():
        theta = tf.Variable(theta0, dtype=dtype)
        optimizer = tf.keras.optimizers.Adam(learning_rate=config.lr, epsilon=config.eps)
        optimizer.build([theta])
    p = tf.constant(powers, dtype=dtype)
    estimator = estimator_for(method, config)
    share = config.samples // engine.workers

    def replica_step(step: tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        hooks = Hooks(
            fns,
            tf.stop_gradient,
            total=lambda x: context.all_reduce(tf.distribute.ReduceOp.SUM, x),
        )
        noise = None
        if estimator is not None:
            first = context.replica_id_in_sync_group * share
            noise = step_noise(
                estimator, seeds, step, first, share, len(powers), config, xp=fns.BACKEND.xp
            )
        with tf.GradientTape() as tape:
            loss, sampled = objective(hooks, method, estimator, theta, noise, p, config)
            # Keras sums the replicas' gradients: each contributes its share of the mean.
            loss = loss / context.num_replicas_in_sync
        optimizer.apply_gradients([(tape.gradient(loss, theta), theta)])
        return sampled

    # No autograph: the objective's branches are on Python values, and converting the library
    # costs seconds per method.
    @tf.function(autograph=False)
    def update(step: tf.Tensor) -> tf.Tensor:
        sampled = strategy.run(replica_step, args=(step,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, sampled, axis=None)

    def step(t: int) -> np.ndarray:
        return update(tf.constant(t, tf.int32)).numpy()

    return step, lambda: theta.numpy().copy()

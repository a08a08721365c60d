"""The categorical VAE in TensorFlow: Keras ``Sequential`` models and a ``tf.function`` step,
under the engine's ``tf.distribute`` strategy (:mod:`reinmax.tasks.parallel.tensorflow`).

Each replica computes the −ELBO of its slice of the global batch summed and divided by the
global batch size, with its noise rows offset by its replica id; Keras' optimizer sums the
replicas' gradients, which is the gradient of the mean over the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

import reinmax
from reinmax.noise import Seed
from reinmax.tasks.keras_radam import RAdam
from reinmax.tasks.parallel.tensorflow import TensorFlowEngine
from reinmax.tasks.vae import model as vae

__all__ = ["Trainer"]


def _mlp(layers: list[tuple[np.ndarray, np.ndarray]]) -> keras.Sequential:
    """Dense layers with ReLU between them, loaded from ``(kernel [in, out], bias)`` pairs."""
    dense = [
        keras.layers.Dense(kernel.shape[1], activation="relu" if i < len(layers) - 1 else None)
        for i, (kernel, _) in enumerate(layers)
    ]
    model = keras.Sequential([keras.Input((layers[0][0].shape[0],)), *dense])
    model.set_weights([array for layer in layers for array in layer])
    return model


_OPTIMIZERS: dict[str, Callable[[float], keras.optimizers.Optimizer]] = {
    # Keras' default epsilon is 1e-7; 1e-8 matches torch.optim and optax.
    "adam": lambda lr: keras.optimizers.Adam(lr, epsilon=1e-8),
    "radam": RAdam,
}


class Trainer(vae.TrainerBase):
    """One VAE and its Keras optimizer (``Adam`` or :class:`RAdam`), its variables mirrored on
    the engine's replicas: a :class:`reinmax.tasks.vae.model.Trainer`."""

    engine: TensorFlowEngine

    def build(self, params: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """The model from ``params`` and its optimizer on the engine's workers."""
        spec, engine = self.spec, self.engine
        self.strategy = engine.strategy
        with self.strategy.scope():
            self.encoder = _mlp(params[:3])
            self.decoder = _mlp(params[3:])
            self.variables = [
                *self.encoder.trainable_variables,
                *self.decoder.trainable_variables,
            ]
            self.optimizer = _OPTIMIZERS[spec.optimizer](spec.lr)
            self.optimizer.build(self.variables)
        self.estimator = vae.task_estimator(spec.estimator, spec)
        self._train_step = tf.function(self._step, autograph=False)
        self._gradients = tf.function(self._logit_gradients, autograph=False)

    def _replica_step(self, images: tf.Tensor, step: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
        spec = self.spec
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        rng = vae.train_seed(self.seed, step, replica * tf.shape(images)[0], spec.latents)
        with tf.GradientTape() as tape:
            logits = tf.reshape(self.encoder(images), (-1, spec.latents, spec.categories))
            hard, soft = reinmax.estimate(self.estimator, logits, spec.tau, rng=rng)
            decoded = self.decoder(tf.reshape(hard, (-1, spec.latent_size)))
            loss = tf.reduce_sum(vae.negative_elbo(images, decoded, soft, xp=tnp)) / size
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return loss

    def _step(self, images: Any, step: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
        losses = self.strategy.run(self._replica_step, args=(images, step, size))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def train_step(self, images: np.ndarray, step: int) -> float:
        """One optimizer step on the global batch; returns its −ELBO before the step."""
        share = len(images) // self.engine.workers

        def slice_of(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
            first = context.replica_id_in_sync_group * share
            return tf.constant(images[first : first + share])

        shards = self.strategy.experimental_distribute_values_from_function(slice_of)
        size = tf.constant(len(images), tf.float32)
        return float(self._train_step(shards, tf.constant(step, tf.int32), size))

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encoder logits ``[B, L, C]``."""
        logits = self.encoder(tf.constant(images), training=False).numpy()
        return logits.reshape(len(images), self.spec.latents, self.spec.categories)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder logits ``[B, 784]`` for one-hot latents ``[B, L, C]``."""
        z = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
        return self.decoder(tf.constant(z), training=False).numpy()

    def _logit_gradients(
        self, images, logits, key: int, stream, row, estimator: str, tau: float
    ) -> tf.Tensor:
        chosen = vae.task_estimator(estimator, self.spec)
        with tf.GradientTape() as tape:
            tape.watch(logits)
            hard, _ = reinmax.estimate(chosen, logits, tau, rng=Seed(key, stream, row))
            decoded = self.decoder(tf.reshape(hard, (-1, self.spec.latent_size)))
            recon = tf.reduce_sum(vae.reconstruction_nll(images, decoded, xp=tnp))
        return tape.gradient(recon, logits)

    def logit_gradients(
        self, images: np.ndarray, logits: np.ndarray, rng: Seed, estimator: str, tau: float
    ) -> np.ndarray:
        """``∂/∂logits Σ_b recon(images_b, decode(hard_b))`` through ``estimator``."""
        key, stream, row = vae.traced_seed(rng)
        grads = self._gradients(
            tf.constant(images),
            tf.constant(logits),
            key,
            tf.constant(stream),
            tf.constant(row),
            estimator,
            float(tau),
        )
        return grads.numpy()

    def get_state(self) -> dict[str, Any]:
        """Weights and optimizer variables (moments, iteration count) as NumPy arrays."""
        return {
            "encoder": self.encoder.get_weights(),
            "decoder": self.decoder.get_weights(),
            "optimizer": [np.array(v.numpy()) for v in self.optimizer.variables],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` exactly, on every replica."""
        self.encoder.set_weights(state["encoder"])
        self.decoder.set_weights(state["decoder"])
        for variable, value in zip(self.optimizer.variables, state["optimizer"], strict=True):
            variable.assign(value)

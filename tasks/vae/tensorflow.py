"""The categorical VAE in TensorFlow: Keras ``Sequential`` models, a ``tf.function`` step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

import reinmax
from reinmax.tasks.common import estimator as build_estimator
from reinmax.tasks.keras_radam import RAdam
from reinmax.tasks.vae.config import ModelSpec
from reinmax.tasks.vae.model import negative_elbo, reconstruction_nll

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


class Trainer:
    """One VAE and its Keras optimizer (``Adam`` or :class:`RAdam`): a
    :class:`reinmax.tasks.vae.model.Trainer`."""

    def __init__(self, spec: ModelSpec, params: list[tuple[np.ndarray, np.ndarray]]):
        self.spec = spec
        self.encoder = _mlp(params[:3])
        self.decoder = _mlp(params[3:])
        self.variables = [*self.encoder.trainable_variables, *self.decoder.trainable_variables]
        self.optimizer = _OPTIMIZERS[spec.optimizer](spec.lr)
        self.optimizer.build(self.variables)
        self.estimator = build_estimator(spec.estimator)
        self._train_step = tf.function(self._step, autograph=False)
        self._gradients = tf.function(self._logit_gradients, autograph=False)

    def _step(self, images: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        spec = self.spec
        with tf.GradientTape() as tape:
            logits = tf.reshape(self.encoder(images), (-1, spec.latents, spec.categories))
            hard, soft = reinmax.estimate(self.estimator, logits, spec.tau, noise=noise)
            decoded = self.decoder(tf.reshape(hard, (-1, spec.latent_size)))
            loss = tf.reduce_mean(negative_elbo(images, decoded, soft, xp=tnp))
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return loss

    def train_step(self, images: np.ndarray, noise: np.ndarray) -> float:
        """One optimizer step on a batch; returns the batch's −ELBO before the step."""
        return float(self._train_step(tf.constant(images), tf.constant(noise)))

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encoder logits ``[B, L, C]``."""
        logits = self.encoder(tf.constant(images), training=False).numpy()
        return logits.reshape(len(images), self.spec.latents, self.spec.categories)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder logits ``[B, 784]`` for one-hot latents ``[B, L, C]``."""
        z = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
        return self.decoder(tf.constant(z), training=False).numpy()

    def _logit_gradients(self, images, logits, noise, estimator: str, tau: float) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(logits)
            hard, _ = reinmax.estimate(build_estimator(estimator), logits, tau, noise=noise)
            decoded = self.decoder(tf.reshape(hard, (-1, self.spec.latent_size)))
            recon = tf.reduce_sum(reconstruction_nll(images, decoded, xp=tnp))
        return tape.gradient(recon, logits)

    def logit_gradients(
        self, images: np.ndarray, logits: np.ndarray, noise: np.ndarray, estimator: str, tau: float
    ) -> np.ndarray:
        """``∂/∂logits Σ_b recon(images_b, decode(hard_b))`` through ``estimator``."""
        grads = self._gradients(
            tf.constant(images), tf.constant(logits), tf.constant(noise), estimator, float(tau)
        )
        return grads.numpy()

    def get_state(self) -> dict[str, Any]:
        """Weights and optimizer variables (moments, iteration count) as NumPy arrays."""
        return {
            "encoder": self.encoder.get_weights(),
            "decoder": self.decoder.get_weights(),
            "optimizer": [np.array(v) for v in self.optimizer.variables],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` exactly."""
        self.encoder.set_weights(state["encoder"])
        self.decoder.set_weights(state["decoder"])
        for variable, value in zip(self.optimizer.variables, state["optimizer"], strict=True):
            variable.assign(value)

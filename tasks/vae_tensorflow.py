"""The categorical VAE in TensorFlow: Keras ``Sequential`` models, a ``tf.function`` step.

Keras 3 ships Adam but no RAdam, so :class:`RAdam` is a small Keras optimizer written here.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp
from keras import ops

import reinmax
from reinmax.tasks.vae import ModelSpec, negative_elbo, reconstruction_nll

__all__ = ["RAdam", "Trainer"]


class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate").

    With ``ρ∞ = 2/(1 − β₂) − 1`` and ``ρ_t = ρ∞ − 2 t β₂ᵗ/(1 − β₂ᵗ)``: while ``ρ_t ≤ 5`` the step is
    ``lr · m̂_t`` (momentum SGD); afterwards ``lr · r_t · m̂_t · √(1 − β₂ᵗ)/(√v_t + ε)`` with the
    rectification ``r_t = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t))``. The same rule as
    ``torch.optim.RAdam`` and ``optax.radam``.
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        name: str = "radam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, var_list: list) -> None:
        """Create the first and second moments of every variable."""
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate) -> None:
        """Apply one RAdam update to ``variable``."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1 = ops.cast(self.beta_1, variable.dtype)
        beta_2 = ops.cast(self.beta_2, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
        beta_2_power = ops.power(beta_2, step)
        m_hat = ops.divide(m, 1 - ops.power(beta_1, step))
        rho_inf = 2 / (1 - beta_2) - 1
        rho = rho_inf - 2 * step * beta_2_power / (1 - beta_2_power)
        # Clamped inside the square root so the branch not taken stays finite.
        rect = ops.sqrt(
            ops.maximum((rho - 4) * (rho - 2) * rho_inf, 0.0)
            / ((rho_inf - 4) * (rho_inf - 2) * rho)
        )
        adaptive = rect * ops.sqrt(1 - beta_2_power) / (ops.sqrt(v) + self.epsilon)
        scale = ops.where(rho > 5.0, adaptive, ops.ones_like(v))
        self.assign_sub(variable, lr * m_hat * scale)

    def get_config(self) -> dict:
        """Keras serialization."""
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config


def _mlp(layers: list[tuple[np.ndarray, np.ndarray]]) -> keras.Sequential:
    """Dense layers with ReLU between them, loaded from ``(kernel [in, out], bias)`` pairs."""
    dense = [
        keras.layers.Dense(kernel.shape[1], activation="relu" if i < len(layers) - 1 else None)
        for i, (kernel, _) in enumerate(layers)
    ]
    model = keras.Sequential([keras.Input((layers[0][0].shape[0],)), *dense])
    model.set_weights([array for layer in layers for array in layer])
    return model


class Trainer:
    """One VAE and its Keras optimizer (``Adam`` or :class:`RAdam`); see ``vae.Trainer``."""

    def __init__(self, spec: ModelSpec, params: list[tuple[np.ndarray, np.ndarray]]):
        self.spec = spec
        self.encoder = _mlp(params[:3])
        self.decoder = _mlp(params[3:])
        self.variables = [*self.encoder.trainable_variables, *self.decoder.trainable_variables]
        if spec.optimizer == "adam":
            # Keras' default epsilon is 1e-7; 1e-8 matches torch.optim and optax.
            self.optimizer = keras.optimizers.Adam(spec.lr, epsilon=1e-8)
        else:
            self.optimizer = RAdam(spec.lr)
        self.optimizer.build(self.variables)
        self.estimator = getattr(reinmax, spec.estimator)
        self._train_step = tf.function(self._step, autograph=False)
        self._gradients = tf.function(self._logit_gradients, autograph=False)

    def _step(self, images: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        spec = self.spec
        with tf.GradientTape() as tape:
            logits = tf.reshape(self.encoder(images), (-1, spec.latents, spec.categories))
            hard, soft = self.estimator(logits, spec.tau, noise=noise)
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
            hard, _ = getattr(reinmax, estimator)(logits, tau, noise=noise)
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

    def get_state(self) -> dict:
        """Weights and optimizer variables (moments, iteration count) as NumPy arrays."""
        return {
            "encoder": self.encoder.get_weights(),
            "decoder": self.decoder.get_weights(),
            "optimizer": [np.array(v) for v in self.optimizer.variables],
        }

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state` exactly."""
        self.encoder.set_weights(state["encoder"])
        self.decoder.set_weights(state["decoder"])
        for variable, value in zip(self.optimizer.variables, state["optimizer"], strict=True):
            variable.assign(value)

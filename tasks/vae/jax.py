"""The categorical VAE in JAX: a ``flax.nnx`` model, an ``optax`` optimizer, a jitted step on a
device mesh (:mod:`reinmax.tasks.parallel.jax`).

The model and optimizer are split once into a static graph and a state pytree, replicated on
every device of the mesh; the training step is a pure ``jax.jit`` function of that state and of
the global batch, split over the mesh's data axis, so XLA computes each device's slice there and
reduces the gradients across devices. A checkpoint is the list of the state's leaves.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import reinmax
from reinmax.noise import Seed
from reinmax.tasks.parallel.jax import JaxEngine
from reinmax.tasks.vae import model as vae
from reinmax.tasks.vae.config import ModelSpec

__all__ = ["Trainer"]


class _MLP(nnx.Module):
    """Dense layers with ReLU between them, loaded from ``(kernel [in, out], bias)`` pairs."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]):
        self.layers: nnx.List[nnx.Linear] = nnx.List()
        for kernel, bias in layers:
            # The random init is overwritten at once by the shared host weights.
            linear = nnx.Linear(*kernel.shape, rngs=nnx.Rngs(0))
            linear.kernel[...] = jnp.asarray(kernel)
            assert linear.bias is not None  # use_bias is True by default
            linear.bias[...] = jnp.asarray(bias)
            self.layers.append(linear)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


class _VAE(nnx.Module):
    def __init__(self, spec: ModelSpec, params: list[tuple[np.ndarray, np.ndarray]]):
        self.encoder = _MLP(params[:3])
        self.decoder = _MLP(params[3:])


def _estimator_loss(model: _VAE, images, step, spec: ModelSpec, seed: int):
    logits = model.encoder(images).reshape(len(images), spec.latents, spec.categories)
    # The global batch: its first image is image 0 of the step, wherever its slices sit.
    rng = vae.train_seed(seed, step, 0, spec.latents)
    estimator = vae.task_estimator(spec.estimator, spec)
    hard, soft = reinmax.estimate(estimator, logits, spec.tau, rng=rng)
    decoded = model.decoder(hard.reshape(len(images), -1))
    return jnp.mean(vae.negative_elbo(images, decoded, soft, xp=jnp))


@partial(jax.jit, static_argnums=(0, 4, 5))
def _train_step(graphdef, state, images, step, spec: ModelSpec, seed: int):
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(_estimator_loss)(model, images, step, spec, seed)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


@partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _logit_gradients(graphdef, state, images, logits, spec, estimator: str, tau: float, key, rows):
    model, _ = nnx.merge(graphdef, state)
    rng = Seed(key, *rows)

    def reconstruction(theta):
        hard, _ = reinmax.estimate(vae.task_estimator(estimator, spec), theta, tau, rng=rng)
        decoded = model.decoder(hard.reshape(len(theta), -1))
        return jnp.sum(vae.reconstruction_nll(images, decoded, xp=jnp))

    return jax.grad(reconstruction)(logits)


@partial(jax.jit, static_argnums=(0, 3))
def _apply(graphdef, state, x, part: str):
    model, _ = nnx.merge(graphdef, state)
    return getattr(model, part)(x)


class Trainer(vae.TrainerBase):
    """One VAE and its optax optimizer (``adam`` or ``radam``) on the engine's mesh: a
    :class:`reinmax.tasks.vae.model.Trainer`."""

    engine: JaxEngine

    def build(self, params: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """The model from ``params`` and its optimizer on the engine's workers."""
        spec, engine = self.spec, self.engine
        model = _VAE(spec, params)
        transform = {"adam": optax.adam, "radam": optax.radam}[spec.optimizer](spec.lr)
        optimizer = nnx.Optimizer(model, transform, wrt=nnx.Param)
        self._graphdef, state = nnx.split((model, optimizer))
        self._state = jax.device_put(state, engine.replicated())

    def train_step(self, images: np.ndarray, step: int) -> float:
        """One optimizer step on the global batch; returns its −ELBO before the step."""
        batch = jax.device_put(images, self.engine.split())
        self._state, loss = _train_step(
            self._graphdef, self._state, batch, np.int32(step), self.spec, self.seed
        )
        return float(loss)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encoder logits ``[B, L, C]``."""
        logits = _apply(self._graphdef, self._state, images, "encoder")
        return np.asarray(logits).reshape(len(images), self.spec.latents, self.spec.categories)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder logits ``[B, 784]`` for one-hot latents ``[B, L, C]``."""
        z = np.asarray(latents, dtype=np.float32).reshape(len(latents), -1)
        return np.asarray(_apply(self._graphdef, self._state, z, "decoder"))

    def logit_gradients(
        self, images: np.ndarray, logits: np.ndarray, rng: Seed, estimator: str, tau: float
    ) -> np.ndarray:
        """``∂/∂logits Σ_b recon(images_b, decode(hard_b))`` through ``estimator``."""
        key, stream, row = vae.traced_seed(rng)
        grads = _logit_gradients(
            self._graphdef,
            self._state,
            images,
            logits,
            self.spec,
            estimator,
            float(tau),
            key,
            (stream, row),
        )
        return np.asarray(grads)

    def get_state(self) -> dict[str, Any]:
        """Weights and optimizer state as the NumPy leaves of the state pytree (whole arrays,
        whatever the mesh)."""
        return {"leaves": [np.asarray(leaf) for leaf in jax.tree.leaves(self._state)]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` exactly, replicated on the mesh."""
        structure = jax.tree.structure(self._state)
        leaves = jax.tree.unflatten(structure, [jnp.asarray(v) for v in state["leaves"]])
        self._state = jax.device_put(leaves, self.engine.replicated())

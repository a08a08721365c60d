"""Evaluation of a trained VAE on the host (NumPy, on top of a :class:`Trainer`): the test −ELBO,
the importance-weighted bound, and the images the plots show."""

from __future__ import annotations

import math

import numpy as np

from reinmax.core import inverse_cdf_index
from reinmax.tasks.vae.config import ModelSpec
from reinmax.tasks.vae.model import Stream, Trainer, generator, kl_to_uniform, reconstruction_nll

__all__ = [
    "DECODE_LIMIT",
    "EVAL_BLOCK",
    "SHOWN",
    "artifacts",
    "decode_chunked",
    "evaluate",
    "log_softmax",
    "one_hot",
    "sample_latents",
    "softmax",
]

EVAL_BLOCK = 100
"""Test images per block of evaluation noise: the draws of an image depend on its block only,
so that the numbers do not depend on how evaluation is chunked in memory."""
DECODE_LIMIT = 10_000
"""Latent draws decoded at once during evaluation: peak memory is set by this, not by the
test-set size times the draws per image."""
SHOWN = 10
"""Images per row of the reconstruction and prior-sample plots."""


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis."""
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def one_hot(index: np.ndarray, categories: int) -> np.ndarray:
    """float32 one-hot vectors ``[..., categories]`` of ``index``."""
    return (index[..., None] == np.arange(categories)).astype(np.float32)


def sample_latents(logits: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """``D ~ Cat(softmax(logits))`` by the core's inverse CDF: the same draw for every estimator."""
    index = inverse_cdf_index(softmax(logits.astype(np.float64)), uniforms, xp=np)
    return one_hot(index, logits.shape[-1])


def decode_chunked(trainer: Trainer, latents: np.ndarray, chunk: int = 5000) -> np.ndarray:
    """``trainer.decode`` of many latents, ``chunk`` at a time."""
    return np.concatenate(
        [trainer.decode(latents[i : i + chunk]) for i in range(0, len(latents), chunk)]
    )


def evaluate(trainer: Trainer, images: np.ndarray, samples: int, *key: int) -> dict[str, float]:
    """Test −ELBO from ``samples`` latent draws per image, and the importance-weighted bound.

    Returns the −ELBO averaged over images and draws, and ``−log mean_s p(x, z_s)/q(z_s|x)``
    averaged over images (an upper bound on ``−log p(x)`` that tightens with ``samples``).
    Images go through in blocks of :data:`EVAL_BLOCK` and draws in chunks of at most
    :data:`DECODE_LIMIT` decodes, with a running log-sum-exp for the bound, so that memory stays
    bounded whatever the test-set size and ``samples``. ``key`` keys the draws.
    """
    neg_elbo = iwae = 0.0
    for first in range(0, len(images), EVAL_BLOCK):
        block = images[first : first + EVAL_BLOCK]
        uniforms = generator(*key, first // EVAL_BLOCK)
        elbo_sum, bound = _evaluate_block(trainer, block, samples, uniforms)
        neg_elbo += elbo_sum
        iwae += float(np.sum(bound))
    return {"neg_elbo": neg_elbo / len(images), "iwae": iwae / len(images)}


class _LogMeanExp:
    """A running ``log mean_s exp(w_s)`` per image over chunks of draws (never all held)."""

    def __init__(self, n: int):
        self.top = np.full(n, -np.inf)
        self.scaled = np.zeros(n)  # Σ_s exp(w_s − top)

    def add(self, log_w: np.ndarray) -> None:
        new_top = np.maximum(self.top, log_w.max(axis=0))
        self.scaled = self.scaled * np.exp(self.top - new_top) + np.sum(
            np.exp(log_w - new_top), axis=0
        )
        self.top = new_top

    def value(self, samples: int) -> np.ndarray:
        return self.top + np.log(self.scaled / samples)


def _evaluate_block(
    trainer: Trainer, images: np.ndarray, samples: int, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """``(Σ_images mean_draws −ELBO, per-image bound)`` for one block of test images."""
    logits = trainer.encode(images).astype(np.float64)
    n, latents, categories = logits.shape
    log_q = log_softmax(logits)
    kl = kl_to_uniform(np.exp(log_q), xp=np)
    uniforms = rng.random((samples, n, latents))
    pixels = images.astype(np.float64)
    log_mean = _LogMeanExp(n)
    recon_sum = np.zeros(n)
    step = max(1, DECODE_LIMIT // n)
    for s in range(0, samples, step):
        u = uniforms[s : s + step]
        z = sample_latents(np.broadcast_to(logits, (len(u), *logits.shape)), u)
        decoded = trainer.decode(z.reshape(-1, latents, categories)).astype(np.float64)
        recon = reconstruction_nll(np.tile(pixels, (len(u), 1)), decoded, xp=np)
        recon = recon.reshape(len(u), n)
        recon_sum += recon.sum(axis=0)
        # log p(x|z) + log p(z) − log q(z|x) per draw, with p(z) uniform.
        log_mean.add(-recon - latents * math.log(categories) - np.sum(np.sum(z * log_q, -1), -1))
    return float(np.sum(recon_sum / samples + kl)), -log_mean.value(samples)


def artifacts(
    trainer: Trainer, spec: ModelSpec, seed: int, test: np.ndarray
) -> dict[str, np.ndarray]:
    """Mean images (sigmoid of the decoder) for the plots: ``reconstructions`` of the first
    :data:`SHOWN` test images and ``prior_samples``, ``[SHOWN, 784]`` float32 each."""
    logits = trainer.encode(test[:SHOWN]).astype(np.float64)
    recon_latents = sample_latents(logits, generator(seed, Stream.RECON).random(logits.shape[:2]))
    # The same prior draws for every estimator and seed, so the grids compare like with like.
    prior = generator(Stream.PRIOR).integers(0, spec.categories, (SHOWN, spec.latents))
    decoded = {
        "reconstructions": trainer.decode(recon_latents),
        "prior_samples": trainer.decode(one_hot(prior, spec.categories)),
    }
    return {
        k: (1.0 / (1.0 + np.exp(-v.astype(np.float64)))).astype(np.float32)
        for k, v in decoded.items()
    }

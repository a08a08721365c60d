"""Evaluation of a trained VAE on the host (NumPy, on top of a :class:`Trainer`): the test −ELBO,
the importance-weighted bound, and the images the plots show.

The latent draws use the portable generator (:mod:`reinmax.noise`) in NumPy: the uniform of draw
``s`` of latent ``l`` of test image ``i`` is element ``s`` of row ``i·L + l`` of the purpose's
stream, so it depends on the image's global index alone, not on how the images or the draws are
chunked in memory, and it is the same for every backend.
"""

from __future__ import annotations

import math

import numpy as np

from reinmax.core import inverse_cdf_index
from reinmax.noise import uniform_rows
from reinmax.tasks.common import noise_seed
from reinmax.tasks.vae.config import ModelSpec
from reinmax.tasks.vae.model import Stream, Trainer, kl_to_uniform, reconstruction_nll

__all__ = [
    "DECODE_LIMIT",
    "EVAL_BLOCK",
    "SHOWN",
    "artifacts",
    "decode_chunked",
    "evaluate",
    "latent_uniforms",
    "log_softmax",
    "one_hot",
    "sample_latents",
    "softmax",
]

EVAL_BLOCK = 100
"""Test images encoded and evaluated at once (their draws do not depend on it)."""
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


def latent_uniforms(
    seed: int, purpose: int, first_image: int, images: int, latents: int, draws: int
) -> np.ndarray:
    """The uniforms ``[draws, images, latents]`` of the images from global index
    ``first_image`` on: draw ``s`` of latent ``l`` of image ``i`` is element ``s`` of row
    ``i·latents + l`` of ``purpose``'s stream of ``seed`` (float64, from the portable generator)."""
    rng = noise_seed(seed, purpose, 0, first_image * latents)
    u = uniform_rows(rng, images * latents, draws, np.float64, xp=np)
    return np.ascontiguousarray(u.reshape(images, latents, draws).transpose(2, 0, 1))


def evaluate(
    trainer: Trainer, images: np.ndarray, samples: int, seed: int, purpose: int
) -> dict[str, float]:
    """Test −ELBO from ``samples`` latent draws per image, and the importance-weighted bound.

    Returns the −ELBO averaged over images and draws, and ``−log mean_s p(x, z_s)/q(z_s|x)``
    averaged over images (an upper bound on ``−log p(x)`` that tightens with ``samples``).
    Images go through in blocks of :data:`EVAL_BLOCK` and draws in chunks of at most
    :data:`DECODE_LIMIT` decodes, with a running log-sum-exp for the bound, so that memory stays
    bounded whatever the test-set size. The draws are :func:`latent_uniforms` of ``seed`` and
    ``purpose`` (a :class:`~reinmax.tasks.vae.model.Stream`).
    """
    neg_elbo = iwae = 0.0
    for first in range(0, len(images), EVAL_BLOCK):
        block = images[first : first + EVAL_BLOCK]
        elbo_sum, bound = _evaluate_block(trainer, block, (seed, purpose, first), samples)
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
    trainer: Trainer, images: np.ndarray, key: tuple[int, int, int], samples: int
) -> tuple[float, np.ndarray]:
    """``(Σ_images mean_draws −ELBO, per-image bound)`` for one block of test images, whose
    draws are :func:`latent_uniforms` of ``key``: the seed, the purpose and the block's first
    image."""
    logits = trainer.encode(images).astype(np.float64)
    n, latents, categories = logits.shape
    log_q = log_softmax(logits)
    kl = kl_to_uniform(np.exp(log_q), xp=np)
    uniforms = latent_uniforms(*key, n, latents, samples)
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
    shown, latents = logits.shape[:2]
    uniform = latent_uniforms(seed, Stream.RECON, 0, shown, latents, 1)[0]
    recon_latents = sample_latents(logits, uniform)
    # The same prior draws for every estimator and seed, so the grids compare like with like.
    uniform = latent_uniforms(0, Stream.PRIOR, 0, SHOWN, spec.latents, 1)[0]
    prior = np.minimum((uniform * spec.categories).astype(np.int64), spec.categories - 1)
    decoded = {
        "reconstructions": trainer.decode(recon_latents),
        "prior_samples": trainer.decode(one_hot(prior, spec.categories)),
    }
    return {
        k: (1.0 / (1.0 + np.exp(-v.astype(np.float64)))).astype(np.float32)
        for k, v in decoded.items()
    }

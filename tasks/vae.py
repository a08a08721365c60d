"""MNIST VAE with categorical latent variables (Liu et al. 2023, section 6.2), in every backend.

``reinmax task vae --backend torch --estimator all --config 8x4 --epochs 5 --json PATH``

The model: ``L`` categorical latent variables of ``C`` categories each. The encoder
``784 → 512 → 256 → L·C`` (ReLU) gives the logits; the decoder ``L·C → 256 → 512 → 784`` (ReLU,
sigmoid output) reads the one-hot sample ``hard``. The loss is the negative ELBO in nats, summed
per image and averaged over the batch (:func:`negative_elbo`).

Everything the three frameworks share lives here, once: the configurations and their tuned
hyper-parameters, the loss formula, the initial weights (drawn on the host with NumPy, so every
backend starts from the same point), the noise (host NumPy Philox keyed by seed, epoch and step,
so every backend sees the same samples), evaluation, checkpoints, plots and the gradient-quality
analysis. Each of ``reinmax.tasks.vae_torch``, ``vae_jax`` and ``vae_tensorflow`` supplies one
:class:`Trainer`: the model and optimizer in its framework's own idiom.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reinmax.core import ESTIMATORS as CORE_ESTIMATORS
from reinmax.core import inverse_cdf_index
from reinmax.runtime import (
    CheckpointError,
    add_quiet_option,
    command,
    non_negative_int,
    positive_float,
    positive_int,
)
from reinmax.tasks.common import (
    BACKENDS,
    ESTIMATORS,
    import_framework,
    load_checkpoint,
    progress,
    pyplot,
    require_conformance,
    save_checkpoint,
    save_figure,
    write_json,
)
from reinmax.tasks.mnist_data import IMAGE_SIDE, load_mnist
from reinmax.tasks.mnist_data import batches as mnist_batches

__all__ = [
    "CONFIGS",
    "HIDDEN",
    "HYPERPARAMETERS",
    "PIXELS",
    "Hyperparameters",
    "ModelSpec",
    "Trainer",
    "exact_reconstruction_gradient",
    "expected_reconstruction",
    "gradient_analysis",
    "gradient_statistics",
    "host_noise",
    "initial_parameters",
    "kl_to_uniform",
    "main",
    "make_trainer",
    "negative_elbo",
    "parse_config",
    "reconstruction_nll",
]

PIXELS = IMAGE_SIDE * IMAGE_SIDE
HIDDEN = (512, 256)
"""Hidden widths of the encoder; the decoder mirrors them (256 then 512)."""

BATCH_SIZE = 100
ANALYSIS_LIMIT = 16384
"""Gradient analysis enumerates all ``C**L`` latent configurations; only below this many."""

# Stream tags for host noise, so that training, evaluation and analysis never share draws.
_TRAIN, _TEST, _EVAL_MANY, _ANALYSIS, _PRIOR, _RECON = range(6)


@dataclass(frozen=True)
class Hyperparameters:
    """The tuned setting of one (configuration, estimator): learning rate, τ and optimizer."""

    lr: float
    tau: float
    optimizer: str


def _table(rows: dict[str, Sequence[tuple[float, float, str]]]) -> dict:
    order = ("gumbel_softmax", "gumbel_rao", "gapped_straight_through", "straight_through")
    table = {}
    for config, row in rows.items():
        for estimator, (lr, tau, opt) in zip((*order, "reinmax"), row, strict=True):
            table[config, estimator] = Hyperparameters(lr, tau, opt)
    return table


HYPERPARAMETERS: dict[tuple[str, str], Hyperparameters] = _table(
    {
        # ST-Gumbel-Softmax, Gumbel-Rao, GST-1.0, ST, ReinMax (Liu et al. 2023, appendix table).
        "8x4": [
            (3e-4, 0.5, "adam"),
            (5e-4, 0.5, "adam"),
            (5e-4, 1.0, "adam"),
            (1e-3, 1.3, "adam"),
            (5e-4, 1.3, "adam"),
        ],
        "4x24": [
            (5e-4, 0.3, "radam"),
            (5e-4, 0.3, "radam"),
            (5e-4, 0.5, "radam"),
            (1e-3, 1.5, "radam"),
            (5e-4, 1.5, "radam"),
        ],
        "8x16": [
            (5e-4, 0.5, "radam"),
            (7e-4, 0.7, "radam"),
            (7e-4, 0.5, "radam"),
            (1e-3, 1.5, "radam"),
            (7e-4, 1.5, "radam"),
        ],
        "16x12": [
            (7e-4, 0.7, "radam"),
            (5e-4, 1.0, "adam"),
            (7e-4, 0.5, "radam"),
            (5e-4, 1.5, "adam"),
            (7e-4, 1.5, "radam"),
        ],
        "64x8": [
            (7e-4, 0.7, "radam"),
            (7e-4, 2.0, "adam"),
            (7e-4, 0.7, "radam"),
            (5e-4, 1.5, "adam"),
            (5e-4, 1.5, "radam"),
        ],
        # ST's 7e-3 is kept as transcribed from the paper (7e-4 may be meant; see --lr).
        "10x30": [
            (5e-4, 0.5, "radam"),
            (5e-4, 1.0, "radam"),
            (5e-4, 0.5, "radam"),
            (7e-3, 1.4, "radam"),
            (5e-4, 1.3, "radam"),
        ],
    }
)
"""Tuned defaults per (configuration ``"CxL"``, estimator)."""

CONFIGS = ("8x4", "4x24", "8x16", "16x12", "64x8", "10x30")
"""The paper's configurations, ``"CxL"``: ``C`` categories, ``L`` latent variables."""


@dataclass(frozen=True)
class ModelSpec:
    """What a backend needs to build and train one model."""

    categories: int
    latents: int
    estimator: str
    tau: float
    lr: float
    optimizer: str

    @property
    def latent_size(self) -> int:
        """``L·C``, the width of the encoder's output and of the decoder's input."""
        return self.categories * self.latents


class Trainer(Protocol):
    """One model and its optimizer in one framework; NumPy arrays in and out."""

    def train_step(self, images: np.ndarray, noise: np.ndarray) -> float:
        """One optimizer step on a batch; returns the batch's −ELBO before the step."""

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encoder logits ``[B, L, C]`` (float32)."""

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder logits (before the sigmoid) ``[B, 784]`` for one-hot latents ``[B, L, C]``."""

    def logit_gradients(
        self, images: np.ndarray, logits: np.ndarray, noise: np.ndarray, estimator: str, tau: float
    ) -> np.ndarray:
        """``∂/∂logits Σ_b recon(images_b, decode(hard_b))`` through ``estimator``, ``[B, L, C]``.

        ``hard`` is ``estimator``'s sample of ``logits`` at ``tau`` given ``noise``.
        """

    def get_state(self) -> dict[str, list[np.ndarray]]:
        """Parameters and optimizer state as NumPy arrays, for a checkpoint."""

    def set_state(self, state: dict[str, list[np.ndarray]]) -> None:
        """Restore what :meth:`get_state` returned, exactly."""


# ---------------------------------------------------------------------------------------------
# The loss: one formula for every framework
# ---------------------------------------------------------------------------------------------

# q log q with q clamped from below: exact for every probability that matters (q log q < 1e-28
# below it), and finite for the q that underflow to 0.
_PROBABILITY_FLOOR = 1e-30


def reconstruction_nll(images: Any, decoder_logits: Any, *, xp: Any) -> Any:
    """Binary cross-entropy of ``sigmoid(decoder_logits)`` against grey levels, summed per image.

    ``BCE(x, σ(z)) = −x log σ(z) − (1 − x) log(1 − σ(z)) = softplus(z) − x z``, written with
    ``logaddexp(0, z)`` so that it is finite for any logit. ``images`` are in ``[0, 1]`` (not
    binarised). Shapes ``[B, 784]`` → ``[B]``.
    """
    return xp.sum(
        xp.logaddexp(xp.zeros_like(decoder_logits), decoder_logits) - images * decoder_logits,
        axis=-1,
    )


def kl_to_uniform(soft: Any, *, xp: Any) -> Any:
    """``KL(q ‖ uniform) = Σ_l Σ_c q log q + L log C`` per image, from ``q`` ``[B, L, C]``."""
    latents, categories = soft.shape[-2], soft.shape[-1]
    q_log_q = soft * xp.log(xp.maximum(soft, _PROBABILITY_FLOOR))
    return xp.sum(xp.sum(q_log_q, axis=-1), axis=-1) + latents * math.log(categories)


def negative_elbo(images: Any, decoder_logits: Any, soft: Any, *, xp: Any) -> Any:
    """The negative ELBO per image, in nats: :func:`reconstruction_nll` + :func:`kl_to_uniform`.

    Args:
        images: grey levels in ``[0, 1]``, ``[B, 784]``.
        decoder_logits: the decoder's output before its sigmoid, ``[B, 784]``, computed from the
            one-hot sample ``hard``.
        soft: the encoder's probabilities ``q = softmax(logits)`` as the estimator returns them,
            ``[B, L, C]`` (the KL's gradient flows through them).
        xp: the array namespace (``numpy``, ``array_api_compat.torch``, ``jax.numpy``,
            ``tensorflow.experimental.numpy``).

    Returns:
        ``[B]``; the training loss is its mean over the batch.
    """
    return reconstruction_nll(images, decoder_logits, xp=xp) + kl_to_uniform(soft, xp=xp)


# ---------------------------------------------------------------------------------------------
# Shared randomness: initial weights and noise, drawn on the host
# ---------------------------------------------------------------------------------------------


def _generator(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(k) for k in key])))


def initial_parameters(
    categories: int, latents: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The six dense layers' ``(kernel [in, out], bias [out])``, float32, drawn from ``seed``.

    Encoder layers first, then decoder layers. Each entry is uniform in ``±1/√fan_in`` (PyTorch's
    default for ``nn.Linear``), drawn with NumPy so every backend starts from identical weights.
    """
    size = categories * latents
    widths = (PIXELS, *HIDDEN, size, *reversed(HIDDEN), PIXELS)
    rng = _generator(seed, 0xC0FFEE)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = 1.0 / math.sqrt(fan_in)
        kernel = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        bias = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
        layers.append((kernel, bias))
    return layers


def host_noise(estimator: str, shape: tuple[int, ...], *key: int) -> np.ndarray:
    """Uniform noise in ``[0, 1)`` for ``estimator`` on logits of ``shape``, keyed by ``key``.

    The layout is the estimator's own (``reinmax.core`` ``noise_shape``): one uniform per row for
    ST, GST and ReinMax, one per category for ST-Gumbel-Softmax, ``(2, *shape)`` for Gumbel-Rao
    with one conditional draw. float32, from NumPy's Philox.
    """
    noise_shape = CORE_ESTIMATORS[estimator]().noise_shape(tuple(shape))
    return _generator(*key).random(noise_shape, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Evaluation and the gradient-quality analysis (NumPy, on top of a Trainer)
# ---------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _one_hot(index: np.ndarray, categories: int) -> np.ndarray:
    return (index[..., None] == np.arange(categories)).astype(np.float32)


def _sample_latents(logits: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """``D ~ Cat(softmax(logits))`` by the core's inverse CDF: the same draw for every estimator."""
    index = inverse_cdf_index(_softmax(logits.astype(np.float64)), uniforms, xp=np)
    return _one_hot(index, logits.shape[-1])


def _decode_chunked(trainer: Trainer, latents: np.ndarray, chunk: int = 5000) -> np.ndarray:
    return np.concatenate(
        [trainer.decode(latents[i : i + chunk]) for i in range(0, len(latents), chunk)]
    )


EVAL_BLOCK = 100
"""Test images per block of evaluation noise: the draws of an image depend on its block only,
so that the numbers do not depend on how evaluation is chunked in memory."""
DECODE_LIMIT = 10_000
"""Latent draws decoded at once during evaluation: peak memory is set by this, not by the
test-set size times the draws per image."""


def _evaluate(trainer: Trainer, images: np.ndarray, samples: int, *key: int) -> dict[str, float]:
    """Test −ELBO from ``samples`` latent draws per image, and the importance-weighted bound.

    Returns the −ELBO averaged over images and draws, and ``−log mean_s p(x, z_s)/q(z_s|x)``
    averaged over images (an upper bound on ``−log p(x)`` that tightens with ``samples``).
    Images go through in blocks of :data:`EVAL_BLOCK` and draws in chunks of at most
    :data:`DECODE_LIMIT` decodes, with a running log-sum-exp for the bound, so that memory stays
    bounded whatever the test-set size and ``samples``.
    """
    neg_elbo = iwae = 0.0
    for first in range(0, len(images), EVAL_BLOCK):
        block = images[first : first + EVAL_BLOCK]
        uniforms = _generator(*key, first // EVAL_BLOCK)
        elbo_sum, bound = _evaluate_block(trainer, block, samples, uniforms)
        neg_elbo += elbo_sum
        iwae += float(np.sum(bound))
    return {"neg_elbo": neg_elbo / len(images), "iwae": iwae / len(images)}


def _evaluate_block(
    trainer: Trainer, images: np.ndarray, samples: int, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """``(Σ_images mean_draws −ELBO, per-image bound)`` for one block of test images."""
    logits = trainer.encode(images).astype(np.float64)
    n, latents, categories = logits.shape
    log_q = _log_softmax(logits)
    kl = kl_to_uniform(np.exp(log_q), xp=np)
    uniforms = rng.random((samples, n, latents))
    pixels = images.astype(np.float64)
    top = np.full(n, -np.inf)
    scaled = np.zeros(n)  # Σ_s exp(log_w_s − top)
    recon_sum = np.zeros(n)
    step = max(1, DECODE_LIMIT // n)
    for s in range(0, samples, step):
        u = uniforms[s : s + step]
        z = _sample_latents(np.broadcast_to(logits, (len(u), *logits.shape)), u)
        decoded = trainer.decode(z.reshape(-1, latents, categories)).astype(np.float64)
        recon = reconstruction_nll(np.tile(pixels, (len(u), 1)), decoded, xp=np)
        recon = recon.reshape(len(u), n)
        recon_sum += recon.sum(axis=0)
        # log p(x|z) + log p(z) − log q(z|x) per draw, with p(z) uniform; a running log-sum-exp.
        log_w = -recon - latents * math.log(categories) - np.sum(np.sum(z * log_q, -1), -1)
        new_top = np.maximum(top, log_w.max(axis=0))
        scaled = scaled * np.exp(top - new_top) + np.sum(np.exp(log_w - new_top), axis=0)
        top = new_top
    bound = -(top + np.log(scaled / samples))
    return float(np.sum(recon_sum / samples + kl)), bound


def _all_latents(categories: int, latents: int) -> np.ndarray:
    """Every one-hot configuration, ``[C**L, L, C]``, in lexicographic order."""
    index = np.array(list(itertools.product(range(categories), repeat=latents)), dtype=np.int64)
    return _one_hot(index.reshape(-1, latents), categories)


def expected_reconstruction(
    images: np.ndarray, logits: np.ndarray, decode: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``E_{z ~ q(z|x)} recon(x, decode(z))`` per image by enumerating all ``C**L`` latents.

    Args:
        images: ``[N, 784]``.
        logits: encoder logits ``[N, L, C]``.
        decode: one-hot latents ``[K, L, C]`` → decoder logits ``[K, 784]``.
    """
    weights, recon, _ = _enumerate(images, logits, decode)
    return np.sum(weights * recon, axis=1)


def exact_reconstruction_gradient(
    images: np.ndarray, logits: np.ndarray, decode: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The exact ``∂/∂logits E_q[recon]`` per image, ``[N, L, C]``, by enumeration (float64).

    With ``f_k = recon(x, decode(z_k))`` and ``p_k = Π_l π_l(z_k)``, the gradient with respect to
    the logits of variable ``l`` is ``Σ_k p_k f_k (z_{k,l} − π_l)``.
    """
    weights, recon, z = _enumerate(images, logits, decode)
    probs = _softmax(logits.astype(np.float64))
    weighted = weights * recon  # [N, K]
    return np.einsum("nk,klc->nlc", weighted, z) - weighted.sum(axis=1)[:, None, None] * probs


def _enumerate(images, logits, decode):
    latents, categories = logits.shape[1:]
    z = _all_latents(categories, latents).astype(np.float64)
    decoded = np.asarray(decode(z.astype(np.float32)), dtype=np.float64)  # [K, 784]
    softplus = np.logaddexp(0.0, decoded).sum(axis=1)
    recon = softplus[None, :] - images.astype(np.float64) @ decoded.T  # [N, K]
    log_p = np.einsum("klc,nlc->nk", z, _log_softmax(logits.astype(np.float64)))
    return np.exp(log_p), recon, z


def gradient_statistics(draws: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """How ``draws`` ``[N, S, ...]`` of a gradient estimate compare with ``exact`` ``[N, ...]``.

    Per image, with ``g`` the exact gradient and ``ĝ`` the mean of the ``S`` draws: relative bias
    ``‖ĝ − g‖/‖g‖``, relative standard deviation ``√(mean_s ‖ĝ_s − ĝ‖²)/‖g‖``, the cosine of
    ``ĝ`` with ``g`` and the mean cosine of single draws with ``g``; each averaged over images.
    ``bias_noise_floor`` is ``relative_std/√S``: relative biases near it are Monte-Carlo noise.
    """
    n, s = draws.shape[:2]
    draws = draws.reshape(n, s, -1).astype(np.float64)
    exact = exact.reshape(n, -1).astype(np.float64)
    mean = draws.mean(axis=1)
    norm = np.linalg.norm(exact, axis=1)
    spread = np.sqrt(np.mean(np.sum((draws - mean[:, None]) ** 2, axis=2), axis=1))

    def cosine(a, b):
        return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))

    relative_std = spread / norm
    return {
        "relative_bias": float(np.mean(np.linalg.norm(mean - exact, axis=1) / norm)),
        "relative_std": float(np.mean(relative_std)),
        "cosine_of_mean": float(np.mean(cosine(mean, exact))),
        "mean_cosine_per_draw": float(np.mean(cosine(draws, exact[:, None]))),
        "bias_noise_floor": float(np.mean(relative_std) / math.sqrt(s)),
    }


def gradient_analysis(
    trainer: Trainer,
    images: np.ndarray,
    estimators: dict[str, float],
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """Estimator gradients of the reconstruction term against the exact one, at ``trainer``.

    Args:
        trainer: the model, whose configuration must have ``C**L < 16384``.
        images: the few images to analyse, ``[N, 784]``.
        estimators: name → τ for each estimator to analyse.
        draws: estimator draws per image (the paper's analysis uses 1,024).
        seed: keys the noise.

    Returns:
        ``{"images": N, "draws": S, "exact_norm": mean ‖g‖, "estimators": {name: statistics}}``
        with the statistics of :func:`gradient_statistics`.
    """
    logits = trainer.encode(images)
    n, latents, categories = logits.shape
    if categories**latents >= ANALYSIS_LIMIT:
        raise ValueError(
            f"gradient analysis enumerates C**L = {categories**latents} latents; only "
            f"configurations with C**L < {ANALYSIS_LIMIT} are analysed"
        )
    exact = exact_reconstruction_gradient(images, logits, lambda z: _decode_chunked(trainer, z))
    tiled_images = np.repeat(images, draws, axis=0)
    tiled_logits = np.repeat(logits, draws, axis=0)
    results = {}
    for number, (name, tau) in enumerate(estimators.items()):
        noise = host_noise(name, tiled_logits.shape, seed, _ANALYSIS, number)
        grads = trainer.logit_gradients(tiled_images, tiled_logits, noise, name, tau)
        stats = gradient_statistics(grads.reshape(n, draws, latents, categories), exact)
        results[name] = {"tau": tau, **stats}
    return {
        "images": n,
        "draws": draws,
        "exact_norm": float(np.mean(np.linalg.norm(exact.reshape(n, -1), axis=1))),
        "estimators": results,
    }


# ---------------------------------------------------------------------------------------------
# Backends, configurations and the command line
# ---------------------------------------------------------------------------------------------


def make_trainer(
    backend: str, spec: ModelSpec, params: list[tuple[np.ndarray, np.ndarray]]
) -> Trainer:
    """The :class:`Trainer` of ``backend`` (``torch``, ``jax`` or ``tensorflow``) for ``spec``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if spec.estimator not in ESTIMATORS:
        raise ValueError(
            f"estimator must be one of {', '.join(ESTIMATORS)}, got {spec.estimator!r}"
        )
    if spec.optimizer not in ("adam", "radam"):
        raise ValueError(f"optimizer must be 'adam' or 'radam', got {spec.optimizer!r}")
    import_framework(backend)
    module = importlib.import_module(f"reinmax.tasks.vae_{backend}")
    return module.Trainer(spec, params)


def parse_config(text: str) -> tuple[int, int]:
    """``"CxL"`` → ``(C, L)``: ``C`` categories per variable, ``L`` latent variables."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"config must look like CxL with positive integers (e.g. 8x4), got {text!r}"
        )
    categories, latents = (int(p) for p in parts)
    if categories < 2:
        raise ValueError(f"config {text!r}: a categorical variable needs at least 2 categories")
    return categories, latents


def _spec(config: str, estimator: str, args: argparse.Namespace) -> ModelSpec:
    categories, latents = parse_config(config)
    tuned = HYPERPARAMETERS.get((config, estimator))
    chosen = {"lr": args.lr, "tau": args.tau, "optimizer": args.optimizer}
    if tuned is None and None in chosen.values():
        missing = ", ".join(f"--{k}" for k, v in chosen.items() if v is None)
        raise ValueError(
            f"config {config!r} has no tuned hyper-parameters (tuned: {', '.join(CONFIGS)}); "
            f"give {missing}"
        )
    for key, value in chosen.items():
        if value is None:
            chosen[key] = getattr(tuned, key)
    return ModelSpec(
        categories,
        latents,
        estimator,
        float(chosen["tau"]),
        float(chosen["lr"]),
        chosen["optimizer"],
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reinmax task vae",
        description="Train a VAE with categorical latents on MNIST with each estimator.",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument(
        "--estimator", nargs="+", default=["all"], help=f"'all' or some of: {', '.join(ESTIMATORS)}"
    )
    parser.add_argument(
        "--config", nargs="+", default=["8x4"], help=f"'all' or CxL, e.g. {' '.join(CONFIGS)}"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=5, help="epochs per run (paper: 160)"
    )
    parser.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (0 .. S-1)")
    parser.add_argument(
        "--data-dir", default=None, help="MNIST IDX files (default: embedded 5k digits)"
    )
    parser.add_argument(
        "--json",
        default="results/vae/vae.json",
        help="results file; plots and checkpoint go beside it",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint beside --json"
    )
    parser.add_argument(
        "--lr", type=positive_float, default=None, help="override the tuned learning rate"
    )
    parser.add_argument(
        "--tau", type=positive_float, default=None, help="override the tuned temperature"
    )
    parser.add_argument(
        "--optimizer", choices=("adam", "radam"), default=None, help="override the tuned optimizer"
    )
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE)
    parser.add_argument(
        "--max-batches",
        type=positive_int,
        default=None,
        help="stop each epoch after this many batches",
    )
    parser.add_argument(
        "--eval-samples",
        type=positive_int,
        default=100,
        help="draws per test image for the final estimate",
    )
    parser.add_argument(
        "--analysis-images",
        type=non_negative_int,
        default=4,
        help="images in the gradient analysis (0: none)",
    )
    parser.add_argument(
        "--analysis-draws",
        type=positive_int,
        default=1024,
        help="estimator draws per analysed image",
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    estimators = list(ESTIMATORS) if args.estimator == ["all"] else args.estimator
    for name in estimators:
        if name not in ESTIMATORS:
            parser.error(f"--estimator: {name!r} is not one of all, {', '.join(ESTIMATORS)}")
    configs = list(CONFIGS) if args.config == ["all"] else args.config
    for config in configs:
        try:
            parse_config(config)
        except ValueError as exc:
            parser.error(f"--config: {exc}")
    for name in ("epochs", "seeds", "batch_size", "eval_samples", "analysis_draws"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    if args.max_batches is not None and args.max_batches < 1:
        parser.error(f"--max-batches must be at least 1, got {args.max_batches}")
    if args.analysis_images < 0:
        parser.error(f"--analysis-images must be non-negative, got {args.analysis_images}")
    for name in ("lr", "tau"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name} must be > 0, got {value}")
    args.estimator, args.config = estimators, configs


def _paths(json_path: Path) -> dict[str, Path]:
    stem = json_path.with_suffix("")
    return {
        "checkpoint": stem.with_name(stem.name + ".ckpt.pkl"),
        "curves": stem.with_name(stem.name + "_curves.png"),
        "reconstructions": stem.with_name(stem.name + "_reconstructions.png"),
        "prior_samples": stem.with_name(stem.name + "_prior_samples.png"),
        "gradients": stem.with_name(stem.name + "_gradients.png"),
    }


# Options that change results; a checkpoint only resumes a run with the same ones.
_RESULT_OPTIONS = (
    "backend",
    "estimator",
    "config",
    "epochs",
    "seeds",
    "data_dir",
    "lr",
    "tau",
    "optimizer",
    "batch_size",
    "max_batches",
    "eval_samples",
    "analysis_images",
    "analysis_draws",
)


@command("reinmax task vae")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task vae``: train, evaluate, analyse and plot; see ``--help``."""
    parser = _build_parser()
    add_quiet_option(parser)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    options = {name: getattr(args, name) for name in _RESULT_OPTIONS}
    json_path = Path(args.json)
    paths = _paths(json_path)
    specs = {(c, e): _spec(c, e, args) for c in args.config for e in args.estimator}

    state = load_checkpoint(paths["checkpoint"], "vae") if args.resume else None
    if state is not None and state["options"] != options:
        changed = [k for k in options if state["options"].get(k) != options[k]]
        raise CheckpointError(
            f"checkpoint {paths['checkpoint']} was written with other options "
            f"({', '.join(changed)}); rerun with the same options, or without --resume to start "
            "afresh"
        )
    if state is None:
        state = {"options": options, "runs": {}, "current": None}

    require_conformance(args.backend, args.estimator)
    data = load_mnist(args.data_dir)
    plan = [(c, e, s) for c in args.config for e in args.estimator for s in range(args.seeds)]
    for config, estimator, seed in plan:
        key = f"{estimator}/{config}/{seed}"
        if key in state["runs"]:
            continue
        _train_run(key, specs[config, estimator], seed, args, data, state, paths, json_path)

    _write_results(json_path, args, data.source, state, complete=True)
    _plot_curves(paths["curves"], state, args)
    _plot_images(paths["reconstructions"], state, args, "reconstructions", data.test_images)
    _plot_images(paths["prior_samples"], state, args, "prior_samples", None)
    _plot_gradients(paths["gradients"], state, args)
    print(format_table(_summary(_runs(state))))
    print(f"results: {json_path}")
    return 0


def _train_run(key, spec, seed, args, data, state, paths, json_path) -> None:
    """Train one (estimator, config, seed), checkpointing after every epoch."""
    params = initial_parameters(spec.categories, spec.latents, seed)
    trainer = make_trainer(args.backend, spec, params)
    current = state["current"]
    if current is not None and current["key"] == key:
        trainer.set_state(current["trainer"])
        history = current["history"]
    else:
        history = []
    shape = (args.batch_size, spec.latents, spec.categories)
    test = data.test_images
    steps = math.ceil(len(data.train_images) / args.batch_size)
    if args.max_batches is not None:
        steps = min(steps, args.max_batches)
    for epoch in range(len(history), args.epochs):
        start = time.perf_counter()
        losses = []
        stream = mnist_batches(data.train_images, args.batch_size, seed=seed, epoch=epoch)
        desc = f"{args.backend} {key} epoch {epoch + 1}/{args.epochs}"
        for step, images in progress(zip(range(steps), stream), total=steps, desc=desc):
            noise = host_noise(spec.estimator, (len(images), *shape[1:]), seed, _TRAIN, epoch, step)
            losses.append(trainer.train_step(images, noise))
        seconds = time.perf_counter() - start
        evaluation = _evaluate(trainer, test, 1, seed, _TEST)
        history.append(
            {
                "epoch": epoch + 1,
                "train_neg_elbo": float(np.mean(losses)),
                "test_neg_elbo": evaluation["neg_elbo"],
                "train_seconds": seconds,
            }
        )
        state["current"] = {"key": key, "trainer": trainer.get_state(), "history": history}
        save_checkpoint(paths["checkpoint"], state, "vae")
        _write_results(json_path, args, data.source, state, complete=False)

    final = _evaluate(trainer, test, args.eval_samples, seed, _EVAL_MANY)
    run = {
        "estimator": spec.estimator,
        "config": f"{spec.categories}x{spec.latents}",
        "seed": seed,
        "lr": spec.lr,
        "tau": spec.tau,
        "optimizer": spec.optimizer,
        "epochs": history,
        "train_neg_elbo": history[-1]["train_neg_elbo"],
        "test_neg_elbo": history[-1]["test_neg_elbo"],
        f"test_neg_elbo_{args.eval_samples}": final["neg_elbo"],
        f"test_iwae_{args.eval_samples}": final["iwae"],
        "seconds_per_epoch": float(np.mean([h["train_seconds"] for h in history])),
        "gradient_analysis": _analysis(trainer, spec, seed, args, test),
    }
    artifacts = _artifacts(trainer, spec, seed, test)
    state["runs"][key] = {"result": run, "artifacts": artifacts}
    state["current"] = None
    save_checkpoint(paths["checkpoint"], state, "vae")
    _write_results(json_path, args, data.source, state, complete=False)


def _analysis(trainer, spec, seed, args, test) -> dict | None:
    if args.analysis_images == 0 or spec.categories**spec.latents >= ANALYSIS_LIMIT:
        return None
    config = f"{spec.categories}x{spec.latents}"
    taus = {name: _spec(config, name, args).tau for name in ESTIMATORS}
    return gradient_analysis(trainer, test[: args.analysis_images], taus, args.analysis_draws, seed)


_SHOWN = 10


def _artifacts(trainer, spec, seed, test) -> dict[str, np.ndarray]:
    """Mean images (sigmoid of the decoder) for the plots: reconstructions and prior samples."""
    logits = trainer.encode(test[:_SHOWN]).astype(np.float64)
    recon_latents = _sample_latents(logits, _generator(seed, _RECON).random(logits.shape[:2]))
    # The same prior draws for every estimator and seed, so the grids compare like with like.
    prior = _generator(_PRIOR).integers(0, spec.categories, (_SHOWN, spec.latents))
    decoded = {
        "reconstructions": trainer.decode(recon_latents),
        "prior_samples": trainer.decode(_one_hot(prior, spec.categories)),
    }
    return {
        k: (1.0 / (1.0 + np.exp(-v.astype(np.float64)))).astype(np.float32)
        for k, v in decoded.items()
    }


def _summary(runs: list[dict]) -> dict:
    summary: dict[str, dict[str, dict]] = {}
    for run in runs:
        cell = summary.setdefault(run["config"], {}).setdefault(
            run["estimator"], {"train": [], "test": []}
        )
        cell["train"].append(run["train_neg_elbo"])
        cell["test"].append(run["test_neg_elbo"])
    for config in summary.values():
        for name, cell in config.items():
            train, test = np.asarray(cell["train"]), np.asarray(cell["test"])
            config[name] = {
                "seeds": len(train),
                "train_neg_elbo_mean": float(train.mean()),
                "train_neg_elbo_std": float(train.std(ddof=1)) if len(train) > 1 else 0.0,
                "test_neg_elbo_mean": float(test.mean()),
                "test_neg_elbo_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
            }
    return summary


def format_table(summary: dict) -> str:
    """Markdown table, estimators × configurations: train and test −ELBO (mean ± std over seeds)."""
    configs = list(summary)
    estimators = list(dict.fromkeys(e for cells in summary.values() for e in cells))
    head = " | ".join(f"{c} train | {c} test" for c in configs)
    lines = [f"| estimator | {head} |", "|---" * (2 * len(configs) + 1) + "|"]
    for estimator in estimators:
        cells = []
        for config in configs:
            c = summary[config].get(estimator)
            if c is None:
                cells += ["", ""]
                continue
            for split in ("train", "test"):
                mean, std = c[f"{split}_neg_elbo_mean"], c[f"{split}_neg_elbo_std"]
                cells.append(f"{mean:.1f} ± {std:.1f}")
        lines.append(f"| {estimator} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _write_results(json_path, args, source, state, *, complete: bool) -> None:
    runs = [entry["result"] for entry in state["runs"].values()]
    current = state["current"]
    write_json(
        json_path,
        {
            "task": "vae",
            "complete": complete,
            "backend": args.backend,
            "data": source,
            "options": state["options"],
            "runs": runs,
            "in_progress": None
            if current is None
            else {
                "run": current["key"],
                "epochs": current["history"],
                # Trained and checkpointed: --resume only reruns the final evaluation.
                "trained": len(current["history"]) == args.epochs,
            },
            "summary": _summary(runs),
            "plots": {k: str(v) for k, v in _paths(json_path).items() if k != "checkpoint"}
            if complete
            else {},
        },
    )


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _runs(state) -> list[dict]:
    return [entry["result"] for entry in state["runs"].values()]


def _plot_curves(path: Path, state, args) -> None:
    """−ELBO per epoch: one panel per configuration, train solid and test dashed, mean ± std."""
    plt = pyplot()
    configs = args.config
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    colors = dict(zip(ESTIMATORS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, config in zip(axes[0], configs):
        for estimator in args.estimator:
            runs = [
                r for r in _runs(state) if r["config"] == config and r["estimator"] == estimator
            ]
            if not runs:
                continue
            epochs = np.arange(1, len(runs[0]["epochs"]) + 1)
            for field, style in (("train_neg_elbo", "-"), ("test_neg_elbo", "--")):
                values = np.array([[h[field] for h in r["epochs"]] for r in runs])
                mean, std = values.mean(axis=0), values.std(axis=0)
                label = f"{estimator} ({field.split('_')[0]})"
                ax.plot(epochs, mean, style, color=colors[estimator], label=label)
                ax.fill_between(epochs, mean - std, mean + std, color=colors[estimator], alpha=0.15)
        ax.set_title(f"C×L = {config} ({args.backend})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("−ELBO (nats)")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _plot_images(path: Path, state, args, kind: str, originals: np.ndarray | None) -> None:
    """One grid per configuration: a row per estimator (seed 0), ten images each."""
    plt = pyplot()
    rows = [("original", None)] if originals is not None else []
    rows += [(e, e) for e in args.estimator]
    configs = args.config
    fig, axes = plt.subplots(
        len(rows) * len(configs), 1, figsize=(_SHOWN, 1.1 * len(rows) * len(configs)), squeeze=False
    )
    for c, config in enumerate(configs):
        for r, (label, estimator) in enumerate(rows):
            ax = axes[c * len(rows) + r, 0]
            if estimator is None:
                images = originals[:_SHOWN]
            else:
                entry = state["runs"].get(f"{estimator}/{config}/0")
                if entry is None:
                    ax.axis("off")
                    continue
                images = entry["artifacts"][kind]
            strip = np.concatenate(list(images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)), axis=1)
            ax.imshow(strip, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(f"{config}\n{label}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{kind.replace('_', ' ')} ({args.backend}, seed 0)")
    save_figure(fig, path)


def _plot_gradients(path: Path, state, args) -> None:
    """Bars of relative bias, relative std and cosine per estimator, per analysed model."""
    analysed = [r for r in _runs(state) if r["gradient_analysis"] and r["seed"] == 0]
    plt = pyplot()
    fields = ("relative_bias", "relative_std", "cosine_of_mean")
    fig, axes = plt.subplots(
        max(len(analysed), 1),
        len(fields),
        figsize=(4.5 * len(fields), 3.6 * max(len(analysed), 1)),
        squeeze=False,
        layout="constrained",
    )
    if not analysed:
        axes[0, 0].text(0.5, 0.5, "no configuration with C**L < 16384", ha="center")
    for row, run in zip(axes, analysed):
        stats = run["gradient_analysis"]["estimators"]
        names = list(stats)
        for ax, field in zip(row, fields):
            ax.bar(range(len(names)), [stats[n][field] for n in names])
            short = [n.replace("gapped_straight_through", "GST").replace("_", "\n") for n in names]
            ax.set_xticks(range(len(names)), short, fontsize=7)
            ax.set_title(f"{field} — model {run['estimator']}, {run['config']}", fontsize=8)
            if field == "relative_bias":
                floor = np.mean([stats[n]["bias_noise_floor"] for n in names])
                ax.axhline(floor, color="gray", ls=":", label="MC noise floor")
                ax.legend(fontsize=7)
    save_figure(fig, path)

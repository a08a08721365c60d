"""The gradient-quality analysis: every estimator's gradient of the reconstruction term against
the exact one, computed by enumerating all ``C**L`` latent configurations (NumPy, float64)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from reinmax import diagnostics
from reinmax.tasks.common import noise_seed
from reinmax.tasks.vae.evaluation import decode_chunked, log_softmax, one_hot, softmax
from reinmax.tasks.vae.model import Stream, Trainer

__all__ = [
    "ANALYSIS_LIMIT",
    "all_latents",
    "exact_reconstruction_gradient",
    "expected_reconstruction",
    "gradient_analysis",
    "gradient_statistics",
]

ANALYSIS_LIMIT = 16384
"""Gradient analysis enumerates all ``C**L`` latent configurations; only below this many."""


def all_latents(categories: int, latents: int) -> np.ndarray:
    """Every one-hot configuration, ``[C**L, L, C]``, in lexicographic order."""
    index = np.array(list(itertools.product(range(categories), repeat=latents)), dtype=np.int64)
    return one_hot(index.reshape(-1, latents), categories)


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
    probs = softmax(logits.astype(np.float64))
    weighted = weights * recon  # [N, K]
    return np.einsum("nk,klc->nlc", weighted, z) - weighted.sum(axis=1)[:, None, None] * probs


def _enumerate(
    images: np.ndarray, logits: np.ndarray, decode: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q(z_k|x) [N, K], recon(x, decode(z_k)) [N, K], z [K, L, C])`` over all latents."""
    latents, categories = logits.shape[1:]
    z = all_latents(categories, latents).astype(np.float64)
    decoded = np.asarray(decode(z.astype(np.float32)), dtype=np.float64)  # [K, 784]
    softplus = np.logaddexp(0.0, decoded).sum(axis=1)
    recon = softplus[None, :] - images.astype(np.float64) @ decoded.T  # [N, K]
    log_p = np.einsum("klc,nlc->nk", z, log_softmax(logits.astype(np.float64)))
    return np.exp(log_p), recon, z


def gradient_statistics(draws: np.ndarray, exact: np.ndarray) -> dict[str, float | int | None]:
    """How ``draws`` ``[N, S, ...]`` of a gradient estimate compare with ``exact`` ``[N, ...]``:
    :func:`reinmax.diagnostics.gradient_statistics` with one problem per image, averaged over
    images (relative standard deviation ``‖σ‖/‖ĝ‖``, relative bias ``‖ĝ − g‖/‖g‖``, the cosine of
    the mean ``ĝ`` with ``g`` and of single draws with ``g``, and the bias noise floor)."""
    report = diagnostics.gradient_statistics(np.moveaxis(draws, 1, 0), exact, batch_axes=1)
    return report.summary()


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
        seed: keys the noise: estimator number ``e`` (in the order of ``estimators``) draws
            stream ``e`` of the analysis purpose, row ``(i·draws + d)·L + l`` for latent ``l``
            of draw ``d`` of image ``i``.

    Returns:
        ``{"images": N, "draws": S, "exact_norm": mean ‖g‖, "estimators": {name: statistics}}``
        with the statistics of :func:`gradient_statistics`.
    """
    logits = trainer.encode(images)
    n, latents, categories = logits.shape
    _check_enumerable(latents, categories)
    exact = exact_reconstruction_gradient(images, logits, lambda z: decode_chunked(trainer, z))
    tiled_images = np.repeat(images, draws, axis=0)
    tiled_logits = np.repeat(logits, draws, axis=0)
    results = {}
    for number, (name, tau) in enumerate(estimators.items()):
        rng = noise_seed(seed, Stream.ANALYSIS, number)
        grads = trainer.logit_gradients(tiled_images, tiled_logits, rng, name, tau)
        stats = gradient_statistics(grads.reshape(n, draws, latents, categories), exact)
        results[name] = {"tau": tau, **stats}
    return {
        "images": n,
        "draws": draws,
        "exact_norm": float(np.mean(np.linalg.norm(exact.reshape(n, -1), axis=1))),
        "estimators": results,
    }


def _check_enumerable(latents: int, categories: int) -> None:
    if categories**latents >= ANALYSIS_LIMIT:
        raise ValueError(
            f"gradient analysis enumerates C**L = {categories**latents} latents; only "
            f"configurations with C**L < {ANALYSIS_LIMIT} are analysed"
        )

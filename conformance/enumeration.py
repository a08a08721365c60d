"""Exact expectations of categorical gradient estimators, by enumerating every joint sample.

``logits`` is a NumPy float64 array of shape ``(L, n)``: ``L`` independent rows (categorical
variables) of ``n`` categories each. A joint sample ``D`` is an ``(L, n)`` stack of one-hot rows;
there are ``n^L`` of them (fewer with ``-inf`` logits, whose categories are never drawn), so
keep ``n^L`` small (a few thousand at most).

- :func:`joint_samples` ``(logits) -> (samples (M, L, n), probability (M,))``: every joint sample
  with ``P(D) > 0``.
- :func:`exact_gradient` ``(logits, f) -> (L, n)``: the true ``∇θ E[f(D)] = Σ_D P(D) f(D) (D − π)``
  for ``f(D) -> float``.
- :func:`expected_estimate` ``(estimator, logits, grad_f, tau, options) -> (L, n)``:
  ``Σ_D P(D) rule(D)`` for an estimator that is deterministic given ``D`` (ST, GST, ReinMax, or a
  user's :class:`~reinmax.core.Estimator` with one uniform per row). ``grad_f(D) -> (L, n)`` is
  the gradient ``g = ∂f/∂D`` of a differentiable extension of ``f``; the rule sees it as the
  cotangent of ``hard``. Each ``D`` is produced by the estimator's own sampler from a crafted
  uniform (the midpoint of the category's CDF interval), so the sampler is exercised too.
- :func:`rules_by_sample` (same arguments) ``-> (samples, probability, rules)``: ``rule(D)`` for
  every joint sample, ``(M, L, n)``.
- :func:`variance_by_enumeration` (same arguments) ``-> (mean, variance)``, each ``(L, n)``: the
  exact per-entry mean and variance of such an estimator.
- :func:`expected_reinforce` ``(logits, f, baseline) -> (L, n)``: ``Σ_D P(D) (f(D) − b)(D − π)``
  through the library's REINFORCE surrogate.
- :func:`monte_carlo_estimate` ``(estimator, logits, grad_f, tau, n_draws, seed, options) ->
  (mean, std_error, variance)``, each ``(L, n)``, for estimators with extra noise
  (ST-Gumbel-Softmax, Gumbel-Rao); works for every estimator. Noise comes from NumPy's Philox.

``estimator`` is a name of :data:`reinmax.core.REGISTRY` (with ``options`` such as ``{"k": 4}``
or ``{"gap": 1.0}``) or an :class:`~reinmax.core.Estimator`. Everything runs through
``reinmax.backends.numpy`` unless a ``runner`` is given: ``runner(estimator, logits, noise, tau,
grad_of_sample) -> (hard, grad)`` evaluates ``estimator`` on a batch ``logits (B, L, n)`` with
``noise`` in its core layout, calls ``grad_of_sample(hard) -> g`` on the ``(B, L, n)`` sample and
returns the sample and the gradient of ``Σ g · hard`` with respect to the logits, as float64
NumPy arrays. Runners for other backends are built in :mod:`reinmax.conformance.identities`.

Example (ReinMax is exact for a quadratic at ``τ = 1``)::

    a = np.random.default_rng(0).normal(size=(6, 6))
    f = lambda d: d.ravel() @ a @ d.ravel()
    grad_f = lambda d: ((a + a.T) @ d.ravel()).reshape(d.shape)
    logits = np.array([[0.1, -0.3, 0.5], [1.0, 0.0, -1.0]])
    np.allclose(expected_estimate("reinmax", logits, grad_f), exact_gradient(logits, f))  # True
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from reinmax import api
from reinmax.core import Estimator, softmax

__all__ = [
    "Runner",
    "exact_gradient",
    "expected_estimate",
    "expected_reinforce",
    "joint_samples",
    "monte_carlo_estimate",
    "numpy_runner",
    "resolve_estimator",
    "rules_by_sample",
    "variance_by_enumeration",
]

Runner = Callable[
    [Estimator, np.ndarray, np.ndarray, float, Callable[[np.ndarray], np.ndarray]],
    tuple[np.ndarray, np.ndarray],
]
_MAX_JOINT_SAMPLES = 200_000


def resolve_estimator(estimator: str | Estimator, options: Mapping[str, Any] | None) -> Estimator:
    """The :class:`Estimator` for a registered name (built with ``options``) or itself.

    Enumeration draws from ``softmax(logits)``, so ``unimix`` is not an option here.
    """
    if options and "unimix" in options:
        raise ValueError("enumeration draws from softmax(logits): unimix is not an option here")
    return api.resolve_estimator(estimator, options)


def numpy_runner(
    estimator: Estimator,
    logits: np.ndarray,
    noise: np.ndarray,
    tau: float,
    grad_of_sample: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The default :data:`Runner`: ``reinmax.backends.numpy`` and its explicit pullback."""
    from reinmax.backends import numpy as rnp

    (hard, _), pullback = rnp.vjp(rnp.estimate, estimator, logits, tau, noise=noise)
    return hard, pullback(grad_of_sample(hard), None)


def _check_logits(logits: Any) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must have shape (L, n) with n >= 1, got {logits.shape}")
    return logits


def _probabilities(logits: np.ndarray) -> np.ndarray:
    return softmax(logits, xp=np)


def joint_samples(logits: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every joint sample with nonzero probability and its probability.

    Returns ``samples`` of shape ``(M, L, n)`` (one-hot rows) and ``probability`` of shape
    ``(M,)``, summing to 1.
    """
    logits = _check_logits(logits)
    probs = _probabilities(logits)
    support = [np.flatnonzero(row > 0) for row in probs]
    count = int(np.prod([len(s) for s in support]))
    if count > _MAX_JOINT_SAMPLES:
        raise ValueError(
            f"logits of shape {logits.shape} have {count} joint samples; enumeration is for at "
            f"most {_MAX_JOINT_SAMPLES}"
        )
    indices = np.array(list(itertools.product(*support)), dtype=np.intp).reshape(count, -1)
    eye = np.eye(logits.shape[1])
    samples = eye[indices]
    probability = np.prod(probs[np.arange(logits.shape[0]), indices], axis=1)
    return samples, probability


def _crafted_uniforms(probs: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per-row uniforms ``(M, L)`` that make the inverse-CDF sampler draw ``samples``.

    The midpoint of the sampled category's CDF interval, relative to the row total (the sampler
    compares ``u · c_{n−1}`` against the cumulative sums).
    """
    c = np.cumsum(probs, axis=-1)
    upper = np.sum(samples * c, axis=-1)
    lower = upper - np.sum(samples * probs, axis=-1)
    return 0.5 * (lower + upper) / c[:, -1]


def _per_sample(fn: Callable[[np.ndarray], Any], samples: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(fn(d), dtype=np.float64) for d in samples])


def rules_by_sample(
    estimator: str | Estimator,
    logits: Any,
    grad_f: Callable[[np.ndarray], np.ndarray],
    tau: float = 1.0,
    options: Mapping[str, Any] | None = None,
    *,
    runner: Runner | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(samples (M, L, n), probability (M,), rule(D) (M, L, n))`` for every joint sample."""
    est = resolve_estimator(estimator, options)
    if est.per_category:
        raise ValueError(
            f"{est.name} draws noise beyond the sample, so it is not deterministic given D: "
            "use monte_carlo_estimate"
        )
    logits = _check_logits(logits)
    samples, probability = joint_samples(logits)
    noise = _crafted_uniforms(_probabilities(logits), samples)
    batch = np.broadcast_to(logits, samples.shape).copy()
    hard, rules = (runner or numpy_runner)(est, batch, noise, tau, lambda h: _per_sample(grad_f, h))
    if not np.array_equal(np.asarray(hard, dtype=np.float64), samples):
        raise RuntimeError(
            f"{est.name}: the sampler did not draw the enumerated sample from its crafted uniform "
            "(the inverse-CDF sampler disagrees with docs/SPEC.md)"
        )
    return samples, probability, np.asarray(rules, dtype=np.float64)


def expected_estimate(*args: Any, **kwargs: Any) -> np.ndarray:
    """``E[rule(D)] = Σ_D P(D) · rule(D)`` exactly, for an estimator deterministic given ``D``.

    Takes the arguments of :func:`rules_by_sample`: ``(estimator, logits, grad_f, tau=1.0,
    options=None, *, runner=None)``, where ``grad_f(D)`` maps an ``(L, n)`` joint sample to the
    cotangent ``g`` of ``hard``.
    """
    return variance_by_enumeration(*args, **kwargs)[0]


def variance_by_enumeration(*args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-entry ``(mean, variance)`` of an estimator deterministic given ``D``
    (the arguments of :func:`rules_by_sample`)."""
    _, probability, rules = rules_by_sample(*args, **kwargs)
    mean = np.einsum("m,m...->...", probability, rules)
    variance = np.einsum("m,m...->...", probability, (rules - mean) ** 2)
    return mean, variance


def exact_gradient(logits: Any, f: Callable[[np.ndarray], float]) -> np.ndarray:
    """``∇θ E[f(D)] = Σ_D P(D) f(D) (D − π)``: each row's score is ``D_l − π_l``."""
    logits = _check_logits(logits)
    samples, probability = joint_samples(logits)
    values = _per_sample(f, samples)
    score = samples - _probabilities(logits)
    return np.einsum("m,m,m...->...", probability, values, score)


def expected_reinforce(
    logits: Any,
    f: Callable[[np.ndarray], float],
    baseline: float = 0.0,
    *,
    gradient: Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray] | None = None,
) -> np.ndarray:
    """``Σ_D P(D) (f(D) − b)(D − π)`` through the library's REINFORCE surrogate.

    ``gradient(logits (M, L, n), hard (M, L, n), value (M, L), baseline) -> (M, L, n)`` is the
    gradient of the summed surrogate in some backend; ``reinmax.backends.numpy`` by default.
    """
    logits = _check_logits(logits)
    samples, probability = joint_samples(logits)
    values = _per_sample(f, samples)
    batch = np.broadcast_to(logits, samples.shape).copy()
    value = np.broadcast_to(values[:, None], samples.shape[:2]).copy()
    grads = (gradient or _numpy_reinforce_gradient)(batch, samples, value, baseline)
    return np.einsum("m,m...->...", probability, np.asarray(grads, dtype=np.float64))


def _numpy_reinforce_gradient(
    logits: np.ndarray, hard: np.ndarray, value: np.ndarray, baseline: float
) -> np.ndarray:
    from reinmax.backends import numpy as rnp

    surrogate, pullback = rnp.vjp(rnp.reinforce, logits, hard, value, baseline)
    return pullback(np.ones_like(surrogate))


def monte_carlo_estimate(
    estimator: str | Estimator,
    logits: Any,
    grad_f: Callable[[np.ndarray], np.ndarray],
    tau: float = 1.0,
    n_draws: int = 10_000,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    *,
    runner: Runner | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monte Carlo ``(mean, std_error, variance)`` of an estimator over its own noise.

    ``n_draws`` independent draws of every noise the estimator consumes (Philox, ``seed``); the
    standard error is ``sqrt(variance / n_draws)`` with the unbiased sample variance.
    """
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 2:
        raise ValueError(f"n_draws must be an integer >= 2, got {n_draws!r}")
    est = resolve_estimator(estimator, options)
    logits = _check_logits(logits)
    batch = np.broadcast_to(logits, (n_draws, *logits.shape)).copy()
    rng = np.random.Generator(np.random.Philox(seed))
    noise = rng.random(est.noise_shape(batch.shape))
    _, rules = (runner or numpy_runner)(est, batch, noise, tau, lambda h: _per_sample(grad_f, h))
    rules = np.asarray(rules, dtype=np.float64)
    mean = rules.mean(axis=0)
    variance = rules.var(axis=0, ddof=1)
    return mean, np.sqrt(variance / n_draws), variance

"""An independent NumPy float64 oracle for every estimator, written from docs/SPEC.md's formulas.

It shares no code with ``reinmax.core``: the point is to have a second implementation to compare
every backend against. Clarity comes before speed (10^4 rows take well under a second).

API (stable; used by ``reinmax.conformance.harness`` and the conformance checks)::

    ESTIMATORS                      names the oracle knows (the docs/SPEC.md estimators)
    Result(hard, soft, grad)        NamedTuple of float64 NumPy arrays in the user layout
    noise_shape(estimator, shape, *, axis=-1, options=None) -> tuple[int, ...]
    evaluate(estimator, logits, noise, tau=1.0, g=None, g_p=None, *, axis=-1,
             dtype="float64", options=None) -> Result
    compute_dtype(dtype) -> np.dtype  float32 for 16-bit floats, else the dtype itself
    numpy_dtype(dtype) -> np.dtype    a NumPy dtype from a name ("bfloat16" via ml_dtypes)

``options`` holds the estimator's own options: ``hard`` (gumbel_softmax, default True), ``k``
(gumbel_rao, default 1), ``gap`` (gapped_straight_through, a number >= 0 or ``"p"``, default
1.0). ``dtype`` is the dtype the backend runs in: the oracle rounds its inputs exactly as the
backend sees them (logits, ``g`` and ``g_p`` to ``dtype``; noise and ``tau`` to the compute
dtype, whose ``[tiny, 1 − eps]`` also clamps the uniforms) and then computes in float64.

The clamp applies to the inverse-CDF uniforms too, which docs/SPEC.md's masking rule needs: with
``u = 0`` the count ``#{k : c_k < 0}`` is 0, which would sample a masked leading category.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["ESTIMATORS", "Result", "compute_dtype", "evaluate", "noise_shape", "numpy_dtype"]

ESTIMATORS = (
    "straight_through",
    "gumbel_softmax",
    "gumbel_rao",
    "gapped_straight_through",
    "reinmax",
    "zgr",
    "reinmax_rao",
    "reinmax_cv",
)

_DEFAULTS: dict[str, dict[str, Any]] = {
    "straight_through": {},
    "reinmax": {},
    "gumbel_softmax": {"hard": True},
    "gumbel_rao": {"k": 1},
    "gapped_straight_through": {"gap": 1.0},
    "zgr": {},
    "reinmax_rao": {"k": 1},
    "reinmax_cv": {"k": 1, "eta": 0.5, "tau2": None},
}
# Noise draws before the logits' own axes: Gumbel-Rao's K + 1; ReinMax-Rao's K + 1 (the sample's
# uniform in draw 0, category 0); ReinMax-CV's K + 2 (the same, then K draws and the single one).
_DRAWS = {"gumbel_rao": 1, "reinmax_rao": 1, "reinmax_cv": 2}


class Result(NamedTuple):
    """One estimator's outputs and the cotangent of the logits, in the user layout.

    ``hard`` is the first output (the one-hot sample, or the relaxed sample of
    ``gumbel_softmax(hard=False)``), ``soft = softmax(logits)``, ``grad`` the logits' cotangent.
    """

    hard: np.ndarray
    soft: np.ndarray
    grad: np.ndarray


def compute_dtype(dtype: Any) -> np.dtype:
    """The dtype a backend computes in: float32 for float16 and bfloat16, else ``dtype``."""
    dtype = numpy_dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def numpy_dtype(dtype: Any) -> np.dtype:
    """A NumPy dtype from a name or dtype; ``"bfloat16"`` comes from ``ml_dtypes``."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    dtype = np.dtype(dtype)
    if dtype.kind != "f" and dtype.name != "bfloat16":
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def _options(estimator: str, options: dict | None) -> dict:
    if estimator not in _DEFAULTS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    merged = dict(_DEFAULTS[estimator])
    for key, value in (options or {}).items():
        if key not in merged:
            raise ValueError(f"{estimator} takes no option {key!r}")
        merged[key] = value
    if "k" in merged:
        k = merged["k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
    if estimator == "gapped_straight_through":
        gap = merged["gap"]
        ok = gap == "p" or (
            isinstance(gap, (int, float)) and not isinstance(gap, bool) and gap >= 0
        )
        if not ok:
            raise ValueError(f'gap must be a non-negative number or "p", got {gap!r}')
    return merged


def noise_shape(
    estimator: str, shape: tuple[int, ...], *, axis: int = -1, options: dict | None = None
) -> tuple[int, ...]:
    """The user-layout noise shape of ``estimator`` for logits of ``shape`` (docs/SPEC.md)."""
    opts = _options(estimator, options)
    shape = tuple(shape)
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis {axis} is out of range for logits with {len(shape)} dimensions")
    if estimator == "gumbel_softmax":
        return shape
    if estimator in _DRAWS:
        return (opts["k"] + _DRAWS[estimator], *shape)
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1 :]


# ---------------------------------------------------------------------------------------------
# Row-wise float64 formulas (category axis last). Every helper returns exact zeros wherever a
# probability is zero, so masked categories never take part in arithmetic with infinities.
# ---------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    """softmax along the last axis; all ``-inf`` rows give zeros (NaN rows stay NaN)."""
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isneginf(top), 0.0, top)
    with np.errstate(invalid="ignore"):
        e = np.exp(x - top)
    total = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(total == 0, 1.0, total)


def _softmax_at(x: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``softmax(x/τ)``, shifted by the row maximum first so that a tiny ``τ`` cannot overflow."""
    top = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return _softmax((x - np.where(np.isneginf(top), 0.0, top)) / tau)


def _jacobian_vector(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``J(q) v = q ⊙ v − q (qᵀv)``, with ``v`` read only where ``q > 0``."""
    qv = np.where(q > 0, q * v, 0.0)
    return qv - q * np.sum(qv, axis=-1, keepdims=True)


def _log_sum_exp(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isneginf(top), 0.0, top)
    with np.errstate(divide="ignore", invalid="ignore"):
        return top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True))


def _inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``i = #{k : c_k < u · c_{n−1}}`` clipped to ``n − 1``, for rows whose ``probs`` sum > 0."""
    c = np.cumsum(probs, axis=-1)
    target = u[..., None] * c[..., -1:]
    return np.minimum(np.sum(c < target, axis=-1), probs.shape[-1] - 1)


def _first_argmax(x: np.ndarray) -> np.ndarray:
    return np.argmax(x, axis=-1)  # NumPy resolves ties to the first index, as docs/SPEC.md asks.


def _one_hot(index: np.ndarray, n: int) -> np.ndarray:
    return (np.arange(n) == index[..., None]).astype(np.float64)


def _gumbel(u: np.ndarray) -> np.ndarray:
    return -np.log(-np.log(u))


def _tempered(q_logits: np.ndarray, g: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``(1/τ) J(softmax(q_logits/τ)) g``: the rule of ST, ST-GS and GST."""
    return _jacobian_vector(_softmax_at(q_logits, tau), g) / tau


def _rows(
    estimator: str,
    theta: np.ndarray,
    noise: np.ndarray,
    tau: np.ndarray,
    g: np.ndarray,
    opts: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """First output and the backward rule applied to ``g``, for ordinary rows (core layout)."""
    n = theta.shape[-1]
    pi = _softmax(theta)
    if estimator in ("straight_through", "reinmax", "gapped_straight_through"):
        d = _one_hot(_inverse_cdf(pi, noise), n)
        if estimator == "straight_through":
            return d, _tempered(theta, g, tau)
        if estimator == "reinmax":
            pi_d = 0.5 * (_softmax_at(theta, tau) + d)
            return d, 2.0 * _jacobian_vector(pi_d, g) - 0.5 * _jacobian_vector(pi, g)
        top = np.max(theta, axis=-1, keepdims=True)
        if opts["gap"] == "p":
            p = np.sum(d * pi, axis=-1, keepdims=True) * (1.0 - 1e-5)
            gap = -np.log1p(-p) / p
        else:
            gap = float(opts["gap"])
        gapped = np.where(d == 1, top, np.minimum(theta, top - gap))
        return d, _tempered(gapped, g, tau)
    if estimator == "gumbel_softmax":
        perturbed = theta + _gumbel(noise)
        y = _softmax_at(perturbed, tau)
        first = _one_hot(_first_argmax(perturbed), n) if opts["hard"] else y
        return first, _jacobian_vector(y, g) / tau
    if estimator == "zgr":
        d = _one_hot(_inverse_cdf(pi, noise), n)
        darn = np.sum(g * (d - pi), axis=-1, keepdims=True) * (d - pi)
        return d, 0.5 * _jacobian_vector(pi, g) + 0.5 * darn
    if estimator in ("reinmax_rao", "reinmax_cv"):
        return _reinmax_rao_rows(estimator, theta, noise, tau, g, opts)
    # gumbel_rao: noise[0] draws the sample, noise[1:] the K conditional perturbations.
    d = _one_hot(_first_argmax(theta + _gumbel(noise[0])), n)
    draws = _conditioned(theta, d, noise[1:])
    return d, np.mean([_tempered(y, g, tau) for y in draws], axis=0)


def _conditioned(theta: np.ndarray, d: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Gumbel perturbations of ``theta`` conditioned on ``argmax = i``, one per leading index."""
    log_e = np.log(-np.log(uniforms))
    log_z = _log_sum_exp(theta)
    log_e_i = np.sum(np.where(d == 1, log_e, 0.0), axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        others = -np.logaddexp(log_e - theta, log_e_i - log_z)
    return np.where(d == 1, log_z - log_e_i, others)


def _reinmax_rao_rows(estimator, theta, noise, tau, g, opts):
    """ReinMax-Rao and ReinMax-CV: the sample by inverse CDF from draw 0's first uniform, and
    conditioned draws around ``θ_D = log ½(π + D)``."""
    n = theta.shape[-1]
    pi = _softmax(theta)
    d = _one_hot(_inverse_cdf(pi, noise[0, :, 0]), n)
    pi_d = 0.5 * (pi + d)
    with np.errstate(divide="ignore"):
        theta_d = np.log(pi_d)
    draws = _conditioned(theta_d, d, noise[1:])
    if estimator == "reinmax_rao":
        rao = np.mean([_tempered(y, g, tau) for y in draws], axis=0)
        return d, 2.0 * rao - 0.5 * _jacobian_vector(pi, g)
    tau2 = tau if opts["tau2"] is None else opts["tau2"]
    many = np.mean([_tempered(y, g, tau2) for y in draws[:-1]], axis=0)
    control = opts["eta"] * (many - _tempered(draws[-1], g, tau2))
    return d, 2.0 * _jacobian_vector(pi_d, g) - 0.5 * _jacobian_vector(pi, g) + control


def evaluate(
    estimator: str,
    logits: Any,
    noise: Any,
    tau: Any = 1.0,
    g: Any = None,
    g_p: Any = None,
    *,
    axis: int = -1,
    dtype: Any = "float64",
    options: dict | None = None,
    unimix: float = 0.0,
) -> Result:
    """The oracle's ``(hard, soft, grad)`` for ``estimator`` on one input, in float64.

    ``unimix`` is ``ε`` of uniform mixing (docs/SPEC.md): the estimator works with
    ``(1 − ε) π + ε/m`` over the ``m`` categories that are not masked.

    ``logits`` of any shape; ``noise`` in the user layout (:func:`noise_shape`); ``tau`` a
    positive number or an array broadcastable to the batch shape; ``g``, ``g_p`` the cotangents
    of the two outputs (``None`` for zeros). ``grad = rule(g) + J(π) g_p``. Masked (``-inf``)
    categories are never sampled and get zero gradient; an all ``-inf`` row gives zeros
    everywhere; a row with a NaN or ``+inf`` logit gives NaN everywhere in that row.
    """
    opts = _options(estimator, options)
    dtype = numpy_dtype(dtype)
    compute = compute_dtype(dtype)
    logits = np.asarray(logits).astype(dtype).astype(np.float64)
    if logits.ndim == 0:
        raise ValueError("logits must have at least one axis")
    shape = logits.shape
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis {axis} is out of range for logits with {len(shape)} dimensions")
    axis %= len(shape)
    expected = noise_shape(estimator, shape, axis=axis, options=opts)
    noise = np.asarray(noise)
    if noise.shape != expected:
        raise ValueError(f"noise must have shape {expected}, got {noise.shape}")
    if isinstance(tau, (int, float)) and not isinstance(tau, bool) and not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    info = np.finfo(compute)
    noise = np.clip(noise.astype(compute), info.tiny, 1.0 - info.eps).astype(np.float64)
    g = np.zeros(shape) if g is None else np.broadcast_to(np.asarray(g).astype(dtype), shape)
    g_p = np.zeros(shape) if g_p is None else np.broadcast_to(np.asarray(g_p).astype(dtype), shape)
    core = _Core.of(estimator, logits, noise, tau, g, g_p, axis, compute)
    rows = _evaluate_rows(estimator, core, opts, unimix)
    return Result(*(core.to_user(a) for a in rows))


class _Core(NamedTuple):
    """One input in the core layout: categories last, the rows flattened into one batch axis."""

    theta: np.ndarray
    noise: np.ndarray
    tau: np.ndarray
    g: np.ndarray
    g_p: np.ndarray
    shape: tuple[int, ...]
    axis: int

    @classmethod
    def of(cls, estimator, logits, noise, tau, g, g_p, axis, compute) -> _Core:
        theta = np.moveaxis(logits, axis, -1)
        shape = theta.shape
        n, batch = shape[-1], shape[:-1]
        rows = int(np.prod(batch, dtype=np.int64))
        if estimator == "gumbel_softmax":
            noise = np.moveaxis(noise, axis, -1).reshape(rows, n)
        elif estimator in _DRAWS:
            noise = np.moveaxis(noise, axis + 1, -1).reshape(noise.shape[0], rows, n)
        else:
            noise = noise.reshape(rows)
        tau = np.broadcast_to(np.asarray(tau).astype(compute).astype(np.float64), batch)
        return cls(
            theta.reshape(rows, n),
            noise,
            tau.reshape(rows, 1),
            np.moveaxis(g.astype(np.float64), axis, -1).reshape(rows, n),
            np.moveaxis(g_p.astype(np.float64), axis, -1).reshape(rows, n),
            shape,
            axis,
        )

    def to_user(self, x: np.ndarray) -> np.ndarray:
        return np.moveaxis(x.reshape(self.shape), -1, self.axis)


def _evaluate_rows(
    estimator: str, core: _Core, opts: dict, unimix: float = 0.0
) -> tuple[np.ndarray, ...]:
    """``(first, soft, grad)`` in the core layout: ordinary rows by the estimator's formulas,
    empty rows zero, broken rows NaN."""
    theta = core.theta
    first, grad = np.zeros(theta.shape), np.zeros(theta.shape)
    pi = _softmax(theta)
    broken = np.any(np.isnan(theta) | np.isposinf(theta), axis=-1)
    empty = np.all(np.isneginf(theta), axis=-1) & ~broken
    ordinary = ~broken & ~empty
    if np.any(ordinary):
        pick = (..., ordinary, slice(None)) if estimator in _DRAWS else ordinary
        rows = theta[ordinary]
        if unimix:
            # The estimator on log π_ε, then the chain rule back to θ: (1 − ε) J(π)(v / π_ε).
            allowed = ~np.isneginf(rows)
            mixed = (1 - unimix) * pi[ordinary] + unimix / allowed.sum(-1, keepdims=True)
            mixed = np.where(allowed, mixed, 0.0)
            with np.errstate(divide="ignore"):
                rows = np.log(mixed)
        sample, rule = _rows(
            estimator, rows, core.noise[pick], core.tau[ordinary], core.g[ordinary], opts
        )
        if unimix:
            ratio = np.where(mixed > 0, rule / np.where(mixed > 0, mixed, 1.0), 0.0)
            rule = (1 - unimix) * _jacobian_vector(pi[ordinary], ratio)
        first[ordinary] = sample
        grad[ordinary] = rule + _jacobian_vector(pi[ordinary], core.g_p[ordinary])
    pi[empty] = 0.0
    for arr in (first, pi, grad):
        arr[broken] = np.nan
    return first, pi, grad

"""Gradient diagnostics: how good is an estimator's gradient, for your ``f`` and your logits?

Draw ``N`` gradients of ``E[f(D)]`` with any estimator, in the framework of ``logits``, and
compare them with the exact gradient, computed by enumerating every joint sample where there are
few (``n^R`` for ``R`` rows of ``n`` categories)::

    import torch, reinmax.diagnostics as rd

    logits = torch.randn(3, 4)
    target = torch.randn(3, 4)
    f = lambda d: ((d - target) ** 2).sum(dim=(-2, -1))      # (S, 3, 4) -> (S,)
    report = rd.diagnose("reinmax", logits, f, tau=1.0, draws=1024, rng=0)
    report.summary()   # relative_std, relative_bias, cosine, ... as floats

``f`` takes a batch of samples with a leading draw axis, ``(S, *logits.shape)``, and returns
each draw's value, ``(S, *logits.shape[:batch_axes])``: with ``batch_axes = b`` the first ``b``
axes of ``logits`` are independent problems (the images of a VAE batch), each with its own
statistics, averaged in :meth:`Diagnosis.summary`. ``f`` is written in the framework of
``logits`` and differentiated by it; NumPy differentiates only this library's functions, so
there ``grad_f(D) -> ∂f/∂D`` (the cotangent of the sample) is given too.

The noise is portable (``rng`` an int or :class:`reinmax.Seed`, docs/SPEC.md): the draws are
the same in every backend, and do not depend on ``chunk``.

The statistics, per problem, with ``ĝ_s`` the draws, ``m`` their mean, ``σ`` their per-entry
standard deviation (``S − 1`` in the denominator) and ``g`` the exact gradient:

- ``relative_std = ‖σ‖ / ‖m‖``: the variance measure of Wang & Bui (2026);
- ``relative_bias = ‖m − g‖ / ‖g‖``, with ``bias_noise_floor = ‖σ‖ / (√S ‖g‖)``, the size of
  ``m − g`` that Monte Carlo error alone gives: a relative bias near it is not resolved;
- ``cosine = cos(m, g)`` and ``draw_cosine``, the mean of ``cos(ĝ_s, g)`` over draws.

A ratio whose denominator is 0 is 0 when its numerator is 0 too, else ``inf``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from reinmax import api
from reinmax._dispatch import backend_for
from reinmax.backends import load_driver
from reinmax.core import Estimator, is_bool, positive_int
from reinmax.noise import Seed, as_seed

__all__ = [
    "ENUMERATION_LIMIT",
    "Diagnosis",
    "diagnose",
    "exact_gradient",
    "gradient_draws",
    "gradient_statistics",
]

ENUMERATION_LIMIT = 1 << 16
"""The most joint samples :func:`exact_gradient` enumerates (``n^R``, per problem)."""

_CHUNK_ENTRIES = 1 << 22
"""Logit entries per batch of draws by default: ``chunk = max(1, 2^22 // logits.size)``."""

SampleFunction = Callable[[Any], Any]
_FUNCTIONS = api.Functions(resolve=backend_for)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """``S`` gradient draws summarised, per problem (float64 NumPy arrays of the logits' shape).

    Attributes:
        draws: ``S``.
        batch_axes: how many leading axes of the logits are independent problems.
        mean: the mean of the draws.
        variance: their per-entry variance (``S − 1`` in the denominator).
        exact: the exact gradient, or None where it was not computed.
        draw_cosine: per problem, the mean cosine of single draws with ``exact`` (or None).

    Examples:
        >>> import numpy as np
        >>> from reinmax.diagnostics import gradient_statistics
        >>> stats = gradient_statistics(np.array([[[1.0, -1.0]], [[3.0, -3.0]]]))
        >>> stats.draws, stats.mean
        (2, array([[ 2., -2.]]))
    """

    draws: int
    batch_axes: int
    mean: np.ndarray
    variance: np.ndarray
    exact: np.ndarray | None = None
    draw_cosine: np.ndarray | None = None

    @property
    def bias(self) -> np.ndarray | None:
        """``mean − exact``, or None without the exact gradient."""
        return None if self.exact is None else self.mean - self.exact

    def _norm(self, x: np.ndarray) -> np.ndarray:
        return np.linalg.norm(x.reshape(*x.shape[: self.batch_axes], -1), axis=-1)

    def relative_std(self) -> np.ndarray:
        """``‖σ‖ / ‖m‖`` per problem."""
        return _ratio(self._norm(np.sqrt(self.variance)), self._norm(self.mean))

    def relative_bias(self) -> np.ndarray | None:
        """``‖m − g‖ / ‖g‖`` per problem (None without the exact gradient)."""
        if self.exact is None:
            return None
        return _ratio(self._norm(self.mean - self.exact), self._norm(self.exact))

    def bias_noise_floor(self) -> np.ndarray | None:
        """``‖σ‖ / (√S ‖g‖)`` per problem: the relative bias Monte Carlo error alone shows."""
        if self.exact is None:
            return None
        spread = self._norm(np.sqrt(self.variance)) / math.sqrt(self.draws)
        return _ratio(spread, self._norm(self.exact))

    def cosine(self) -> np.ndarray | None:
        """``cos(m, g)`` per problem (None without the exact gradient)."""
        if self.exact is None:
            return None
        return _cosine(self.mean, self.exact, self.batch_axes)

    def summary(self) -> dict[str, float | int | None]:
        """Every statistic averaged over problems, as JSON-ready numbers (None where the exact
        gradient was not computed)."""

        def average(values: np.ndarray | None) -> float | None:
            return None if values is None else float(np.mean(values))

        return {
            "draws": self.draws,
            "problems": int(np.prod(self.mean.shape[: self.batch_axes], dtype=np.int64)),
            "relative_std": average(self.relative_std()),
            "relative_bias": average(self.relative_bias()),
            "bias_noise_floor": average(self.bias_noise_floor()),
            "cosine": average(self.cosine()),
            "draw_cosine": average(self.draw_cosine),
            "mean_norm": average(self._norm(self.mean)),
            "exact_norm": None if self.exact is None else average(self._norm(self.exact)),
        }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with ``0/0 = 0`` and ``x/0 = inf``: a number, never NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator / denominator
    return np.where(denominator > 0, ratio, np.where(numerator > 0, np.inf, 0.0))


def _cosine(a: np.ndarray, b: np.ndarray, batch_axes: int) -> np.ndarray:
    """The cosine of ``a`` and ``b`` per problem (0 where either is 0)."""
    return _cosine_of_flat(
        a.reshape(*a.shape[:batch_axes], -1), b.reshape(*b.shape[:batch_axes], -1)
    )


def _cosine_of_flat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine over the last axis, broadcasting the others (0 where either is 0)."""
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.sum(a * b, axis=-1) / norms
    return np.where(norms > 0, cosine, 0.0)


# ---------------------------------------------------------------------------------------------
# Statistics of draws
# ---------------------------------------------------------------------------------------------


def gradient_statistics(draws: Any, exact: Any | None = None, *, batch_axes: int = 0) -> Diagnosis:
    """Summarise ``draws`` ``(S, *shape)`` of a gradient, against ``exact`` ``shape`` if given.

    Raises:
        ValueError: fewer than 2 draws, ``exact`` of another shape, or ``batch_axes`` outside
            ``[0, ndim − 1)`` of ``shape``.

    Examples:
        >>> import numpy as np
        >>> from reinmax.diagnostics import gradient_statistics
        >>> draws = np.array([[[0.0, 1.0]], [[2.0, 1.0]], [[4.0, 1.0]]])
        >>> gradient_statistics(draws, exact=np.array([[2.0, 1.0]])).variance
        array([[4., 0.]])
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim < 2 or draws.shape[0] < 2:
        raise ValueError(
            f"draws must have shape (S, ...) with S >= 2 draws, got shape {draws.shape}"
        )
    shape = draws.shape[1:]
    _check_batch_axes(batch_axes, len(shape))
    mean = draws.mean(axis=0)
    variance = draws.var(axis=0, ddof=1)
    if exact is None:
        return Diagnosis(draws.shape[0], batch_axes, mean, variance)
    exact = np.asarray(exact, dtype=np.float64)
    if exact.shape != shape:
        raise ValueError(f"exact must have the draws' shape {shape}, got {exact.shape}")
    per_draw = _cosine_of_draws(draws, exact, batch_axes)
    return Diagnosis(draws.shape[0], batch_axes, mean, variance, exact, per_draw)


def _cosine_of_draws(draws: np.ndarray, exact: np.ndarray, batch_axes: int) -> np.ndarray:
    problems = exact.shape[:batch_axes]
    flat_draws = draws.reshape(draws.shape[0], *problems, -1)
    flat_exact = exact.reshape(*problems, -1)
    return _cosine_of_flat(flat_draws, flat_exact[None]).mean(axis=0)


def _check_batch_axes(batch_axes: object, ndim: int) -> int:
    if is_bool(batch_axes) or not isinstance(batch_axes, int) or not 0 <= batch_axes < ndim - 1:
        raise ValueError(
            f"batch_axes must be an integer in [0, {ndim - 1}) for logits with {ndim} axes "
            f"(the last holds the categories, and each problem needs at least one row), got "
            f"{batch_axes!r}"
        )
    return batch_axes


# ---------------------------------------------------------------------------------------------
# Drawing gradients in any backend
# ---------------------------------------------------------------------------------------------


def gradient_draws(
    estimator: str | Estimator,
    logits: Any,
    f: SampleFunction,
    *,
    tau: float = 1.0,
    draws: int = 1024,
    rng: int | Seed = 0,
    grad_f: SampleFunction | None = None,
    chunk: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """``draws`` gradients of ``E[f(D)]`` with respect to ``logits`` by ``estimator``, as a
    float64 NumPy array ``(draws, *logits.shape)``.

    Args:
        estimator: a registered name (with ``options``, ``unimix`` among them) or an
            :class:`~reinmax.core.Estimator`.
        logits: the logits, categories on the last axis, in any backend's array type.
        f: ``f(samples (S, *logits.shape)) -> values`` in that framework; the gradient is that
            of the sum of the values (so draws must not interact in ``f``).
        draws: how many gradients.
        rng: an int or :class:`~reinmax.Seed`: draw ``s`` takes the rows after those of draws
            ``0 … s−1``, so the result depends neither on ``chunk`` nor on the backend.
        grad_f: ``grad_f(samples) -> ∂f/∂samples``; needed where the framework cannot
            differentiate ``f`` (NumPy), used instead of its autodiff where given.
        chunk: draws per call (default: about 4M logit entries per call).

    Raises:
        ValueError: ``draws`` or ``chunk`` not a positive integer; ``grad_f`` missing for NumPy.
        TypeError: ``rng`` not an int or Seed, ``f`` not callable.

    Examples:
        >>> import numpy as np
        >>> from reinmax.diagnostics import gradient_draws
        >>> grad_f = lambda d: np.broadcast_to([1.0, 0.0, 0.0], d.shape)  # f(D) = D_0
        >>> draws = gradient_draws(
        ...     "zgr", np.zeros((1, 3)), lambda d: d[..., 0, 0], grad_f=grad_f, draws=8
        ... )
        >>> draws.shape
        (8, 1, 3)
    """
    draws = positive_int("draws", draws, "how many gradients to draw")
    seed = _portable_seed(rng)
    if not callable(f):
        raise TypeError(f"f must be a function of the samples, got {type(f).__name__}")
    backend = backend_for(logits)
    driver = load_driver(backend.name)
    if grad_f is None and not driver.native_autodiff:
        raise ValueError(
            f"the {backend.name} backend differentiates only this library's functions: pass "
            "grad_f(samples) -> df/dsamples"
        )
    built = api.resolve_estimator(estimator, options)
    shape = tuple(int(d) for d in logits.shape)
    per_call = _per_call(draws, chunk, shape)
    rows_per_draw = math.prod(shape[:-1])
    xp = backend.xp
    single = xp.reshape(logits, (1, *shape))
    out = []
    for start in range(0, draws, per_call):
        count = min(per_call, draws - start)
        tiled = xp.broadcast_to(single, (count, *shape))
        rows = seed._replace(row=seed.row + start * rows_per_draw)

        def call(x: Any, rows: Seed = rows) -> tuple[Any, Any]:
            return _FUNCTIONS.estimate(built, x, tau, rng=rows)

        out.append(driver.to_numpy(_gradient(driver, xp, call, tiled, f, grad_f)))
    return np.concatenate(out, axis=0)


def _per_call(draws: int, chunk: int | None, shape: tuple[int, ...]) -> int:
    """Draws per call: ``chunk``, or as many as fit in about 4M logit entries."""
    if chunk is not None:
        return positive_int("chunk", chunk, "draws per call")
    return min(draws, max(1, _CHUNK_ENTRIES // max(1, math.prod(shape))))


def _gradient(
    driver: Any,
    xp: Any,
    call: Callable[[Any], tuple[Any, Any]],
    tiled: Any,
    f: SampleFunction,
    grad_f: SampleFunction | None,
) -> Any:
    if grad_f is None:
        return driver.grad(lambda x: xp.sum(f(call(x)[0])), tiled)
    hard = call(tiled)[0]
    _, grad = driver.vjp(call, tiled, (grad_f(hard), xp.zeros_like(hard)))
    return grad


def _portable_seed(rng: object) -> Seed:
    seed = as_seed(rng)
    if seed is None or not isinstance(seed.stream, int) or not isinstance(seed.row, int):
        raise TypeError(
            "rng must be an int or a reinmax.Seed of Python ints (portable noise, so that the "
            f"draws are the same in every backend and every chunking), got {rng!r}"
        )
    return seed


# ---------------------------------------------------------------------------------------------
# The exact gradient by enumeration
# ---------------------------------------------------------------------------------------------


def exact_gradient(
    logits: Any,
    f: SampleFunction,
    *,
    batch_axes: int = 0,
    unimix: float = 0.0,
    chunk: int = 4096,
    limit: int = ENUMERATION_LIMIT,
) -> np.ndarray:
    """``∇θ E[f(D)]`` exactly, a float64 NumPy array of the logits' shape.

    Every joint configuration of the ``R`` rows of a problem is enumerated (``n^R``, at most
    ``limit``), all problems at once: ``Σ_D P(D) f(D) ∇θ log P(D)``, where row ``l`` of
    ``∇θ log P(D)`` is ``(1 − ε)(π_i / π_ε,i)(e_i − π)`` for its category ``i`` and
    ``π_ε = (1 − ε) π + ε/m`` (``ε = unimix``; ``e_i − π`` without mixing). ``f`` is called on
    batches of ``chunk`` configurations in the framework of ``logits``, as in
    :func:`gradient_draws`; it must return one value per problem.

    Raises:
        ValueError: more than ``limit`` configurations, or ``f`` returning another shape.

    Examples:
        >>> import numpy as np
        >>> from reinmax.diagnostics import exact_gradient
        >>> g = exact_gradient(np.zeros((1, 2)), lambda d: d[..., 0, 0])  # E[f] = π_0
        >>> g.round(4)
        array([[ 0.25, -0.25]])
    """
    backend = backend_for(logits)
    driver = load_driver(backend.name)
    host = driver.to_numpy(logits)
    _check_batch_axes(batch_axes, host.ndim)
    problems, rows, n = host.shape[:batch_axes], host.shape[batch_axes:-1], host.shape[-1]
    count = n ** math.prod(rows)
    if count > limit:
        raise ValueError(
            f"the exact gradient enumerates n^R = {n}^{math.prod(rows)} = {count} joint samples "
            f"per problem; at most limit={limit}"
        )
    probs, mixed, score_scale = _mixed_probabilities(host, unimix)
    total = np.zeros_like(host)
    for indices in _batches(n, math.prod(rows), positive_int("chunk", chunk, "configurations")):
        one_hot = np.eye(n)[indices].reshape(len(indices), *([1] * batch_axes), *rows, n)
        samples = np.broadcast_to(one_hot, (len(indices), *host.shape))
        chosen = np.sum(samples * mixed, axis=-1)  # (M, *problems, *rows)
        probability = np.prod(chosen.reshape(*chosen.shape[: 1 + batch_axes], -1), axis=-1)
        values = _values(f, driver.asarray(samples, _dtype_name(backend, logits)), driver)
        if values.shape != (len(indices), *problems):
            raise ValueError(
                f"f must return one value per draw and problem, shape "
                f"{(len(indices), *problems)}, got {values.shape}"
            )
        ratio = np.sum(samples * score_scale, axis=-1, keepdims=True)
        score = ratio * (samples - probs)
        weight = (probability * values).reshape(*values.shape, *([1] * (len(rows) + 1)))
        total += np.sum(weight * score, axis=0)
    return total


def _mixed_probabilities(
    logits: np.ndarray, unimix: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(π, π_ε, (1 − ε) π / π_ε)`` in float64 (the last 0 where ``π_ε = 0``)."""
    if not (isinstance(unimix, (int, float)) and not is_bool(unimix) and 0 <= unimix < 1):
        raise ValueError(f"unimix must be a number in [0, 1), got {unimix!r}")
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    weights = np.exp(shifted)
    probs = weights / np.sum(weights, axis=-1, keepdims=True)
    allowed = logits > -np.inf
    share = unimix / np.maximum(np.sum(allowed, axis=-1, keepdims=True), 1)
    mixed = np.where(allowed, (1.0 - unimix) * probs + share, 0.0)
    scale = np.divide((1.0 - unimix) * probs, mixed, out=np.zeros_like(probs), where=mixed > 0)
    return probs, mixed, scale


def _batches(n: int, rows: int, chunk: int) -> Any:
    configurations = itertools.product(range(n), repeat=rows)
    while batch := list(itertools.islice(configurations, chunk)):
        yield np.array(batch, dtype=np.intp).reshape(len(batch), rows)


def _values(f: SampleFunction, samples: Any, driver: Any) -> np.ndarray:
    return np.asarray(driver.to_numpy(f(samples)), dtype=np.float64)


def _dtype_name(backend: Any, logits: Any) -> str:
    bits = backend.float_bits(logits.dtype)
    if bits is None:
        raise TypeError(f"logits must be a real floating-point array, got dtype {logits.dtype}")
    return "bfloat16" if "bfloat16" in str(logits.dtype) else f"float{bits}"


# ---------------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------------


def diagnose(
    estimator: str | Estimator,
    logits: Any,
    f: SampleFunction,
    *,
    tau: float = 1.0,
    draws: int = 1024,
    rng: int | Seed = 0,
    grad_f: SampleFunction | None = None,
    exact: bool | None = None,
    batch_axes: int = 0,
    chunk: int | None = None,
    **options: Any,
) -> Diagnosis:
    """Draw ``draws`` gradients (:func:`gradient_draws`) and summarise them against the exact
    gradient (:func:`exact_gradient`).

    ``exact``: None computes it where the enumeration is within :data:`ENUMERATION_LIMIT`, True
    requires it, False skips it. ``options`` are the estimator's (``k``, ``unimix``, ...); the
    exact gradient is that of the distribution the estimator samples (``π_ε`` with ``unimix``).

    Examples:
        >>> import numpy as np
        >>> from reinmax.diagnostics import diagnose
        >>> logits = np.log([[0.2, 0.3, 0.5]])
        >>> weights = np.array([1.0, -1.0, 2.0])
        >>> f = lambda d: (d * weights).sum((-2, -1))
        >>> grad_f = lambda d: np.broadcast_to(weights, d.shape)
        >>> result = diagnose("reinmax", logits, f, grad_f=grad_f, draws=256)
        >>> result.mean.shape, result.exact.shape
        ((1, 3), (1, 3))
    """
    _check_batch_axes(batch_axes, len(logits.shape))
    sampled = gradient_draws(
        estimator,
        logits,
        f,
        tau=tau,
        draws=draws,
        rng=rng,
        grad_f=grad_f,
        chunk=chunk,
        options=options,
    )
    want = exact if exact is not None else _enumerable(logits.shape, batch_axes)
    reference = (
        exact_gradient(logits, f, batch_axes=batch_axes, unimix=options.get("unimix", 0.0))
        if want
        else None
    )
    return gradient_statistics(sampled, reference, batch_axes=batch_axes)


def _enumerable(shape: tuple, batch_axes: int) -> bool:
    rows = math.prod(int(d) for d in shape[batch_axes:-1])
    return int(shape[-1]) ** rows <= ENUMERATION_LIMIT

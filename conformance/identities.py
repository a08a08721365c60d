"""docs/SPEC.md's exact identities 1 to 8, each a function that returns records.

Every identity function takes a :class:`Target` (where to run: a backend, dtype and transform,
given as the functions the checks need; :data:`NUMPY` by default, others from
:func:`reinmax.conformance.suite.target`) and a mapping ``estimators`` of name to
:class:`~reinmax.core.Estimator` (the registered ones by default; a user's estimator registered
under a name is checked by the identities that apply to that name, and by 5 and 8 in any case).
Each returns a list of records::

    {"identity": 2, "estimator": "reinmax", "check": "quadratic, exact", "value": 3.1e-16,
     "passed": True, "detail": "...", "backend": "numpy", "dtype": "float64", "transform": "eager"}

``value`` is the number the check is about (a relative error, a fitted slope, a z-score or a
p-value; ``detail`` says which and the threshold). An exception inside a check is a failed
record, never a crash of the suite.

1. ST at τ = 1 is exact for affine f, and not for quadratic f (negative control).
2. ReinMax at τ = 1 is exact for quadratic f (cross terms between rows included), not for cubic.
3. Order of accuracy: for ``f_ε(D) = exp(ε cᵀD)`` the bias of ST shrinks like ε², ReinMax's like ε³.
4. ReinMax at τ = 1 equals ``½ J(π) g + ½ (gᵀ(D − π))(D − π)`` for every sample; at τ = 0.5 and
   1.7, ReinMax and ST equal their closed forms expanded around ``p_τ = softmax(θ/τ)``.
5. Every rule sums to zero over the categories; a constant added to a row's logits changes neither
   the sample nor the gradient.
6. REINFORCE is exact in expectation for any f (a random table over the joint samples).
7. Gumbel-Rao's conditioned logits have ``argmax ỹ^k = i`` for every draw, and its mean equals
   ST-Gumbel-Softmax's (Monte Carlo, z-score of the difference).
8. Sample frequencies of every sampler match π (chi-square, fixed seed); masked categories are
   never drawn.
9. ZGR equals ReinMax at τ = 1 for every sample, is exact for quadratic f, and is the limit of
   Gumbel-Rao's mean as τ → 0 (within Monte Carlo error at τ = 0.05, far from it at τ = 1).
10. ReinMax-CV's control variate has zero mean (its mean is ReinMax's at τ = 1 for a cubic f) and
    it is exact for quadratic f, within Monte Carlo error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from reinmax.conformance.enumeration import (
    Runner,
    _numpy_reinforce_gradient,
    exact_gradient,
    expected_estimate,
    expected_reinforce,
    monte_carlo_estimate,
    numpy_runner,
    rules_by_sample,
)
from reinmax.core import REGISTRY, Estimator, gumbel_softmax_estimator, softmax

__all__ = [
    "IDENTITIES",
    "NUMPY",
    "Target",
    "chi_square_p_value",
    "identity_1",
    "identity_2",
    "identity_3",
    "identity_4",
    "identity_5",
    "identity_6",
    "identity_7",
    "identity_8",
    "identity_9",
    "identity_10",
    "run_identities",
]

Record = dict[str, Any]


def _numpy_forward(
    estimator: Estimator, logits: np.ndarray, noise: np.ndarray, tau: float
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    x = np.asarray(logits, dtype=np.float64)
    return estimator.forward(x, softmax(x, xp=np), noise, np.float64(tau), xp=np)


class Target(NamedTuple):
    """Where the identities run, as the three functions they need.

    Attributes:
        backend, dtype, transform: labels copied into every record.
        runner: a :data:`~reinmax.conformance.enumeration.Runner` (estimator rules).
        reinforce_gradient: ``(logits, hard, value, baseline) -> grad`` of the summed REINFORCE
            surrogate, NumPy in and out.
        forward: ``(estimator, logits, noise, tau) -> (hard, residuals)``: the estimator's core
            forward in the backend's namespace, as NumPy (identity 7 reads the residuals).
    """

    backend: str
    dtype: str
    transform: str
    runner: Runner
    reinforce_gradient: Callable[..., np.ndarray]
    forward: Callable[..., tuple[np.ndarray, tuple[np.ndarray, ...]]]


NUMPY = Target("numpy", "float64", "eager", numpy_runner, _numpy_reinforce_gradient, _numpy_forward)
"""The library's NumPy backend in float64, eager."""


def _default_estimators() -> dict[str, Estimator]:
    return {name: factory() for name, factory in REGISTRY.items()}


def _tolerance(target: Target) -> float:
    """Relative tolerance of an exact identity: a thousand ulps of the target's dtype."""
    return 1000.0 * float(np.finfo(target.dtype).eps)


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(expected))), float(np.finfo(np.float64).tiny))
    return float(np.max(np.abs(np.asarray(actual) - expected))) / scale


def _record(
    target: Target, identity: int, estimator: str, check: str, value: float, passed: bool, detail
) -> Record:
    return {
        "identity": identity,
        "estimator": estimator,
        "check": check,
        "value": float(value),
        "passed": bool(passed),
        "detail": detail,
        "backend": target.backend,
        "dtype": target.dtype,
        "transform": target.transform,
    }


def _guarded(target: Target, identity: int, estimator: str, check: str, fn: Callable) -> Record:
    """Run one check; an exception is reported as a failed record naming it."""
    try:
        return fn()
    except Exception as error:
        detail = f"raised {type(error).__name__}: {error}"
        return _record(target, identity, estimator, check, math.nan, False, detail)


def _problem(seed: int, rows: int = 2, n: int = 3) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.Generator(np.random.Philox(seed))
    return rng.normal(size=(rows, n)), rng


def _exactness(
    target: Target,
    identity: int,
    estimator: Estimator,
    check: str,
    f: Callable,
    grad_f: Callable,
    logits: np.ndarray,
    exact: bool,
) -> Record:
    """Whether ``E[rule]`` equals the true gradient (``exact``) or visibly does not (a control)."""

    def check_fn() -> Record:
        truth = exact_gradient(logits, f)
        estimate = expected_estimate(estimator, logits, grad_f, 1.0, runner=target.runner)
        error = _relative_error(estimate, truth)
        if exact:
            tol = _tolerance(target)
            passed, detail = (
                error <= tol,
                f"relative error of E[rule] vs ∇E[f]; must be ≤ {tol:.1e}",
            )
        else:
            passed = error >= 1e-2
            detail = "relative error of E[rule] vs ∇E[f]; a negative control: must be ≥ 1e-2"
        return _record(target, identity, estimator.name, check, error, passed, detail)

    return _guarded(target, identity, estimator.name, check, check_fn)


def _affine(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[Callable, Callable]:
    a, b = rng.normal(size=shape), float(rng.normal())
    return (lambda d: float(np.sum(a * d)) + b), (lambda d: a)


def _quadratic(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[Callable, Callable]:
    """``dᵀAd + aᵀd`` over the flattened joint sample: cross terms within and between rows."""
    size = int(np.prod(shape))
    a, lin = rng.normal(size=(size, size)), rng.normal(size=size)

    def f(d: np.ndarray) -> float:
        x = d.ravel()
        return float(x @ a @ x + lin @ x)

    def grad_f(d: np.ndarray) -> np.ndarray:
        return ((a + a.T) @ d.ravel() + lin).reshape(d.shape)

    return f, grad_f


def _cubic(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[Callable, Callable]:
    w = rng.normal(size=shape)
    return (lambda d: float(np.sum(w * d)) ** 3), (lambda d: 3.0 * float(np.sum(w * d)) ** 2 * w)


def identity_1(target: Target = NUMPY, estimators: Mapping[str, Estimator] | None = None):
    """ST at τ = 1: exact for affine f, not for quadratic f (negative control)."""
    estimators = _default_estimators() if estimators is None else estimators
    if "straight_through" not in estimators:
        return []
    est = estimators["straight_through"]
    logits, rng = _problem(1)
    return [
        _exactness(target, 1, est, "affine, exact", *_affine(rng, logits.shape), logits, True),
        _exactness(
            target, 1, est, "quadratic, not exact", *_quadratic(rng, logits.shape), logits, False
        ),
    ]


def identity_2(target: Target = NUMPY, estimators: Mapping[str, Estimator] | None = None):
    """ReinMax at τ = 1: exact for quadratic f across several rows, not for cubic f."""
    estimators = _default_estimators() if estimators is None else estimators
    if "reinmax" not in estimators:
        return []
    est = estimators["reinmax"]
    logits, rng = _problem(2, rows=3)
    return [
        _exactness(
            target,
            2,
            est,
            "quadratic (3 rows), exact",
            *_quadratic(rng, logits.shape),
            logits,
            True,
        ),
        _exactness(target, 2, est, "cubic, not exact", *_cubic(rng, logits.shape), logits, False),
    ]


def identity_3(
    target: Target = NUMPY,
    estimators: Mapping[str, Estimator] | None = None,
    epsilons: tuple[float, ...] = (0.2, 0.1, 0.05, 0.025),
):
    """Order of accuracy: the slope of log|bias| against log ε, ST ≈ 2 and ReinMax ≈ 3."""
    estimators = _default_estimators() if estimators is None else estimators
    logits, rng = _problem(3)
    c = rng.normal(size=logits.shape)
    records = []
    for name, order in (("straight_through", 2.0), ("reinmax", 3.0)):
        if name not in estimators:
            continue
        est = estimators[name]

        def check_fn(est: Estimator = est, order: float = order) -> Record:
            biases = []
            for eps in epsilons:

                def f(d: np.ndarray, eps: float = eps) -> float:
                    return math.exp(eps * float(np.sum(c * d)))

                def grad_f(d: np.ndarray, eps: float = eps) -> np.ndarray:
                    return eps * math.exp(eps * float(np.sum(c * d))) * c

                estimate = expected_estimate(est, logits, grad_f, 1.0, runner=target.runner)
                biases.append(float(np.linalg.norm(estimate - exact_gradient(logits, f))))
            slope = float(np.polyfit(np.log(epsilons), np.log(biases), 1)[0])
            detail = (
                f"slope of log|bias| vs log ε over ε = {list(epsilons)} for f = exp(ε cᵀD); "
                f"must be {order:g} ± 0.3 (biases {', '.join(f'{b:.2e}' for b in biases)})"
            )
            passed = abs(slope - order) <= 0.3
            return _record(target, 3, est.name, "order of accuracy", slope, passed, detail)

        records.append(_guarded(target, 3, est.name, "order of accuracy", check_fn))
    return records


TEMPERED = (0.5, 1.7)
"""The temperatures of the closed forms away from τ = 1 (identity 4)."""


def _jacobian(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    return q * v - q * np.sum(q * v, axis=-1, keepdims=True)


def _reinmax_closed_form(samples, g, logits, tau):
    """``2 J(½(p_τ + D)) g − ½ J(π) g`` expanded: ``p⊙g + D⊙g − ½(p + D)(pᵀg + g_i)`` minus
    ``½ J(π) g``, with ``p = softmax(θ/τ)`` (at τ = 1 it is the closed form of SPEC.md)."""
    p = softmax(logits, np.asarray(tau), xp=np)
    pi = softmax(logits, xp=np)
    g_i = np.sum(samples * g, axis=-1, keepdims=True)
    p_g = np.sum(p * g, axis=-1, keepdims=True)
    return p * g + samples * g - 0.5 * (p + samples) * (p_g + g_i) - 0.5 * _jacobian(pi, g)


def _straight_through_closed_form(samples, g, logits, tau):
    """``(1/τ) (p⊙g − p (pᵀg))`` with ``p = softmax(θ/τ)``, whatever the sample."""
    return _jacobian(softmax(logits, np.asarray(tau), xp=np), g) / tau


def identity_4(target: Target = NUMPY, estimators: Mapping[str, Estimator] | None = None):
    """ReinMax at τ = 1 equals ``½ J(π) g + ½ (gᵀ(D − π))(D − π)`` for every joint sample; away
    from τ = 1, ReinMax and ST equal their expanded closed forms (which catch a temperature
    applied in the wrong place, or not at all)."""
    estimators = _default_estimators() if estimators is None else estimators
    logits, rng = _problem(4, rows=2, n=4)
    _, grad_f = _quadratic(rng, logits.shape)
    probs = softmax(logits, xp=np)

    def at_one(samples, g, logits, tau):
        centered = samples - probs
        return 0.5 * _jacobian(probs, g) + 0.5 * np.sum(g * centered, -1, keepdims=True) * centered

    checks = []
    if "reinmax" in estimators:
        checks.append(("reinmax", "closed form", 1.0, at_one))
        checks += [
            ("reinmax", f"closed form at τ = {t:g}", t, _reinmax_closed_form) for t in TEMPERED
        ]
    if "straight_through" in estimators:
        checks += [
            ("straight_through", f"closed form at τ = {t:g}", t, _straight_through_closed_form)
            for t in TEMPERED
        ]
    records = []
    for name, check, tau, closed_form in checks:
        est = estimators[name]

        def check_fn(est=est, check=check, tau=tau, closed_form=closed_form) -> Record:
            samples, _, rules = rules_by_sample(est, logits, grad_f, tau, runner=target.runner)
            g = np.stack([grad_f(d) for d in samples])
            expected = closed_form(samples, g, logits, tau)
            error = _relative_error(rules, expected)
            tol = _tolerance(target)
            detail = f"largest relative difference over {len(samples)} samples; must be ≤ {tol:.1e}"
            return _record(target, 4, est.name, check, error, error <= tol, detail)

        records.append(_guarded(target, 4, est.name, check, check_fn))
    return records


def _noise(estimator: Estimator, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.Generator(np.random.Philox(seed)).random(estimator.noise_shape(shape))


def identity_5(target: Target = NUMPY, estimators: Mapping[str, Estimator] | None = None):
    """Rules sum to zero over the categories; a per-row constant shift changes nothing."""
    estimators = _default_estimators() if estimators is None else estimators
    logits, rng = _problem(5, rows=16, n=5)
    g = rng.normal(size=logits.shape)
    shift = logits + rng.normal(scale=3.0, size=(logits.shape[0], 1))
    records = []
    for name, est in estimators.items():
        noise = _noise(est, logits.shape, 5)

        def sums(est: Estimator = est, noise: np.ndarray = noise) -> Record:
            _, grad = target.runner(est, logits, noise, 0.7, lambda h: g)
            value = float(np.max(np.abs(np.sum(grad, axis=-1)))) / float(np.max(np.abs(grad)))
            tol = _tolerance(target)
            detail = f"largest |Σ_i rule_i| relative to the largest entry; must be ≤ {tol:.1e}"
            return _record(target, 5, est.name, "sums to zero", value, value <= tol, detail)

        def shifted(est: Estimator = est, noise: np.ndarray = noise) -> Record:
            hard, grad = target.runner(est, logits, noise, 0.7, lambda h: g)
            hard_s, grad_s = target.runner(est, shift, noise, 0.7, lambda h: g)
            mismatches = int(np.sum(np.any(hard != hard_s, axis=-1)))
            error = _relative_error(grad_s, grad)
            tol = 10 * _tolerance(target)
            detail = (
                f"relative gradient change after adding a constant to each row ({mismatches} rows "
                f"sampled differently); must be ≤ {tol:.1e} with every sample unchanged"
            )
            passed = mismatches == 0 and error <= tol
            return _record(target, 5, est.name, "shift invariance", error, passed, detail)

        records.append(_guarded(target, 5, name, "sums to zero", sums))
        records.append(_guarded(target, 5, name, "shift invariance", shifted))
    return records


def identity_6(target: Target = NUMPY, estimators: Mapping[str, Estimator] | None = None):
    """REINFORCE (with a baseline) is exact in expectation for an arbitrary f."""
    logits, rng = _problem(6, rows=2, n=3)
    table = rng.normal(size=(3,) * logits.shape[0])

    def f(d: np.ndarray) -> float:
        return float(table[tuple(np.argmax(d, axis=-1))])

    def check_fn() -> Record:
        truth = exact_gradient(logits, f)
        estimate = expected_reinforce(logits, f, 0.7, gradient=target.reinforce_gradient)
        error = _relative_error(estimate, truth)
        tol = _tolerance(target)
        detail = f"relative error for a random table f and baseline 0.7; must be ≤ {tol:.1e}"
        return _record(target, 6, "reinforce", "any f, exact", error, error <= tol, detail)

    return [_guarded(target, 6, "reinforce", "any f, exact", check_fn)]


def identity_7(
    target: Target = NUMPY,
    estimators: Mapping[str, Estimator] | None = None,
    n_draws: int = 20_000,
    z_limit: float = 4.5,
):
    """Gumbel-Rao: ``argmax ỹ^k = i`` always; its mean is ST-Gumbel-Softmax's (Monte Carlo).

    The reference mean is the library's ST-Gumbel-Softmax on NumPy, so that a fault elsewhere
    is never blamed on Gumbel-Rao. ``z_limit`` bounds the largest per-entry z-score of the
    difference of the two means (six entries; 4.5 is a false alarm once in ~20,000 runs).
    """
    estimators = _default_estimators() if estimators is None else estimators
    if "gumbel_rao" not in estimators:
        return []
    est = estimators["gumbel_rao"]
    logits, rng = _problem(7, rows=2, n=3)
    _, grad_f = _quadratic(rng, logits.shape)
    tau = 0.7

    def argmax_check() -> Record:
        batch = np.broadcast_to(logits, (256, *logits.shape)).copy()
        hard, residuals = target.forward(est, batch, _noise(est, batch.shape, 71), tau)
        # softmax(ỹ/τ) is monotone in ỹ, so its argmax is argmax ỹ.
        conditioned = np.argmax(np.asarray(residuals[0]), axis=-1)
        sampled = np.argmax(np.asarray(hard), axis=-1)
        wrong = int(np.sum(conditioned != sampled[None]))
        detail = f"draws whose conditioned logits have argmax ≠ i, of {conditioned.size}; must be 0"
        return _record(target, 7, est.name, "argmax ỹ = i", wrong, wrong == 0, detail)

    def mean_check() -> Record:
        mean, se, _ = monte_carlo_estimate(
            est, logits, grad_f, tau, n_draws, 72, runner=target.runner
        )
        reference = gumbel_softmax_estimator(True)
        ref_mean, ref_se, _ = monte_carlo_estimate(reference, logits, grad_f, tau, n_draws, 73)
        z = float(np.max(np.abs(mean - ref_mean) / np.sqrt(se**2 + ref_se**2)))
        detail = (
            f"largest z-score of E[Gumbel-Rao] − E[ST-Gumbel-Softmax] ({n_draws} draws each, "
            f"τ = {tau}); must be ≤ {z_limit}"
        )
        return _record(target, 7, est.name, "mean equals ST-GS", z, z <= z_limit, detail)

    return [
        _guarded(target, 7, est.name, "argmax ỹ = i", argmax_check),
        _guarded(target, 7, est.name, "mean equals ST-GS", mean_check),
    ]


def chi_square_p_value(statistic: float, df: int) -> float:
    """Upper tail of the chi-square distribution (Wilson–Hilferty).

    Within a few percent of the exact tail above 1e-3 and within 25% down to 1e-6.
    """
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    z = ((statistic / df) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * df))) / math.sqrt(2.0 / (9.0 * df))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def identity_8(
    target: Target = NUMPY,
    estimators: Mapping[str, Estimator] | None = None,
    n_draws: int = 20_000,
    p_limit: float = 1e-4,
):
    """Every sampler's frequencies match π (chi-square), and masked categories never appear."""
    estimators = _default_estimators() if estimators is None else estimators
    logits = np.array(
        [
            [1.5, 0.2, -np.inf, -0.7, 0.4],
            [-np.inf, 0.0, 2.5, -1.0, 0.3],
            [0.0, 0.1, 0.2, 0.3, -np.inf],
        ]
    )
    probs = softmax(logits, xp=np)
    batch = np.broadcast_to(logits, (n_draws, *logits.shape)).copy()
    records = []
    for name, est in estimators.items():

        def check_fn(est: Estimator = est) -> Record:
            noise = _noise(est, batch.shape, 8)
            hard, _ = target.runner(est, batch, noise, 1.0, np.zeros_like)
            counts = np.sum(np.asarray(hard, dtype=np.float64), axis=0)
            masked = int(np.sum(counts[probs == 0]))
            live = probs > 0
            expected = n_draws * probs[live]
            statistic = float(np.sum((counts[live] - expected) ** 2 / expected))
            df = int(np.sum(live)) - logits.shape[0]
            p = chi_square_p_value(statistic, df)
            detail = (
                f"chi-square p-value of {n_draws} draws of {logits.shape[0]} rows (χ² = "
                f"{statistic:.1f}, df = {df}), must be ≥ {p_limit:g}; masked draws: {masked}"
            )
            passed = p >= p_limit and masked == 0
            return _record(target, 8, est.name, "frequencies match π", p, passed, detail)

        records.append(_guarded(target, 8, name, "frequencies match π", check_fn))
    return records


def _mean_check(
    target: Target,
    identity: int,
    est: Estimator,
    check: str,
    expected: Callable[[], np.ndarray],
    problem: tuple,
    n_draws: int,
    z_limit: float,
    *,
    within: bool = True,
) -> Record:
    """A Monte Carlo mean against an exact value: within ``z_limit`` standard errors (or, as a
    negative control with ``within=False``, far beyond them)."""
    logits, grad_f, tau, seed = problem

    def check_fn() -> Record:
        mean, se, _ = monte_carlo_estimate(
            est, logits, grad_f, tau, n_draws, seed, runner=target.runner
        )
        z = float(np.max(np.abs(mean - expected()) / np.maximum(se, 1e-300)))
        passed = z <= z_limit if within else z > 4 * z_limit
        bound = f"≤ {z_limit}" if within else f"> {4 * z_limit} (a negative control)"
        detail = f"largest z-score of the difference ({n_draws} draws, τ = {tau}); must be {bound}"
        return _record(target, identity, est.name, check, z, passed, detail)

    return _guarded(target, identity, est.name, check, check_fn)


def identity_9(
    target: Target = NUMPY,
    estimators: Mapping[str, Estimator] | None = None,
    n_draws: int = 20_000,
    z_limit: float = 4.5,
):
    """ZGR: ReinMax at ``τ = 1`` for every sample, exact for quadratic ``f``, and the limit of
    Gumbel-Rao's mean as ``τ → 0`` (at ``τ = 0.05`` within Monte Carlo error; at ``τ = 1`` far
    from it, a negative control)."""
    estimators = _default_estimators() if estimators is None else estimators
    if "zgr" not in estimators:
        return []
    est = estimators["zgr"]
    logits, rng = _problem(9, rows=2, n=3)
    quadratic = _quadratic(rng, logits.shape)

    def same_as_reinmax() -> Record:
        _, _, rules = rules_by_sample(est, logits, quadratic[1], 1.0, runner=target.runner)
        _, _, reinmax = rules_by_sample(REGISTRY["reinmax"](), logits, quadratic[1], 1.0)
        error = _relative_error(rules, reinmax)
        tol = _tolerance(target)
        detail = f"largest relative difference from ReinMax at τ = 1; must be ≤ {tol:.1e}"
        return _record(target, 9, est.name, "ReinMax at τ = 1", error, error <= tol, detail)

    def zgr_mean() -> np.ndarray:
        return expected_estimate(REGISTRY["zgr"](), logits, quadratic[1], 1.0)

    gumbel_rao = REGISTRY["gumbel_rao"](k=8)
    return [
        _guarded(target, 9, est.name, "ReinMax at τ = 1", same_as_reinmax),
        _exactness(target, 9, est, "quadratic (2 rows), exact", *quadratic, logits, True),
        _mean_check(
            target, 9, gumbel_rao, "Gumbel-Rao at τ = 0.05 has ZGR's mean", zgr_mean,
            (logits, quadratic[1], 0.05, 91), n_draws, z_limit,
        ),
        _mean_check(
            target, 9, gumbel_rao, "Gumbel-Rao at τ = 1 has not", zgr_mean,
            (logits, quadratic[1], 1.0, 92), n_draws, z_limit, within=False,
        ),
    ]  # fmt: skip


def identity_10(
    target: Target = NUMPY,
    estimators: Mapping[str, Estimator] | None = None,
    n_draws: int = 20_000,
    z_limit: float = 4.5,
):
    """ReinMax-CV: its control variate has zero mean (for a cubic ``f``, its mean is ReinMax's at
    ``τ = 1``), and it is exact for quadratic ``f``, both within Monte Carlo error."""
    estimators = _default_estimators() if estimators is None else estimators
    if "reinmax_cv" not in estimators:
        return []
    est = estimators["reinmax_cv"]
    logits, rng = _problem(10, rows=2, n=3)
    quadratic, cubic = _quadratic(rng, logits.shape), _cubic(rng, logits.shape)

    def reinmax_mean() -> np.ndarray:
        return expected_estimate(REGISTRY["reinmax"](), logits, cubic[1], 1.0)

    def exact() -> np.ndarray:
        return exact_gradient(logits, quadratic[0])

    return [
        _mean_check(
            target, 10, est, "zero-mean control variate", reinmax_mean,
            (logits, cubic[1], 0.8, 101), n_draws, z_limit,
        ),
        _mean_check(
            target, 10, est, "quadratic, exact", exact,
            (logits, quadratic[1], 0.8, 102), n_draws, z_limit,
        ),
    ]  # fmt: skip


IDENTITIES: dict[int, Callable[..., list[Record]]] = {
    1: identity_1,
    2: identity_2,
    3: identity_3,
    4: identity_4,
    5: identity_5,
    6: identity_6,
    7: identity_7,
    8: identity_8,
    9: identity_9,
    10: identity_10,
}


def run_identities(
    target: Target = NUMPY,
    estimators: Mapping[str, Estimator] | None = None,
    *,
    quick: bool = False,
) -> list[Record]:
    """All the identities on ``target``; ``quick`` uses fewer Monte Carlo draws."""
    draws = 5_000 if quick else 40_000
    records: list[Record] = []
    for number, identity in IDENTITIES.items():
        if number in (7, 8, 9, 10):
            records += identity(target, estimators, n_draws=draws)
        else:
            records += identity(target, estimators)
    return records

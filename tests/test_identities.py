"""Exact enumeration and docs/SPEC.md's identities: each passes, and catches the bug it is for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reinmax import core
from reinmax.conformance import identities
from reinmax.conformance.enumeration import (
    exact_gradient,
    expected_estimate,
    expected_reinforce,
    joint_samples,
    monte_carlo_estimate,
    variance_by_enumeration,
)

LOGITS = np.array([[0.3, -0.8, 1.1], [0.0, 0.5, -0.4]])


def _quadratic(seed: int = 0):
    a = np.random.default_rng(seed).normal(size=(6, 6))
    return (lambda d: d.ravel() @ a @ d.ravel()), (
        lambda d: ((a + a.T) @ d.ravel()).reshape(d.shape)
    )


def _expectation(logits: np.ndarray, f) -> float:
    samples, probability = joint_samples(logits)
    return float(sum(p * f(d) for p, d in zip(probability, samples)))


def test_joint_samples_cover_the_support_once():
    logits = np.array([[0.0, -np.inf, 1.0], [0.2, 0.1, 0.0]])
    samples, probability = joint_samples(logits)
    assert samples.shape == (6, 2, 3)
    assert math.isclose(probability.sum(), 1.0)
    assert not samples[:, 0, 1].any()
    assert len({s.tobytes() for s in samples}) == 6


def test_exact_gradient_matches_finite_differences():
    f, _ = _quadratic()
    grad = exact_gradient(LOGITS, f)
    step = 1e-6
    numeric = np.zeros_like(LOGITS)
    for index in np.ndindex(LOGITS.shape):
        up, down = LOGITS.copy(), LOGITS.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (_expectation(up, f) - _expectation(down, f)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_expected_estimate_is_exact_for_reinmax_and_biased_for_st():
    f, grad_f = _quadratic()
    truth = exact_gradient(LOGITS, f)
    np.testing.assert_allclose(expected_estimate("reinmax", LOGITS, grad_f), truth, atol=1e-12)
    assert np.abs(expected_estimate("straight_through", LOGITS, grad_f) - truth).max() > 0.05


def test_expected_reinforce_is_exact_for_any_function():
    table = np.random.default_rng(1).normal(size=(3, 3))

    def f(d):
        return table[tuple(np.argmax(d, axis=-1))]

    np.testing.assert_allclose(
        expected_reinforce(LOGITS, f, baseline=0.4), exact_gradient(LOGITS, f), atol=1e-12
    )


def test_monte_carlo_agrees_with_enumeration_within_its_standard_error():
    _, grad_f = _quadratic()
    exact_mean, exact_variance = variance_by_enumeration("straight_through", LOGITS, grad_f, 1.3)
    mean, std_error, variance = monte_carlo_estimate(
        "straight_through", LOGITS, grad_f, 1.3, n_draws=20_000, seed=3
    )
    assert np.all(np.abs(mean - exact_mean) <= 4.5 * std_error)
    np.testing.assert_allclose(variance, exact_variance, rtol=0.1, atol=1e-3)
    np.testing.assert_allclose(std_error, np.sqrt(variance / 20_000))


def test_enumeration_rejects_what_it_cannot_do():
    _, grad_f = _quadratic()
    with pytest.raises(ValueError, match="monte_carlo_estimate"):
        expected_estimate("gumbel_softmax", LOGITS, grad_f)
    with pytest.raises(ValueError, match="logits must have shape"):
        expected_estimate("reinmax", LOGITS[0], grad_f)
    with pytest.raises(ValueError, match="estimator must be one of"):
        expected_estimate("st", LOGITS, grad_f)
    with pytest.raises(ValueError, match="n_draws"):
        monte_carlo_estimate("gumbel_softmax", LOGITS, grad_f, n_draws=1)
    with pytest.raises(ValueError, match="joint samples"):
        joint_samples(np.zeros((12, 4)))


def test_chi_square_p_value_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for statistic, df in ((9.5, 9), (30.0, 12), (3.0, 4), (60.0, 20)):
        expected = stats.chi2.sf(statistic, df)
        rel_tol = 0.05 if expected > 1e-3 else 0.25
        assert math.isclose(identities.chi_square_p_value(statistic, df), expected, rel_tol=rel_tol)


@pytest.mark.parametrize("number", sorted(identities.IDENTITIES))
def test_every_identity_holds_for_the_library(number):
    kwargs = {"n_draws": 5_000} if number in (7, 8) else {}
    records = identities.IDENTITIES[number](identities.NUMPY, **kwargs)
    assert records
    for record in records:
        assert record["identity"] == number
        assert record["passed"], record


# ---------------------------------------------------------------------------------------------
# Each identity catches the bug it is meant for, and blames only that estimator.
# ---------------------------------------------------------------------------------------------


def _inverse_cdf_forward(residual):
    def forward(logits, probs, noise, tau, *, xp):
        hard = core.inverse_cdf_sample(probs, noise, xp=xp)
        return hard, residual(logits, probs, hard, tau, xp)

    return forward


def _failed(records):
    return {(r["identity"], r["estimator"], r["check"]) for r in records if not r["passed"]}


def test_reinmax_without_the_first_order_correction_fails_identities_2_and_4():
    def backward(probs, residuals, grad, tau, *, xp):
        return 2.0 * core.softmax_vjp(residuals[0], grad, xp=xp)

    forward = _inverse_cdf_forward(
        lambda x, p, hard, tau, xp: (0.5 * (core.softmax(x / tau, xp=xp) + hard),)
    )
    buggy = core.Estimator("reinmax", forward, backward, lambda s: s[:-1], per_category=False)
    records = []
    for number in (2, 3, 4):
        records += identities.IDENTITIES[number](identities.NUMPY, {"reinmax": buggy})
    assert _failed(records) == {
        (2, "reinmax", "quadratic (3 rows), exact"),
        (3, "reinmax", "order of accuracy"),
        (4, "reinmax", "closed form"),
        (4, "reinmax", "closed form at τ = 0.5"),
        (4, "reinmax", "closed form at τ = 1.7"),
    }


def _reinmax_with(residual, scale=1.0):
    def backward(probs, residuals, grad, tau, *, xp):
        rule = core.softmax_vjp(
            residuals[0], grad, 2.0, core.softmax_vjp(probs, grad, -0.5, xp=xp), xp=xp
        )
        return rule / tau if scale == "1/tau" else rule

    forward = _inverse_cdf_forward(residual)
    return core.Estimator("reinmax", forward, backward, lambda s: s[:-1], per_category=False)


@pytest.mark.parametrize(
    "buggy",
    [
        # π_D from π instead of core.softmax(θ/τ): right at τ = 1, wrong elsewhere.
        _reinmax_with(lambda x, p, hard, tau, xp: (0.5 * (p + hard),)),
        # A 1/τ factor that ReinMax does not have.
        _reinmax_with(
            lambda x, p, hard, tau, xp: (0.5 * (core.softmax(x, tau, xp=xp) + hard),), "1/tau"
        ),
    ],
    ids=["pi_D at tau 1", "extra 1/tau"],
)
def test_reinmax_temperature_bugs_fail_the_closed_forms_away_from_one(buggy):
    records = []
    for number in (1, 2, 3, 4):
        records += identities.IDENTITIES[number](identities.NUMPY, {"reinmax": buggy})
    failed = _failed(records)
    # Every identity at τ = 1 still holds: only the closed forms away from 1 see these bugs.
    assert failed == {
        (4, "reinmax", "closed form at τ = 0.5"),
        (4, "reinmax", "closed form at τ = 1.7"),
    }


def test_straight_through_without_its_temperature_fails_its_closed_forms():
    def backward(probs, residuals, grad, tau, *, xp):
        return core.softmax_vjp(residuals[0], grad, xp=xp)  # (1/τ) forgotten

    forward = _inverse_cdf_forward(lambda x, p, hard, tau, xp: (core.softmax(x, tau, xp=xp),))
    buggy = core.Estimator(
        "straight_through", forward, backward, lambda s: s[:-1], per_category=False
    )
    records = identities.identity_1(identities.NUMPY, {"straight_through": buggy})
    records += identities.identity_4(identities.NUMPY, {"straight_through": buggy})
    assert _failed(records) == {
        (4, "straight_through", "closed form at τ = 0.5"),
        (4, "straight_through", "closed form at τ = 1.7"),
    }


def test_exact_st_would_fail_the_negative_control():
    # A "Straight-Through" whose rule is the exact ReinMax one is exact for quadratics too.
    impostor = core.reinmax_estimator()._replace(name="straight_through")
    records = identities.identity_1(identities.NUMPY, {"straight_through": impostor})
    assert _failed(records) == {(1, "straight_through", "quadratic, not exact")}


def test_gumbel_rao_at_twice_the_logits_fails_identity_7():
    base = core.gumbel_rao_estimator(1)

    def forward(logits, probs, noise, tau, *, xp):
        hard, (y,) = base.forward(logits, probs, noise, tau, xp=xp)
        # core.softmax((θ + ỹ)/τ): the conditioned logits already carry θ once.
        conditioned = xp.log(y) * tau
        return hard, (core.softmax((conditioned + logits) / tau, xp=xp),)

    buggy = base._replace(forward=forward)
    records = identities.identity_7(identities.NUMPY, {"gumbel_rao": buggy}, n_draws=5_000)
    # Doubling θ also moves the top of the conditioned logits away from the sample.
    assert _failed(records) == {
        (7, "gumbel_rao", "mean equals ST-GS"),
        (7, "gumbel_rao", "argmax ỹ = i"),
    }


def test_gumbel_from_normal_noise_fails_identity_8_only_for_that_sampler():
    from statistics import NormalDist

    base = core.gumbel_softmax_estimator(True)
    normal = np.vectorize(NormalDist().inv_cdf)

    def forward(logits, probs, noise, tau, *, xp):
        perturbed = logits + normal(np.clip(noise, 1e-12, 1 - 1e-12))
        hard = core.one_hot_sample(xp.argmax(perturbed, axis=-1), probs, xp=xp)
        return hard, (core.softmax(perturbed / tau, xp=xp),)

    buggy = base._replace(forward=forward)
    estimators = {"gumbel_softmax": buggy, "reinmax": core.reinmax_estimator()}
    records = identities.identity_8(identities.NUMPY, estimators, n_draws=5_000)
    assert _failed(records) == {(8, "gumbel_softmax", "frequencies match π")}


def test_a_crashing_estimator_is_a_failed_record_not_a_crash():
    def backward(probs, residuals, grad, tau, *, xp):
        raise ZeroDivisionError("planted")

    broken = core.reinmax_estimator()._replace(backward=backward)
    records = identities.identity_4(identities.NUMPY, {"reinmax": broken})
    assert len(records) == 3 and not any(r["passed"] for r in records)
    assert all("ZeroDivisionError" in r["detail"] for r in records)


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_identities_run_on_other_backends(backend):
    pytest.importorskip(backend)
    from reinmax.conformance.suite import target

    where = target(backend)
    records = identities.identity_2(where) + identities.identity_4(where)
    records += identities.identity_6(where)
    assert records and all(r["passed"] and r["backend"] == backend for r in records), records

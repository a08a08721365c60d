"""The bias and variance study: orders of accuracy, the polynomial start, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reinmax.conformance.enumeration import variance_by_enumeration
from reinmax.core import REGISTRY, register_estimator, unregister_estimator
from reinmax.tasks.poly import bias as bias_study


def _config(**overrides) -> bias_study.StudyConfig:
    base = dict(
        taus=(1.0, 2.0),
        eps=(0.005, 0.01, 0.02, 0.05),
        slope_below=0.05,
        draws=500,
        poly_draws=500,
        reinforce_steps=50,
    )
    return bias_study.StudyConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def small() -> dict:
    return bias_study.small_study(_config())


def test_straight_through_is_first_order_and_reinmax_second(small: dict) -> None:
    slopes = small["slopes"]
    assert slopes["straight_through"]["1"] == pytest.approx(1.0, abs=0.1)
    assert slopes["reinmax"]["1"] == pytest.approx(2.0, abs=0.1)
    bias = small["results"]
    for j in range(len(small["eps"])):
        assert bias["reinmax"]["bias"][0][j] < bias["straight_through"]["bias"][0][j]


def test_temperature_away_from_one_leaves_an_order_one_bias(small: dict) -> None:
    """At τ = 2 neither ST nor ReinMax is consistent as ε → 0: the relative bias stays put."""
    for method in ("straight_through", "reinmax"):
        assert abs(small["slopes"][method]["2"]) < 0.1
        assert min(small["results"][method]["bias"][1]) > 0.05


def test_reinforce_is_unbiased_and_gumbel_bias_is_above_its_floor(small: dict) -> None:
    results = small["results"]
    assert max(max(row) for row in results["reinforce"]["bias"]) < 1e-9
    assert all(v > 0 for row in results["reinforce"]["variance"] for v in row)
    gumbel = results["gumbel_softmax"]
    assert gumbel["bias"][0][0] > 3 * gumbel["bias_floor"][0][0] > 0


def test_rowwise_enumeration_equals_joint_enumeration() -> None:
    """The polynomial study enumerates each row alone; on three rows that is the joint answer."""
    config = _config()
    logits = np.random.default_rng(3).normal(size=(3, 2))
    for method in ("straight_through", "reinmax", "gapped_straight_through"):
        mean, variance = bias_study._rowwise_moments(method, logits, 3.0, config)
        grad_f = bias_study._poly_grad_f(3.0, 3)
        joint_mean, joint_variance = variance_by_enumeration(method, logits, grad_f, 1.0)
        np.testing.assert_allclose(mean, joint_mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(variance, joint_variance, rtol=1e-12, atol=1e-15)


def test_polynomial_start_reinmax_exact_at_p2_and_baseline_helps() -> None:
    study = bias_study.poly_study(_config(), powers=(2.0, 3.0))
    p2, p3 = study["powers"]["2"], study["powers"]["3"]
    assert p2["reinmax"]["bias"] < 1e-12
    assert p2["reinmax"]["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert p2["straight_through"]["bias"] > 1e-2
    assert p3["reinmax"]["bias"] > 0.1
    assert p2["reinforce_baseline"]["variance"] < p2["reinforce"]["variance"] / 100
    for cells in study["powers"].values():
        assert cells["reinforce"]["bias"] < 4 * cells["reinforce"]["bias_floor"]


def test_fit_slope_recovers_a_power_law() -> None:
    x = np.array([0.01, 0.1, 1.0])
    assert bias_study.fit_slope(x, 3 * x**2.5) == pytest.approx(2.5)


def test_command_writes_json_and_plots(tmp_path, capsys) -> None:
    path = tmp_path / "bias.json"
    argv = ["--taus", "1", "1.5", "--eps", "0.01", "0.05", "0.5", "--slope-below", "0.05"]
    argv += ["--draws", "200", "--poly-draws", "200", "--reinforce-steps", "20", "--p", "2"]
    assert bias_study.main([*argv, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert set(result["small"]["results"]) == set(bias_study.methods())
    assert np.shape(result["small"]["results"]["reinmax"]["bias"]) == (2, 3)
    assert list(result["poly"]["powers"]) == ["2"]
    for suffix in ("_small.png", "_poly.png"):
        assert (tmp_path / f"bias{suffix}").stat().st_size > 10_000
    assert "reinmax" in capsys.readouterr().out


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="joint samples"):
        bias_study.StudyConfig(rows=10, categories=5)
    with pytest.raises(ValueError, match="slope"):
        bias_study.StudyConfig(eps=(0.5, 1.0))
    with pytest.raises(ValueError, match="taus"):
        bias_study.StudyConfig(taus=(0.0,))


def test_an_estimator_registered_at_run_time_is_studied() -> None:
    """The study reads the registry when it runs; whether an estimator is enumerated or sampled
    follows its noise (per row: exact, per category: Monte Carlo), not its name."""
    config = _config()
    logits, make = bias_study.small_problem(config)
    f, grad_f = make(0.1)
    cases = (("later_st", "straight_through", False), ("later_gs", "gumbel_softmax", True))
    for name, like, sampled in cases:
        register_estimator(name, REGISTRY[like].build, options=REGISTRY[like].options)
        try:
            assert name in bias_study.methods()
            moments = bias_study.estimator_moments(name, logits, f, grad_f, 1.0, config)
            reference = bias_study.estimator_moments(like, logits, f, grad_f, 1.0, config)
        finally:
            unregister_estimator(name)
        for got, want in zip(moments, reference):
            np.testing.assert_array_equal(got, want)
        # A Monte Carlo mean has a standard error; an enumerated one has none.
        assert np.any(moments[2] > 0) == sampled

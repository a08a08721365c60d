"""reinmax.diagnostics: the same draws and statistics in every backend, an exact gradient that
agrees with independent computations, and statistics that tell a biased estimator from an
unbiased one."""

from __future__ import annotations

import numpy as np
import pytest

import reinmax.diagnostics as rd
from reinmax.backends import available, load_driver
from reinmax.conformance import enumeration

ROWS, N = 3, 4
LOGITS = np.random.default_rng(0).normal(size=(ROWS, N))
_A = np.random.default_rng(1).normal(size=(ROWS * N, ROWS * N))
A = _A + _A.T


def quadratic_numpy(d: np.ndarray) -> np.ndarray:
    flat = d.reshape(d.shape[0], -1)
    return np.einsum("si,ij,sj->s", flat, A, flat)


def quadratic_grad(d: np.ndarray) -> np.ndarray:
    # A broadcast product summed over one axis, not a matrix product: BLAS picks its kernel by
    # the number of rows, so a matrix product's last bits would depend on the chunking.
    flat = d.reshape(d.shape[0], -1)
    return np.sum(flat[:, :, None] * (A + A.T)[None], axis=1).reshape(d.shape)


def framework_quadratic(driver):
    """The quadratic written with the framework's own ops (through the array API namespace of
    the backend), so that its autodiff differentiates it."""
    a = driver.asarray(A, "float64")
    import reinmax.backends as rb

    xp = rb.load_module(driver.name).BACKEND.xp

    def f(d):
        flat = xp.reshape(d, (d.shape[0], ROWS * N))
        return xp.sum(flat * (flat @ a), axis=-1)

    return f


@pytest.fixture(scope="module")
def backends():
    names = available()
    for name in names:
        load_driver(name).enable_float64()
    return names


def _diagnose(name, estimator="reinmax", **kw):
    driver = load_driver(name)
    logits = driver.asarray(LOGITS, "float64")
    if driver.native_autodiff:
        return rd.diagnose(estimator, logits, framework_quadratic(driver), **kw)
    return rd.diagnose(estimator, logits, quadratic_numpy, grad_f=quadratic_grad, **kw)


@pytest.mark.parametrize("estimator", ["reinmax", "reinmax_cv"])
def test_same_draws_and_statistics_in_every_backend(backends, estimator):
    reports = {name: _diagnose(name, estimator, draws=128, rng=5) for name in backends}
    reference = reports["numpy"]
    for name, report in reports.items():
        np.testing.assert_allclose(report.mean, reference.mean, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(report.variance, reference.variance, atol=1e-11)
        np.testing.assert_allclose(report.exact, reference.exact, atol=1e-12)


def test_draws_do_not_depend_on_chunking():
    one = rd.gradient_draws(
        "gumbel_softmax", LOGITS, quadratic_numpy, grad_f=quadratic_grad, draws=50, rng=2
    )
    many = rd.gradient_draws(
        "gumbel_softmax", LOGITS, quadratic_numpy, grad_f=quadratic_grad, draws=50, rng=2, chunk=7
    )
    np.testing.assert_array_equal(one, many)
    assert one.shape == (50, ROWS, N)
    assert not np.allclose(one[0], one[1])  # draws differ


def test_exact_gradient_matches_the_conformance_enumeration():
    exact = rd.exact_gradient(LOGITS, quadratic_numpy)
    independent = enumeration.exact_gradient(LOGITS, lambda d: d.ravel() @ A @ d.ravel())
    np.testing.assert_allclose(exact, independent, atol=1e-12)


def test_exact_gradient_with_unimix_matches_finite_differences():
    eps, h = 0.2, 1e-6
    masked = LOGITS.copy()
    masked[0, 1] = -np.inf

    def expectation(logits):
        allowed = np.isfinite(logits)
        weights = np.where(allowed, np.exp(np.where(allowed, logits, 0.0)), 0.0)
        probs = weights / weights.sum(axis=1, keepdims=True)
        mixed = np.where(allowed, (1 - eps) * probs + eps / allowed.sum(axis=1, keepdims=True), 0)
        samples, _ = enumeration.joint_samples(np.zeros_like(logits))
        chance = np.prod(np.sum(samples * mixed, axis=-1), axis=-1)
        return float(np.sum(chance * quadratic_numpy(samples)))

    numeric = np.zeros_like(masked)
    for index in zip(*np.nonzero(np.isfinite(masked))):
        up, down = masked.copy(), masked.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (expectation(up) - expectation(down)) / (2 * h)
    exact = rd.exact_gradient(masked, quadratic_numpy, unimix=eps)
    np.testing.assert_allclose(exact, numeric, atol=1e-6)
    assert exact[0, 1] == 0.0


def test_statistics_tell_an_unbiased_estimator_from_a_biased_one():
    # ReinMax is exact in expectation for a quadratic (identity 5); Straight-Through is not.
    common = dict(draws=4096, rng=0, grad_f=quadratic_grad)
    unbiased = rd.diagnose("reinmax", LOGITS, quadratic_numpy, **common).summary()
    biased = rd.diagnose("straight_through", LOGITS, quadratic_numpy, **common).summary()
    assert unbiased["relative_bias"] < 3 * unbiased["bias_noise_floor"]
    assert biased["relative_bias"] > 10 * biased["bias_noise_floor"]
    assert unbiased["cosine"] > 0.99 > biased["cosine"]
    for summary in (unbiased, biased):
        assert summary["relative_std"] > 0 and 0 < summary["draw_cosine"] < 1


def test_statistics_by_hand():
    draws = np.array([[[1.0, 0.0]], [[3.0, 0.0]], [[2.0, 3.0]]])  # S=3, one row of 2
    report = rd.gradient_statistics(draws, np.array([[2.0, 0.0]]))
    np.testing.assert_allclose(report.mean, [[2.0, 1.0]])
    np.testing.assert_allclose(report.variance, [[1.0, 3.0]])
    summary = report.summary()
    assert summary["relative_std"] == pytest.approx(2.0 / np.sqrt(5.0))
    assert summary["relative_bias"] == pytest.approx(0.5)
    assert summary["bias_noise_floor"] == pytest.approx(2.0 / np.sqrt(3.0) / 2.0)
    assert summary["cosine"] == pytest.approx(2.0 / np.sqrt(5.0))
    assert summary["draw_cosine"] == pytest.approx((1 + 1 + 2 / np.sqrt(13)) / 3)


def test_a_constant_f_gives_numbers_not_nan():
    report = rd.diagnose(
        "reinmax",
        LOGITS,
        lambda d: np.zeros(d.shape[0]),
        grad_f=np.zeros_like,
        draws=8,
    )
    summary = report.summary()
    assert summary["relative_std"] == 0.0 and summary["cosine"] == 0.0
    assert summary["relative_bias"] == 0.0


def test_batch_axes_give_statistics_per_problem():
    logits = np.stack([LOGITS, LOGITS[::-1]])  # two problems of ROWS rows

    def f(d):  # (S, 2, ROWS, N) -> (S, 2)
        flat = d.reshape(*d.shape[:2], -1)
        return np.einsum("spi,ij,spj->sp", flat, A, flat)

    def grad_f(d):
        flat = d.reshape(*d.shape[:2], -1)
        return (flat @ (A + A.T)).reshape(d.shape)

    report = rd.diagnose("reinmax", logits, f, grad_f=grad_f, draws=512, batch_axes=1)
    assert report.relative_std().shape == report.cosine().shape == (2,)
    for problem in range(2):
        alone = rd.exact_gradient(logits[problem], quadratic_numpy)
        np.testing.assert_allclose(report.exact[problem], alone, atol=1e-12)
    assert report.summary()["problems"] == 2


def test_large_problems_skip_the_exact_gradient():
    logits = np.zeros((9, 4))  # 4^9 > ENUMERATION_LIMIT

    def f(d):
        return d[..., 0].sum(axis=-1)

    def grad_f(d):
        g = np.zeros_like(d)
        g[..., 0] = 1.0
        return g

    report = rd.diagnose("reinmax", logits, f, grad_f=grad_f, draws=16)
    assert report.exact is None and report.summary()["relative_bias"] is None
    with pytest.raises(ValueError, match="n\\^R = 4\\^9"):
        rd.diagnose("reinmax", logits, f, grad_f=grad_f, draws=16, exact=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(draws=0), ValueError, "draws must be a positive integer"),
        (dict(chunk=-1), ValueError, "chunk must be a positive integer"),
        (dict(rng=np.random.default_rng(0)), TypeError, "rng must be an int or a reinmax.Seed"),
        (dict(batch_axes=1), ValueError, "batch_axes must be an integer in \\[0, 1\\)"),
        (dict(unimix=1.0), ValueError, "unimix must be a number in \\[0, 1\\)"),
        (dict(k=0), ValueError, "k must be a positive integer"),
        (dict(grad_f=None), ValueError, "pass grad_f"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    arguments = dict(draws=4, grad_f=quadratic_grad) | kwargs
    estimator = "reinmax_rao" if "k" in kwargs else "reinmax"
    with pytest.raises(error, match=match):
        rd.diagnose(estimator, LOGITS, quadratic_numpy, **arguments)


def test_f_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match="f must return one value per draw and problem"):
        rd.exact_gradient(LOGITS, lambda d: d.sum(axis=-1))

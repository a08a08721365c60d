"""docs/SPEC.md's common contract on every backend: masking, empty and broken rows, bad input,
dtypes, shapes, axes, per-row temperatures and forward mode."""

from __future__ import annotations

import numpy as np
import pytest

from reinmax.conformance import harness, oracle
from tests.helpers import ESTIMATORS, SAMPLERS, asarray, call, case_id, noise_for

INVERSE_CDF = ("straight_through", "reinmax", "gapped_straight_through")
ALL_CASES = [*SAMPLERS, ("gumbel_softmax", {"hard": False})]


def dtype_name(x) -> str:
    return str(x.dtype).removeprefix("torch.").removeprefix("<dtype: '").removesuffix("'>")


# ---------------------------------------------------------------------------------------------
# Masking, empty rows, broken rows
# ---------------------------------------------------------------------------------------------

# Leading, inner and trailing masked categories, so that both ends of the inverse CDF matter.
MASKED_ROW = np.array([-np.inf, 0.3, -np.inf, 2.0, -1.0, -np.inf])
MASKED = np.isneginf(MASKED_ROW)


def _extreme_uniforms(dtype: str) -> np.ndarray:
    eps = float(np.finfo(dtype).eps)
    below_one = float(np.nextafter(np.array(1.0, dtype), np.array(0.0, dtype)))
    middle = np.linspace(0.0, 1.0, 57, endpoint=False)[1:]
    return np.concatenate(
        [[float(np.finfo(dtype).tiny), 1e-30, 1e-8, 1.0 - eps, below_one], middle]
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", SAMPLERS, ids=case_id)
def test_masked_categories_never_sampled(backend, case, dtype):
    estimator, options = case
    values = _extreme_uniforms(dtype)
    logits = np.tile(MASKED_ROW, (len(values), 1))
    if estimator in INVERSE_CDF:
        noise = values
    else:
        noise = noise_for(estimator, logits.shape, options, values=np.append(values, 0.0))
    g = np.random.default_rng(1).normal(size=logits.shape)
    got = harness.run(backend, estimator, logits, noise, 0.8, g, g, dtype=dtype, options=options)
    assert not np.any(np.isnan(got.hard) | np.isnan(got.soft) | np.isnan(got.grad))
    assert np.all(got.hard[:, MASKED] == 0), "a masked category was sampled"
    assert np.all(got.hard.sum(axis=-1) == 1)
    assert np.all(got.grad[:, MASKED] == 0), "a masked category got a gradient"
    assert np.all(got.soft[:, MASKED] == 0)
    # The sweep really reaches both ends: the first and the last reachable category.
    assert got.hard[:, 1].any() and got.hard[:, 4].any()


def wide_row_with_masked_last(n: int = 3000) -> np.ndarray:
    """Rows of ``n`` categories, the last masked, whose float32 cumulative sum ends well below 1:
    looking up ``u`` instead of ``u · c_{n−1}`` would reach the masked category."""
    x = np.tile(np.random.default_rng(0).normal(size=n), (2, 1))
    x[:, -1] = -np.inf
    p = np.exp(x - x.max(axis=-1, keepdims=True)).astype(np.float32)
    p /= p.sum(axis=-1, keepdims=True)
    assert np.cumsum(p, axis=-1, dtype=np.float32)[:, -1].max() < np.float32(1 - 2**-23)
    return x


@pytest.mark.parametrize("estimator", INVERSE_CDF)
def test_a_wide_float32_row_never_samples_its_masked_last_category(backend, estimator):
    logits = wide_row_with_masked_last()
    below_one = float(np.nextafter(np.float32(1), np.float32(0)))
    got = harness.run(
        backend, estimator, logits, np.full(2, below_one), 1.0, np.ones(logits.shape),
        dtype="float32",
    )  # fmt: skip
    assert np.all(got.hard[:, -1] == 0) and np.all(got.hard.sum(axis=-1) == 1)
    assert np.all(got.grad[:, -1] == 0)


def test_the_wide_row_catches_an_unscaled_inverse_cdf_target(monkeypatch):
    from reinmax import core

    def unscaled(c, u, *, xp):
        return u[..., None] + 0 * c[..., -1:]

    logits = wide_row_with_masked_last()
    below_one = float(np.nextafter(np.float32(1), np.float32(0)))
    u = np.full(2, below_one)
    right = harness.run("numpy", "reinmax", logits, u, 1.0, dtype="float32")
    monkeypatch.setattr(core, "inverse_cdf_target", unscaled)
    wrong = harness.run("numpy", "reinmax", logits, u, 1.0, dtype="float32")
    # The sampler works on unnormalized weights: without the row total, u ≈ 1 lands far from
    # the last allowed category that the scaled target reaches (and a masked one stays unsampled).
    assert np.all(right.hard[:, -1] == 0)
    assert not np.array_equal(right.hard, wrong.hard)


@pytest.mark.parametrize("estimator", INVERSE_CDF)
def test_zero_uniform_never_samples_leading_masked(backend, estimator):
    """u = 0 is a valid uniform; with a leading masked category it must still not be drawn."""
    logits = np.array([MASKED_ROW, [-np.inf, 0.0, 0.0, 0.0, 0.0, 0.0]])
    got = harness.run(backend, estimator, logits, np.zeros(2), 1.0, np.ones(logits.shape))
    assert np.all(got.hard[:, 0] == 0)


@pytest.mark.parametrize("case", ALL_CASES, ids=case_id)
def test_all_masked_row_is_zero(backend, case):
    estimator, options = case
    # The shape (5, 6) recurs across tests so that JAX's eager per-shape compiles are reused.
    logits = np.random.default_rng(12).normal(size=(5, 6))
    logits[1] = -np.inf
    logits[2, [0, 2, 3, 4, 5]] = -np.inf
    noise = noise_for(estimator, logits.shape, options, seed=2)
    g = np.random.default_rng(3).normal(size=logits.shape)
    got = harness.run(backend, estimator, logits, noise, 0.9, g, g, options=options)
    for name, value in got._asdict().items():
        assert np.all(value[1] == 0), f"{name} of an all-masked row is {value[1]}"
        assert not np.any(np.isnan(value)), f"NaN in {name}"
    np.testing.assert_array_equal(got.hard[2], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(got.grad[2], 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "posinf"])
@pytest.mark.parametrize("case", ALL_CASES, ids=case_id)
def test_nan_or_posinf_poisons_only_its_row(backend, case, bad):
    estimator, options = case
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 6))
    noise = noise_for(estimator, logits.shape, options, seed=5)
    g = rng.normal(size=logits.shape)
    clean = harness.run(backend, estimator, logits, noise, 1.1, g, g, options=options)
    logits[2, 1] = bad
    got = harness.run(backend, estimator, logits, noise, 1.1, g, g, options=options)
    # The broken row's outputs are all NaN (docs/SPEC.md), and every other row is untouched.
    for name in ("hard", "soft", "grad"):
        broken, reference = getattr(got, name), getattr(clean, name)
        assert np.all(np.isnan(broken[2])), f"{name} of the broken row is {broken[2]}"
        np.testing.assert_array_equal(np.delete(broken, 2, 0), np.delete(reference, 2, 0))


# ---------------------------------------------------------------------------------------------
# Bad input gets its named error
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_integer_and_bool_logits_raise_type_error(backend, estimator, dtype):
    logits = asarray(backend, np.ones((2, 3)), dtype)
    noise = asarray(backend, noise_for(estimator, (2, 3)), "float32")
    with pytest.raises(TypeError, match="logits"):
        call(backend, estimator, logits, noise=noise)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_bad_shapes_axis_tau_and_noise_raise_value_error(backend, estimator):
    def run(x, tau=1.0, axis=-1, noise=None):
        x = asarray(backend, x, "float64")
        if noise is None:
            noise = noise_for(estimator, x.shape, axis=axis)
        return call(backend, estimator, x, tau, axis=axis, noise=asarray(backend, noise, "float64"))

    with pytest.raises(ValueError, match="at least one axis"):
        run(np.array(1.0), noise=np.zeros(()))
    for axis in (2, -3):
        with pytest.raises(ValueError, match="axis"):
            run(np.zeros((2, 3)), axis=axis, noise=np.zeros((2,)))
    for tau in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            run(np.zeros((2, 3)), tau=tau)
    with pytest.raises(ValueError, match="tau"):
        run(np.zeros((2, 3)), tau=asarray(backend, np.ones(3), "float64"))
    wrong = oracle.noise_shape(estimator, (3, 3))
    with pytest.raises(ValueError, match="noise"):
        run(np.zeros((2, 3)), noise=np.zeros(wrong))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("gumbel_rao", {"k": 0}),
        ("gumbel_rao", {"k": -2}),
        ("gumbel_rao", {"k": 1.5}),
        ("gumbel_rao", {"k": True}),
        ("gapped_straight_through", {"gap": -1.0}),
        ("gapped_straight_through", {"gap": "q"}),
        ("gapped_straight_through", {"gap": None}),
    ],
)
def test_bad_options_raise_value_error(backend, name, options):
    logits = asarray(backend, np.zeros((2, 3)), "float32")
    noise = asarray(backend, np.full((3, 2, 3), 0.5), "float32")
    key = next(iter(options))
    with pytest.raises(ValueError, match=key):
        call(backend, name, logits, noise=noise, **options)


def test_jax_requires_a_key():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    from reinmax.backends import jax as rjax

    for estimator in ESTIMATORS:
        with pytest.raises(ValueError, match="rng is required"):
            getattr(rjax, estimator)(jnp.zeros((2, 3)), 1.0)


# ---------------------------------------------------------------------------------------------
# Dtypes, shapes, axes, temperatures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_low_precision_runs_in_float32_and_returns_input_dtype(backend, estimator, dtype):
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(5, 6))
    noise = noise_for(estimator, logits.shape, seed=7)
    hard, soft = call(
        backend, estimator, asarray(backend, logits, dtype), 1.2,
        noise=asarray(backend, noise, "float32"),
    )  # fmt: skip
    assert dtype_name(hard) == dtype and dtype_name(soft) == dtype
    g, g_p = rng.normal(size=(2, *logits.shape))
    got = harness.run(backend, estimator, logits, noise, 1.2, g, g_p, dtype=dtype)
    want = oracle.evaluate(estimator, logits, noise, 1.2, g, g_p, dtype=dtype)
    np.testing.assert_array_equal(got.hard, want.hard)
    # float32 compute, then one rounding to the output dtype: within an eps of the row scale.
    assert harness.scaled_error(got.soft, want.soft, 1.0, dtype) <= 1.0
    assert harness.scaled_error(got.grad, want.grad, harness.row_scale(g, g_p, 1.2), dtype) <= 2.0


@pytest.mark.parametrize("shape", [(0, 5), (3, 0, 4), (0, 1)], ids=str)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_size_zero_batch(backend, estimator, shape):
    noise = noise_for(estimator, shape)
    got = harness.run(backend, estimator, np.zeros(shape), noise, 1.0, np.ones(shape))
    for name, value in got._asdict().items():
        assert value.shape == shape, f"{name} has shape {value.shape}"


@pytest.mark.parametrize("case", ALL_CASES, ids=case_id)
def test_single_category(backend, case):
    estimator, options = case
    logits = np.random.default_rng(8).normal(size=(4, 1))
    noise = noise_for(estimator, logits.shape, options, seed=9)
    got = harness.run(backend, estimator, logits, noise, 0.7, logits, logits, options=options)
    np.testing.assert_array_equal(got.hard, 1.0)
    np.testing.assert_array_equal(got.soft, 1.0)
    np.testing.assert_array_equal(got.grad, 0.0)


@pytest.mark.parametrize("case", ALL_CASES, ids=case_id)
def test_leading_category_axis_and_per_row_tau(backend, case):
    """Category axis 0 of a 3-d array, with a temperature per row broadcast from shape (1, 2)."""
    estimator, options = case
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(5, 3, 2))
    noise = noise_for(estimator, logits.shape, options, axis=0, seed=11)
    tau = rng.uniform(0.5, 2.0, size=(1, 2))
    g, g_p = rng.normal(size=(2, *logits.shape))
    got = harness.run(backend, estimator, logits, noise, tau, g, g_p, axis=0, options=options)
    want = oracle.evaluate(estimator, logits, noise, tau, g, g_p, axis=0, options=options)
    if options.get("hard", True):
        np.testing.assert_array_equal(got.hard, want.hard)
        np.testing.assert_array_equal(got.hard.sum(axis=0), 1.0)
    scale = harness.row_scale(g, g_p, tau, axis=0)
    assert harness.scaled_error(got.grad, want.grad, scale, "float64") <= 64
    # The temperature is per row: a different tau in one column changes only that column.
    tau2 = tau.copy()
    tau2[0, 1] *= 1.5
    other = harness.run(backend, estimator, logits, noise, tau2, g, g_p, axis=0, options=options)
    np.testing.assert_array_equal(other.grad[:, :, 0], got.grad[:, :, 0])
    assert not np.array_equal(other.grad[:, :, 1], got.grad[:, :, 1])


# ---------------------------------------------------------------------------------------------
# Forward mode: JAX refuses it and says so; PyTorch gives the transposed rule
# ---------------------------------------------------------------------------------------------


def test_jax_forward_mode_error_is_clear():
    jax = pytest.importorskip("jax")
    from reinmax.backends import jax as rjax

    x = jax.numpy.zeros((2, 3))
    noise = jax.numpy.full((2,), 0.5)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda y: rjax.reinmax(y, 1.0, noise=noise)[0], (x,), (x,))


def test_torch_forward_mode_is_the_transposed_rule():
    """torch.func.jvp gives ``J t`` for the rule ``∇ = Jᵀ c``: ⟨J t, c⟩ = ⟨Jᵀ c, t⟩."""
    torch = pytest.importorskip("torch")
    from reinmax.backends import torch as rtorch

    x, t, c = torch.randn(3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noise = torch.full((2,), 0.5, dtype=torch.float64)
    fn = lambda y: rtorch.reinmax(y, 1.3, noise=noise)[0]  # noqa: E731
    _, tangent = torch.func.jvp(fn, (x,), (t,))
    (pulled,) = torch.func.vjp(fn, x)[1](c)
    torch.testing.assert_close((tangent * c).sum(), (pulled * t).sum(), rtol=1e-12, atol=1e-12)
    assert pulled.abs().max() > 0.01

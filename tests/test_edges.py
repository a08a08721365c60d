"""The edges of the contract, one behaviour in every backend: extreme temperatures and logits,
the temperature checked in the compute dtype, REINFORCE's dtype, size-0 category axes, NumPy
bfloat16, noise outside [0, 1), bool axes, NumPy scalars as options, and torch.compile through
the top-level functions in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from reinmax.conformance import harness, oracle
from tests.helpers import ESTIMATORS, SAMPLERS, asarray, call, case_id, noise_for

G = np.array([[1.0, 2.0, 3.0]])


def _grad(backend, estimator, logits, tau, noise, dtype, options=None):
    return harness.run(
        backend, estimator, logits, noise, tau, np.broadcast_to(G, logits.shape), None,
        dtype=dtype, options=options,
    )  # fmt: skip


@pytest.mark.parametrize("case", SAMPLERS, ids=case_id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiny_temperature_with_finite_logits_gives_finite_gradients(backend, case, dtype):
    estimator, options = case
    # x/τ overflows here; (x − max x)/τ never does.
    logits = np.array([[0.0, 1e9, 1.0], [-1e30, 1e30, 0.0], [3e3, -3e3, 0.0]])
    noise = noise_for(estimator, logits.shape, options, seed=1)
    for tau in (1e-30, 1e-3, 0.5):
        got = _grad(backend, estimator, logits, tau, noise, dtype, options)
        for name, value in got._asdict().items():
            assert np.isfinite(value).all(), f"{name} at tau={tau}: {value}"
        want = oracle.evaluate(estimator, logits, noise, tau, G, None, dtype=dtype, options=options)
        np.testing.assert_array_equal(got.hard, want.hard)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_huge_low_precision_logits_give_finite_gradients(backend, estimator):
    # bfloat16 3e38 / 0.5 overflows float32; the shifted quotient does not.
    logits = np.array([[3e38, 0.0, 1.0], [0.0, -3e38, 1.0]])
    noise = noise_for(estimator, logits.shape, seed=2)
    got = _grad(backend, estimator, logits, 0.5, noise, "bfloat16")
    assert np.isfinite(got.grad).all() and np.isfinite(got.soft).all()


def test_an_all_but_one_masked_row_at_a_tiny_temperature(backend):
    # Torch's fused softmax once tested max(x) instead of max(x/τ) for an empty row.
    logits = np.array([[-1e30, -np.inf, -np.inf]])
    results = [
        _grad(backend, name, logits, 1e-30, noise_for(name, logits.shape), "float32")
        for name in ("straight_through", "reinmax", "gapped_straight_through")
    ]
    for got in results:
        np.testing.assert_array_equal(got.hard, [[1.0, 0.0, 0.0]])
        np.testing.assert_array_equal(got.grad, [[0.0, 0.0, 0.0]])


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize(
    ("tau", "dtype", "why"),
    [
        (1e-46, "float32", "rounds to 0.0"),
        (float("inf"), "float32", "got inf"),
        (1e39, "float32", "rounds to inf"),
        (1e39, "float16", "rounds to inf"),
        (float("nan"), "float64", "got nan"),
        (1e-400, "float64", "got 0.0"),
    ],
)
def test_tau_is_checked_in_the_compute_dtype(backend, estimator, tau, dtype, why):
    logits = asarray(backend, np.zeros((2, 3)), dtype)
    noise = asarray(backend, noise_for(estimator, (2, 3)), "float32")
    with pytest.raises(ValueError, match=rf"tau must be a finite number > 0 .*{why}"):
        call(backend, estimator, logits, tau, noise=noise)


def test_a_tau_that_fits_only_float64_is_accepted_there(backend):
    noise = asarray(backend, noise_for("reinmax", (2, 3)), "float64")
    hard, _ = call(backend, "reinmax", asarray(backend, np.zeros((2, 3)), "float64"), 1e-46,
                   noise=noise)  # fmt: skip
    assert np.asarray(hard).sum() == 2


def test_reinforce_reads_python_floats_in_the_logits_dtype(backend):
    value, baseline = 0.06931471805599453, 0.0123456789012345678
    logits = np.array([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]])
    hard = np.eye(3)[[2, 0]]
    surrogate = _call_reinforce(backend, logits, hard, value, baseline)
    log_pi = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = (value - baseline) * np.sum(hard * log_pi, axis=-1)
    np.testing.assert_allclose(surrogate, expected, rtol=1e-15, atol=0)


def _call_reinforce(backend, logits, hard, value, baseline):
    module = __import__(f"reinmax.backends.{backend}", fromlist=["reinforce"])
    out = module.reinforce(
        asarray(backend, logits, "float64"), asarray(backend, hard, "float64"), value, baseline
    )
    assert str(out.dtype).endswith("float64") or "float64" in str(out.dtype)
    return harness.to_numpy(backend, out)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_a_size_zero_category_axis_is_a_value_error(backend, estimator, axis):
    shape = (2, 0) if axis == -1 else (0, 2)
    logits = asarray(backend, np.zeros(shape), "float32")
    with pytest.raises(ValueError, match=r"axis \d of logits has size 0"):
        call(backend, estimator, logits, axis=axis)
    if estimator == "reinmax":
        with pytest.raises(ValueError, match=r"axis \d of logits has size 0"):
            __import__(f"reinmax.backends.{backend}", fromlist=["x"]).reinforce(
                logits, logits, 1.0, axis=axis
            )


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("bad", [np.nan, 1.0, 1.5, -0.25])
def test_noise_outside_the_unit_interval_is_a_value_error(backend, estimator, bad):
    noise = noise_for(estimator, (2, 3))
    noise.reshape(-1)[-1] = bad
    logits = asarray(backend, np.zeros((2, 3)), "float32")
    with pytest.raises(ValueError, match=r"noise must hold uniforms in \[0, 1\)"):
        call(backend, estimator, logits, noise=asarray(backend, noise, "float32"))


def test_noise_together_with_rng_is_a_value_error(backend):
    logits = asarray(backend, np.zeros((2, 3)), "float32")
    noise = asarray(backend, np.full(2, 0.5), "float32")
    with pytest.raises(ValueError, match=r"either noise .* or rng"):
        call(backend, "reinmax", logits, noise=noise, rng=object())


@pytest.mark.parametrize("axis", [True, False, np.bool_(True)])
def test_a_bool_axis_is_a_type_error(backend, axis):
    logits = asarray(backend, np.zeros((2, 3)), "float32")
    noise = asarray(backend, np.full(2, 0.5), "float32")
    with pytest.raises(TypeError, match="axis must be an integer, got a bool"):
        call(backend, "reinmax", logits, axis=axis, noise=noise)


@pytest.mark.parametrize(
    ("name", "numpy_option", "python_option"),
    [
        ("gumbel_rao", {"k": np.int64(2)}, {"k": 2}),
        ("gumbel_rao", {"k": np.int32(3)}, {"k": 3}),
        ("gapped_straight_through", {"gap": np.float32(1.0)}, {"gap": 1.0}),
        ("gapped_straight_through", {"gap": np.int64(2)}, {"gap": 2.0}),
    ],
)
def test_numpy_scalars_are_options_like_python_numbers(backend, name, numpy_option, python_option):
    logits = np.random.default_rng(3).normal(size=(4, 5))
    noise = noise_for(name, logits.shape, python_option, seed=4)
    g = np.random.default_rng(5).normal(size=logits.shape)
    a = harness.run(backend, name, logits, noise, 0.7, g, options=numpy_option)
    b = harness.run(backend, name, logits, noise, 0.7, g, options=python_option)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_numpy_bfloat16_is_computed_in_float32():
    import ml_dtypes

    from reinmax.backends import numpy as rnp

    logits = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, -np.inf]], dtype=ml_dtypes.bfloat16)
    noise = np.array([0.3, 0.8])
    (hard, soft), pullback = rnp.vjp(rnp.reinmax, logits, 1.3, noise=noise)
    assert hard.dtype == soft.dtype == logits.dtype
    grad = pullback(np.ones(logits.shape, dtype=logits.dtype), None)
    assert grad.dtype == logits.dtype
    want = oracle.evaluate("reinmax", logits.astype(np.float64), noise, 1.3, np.ones((2, 3)))
    np.testing.assert_array_equal(hard.astype(np.float64), want.hard)
    np.testing.assert_allclose(grad.astype(np.float64), want.grad, atol=2e-2)
    assert grad[1, 2] == 0


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import torch
    import reinmax

    def step(x, tau):
        hard, soft = reinmax.reinmax(x, tau)
        return (hard * soft).sum()

    x = torch.randn(4, 5, requires_grad=True)
    # The first call of the library in this process is a compiled one.
    compiled = torch.compile(step, fullgraph=True)
    compiled(x, 1.3).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # A second temperature is a symbolic float for Dynamo: still one graph.
    compiled(x, 1.5).backward()
    print("first call ok")
    try:
        compiled(x, 0.0)
    except Exception as error:
        print("fullgraph:", type(error).__name__, "|", str(error).replace(chr(10), " "))

    def other(x, tau):
        return reinmax.straight_through(x, tau)[0].sum()

    try:
        torch.compile(other)(x, -1.0)
    except ValueError as error:
        print("named error:", error)
    """
)


def test_torch_compile_through_the_top_level_in_a_fresh_process():
    pytest.importorskip("torch")
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "first call ok" in lines
    named = "named error: tau must be a finite number > 0 in the compute dtype (float32), got -1.0"
    assert named in lines
    # fullgraph=True turns every exception raised while tracing into Dynamo's Unsupported; the
    # named error is in its message.
    (fullgraph,) = [line for line in lines if line.startswith("fullgraph:")]
    assert "ValueError('tau must be a finite number > 0" in fullgraph

"""The portable inverse-CDF sample (docs/SPEC.md): the same index on every backend, bit for bit.

The weights are a table exponential and the prefix sum a fixed sequence of additions, so NumPy,
PyTorch, JAX and TensorFlow pick the same category from the same logits and uniforms, eagerly
and compiled (torch.compile, jax.jit, tf.function with XLA), whatever order a framework's own
cumsum uses and however its exp rounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import import_backend, selected_backends

import reinmax
from reinmax import core
from reinmax.conformance import harness, oracle

BACKENDS = selected_backends()
WIDTHS = {16: 256, 300: 64, 3000: 16}  # categories -> rows
_COMPILED_CACHE: dict = {}


def _logits(n: int, rows: int, seed: int) -> np.ndarray:
    """N(0, 1) float32 logits with masked entries, exact ties, a tied row and an all-masked row."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((rows, n)).astype(np.float32)
    theta[rng.random((rows, n)) < 0.2] = -np.inf
    theta[:, 0] = np.where(np.isneginf(theta[:, 0]), 0.5, theta[:, 0])  # no other empty row
    top = np.max(theta, axis=-1, keepdims=True)
    ties = rng.random((rows, n)) < 0.1
    theta[1::3] = np.where(ties[1::3], top[1::3], theta[1::3])  # ties at the row's maximum
    theta[2] = np.where(np.arange(n) % 3 == 0, 1.25, -np.inf)  # a row of exact ties
    theta[3] = -np.inf  # empty
    return theta


def _uniforms(rows: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed + 1).random(rows).astype(np.float32)
    u[:4] = (0.5, 0.0, 0.5, 0.25)
    return u


def _rounded(theta: np.ndarray, dtype: str) -> np.ndarray:
    """``theta`` in ``dtype``, half precision back in float32 (exact): what the core computes."""
    if dtype in ("float32", "float64"):
        return theta.astype(dtype)
    import ml_dtypes

    kind = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    return theta.astype(kind).astype(np.float32)


def _reference(theta32: np.ndarray, u: np.ndarray) -> np.ndarray:
    import array_api_compat.numpy as xp

    return core.inverse_cdf_index(core.sampling_weights(theta32, xp=xp), u, xp=xp)


def _kernel(backend: str, compiled: bool):
    """``(theta float32, u) -> index`` on ``backend``: the core's weights and inverse CDF."""
    key = (backend, compiled)
    if key in _COMPILED_CACHE:
        return _COMPILED_CACHE[key]
    if backend == "numpy":
        fn = _reference
    elif backend == "torch":
        import torch

        from reinmax.backends.torch import xp

        def run(theta, u):
            return core.inverse_cdf_index(core.sampling_weights(theta, xp=xp), u, xp=xp)

        step = torch.compile(run, dynamic=False) if compiled else run

        def fn(theta, u):
            return step(torch.asarray(theta), torch.asarray(u)).numpy()

    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        def run(theta, u):
            return core.inverse_cdf_index(core.sampling_weights(theta, xp=jnp), u, xp=jnp)

        step = jax.jit(run) if compiled else run

        def fn(theta, u):
            return np.asarray(step(jnp.asarray(theta), jnp.asarray(u)))

    else:
        import tensorflow as tf

        from reinmax.backends.tensorflow import Namespace as xp

        def run(theta, u):
            return core.inverse_cdf_index(core.sampling_weights(theta, xp=xp), u, xp=xp)

        step = tf.function(run, jit_compile=True) if compiled else run

        def fn(theta, u):
            return step(tf.constant(theta), tf.constant(u)).numpy()

    _COMPILED_CACHE[key] = fn
    return fn


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_same_index_on_every_backend(backend: str, compiled: bool) -> None:
    fn = _kernel(backend, compiled)
    for n, rows in WIDTHS.items():
        # float64 eagerly only: a compiler would build every graph a second time for it.
        for dtype in ("float32", "bfloat16", "float16", *(() if compiled else ("float64",))):
            theta = _rounded(_logits(n, rows, seed=n), dtype)
            u = _uniforms(rows, seed=n).astype(theta.dtype)
            expected = _reference(theta, u)
            got = np.asarray(fn(theta, u)).astype(np.int64)
            mismatch = np.flatnonzero(got != expected)
            assert mismatch.size == 0, (n, dtype, mismatch[:5], got[mismatch[:5]])


# A row the long fuzz found (ReinMax-CV, bfloat16 logits, u just below 1): the Hillis-Steele
# entry of the masked category 14 rounds above that of category 13, the target falls between
# them, and the count of entries below it was 14.
_ROUNDED_UP_ROW = [
    -np.inf, -1.078125, 1.859375, 0.126953125, -1.15625, -np.inf, -0.90625, -0.1904296875,
    -0.03857421875, -0.490234375, 0.796875, -np.inf, -np.inf, 1.625, -np.inf, -np.inf,
]  # fmt: skip


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_masked_category_after_a_sum_that_rounds_up_is_never_drawn(
    backend: str, compiled: bool
) -> None:
    theta = np.array([_ROUNDED_UP_ROW], np.float32)
    u = np.array([np.nextafter(np.float32(1), np.float32(0))], np.float32)
    import array_api_compat.numpy as xp

    c = core.prefix_sum(core.sampling_weights(theta, xp=xp), xp=xp)
    target = core.inverse_cdf_target(c, u, xp=xp)
    assert c[0, 13] < target[0, 0] <= c[0, 14]  # the case: the count lands on category 14
    assert int(np.asarray(_kernel(backend, compiled)(theta, u))[0]) == 13


@pytest.mark.parametrize("estimator", ["straight_through", "reinmax", "reinmax_cv"])
def test_public_estimators_never_draw_the_masked_category_of_that_row(
    backend: str, estimator: str
) -> None:
    theta = np.array([_ROUNDED_UP_ROW] * 2)
    options = {"k": 2} if estimator == "reinmax_cv" else {}
    below_one = float(np.nextafter(np.float32(1), np.float32(0)))
    noise = np.full(oracle.noise_shape(estimator, theta.shape, options=options), below_one)
    got = harness.run(backend, estimator, theta, noise, 1.0, dtype="float32", options=options)
    assert np.all(got.hard[:, 13] == 1), got.hard


def test_weighted_at_or_before_moves_back_to_a_weighted_category() -> None:
    import array_api_compat.numpy as xp

    w = np.array([[0.0, 0.5, 0.0, 0.0, 0.5, 0.0]] * 4 + [[0.0] * 6])
    got = core.weighted_at_or_before(np.array([0, 2, 4, 9, 3]), w, xp=xp)
    assert got.tolist() == [0, 1, 4, 4, 0]


def test_ties_split_exactly() -> None:
    """Ten tied categories among sixteen and ``u = 0.5``: the target lands exactly on the end of
    the fifth (the weights of a tie are exactly 1, and the sums of small integers are exact)."""
    import array_api_compat.numpy as xp

    theta = np.full((1, 16), -np.inf, np.float32)
    tied = np.array([0, 2, 3, 5, 7, 8, 10, 12, 13, 15])
    theta[0, tied] = 0.75
    index = core.inverse_cdf_index(
        core.sampling_weights(theta, xp=xp), np.array([0.5], np.float32), xp=xp
    )
    assert int(index[0]) == tied[4]


def test_weights_are_close_to_exp() -> None:
    import array_api_compat.numpy as xp

    for dtype, bound in ((np.float32, 3e-7), (np.float64, 2e-15)):
        d = -np.concatenate([np.linspace(0, 80, 200_001), np.geomspace(1e-12, 1, 1001)])
        w = core.sampling_weights(d.astype(dtype)[None], xp=xp)[0]
        exact = np.exp(d.astype(dtype).astype(np.float64))
        assert np.max(np.abs(w / exact - 1)) < bound, dtype
    far = core.sampling_weights(np.array([[0.0, -86.5, -np.inf]], np.float32), xp=xp)
    assert far.tolist() == [[1.0, 0.0, 0.0]]
    far = core.sampling_weights(np.array([[0.0, -707.5, -700.0]]), xp=xp)
    assert far[0, 1] == 0 and far[0, 2] == pytest.approx(math.exp(-700), rel=1e-14)


def test_prefix_sum_order() -> None:
    """Hillis–Steele's additions: ``[1, 2^-24, 2^-24, 2^-24]`` float32 sums the small ones
    pairwise first (``c_3 = (1 + 2^-24) + (2^-24 + 2^-24)``), which a left-to-right sum does not."""
    import array_api_compat.numpy as xp

    tiny = 2.0**-24
    c = core.prefix_sum(np.array([[1.0, tiny, tiny, tiny]], np.float32), xp=xp)
    assert c[0, 3] == np.float32(1.0) + np.float32(2 * tiny)
    assert c[0, 3] != np.cumsum(np.array([1.0, tiny, tiny, tiny], np.float32))[3]


def _public(backend: str, name: str, theta: np.ndarray, u: np.ndarray, dtype: str, **options):
    """``reinmax.<name>`` on ``backend``'s arrays of ``dtype``: (first output, soft) in NumPy."""
    import_backend(backend)
    kind = {"float32": np.float32, "float16": np.float16}.get(dtype)
    if kind is None:
        import ml_dtypes

        kind = ml_dtypes.bfloat16
    values = theta.astype(kind)
    if backend == "numpy":
        logits, noise, host = values, u, np.asarray
    elif backend == "torch":
        import torch

        logits = torch.asarray(theta).to(getattr(torch, dtype))
        noise, host = torch.asarray(u), lambda t: t.float().numpy()
    elif backend == "jax":
        import jax.numpy as jnp

        logits, noise = jnp.asarray(theta).astype(dtype), jnp.asarray(u)
        host = lambda t: np.asarray(t.astype("float32"))  # noqa: E731
    else:
        import tensorflow as tf

        logits = tf.cast(tf.constant(theta), dtype)
        noise, host = tf.constant(u), lambda t: tf.cast(t, tf.float32).numpy()
    first, soft = getattr(reinmax, name)(logits, 1.0, noise=noise, **options)
    return host(first), host(soft)


@pytest.mark.parametrize("unimix", [0.0, 0.01])
def test_public_functions_agree(unimix: float) -> None:
    """An estimator through the public API, the three input dtypes: the same samples."""
    theta = _logits(300, 32, seed=5)
    u = _uniforms(32, seed=5)
    for dtype in ("float32", "bfloat16", "float16"):
        samples = {}
        for backend in BACKENDS:
            hard, _ = _public(backend, "reinmax", theta, u, dtype, unimix=unimix)
            samples[backend] = hard
        first = samples[BACKENDS[0]]
        assert np.all(first[3] == 0) and np.all(first[:3].sum(-1) == 1)
        for key, hard in samples.items():
            assert np.array_equal(hard, first), (key, dtype)


def test_unimix_weights_are_portable(backend: str) -> None:
    import_backend(backend)
    theta = _logits(300, 64, seed=7)
    u = _uniforms(64, seed=7)
    import array_api_compat.numpy as npx

    expected = core.inverse_cdf_index(core.unimix_weights(theta, 0.01, xp=npx), u, xp=npx)
    hard, _ = _public(backend, "reinmax", theta, u, "float32", unimix=0.01)
    index = np.where(hard.sum(-1) > 0, hard.argmax(-1), expected)
    assert np.array_equal(index, expected)


# Every estimator name that samples (the relaxed Gumbel-softmax is checked below).
_ESTIMATORS = (
    "straight_through",
    "reinmax",
    "gapped_straight_through",
    "zgr",
    "gumbel_softmax",
    "gumbel_rao",
    "reinmax_rao",
    "reinmax_cv",
)


@pytest.mark.parametrize("name", _ESTIMATORS)
def test_nan_and_inf_rows_stay_nan_under_unimix(backend: str, name: str) -> None:
    """docs/SPEC.md: a NaN or +inf logit makes the whole row's outputs NaN, with uniform mixing
    too (NaN was once taken for a masked category: ``[nan, -inf, -inf]`` gave zeros)."""
    theta = np.array(
        [[np.nan, -np.inf, -np.inf], [0.0, np.inf, 1.0], [0.0, np.nan, 1.0], [0.0, 1.0, 2.0]],
        np.float32,
    )
    rng = reinmax.Seed(3)
    import_backend(backend)
    hard, soft = _public_rng(backend, name, theta, rng)
    assert np.all(np.isnan(hard[:3])) and np.all(np.isnan(soft[:3])), hard
    assert np.all(np.isfinite(hard[3])) and hard[3].sum() == 1


def test_relaxed_gumbel_softmax_nan_rows_under_unimix(backend: str) -> None:
    theta = np.array([[0.0, np.inf, 1.0], [0.0, np.nan, 1.0], [0.0, 1.0, 2.0]], np.float32)
    import_backend(backend)
    relaxed, _ = _public_rng(backend, "gumbel_softmax", theta, reinmax.Seed(4), hard=False)
    assert np.all(np.isnan(relaxed[:2])) and np.all(np.isfinite(relaxed[2]))


def _public_rng(backend: str, name: str, theta: np.ndarray, rng, **options):
    if backend == "numpy":
        logits, host = theta, np.asarray
    elif backend == "torch":
        import torch

        logits, host = torch.asarray(theta), lambda t: t.detach().numpy()
    elif backend == "jax":
        import jax.numpy as jnp

        logits, host = jnp.asarray(theta), np.asarray
    else:
        import tensorflow as tf

        logits, host = tf.constant(theta), lambda t: t.numpy()
    first, soft = getattr(reinmax, name)(logits, 1.0, rng=rng, unimix=0.01, **options)
    return host(first), host(soft)


def test_count_below_counts_every_entry(backend: str) -> None:
    """The prefix sum need not be sorted in floating point, so the count compares every entry
    (PyTorch's binary search on ``[1, 2, 1.5, 3]`` for ``1.75`` finds 3, the count is 2)."""
    import_backend(backend)
    c = np.array([[1.0, 2.0, 1.5, 3.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    target = np.array([[1.75], [0.5]], np.float32)
    if backend == "numpy":
        import array_api_compat.numpy as xp

        count = core.count_below(c, target, xp=xp)
    elif backend == "torch":
        import torch

        from reinmax.backends.torch import xp

        count = core.count_below(torch.asarray(c), torch.asarray(target), xp=xp).numpy()
    elif backend == "jax":
        import jax.numpy as jnp

        count = np.asarray(core.count_below(jnp.asarray(c), jnp.asarray(target), xp=jnp))
    else:
        import tensorflow as tf

        from reinmax.backends.tensorflow import Namespace

        count = core.count_below(tf.constant(c), tf.constant(target), xp=Namespace).numpy()
    assert np.asarray(count).tolist() == [2, 4]


def test_mismatch_measurement_writes_counts_plot_and_provenance(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    pytest.importorskip("tensorflow")
    from reinmax.runtime import read_json
    from reinmax.tasks.bench import portable_sampling

    out, figure = tmp_path / "m.json", tmp_path / "m.png"
    argv = ["--widths", "16:40", "--chunk-elements", "320", "--json", str(out)]
    assert portable_sampling.main([*argv, "--plot", str(figure), "--quiet"]) == 0
    result = read_json(out)
    assert result["widths"] == {"16": 40}
    assert {r["variant"] for r in result["records"]} == set(portable_sampling.VARIANTS)
    assert all(r["mismatches_vs_numpy"] == 0 for r in result["records"])
    assert all(r["timed_rows"] == 20 for r in result["records"])  # the second chunk of two
    assert result["provenance"]["command"].startswith(portable_sampling.PROG)
    assert figure.stat().st_size > 0
    with pytest.raises(SystemExit):
        portable_sampling.main(["--widths", "16:x"])

"""reinmax.compat.gumbel_softmax: PyTorch's F.gumbel_softmax, bit for bit, in every framework."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest

from reinmax import compat, noise
from reinmax.compat import gumbel_softmax
from reinmax.core import softmax_vjp
from tests.conftest import import_backend

torch = pytest.importorskip("torch")
F = torch.nn.functional

HAS_GUMBEL_NOISE = hasattr(noise, "Gumbel")
needs_gumbel_noise = pytest.mark.skipif(
    not HAS_GUMBEL_NOISE, reason="reinmax.noise.Gumbel (Gumbel noise for every estimator) is absent"
)

# (shape, dim): the category axis last, in the middle and first; narrow and wide rows.
LAYOUTS = [((64, 10), -1), ((8, 300), -1), ((5, 7, 3), 1), ((4, 20, 6), 0)]
TORCH_DTYPES = ["float32", "float64", "float16", "bfloat16"]


def _torch_pair(shape, dim, dtype, tau, hard, seed=3):
    """F.gumbel_softmax under torch.manual_seed and ours with a generator of the same seed, the
    gradients of one weighted sum of each."""
    dtype = getattr(torch, dtype)
    logits = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_()
    weights = _weights(shape, dtype)
    torch.manual_seed(seed)
    ref = F.gumbel_softmax(logits, tau=tau, hard=hard, dim=dim)
    ours = gumbel_softmax(
        logits, tau=tau, hard=hard, dim=dim, generator=torch.Generator().manual_seed(seed)
    )
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    return ref, ours, grad_ref, grad_ours


def _weights(shape, dtype):
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9)).to(
        dtype
    )


def _gap(a, b) -> float:
    return (a.double() - b.double()).abs().amax().item()


def _ulp(dtype) -> float:
    return torch.finfo(dtype).eps


def _scale(like, tau) -> float:
    return _weights(like.shape, like.dtype).double().abs().amax().item() / tau


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize(("shape", "dim"), LAYOUTS)
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("tau", [1.0, 0.37, 1.3])
def test_torch_values_are_f_gumbel_softmax_bit_for_bit(dtype, shape, dim, hard, tau):
    ref, ours, grad_ref, grad_ours = _torch_pair(shape, dim, dtype, tau, hard)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert torch.equal(ours, ref)
    if hard:
        assert torch.equal(ours.sum(dim), torch.ones_like(ours.sum(dim)))
        assert set(ours.unique().tolist()) <= {0.0, 1.0}
    # Gradients: the same (1/τ) J(y) g in another order of operations, so a few ulps of its
    # scale (the cotangent's max|g| / τ) apart, never more.
    assert _gap(grad_ours, grad_ref) <= 4 * _ulp(ours.dtype) * _scale(ref, tau)


def test_the_global_seed_and_the_default_generator_draw_the_same_sample():
    logits = torch.randn(32, 10)
    torch.manual_seed(11)
    ref = F.gumbel_softmax(logits, tau=0.5, hard=True)
    torch.manual_seed(11)
    assert torch.equal(gumbel_softmax(logits, tau=0.5, hard=True), ref)
    # And the global generator advanced as PyTorch's own draw advances it.
    torch.manual_seed(11)
    F.gumbel_softmax(logits)
    after_ref = torch.rand(3)
    torch.manual_seed(11)
    gumbel_softmax(logits)
    assert torch.equal(torch.rand(3), after_ref)


def test_a_0d_tensor_tau_gives_the_python_float_values():
    logits = torch.randn(16, 12, requires_grad=True)
    torch.manual_seed(0)
    ref = F.gumbel_softmax(logits, tau=0.7)
    torch.manual_seed(0)
    assert torch.equal(gumbel_softmax(logits, tau=torch.tensor(0.7)), ref)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_tau_that_requires_grad_gets_pytorchs_gradient(hard, dtype):
    dtype = getattr(torch, dtype)
    logits = torch.randn(6, 9, 5, dtype=dtype, requires_grad=True)
    weights = _weights(logits.shape, dtype)
    for tau in (torch.tensor(0.8, dtype=dtype), torch.rand(6, 1, 5, dtype=dtype) + 0.5):
        tau.requires_grad_(True)
        torch.manual_seed(6)
        ref = F.gumbel_softmax(logits, tau=tau, hard=hard, dim=1)
        torch.manual_seed(6)
        ours = gumbel_softmax(logits, tau=tau, hard=hard, dim=1)
        assert torch.equal(ours, ref)
        grads_ref = torch.autograd.grad((ref * weights).sum(), (logits, tau))
        grads_ours = torch.autograd.grad((ours * weights).sum(), (logits, tau))
        for ours_grad, ref_grad in zip(grads_ours, grads_ref):
            assert ours_grad.shape == ref_grad.shape
            # τ's gradient sums a row's terms (of size |g| · |log y|): a scale of 50 |g| / τ.
            scale = 50 * _scale(ref, tau.min().item())
            assert _gap(ours_grad, ref_grad) <= 4 * _ulp(dtype) * scale


def test_a_non_contiguous_logits_draws_as_pytorch_draws():
    logits = torch.randn(10, 16).T
    torch.manual_seed(4)
    ref = F.gumbel_softmax(logits, tau=0.9, dim=0)
    torch.manual_seed(4)
    assert torch.equal(gumbel_softmax(logits, tau=0.9, dim=0), ref)


def test_temperature_is_an_alias_of_tau():
    logits = torch.randn(8, 5)
    torch.manual_seed(1)
    ref = F.gumbel_softmax(logits, tau=0.4)
    torch.manual_seed(1)
    assert torch.equal(gumbel_softmax(logits, temperature=0.4), ref)
    with pytest.raises(TypeError, match="tau or its alias temperature"):
        gumbel_softmax(logits, 1.0, temperature=0.4)
    with pytest.raises(TypeError, match="tau or its alias temperature"):
        gumbel_softmax(logits, tau=0.5, temperature=0.4)


def test_eps_is_deprecated_and_unused_as_in_pytorch():
    logits = torch.randn(8, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gumbel_softmax(logits, eps=1e-10)
    with pytest.warns(UserWarning, match="`eps` parameter is deprecated and has no effect"):
        torch.manual_seed(2)
        ours = gumbel_softmax(logits, eps=1e-3)
    torch.manual_seed(2)
    assert torch.equal(ours, gumbel_softmax(logits))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 2}, ValueError, "dim 2 is out of range for logits with 2 dimensions"),
        ({"dim": -3}, ValueError, "dim -3 is out of range"),
        ({"dim": 1.0}, TypeError, "dim must be an integer, got float"),
        ({"dim": True}, TypeError, "dim must be an integer, got a bool"),
        ({"tau": 0.0}, ValueError, "tau must be a finite number > 0"),
        ({"tau": -1.0}, ValueError, "tau must be a finite number > 0"),
        ({"tau": float("nan")}, ValueError, "tau must be a finite number > 0"),
        ({"tau": float("inf")}, ValueError, "tau must be a finite number > 0"),
        ({"tau": 1e-50}, ValueError, "which rounds to 0.0"),
        ({"tau": "1"}, TypeError, "tau must be a positive number or a torch array"),
        ({"tau": np.float64(1.0) * np.ones(3)}, TypeError, "tau must be a positive number"),
        ({"tau": torch.ones(3)}, ValueError, r"tau of shape \(3,\) does not broadcast"),
        ({"tau": torch.ones(6)}, ValueError, "one temperature per row"),
        ({"hard": 1}, TypeError, "hard must be a bool"),
        ({"key": object()}, TypeError, "key= is not how torch takes its random generator"),
        ({"generator": 3}, TypeError, "generator must be a torch.Generator or None"),
        ({"estimator": "nope"}, ValueError, "estimator must be one of"),
        ({"k": 3}, ValueError, "takes no options, got k"),
        ({"estimator": "reinmax"}, ValueError, "hard=False returns the relaxed sample"),
        ({"estimator": "gumbel_rao", "hard": True}, ValueError, "several Gumbel draws"),
    ],
)
def test_bad_arguments_raise_named_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        gumbel_softmax(torch.randn(4, 6), **kwargs)


def test_bad_logits_raise_the_library_errors():
    with pytest.raises(TypeError, match="logits must have a real floating-point dtype"):
        gumbel_softmax(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits must have at least one axis"):
        gumbel_softmax(torch.tensor(1.0))
    with pytest.raises(ValueError, match="has size 0"):
        gumbel_softmax(torch.ones(3, 0))
    with pytest.raises(TypeError, match=r"logits must be a torch\.Tensor"):
        gumbel_softmax([1.0, 2.0])


def test_a_generator_for_jax_raises_a_named_error():
    import_backend("jax")
    import jax.numpy as jnp

    with pytest.raises(TypeError, match="generator= is not how jax takes its random generator"):
        gumbel_softmax(jnp.zeros((2, 3)), generator=torch.Generator())
    with pytest.raises(ValueError, match="key is required in JAX"):
        gumbel_softmax(jnp.zeros((2, 3)))


# Each case compiles several XLA computations: two cases, the category axis last and inside.
@pytest.mark.parametrize(
    ("dtype", "shape", "dim", "hard"),
    [("float32", (64, 10), -1, False), ("float64", (5, 7, 3), 1, True)],
)
def test_jax_reproduces_random_gumbel_and_nn_softmax(dtype, shape, dim, hard):
    import_backend("jax")
    import jax
    import jax.numpy as jnp

    dtype = getattr(jnp, dtype)
    key, tau = jax.random.key(5), 0.37
    logits = jax.random.normal(jax.random.key(1), shape, dtype)

    def reference(logits):
        y_soft = jax.nn.softmax((logits + jax.random.gumbel(key, shape, dtype)) / tau, axis=dim)
        if not hard:
            return y_soft
        index = jnp.argmax(y_soft, axis=dim)
        y_hard = jax.nn.one_hot(index, shape[dim], axis=dim, dtype=dtype)
        return y_hard - jax.lax.stop_gradient(y_soft) + y_soft

    ours = gumbel_softmax(logits, tau, hard, dim=dim, key=key)
    # The library's ops run compiled (jax.jit), where XLA fuses the division into the softmax:
    # bit for bit that is the jitted expression, an ulp from the op-by-op one for hard=False.
    assert jnp.array_equal(ours, jax.jit(reference)(logits))
    eager = reference(logits)
    if hard:
        assert jnp.array_equal(ours, eager)
    else:
        # Fused, exp's argument z − max z rounds once more or less: an ulp of it, which exp
        # turns into a relative error of eps · |z − max z| in each value.
        z = (logits + jax.random.gumbel(key, shape, dtype)) / tau
        spread = float(jnp.max(jnp.max(z, axis=dim, keepdims=True) - z))
        rtol = 2 * float(jnp.finfo(dtype).eps) * (1 + spread)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(eager), rtol=rtol, atol=0)
    weights = jax.random.normal(jax.random.key(2), shape, dtype)

    def loss(f):
        return lambda x: jnp.sum(f(x) * weights)

    # Against the compiled reference, whose y_soft has our bits: the backward alone differs.
    grad_ref = jax.jit(jax.grad(loss(reference)))(logits)
    grad_ours = jax.grad(loss(lambda x: gumbel_softmax(x, tau, hard, dim=dim, key=key)))(logits)
    scale = float(jnp.max(jnp.abs(weights))) / tau
    assert float(jnp.max(jnp.abs(grad_ours - grad_ref))) <= 4 * float(jnp.finfo(dtype).eps) * scale
    assert jnp.array_equal(
        jax.jit(lambda x: gumbel_softmax(x, tau, hard, dim=dim, key=key))(logits), ours
    )


def test_numpy_draws_with_generator_gumbel_and_gives_the_rule_through_vjp():
    import reinmax.backends.numpy as rnp
    from reinmax.core import softmax

    logits = np.random.default_rng(0).normal(size=(6, 9))
    g = np.random.default_rng(7).gumbel(size=logits.shape)
    y_soft = softmax((logits + g) / 0.6, xp=rnp.xp)
    ours, pullback = rnp.vjp(gumbel_softmax, logits, 0.6, generator=np.random.default_rng(7))
    np.testing.assert_array_equal(ours, y_soft)
    cotangent = np.random.default_rng(1).normal(size=logits.shape)
    np.testing.assert_array_equal(
        pullback(cotangent), softmax_vjp(y_soft, cotangent, tau=np.asarray(0.6), xp=rnp.xp)
    )
    hard, pullback = rnp.vjp(gumbel_softmax, logits, 0.6, True, generator=np.random.default_rng(7))
    np.testing.assert_array_equal(hard, np.eye(9)[np.argmax(logits + g, axis=-1)])
    np.testing.assert_array_equal(
        pullback(cotangent), softmax_vjp(y_soft, cotangent, tau=np.asarray(0.6), xp=rnp.xp)
    )
    with pytest.raises(TypeError, match=r"generator must be a numpy\.random\.Generator"):
        gumbel_softmax(logits, generator=0)


def test_tensorflow_draws_gumbel_noise_from_its_uniforms():
    import_backend("tensorflow")
    import tensorflow as tf

    logits = tf.constant(np.random.default_rng(0).normal(size=(6, 9)), tf.float32)
    u = tf.random.Generator.from_seed(3).uniform(logits.shape)
    g = -tf.math.log(-tf.math.log(tf.maximum(u, np.finfo(np.float32).tiny)))
    ref = tf.nn.softmax((logits + g) / 0.6)
    ours = gumbel_softmax(logits, 0.6, generator=tf.random.Generator.from_seed(3))
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    with tf.GradientTape() as tape:
        tape.watch(logits)
        hard = gumbel_softmax(logits, 0.6, True, generator=tf.random.Generator.from_seed(3))
        loss = tf.reduce_sum(hard * tf.range(9, dtype=tf.float32))
    grad = tape.gradient(loss, logits)
    from reinmax.backends.tensorflow import Namespace

    cotangent = tf.ones_like(ref) * tf.range(9, dtype=tf.float32)
    expected = softmax_vjp(ref, cotangent, tau=0.6, xp=Namespace)
    np.testing.assert_allclose(grad.numpy(), expected.numpy(), rtol=0, atol=1e-6)


def test_an_annealed_0d_tensor_tau_compiles_once():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    step = torch.compile(lambda x, tau: gumbel_softmax(x, tau, True), backend=counter)
    logits = torch.randn(8, 10, requires_grad=True)
    tau = torch.tensor(2.0)
    for i in range(5):
        tau.fill_(2.0 - 0.2 * i)
        step(logits, tau).sum().backward()
    assert counter.frame_count == 1


@needs_gumbel_noise
@pytest.mark.parametrize("estimator", ["reinmax", "straight_through", "gapped_straight_through"])
def test_another_estimator_keeps_the_sample_and_swaps_the_backward(estimator):
    import reinmax

    logits = torch.randn(32, 10, requires_grad=True)
    torch.manual_seed(8)
    ref = F.gumbel_softmax(logits, tau=1.3, hard=True)
    ours = gumbel_softmax(
        logits, 1.3, True, estimator=estimator, generator=torch.Generator().manual_seed(8)
    )
    assert torch.equal(ours, ref)
    weights = torch.randn(32, 10)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    g = -torch.empty_like(logits).exponential_(generator=torch.Generator().manual_seed(8)).log()
    hard, _ = getattr(reinmax, estimator)(logits, 1.3, noise=noise.Gumbel(g))
    (grad_lib,) = torch.autograd.grad((hard * weights).sum(), logits)
    assert torch.equal(grad_ours, grad_lib)


def test_an_estimators_options_reach_it():
    logits = torch.randn(16, 8, requires_grad=True)
    weights = torch.randn(16, 8)
    grads = []
    for gap in (1.0, 3.0):
        generator = torch.Generator().manual_seed(2)
        y = gumbel_softmax(
            logits, 1.0, True, estimator="gapped_straight_through", gap=gap, generator=generator
        )
        grads.append(torch.autograd.grad((y * weights).sum(), logits)[0])
    assert not torch.equal(*grads)
    with pytest.raises(ValueError, match="gap"):
        gumbel_softmax(logits, 1.0, True, estimator="gapped_straight_through", gap=-1.0)


def test_the_docstring_example_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(compat.gumbel_softmax, "gumbel_softmax", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert runner.summarize(verbose=False).attempted > 0


def test_a_backend_without_the_gumbel_members_is_named():
    import types

    bare = types.SimpleNamespace(name="bare", gumbel_keyword="generator")
    with pytest.raises(TypeError, match="the bare backend has no gumbel, softmax, scalar"):
        compat._gumbel_backend(bare)

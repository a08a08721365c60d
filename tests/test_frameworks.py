"""Each framework's own edges: its RNG, its transforms, REINFORCE and NumPy's explicit VJP."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from reinmax.conformance import harness, oracle

ESTIMATOR_NAMES = ("straight_through", "gumbel_softmax", "gumbel_rao", "gapped_straight_through")
ESTIMATOR_NAMES += ("reinmax",)


def _logits(shape=(6, 5), seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def _is_one_hot(hard) -> bool:
    hard = np.asarray(hard)
    return bool(np.all((hard == 0) | (hard == 1)) and np.all(hard.sum(-1) == 1))


# ---------------------------------------------------------------------------------------------
# RNG: each backend draws with its own generator, reproducibly, and rejects anything else
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_numpy_rng(name):
    from reinmax.backends import numpy as rnp

    x = _logits()
    fn = getattr(rnp, name)
    a = fn(x, rng=np.random.default_rng(3))[0]
    b = fn(x, rng=np.random.default_rng(3))[0]
    np.testing.assert_array_equal(a, b)
    assert _is_one_hot(a)
    np.random.seed(5)
    c = fn(x)[0]
    np.random.seed(5)
    np.testing.assert_array_equal(c, fn(x)[0])
    with pytest.raises(TypeError, match="rng"):
        fn(x, rng="3")


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_torch_rng(name):
    torch = pytest.importorskip("torch")
    from reinmax.backends import torch as rt

    x = torch.as_tensor(_logits())
    fn = getattr(rt, name)
    a = fn(x, rng=torch.Generator().manual_seed(3))[0]
    b = fn(x, rng=torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b) and _is_one_hot(a.numpy())
    torch.manual_seed(5)
    c = fn(x)[0]
    torch.manual_seed(5)
    assert torch.equal(c, fn(x)[0])
    with pytest.raises(TypeError, match="rng"):
        fn(x, rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_jax_rng_and_vmap_over_keys(name):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from reinmax.backends import jax as rj

    harness.available_backends()
    x = jnp.asarray(_logits())
    fn = getattr(rj, name)
    key = jax.random.key(3)
    np.testing.assert_array_equal(fn(x, rng=key)[0], fn(x, rng=key)[0])
    keys = jax.random.split(jax.random.key(4), 8)
    batched = jax.vmap(lambda k: fn(x, 1.3, rng=k)[0])(keys)
    assert batched.shape == (8, *x.shape)
    for i in range(8):
        np.testing.assert_array_equal(batched[i], fn(x, 1.3, rng=keys[i])[0])
    assert _is_one_hot(batched)
    assert len({np.asarray(b).tobytes() for b in batched}) > 1, "every key drew the same sample"


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_tensorflow_rng(name):
    harness.available_backends()
    tf = pytest.importorskip("tensorflow")
    from reinmax.backends import tensorflow as rtf

    x = tf.constant(_logits())
    fn = getattr(rtf, name)
    a = fn(x, rng=tf.random.Generator.from_seed(3))[0]
    b = fn(x, rng=tf.random.Generator.from_seed(3))[0]
    np.testing.assert_array_equal(a, b)
    c = fn(x, rng=tf.constant([1, 2]))[0]
    np.testing.assert_array_equal(c, fn(x, rng=[1, 2])[0])
    assert _is_one_hot(a) and _is_one_hot(c) and _is_one_hot(fn(x)[0])
    with pytest.raises(TypeError, match="rng"):
        fn(x, rng=[1, 2, 3])


# ---------------------------------------------------------------------------------------------
# Transforms not covered by the harness: torch.func.grad, jax.grad under jit, plain tf.function
# ---------------------------------------------------------------------------------------------


def _noise(name, shape, k=2, seed=1):
    rng = np.random.default_rng(seed)
    if name == "gumbel_softmax":
        return rng.random(shape)
    if name == "gumbel_rao":
        return rng.random((k + 1, *shape))
    return rng.random(shape[:-1])


def _problem(backend, name):
    """``(loss, x, expected)``: ``sum(hard · w) + sum(soft · w)`` through ``backend``'s public
    function, the logits, and the oracle's gradient of that loss, which every transform gives."""
    module, drive = importlib.import_module(f"reinmax.backends.{backend}"), harness.driver(backend)
    logits, noise, weight = _logits(), _noise(name, _logits().shape), _logits(seed=2)
    options = {"k": 2} if name == "gumbel_rao" else {}
    u, w, xp = drive.asarray(noise, "float64"), drive.asarray(weight, "float64"), module.BACKEND.xp

    def loss(t):
        hard, soft = getattr(module, name)(t, 0.8, noise=u, **options)
        return xp.sum(hard * w) + xp.sum(soft * w)

    expected = oracle.evaluate(name, logits, noise, 0.8, weight, weight, options=options).grad
    return loss, drive.asarray(logits, "float64"), expected


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_torch_func_grad_equals_autograd(name):
    torch = pytest.importorskip("torch")
    loss, x, oracle_grad = _problem("torch", name)
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(loss(xr), xr)
    torch.testing.assert_close(torch.func.grad(loss)(x), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(expected, oracle_grad, atol=1e-13)


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_jax_grad_jit_equals_eager(name):
    jax = pytest.importorskip("jax")
    with harness.driver("jax").float64():
        loss, x, oracle_grad = _problem("jax", name)
        eager = jax.grad(loss)(x)
        np.testing.assert_allclose(jax.jit(jax.grad(loss))(x), eager, atol=1e-13)
        np.testing.assert_allclose(eager, oracle_grad, atol=1e-13)


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_tf_function_equals_eager(name):
    harness.available_backends()
    tf = pytest.importorskip("tensorflow")
    loss, x, oracle_grad = _problem("tensorflow", name)

    def grad(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            value = loss(t)
        return tape.gradient(value, t)

    eager = grad(x)
    np.testing.assert_allclose(tf.function(grad)(x), eager, atol=1e-13)
    np.testing.assert_allclose(eager, oracle_grad, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# REINFORCE: the surrogate's gradient is (f − b)(D − π), in every backend
# ---------------------------------------------------------------------------------------------


def _reinforce_grad(backend, logits, hard, value, baseline, cotangent, axis):
    module = importlib.import_module(f"reinmax.backends.{backend}")
    drive = harness.driver(backend)
    with drive.float64():
        d, v = drive.asarray(hard, "float64"), drive.asarray(value, "float64")
        (s,), grad = drive.vjp(
            lambda t: module.reinforce(t, d, v, baseline, axis=axis),
            drive.asarray(logits, "float64"),
            (drive.asarray(cotangent, "float64"),),
        )
        return drive.to_numpy(s), drive.to_numpy(grad)


@pytest.mark.parametrize("axis", [-1, 0])
def test_reinforce_gradient_in_every_backend(backend, axis):
    harness.available_backends()
    logits = _logits((4, 6))
    logits[1, 2] = -np.inf
    if axis == 0:
        logits = logits.T.copy()
    probs = np.exp(logits - logits.max(axis=axis, keepdims=True))
    probs /= probs.sum(axis=axis, keepdims=True)
    index = np.array([0, 3, 5, 1])
    hard = np.moveaxis(np.eye(6)[index], -1, axis)
    value = np.array([1.5, -2.0, 0.25, 3.0])
    cotangent = np.array([1.0, 0.5, -1.0, 2.0])
    surrogate, grad = _reinforce_grad(backend, logits, hard, value, 0.5, cotangent, axis)
    log_pi = np.log(np.take_along_axis(probs, np.expand_dims(index, axis), axis)).squeeze(axis)
    np.testing.assert_allclose(surrogate, (value - 0.5) * log_pi, rtol=1e-12)
    scale = np.expand_dims((value - 0.5) * cotangent, axis)
    np.testing.assert_allclose(grad, scale * (hard - probs), rtol=1e-12, atol=1e-15)
    assert not np.any(np.isnan(grad))
    masked = np.moveaxis(grad, axis, -1)[1, 2]
    assert masked == 0


def test_reinforce_rejects_bad_shapes():
    from reinmax.backends import numpy as rnp

    logits, hard = _logits((4, 6)), np.eye(6)[[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="hard must have the shape of logits"):
        rnp.reinforce(logits, hard[:3], np.ones(4))
    with pytest.raises(ValueError, match="value of shape"):
        rnp.reinforce(logits, hard, np.ones(5))
    with pytest.raises(ValueError, match="baseline of shape"):
        rnp.reinforce(logits, hard, np.ones(4), np.ones((2, 4)))


# ---------------------------------------------------------------------------------------------
# NumPy's explicit VJP
# ---------------------------------------------------------------------------------------------


def test_numpy_vjp_none_is_zero_and_arity_is_checked():
    from reinmax.backends import numpy as rnp

    x, u = _logits(), np.random.default_rng(1).random(6)
    _, pullback = rnp.vjp(rnp.reinmax, x, 1.2, noise=u)
    g = np.random.default_rng(2).normal(size=x.shape)
    np.testing.assert_array_equal(pullback(g, None), pullback(g, np.zeros_like(g)))
    np.testing.assert_array_equal(pullback(None, None), np.zeros_like(x))
    with pytest.raises(ValueError, match="2 cotangents"):
        pullback(g)
    with pytest.raises(ValueError, match=r"reinmax\.backends\.numpy"):
        rnp.vjp(lambda t: t, x)


def test_torch_compile_draws_from_the_global_generator_at_dynamic_shapes():
    """rng=None under torch.compile, at a second shape (which Dynamo traces with dynamic sizes)."""
    torch = pytest.importorskip("torch")
    from reinmax.backends import torch as rt

    compiled = torch.compile(lambda t: rt.reinmax(t, 1.3), backend="aot_eager", fullgraph=True)
    for shape in [(6, 5), (9, 7)]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        hard, soft = compiled(x)
        assert _is_one_hot(hard.detach().numpy())
        (grad,) = torch.autograd.grad((hard * x.detach()).sum() + soft.sum(), x)
        assert torch.all(torch.isfinite(grad))
        torch.testing.assert_close(grad.sum(-1), torch.zeros(shape[0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("name", "options"), [("gumbel_rao", {"k": 2}), ("gapped_straight_through", {"gap": "p"})]
)
def test_torch_compile_does_not_recompile_estimators_with_options(name, options):
    """An estimator built from options is found again under torch.compile, not rebuilt per call."""
    torch = pytest.importorskip("torch")
    from reinmax.backends import torch as rt

    compiled = torch.compile(
        lambda t: getattr(rt, name)(t, 1.3, **options)[0], backend="aot_eager", fullgraph=True
    )
    x = torch.randn(6, 5, dtype=torch.float64)
    for _ in range(2):  # the first call may build the op inside the trace, and retrace once
        compiled(x)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            assert _is_one_hot(compiled(x).numpy())


def test_tensorflow_variable_logits_get_the_gradient():
    harness.available_backends()
    tf = pytest.importorskip("tensorflow")
    from reinmax.backends import tensorflow as rtf

    x = _logits()
    noise = _noise("reinmax", x.shape)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        hard, soft = rtf.reinmax(variable, 1.3, noise=noise)
        loss = tf.reduce_sum(hard * tf.range(5, dtype=tf.float64)) + tf.reduce_sum(soft)
    from reinmax.backends import numpy as rnp

    _, pullback = rnp.vjp(rnp.reinmax, x, 1.3, noise=noise)
    expected = pullback(np.broadcast_to(np.arange(5.0), x.shape), np.ones_like(x))
    np.testing.assert_allclose(tape.gradient(loss, variable), expected, atol=1e-14)


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_tf_function_with_an_unknown_batch_size(name):
    """A graph traced for any batch size (Keras traces so): the noise's shape is read at run
    time, from the framework's generator and from the portable one."""
    harness.available_backends()
    tf = pytest.importorskip("tensorflow")
    from reinmax.backends import tensorflow as rtf

    spec = [tf.TensorSpec([None, 3, 4], tf.float32)]
    for rng in (None, 5):
        f = tf.function(
            lambda x, rng=rng: getattr(rtf, name)(x, 0.9, rng=rng)[0], input_signature=spec
        )
        for batch in (2, 7):
            hard = f(tf.random.normal((batch, 3, 4))).numpy()
            assert hard.shape == (batch, 3, 4) and _is_one_hot(hard)
    eager = getattr(rtf, name)(tf.zeros((2, 3, 4)), 0.9, rng=5)[0]
    traced = tf.function(lambda x: getattr(rtf, name)(x, 0.9, rng=5)[0], input_signature=spec)
    np.testing.assert_array_equal(traced(tf.zeros((2, 3, 4))), eager)

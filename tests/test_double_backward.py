"""Higher derivatives: those of the backward rule, in every framework that has them.

The reference is the central finite difference, in float64 and with fixed noise, of the
first-order gradient that NumPy's explicit VJP gives (the sample does not move for so small a
step, so the difference sees only the backward rule's own dependence on the logits). PyTorch's
double backward, ``torch.autograd.functional.hessian`` and ``torch.func.hessian``, JAX's
``jax.hessian`` and TensorFlow's nested tapes must all give it, for a loss ``⟨W, D⟩ + ⟨V, p²⟩``
(linear in the sample ``D``, any function of ``soft = p``). For a loss that is not linear in the
sample, the frameworks' hooks differ (docs/SPEC.md, "Higher derivatives"): the last tests pin
which gives what. NumPy has no second derivative, and TorchScript is refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from reinmax.backends import numpy as rnp
from reinmax.core import REGISTRY, noise_layout
from reinmax.errors import UnsupportedError
from tests.conftest import import_backend

CASES = [
    ("straight_through", {}),
    ("gumbel_softmax", {}),
    ("gumbel_softmax", {"hard": False}),
    ("gumbel_rao", {"k": 2}),
    ("gapped_straight_through", {}),
    ("reinmax", {}),
    ("zgr", {}),
    ("reinmax_rao", {"k": 2}),
    ("reinmax_cv", {"k": 2}),
]
SHAPE = (2, 3)
TAU = 1.3
# Central differences of step h err by O(h²) (1e-10 here) plus rounding of order eps/h (1e-10):
# a tolerance two orders of magnitude above both, far below the Hessians' entries (0.01 to 1).
STEP = 1e-5
TOLERANCE = 1e-8


def _id(case) -> str:
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items())


def _inputs(case, seed=0):
    name, options = case
    rng = np.random.default_rng(seed)
    x, w, v = (rng.normal(size=SHAPE) for _ in range(3))
    noise = rng.uniform(size=noise_layout(REGISTRY[name](**options), SHAPE))
    return x, w, v, noise


def _finite_difference(gradient, x):
    """The Jacobian (rows: the gradient's entries) of ``gradient`` at ``x`` by central
    differences."""
    columns = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = STEP
        e = e.reshape(x.shape)
        columns.append(((gradient(x + e) - gradient(x - e)) / (2 * STEP)).ravel())
    return np.stack(columns, axis=1)


def _reference(case, x, w, v, noise):
    """Central differences of the first-order gradient of ``⟨W, D⟩ + ⟨V, p²⟩`` (NumPy's VJP)."""
    name, options = case

    def gradient(logits):
        (_, soft), pullback = rnp.vjp(getattr(rnp, name), logits, TAU, noise=noise, **options)
        return pullback(w, 2 * v * soft)

    return _finite_difference(gradient, x)


def _torch_loss(case, w, v, noise):
    import torch

    from reinmax.backends import torch as rt

    name, options = case
    w, v, noise = (torch.as_tensor(a) for a in (w, v, noise))

    def loss(x):
        hard, soft = getattr(rt, name)(x, TAU, noise=noise, **options)
        return (w * hard).sum() + (v * soft**2).sum()

    return loss


def _torch_double_backward(loss, x):
    """The Hessian row by row: a gradient with create_graph=True, then the gradient of each of
    its entries."""
    import torch

    x = torch.as_tensor(x).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x), x, create_graph=True)
    rows = [torch.autograd.grad(g, x, retain_graph=True)[0] for g in grad.reshape(-1)]
    return torch.stack(rows).reshape(x.numel(), -1).numpy()


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_torch_second_derivatives_are_those_of_the_backward_rule(case):
    import_backend("torch")
    import torch

    x, w, v, noise = _inputs(case)
    want = _reference(case, x, w, v, noise)
    loss = _torch_loss(case, w, v, noise)
    t = torch.as_tensor(x)
    n = x.size
    got = {
        "double backward": _torch_double_backward(loss, x),
        "autograd.functional.hessian": torch.autograd.functional.hessian(loss, t).reshape(n, n),
        "func.hessian": torch.func.hessian(loss)(t).reshape(n, n),
        "func.jacrev(jacrev)": torch.func.jacrev(torch.func.jacrev(loss))(t).reshape(n, n),
    }
    for how, hessian in got.items():
        np.testing.assert_allclose(np.asarray(hessian), want, rtol=0, atol=TOLERANCE, err_msg=how)
    # Not a vacuous comparison: the rule's own derivative is there.
    assert np.abs(want).max() > 0.05


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_jax_hessian_is_that_of_the_backward_rule(case):
    import_backend("jax")
    import jax
    import jax.numpy as jnp

    from reinmax.backends import jax as rj

    name, options = case
    x, w, v, noise = _inputs(case)

    def loss(logits):
        hard, soft = getattr(rj, name)(logits, TAU, noise=jnp.asarray(noise), **options)
        return jnp.sum(w * hard) + jnp.sum(v * soft**2)

    got = np.asarray(jax.hessian(loss)(jnp.asarray(x))).reshape(x.size, -1)
    want = _reference(case, x, w, v, noise)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


def _tensorflow_hessian(call, x, loss_of_outputs):
    import tensorflow as tf

    t = tf.constant(x)
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(t)
        with tf.GradientTape() as inner:
            inner.watch(t)
            value = loss_of_outputs(*call(t))
        grad = inner.gradient(value, t)
    return outer.jacobian(grad, t, experimental_use_pfor=False).numpy().reshape(x.size, -1)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_tensorflow_nested_tapes_give_the_backward_rules_derivative(case):
    import_backend("tensorflow")
    import tensorflow as tf

    from reinmax.backends import tensorflow as rtf

    name, options = case
    x, w, v, noise = _inputs(case)

    def call(t):
        return getattr(rtf, name)(t, TAU, noise=tf.constant(noise), **options)

    def loss(hard, soft):
        return tf.reduce_sum(w * hard) + tf.reduce_sum(v * soft**2)

    got = _tensorflow_hessian(call, x, loss)
    np.testing.assert_allclose(got, _reference(case, x, w, v, noise), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_torch_forward_mode_is_the_same_rule(case):
    """torch.func.jacfwd and eager dual numbers give the first-order gradient the backward gives."""
    import_backend("torch")
    import torch
    import torch.autograd.forward_ad as fwad

    x, w, v, noise = _inputs(case)
    loss = _torch_loss(case, w, v, noise)
    t = torch.as_tensor(x)
    want = torch.func.grad(loss)(t)
    torch.testing.assert_close(torch.func.jacfwd(loss)(t), want, rtol=0, atol=1e-12)
    tangent = torch.as_tensor(np.random.default_rng(1).normal(size=SHAPE))
    with fwad.dual_level():
        derivative = fwad.unpack_dual(loss(fwad.make_dual(t, tangent))).tangent
    torch.testing.assert_close(derivative, (want * tangent).sum(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Bernoulli forms and REINFORCE
# ---------------------------------------------------------------------------------------------

# One inverse-CDF estimator and one that perturbs every category.
BERNOULLI = ["reinmax", "gumbel_rao"]


@pytest.mark.parametrize("name", BERNOULLI)
def test_bernoulli_second_derivatives(name):
    for framework in ("torch", "jax", "tensorflow"):
        import_backend(framework)
    import jax
    import jax.numpy as jnp
    import tensorflow as tf
    import torch

    from reinmax.backends import jax as rj
    from reinmax.backends import tensorflow as rtf
    from reinmax.backends import torch as rt

    rng = np.random.default_rng(2)
    x, w, v = (rng.normal(size=(4,)) for _ in range(3))
    noise = rng.uniform(size=noise_layout(REGISTRY[name](), (4, 2)))

    def gradient(a):
        (_, p), pullback = rnp.vjp(rnp.bernoulli, a, TAU, noise=noise, estimator=name)
        return pullback(w, 2 * v * p)

    want = _finite_difference(gradient, x)
    assert np.abs(want).max() > 0.05

    def torch_loss(a):
        z, p = rt.bernoulli(a, TAU, noise=torch.as_tensor(noise), estimator=name)
        return (torch.as_tensor(w) * z).sum() + (torch.as_tensor(v) * p**2).sum()

    def jax_loss(a):
        z, p = rj.bernoulli(a, TAU, noise=jnp.asarray(noise), estimator=name)
        return jnp.sum(w * z) + jnp.sum(v * p**2)

    got = {
        "torch": torch.func.hessian(torch_loss)(torch.as_tensor(x)).numpy(),
        "torch double backward": _torch_double_backward(torch_loss, x),
        "jax": np.asarray(jax.hessian(jax_loss)(jnp.asarray(x))),
        "tensorflow": _tensorflow_hessian(
            lambda t: rtf.bernoulli(t, TAU, noise=tf.constant(noise), estimator=name),
            x,
            lambda z, p: tf.reduce_sum(w * z) + tf.reduce_sum(v * p**2),
        ),
    }
    for how, hessian in got.items():
        np.testing.assert_allclose(hessian, want, rtol=0, atol=TOLERANCE, err_msg=how)


def test_reinforce_second_derivative_is_that_of_its_surrogate_gradient():
    """(f − b)(D − π) depends on the logits through π: its derivative is −(f − b) J(π)."""
    for framework in ("torch", "jax", "tensorflow"):
        import_backend(framework)
    import jax
    import jax.numpy as jnp
    import tensorflow as tf
    import torch

    from reinmax.backends import jax as rj
    from reinmax.backends import tensorflow as rtf
    from reinmax.backends import torch as rt

    rng = np.random.default_rng(3)
    x = rng.normal(size=SHAPE)
    hard = np.eye(SHAPE[1])[[2, 0]]
    value, weight = rng.normal(size=SHAPE[0]), rng.normal(size=SHAPE[0])

    def gradient(logits):
        _, pullback = rnp.vjp(rnp.reinforce, logits, hard, value, 0.5)
        return pullback(weight)

    want = _finite_difference(gradient, x)
    assert np.abs(want).max() > 0.05

    def torch_loss(logits):
        surrogate = rt.reinforce(logits, torch.as_tensor(hard), torch.as_tensor(value), 0.5)
        return (torch.as_tensor(weight) * surrogate).sum()

    def jax_loss(logits):
        return jnp.sum(weight * rj.reinforce(logits, jnp.asarray(hard), jnp.asarray(value), 0.5))

    got = {
        "torch": torch.func.hessian(torch_loss)(torch.as_tensor(x)).reshape(x.size, -1).numpy(),
        "torch double backward": _torch_double_backward(torch_loss, x),
        "jax": np.asarray(jax.hessian(jax_loss)(jnp.asarray(x))).reshape(x.size, -1),
        "tensorflow": _tensorflow_hessian(
            lambda t: (rtf.reinforce(t, tf.constant(hard), tf.constant(value), 0.5),),
            x,
            lambda surrogate: tf.reduce_sum(weight * surrogate),
        ),
    }
    for how, hessian in got.items():
        np.testing.assert_allclose(hessian, want, rtol=0, atol=TOLERANCE, err_msg=how)


# ---------------------------------------------------------------------------------------------
# A loss that is not linear in the sample: where the frameworks' hooks differ
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [("reinmax", {})], ids=_id)
def test_a_loss_nonlinear_in_the_sample(case):
    """JAX differentiates the sample as it is (piecewise constant), so its Hessian is the finite
    difference of the first-order gradient; PyTorch and TensorFlow apply the estimator to the
    sample's derivative at every order, and agree with each other."""
    for framework in ("torch", "jax", "tensorflow"):
        import_backend(framework)
    import jax
    import jax.numpy as jnp
    import tensorflow as tf
    import torch

    from reinmax.backends import jax as rj
    from reinmax.backends import tensorflow as rtf

    name, options = case
    x, w, v, noise = _inputs(case, seed=4)

    def gradient(logits):
        (hard, _), pullback = rnp.vjp(getattr(rnp, name), logits, TAU, noise=noise, **options)
        return pullback(2 * w * np.sum(w * hard, axis=-1, keepdims=True), v)

    want = _finite_difference(gradient, x)

    def jax_loss(logits):
        hard, soft = getattr(rj, name)(logits, TAU, noise=jnp.asarray(noise), **options)
        return jnp.sum(jnp.sum(w * hard, axis=-1) ** 2) + jnp.sum(v * soft)

    def tf_loss(hard, soft):
        return tf.reduce_sum(tf.reduce_sum(w * hard, axis=-1) ** 2) + tf.reduce_sum(v * soft)

    got_jax = np.asarray(jax.hessian(jax_loss)(jnp.asarray(x))).reshape(x.size, -1)
    np.testing.assert_allclose(got_jax, want, rtol=0, atol=TOLERANCE)
    call = lambda t: getattr(rtf, name)(t, TAU, noise=tf.constant(noise), **options)  # noqa: E731
    got_tf = _tensorflow_hessian(call, x, tf_loss)

    from reinmax.backends import torch as rt

    def torch_loss(logits):
        hard, soft = getattr(rt, name)(logits, TAU, noise=torch.as_tensor(noise), **options)
        wt = torch.as_tensor(w)
        return ((wt * hard).sum(-1) ** 2).sum() + (torch.as_tensor(v) * soft).sum()

    got_torch = _torch_double_backward(torch_loss, x)
    np.testing.assert_allclose(got_torch, got_tf, rtol=0, atol=1e-12)
    n = x.size
    hessian = torch.func.hessian(torch_loss)(torch.as_tensor(x)).reshape(n, n).numpy()
    np.testing.assert_allclose(hessian, got_tf, rtol=0, atol=1e-12)
    # The difference is the estimator applied to the sample's derivative: not a rounding error.
    assert np.abs(got_torch - want).max() > 0.01


# ---------------------------------------------------------------------------------------------
# What is refused, by name
# ---------------------------------------------------------------------------------------------


def test_numpy_has_no_second_derivative():
    x, w, v, noise = _inputs(("reinmax", {}))

    def first_order(logits):
        _, pullback = rnp.vjp(rnp.reinmax, logits, TAU, noise=noise)
        return pullback(w, v)

    with pytest.raises(UnsupportedError, match="no higher derivatives"):
        rnp.vjp(first_order, x)


def test_torchscript_is_refused_by_name():
    import_backend("torch")
    import torch

    import reinmax
    from reinmax.backends import torch as rt

    class Sampler(torch.nn.Module):
        def forward(self, logits: torch.Tensor) -> torch.Tensor:
            return reinmax.reinmax(logits, 1.3)[0]

    for target in (rt.reinmax, reinmax.gumbel_rao, rt.bernoulli, rt.reinforce, Sampler()):
        with pytest.raises(UnsupportedError, match=r"TorchScript \(torch\.jit\.script\)"):
            torch.jit.script(target)

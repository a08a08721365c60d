"""The calls researchers already write: τ and seeds under compilers, τ gradients, masks, the
sample's index, Gumbel noise, default temperatures and objects that travel (docs/SPEC.md)."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest

import reinmax
from reinmax.core import REGISTRY
from reinmax.errors import UnsupportedError
from reinmax.noise import Exponential, Gumbel, Seed

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
tf = pytest.importorskip("tensorflow")
jnp = jax.numpy

STEPS = 20
ESTIMATORS = list(REGISTRY)


def _weights(n: int) -> np.ndarray:
    return np.linspace(-1.0, 2.0, n)


# ---------------------------------------------------------------------------------------------
# τ and seeds under compilers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed_kind", ["int", "tensor", "seed_with_tensor_stream"], ids=lambda kind: kind
)
def test_torch_compile_takes_a_changing_tau_and_seed_without_recompiling(seed_kind):
    """Over 20 steps of an annealed Python-float τ and a new seed each step, dynamo compiles at
    most twice (the first graph, and one with the scalars made symbolic), with fullgraph."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()

    @torch.compile(backend=counter, fullgraph=True)
    def step(x, tau, seed):
        hard, soft = reinmax.reinmax(x, tau, rng=seed)
        return (hard * torch.arange(5.0)).sum() + soft.sum()

    seeds = {
        "int": lambda i: i,
        "tensor": lambda i: torch.tensor(i),
        "seed_with_tensor_stream": lambda i: Seed(7, torch.tensor(i)),
    }[seed_kind]
    x = torch.randn(6, 5, requires_grad=True)
    for i in range(STEPS):
        tau = 1.5 - 0.02 * i
        step(x, tau, seeds(i)).backward()
    assert counter.frame_count <= 2, counter.frame_count


def test_torch_tensor_seed_is_the_int_seed():
    x = torch.randn(4, 6)
    for name in ESTIMATORS:
        fn = getattr(reinmax, name)
        assert torch.equal(fn(x, rng=torch.tensor(5))[0], fn(x, rng=5)[0]), name


def test_jax_jit_traces_once_over_changing_tau_and_traced_seeds():
    traces = []

    @jax.jit
    def step(x, tau, seed):
        traces.append(1)
        return reinmax.gumbel_softmax(x, tau, rng=seed, hard=False)[0]

    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), dtype=jnp.float32)
    samples = [step(x, jnp.float32(1.0 + 0.05 * i), jnp.int32(i)) for i in range(STEPS)]
    assert len(traces) == 1
    # A traced seed is the int seed.
    eager = reinmax.gumbel_softmax(x, 1.0 + 0.05 * 3, rng=3, hard=False)[0]
    np.testing.assert_allclose(samples[3], eager, rtol=1e-6)


def test_jax_scan_and_vmap_give_each_seed_its_own_sample():
    x = jnp.zeros((3, 8))

    def sample(seed):
        return reinmax.reinmax(x, rng=seed)[0]

    seeds = jnp.arange(8, dtype=jnp.int32)
    mapped = jax.vmap(sample)(seeds)
    _, scanned = jax.lax.scan(lambda c, s: (c, sample(s)), 0, seeds)
    for i in (0, 7):
        np.testing.assert_array_equal(mapped[i], sample(int(i)))
        np.testing.assert_array_equal(scanned[i], sample(int(i)))
    assert len({tuple(np.asarray(m).argmax(-1)) for m in mapped}) > 1


def test_tf_function_traces_once_over_tensor_tau_and_seed():
    traces = []

    @tf.function
    def step(x, tau, seed):
        traces.append(1)
        return reinmax.reinmax(x, tau, rng=seed)[0]

    x = tf.constant(np.random.default_rng(1).normal(size=(4, 5)), dtype=tf.float32)
    outs = [step(x, tf.constant(1.0 + 0.05 * i), tf.constant(i)) for i in range(STEPS)]
    assert len(traces) == 1
    np.testing.assert_array_equal(outs[4].numpy(), reinmax.reinmax(x, 1.2, rng=4)[0].numpy())


# ---------------------------------------------------------------------------------------------
# τ gradients
# ---------------------------------------------------------------------------------------------


def _relaxed_loss_numpy(logits, gumbels, tau, weights):
    z = (logits + gumbels) / tau
    z = z - z.max(-1, keepdims=True)
    y = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return float((y * weights).sum())


@pytest.mark.parametrize("hard", [False, True])
def test_tau_gradient_matches_finite_differences_in_every_autodiff_backend(hard):
    """Where τ enters the forward (Gumbel-Softmax's relaxed sample, and the soft sample behind
    its straight-through gradient), a learnable τ gets d loss/dτ; a -inf mask keeps it finite."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 5))
    logits[0, 1] = -np.inf
    gumbels = rng.gumbel(size=(3, 5))
    weights = _weights(5)
    tau = 0.7
    h = 1e-6
    expected = (
        _relaxed_loss_numpy(logits, gumbels, tau + h, weights)
        - _relaxed_loss_numpy(logits, gumbels, tau - h, weights)
    ) / (2 * h)

    t = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    y, _ = reinmax.gumbel_softmax(
        torch.tensor(logits), t, noise=Gumbel(torch.tensor(gumbels)), hard=hard
    )
    (y * torch.tensor(weights)).sum().backward()
    got = {"torch": float(t.grad)}

    with jax.enable_x64(True):

        def loss(tau_):
            sample = reinmax.gumbel_softmax(
                jnp.asarray(logits), tau_, noise=Gumbel(jnp.asarray(gumbels)), hard=hard
            )[0]
            return (sample * jnp.asarray(weights)).sum()

        got["jax"] = float(jax.grad(loss)(jnp.float64(tau)))

    variable = tf.Variable(tau, dtype=tf.float64)
    with tf.GradientTape() as tape:
        sample = reinmax.gumbel_softmax(
            tf.constant(logits), variable, noise=Gumbel(tf.constant(gumbels)), hard=hard
        )[0]
        value = tf.reduce_sum(sample * tf.constant(weights))
    got["tensorflow"] = float(tape.gradient(value, variable))
    for name, value in got.items():
        assert np.isfinite(value), name
        # hard=True: the one-hot's τ-gradient is the relaxed sample's (straight-through).
        assert value == pytest.approx(expected, rel=1e-6, abs=1e-9), name


def test_per_row_tau_gets_its_own_gradient():
    logits = torch.randn(4, 3, dtype=torch.float64)
    g = torch.distributions.Gumbel(0.0, 1.0).sample((4, 3)).double()
    tau = torch.full((4,), 0.8, dtype=torch.float64, requires_grad=True)
    y, _ = reinmax.gumbel_softmax(logits, tau, noise=Gumbel(g), hard=False)
    (y * torch.arange(3.0)).sum().backward()
    reference = torch.full((4,), 0.8, dtype=torch.float64, requires_grad=True)
    (torch.softmax((logits + g) / reference[:, None], -1) * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(tau.grad, reference.grad)


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "gumbel_softmax"])
def test_a_tau_that_requires_grad_where_it_enters_only_the_backward_is_an_error(name):
    fn = getattr(reinmax, name)
    with pytest.raises(UnsupportedError, match="tau has no gradient"):
        fn(torch.randn(2, 3), torch.tensor(1.2, requires_grad=True), rng=0)
    with pytest.raises(UnsupportedError, match="tau has no gradient"):
        fn(tf.zeros((2, 3)), tf.Variable(1.2), rng=0)
    if name in ("reinmax", "gumbel_rao"):  # JAX raises when it traces the backward
        with pytest.raises(UnsupportedError, match="tau has no gradient"):
            jax.grad(lambda t: fn(jnp.zeros((2, 3)), t, rng=0)[0].sum())(1.2)
    # Detached, or a number, it is an ordinary temperature.
    fn(torch.randn(2, 3), torch.tensor(1.2, requires_grad=True).detach(), rng=0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_per_row_tau_at_or_below_zero_or_nan_is_an_error_in_eager_mode(bad):
    for tau in (
        torch.tensor([1.0, bad]),
        np.array([1.0, bad]),
        tf.constant([1.0, bad]),
        jnp.asarray([1.0, bad]),
    ):
        logits = {torch.Tensor: torch.zeros, np.ndarray: np.zeros}.get(type(tau))
        x = (
            logits((2, 3))
            if logits
            else (tf.zeros((2, 3)) if isinstance(tau, tf.Tensor) else jnp.zeros((2, 3)))
        )
        with pytest.raises(ValueError, match="tau must be > 0 in every row"):
            reinmax.reinmax(x, tau, rng=0)


# ---------------------------------------------------------------------------------------------
# Index output and masks
# ---------------------------------------------------------------------------------------------


FRAMEWORKS = {
    "numpy": (np.asarray, np.asarray),
    "torch": (torch.tensor, lambda t: t.detach().numpy()),
    "jax": (jnp.asarray, np.asarray),
    "tensorflow": (tf.constant, lambda t: t.numpy()),
}


# Every estimator in the eager frameworks; in JAX and TensorFlow (whose first call of each op
# compiles it) one of each kind: an inverse-CDF sampler, a Gumbel one, one with conditional draws.
CASES = [(f, n) for f in ("numpy", "torch") for n in ESTIMATORS] + [
    (f, n) for f in ("jax", "tensorflow") for n in ("reinmax", "gumbel_softmax", "reinmax_cv")
]


@pytest.mark.parametrize(("framework", "name"), CASES)
def test_return_index_is_the_argmax_of_hard(framework, name):
    to, back = FRAMEWORKS[framework]
    logits = to(np.random.default_rng(3).normal(size=(2, 4, 6)).astype(np.float32))
    fn = getattr(reinmax, name)
    hard, _, index = fn(logits, rng=11, axis=1, return_index=True)
    plain = fn(logits, rng=11, axis=1)
    np.testing.assert_array_equal(back(hard), back(plain[0]))
    np.testing.assert_array_equal(back(index), back(hard).argmax(axis=1))
    assert np.issubdtype(back(index).dtype, np.integer)


def test_return_index_must_be_a_bool():
    with pytest.raises(TypeError, match="return_index must be True or False"):
        reinmax.reinmax(np.zeros((2, 3)), rng=0, return_index=1)


@pytest.mark.parametrize(("framework", "name"), CASES)
def test_mask_gives_exactly_the_results_of_minus_inf_logits(framework, name):
    to, back = FRAMEWORKS[framework]
    rng = np.random.default_rng(4)
    values = rng.normal(size=(3, 6))
    allowed = rng.random((3, 6)) > 0.4
    allowed[:, 0] = True
    masked = np.where(allowed, values, -np.inf)
    fn = getattr(reinmax, name)
    weights = _weights(6)

    def run(logits, mask):
        if framework == "numpy":
            from reinmax.backends.numpy import vjp

            (hard, soft), pullback = vjp(fn, logits, rng=5, mask=mask)
            return hard, soft, pullback(weights, None)
        if framework == "torch":
            x = logits.clone().requires_grad_(True)
            hard, soft = fn(x, rng=5, mask=mask)
            (hard * torch.tensor(weights)).sum().backward()
            return hard, soft, x.grad
        if framework == "jax":
            hard, soft = fn(logits, rng=5, mask=mask)
            grad = jax.grad(lambda y: (fn(y, rng=5, mask=mask)[0] * weights).sum())(logits)
            return hard, soft, grad
        with tf.GradientTape() as tape:
            tape.watch(logits)
            hard, soft = fn(logits, rng=5, mask=mask)
            value = tf.reduce_sum(hard * tf.constant(weights, dtype=hard.dtype))
        return hard, soft, tape.gradient(value, logits)

    with_mask = run(to(values), to(allowed))
    with_inf = run(to(masked), None)
    for a, b in zip(with_mask, with_inf):
        np.testing.assert_array_equal(back(a), back(b))


def test_mask_errors_name_the_argument():
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        reinmax.reinmax(np.zeros((2, 3)), rng=0, mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match="mask of shape"):
        reinmax.reinmax(np.zeros((2, 3)), rng=0, mask=np.ones((4,), dtype=bool))


# ---------------------------------------------------------------------------------------------
# Gumbel and exponential noise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_gumbel_noise_samples_the_argmax_of_the_perturbed_logits(name):
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(64, 7))
    lead = {"gumbel_rao": (2,), "reinmax_rao": (2,), "reinmax_cv": (3,)}.get(name, ())
    gumbels = rng.gumbel(size=(*lead, 64, 7))
    hard, _ = getattr(reinmax, name)(logits, noise=Gumbel(gumbels))
    first = gumbels[0] if lead else gumbels
    np.testing.assert_array_equal(hard.argmax(-1), (logits + first).argmax(-1))
    exponentials = np.exp(-gumbels)
    again, _ = getattr(reinmax, name)(logits, noise=Exponential(exponentials))
    np.testing.assert_array_equal(again, hard)


def test_gumbel_softmax_relaxes_the_given_gumbels_as_torch_does():
    torch.manual_seed(0)
    logits = torch.randn(5, 9)
    e = torch.empty_like(logits).exponential_()
    y, _ = reinmax.gumbel_softmax(logits, 0.5, hard=False, noise=Exponential(e))
    torch.testing.assert_close(y, torch.softmax((logits - e.log()) / 0.5, -1))


def test_bad_gumbel_noise_is_named():
    with pytest.raises(ValueError, match="Gumbel noise for reinmax must have shape"):
        reinmax.reinmax(np.zeros((2, 3)), noise=Gumbel(np.zeros((2,))))
    with pytest.raises(ValueError, match="Exponential noise must hold draws ≥ 0"):
        reinmax.reinmax(np.zeros((2, 3)), noise=Exponential(-np.ones((2, 3))))
    with pytest.raises(ValueError, match="not both"):
        reinmax.reinmax(np.zeros((2, 3)), rng=0, noise=Gumbel(np.zeros((2, 3))))


# ---------------------------------------------------------------------------------------------
# Defaults a porter can trust
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_call_without_tau_uses_the_registered_default(name):
    default = REGISTRY[name].default_tau
    assert default == (1.3 if name in ("reinmax", "reinmax_rao", "reinmax_cv") else 1.0)
    x = np.random.default_rng(7).normal(size=(4, 5))
    from reinmax.backends.numpy import vjp

    fn = getattr(reinmax, name)
    (_, _), implicit = vjp(fn, x, rng=3)
    (_, _), explicit = vjp(fn, x, default, rng=3)
    np.testing.assert_array_equal(implicit(_weights(5), None), explicit(_weights(5), None))


# ---------------------------------------------------------------------------------------------
# Objects that travel
# ---------------------------------------------------------------------------------------------


def _in_worker(payload: bytes) -> list:
    import pickle

    import numpy as np

    function, estimator = pickle.loads(payload)
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    hard, _ = function(x, rng=1)
    import reinmax

    other, _ = reinmax.estimate(estimator, x, rng=1)
    return [hard.tolist(), other.tolist()]


def test_public_functions_and_estimators_pickle_and_work_in_a_spawned_worker():
    from reinmax.backends import numpy as rnp
    from reinmax.backends import torch as rt

    for function in [getattr(reinmax, n) for n in ESTIMATORS] + [
        reinmax.estimate,
        reinmax.reinforce,
        reinmax.bernoulli,
        rnp.reinmax,
        rt.gumbel_rao,
    ]:
        assert pickle.loads(pickle.dumps(function)) == function
    estimator = REGISTRY["gumbel_rao"](k=3)
    assert pickle.loads(pickle.dumps(estimator)) is estimator
    mixed = reinmax.api.resolve_estimator("reinmax_cv", {"k": 2, "eta": 0.6, "unimix": 0.01})
    assert pickle.loads(pickle.dumps(mixed)) is mixed
    payload = pickle.dumps((rnp.reinmax, estimator))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        hard, other = pool.apply(_in_worker, (payload,))
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    assert hard == rnp.reinmax(x, rng=1)[0].tolist()
    assert other == reinmax.estimate(estimator, x, rng=1)[0].tolist()

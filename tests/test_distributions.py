"""The distributions: each framework's OneHotCategorical, reparameterized by an estimator.

Given the same noise, a distribution's sample is the estimator function's sample of the logits
broadcast to ``sample_shape + batch_shape + event_shape`` and its gradient is the function's;
everything else is the framework's own distribution's.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reinmax import backends
from reinmax.core import REGISTRY, noise_layout
from reinmax.distributions import OneHotSampler, as_sample_shape
from reinmax.noise import Seed

ROOT = Path(__file__).resolve().parents[1]

# Options that exercise each estimator's own code path (K > 1 draws, the adaptive gap).
OPTIONS = {
    "gumbel_rao": {"k": 3},
    "reinmax_rao": {"k": 2},
    "reinmax_cv": {"k": 2},
    "gapped_straight_through": {"gap": "p"},
}
ESTIMATORS = tuple(REGISTRY)
SAMPLE_SHAPE, BATCH, N = (2,), (3,), 5


def _noise(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    estimator = REGISTRY[name](**OPTIONS.get(name, {}))
    return np.random.default_rng(seed).uniform(size=noise_layout(estimator, shape))


def _torch():
    torch = pytest.importorskip("torch")
    from reinmax.backends import torch as module

    return torch, module


def _distrax():
    if importlib.util.find_spec("distrax") is None:
        pytest.skip("distrax is not installed (pip install 'reinmax[distrax]')")
    backends.load_driver("jax").enable_float64()
    # Through the module: it imports torch before distrax's TensorFlow Probability imports
    # TensorFlow.
    import jax

    from reinmax.backends import distrax as module

    return jax, module


# ---------------------------------------------------------------------------------------------
# The framework-neutral definition
# ---------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("nope", {}, None, ValueError, "estimator must be one of"),
    ("gumbel_rao", {"kk": 2}, None, TypeError, "unexpected option"),
    ("gumbel_rao", {"k": 0}, None, ValueError, "k must be a positive integer"),
    ("reinmax", {"unimix": 0.01}, None, ValueError, "takes no unimix"),
    ("gumbel_softmax", {"hard": False}, None, ValueError, "not in its support"),
    ("reinmax", {"hard": False}, None, ValueError, "hard must be True"),
    ("reinmax", {}, -1.0, ValueError, "tau must be a finite number > 0"),
    ("reinmax", {}, float("inf"), ValueError, "tau must be a finite number > 0"),
    ("reinmax", {}, True, TypeError, "tau must be None"),
    ("reinmax", {}, "1.3", TypeError, "tau must be None"),
]


@pytest.mark.parametrize(("estimator", "options", "tau", "error", "match"), BAD_OPTIONS)
def test_bad_options_are_refused_when_the_sampler_is_made(estimator, options, tau, error, match):
    with pytest.raises(error, match=match):
        OneHotSampler.create(estimator, tau, options)


def test_sample_shape_is_an_int_or_a_sequence_of_ints():
    assert as_sample_shape(()) == () and as_sample_shape(4) == (4,)
    assert as_sample_shape(np.int64(2)) == (2,) and as_sample_shape([2, 3]) == (2, 3)
    for bad in (2.0, (2, None), "ab", True):
        with pytest.raises(TypeError, match="sample_shape must be"):
            as_sample_shape(bad)
    with pytest.raises(ValueError, match="no negative axis"):
        as_sample_shape((2, -1))


def test_logits_xor_probs():
    from reinmax.backends import numpy as rnp

    sampler = OneHotSampler.create()
    for parameters in ({}, {"logits": np.zeros(3), "probs": np.ones(3) / 3}):
        with pytest.raises(ValueError, match="either logits or probs"):
            sampler.rsample(rnp.BACKEND, rng=0, **parameters)


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_torch_rsample_is_the_estimator_function(name):
    torch, module = _torch()
    shape = (*SAMPLE_SHAPE, *BATCH, N)
    generator = np.random.default_rng(1)
    logits = torch.tensor(generator.normal(size=(*BATCH, N)), requires_grad=True)
    weights = torch.tensor(generator.normal(size=shape))
    noise = torch.tensor(_noise(name, shape))
    options = OPTIONS.get(name, {})

    dist = module.OneHotCategorical(logits=logits, estimator=name, tau=0.7, **options)
    sample = dist.rsample(SAMPLE_SHAPE, noise=noise)
    (grad,) = torch.autograd.grad((sample * weights).sum(), logits)

    function = getattr(module, name)
    expected, _ = function(logits.expand(shape), 0.7, noise=noise, **options)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    assert sample.shape == shape and sample.dtype == torch.float64
    torch.testing.assert_close(sample, expected, rtol=0, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-14)


def test_torch_tau_none_is_the_function_default_and_rng_is_the_function_rng():
    torch, module = _torch()
    logits = torch.randn(4, N, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 4, N, dtype=torch.float64)
    rngs = (lambda: 7, lambda: Seed(7, stream=3, row=2), lambda: torch.Generator().manual_seed(5))
    for rng in rngs:
        # A fresh distribution per backward pass: it computes its normalized logits once.
        dist = module.OneHotCategorical(logits=logits)
        sample = dist.rsample((3,), rng=rng())
        (grad,) = torch.autograd.grad((sample * weights).sum(), logits)
        expected, _ = module.reinmax(logits.expand(3, 4, N), rng=rng())
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
        torch.testing.assert_close(sample, expected, rtol=0, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-14)
    # None: the global generator.
    torch.manual_seed(3)
    sample = dist.rsample((3,))
    torch.manual_seed(3)
    torch.testing.assert_close(sample, module.reinmax(logits.expand(3, 4, N))[0])


def test_torch_is_torchs_own_distribution_but_for_rsample():
    torch, module = _torch()
    logits = torch.randn(2, 4, N, dtype=torch.float64)
    dist = module.OneHotCategorical(logits=logits, estimator="gumbel_rao", k=2, tau=0.5)
    own = torch.distributions.OneHotCategorical(logits=logits)
    assert isinstance(dist, torch.distributions.OneHotCategorical) and dist.has_rsample
    assert dist.batch_shape == own.batch_shape and dist.event_shape == own.event_shape
    assert dist.support is own.support
    value = own.sample((3,))
    torch.testing.assert_close(dist.log_prob(value), own.log_prob(value), rtol=0, atol=0)
    torch.testing.assert_close(dist.entropy(), own.entropy(), rtol=0, atol=0)
    torch.testing.assert_close(dist.mode, own.mode, rtol=0, atol=0)
    torch.testing.assert_close(dist.mean, own.mean, rtol=0, atol=0)
    torch.manual_seed(0)
    sample = dist.sample((3,))
    torch.manual_seed(0)
    torch.testing.assert_close(sample, own.sample((3,)), rtol=0, atol=0)
    assert dist.rsample().shape == (2, 4, N) and dist.rsample(3).shape == (3, 2, 4, N)
    assert dist.rsample(torch.Size([2, 3])).shape == (2, 3, 2, 4, N)
    rsample = dist.rsample((3,))
    assert bool(dist.support.check(rsample).all())
    torch.testing.assert_close(dist.log_prob(rsample), own.log_prob(rsample), rtol=0, atol=0)


def test_torch_kl_divergence_dispatches_to_torchs_rule():
    torch, module = _torch()
    kl = torch.distributions.kl_divergence
    a, b = torch.randn(2, 3, N, dtype=torch.float64)
    ours_a, ours_b = (module.OneHotCategorical(logits=x, estimator="zgr") for x in (a, b))
    own_a, own_b = (torch.distributions.OneHotCategorical(logits=x) for x in (a, b))
    expected = kl(own_a, own_b)
    for p, q in ((ours_a, ours_b), (ours_a, own_b), (own_a, ours_b)):
        torch.testing.assert_close(kl(p, q), expected, rtol=0, atol=0)


def test_torch_expand_keeps_the_estimator():
    torch, module = _torch()
    logits = torch.randn((*BATCH, N), dtype=torch.float64, requires_grad=True)
    dist = module.OneHotCategorical(logits=logits, estimator="gumbel_rao", tau=0.5, k=3)
    wide = dist.expand((4, *BATCH))
    assert type(wide) is module.OneHotCategorical and wide.batch_shape == (4, *BATCH)
    assert (wide.estimator, wide.tau, wide.options) == ("gumbel_rao", 0.5, {"k": 3})
    noise = torch.tensor(_noise("gumbel_rao", (2, 4, *BATCH, N)))
    sample = wide.rsample((2,), noise=noise)
    expected, _ = module.gumbel_rao(logits.expand(2, 4, *BATCH, N), 0.5, k=3, noise=noise)
    torch.testing.assert_close(sample, expected, rtol=0, atol=0)
    with pytest.raises(NotImplementedError, match=r"custom \.expand"):

        class Custom(module.OneHotCategorical):
            def __init__(self, logits):
                super().__init__(logits=logits)

        Custom(logits).expand((2, *BATCH))


def test_torch_probs_keep_impossible_categories_impossible():
    torch, module = _torch()
    probs = torch.tensor([[0.0, 0.3, 0.7], [0.5, 0.5, 0.0]], dtype=torch.float64)
    probs.requires_grad_(True)
    dist = module.OneHotCategorical(probs=probs, tau=1.3)
    sample = dist.rsample((2000,), rng=0)
    assert not sample[:, 0, 0].any() and not sample[:, 1, 2].any()
    (grad,) = torch.autograd.grad((sample * torch.arange(3.0)).sum(), probs)
    assert bool(torch.isfinite(grad).all())
    # On the positive probabilities the sample is the function's on their logarithms.
    noise = torch.rand(2, dtype=torch.float64)
    expected, _ = module.reinmax(torch.log(probs.detach()), 1.3, noise=noise)
    torch.testing.assert_close(dist.rsample(noise=noise), expected, rtol=0, atol=0)


def test_torch_bad_options_are_refused_at_construction():
    torch, module = _torch()
    for estimator, options, tau, error, match in BAD_OPTIONS:
        with pytest.raises(error, match=match):
            module.OneHotCategorical(logits=torch.zeros(3), estimator=estimator, tau=tau, **options)


def test_torch_rsample_inside_torch_compile_fullgraph():
    torch, module = _torch()
    logits = torch.randn(4, N, dtype=torch.float64, requires_grad=True)
    noise = torch.tensor(_noise("gumbel_rao", (3, 4, N)))
    weights = torch.randn(3, 4, N, dtype=torch.float64)
    tau = torch.linspace(0.5, 1.5, 4, dtype=torch.float64)

    def loss(logits, noise, stream):
        # PyTorch's argument checks cannot be traced: validate_args=False, as for its own.
        dist = module.OneHotCategorical(
            logits=logits, estimator="gumbel_rao", tau=tau, k=3, validate_args=False
        )
        first = dist.rsample((3,), noise=noise)
        second = dist.rsample((3,), rng=Seed(11, stream=stream))
        return (first * weights).sum() + (second * weights).sum() ** 2 - dist.entropy().sum()

    # The graph that AOTAutograd traces, forward and backward, run without code generation.
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    for stream in (0, 1):
        stream = torch.tensor(stream, dtype=torch.int32)
        (eager,) = torch.autograd.grad(loss(logits, noise, stream), logits)
        (traced,) = torch.autograd.grad(compiled(logits, noise, stream), logits)
        torch.testing.assert_close(traced, eager, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# JAX (distrax)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_distrax_sample_is_the_estimator_function(name):
    jax, module = _distrax()
    jnp = jax.numpy
    shape = (*SAMPLE_SHAPE, *BATCH, N)
    generator = np.random.default_rng(1)
    logits = jnp.asarray(generator.normal(size=(*BATCH, N)))
    weights = jnp.asarray(generator.normal(size=shape))
    noise = jnp.asarray(_noise(name, shape))
    options = OPTIONS.get(name, {})

    def loss(logits):
        dist = module.OneHotCategorical(logits, estimator=name, tau=0.7, **options)
        sample = dist.sample(seed=None, sample_shape=SAMPLE_SHAPE, noise=noise)
        return jnp.sum(sample * weights), sample

    def expected_loss(logits):
        function = getattr(backends.load_module("jax"), name)
        sample, _ = function(jnp.broadcast_to(logits, shape), 0.7, noise=noise, **options)
        return jnp.sum(sample * weights), sample

    (_, sample), grad = jax.value_and_grad(loss, has_aux=True)(logits)
    (_, expected), expected_grad = jax.value_and_grad(expected_loss, has_aux=True)(logits)
    assert sample.shape == shape and sample.dtype == jnp.float64
    np.testing.assert_array_equal(sample, expected)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-14)


# The seed test and the jit test draw portable noise of one shape: eager JAX compiles each
# operation of the generator per shape, once.
SEEDED = {"estimator": "gumbel_rao", "k": 3}


def test_distrax_seed_is_a_key_or_portable_and_tau_none_is_the_default():
    jax, module = _distrax()
    jnp = jax.numpy
    rjax = backends.load_module("jax")
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(4, N)))
    weights = jnp.asarray(np.random.default_rng(3).normal(size=(3, 4, N)))
    for seed in (jax.random.key(5), jax.random.PRNGKey(5), 7, Seed(7, stream=3, row=2)):

        def loss(logits, seed=seed):
            dist = module.OneHotCategorical(logits, **SEEDED)
            return jnp.sum(dist.sample(seed=seed, sample_shape=3) * weights)

        def expected_loss(logits, seed=seed):
            hard, _ = rjax.gumbel_rao(jnp.broadcast_to(logits, (3, 4, N)), rng=seed, k=3)
            return jnp.sum(hard * weights)

        np.testing.assert_array_equal(loss(logits), expected_loss(logits))
        np.testing.assert_allclose(
            jax.grad(loss)(logits), jax.grad(expected_loss)(logits), rtol=1e-12, atol=1e-14
        )
    with pytest.raises(ValueError, match="rng is required"):
        module.OneHotCategorical(logits).sample(seed=None)


def test_distrax_is_distraxs_own_distribution_but_for_sample():
    jax, module = _distrax()
    import distrax

    jnp = jax.numpy
    generator = np.random.default_rng(4)
    logits = jnp.asarray(generator.normal(size=(2, 4, N)))
    dist = module.OneHotCategorical(logits, estimator="gumbel_rao", k=2, tau=0.5)
    own = distrax.OneHotCategorical(logits, dtype=jnp.float64)
    assert isinstance(dist, distrax.OneHotCategorical)
    assert dist.batch_shape == own.batch_shape and dist.event_shape == own.event_shape
    value = jnp.asarray(np.eye(N)[generator.integers(N, size=(3, 2, 4))])
    for method in ("log_prob", "prob", "cdf"):
        np.testing.assert_array_equal(getattr(dist, method)(value), getattr(own, method)(value))
    np.testing.assert_array_equal(dist.entropy(), own.entropy())
    np.testing.assert_array_equal(dist.mode(), own.mode())
    key = jax.random.key(3)
    for sample_shape, shape in (((), ()), (3, (3,)), ((2, 3), (2, 3))):
        spec = jax.eval_shape(
            lambda d, k, s=sample_shape: d.sample(seed=k, sample_shape=s), dist, key
        )
        assert spec.shape == (*shape, 2, 4, N) and spec.dtype == jnp.float64
    sample, log_prob = dist.sample_and_log_prob(seed=key, sample_shape=3)
    np.testing.assert_array_equal(sample, dist.sample(seed=key, sample_shape=3))
    np.testing.assert_array_equal(log_prob, own.log_prob(sample))
    single = module.OneHotCategorical(logits, dtype=jnp.float32)
    assert jax.eval_shape(lambda k: single.sample(seed=k), key).dtype == jnp.float32
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
        module.OneHotCategorical(logits, dtype=int)


def test_distrax_kl_divergence_dispatches_to_distraxs_rule():
    jax, module = _distrax()
    import distrax
    from tensorflow_probability.substrates import jax as tfp

    a, b = jax.numpy.asarray(np.random.default_rng(5).normal(size=(2, 3, N)))
    expected = distrax.OneHotCategorical(a).kl_divergence(distrax.OneHotCategorical(b))
    ours_a, ours_b = (module.OneHotCategorical(x, estimator="zgr") for x in (a, b))
    for p, q in ((ours_a, ours_b), (ours_a, distrax.OneHotCategorical(b))):
        np.testing.assert_allclose(p.kl_divergence(q), expected, rtol=1e-14)
    own_b = tfp.distributions.OneHotCategorical(logits=b)
    np.testing.assert_allclose(tfp.distributions.kl_divergence(ours_a, own_b), expected, rtol=1e-14)


def test_distrax_indexing_keeps_the_estimator_and_indexes_tau():
    jax, module = _distrax()
    jnp = jax.numpy
    logits = jnp.asarray(np.random.default_rng(6).normal(size=(4, N)))
    tau = jnp.linspace(0.5, 2.0, 4)
    dist = module.OneHotCategorical(logits, estimator="gumbel_rao", tau=tau, k=3)
    part = dist[1:3]
    assert type(part) is module.OneHotCategorical and part.batch_shape == (2,)
    assert part.estimator == "gumbel_rao" and part.options == {"k": 3}
    np.testing.assert_array_equal(part.tau, tau[1:3])
    noise = jnp.asarray(_noise("gumbel_rao", (2, N)))
    expected = backends.load_module("jax").gumbel_rao(logits[1:3], tau[1:3], k=3, noise=noise)
    np.testing.assert_array_equal(part.sample(seed=None, noise=noise), expected[0])


def test_distrax_probs_keep_impossible_categories_impossible():
    jax, module = _distrax()
    jnp = jax.numpy
    probs = jnp.asarray([[0.0, 0.3, 0.7], [0.5, 0.5, 0.0]])

    def loss(probs):
        dist = module.OneHotCategorical(probs=probs)
        sample = dist.sample(seed=jax.random.key(0), sample_shape=2000)
        return jnp.sum(sample * jnp.arange(3.0)), sample

    (_, sample), grad = jax.value_and_grad(loss, has_aux=True)(probs)
    assert not sample[:, 0, 0].any() and not sample[:, 1, 2].any()
    assert bool(jnp.isfinite(grad).all())


def test_distrax_bad_options_are_refused_at_construction():
    jax, module = _distrax()
    for estimator, options, tau, error, match in BAD_OPTIONS:
        with pytest.raises(error, match=match):
            module.OneHotCategorical(jax.numpy.zeros(3), estimator=estimator, tau=tau, **options)


def test_distrax_sample_inside_jax_jit():
    jax, module = _distrax()
    jnp = jax.numpy
    logits = jnp.asarray(np.random.default_rng(7).normal(size=(4, N)))
    tau = jnp.linspace(0.5, 1.5, 4)

    def loss(logits, key, stream):
        dist = module.OneHotCategorical(logits, tau=tau, **SEEDED)
        first, log_prob = dist.sample_and_log_prob(seed=key, sample_shape=3)
        second = dist.sample(seed=Seed(11, stream=stream), sample_shape=3)
        return jnp.sum(first * jnp.arange(N)) + jnp.sum(log_prob) + jnp.sum(second[..., 0]) ** 2

    key = jax.random.key(0)
    compiled = jax.jit(jax.grad(loss))
    for stream in (0, 1):
        eager = jax.grad(loss)(logits, key, stream)
        traced = compiled(logits, key, jnp.int32(stream))
        np.testing.assert_allclose(traced, eager, rtol=1e-12, atol=1e-12)
    # The distribution itself as an argument of a jitted function (a pytree, tau a leaf).
    dist = module.OneHotCategorical(logits, tau=tau, **SEEDED)
    sample = jax.jit(lambda d, k: d.sample(seed=k, sample_shape=3))(dist, key)
    np.testing.assert_array_equal(sample, dist.sample(seed=key, sample_shape=3))


def test_jax_backend_reaches_the_distribution_lazily():
    pytest.importorskip("jax")
    code = textwrap.dedent(
        """
        import sys
        import reinmax.backends.jax as rjax
        print("distrax" in sys.modules)
        rjax.reinmax  # the estimator functions are still there
        try:
            rjax.nothing
        except AttributeError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    first, second = result.stdout.split("\n")[:2]
    assert first == "False", "import reinmax.backends.jax imported distrax"
    assert second == "module 'reinmax.backends.jax' has no attribute 'nothing'"


# ---------------------------------------------------------------------------------------------
# The documentation runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reinmax.distributions", "torch", "distrax"])
def test_docstring_examples_run(name):
    if name == "torch":
        _torch()
        name = "reinmax.backends.torch"
    elif name == "distrax":
        _distrax()
        name = "reinmax.backends.distrax"
    module = importlib.import_module(name)
    # This module's own examples (the torch backend's others are not this file's to check).
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    tests = [t for t in tests if "OneHot" in t.name or name == "reinmax.distributions"]
    assert tests, f"{name} has no examples"
    runner = doctest.DocTestRunner()
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} example(s) of {name} failed"


def test_the_documentation_page_runs():
    text = (ROOT / "docs" / "distributions.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        framework = "torch" if "import torch" in block else "distrax"
        (_torch if framework == "torch" else _distrax)()
        exec(compile(block, "docs/distributions.md", "exec"), {})


def test_the_jax_distribution_names_its_extra_when_distrax_is_missing(monkeypatch):
    pytest.importorskip("jax")
    from reinmax.backends import jax as module

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "distrax" else find_spec(name, *a),
    )
    with pytest.raises(ImportError, match=r"reinmax\[distrax\]"):
        module.OneHotCategorical  # noqa: B018

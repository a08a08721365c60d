"""Portable noise: Threefry-2x32 written once on the array API, bit-identical in every backend,
sharding-invariant, statistically sound, and accepted as ``rng`` by every estimator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import reinmax
from reinmax import backends
from reinmax.conformance import harness
from reinmax.noise import Seed, as_seed, estimator_noise, threefry2x32, uniform_rows

NP = backends.load_module("numpy").BACKEND.xp


def _words(values) -> np.ndarray:
    """Unsigned 32-bit values as the int32 arrays the generator takes."""
    return np.asarray(values, dtype=np.uint64).astype(np.uint32).view(np.int32)


def test_threefry_matches_the_reference_implementation():
    # JAX's threefry_2x32 implements Random123's Threefry-2x32 with 20 rounds.
    jax_random = pytest.importorskip("jax.extend.random")
    rng = np.random.default_rng(0)
    key = rng.integers(0, 2**32, 2, dtype=np.uint64)
    counters = rng.integers(0, 2**32, (2, 500), dtype=np.uint64)
    x0, x1 = threefry2x32(*(_words(a) for a in (key[:1], key[1:], *counters)), xp=NP)
    expected = jax_random.threefry_2x32(
        key.astype(np.uint32), np.concatenate(counters).astype(np.uint32)
    )
    got = np.concatenate([x0.view(np.uint32), x1.view(np.uint32)])
    np.testing.assert_array_equal(got, np.asarray(expected).astype(np.uint32))


def test_known_answer():
    # Random123's known-answer test for Threefry-2x32-20: key and counter all ones.
    ones = _words([2**32 - 1])
    x0, x1 = threefry2x32(ones, ones, ones, ones, xp=NP)
    assert (int(x0.view(np.uint32)[0]), int(x1.view(np.uint32)[0])) == (0x1CB996FC, 0xBB002BE7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bit_identical_in_every_backend(backend, dtype):
    seed = Seed(2**63 + 12345, stream=2**32 - 1, row=2**31 + 5)
    module = backends.load_module(backend)
    drive = module.DRIVER
    with drive.float64():
        xp = module.BACKEND.xp
        got = drive.to_numpy(uniform_rows(seed, 6, 9, getattr(xp, dtype), xp=xp))
    expected = uniform_rows(seed, 6, 9, np.float64, xp=NP)
    np.testing.assert_array_equal(got, expected)
    assert np.all((got >= 0) & (got < 1))


def test_compiled_draws_what_eager_draws(backend):
    drive = harness.driver(backend)
    if "compiled" not in drive.transforms:
        pytest.skip(f"{backend} has no compiler")
    module = backends.load_module(backend)
    logits = np.random.default_rng(1).normal(size=(6, 5))

    def call(x, noise, tau):
        return module.gumbel_rao(x, tau, rng=Seed(7, stream=3, row=11), k=3)

    with drive.float64():
        x = drive.asarray(logits, "float32")
        g = drive.asarray(np.ones_like(logits), "float32")
        eager = drive.pullback(call, "eager", (), "float32")(x, None, 1.0, g, g)
        compiled = drive.pullback(call, "compiled", (), "float32")(x, None, 1.0, g, g)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(drive.to_numpy(a), drive.to_numpy(b), rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(drive.to_numpy(eager[0]), drive.to_numpy(compiled[0]))


def test_an_int_seed_gives_the_same_samples_in_every_backend(backend):
    logits = np.tile(np.log([0.1, 0.2, 0.3, 0.15, 0.25]), (8, 1))
    module = backends.load_module(backend)
    drive = module.DRIVER
    expected = {
        "reinmax": [4, 2, 2, 1, 1, 2, 1, 4],
        "gumbel_softmax": [0, 3, 4, 4, 1, 3, 3, 0],
        "gumbel_rao": [0, 3, 4, 4, 1, 3, 3, 0],
    }
    with drive.float64():
        x = drive.asarray(logits, "float32")
        for name, samples in expected.items():
            hard, _ = getattr(module, name)(x, rng=0)
            assert np.argmax(drive.to_numpy(hard), axis=-1).tolist() == samples, name


def test_a_sharded_batch_draws_what_one_process_draws():
    estimator = reinmax.REGISTRY["gumbel_rao"](k=2)
    whole = estimator_noise(estimator, (8, 3, 5), Seed(3, 9), np.float64, xp=NP)
    # Two workers, each holding 4 of the 8 examples: rows 0-11 and 12-23.
    halves = [
        estimator_noise(estimator, (4, 3, 5), Seed(3, 9, row=r), np.float64, xp=NP) for r in (0, 12)
    ]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), whole)


def test_layouts_of_every_estimator():
    for name, registration in reinmax.REGISTRY.items():
        estimator = registration()
        noise = estimator_noise(estimator, (4, 3, 6), Seed(1), np.float32, xp=NP)
        assert noise.shape == tuple(estimator.noise_shape((4, 3, 6))), name
        assert noise.dtype == np.float32


def test_uniform_statistics():
    u = uniform_rows(Seed(11, stream=5), 200_000, 2, np.float64, xp=NP)
    for column in u.T:
        assert stats.kstest(column, "uniform").pvalue > 1e-3
        counts = np.bincount((column * 64).astype(int), minlength=64)
        assert stats.chisquare(counts).pvalue > 1e-3
    # Neighbouring rows, the two elements of a row, and neighbouring streams are uncorrelated.
    other = uniform_rows(Seed(11, stream=6), 200_000, 2, np.float64, xp=NP)
    bound = 4.5 / np.sqrt(len(u))
    for a, b in ((u[:-1, 0], u[1:, 0]), (u[:, 0], u[:, 1]), (u[:, 0], other[:, 0])):
        assert abs(np.corrcoef(a, b)[0, 1]) < bound


def test_no_repeats_across_streams():
    # Eight streams of 4,096 words: distinct 24-bit draws collide only as often as chance says.
    words = np.concatenate(
        [uniform_rows(Seed(5, stream=s), 4096, 1, np.float64, xp=NP)[:, 0] for s in range(8)]
    )
    draws = len(words)
    repeats = draws - len(np.unique(words))
    expected = draws**2 / (2 * 2**24)  # the birthday count for 2**24 values
    assert repeats < expected + 5 * np.sqrt(expected) + 3
    streams = [uniform_rows(Seed(5, stream=s), 64, 1, np.float64, xp=NP)[:, 0] for s in range(8)]
    assert len({tuple(s) for s in streams}) == 8


@pytest.mark.parametrize(
    ("rng", "message"),
    [
        (-1, "seed must be a non-negative integer below 2\\*\\*64"),
        (2**64, "seed must be a non-negative integer below 2\\*\\*64"),
        (Seed(1.5), "seed must be a non-negative integer"),
        (Seed(1, stream=2**32), "stream must be an integer in \\[0, 2\\*\\*32\\)"),
        (Seed(1, row=-3), "row must be an integer in \\[0, 2\\*\\*32\\)"),
    ],
)
def test_bad_seeds_are_named(rng, message):
    with pytest.raises(ValueError, match=message):
        as_seed(rng)
    with pytest.raises(ValueError, match=message):
        reinmax.reinmax(np.zeros((2, 3)), rng=rng)


def test_a_bool_is_not_a_seed():
    assert as_seed(True) is None

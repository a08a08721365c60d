"""The core and the pipeline use only the array API standard: run them under ``array_api_strict``.

A minimal strict :class:`reinmax.api.Backend` records each backward rule (like the NumPy
backend's tape) so every estimator's forward and backward run on strict arrays, and the results
are compared with the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest

from reinmax import api, core
from reinmax.conformance import harness, oracle

xps = pytest.importorskip("array_api_strict")

CASES = [
    ("straight_through", {}),
    ("reinmax", {}),
    ("gumbel_softmax", {"hard": True}),
    ("gumbel_softmax", {"hard": False}),
    ("gumbel_rao", {"k": 3}),
    ("gapped_straight_through", {"gap": 1.0}),
    ("gapped_straight_through", {"gap": "p"}),
]
FACTORY_OPTIONS = {"gumbel_softmax": "hard", "gumbel_rao": "k", "gapped_straight_through": "gap"}


class StrictBackend:
    """A Backend on ``array_api_strict``; ``tape`` keeps the pullback of the last call."""

    name = "array_api_strict"
    xp = xps

    def __init__(self) -> None:
        self.tape: list[Callable] = []

    def owns(self, x: object) -> bool:
        return isinstance(x, type(xps.asarray(0.0)))

    def device(self, x: Any) -> Any:
        return x.device

    keyword_aliases: ClassVar[dict[str, str]] = {}

    def shape(self, x: Any) -> tuple:
        return tuple(x.shape)

    def float_bits(self, dtype: Any) -> int | None:
        return api.array_api_float_bits(xps, dtype)

    def host_values(self, x: Any) -> Any:
        return np.asarray(x)

    def uniform(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
        raise AssertionError("the tests pass explicit noise")

    def seed_array(self, rng: object) -> bool:
        return False

    def wants_tau_grad(self, tau: object) -> bool:
        return False

    def custom_vjp(self, forward: Callable, backward: Callable, num_outputs: int) -> Callable:
        def op(x: Any, a: Any, b: Any) -> tuple:
            outputs, residuals = forward(x, a, b)
            self.tape.append(
                lambda cotangents: backward(a, b, outputs, residuals, cotangents, False)[0]
            )
            return outputs

        return op


def _estimator(name: str, options: dict) -> core.Estimator:
    factory = core.REGISTRY[name]
    return factory(**options) if options else factory()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join([c[0], *map(str, c[1].values())]))
def test_core_uses_only_the_standard(case, dtype):
    name, options = case
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 3))
    logits[0, 1, 0] = -np.inf
    logits[2, :, 1] = -np.inf
    axis = 1
    noise = rng.random(oracle.noise_shape(name, logits.shape, axis=axis, options=options))
    tau = rng.uniform(0.5, 1.5, size=(4, 3))
    g, g_p = rng.normal(size=(2, *logits.shape))
    strict_dtype = getattr(xps, dtype)

    backend = StrictBackend()
    x = xps.asarray(logits, dtype=strict_dtype)
    first, soft = api.estimate(
        backend, _estimator(name, options), x, xps.asarray(tau, dtype=strict_dtype),
        axis=axis, noise=xps.asarray(noise, dtype=strict_dtype),
    )  # fmt: skip
    assert len(backend.tape) == 1
    grad = backend.tape[0](
        (xps.asarray(g, dtype=strict_dtype), xps.asarray(g_p, dtype=strict_dtype))
    )
    assert first.dtype == soft.dtype == grad.dtype == strict_dtype

    want = oracle.evaluate(
        name, logits, noise, tau, g, g_p, axis=axis, dtype=dtype, options=options
    )
    got = [np.asarray(a) for a in (first, soft, grad)]
    if options.get("hard", True):
        np.testing.assert_array_equal(got[0], want.hard)
    scale = harness.row_scale(g, g_p, tau, axis=axis)
    tolerance = {"float64": 64, "float32": 128}[dtype]
    assert harness.scaled_error(got[1], want.soft, 1.0, dtype) <= tolerance
    assert harness.scaled_error(got[2], want.grad, scale, dtype) <= tolerance


def test_score_function_uses_only_the_standard():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 4))
    hard = np.eye(4)[rng.integers(0, 4, size=6)]
    value = rng.normal(size=6)
    backend = StrictBackend()
    x = xps.asarray(logits)
    surrogate = api.score_function(backend, x, xps.asarray(hard), xps.asarray(value), 0.5)
    grad = np.asarray(backend.tape[0]((xps.ones_like(surrogate),)))
    pi = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(grad, (value - 0.5)[:, None] * (hard - pi), atol=1e-14)
    log_pi = np.log(np.sum(hard * pi, axis=-1))
    np.testing.assert_allclose(np.asarray(surrogate), (value - 0.5) * log_pi, rtol=1e-12)

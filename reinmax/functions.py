"""The types of the public estimator functions, for type checkers and editors.

The functions themselves are built from :data:`reinmax.core.REGISTRY` (the one source of every
estimator's options) by :class:`reinmax.api.Functions`; the protocols here describe them
statically. Each is generic in the array type: ``reinmax.reinmax(t)`` for a ``torch.Tensor``
``t`` is a ``tuple[Tensor, Tensor]``, and with ``return_index=True`` a triple. A test compares
every protocol with the signature its registration gives (``tests/test_typing.py``), so the two
cannot drift apart.

Examples:
    >>> import numpy as np, reinmax
    >>> hard, soft = reinmax.reinmax(np.zeros((2, 3)), rng=0)
    >>> hard.shape, soft.shape
    ((2, 3), (2, 3))
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeVar, overload

from reinmax.core import Estimator
from reinmax.noise import Exponential, Gumbel, Seed

__all__ = [
    "ArrayT",
    "Bernoulli",
    "ControlVariateEstimator",
    "Estimate",
    "EstimatorFunction",
    "GappedEstimator",
    "GumbelSoftmax",
    "Reinforce",
    "Rng",
    "SampledEstimator",
    "Tau",
]

ArrayT = TypeVar("ArrayT")

Rng = int | Seed | object | None
"""What ``rng`` takes: an int seed or a :class:`~reinmax.noise.Seed` (portable noise, the same
in every framework), an integer array of shape ``()`` (a traced seed), the framework's own RNG
(a ``torch.Generator``, a JAX PRNG key, a ``tf.random.Generator`` or stateless seed, a
``numpy.random.Generator``), or None (the framework's global RNG; JAX has none)."""

Tau = float | Any | None
"""A temperature: a number, an array of the logits' framework (0-d, or one per row), or None
for the estimator's default (1.3 for the ReinMax family, 1.0 for the rest)."""

Noise = Any | Gumbel | Exponential | None
"""Explicit noise: uniforms in ``[0, 1)`` in the estimator's layout, or standard Gumbel or
exponential draws (:class:`~reinmax.noise.Gumbel`, :class:`~reinmax.noise.Exponential`)."""


class EstimatorFunction(Protocol):
    """An estimator without options of its own: ``straight_through``, ``reinmax``, ``zgr``."""

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[False] = False,
    ) -> tuple[ArrayT, ArrayT]: ...

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[True],
    ) -> tuple[ArrayT, ArrayT, ArrayT]: ...


class GumbelSoftmax(Protocol):
    """``gumbel_softmax``: ``hard=False`` returns the relaxed sample instead of the one-hot."""

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[False] = False,
        hard: bool = True,
    ) -> tuple[ArrayT, ArrayT]: ...

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[True],
        hard: bool = True,
    ) -> tuple[ArrayT, ArrayT, ArrayT]: ...


class SampledEstimator(Protocol):
    """An estimator that draws ``k`` conditional perturbations: ``gumbel_rao``, ``reinmax_rao``."""

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[False] = False,
        k: int = 1,
    ) -> tuple[ArrayT, ArrayT]: ...

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[True],
        k: int = 1,
    ) -> tuple[ArrayT, ArrayT, ArrayT]: ...


class GappedEstimator(Protocol):
    """``gapped_straight_through``: ``gap`` is a number or ``"p"`` (the adaptive gap)."""

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[False] = False,
        gap: float | str = 1.0,
    ) -> tuple[ArrayT, ArrayT]: ...

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[True],
        gap: float | str = 1.0,
    ) -> tuple[ArrayT, ArrayT, ArrayT]: ...


class ControlVariateEstimator(Protocol):
    """``reinmax_cv``: ``k`` draws, the control variate's weight ``eta``, its ``tau2``."""

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[False] = False,
        k: int = 1,
        eta: float = 0.5,
        tau2: float | None = None,
    ) -> tuple[ArrayT, ArrayT]: ...

    @overload
    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        mask: Any | None = None,
        return_index: Literal[True],
        k: int = 1,
        eta: float = 0.5,
        tau2: float | None = None,
    ) -> tuple[ArrayT, ArrayT, ArrayT]: ...


class Estimate(Protocol):
    """``estimate(estimator, logits, ...)``: run any :class:`~reinmax.core.Estimator`."""

    @overload
    def __call__(
        self,
        estimator: Estimator,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        mask: Any | None = None,
        return_index: Literal[False] = False,
    ) -> tuple[ArrayT, ArrayT]: ...

    @overload
    def __call__(
        self,
        estimator: Estimator,
        logits: ArrayT,
        tau: Tau = None,
        *,
        axis: int = -1,
        rng: Rng = None,
        noise: Noise = None,
        mask: Any | None = None,
        return_index: Literal[True],
    ) -> tuple[ArrayT, ArrayT, ArrayT]: ...


class Bernoulli(Protocol):
    """``bernoulli(logits, ...)``: a binary variable per logit, with any registered estimator."""

    def __call__(
        self,
        logits: ArrayT,
        tau: Tau = None,
        *,
        estimator: str = "reinmax",
        rng: Rng = None,
        noise: Noise = None,
        unimix: float = 0.0,
        **options: Any,
    ) -> tuple[ArrayT, ArrayT]: ...


class Reinforce(Protocol):
    """``reinforce(logits, hard, value, baseline=0.0)``: the score-function surrogate per row."""

    def __call__(
        self,
        logits: ArrayT,
        hard: ArrayT,
        value: ArrayT | float,
        baseline: ArrayT | float = 0.0,
        *,
        axis: int = -1,
    ) -> ArrayT: ...


SIGNATURES: dict[str, type] = {
    "straight_through": EstimatorFunction,
    "gumbel_softmax": GumbelSoftmax,
    "gumbel_rao": SampledEstimator,
    "gapped_straight_through": GappedEstimator,
    "reinmax": EstimatorFunction,
    "zgr": EstimatorFunction,
    "reinmax_rao": SampledEstimator,
    "reinmax_cv": ControlVariateEstimator,
}
"""The protocol of every built-in estimator's function (checked against its registration)."""

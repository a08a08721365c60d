"""What several test modules share: the estimator cases, one call into a backend, arrays of a
backend and noise of the right shape. Tests import these from here, never from each other."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from reinmax.conformance import harness, oracle

ESTIMATORS = oracle.ESTIMATORS
# Every (estimator, options) pair whose first output is the one-hot sample.
SAMPLERS = [
    ("straight_through", {}),
    ("reinmax", {}),
    ("gumbel_softmax", {}),
    ("gumbel_rao", {"k": 2}),
    ("gapped_straight_through", {"gap": 1.0}),
    ("gapped_straight_through", {"gap": "p"}),
]


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    """The test id of an (estimator, options) case: ``gumbel_rao-k=2``."""
    name, options = case
    return "-".join([name, *(f"{k}={v}" for k, v in options.items())])


def module(backend: str) -> ModuleType:
    """The module ``reinmax.backends.<backend>``."""
    return importlib.import_module(f"reinmax.backends.{backend}")


def call(backend: str, name: str, logits: Any, tau: Any = 1.0, **kwargs: Any) -> Any:
    """``backend``'s estimator ``name`` on ``logits`` at ``tau``, with ``kwargs`` as given."""
    return getattr(module(backend), name)(logits, tau, **kwargs)


def asarray(backend: str, x: Any, dtype: str) -> Any:
    """``x`` as a ``backend`` array of ``dtype`` (which may be an integer or bool dtype)."""
    return harness.driver(backend).asarray(x, dtype)


def noise_for(
    estimator: str,
    shape: tuple[int, ...],
    options: dict[str, Any] | None = None,
    *,
    axis: int = -1,
    seed: int = 0,
    values: Any = None,
) -> np.ndarray:
    """Uniform noise of ``estimator``'s noise shape for logits of ``shape``: drawn in [0, 1), or
    chosen among ``values``."""
    rng = np.random.default_rng(seed)
    size = oracle.noise_shape(estimator, tuple(shape), axis=axis, options=options)
    return rng.random(size) if values is None else rng.choice(values, size=size)

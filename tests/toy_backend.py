"""A toy backend for the tests: NumPy under another name, as one module plus its registration.

Its arrays are :class:`ToyArray`, an ``ndarray`` subclass that only this backend owns; it reuses
NumPy's namespace and explicit VJP. ``tests/test_registry.py`` registers it with
``reinmax.backends.register_backend("toy", "numpy", load)`` and runs the conformance suite on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reinmax.api import bind_module
from reinmax.backends import numpy as rnp


class ToyArray(np.ndarray):
    """NumPy's array under another type: what makes it another framework's."""


class ToyBackend(rnp.NumpyBackend):
    name = "toy"

    def owns(self, x: object) -> bool:
        return isinstance(x, ToyArray)

    def uniform(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: Any) -> ToyArray:
        return super().uniform(rng, shape, dtype, like).view(ToyArray)

    def custom_vjp(self, forward: Any, backward: Any, num_outputs: int) -> Any:
        op = super().custom_vjp(forward, backward, num_outputs)
        return lambda x, a, b: tuple(np.asarray(o).view(ToyArray) for o in op(x, a, b))


class ToyDriver(rnp.NumpyDriver):
    name = "toy"

    def asarray(self, x: Any, dtype: str) -> ToyArray:
        return np.asarray(super().asarray(x, dtype)).view(ToyArray)


BACKEND = ToyBackend()
DRIVER = ToyDriver()
vjp = rnp.vjp
bind_module(globals(), BACKEND, "vjp")

"""Choose the backend from the type of ``logits``, importing no framework the caller has not."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from reinmax.api import Backend

# Checked in this order; a framework is considered only once the caller has imported it.
_FRAMEWORKS = (
    ("torch", "reinmax.backends.torch"),
    ("jax", "reinmax.backends.jax"),
    ("tensorflow", "reinmax.backends.tensorflow"),
    ("numpy", "reinmax.backends.numpy"),
)
_BY_TYPE: dict[type, Backend] = {}


def backend_for(x: Any) -> Backend:
    """The backend that owns ``x``; cached per array type."""
    try:
        return _BY_TYPE[type(x)]
    except KeyError:
        pass
    for framework, module in _FRAMEWORKS:
        if framework in sys.modules:
            backend = importlib.import_module(module).BACKEND
            if backend.owns(x):
                _BY_TYPE[type(x)] = backend
                return backend
    raise TypeError(
        "logits must be a torch.Tensor, a jax.Array, a tf.Tensor or a numpy.ndarray, "
        f"got {type(x).__name__}"
    )

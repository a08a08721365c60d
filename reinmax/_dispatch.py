"""Choose the backend from the type of ``logits``, importing no framework the caller has not."""

from __future__ import annotations

from typing import Any

from reinmax.api import Backend

_BY_TYPE: dict[type, Backend] = {}


def backend_for(x: Any) -> Backend:
    """The backend that owns ``x``; cached per array type."""
    backend = _BY_TYPE.get(type(x))
    if backend is not None:
        return backend
    # Imported here, and with a statement: the backends are the layer above this one, and
    # torch.compile traces an import statement where it cannot trace importlib.
    from reinmax.backends import imported

    for registration in imported():
        backend = registration.load().BACKEND
        if backend.owns(x):
            _BY_TYPE[type(x)] = backend
            return backend
    raise TypeError(
        "logits must be a torch.Tensor, a jax.Array, a tf.Tensor or a numpy.ndarray, "
        f"got {type(x).__name__}"
    )

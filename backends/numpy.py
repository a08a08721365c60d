"""NumPy backend: values, plus an explicit vector-Jacobian product.

NumPy has no autodiff, so the estimators' backward rules are exposed through :func:`vjp`::

    from reinmax.backends import numpy as rnp
    (hard, soft), pullback = rnp.vjp(rnp.reinmax, logits, 1.3, noise=u)
    grad_logits = pullback(g_hard, g_soft)
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import array_api_compat.numpy as xp
import numpy as np

from reinmax.api import array_api_float_bits, bind_module
from reinmax.backends import DriverDefaults
from reinmax.core import softmax
from reinmax.errors import UnsupportedError

_TAPE: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "reinmax_numpy_tape", default=None
)


class NumpyBackend:
    name = "numpy"
    keyword_aliases: ClassVar[dict[str, str]] = {}
    xp = xp

    def owns(self, x: object) -> bool:
        return isinstance(x, np.ndarray)

    def device(self, x: Any) -> str:
        return "cpu"

    def shape(self, x: Any) -> tuple:
        return tuple(x.shape)

    def float_bits(self, dtype: Any) -> int | None:
        bits = array_api_float_bits(xp, dtype)
        if bits is None and np.dtype(dtype).kind == "V":
            # bfloat16 and the other ml_dtypes floats (installed with JAX and TensorFlow).
            try:
                import ml_dtypes
            except ImportError:
                return None
            try:
                return int(ml_dtypes.finfo(dtype).bits)
            except (TypeError, ValueError):
                return None
        return bits

    def host_values(self, x: np.ndarray) -> np.ndarray:
        return x

    def uniform(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: Any) -> np.ndarray:
        if rng is None:
            return np.random.random_sample(shape).astype(dtype)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be an int seed, a reinmax.Seed, a numpy.random.Generator or None, "
                f"got {type(rng).__name__}"
            )
        return rng.random(shape, dtype=dtype)

    # reinmax.compat.gumbel_softmax: Generator.gumbel, and the core's softmax (NumPy has none).
    gumbel_keyword = "generator"

    def gumbel(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: Any) -> np.ndarray:
        """``Generator.gumbel`` (``numpy.random.gumbel`` for None), in ``dtype``."""
        if rng is None:
            return np.random.gumbel(size=shape).astype(dtype)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"generator must be a numpy.random.Generator or None, got {type(rng).__name__}"
            )
        return rng.gumbel(size=shape).astype(dtype)

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        """The core's softmax along ``axis``."""
        return np.moveaxis(softmax(np.moveaxis(x, axis, -1), xp=xp), -1, axis)

    def scalar(self, value: float, like: np.ndarray) -> np.ndarray:
        """``value`` as NumPy holds a Python number (NEP 50) in arithmetic with ``like``."""
        return np.asarray(value, dtype=like.dtype)

    def seed_array(self, rng: object) -> bool:
        return isinstance(rng, np.ndarray) and rng.ndim == 0 and rng.dtype.kind in "iu"

    def wants_tau_grad(self, tau: object) -> bool:
        return False

    def custom_vjp(self, forward: Callable, backward: Callable, num_outputs: int) -> Callable:
        def op(x: np.ndarray, noise: Any, tau: Any) -> tuple[np.ndarray, ...]:
            # A NaN or +inf row is NaN by contract: NumPy need not warn about computing it.
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                outputs, residuals = forward(x, noise, tau)
            tape = _TAPE.get()
            if tape is not None:
                pull = functools.partial(_quietly, backward, noise, tau, outputs, residuals)
                tape.append((num_outputs, pull))
            return outputs

        return op


class NumpyDriver(DriverDefaults):
    """Drives the NumPy backend (:class:`reinmax.backends.Driver`): eager only, through
    :func:`vjp`, since NumPy has no autodiff of its own."""

    name = "numpy"
    transforms = ("eager",)
    preferred = "eager"
    native_autodiff = False

    def asarray(self, x: Any, dtype: str) -> np.ndarray:
        if dtype == "bfloat16":
            import ml_dtypes

            return np.asarray(x, dtype=np.float64).astype(ml_dtypes.bfloat16)
        return np.array(x).astype(dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x).astype(np.float64)

    def vjp(self, fn: Callable, x: np.ndarray, cotangents: tuple) -> tuple[tuple, np.ndarray]:
        outputs, pullback = vjp(fn, x)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return outputs, pullback(*cotangents)

    def grad(self, fn: Callable, x: np.ndarray) -> np.ndarray:
        output, pullback = vjp(fn, x)
        return pullback(np.ones_like(output))

    def pullback(self, call: Callable, transform: str, in_axes: tuple, dtype: str) -> Callable:
        if transform != "eager":
            raise ValueError(
                f"the numpy backend supports only transform='eager', got {transform!r}"
            )

        def f(x, noise, tau, g, g_p):
            (first, soft), grad = self.vjp(lambda y: call(y, noise, tau), x, (g, g_p))
            return first, soft, grad

        return f


def _quietly(backward: Callable, *args: Any) -> np.ndarray:
    # The pullback gives the gradient of logits only: τ's is not asked for (False).
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return backward(*args, False)[0]


BACKEND = NumpyBackend()
DRIVER = NumpyDriver()
_functions = bind_module(globals(), BACKEND, "vjp")

# The functions' static types (reinmax/_names.pyi); at run time bind_module made them.
if TYPE_CHECKING:
    from reinmax._names import *  # noqa: F403


def vjp(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, Callable[..., np.ndarray]]:
    """Call ``fn`` (a function of this module) and return its outputs and their pullback.

    The pullback takes one cotangent per output (``None`` for zero) and returns the cotangent of
    ``logits``: the estimator's backward rule plus the softmax gradient of ``soft``.

    Raises:
        UnsupportedError: ``vjp`` is called inside a function that ``vjp`` differentiates (a
            second derivative, which NumPy cannot record).
    """
    if _TAPE.get() is not None:
        raise UnsupportedError(
            "NumPy's explicit VJP has no higher derivatives: vjp cannot differentiate a function "
            "that itself calls vjp (a pullback is plain NumPy, recorded on no tape). Second "
            "derivatives of the backward rule need PyTorch, JAX or TensorFlow (docs/SPEC.md)"
        )
    tape: list = []
    token = _TAPE.set(tape)
    try:
        outputs = fn(*args, **kwargs)
    finally:
        _TAPE.reset(token)
    if len(tape) != 1:
        raise ValueError(f"vjp expects a function of reinmax.backends.numpy, got {fn!r}")
    single = not isinstance(outputs, tuple)
    outs = (outputs,) if single else outputs

    def pullback(*cotangents: np.ndarray | None) -> np.ndarray:
        if len(cotangents) != len(outs):
            raise ValueError(f"pullback takes {len(outs)} cotangents, got {len(cotangents)}")
        count, pull = tape[0]
        extra = [c for c in cotangents[count:] if c is not None]
        if extra:
            raise ValueError("the sample's index (return_index) has no gradient: pass None for it")
        filled = tuple(
            np.zeros_like(o) if c is None else np.asarray(c, dtype=o.dtype)
            for c, o in zip(cotangents[:count], outs)
        )
        return pull(filled)

    return outputs, pullback

"""A drop-in for ``torch.nn.functional.gumbel_softmax``, in every framework.

:func:`gumbel_softmax` has PyTorch's signature and return: one array, the relaxed sample
``softmax((logits + G)/τ)`` for ``hard=False`` and, for ``hard=True``, the exact one-hot of its
argmax with the straight-through gradient (``y_hard − stop_gradient(y_soft) + y_soft``). It
dispatches on the type of ``logits``, like every function of :mod:`reinmax`.

For the default ``estimator="gumbel_softmax"`` it computes the values the framework's own
expression computes, bit for bit: in PyTorch those of ``F.gumbel_softmax`` under the same
``torch.manual_seed`` (or ``generator=``), in JAX those of ``jax.random.gumbel`` with ``key=``
followed by ``jax.nn.softmax``. Its gradient is this library's rule for Gumbel-Softmax,
``(1/τ) J(y) g`` (:func:`reinmax.core.softmax_vjp`), equal to PyTorch's autograd up to float
rounding. ``estimator="reinmax"`` (or any registered name) keeps the call and the sample
``one_hot(argmax(logits + G))`` and swaps the backward rule.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from typing import Any, Protocol

from reinmax import noise as _noise
from reinmax._dispatch import backend_for
from reinmax.api import (
    Backend,
    Functions,
    _cached_op,
    _check_categories,
    _check_logits,
    _compute_dtype,
    _host_float,
    _move_axis,
    _to_core,
)
from reinmax.core import REGISTRY, Estimator, is_bool, one_hot_sample, softmax_vjp

__all__ = ["GumbelBackend", "gumbel_softmax"]

Array = Any

_EPS = 1e-10


class GumbelBackend(Backend, Protocol):
    """What :func:`gumbel_softmax` needs of a backend beyond :class:`reinmax.api.Backend`."""

    gumbel_keyword: str
    """The keyword of :func:`gumbel_softmax` that takes this framework's generator:
    ``"generator"`` (PyTorch, NumPy, TensorFlow) or ``"key"`` (JAX)."""

    def gumbel(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        """Standard Gumbel noise drawn with the framework's own generator, as its users do."""

    def softmax(self, x: Array, axis: int) -> Array:
        """The framework's own softmax along ``axis``."""

    def scalar(self, value: float, like: Array) -> Array:
        """``value`` as the framework holds a Python number in arithmetic with ``like``."""


class _DefaultTau(float):
    """``tau``'s default, 1.0, told apart from an explicit 1.0 (so ``temperature=`` can check)."""

    def __repr__(self) -> str:
        return "1.0"


_TAU = _DefaultTau(1.0)
_FUNCTIONS = Functions(resolve=backend_for)


def gumbel_softmax(
    logits: Array,
    tau: float | Array = _TAU,
    hard: bool = False,
    eps: float = _EPS,
    dim: int = -1,
    *,
    generator: Any = None,
    key: Any = None,
    estimator: str | Estimator = "gumbel_softmax",
    **options: Any,
) -> Array:
    """Sample from the Gumbel-Softmax distribution, as ``torch.nn.functional.gumbel_softmax``.

    Draws standard Gumbel noise ``G`` with the framework's own generator (PyTorch: ``−log`` of
    ``exponential_()``, as ``F.gumbel_softmax``; JAX: ``jax.random.gumbel``; NumPy:
    ``Generator.gumbel``; TensorFlow: ``−log(−log u)`` of ``tf.random`` uniforms), then
    ``y_soft = softmax((logits + G)/τ)`` along ``dim``.

    Args:
        logits: unnormalized log-probabilities, a float array of any framework.
        tau: the temperature ``τ > 0``: a number, or an array that divides ``logits + G`` as in
            the framework's own expression (a 0-d tensor keeps ``torch.compile`` from
            recompiling when ``τ`` is annealed). ``temperature=`` is an alias.
        hard: return the exact one-hot of ``argmax y_soft`` whose gradient is ``y_soft``'s
            (straight-through), rather than ``y_soft`` itself.
        eps: deprecated and unused, as in PyTorch (a value other than 1e-10 warns).
        dim: the category axis.
        generator: the generator of PyTorch (``torch.Generator``), NumPy
            (``numpy.random.Generator``) or TensorFlow (``tf.random.Generator`` or a stateless
            seed of shape ``[2]``); None draws from the framework's global generator.
        key: JAX's PRNG key (required for JAX arrays).
        estimator: ``"gumbel_softmax"`` (PyTorch's computation) or any registered estimator
            name or :class:`~reinmax.core.Estimator`: the same call and the same sample
            ``one_hot(argmax(logits + G))``, with that estimator's backward rule (``hard=True``
            only). Needs ``reinmax.noise.Gumbel``.
        **options: the estimator's options (``estimator="gumbel_rao"``: ``k=10``), and
            ``temperature``.

    Returns:
        An array of ``logits``' shape and dtype: ``y_soft``, or the one-hot sample for
        ``hard=True``.

    Raises:
        TypeError: logits of no backend or not floating-point, a non-integer ``dim``, a
            ``key`` for a framework that takes ``generator`` (or the reverse), or both
            ``tau`` and ``temperature``.
        ValueError: ``dim`` out of range, ``τ ≤ 0`` or not finite, an unknown estimator, options
            for ``estimator="gumbel_softmax"``, or ``hard=False`` with another estimator.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from reinmax.compat import gumbel_softmax
        >>> logits = torch.randn(4, 10)
        >>> _ = torch.manual_seed(0)
        >>> ours = gumbel_softmax(logits, tau=0.5, hard=True)
        >>> _ = torch.manual_seed(0)
        >>> torch.equal(ours, F.gumbel_softmax(logits, tau=0.5, hard=True))
        True
    """
    if "temperature" in options:
        if tau is not _TAU:
            raise TypeError("pass tau or its alias temperature, not both")
        tau = options.pop("temperature")
    if eps != _EPS:
        warnings.warn("`eps` parameter is deprecated and has no effect.", stacklevel=2)
    backend: GumbelBackend = backend_for(logits)
    shape = _check_logits(logits, backend)
    axis = _normalize_dim(dim, len(shape))
    _check_categories(shape, axis)
    if not is_bool(hard):
        raise TypeError(f"hard must be a bool, got {type(hard).__name__}")
    rng = _generator(backend, generator, key)
    g = backend.gumbel(rng, backend.shape(logits), logits.dtype, logits)
    if isinstance(estimator, str) and estimator == "gumbel_softmax":
        if options:
            raise ValueError(
                "estimator='gumbel_softmax' computes PyTorch's gumbel_softmax and takes no "
                f"options, got {', '.join(options)}"
            )
        op = _cached_op(_gumbel_softmax_op, backend, hard, axis)
        return op(logits, g, _tau(tau, shape, backend, logits))[0]
    return _estimated(backend, estimator, logits, tau, hard, axis, g, options)


def _normalize_dim(dim: object, ndim: int) -> int:
    if is_bool(dim):
        raise TypeError(f"dim must be an integer, got a bool ({dim!r})")
    try:
        index = operator.index(dim)
    except TypeError:
        raise TypeError(f"dim must be an integer, got {type(dim).__name__}") from None
    if not -ndim <= index < ndim:
        raise ValueError(f"dim {index} is out of range for logits with {ndim} dimensions")
    return index % ndim


def _generator(backend: GumbelBackend, generator: Any, key: Any) -> Any:
    """The framework's generator from the keyword its backend takes it by."""
    keyword = backend.gumbel_keyword
    given = {"generator": generator, "key": key}
    wrong = next((k for k, v in given.items() if k != keyword and v is not None), None)
    if wrong is not None:
        raise TypeError(
            f"{wrong}= is not how {backend.name} takes its random generator: pass {keyword}= "
            f"for {backend.name} logits"
        )
    return given[keyword]


def _tau(tau: object, shape: tuple[int, ...], backend: GumbelBackend, like: Array) -> Array:
    """``tau`` as the op's array: a number checked (finite and > 0 in the compute dtype) and
    held as the framework holds a Python number; an array as it is (its values unread)."""
    if isinstance(tau, numbers.Real) and not is_bool(tau):
        compute = _compute_dtype(like.dtype, backend)
        bits = backend.float_bits(compute)
        value = float(tau)
        rounded = _host_float(value, bits)
        if not 0 < rounded < math.inf:
            raise ValueError(
                f"tau must be a finite number > 0 in the compute dtype (float{bits}), got "
                f"{value!r}" + ("" if rounded == value else f", which rounds to {rounded!r}")
            )
        return backend.scalar(value, like)
    tau_shape = getattr(tau, "shape", None)
    if tau_shape is None or not backend.owns(tau):
        raise TypeError(
            f"tau must be a positive number or a {backend.name} array, got {type(tau).__name__}"
        )
    tau_shape = tuple(tau_shape)
    if len(tau_shape) > len(shape) or any(
        t not in (1, s) for t, s in zip(reversed(tau_shape), reversed(shape))
    ):
        raise ValueError(f"tau of shape {tau_shape} does not broadcast to logits' shape {shape}")
    return tau


def _gumbel_softmax_op(backend: GumbelBackend, hard: bool, axis: int) -> Any:
    """``op(logits, gumbels, tau) -> (y,)``: the framework's ``softmax((logits + G)/τ)`` (with
    PyTorch's straight-through expression for ``hard``), and the gradient ``(1/τ) J(y) g``."""
    xp = backend.xp

    def forward(logits: Array, gumbels: Array, tau: Array):
        y_soft = backend.softmax((logits + gumbels) / tau, axis)
        if y_soft.dtype != logits.dtype:
            y_soft = xp.astype(y_soft, logits.dtype)
        if not hard:
            return (y_soft,), ()
        core = _to_core(y_soft, axis, y_soft.dtype, xp)
        y_hard = one_hot_sample(xp.argmax(core, axis=-1), core, xp=xp)
        if axis != logits.ndim - 1:
            y_hard = _move_axis(y_hard, -1, axis, xp)
        # PyTorch's y_hard − y_soft.detach() + y_soft: exactly the one-hot, as its own bits.
        return (y_hard - y_soft + y_soft,), (y_soft,)

    def backward(aux, outputs: tuple[Array, ...], residuals: tuple[Array, ...], cotangents):
        y = residuals[0] if hard else outputs[0]
        (grad,) = cotangents
        if grad is None:
            return y * 0
        tau = aux[1]
        compute = _compute_dtype(y.dtype, backend)
        if tau.ndim:
            tau = _to_core(xp.broadcast_to(tau, tuple(y.shape)), axis, compute, xp)
        elif tau.dtype != compute:
            tau = xp.astype(tau, compute)
        q = _to_core(y, axis, compute, xp)
        out = softmax_vjp(q, _to_core(grad, axis, compute, xp), tau=tau, xp=xp)
        if axis != y.ndim - 1:
            out = _move_axis(out, -1, axis, xp)
        return out if out.dtype == y.dtype else xp.astype(out, y.dtype)

    return backend.custom_vjp(forward, backward, 1)


def _estimated(
    backend: GumbelBackend,
    estimator: str | Estimator,
    logits: Array,
    tau: object,
    hard: bool,
    axis: int,
    gumbels: Array,
    options: dict[str, Any],
) -> Array:
    """Another estimator's sample ``one_hot(argmax(logits + G))`` with its backward rule."""
    name = estimator if isinstance(estimator, str) else estimator.name
    if isinstance(estimator, str) and estimator not in REGISTRY:
        raise ValueError(
            f"estimator must be one of {', '.join(REGISTRY)} or an Estimator, got {estimator!r}"
        )
    if not hard:
        raise ValueError(
            f"hard=False returns the relaxed sample, which only estimator='gumbel_softmax' "
            f"has; {name} returns the exact one-hot sample: pass hard=True"
        )
    gumbel_noise = getattr(_noise, "Gumbel", None)
    if gumbel_noise is None:
        raise NotImplementedError(
            f"estimator={name!r} needs Gumbel noise for every estimator (reinmax.noise.Gumbel), "
            "which this version of reinmax does not have"
        )
    noise = gumbel_noise(gumbels)
    if isinstance(estimator, Estimator):
        if options:
            raise ValueError(f"an Estimator object takes no options here, got {', '.join(options)}")
        hard_sample, _ = _FUNCTIONS.estimate(estimator, logits, tau, axis=axis, noise=noise)
    else:
        function = getattr(_FUNCTIONS, estimator)
        hard_sample, _ = function(logits, tau, axis=axis, noise=noise, **options)
    return hard_sample

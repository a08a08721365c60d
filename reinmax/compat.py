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
import warnings
from typing import Any, Protocol, cast

from reinmax import noise as _noise
from reinmax._dispatch import backend_for
from reinmax.api import (
    Backend,
    Functions,
    _cached_op,
    _check_categories,
    _check_logits,
    _compute_dtype,
    _core,
    _host_float,
    _noise_layout,
    _normalize_axis,
    _sum_to,
    _to_core,
    _to_user,
    resolve_estimator,
)
from reinmax.core import REGISTRY, Estimator, is_bool, one_hot_sample, with_gumbel_noise

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
        tau: the temperature ``τ > 0``: a number, or an array of one temperature per row
            (size 1 along ``dim``) that divides ``logits + G`` as in the framework's own
            expression; a 0-d tensor keeps ``torch.compile`` from recompiling when ``τ`` is
            annealed, and one that requires grad gets its gradient. ``temperature=`` is an
            alias. Left out with another ``estimator``, that estimator's registered default
            (1.3 for ``"reinmax"``).
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
            ``one_hot(argmax(logits + G))`` (:class:`reinmax.noise.Gumbel` noise), with that
            estimator's backward rule (``hard=True`` only).
        **options: the estimator's options (``estimator="gapped_straight_through"``:
            ``gap=2.0``), and ``temperature``.

    Returns:
        An array of ``logits``' shape and dtype: ``y_soft``, or the one-hot sample for
        ``hard=True``.

    Raises:
        TypeError: logits of no backend or not floating-point, a non-integer ``dim``, a
            ``key`` for a framework that takes ``generator`` (or the reverse), or both
            ``tau`` and ``temperature``.
        ValueError: ``dim`` out of range, ``τ ≤ 0`` or not finite, a ``τ`` array that is not one
            temperature per row, an unknown estimator, options for
            ``estimator="gumbel_softmax"``, ``hard=False`` with another estimator, or an
            estimator that perturbs a row with several Gumbel draws (``gumbel_rao``,
            ``reinmax_rao``, ``reinmax_cv``: call it with ``noise=reinmax.noise.Gumbel``).

    Examples:
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
    backend = _gumbel_backend(backend_for(logits))
    shape = _check_logits(logits, backend)
    axis = _normalize_axis(dim, len(shape), "dim")
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
        return op(logits, g, _tau(tau, shape, axis, backend, logits))[0]
    return _estimated(backend, estimator, logits, tau, hard, axis, g, options)


_GUMBEL_MEMBERS = ("gumbel_keyword", "gumbel", "softmax", "scalar")


def _gumbel_backend(backend: Backend) -> GumbelBackend:
    """``backend`` as a :class:`GumbelBackend`, or a TypeError that names what it lacks."""
    missing = [name for name in _GUMBEL_MEMBERS if not hasattr(backend, name)]
    if missing:
        raise TypeError(
            f"the {backend.name} backend has no {', '.join(missing)}: reinmax.compat needs each "
            "backend's own Gumbel draw, softmax and scalar (see reinmax.compat.GumbelBackend)"
        )
    return cast(GumbelBackend, backend)


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


def _tau(
    tau: object, shape: tuple[int, ...], axis: int, backend: GumbelBackend, like: Array
) -> Array:
    """``tau`` as the op's array: a number checked (finite and > 0 in the compute dtype) and
    held as the framework holds a Python number; an array as it is (its values unread)."""
    if isinstance(tau, numbers.Real) and not is_bool(tau):
        compute = _compute_dtype(like.dtype, backend)
        bits = backend.float_bits(compute)
        value = float(tau)
        rounded = _host_float(value, cast(int, bits))  # a floating dtype: its width
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
    per_row = (*shape[:axis], 1, *shape[axis + 1 :])
    if len(tau_shape) > len(shape) or any(
        t not in (1, s) for t, s in zip(reversed(tau_shape), reversed(per_row))
    ):
        raise ValueError(
            f"tau of shape {tau_shape} does not broadcast to {per_row} (logits' shape {shape} "
            "with the category axis 1: one temperature per row)"
        )
    return tau


def _gumbel_softmax_op(backend: GumbelBackend, hard: bool, axis: int) -> Any:
    """``op(logits, gumbels, tau) -> (y,)``: the framework's ``softmax((logits + G)/τ)`` (with
    PyTorch's straight-through expression for ``hard``), and the gradients of the library's
    registered Gumbel-Softmax rule: ``(1/τ) J(y) g`` for the logits and ``gᵀ ∂y/∂τ`` for τ."""
    xp = backend.xp
    rule = resolve_estimator("gumbel_softmax", {"hard": hard})

    def forward(logits: Array, gumbels: Array, tau: Array):
        y_soft = backend.softmax((logits + gumbels) / tau, axis)
        if y_soft.dtype != logits.dtype:
            y_soft = xp.astype(y_soft, logits.dtype)
        if not hard:
            return (y_soft,), ()
        core = _to_core(y_soft, axis, y_soft.dtype, xp)
        y_hard = one_hot_sample(xp.argmax(core, axis=-1), core, xp=xp)
        y_hard = _to_user(y_hard, axis, y_hard.dtype, xp)
        # PyTorch's y_hard − y_soft.detach() + y_soft: exactly the one-hot, as its own bits.
        return (y_hard - y_soft + y_soft,), (y_soft,)

    def backward(gumbels, tau, outputs: tuple, residuals: tuple, cotangents, tau_grad):
        y = residuals[0] if hard else outputs[0]
        (grad,) = cotangents
        if grad is None:
            return y * 0, None
        compute = _compute_dtype(y.dtype, backend)
        q = _to_core(y, axis, compute, xp)
        g = _to_core(grad, axis, compute, xp)
        t = _core_tau(tau, y.ndim, axis, compute, xp)
        # The registered rules read only their residual, y (not the probabilities).
        out = _to_user(rule.backward(q, (q,), g, t, xp=xp), axis, y.dtype, xp)
        if tau_grad is False:
            return out, None
        assert rule.tau_backward is not None  # Gumbel-Softmax's rules have one
        per_row = _to_user(rule.tau_backward(q, (q,), g, t, xp=xp), axis, tau.dtype, xp)
        return out, _sum_to(per_row, tuple(tau.shape), xp)

    return backend.custom_vjp(forward, backward, 1)


def _core_tau(tau: Array, ndim: int, axis: int, dtype: Any, xp: Any) -> Array:
    """``tau`` (broadcastable to the logits, size 1 along ``axis``) in the core layout."""
    if tau.ndim:
        aligned = xp.reshape(tau, (1,) * (ndim - tau.ndim) + tuple(tau.shape))
        tau = _to_core(aligned, axis, aligned.dtype, xp)
    return tau if tau.dtype == dtype else xp.astype(tau, dtype)


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
    built = estimator if isinstance(estimator, Estimator) else resolve_estimator(name, options)
    shape = tuple(logits.shape)
    lead, _ = _noise_layout(with_gumbel_noise(built), _core(shape, axis), shape)
    if lead:
        raise ValueError(
            f"{name} perturbs each row with several Gumbel draws, and gumbel_softmax draws "
            f"PyTorch's one: call reinmax.{name} with noise=reinmax.noise.Gumbel(draws) instead"
        )
    noise = _noise.Gumbel(gumbels)
    # PyTorch's default τ = 1 is gumbel_softmax's; another estimator takes its registered one.
    tau = None if tau is _TAU else tau
    if isinstance(estimator, Estimator):
        if options:
            raise ValueError(f"an Estimator object takes no options here, got {', '.join(options)}")
        hard_sample, _ = _FUNCTIONS.estimate(estimator, logits, tau, axis=axis, noise=noise)
    else:
        function = getattr(_FUNCTIONS, estimator)
        hard_sample, _ = function(logits, tau, axis=axis, noise=noise, **options)
    return hard_sample

"""The public functions, written once for every backend.

A backend is a small object (see :class:`Backend`) that knows its array namespace, how to draw
uniforms from its framework's RNG, and how to register a backward rule with its framework's
custom-gradient hook. Everything else (validation, the category axis, low-precision dtypes,
the noise layout) happens here, once.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import numpy as np

from reinmax.core import (
    REGISTRY,
    Estimator,
    Registration,
    is_bool,
    logsumexp,
    score_function_backward,
    select,
    softmax,
    softmax_vjp,
    unimix,
    with_gumbel_noise,
)
from reinmax.errors import UnsupportedError
from reinmax.noise import Exponential, Gumbel, Seed, as_seed, estimator_noise

Array = Any
Forward = Callable[[Array, Array, Array], tuple[tuple[Array, ...], tuple[Array, ...]]]
Backward = Callable[..., tuple[Array, Array | None]]


class Backend(Protocol):
    """What a framework adapter provides: a namespace, an RNG edge and a custom-gradient hook.

    Each backend module has one (``BACKEND``); ``reinmax.backends.register_backend`` adds one
    for a framework of your own (CONTRIBUTING.md, "Add a backend").

    Examples:
        >>> import numpy as np
        >>> from reinmax.backends import numpy as rnp
        >>> rnp.BACKEND.name, rnp.BACKEND.owns(np.zeros(3)), rnp.BACKEND.float_bits(np.float32)
        ('numpy', True, 32)
    """

    # Read-only: a backend may hold them as class attributes.
    @property
    def name(self) -> str:
        """The framework's name (``"torch"``), also the backend module's."""

    @property
    def xp(self) -> Any:
        """The array namespace the core computes with."""

    @property
    def keyword_aliases(self) -> dict[str, str]:
        """Other names of the estimator functions' keywords, as the framework's users write
        them (PyTorch's ``dim`` for ``axis``)."""

    def owns(self, x: object) -> bool:
        """Whether ``x`` is an array of this framework."""

    def device(self, x: Array) -> Any:
        """The device of ``x``, for constants created beside it."""

    def shape(self, x: Array) -> tuple:
        """``x``'s shape, a dimension unknown until run time as a scalar array (TensorFlow)."""

    def float_bits(self, dtype: Any) -> int | None:
        """The width of a real floating-point ``dtype`` (16, 32, 64), or None for any other."""

    def host_values(self, x: Array) -> Any:
        """``x`` as a NumPy array where reading it costs no device sync and breaks no trace
        (eager arrays in host memory), else None."""

    def uniform(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: Array) -> Array:
        """Uniforms in ``[0, 1)`` drawn with the framework's own RNG (``rng``: docs/SPEC.md)."""

    def seed_array(self, rng: object) -> bool:
        """Whether ``rng`` is an integer array of shape ``()`` of this framework (a traced step
        counter, say), which seeds portable noise as a Python int does."""

    def wants_tau_grad(self, tau: object) -> bool:
        """Whether the user's ``tau`` will be differentiated (a tensor that requires grad, a
        trainable variable), as far as the framework tells before the call."""

    def custom_vjp(
        self, forward: Forward, backward: Backward, num_outputs: int
    ) -> Callable[..., tuple[Array, ...]]:
        """Wrap ``forward(x, noise, tau) -> (outputs, residuals)`` into ``op(x, noise, tau)``.

        ``outputs`` is a tuple of ``num_outputs`` arrays; ``noise`` and ``tau`` are the op's two
        other inputs (an estimator's noise and temperature; the REINFORCE surrogate's sample and
        advantage), which may be arrays of any shape.

        ``op`` returns ``outputs``. Its gradients come from
        ``backward(noise, tau, outputs, residuals, cotangents, tau_grad) -> (grad_x, grad_tau)``:
        ``grad_x`` for ``x``, ``grad_tau`` (``tau``'s shape, or None) for ``tau``, and none for
        ``noise``. ``tau_grad`` says whether the framework asks for ``tau``'s gradient: True
        (it does), False (it does not) or None (it cannot tell: give it where there is one). A
        cotangent may be None for an output that did not reach the loss. ``residuals`` are
        arrays computed by ``forward``, never its inputs or outputs.
        """


# ---------------------------------------------------------------------------------------------
# Validation and layout
# ---------------------------------------------------------------------------------------------


def _normalize_axis(axis: object, ndim: int, name: str = "axis") -> int:
    """``axis`` as an index in ``[0, ndim)``; errors call the argument ``name`` (the caller's
    spelling: ``dim`` in the PyTorch-style API)."""
    if is_bool(axis):
        raise TypeError(f"{name} must be an integer, got a bool ({axis!r})")
    try:
        index = operator.index(cast(Any, axis))  # any object: operator.index decides
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(axis).__name__}") from None
    if not -ndim <= index < ndim:
        raise ValueError(f"{name} {index} is out of range for logits with {ndim} dimensions")
    return index % ndim


def _check_logits(logits: Array, backend: Backend) -> tuple[int, ...]:
    dtype = getattr(logits, "dtype", None)
    if dtype is None or backend.float_bits(dtype) is None:
        raise TypeError(f"logits must have a real floating-point dtype, got {dtype}")
    shape = tuple(logits.shape)
    if len(shape) == 0:
        raise ValueError("logits must have at least one axis (the category axis), got a scalar")
    return shape


def _check_categories(shape: tuple[int, ...], axis: int) -> None:
    if shape[axis] is None:
        raise ValueError(
            f"axis {axis} of logits has no static size: the category axis must be known when a "
            "graph is traced (give its size in the tf.function's input signature)"
        )
    if shape[axis] == 0:
        raise ValueError(
            f"axis {axis} of logits has size 0: an estimator needs at least one category "
            f"(logits of shape {shape})"
        )


def _compute_dtype(dtype: Any, backend: Backend) -> Any:
    """float16 and bfloat16 are computed in float32; other floats in their own dtype."""
    bits = backend.float_bits(dtype)
    return backend.xp.float32 if bits is not None and bits < 32 else dtype


def array_api_float_bits(xp: Any, dtype: Any) -> int | None:
    """:meth:`Backend.float_bits` for a namespace that follows the array API."""
    try:
        return int(xp.finfo(dtype).bits) if xp.isdtype(dtype, "real floating") else None
    except (TypeError, ValueError):
        return None


# Per float width: the magnitudes that round to infinity (max + half an ulp) and to zero (half
# the smallest subnormal). Pure Python, so that torch.compile traces the check as constants.
_ROUNDING = {
    16: (math.ldexp(2 - 2.0**-11, 15), 2.0**-25),
    32: (math.ldexp(2 - 2.0**-24, 127), 2.0**-150),
    64: (math.inf, 0.0),
}


def _host_float(value: float, bits: int) -> float:
    """``value`` as the float of ``bits`` bits rounds it: itself, ``±inf`` or ``0.0``."""
    overflow, underflow = _ROUNDING[bits]
    # Comparisons only: under torch.compile a second temperature is a symbolic float, on which
    # comparisons become guards while math.isfinite and math.copysign cannot be traced.
    if value >= overflow:
        return math.inf
    if value <= -overflow:
        return -math.inf
    return 0.0 if -underflow <= value <= underflow else value


def _broadcastable(shape: Sequence[int | None], target: Sequence[int]) -> bool:
    if len(shape) > len(target):
        return False
    return all(s in (1, t, None) for s, t in zip(reversed(shape), reversed(target)))


def _same_shape(shape: Sequence[int | None], expected: Sequence[int]) -> bool:
    return len(shape) == len(expected) and all(s in (e, None) for s, e in zip(shape, expected))


def _is_number(value: object) -> bool:
    """A Python or NumPy real number, not a bool."""
    return isinstance(value, numbers.Real) and not is_bool(value)


def _tau_array(tau: object, batch: tuple[int, ...], dtype: Any, backend: Backend, like: Array):
    """``tau`` as an array that broadcasts against core-layout logits (trailing axis of size 1).

    A number is checked in the compute dtype: it must stay finite and > 0 once rounded to it. An
    array (a temperature per row) is checked where its values can be read for free.
    """
    xp = backend.xp
    if _is_number(tau):
        bits = backend.float_bits(dtype)
        # float() also makes a symbolic temperature (torch.compile) concrete for the message.
        value = float(cast(float, tau))
        rounded = _host_float(value, cast(int, bits))
        if not 0 < rounded < math.inf:
            raise ValueError(
                f"tau must be a finite number > 0 in the compute dtype (float{bits}), got "
                f"{value!r}" + ("" if rounded == value else f", which rounds to {rounded!r}")
            )
        # full, not asarray: on a GPU a fill kernel rather than a copy from the host.
        return xp.full((), rounded, dtype=dtype, device=backend.device(like))
    shape = getattr(tau, "shape", None)
    if shape is None:
        raise TypeError(f"tau must be a positive number or an array, got {type(tau).__name__}")
    if not _broadcastable(tuple(shape), batch):
        raise ValueError(
            f"tau of shape {tuple(shape)} does not broadcast to the batch shape {batch} "
            "(logits' shape without the category axis)"
        )
    # An array of the backend is used as it is: a copy would warn about (or cut) its gradient.
    tau = tau if backend.owns(tau) else xp.asarray(tau, device=backend.device(like))
    _check_tau_values(tau, backend)
    return xp.astype(tau, dtype)[..., None]


def _check_tau_values(tau: Array, backend: Backend) -> None:
    """Refuse temperatures ``≤ 0`` or NaN where reading them is free (eager host arrays); under
    a compiler or on an accelerator they are not read (docs/SPEC.md)."""
    values = backend.host_values(tau)
    if values is None:
        return
    bad = int(np.count_nonzero(~(values > 0)))
    if bad:
        raise ValueError(
            f"tau must be > 0 in every row, but {bad} of its {values.size} values are ≤ 0 or NaN"
        )


def _move_axis(x: Array, source: int, destination: int, xp: Any) -> Array:
    # permute_dims rather than moveaxis: torch.func.vmap has a batching rule only for the former.
    order = list(range(x.ndim))
    order.insert(destination % x.ndim, order.pop(source % x.ndim))
    return xp.permute_dims(x, tuple(order))


def _to_core(x: Array, axis: int, dtype: Any, xp: Any) -> Array:
    if axis != x.ndim - 1:
        x = _move_axis(x, axis, -1, xp)
    return x if x.dtype == dtype else xp.astype(x, dtype)


def _to_user(x: Array, axis: int, dtype: Any, xp: Any) -> Array:
    if axis != x.ndim - 1:
        x = _move_axis(x, -1, axis, xp)
    return x if x.dtype == dtype else xp.astype(x, dtype)


# ---------------------------------------------------------------------------------------------
# The differentiable ops, built once per (backend, estimator, axis)
# ---------------------------------------------------------------------------------------------


# A plain dict rather than functools.cache: torch.compile traces a dict lookup but not a cache
# wrapper, and a hit hands it the op built eagerly.
_OPS: dict[tuple, Callable] = {}


def _cached_op(build: Callable[..., Callable], *key: Any) -> Callable:
    op = _OPS.get((build, *key))
    if op is None:
        op = _OPS[(build, *key)] = build(*key)
    return op


def _estimator_op(backend: Backend, estimator: Estimator, axis: int, lead: int) -> Callable:
    """``op(logits, noise, tau) -> (sample, soft)`` with the estimator's backward registered.

    ``axis`` is the (non-negative) category axis of ``logits``; ``lead`` is the number of leading
    noise axes before the logits' own axes (Gumbel-Rao's draws).
    """
    xp = backend.xp

    def forward(logits: Array, noise: Array, tau: Array):
        compute = _compute_dtype(logits.dtype, backend)
        x = _to_core(logits, axis, compute, xp)
        if estimator.per_category:
            noise = _to_core(noise, lead + axis, compute, xp)
        elif noise.dtype != compute:
            noise = xp.astype(noise, compute)
        probs = softmax(x, xp=xp)
        sample, residuals = estimator.forward(x, probs, noise, tau, xp=xp)
        outputs = (
            _to_user(sample, axis, logits.dtype, xp),
            _to_user(probs, axis, logits.dtype, xp),
        )
        # Low-precision outputs are rounded: keep the float32 probabilities for the backward.
        kept = (probs,) if compute != logits.dtype else ()
        return outputs, (*kept, *residuals)

    def backward(noise, tau, outputs: tuple, residuals: tuple, cotangents, tau_grad):
        rest: Sequence[Array] = residuals
        dtype = outputs[1].dtype
        compute = _compute_dtype(dtype, backend)
        if compute != dtype:
            probs, *rest = rest
        else:
            probs = _to_core(outputs[1], axis, compute, xp)
        # A cotangent of None is zero (an output that did not reach the loss): its term is skipped.
        grad = grad_tau = None
        grad_sample, grad_soft = cotangents
        if grad_sample is not None:
            grad_sample = _to_core(grad_sample, axis, compute, xp)
            grad = estimator.backward(probs, tuple(rest), grad_sample, tau, xp=xp)
            grad_tau = _tau_gradient(estimator, tau, tau_grad, probs, rest, grad_sample, xp)
        if grad_soft is not None:
            grad_soft = _to_core(grad_soft, axis, compute, xp)
            grad = softmax_vjp(probs, grad_soft, None, grad, xp=xp)
        return _to_user(probs * 0 if grad is None else grad, axis, dtype, xp), grad_tau

    return backend.custom_vjp(forward, backward, 2)


def _bernoulli_op(backend: Backend, estimator: Estimator, lead: int) -> Callable:
    """``op(a, noise, tau) -> (z, σ(a))``: ``estimator`` on ``θ = [0, a]``, its category ``1``.

    Its own op (rather than a stack before an estimator's op) so that the NumPy backend's
    explicit VJP, which differentiates one op, gives the gradient with respect to ``a``.
    """
    xp = backend.xp

    def pair(x: Array) -> Array:
        return xp.stack((xp.zeros_like(x), x), axis=-1)

    def forward(logits: Array, noise: Array, tau: Array):
        compute = _compute_dtype(logits.dtype, backend)
        theta = pair(logits if logits.dtype == compute else xp.astype(logits, compute))
        noise = noise if noise.dtype == compute else xp.astype(noise, compute)
        probs = softmax(theta, xp=xp)
        sample, residuals = estimator.forward(theta, probs, noise, tau, xp=xp)
        outputs = (sample[..., 1], probs[..., 1])
        outputs = tuple(
            o if o.dtype == logits.dtype else xp.astype(o, logits.dtype) for o in outputs
        )
        return outputs, (probs, *residuals)

    def backward(noise, tau, outputs: tuple, residuals: tuple, cotangents, tau_grad):
        probs, *rest = residuals
        grad_sample, grad_soft = cotangents
        grad = grad_tau = None
        if grad_sample is not None:
            grad_sample = pair(xp.astype(grad_sample, probs.dtype))
            grad = estimator.backward(probs, tuple(rest), grad_sample, tau, xp=xp)
            grad_tau = _tau_gradient(estimator, tau, tau_grad, probs, rest, grad_sample, xp)
        if grad_soft is not None:
            grad = softmax_vjp(probs, pair(xp.astype(grad_soft, probs.dtype)), None, grad, xp=xp)
        grad = probs[..., 1] * 0 if grad is None else grad[..., 1]
        dtype = outputs[1].dtype
        return (grad if grad.dtype == dtype else xp.astype(grad, dtype)), grad_tau

    return backend.custom_vjp(forward, backward, 2)


def _score_function_op(backend: Backend, axis: int) -> Callable:
    """``op(logits, hard, advantage) -> (surrogate,)`` whose gradient is ``(f − b)(D − π)``."""
    xp = backend.xp

    def forward(logits: Array, hard: Array, advantage: Array):
        compute = _compute_dtype(logits.dtype, backend)
        x = _to_core(logits, axis, compute, xp)
        d = _to_core(hard, axis, compute, xp)
        log_prob = select(x - logsumexp(x, xp=xp), d, xp=xp)[..., 0]
        surrogate = xp.astype(advantage, compute) * log_prob
        return (xp.astype(surrogate, logits.dtype),), (softmax(x, xp=xp),)

    def backward(hard, advantage, outputs: tuple, residuals: tuple, cotangents, tau_grad):
        (probs,) = residuals
        d = _to_core(hard, axis, probs.dtype, xp)
        advantage = xp.astype(advantage, probs.dtype)
        grad_surrogate = xp.astype(cotangents[0], probs.dtype)
        grad = score_function_backward(probs, d, advantage, grad_surrogate, xp=xp)
        return _to_user(grad, axis, outputs[0].dtype, xp), None

    return backend.custom_vjp(forward, backward, 1)


def _tau_gradient(
    estimator: Estimator,
    tau: Array,
    wanted: bool | None,
    probs: Array,
    residuals: Sequence[Array],
    grad_sample: Array,
    xp: Any,
) -> Array | None:
    """The cotangent of the op's ``tau`` (its shape), None where it is not asked for.

    Raises:
        UnsupportedError: it is asked for, and ``τ`` enters only ``estimator``'s backward rule.
    """
    if wanted is False or (wanted is None and estimator.tau_backward is None):
        return None
    if estimator.tau_backward is None:
        raise UnsupportedError(_no_tau_gradient(estimator.name))
    per_row = estimator.tau_backward(probs, tuple(residuals), grad_sample, tau, xp=xp)
    return _sum_to(per_row, tuple(tau.shape), xp)


def _no_tau_gradient(name: str) -> str:
    return (
        f"tau has no gradient in {name}: τ enters only its backward rule, not the sample, so the "
        "loss does not depend on it (only gumbel_softmax's relaxed and soft samples do). Pass a "
        "number or a tensor that does not require grad (detach it)"
    )


def _sum_to(x: Array, shape: tuple, xp: Any) -> Array:
    """``x`` summed over the axes that ``shape`` broadcasts along, to ``shape``."""
    if len(shape) == 0:
        return xp.sum(x)
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1
    )
    summed = xp.sum(x, axis=axes, keepdims=True) if axes else x
    return xp.reshape(summed, shape) if lead else summed


# ---------------------------------------------------------------------------------------------
# Running an estimator
# ---------------------------------------------------------------------------------------------


def estimate(
    backend: Backend, estimator: Estimator, logits: Array, tau: object = None, **kw: Any
) -> tuple[Array, ...]:
    """Run ``estimator`` on ``logits`` in ``backend``; returns ``(sample, soft)`` (docs/SPEC.md).

    The keywords are those of every estimator function: ``axis``, ``rng``, ``noise``, ``mask``
    and ``return_index``.
    """
    return _estimate(backend, estimator, logits, tau, **kw)


def _estimate(
    backend: Backend,
    estimator: Estimator,
    logits: Array,
    tau: object,
    axis: int = -1,
    rng: Any = None,
    noise: Any = None,
    mask: Any = None,
    return_index: bool = False,
) -> tuple[Array, ...]:
    shape = _check_logits(logits, backend)
    axis = _normalize_axis(axis, len(shape))
    _check_categories(shape, axis)
    _check_flag("return_index", return_index)
    compute = _compute_dtype(logits.dtype, backend)
    estimator, noise = _noise_form(estimator, noise, rng)
    logits = _masked(backend, logits, mask, shape)
    # Checked in the order of the signature: tau before the noise.
    tau = _temperature(backend, estimator, tau, _core(shape, axis)[:-1], compute, logits)
    dynamic = backend.shape(logits)
    lead, noise = _noise(backend, estimator, (shape, dynamic), axis, rng, noise, compute, logits)
    hard, soft = _cached_op(_estimator_op, backend, estimator, axis, lead)(logits, noise, tau)
    if return_index:
        last = hard if axis == len(shape) - 1 else _move_axis(hard, axis, -1, backend.xp)
        return hard, soft, backend.xp.argmax(last, axis=-1)
    return hard, soft


def _check_flag(name: str, value: object) -> None:
    if not is_bool(value):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _noise_form(estimator: Estimator, noise: Any, rng: Any) -> tuple[Estimator, Any]:
    """The estimator that consumes ``noise``: ``estimator`` itself for uniforms, its Gumbel
    form for :class:`~reinmax.noise.Gumbel` or :class:`~reinmax.noise.Exponential` draws."""
    if isinstance(noise, (Gumbel, Exponential)):
        if rng is not None:
            raise ValueError(_BOTH)
        return with_gumbel_noise(estimator), noise
    return estimator, noise


def _masked(backend: Backend, logits: Array, mask: Any, shape: tuple) -> Array:
    """``logits`` with ``−inf`` where ``mask`` (True = allowed) is False."""
    if mask is None:
        return logits
    xp = backend.xp
    mask = xp.asarray(mask, device=backend.device(logits))
    if not xp.isdtype(mask.dtype, "bool"):
        raise TypeError(f"mask must be a boolean array (True = allowed), got dtype {mask.dtype}")
    if not _broadcastable(tuple(mask.shape), shape):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the logits' shape {shape}"
        )
    return xp.where(mask, logits, xp.full((), -math.inf, dtype=logits.dtype))


def _default_tau(estimator: Estimator) -> float:
    """The temperature of a call without one: the registration's of ``estimator``'s name."""
    registration = REGISTRY.get(estimator.name)
    return 1.0 if registration is None else registration.default_tau


def _temperature(
    backend: Backend, estimator: Estimator, tau: object, batch: tuple, dtype: Any, like: Array
) -> Array:
    """``tau`` (None: the estimator's default) as the op's array, after refusing a ``τ`` that
    will be differentiated where ``τ`` enters only the backward rule."""
    if tau is None:
        tau = _default_tau(estimator)
    elif estimator.tau_backward is None and backend.wants_tau_grad(tau):
        raise UnsupportedError(_no_tau_gradient(estimator.name))
    return _tau_array(tau, batch, dtype, backend, like)


def _noise(
    backend: Backend,
    estimator: Estimator,
    shapes: tuple[tuple, tuple],
    axis: int,
    rng: Any,
    noise: Any,
    compute: Any,
    like: Array,
) -> tuple[int, Array]:
    """``(lead, noise)`` for logits of the static and run-time ``shapes`` (user layout): the
    user's ``noise`` checked, portable noise for a seed, or the framework's generator's draw."""
    shape, dynamic = shapes
    lead, expected = _noise_layout(estimator, _core(shape, axis), shape)
    seed = Seed(rng) if backend.seed_array(rng) else as_seed(rng)
    if seed is None and noise is None:
        # A dimension unknown until run time (a TensorFlow graph's batch) is read then.
        drawn = _noise_layout(estimator, _core(dynamic, axis), dynamic)[1]
        return lead, backend.uniform(rng, drawn, compute, like)
    if seed is not None and noise is None:
        core = _core(dynamic, axis)
        return lead, _portable_noise(backend, estimator, seed, core, axis, lead, compute, like)
    if rng is not None:
        raise ValueError(_BOTH)
    if isinstance(noise, (Gumbel, Exponential)):
        return lead, _checked_draws(backend, noise, expected, estimator.name, like)
    return lead, _checked_noise(backend, noise, expected, estimator.name, like)


def _bernoulli(
    backend: Backend, estimator: Estimator, logits: Array, tau: object, rng: Any, noise: Any
) -> tuple[Array, Array]:
    """A binary variable per logit ``a``, as the two categories ``[0, a]``."""
    shape = _check_logits(logits, backend)
    compute = _compute_dtype(logits.dtype, backend)
    estimator, noise = _noise_form(estimator, noise, rng)
    pairs = ((*shape, 2), (*backend.shape(logits), 2))
    tau = _temperature(backend, estimator, tau, shape, compute, logits)
    lead, noise = _noise(backend, estimator, pairs, len(shape), rng, noise, compute, logits)
    return _cached_op(_bernoulli_op, backend, estimator, lead)(logits, noise, tau)


_BOTH = "pass either noise (explicit uniforms) or rng (to draw them), not both"


def _core(shape: tuple, axis: int) -> tuple:
    """A shape in the core layout: the category axis last."""
    return (*shape[:axis], *shape[axis + 1 :], shape[axis])


def _noise_layout(estimator: Estimator, core_shape: tuple, shape: tuple) -> tuple[int, tuple]:
    """``(lead, shape of the noise in the user's layout)``: ``lead`` leading noise axes (Gumbel-
    Rao's draws) before the logits' own, for a sampler that perturbs every category."""
    core_noise = tuple(estimator.noise_shape(core_shape))
    if not estimator.per_category:
        return 0, core_noise
    lead = len(core_noise) - len(core_shape)
    return lead, core_noise[:lead] + tuple(shape)


def _portable_noise(
    backend: Backend,
    estimator: Estimator,
    seed: Seed,
    core_shape: tuple[int, ...],
    axis: int,
    lead: int,
    compute: Any,
    logits: Array,
) -> Array:
    """``estimator``'s noise from the portable generator (:mod:`reinmax.noise`), user layout."""
    xp = backend.xp
    noise = estimator_noise(
        estimator, core_shape, seed, compute, xp=xp, device=backend.device(logits)
    )
    if estimator.per_category and axis != len(core_shape) - 1:
        noise = _move_axis(noise, -1, lead + axis, xp)
    return noise


def _checked_noise(
    backend: Backend, noise: Any, expected: tuple[int, ...], name: str, logits: Array
) -> Array:
    """The user's ``noise`` as a backend array, checked as far as that costs no device sync.

    Its shape is always checked. Its values (uniforms in ``[0, 1)``, no NaN) are checked wherever
    the backend can read them for free (:meth:`Backend.host_values`: NumPy, and eager arrays in
    host memory); under a compiler or on an accelerator they are not.
    """
    xp = backend.xp
    noise = xp.asarray(noise, device=backend.device(logits))
    if not _same_shape(tuple(noise.shape), expected):
        raise ValueError(f"noise for {name} must have shape {expected}, got {tuple(noise.shape)}")
    values = backend.host_values(noise)
    if values is not None:
        # NaN fails both comparisons, so it is counted too.
        outside = int(np.count_nonzero(~((values >= 0) & (values < 1))))
        if outside:
            raise ValueError(
                f"noise must hold uniforms in [0, 1), but {outside} of its {_size(noise)} values "
                "are outside that range or NaN"
            )
    return noise


def _checked_draws(
    backend: Backend, noise: Gumbel | Exponential, expected: tuple, name: str, logits: Array
) -> Array:
    """Gumbel or exponential draws as Gumbels, checked as :func:`_checked_noise` checks
    uniforms: no NaN, and exponentials ``≥ 0``."""
    xp = backend.xp
    kind = type(noise).__name__
    draws = xp.asarray(noise.draws, device=backend.device(logits))
    if not _same_shape(tuple(draws.shape), expected):
        raise ValueError(
            f"{kind} noise for {name} must have shape {expected}, got {tuple(draws.shape)}"
        )
    if backend.float_bits(draws.dtype) is None:
        raise TypeError(f"{kind} noise must be floating-point, got dtype {draws.dtype}")
    values = backend.host_values(draws)
    if values is not None:
        bad = np.isnan(values) | ((values < 0) if kind == "Exponential" else False)
        if np.any(bad):
            expected_values = "≥ 0" if kind == "Exponential" else "not NaN"
            raise ValueError(
                f"{kind} noise must hold draws {expected_values}, but {int(np.sum(bad))} of its "
                f"{_size(draws)} values are not"
            )
    # The Gumbels −log e, as PyTorch's F.gumbel_softmax makes them from its exponentials.
    return -xp.log(draws) if kind == "Exponential" else draws


def _size(x: Array) -> int:
    return math.prod(int(d) for d in x.shape)


def score_function(backend: Backend, logits: Array, hard: Array, value: Array, *args, **kw):
    """REINFORCE surrogate ``(f(D) − b) · log π_i`` per row; its gradient is ``(f − b)(D − π)``.

    The further arguments are those of ``reinforce``: ``baseline=0.0, *, axis=-1``.
    """
    return _score_function(backend, logits, hard, value, *args, **kw)


def _score_function(
    backend: Backend, logits: Array, hard: Array, value: Array, baseline: Any = 0.0, axis: int = -1
) -> Array:
    xp = backend.xp
    shape = _check_logits(logits, backend)
    axis = _normalize_axis(axis, len(shape))
    _check_categories(shape, axis)
    if tuple(hard.shape) != shape:
        raise ValueError(f"hard must have the shape of logits {shape}, got {tuple(hard.shape)}")
    batch = shape[:axis] + shape[axis + 1 :]
    device = backend.device(logits)
    compute = _compute_dtype(logits.dtype, backend)
    # Arrays of the backend pass through as they are (no copy, no warning about their grad);
    # anything else is read in the compute dtype, so a Python float keeps float64's digits.
    value = value if backend.owns(value) else xp.asarray(value, dtype=compute, device=device)
    baseline = (
        baseline if backend.owns(baseline) else xp.asarray(baseline, dtype=compute, device=device)
    )
    for name, arr in (("value", value), ("baseline", baseline)):
        if not _broadcastable(tuple(arr.shape), batch):
            raise ValueError(
                f"{name} of shape {tuple(arr.shape)} does not broadcast to the batch shape {batch}"
            )
    advantage = xp.astype(value, compute) - xp.astype(baseline, compute)
    advantage = xp.broadcast_to(advantage, batch)
    hard = xp.astype(hard, logits.dtype)
    return _cached_op(_score_function_op, backend, axis)(logits, hard, advantage)[0]


def _signature(registration: Registration) -> inspect.Signature:
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature(
        [
            inspect.Parameter("logits", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("tau", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
            inspect.Parameter("axis", keyword, default=-1),
            inspect.Parameter("rng", keyword, default=None),
            inspect.Parameter("noise", keyword, default=None),
            inspect.Parameter("unimix", keyword, default=0.0),
            inspect.Parameter("mask", keyword, default=None),
            inspect.Parameter("return_index", keyword, default=False),
            *(inspect.Parameter(o.name, keyword, default=o.default) for o in registration.options),
        ]
    )


_CALL_KEYWORDS = ("axis", "rng", "noise", "mask", "return_index")

_CALL_DOC = """
Args:
    logits: unnormalised log-probabilities θ, any floating dtype (float16 and bfloat16 are
        computed in float32), the categories along ``axis``.
    tau: the temperature τ: a number, an array per row, or None for this estimator's default
        ({default}).
    axis: the category axis.
    rng: an int seed or a :class:`reinmax.Seed` (portable noise, the same in every framework),
        an integer array of shape ``()`` (a traced seed), or the framework's own RNG (a
        ``torch.Generator``, a JAX PRNG key, a ``tf.random.Generator``, a NumPy ``Generator``).
    noise: explicit noise instead of ``rng``: uniforms in ``[0, 1)`` in this estimator's
        layout (``reinmax.core.noise_layout``), or :class:`reinmax.noise.Gumbel` /
        :class:`reinmax.noise.Exponential` draws of the logits' shape.
    unimix: uniform mixing ε in ``[0, 1)``: sample from ``(1 − ε) π + ε/m``.
    mask: a boolean array broadcastable to ``logits``, True where a category is allowed
        (the same as ``-inf`` logits elsewhere).
    return_index: also return the sampled category of each row.
{options}
Returns:
    ``(hard, soft)``: the exact one-hot sample (its gradient is this estimator's rule) and
    ``π = softmax(logits)`` (its ordinary gradient); with ``return_index=True`` also the
    integer ``argmax`` of ``hard`` along ``axis``.

Raises:
    TypeError: non-floating ``logits``, a non-boolean ``mask``, an unknown option.
    ValueError: a bad ``axis``, ``tau``, ``noise``, ``mask`` shape or option value, or both
        ``noise`` and ``rng``.
    reinmax.errors.UnsupportedError: a ``tau`` that requires a gradient where ``τ`` enters only
        the backward rule.

Examples:
    >>> import numpy as np, reinmax
    >>> hard, soft = reinmax.{name}(np.log([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]), rng=0)
    >>> hard.sum(axis=-1)
    array([1., 1.])
    >>> bool(np.all((hard == 0) | (hard == 1)))
    True
"""


def call_doc(registration: Registration) -> str:
    """The docstring of ``registration``'s estimator function: what the estimator is (its
    registration's documentation) and the arguments, returns and errors of every call."""
    options = "".join(
        f"    {o.name}: {o.help} (default {o.default!r}).\n" for o in registration.options
    )
    call = _CALL_DOC.format(
        default=registration.default_tau, options=options, name=registration.name
    )
    return f"{registration.doc}\n{call}"


def _built(registration: Registration, keywords: dict[str, Any]) -> Estimator:
    """The estimator for the options in ``keywords``: the registration's, ``unimix`` (not
    applied at 0, so that the default is bit-for-bit the unmixed estimator), and ``hard=True``."""
    if "hard" in keywords and not any(o.name == "hard" for o in registration.options):
        _drop_in_hard(registration.name, keywords.pop("hard"))
    mixing = keywords.pop("unimix", 0.0)
    return _mixed(registration(**keywords), mixing)


def _mixed(estimator: Estimator, mixing: object) -> Estimator:
    """``estimator`` with uniform mixing ``mixing``: itself at 0 (bit for bit), else wrapped (which
    checks the value)."""
    if mixing != 0.0 or is_bool(mixing) or not isinstance(mixing, numbers.Real):
        return unimix(estimator, mixing)
    return estimator


def resolve_estimator(
    estimator: str | Estimator, options: Mapping[str, Any] | None = None
) -> Estimator:
    """The :class:`~reinmax.core.Estimator` for a registered name built with ``options`` (its
    own options, ``unimix`` and the drop-in ``hard=True``), or an Estimator itself (which takes
    only ``unimix``).

    Raises:
        ValueError: an unknown name, or options an Estimator object cannot take.
    """
    keywords = dict(options or {})
    if isinstance(estimator, Estimator):
        mixing = keywords.pop("unimix", 0.0)
        if keywords:
            raise ValueError(
                f"an Estimator object takes only unimix as an option, got {', '.join(keywords)}"
            )
        return _mixed(estimator, mixing)
    if estimator not in REGISTRY:
        raise ValueError(
            f"estimator must be one of {', '.join(REGISTRY)} or an Estimator, got {estimator!r}"
        )
    return _built(REGISTRY[estimator], keywords)


def _drop_in_hard(name: str, hard: object) -> None:
    """``hard=True`` as other packages' functions take it (the reference ReinMax package's among
    them): every estimator returns the exact one-hot sample, so only True means anything."""
    if not (is_bool(hard) and hard):
        raise ValueError(
            f"{name} always returns the exact one-hot sample: hard must be True, got {hard!r} "
            "(a relaxed sample is gumbel_softmax's hard=False)"
        )


class Functions:
    """The public estimator functions, bound to one backend or dispatching on ``logits``.

    Every estimator of :data:`reinmax.core.REGISTRY` is an attribute (``functions.reinmax``),
    built on first use with its registered options as keywords and its documentation, so that an
    estimator registered later is a function here too. :meth:`estimate` runs any
    :class:`~reinmax.core.Estimator`, :meth:`reinforce` is the score-function helper.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        resolve: Callable | None = None,
        module: str = "reinmax",
    ):
        self._backend = backend
        self._resolve = resolve
        self._module = module
        self._bound: dict[str, Any] = {}

    def __reduce__(self) -> tuple:
        # By reference: unpickled, the functions are those of the same module, bound methods
        # (estimate, reinforce, bernoulli) included.
        return _module_functions, (self._module,)

    def _backend_for(self, logits: Array) -> Backend:
        if self._backend is None:
            assert self._resolve is not None, "Functions needs a backend or a resolver"
            return self._resolve(logits)
        if not self._backend.owns(logits):
            raise TypeError(
                f"logits must be a {self._backend.name} array for reinmax.backends."
                f"{self._backend.name}, got {type(logits).__name__}"
            )
        return self._backend

    def names(self) -> list[str]:
        """The public names: ``estimate``, ``reinforce``, ``bernoulli`` and every registered
        estimator."""
        return ["estimate", "reinforce", "bernoulli", *REGISTRY]

    def __getattr__(self, name: str) -> Any:
        registration = REGISTRY.get(name)
        if registration is None or name.startswith("_"):
            raise AttributeError(name)
        bound = self._bound.get(name)
        if bound is None or bound.registration is not registration:
            bound = self._bound[name] = self._bind(registration)
        return bound

    def module_getattr(self, module: str) -> Callable[[str], Any]:
        """A module's ``__getattr__`` (PEP 562): the registered estimators as its functions."""

        def __getattr__(name: str) -> Any:
            try:
                return getattr(self, name)
            except AttributeError:
                raise AttributeError(f"module {module!r} has no attribute {name!r}") from None

        return __getattr__

    def module_dir(self, namespace: dict[str, Any]) -> Callable[[], list[str]]:
        """A module's ``__dir__``: its own names (``namespace``, its globals) and the estimators."""

        def __dir__() -> list[str]:
            return sorted({*namespace, *self.names()})

        return __dir__

    def _bind(self, registration: Registration) -> Any:
        # The signature users see is the registration's (_signature): the keywords of every
        # estimator function (axis, rng, noise), then the estimator's own options.
        def estimator_function(logits: Array, tau: object = None, **keywords: Any):
            backend = self._backend_for(logits)
            for alias, name in backend.keyword_aliases.items():
                if alias in keywords:
                    if name in keywords:
                        raise TypeError(f"pass {name} or its alias {alias}, not both")
                    keywords[name] = keywords.pop(alias)
            call = {k: keywords.pop(k) for k in _CALL_KEYWORDS if k in keywords}
            estimator = _built(registration, keywords)
            return _estimate(backend, estimator, logits, tau, **call)

        function: Any = estimator_function  # it carries attributes of its own
        function.__name__ = function.__qualname__ = registration.name
        # The module whose attribute it is: pickle finds it there by name.
        function.__module__ = self._module
        function.__doc__ = call_doc(registration)
        function.__signature__ = _signature(registration)
        function.registration = registration
        function.__prepare_scriptable__ = _not_scriptable
        return function

    def bernoulli(
        self, logits: Array, tau: object = None, *, estimator: str = "reinmax", **keywords: Any
    ) -> tuple[Array, Array]:
        """A binary variable per logit, with any registered estimator.

        A logit ``a`` is the categorical ``θ = [0, a]``: returns ``(z, p)``, the 0/1 sample
        ``z`` (``P(z = 1) = σ(a)``) and ``p = σ(a)``, with the values and gradients of the
        two-category form ``estimator([0, a])[..., 1]``. ``rng``, ``noise`` (the two-category
        layout of ``logits.shape + (2,)``), ``unimix`` and the estimator's options as for the
        estimator itself; there is no category axis.

        Args:
            logits: one logit ``a`` per binary variable, any shape.
            tau: the temperature; None for the estimator's default.
            estimator: the name of a registered estimator.
            **keywords: ``rng``, ``noise``, ``unimix`` and the estimator's own options.

        Returns:
            ``(z, p)``: the exact 0/1 sample, with the estimator's gradient, and ``σ(a)``.

        Raises:
            ValueError: an unknown estimator, an ``axis``, or a bad option or noise.

        Examples:
            >>> import numpy as np, reinmax
            >>> z, p = reinmax.bernoulli(np.array([-2.0, 0.0, 3.0]), rng=0)
            >>> sorted(set(z.tolist()) | {0.0, 1.0})
            [0.0, 1.0]
            >>> p.round(3)
            array([0.119, 0.5  , 0.953])
        """
        for name in ("axis", "dim"):
            if name in keywords:
                raise ValueError(
                    f"bernoulli takes one logit per variable and no category axis; got {name}="
                    f"{keywords[name]!r}"
                )
        if estimator not in REGISTRY:
            raise ValueError(f"estimator must be one of {', '.join(REGISTRY)}, got {estimator!r}")
        backend = self._backend_for(logits)
        rng, noise = keywords.pop("rng", None), keywords.pop("noise", None)
        built = _built(REGISTRY[estimator], keywords)
        return _bernoulli(backend, built, logits, tau, rng, noise)

    def estimate(
        self,
        estimator: Estimator,
        logits: Array,
        tau: object = None,
        *,
        axis: int = -1,
        rng: Any = None,
        noise: Array | None = None,
        mask: Array | None = None,
        return_index: bool = False,
    ) -> tuple[Array, ...]:
        """Run any :class:`~reinmax.core.Estimator`, including one you define yourself.

        Args:
            estimator: the estimator, e.g. ``REGISTRY["gumbel_rao"](k=10)``.
            logits: the logits, categories along ``axis``.
            tau: the temperature; None for the default of the estimator's registered name
                (1.0 for an unregistered one).
            axis: the category axis.
            rng: a seed, a :class:`reinmax.Seed` or the framework's RNG.
            noise: explicit noise instead of ``rng`` (uniforms, or Gumbel/exponential draws).
            mask: a boolean array, True where a category is allowed.
            return_index: also return the sampled category of each row.

        Returns:
            ``(hard, soft)``; ``hard``'s gradient is ``estimator.backward``, ``soft``'s is the
            ordinary softmax gradient. With ``return_index=True`` also the index.

        Raises:
            TypeError, ValueError: bad arguments, as for every estimator function.

        Examples:
            >>> import numpy as np, reinmax
            >>> estimator = reinmax.REGISTRY["gumbel_rao"](k=4)
            >>> hard, soft = reinmax.estimate(estimator, np.zeros((2, 3)), 0.5, rng=1)
            >>> hard.sum(axis=-1)
            array([1., 1.])
        """
        backend = self._backend_for(logits)
        return _estimate(backend, estimator, logits, tau, axis, rng, noise, mask, return_index)

    def reinforce(
        self,
        logits: Array,
        hard: Array,
        value: Array,
        baseline: Array | float = 0.0,
        *,
        axis: int = -1,
    ) -> Array:
        """REINFORCE / score-function surrogate (Williams 1992).

        Returns ``(f(D) − b) · log π_i`` per row (the batch shape), to be summed into the loss;
        its gradient is ``(f(D) − b)(D − π)``, and none flows into ``value``, ``baseline`` or
        ``hard``. ``value`` and ``baseline`` broadcast to the batch shape; for a function of
        several rows, pass its value at every row of the sample.

        Args:
            logits: the logits the sample ``hard`` was drawn from.
            hard: the one-hot sample, of the logits' shape.
            value: ``f(D)`` per row (broadcast to the batch shape).
            baseline: ``b``, a number or an array per row.
            axis: the category axis.

        Returns:
            The surrogate ``(f(D) − b) · log π_i``, one value per row.

        Raises:
            ValueError: ``hard`` of another shape, or ``value``/``baseline`` that do not
                broadcast to the batch shape.

        References:
            Williams. Simple statistical gradient-following algorithms for connectionist
            reinforcement learning. Machine Learning, 1992.

        Examples:
            >>> import numpy as np, reinmax
            >>> logits = np.log([[0.5, 0.5]])
            >>> reinmax.reinforce(logits, np.array([[1.0, 0.0]]), np.array([2.0])).round(4)
            array([-1.3863])
        """
        return _score_function(self._backend_for(logits), logits, hard, value, baseline, axis)


def _module_functions(module: str) -> Functions:
    """The :class:`Functions` of the module named ``module`` (imported if need be)."""
    import importlib

    return importlib.import_module(module)._functions


def _not_scriptable() -> None:
    """The hook ``torch.jit.script`` calls on a function (or on one that a scripted module calls)
    before compiling it: the public functions refuse TorchScript by name."""
    raise UnsupportedError(
        "TorchScript (torch.jit.script) cannot compile the reinmax estimator functions: they are "
        "Python functions (keyword options, dispatch on the arguments, a custom "
        "torch.autograd.Function). Call them eagerly, or compile with torch.compile"
    )


for _method in (Functions.estimate, Functions.bernoulli, Functions.reinforce):
    _method.__dict__["__prepare_scriptable__"] = _not_scriptable


def bind_module(namespace: dict[str, Any], backend: Backend, *extra: str) -> Functions:
    """Make the module whose globals are ``namespace`` the public face of ``backend``.

    It gets ``estimate``, ``reinforce``, every registered estimator as a function (through a
    module ``__getattr__``, so that estimators registered later are there too), a ``__dir__``
    and an ``__all__`` (``BACKEND``, ``DRIVER``, the module's own ``extra`` names, the rest).
    """
    functions = Functions(backend, module=namespace["__name__"])
    namespace.update(
        _functions=functions,
        estimate=functions.estimate,
        reinforce=functions.reinforce,
        bernoulli=functions.bernoulli,
        __getattr__=functions.module_getattr(namespace["__name__"]),
        __dir__=functions.module_dir(namespace),
        __all__=["BACKEND", "DRIVER", *extra, *functions.names()],
    )
    return functions

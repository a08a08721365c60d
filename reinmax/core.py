"""The estimators, written once against the Python array API.

Everything here is a pure function of arrays and takes the array namespace as the keyword ``xp``.
Arrays arrive in the *core layout*: the category axis is last and the dtype is the compute dtype
(float32 or float64). Nothing here imports a framework or knows which one it runs on; the backends
(``reinmax.backends``) register ``Estimator.backward`` with their own custom-gradient hook.

An estimator is data: a :class:`Estimator` holds a ``forward`` that turns logits and uniform noise
into the sample plus the residuals its backward needs, a ``backward`` that turns residuals and the
cotangent of the sample into the cotangent of the logits, and the shape of the noise it consumes.
"""

from __future__ import annotations

import array
import functools
import inspect
import math
import numbers
import operator
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, cast

Array = Any
Namespace = Any

__all__ = [
    "REGISTRY",
    "Estimator",
    "Option",
    "Registration",
    "conditioned_logits",
    "conditioned_on",
    "count_below",
    "gapped_straight_through_estimator",
    "gumbel",
    "gumbel_form",
    "gumbel_rao_estimator",
    "gumbel_softmax_estimator",
    "inverse_cdf_index",
    "inverse_cdf_sample",
    "inverse_cdf_target",
    "logsumexp",
    "native_capable",
    "native_kernel",
    "noise_layout",
    "one_hot_sample",
    "prefix_sum",
    "register_estimator",
    "register_native_kernel",
    "reinmax_cv_estimator",
    "reinmax_estimator",
    "reinmax_mixture",
    "reinmax_rao_estimator",
    "row_total",
    "sampling_weights",
    "score_function_backward",
    "select",
    "softmax",
    "softmax_vjp",
    "straight_through_estimator",
    "uniform_clamp",
    "unimix",
    "unimix_probabilities",
    "unimix_weights",
    "unregister_estimator",
    "weighted_at_or_before",
    "with_gumbel_noise",
    "zgr_estimator",
]


class Estimator(NamedTuple):
    """A categorical gradient estimator as a pair of pure array-API functions.

    Attributes:
        name: the public name (``"reinmax"``, ``"gumbel_rao"``, ...).
        forward: ``forward(logits, probs, noise, tau, *, xp) -> (sample, residuals)``. ``logits``
            and ``probs = softmax(logits)`` have the category axis last; ``noise`` holds uniforms
            in ``[0, 1)`` shaped by ``noise_shape``; ``tau`` broadcasts against ``logits`` (its
            last axis has size 1). ``residuals`` is a tuple of arrays computed here (never
            ``logits`` or ``probs`` themselves: the backward receives ``probs`` anyway).
        backward: ``backward(probs, residuals, grad, tau, *, xp) -> grad_logits``: the rule that
            replaces the derivative of the sample, applied to the cotangent ``grad`` of the sample.
        noise_shape: maps the logits' core-layout shape to the noise's core-layout shape.
        per_category: whether the noise has the category axis (Gumbel noise) or one uniform per
            row (inverse-CDF sampling). Decides how a user's noise is moved into the core layout.
        given: optional ``given(logits, probs, hard, tau, *, xp) -> residuals``, for an
            estimator whose residuals depend on the noise only through the sample ``hard``: it
            then also takes a sample drawn another way (Gumbel noise, :func:`gumbel_form`).
        gumbel: optional ``gumbel(logits, probs, gumbels, tau, *, xp) -> (sample, residuals)``,
            the forward of a per-category estimator from standard Gumbel draws (``−log(−log u)``
            of its uniforms) instead of uniforms, in the same layout.
        tau_backward: optional ``tau_backward(probs, residuals, grad, tau, *, xp) -> grad_tau``
            (per row, keepdims) for an estimator whose sample depends on ``τ`` (the relaxed
            Gumbel-Softmax sample, and the soft sample behind ST-Gumbel-Softmax): the gradient
            a learnable ``τ`` gets. Without it, ``τ`` enters only the backward rule, and a ``τ``
            that requires a gradient is an error (:class:`reinmax.errors.UnsupportedError`).

    Examples:
        Straight-Through with its gradient halved, as an estimator of one's own:

        >>> import numpy as np, reinmax
        >>> from reinmax.core import Estimator, inverse_cdf_sample, softmax_vjp
        >>> def forward(logits, probs, noise, tau, *, xp):
        ...     return inverse_cdf_sample(probs, noise, xp=xp), ()
        >>> def backward(probs, residuals, grad, tau, *, xp):
        ...     return softmax_vjp(probs, grad, 0.5, xp=xp)
        >>> half = Estimator("half_st", forward, backward, lambda s: s[:-1], per_category=False)
        >>> hard, soft = reinmax.estimate(half, np.zeros((2, 4)), rng=0)
        >>> hard.sum(axis=-1)
        array([1., 1.])
    """

    name: str
    forward: Callable[..., tuple[Array, tuple[Array, ...]]]
    backward: Callable[..., Array]
    noise_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    per_category: bool
    given: Callable[..., tuple[Array, ...]] | None = None
    gumbel: Callable[..., tuple[Array, tuple[Array, ...]]] | None = None
    tau_backward: Callable[..., Array] | None = None

    def __reduce__(self) -> tuple:
        # An estimator built by a factory holds closures, which pickle cannot save: it travels
        # as the factory and its options, and the receiving process builds the same estimator.
        recipe = _RECIPES.get(self)
        return (Estimator, tuple(self)) if recipe is None else recipe


def is_bool(value: object) -> bool:
    """A Python or NumPy bool (``np.bool_`` is named ``bool`` in NumPy 2, ``bool_`` before)."""
    return isinstance(value, bool) or type(value).__name__ in ("bool", "bool_")


def _real(value: object) -> float | None:
    """A Python or NumPy real number (not a bool) as a float, else None."""
    if isinstance(value, numbers.Real) and not is_bool(value):
        return float(value)
    return None


def positive_int(name: str, value: object, meaning: str) -> int:
    """``value`` as a Python int ≥ 1 (Python and NumPy integers), else a ValueError naming it."""
    try:
        number = None if is_bool(value) else operator.index(cast(Any, value))
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"{name} must be a positive integer ({meaning}), got {value!r}")
    return number


def _non_negative_float(gap: object) -> float:
    # Comparisons rather than math.isfinite: under torch.compile an option may be a symbolic
    # float, on which comparisons become guards.
    value = _real(gap)
    if value is not None and 0 <= value < math.inf:
        return value
    raise ValueError(f'gap must be a finite non-negative number or "p", got {gap!r}')


def _memoized(
    normalize: Callable[..., tuple],
) -> Callable[[Callable[..., Estimator]], Callable[..., Estimator]]:
    """One Estimator per option value, so that backends can cache what they build per estimator.

    ``normalize`` checks the options and returns them as a tuple of plain Python values (so that
    ``k=2`` and ``k=np.int64(2)`` find the same estimator, and no NumPy scalar ever becomes a
    key). A dict in a closure rather than functools.cache: torch.compile traces through this
    lookup and finds the estimator built before, whereas it re-runs a cached factory (building a
    new estimator, hence a new op, on every call).
    """

    def decorate(factory: Callable[..., Estimator]) -> Callable[..., Estimator]:
        built: dict[tuple, Estimator] = {}

        @functools.wraps(factory)
        def get(*args: Any, **kwargs: Any) -> Estimator:
            key = normalize(*args, **kwargs)
            estimator = built.get(key)
            if estimator is None:
                estimator = built[key] = factory(*key)
                _RECIPES[estimator] = (get, key)
            return estimator

        return get

    return decorate


_RECIPES: dict[Estimator, tuple[Callable[..., Estimator], tuple]] = {}
"""How each estimator a memoized factory built was made: ``(factory, options)``, for pickle."""


def _flag(name: str, value: object) -> bool:
    if not is_bool(value):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _gap_option(gap: object) -> float | str:
    if isinstance(gap, str) and gap == "p":
        return gap
    return _non_negative_float(gap)


# ---------------------------------------------------------------------------------------------
# Kernels: one definition of each formula.
# ---------------------------------------------------------------------------------------------

# kernel name -> ((namespace, fused implementation), ...). Pairs compared by identity rather than
# a dict keyed by namespace: torch.compile can trace `is` on a module but not hash one.
_NATIVE: dict[str, tuple[tuple[Namespace, Callable[..., Array]], ...]] = {}


def native_kernel(xp: Namespace, name: str) -> Callable[..., Array] | None:
    """The fused kernel registered for ``name`` in namespace ``xp``, or None.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import native_kernel
        >>> native_kernel(np, "softmax") is None  # NumPy runs the generic kernels
        True
    """
    for namespace, fn in _NATIVE.get(name, ()):
        if namespace is xp:
            return fn
    return None


def register_native_kernel(xp: Namespace, name: str, fn: Callable[..., Array]) -> None:
    """Let namespace ``xp`` compute the kernel ``name`` with its own fused ``fn``.

    ``fn`` takes the kernel's arguments without ``xp`` and must compute the same function, edge
    cases included (masked categories, empty and NaN rows): the backend's tests compare it with
    the generic kernel, and the conformance suite with the float64 oracle. Only the kernels marked
    below as native-capable can be replaced (see ``NATIVE_CAPABLE``). A native kernel may work
    in place on arrays it allocates itself, never on its arguments.

    Examples:
        >>> import types
        >>> import numpy as np
        >>> from reinmax.core import native_kernel, register_native_kernel, softmax
        >>> xp = types.SimpleNamespace(**vars(np))  # a namespace of one's own
        >>> register_native_kernel(xp, "softmax", lambda x, tau=None: np.full_like(x, 0.5))
        >>> softmax(np.zeros((1, 2)), xp=xp)
        array([[0.5, 0.5]])
    """
    generic = _NATIVE_CAPABLE.get(name)
    if generic is None:
        raise ValueError(f"name must be one of {sorted(_NATIVE_CAPABLE)}, got {name!r}")
    others = tuple(pair for pair in _NATIVE.get(name, ()) if pair[0] is not xp)
    _NATIVE[name] = (*others, (xp, fn))


_NATIVE_CAPABLE: dict[str, Callable[..., Array]] = {}
"""The kernels a backend may replace, by name, each with its generic definition."""
NATIVE_CAPABLE = _NATIVE_CAPABLE


def native_capable(generic: Callable[..., Array]) -> Callable[..., Array]:
    """A kernel that a namespace may replace with a fused one (:func:`register_native_kernel`).

    The generic definition stays reachable as ``kernel.generic``.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import NATIVE_CAPABLE, softmax_vjp
        >>> "softmax_vjp" in NATIVE_CAPABLE
        True
    """
    name = generic.__name__

    @functools.wraps(generic)
    def kernel(*args: Any, xp: Namespace, **kwargs: Any) -> Array:
        native = native_kernel(xp, name)
        return generic(*args, xp=xp, **kwargs) if native is None else native(*args, **kwargs)

    kernel.generic = generic  # type: ignore[attr-defined]  # a function attribute, for tests
    _NATIVE_CAPABLE[name] = generic
    return kernel


def _row_max(x: Array, *, xp: Namespace) -> Array:
    """Row maximum, with ``0`` for a row that is entirely ``-inf`` so that ``x - m`` stays -inf."""
    m = xp.max(x, axis=-1, keepdims=True)
    return xp.where(m == -xp.inf, xp.zeros_like(m), m)


@native_capable
def softmax(x: Array, tau: Array | None = None, *, xp: Namespace) -> Array:
    """``softmax(x / tau)`` along the last axis; an all ``-inf`` row gives zeros instead of NaN.

    The row maximum is subtracted before the division by ``tau``: ``(x − max x)/τ`` is at most 0,
    so no finite ``x`` and no ``τ > 0`` overflow, however small ``τ`` or large ``|x|`` is.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import softmax
        >>> softmax(np.array([[0.0, np.log(3.0), -np.inf]]), xp=np)
        array([[0.25, 0.75, 0.  ]])
    """
    x = x - _row_max(x, xp=xp)
    if tau is not None:
        x = x / tau
    e = xp.exp(x)
    s = xp.sum(e, axis=-1, keepdims=True)
    # Only an empty row (s == 0) is rescued; a NaN total stays NaN so the whole row is NaN.
    return e / xp.where(s == 0, xp.ones_like(s), s)


def logsumexp(x: Array, *, xp: Namespace) -> Array:
    """``log Σ exp(x)`` along the last axis (keepdims); ``-inf`` for an all ``-inf`` row.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import logsumexp
        >>> logsumexp(np.log([[1.0, 3.0]]), xp=np)
        array([[1.38629436]])
    """
    m = _row_max(x, xp=xp)
    s = xp.sum(xp.exp(x - m), axis=-1, keepdims=True)
    # log(0) only for an empty row; selecting around it keeps NumPy from warning.
    empty = s == 0
    log_s = xp.log(xp.where(empty, xp.ones_like(s), s))
    return xp.where(empty, xp.full_like(s, -xp.inf), m + log_s)


@native_capable
def softmax_vjp(
    q: Array,
    v: Array,
    scale: Array | float | None = None,
    add: Array | None = None,
    tau: Array | None = None,
    *,
    xp: Namespace,
) -> Array:
    """The softmax Jacobian at probabilities ``q`` applied to ``v``: ``q ⊙ v − q (qᵀv)``.

    Times ``scale``, divided by ``tau`` and plus ``add`` where given, so that a backward pass that
    sums several such products can accumulate them without a temporary per product. Dividing by
    ``τ`` (rather than multiplying by ``1/τ``, which overflows for a tiny ``τ``) keeps an exact
    zero a zero. Exactly zero wherever ``q`` is zero (masked categories), for any finite ``v``.
    The result is finite wherever it is representable: ``|J(q)v| ≤ 2 max|v|``.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import softmax_vjp
        >>> softmax_vjp(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]), xp=np)
        array([[ 0.25, -0.25]])
    """
    qv = q * v
    out = qv - q * xp.sum(qv, axis=-1, keepdims=True)
    if scale is not None:
        out = out * scale
    if tau is not None:
        out = out / tau
    return out if add is None else out + add


def uniform_clamp(u: Array, *, xp: Namespace) -> Array:
    """Clamp uniforms to ``[tiny, 1 − eps]`` of their dtype so that no ``log`` is infinite.

    A NaN (which the public functions reject wherever they can read the noise for free) becomes
    ``tiny``, so that noise that cannot be checked never reaches a masked category either.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import uniform_clamp
        >>> u = uniform_clamp(np.array([0.0, 0.5, 1.0]), xp=np)
        >>> bool(u[0] > 0), float(u[1]), bool(u[2] < 1)
        (True, 0.5, True)
    """
    info = xp.finfo(u.dtype)
    low = xp.full_like(u, float(info.smallest_normal))
    return xp.clip(xp.where(u >= low, u, low), max=1.0 - float(info.eps))


def gumbel(u: Array, *, xp: Namespace) -> Array:
    """Standard Gumbel noise ``−log(−log u)`` from clamped uniforms.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import gumbel
        >>> float(gumbel(np.array([np.exp(-1.0)]), xp=np)[0])
        -0.0
    """
    return -xp.log(-xp.log(uniform_clamp(u, xp=xp)))


# The portable exponential: one table set per float width, built once on the host.
# bits -> (fraction bits of the grid, cutoff, 12-bit table fields below the integer part)
_PEXP_LAYOUT = {32: (12, 86, 1), 64: (36, 707, 3)}


def _build_pexp_tables(bits: int) -> tuple[array.array, ...]:
    """``(M, E, T_1, ..., T_f)`` with ``exp(−h) = M[h] · E[h]`` (``E[h]`` a power of two) for the
    integers ``0 ≤ h ≤ cutoff`` and ``T_k[j] = exp(−j · 2^(−12k))``, rounded to the float width."""
    _, cutoff, fields = _PEXP_LAYOUT[bits]

    def rounded(value: float) -> float:
        return struct.unpack("<f", struct.pack("<f", value))[0] if bits == 32 else value

    # Buffers rather than tuples: every namespace's asarray reads them without a copy per item.
    code = "f" if bits == 32 else "d"
    split = [math.frexp(math.exp(-h)) for h in range(cutoff + 1)]
    mantissas = array.array(code, [rounded(m) for m, _ in split])
    powers = array.array(code, [math.ldexp(1.0, e) for _, e in split])
    fine = tuple(
        array.array(code, [rounded(math.exp(-j * 2.0 ** (-12 * k))) for j in range(4096)])
        for k in range(1, fields + 1)
    )
    return (mantissas, powers, *fine)


# Built at import: a tracer (Dynamo) that reached the construction could not follow it.
_PEXP_TABLES = {bits: _build_pexp_tables(bits) for bits in _PEXP_LAYOUT}


def _table(values: array.array, like: Array, *, xp: Namespace) -> Array:
    return xp.asarray(values, dtype=like.dtype, device=getattr(like, "device", None))


@native_capable
def sampling_weights(logits: Array, *, xp: Namespace) -> Array:
    """The portable unnormalized weights ``w = pexp(θ − max θ)`` that the inverse CDF samples from.

    ``pexp`` is a table exponential that every backend computes bit for bit, eagerly and
    compiled (docs/SPEC.md, "Portable inverse-CDF sample"): ``d = θ − max θ`` is split on the grid
    ``2^−12`` (float32; ``2^−36`` for float64) into ``r = round(d · 2^12)`` and the exact remainder
    ``x = d − r · 2^−12``, and ``w = M[h] · T[j] · (1 + x) · E[h]`` with ``h, j`` the integer and
    grid parts of ``−r`` and ``M[h] · E[h] = exp(−h)``. Only products follow, the last one by a
    power of two, so a compiler that contracts a product and a sum into an FMA cannot change a
    rounding. ``d < −86`` (float32; ``−707`` for float64), ``-inf`` and NaN give 0. Within
    ``2.2e−7`` (float32) and ``7e−16`` (float64) of ``exp(d)`` relatively.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import sampling_weights
        >>> w = sampling_weights(np.array([[0.0, np.log(0.5), -np.inf]]), xp=np)
        >>> w.round(6)
        array([[1. , 0.5, 0. ]])
    """
    bits = xp.finfo(logits.dtype).bits
    frac, cutoff, _ = _PEXP_LAYOUT[bits]
    d = logits - _row_max(logits, xp=xp)
    # A NaN or -inf fails the comparison; they and the far tail are computed at 0 and zeroed.
    valid = d >= -float(cutoff)
    d = xp.where(valid, d, xp.zeros_like(d))
    r = xp.round(d * 2.0**frac)
    x = d - r * 2.0**-frac  # exact: r · 2^−frac is exact and within a factor 2 of d
    index = xp.reshape(xp.astype(-r, xp.int32 if bits == 32 else xp.int64), (-1,))
    mantissas, powers, *fine = _PEXP_TABLES[bits]
    whole = index // 2**frac
    w = xp.take(_table(mantissas, logits, xp=xp), whole)
    for k, table in enumerate(fine, start=1):
        part = (index // 2 ** (frac - 12 * k)) % 4096
        w = w * xp.take(_table(table, logits, xp=xp), part)
    w = xp.reshape(w, d.shape) * (1 + x)
    w = w * xp.reshape(xp.take(_table(powers, logits, xp=xp), whole), d.shape)
    return xp.where(valid, w, xp.zeros_like(w))


def prefix_sum(w: Array, *, xp: Namespace) -> Array:
    """Inclusive prefix sum along the last axis in a fixed order (Hillis–Steele).

    ``c ← c + shift(c, 2^j)`` for ``j = 0, 1, ...`` while ``2^j < n``: every backend executes the
    same additions of the same operands, so the result is the same bit for bit (a framework's
    cumsum may accumulate in another order or precision).

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import prefix_sum
        >>> prefix_sum(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), xp=np)
        array([[ 1.,  3.,  6., 10., 15.]])
    """
    n = w.shape[-1]
    c = w
    step = 1
    while step < n:
        shifted = xp.concat((xp.zeros_like(c[..., :step]), c[..., : n - step]), axis=-1)
        c = c + shifted
        step *= 2
    return c


def inverse_cdf_index(weights: Array, u: Array, *, xp: Namespace) -> Array:
    """Category index by inverse CDF, one uniform ``u`` per row.

    ``i = #{k : c_k < u · c_{n−1}}`` with ``c`` the prefix sum (:func:`prefix_sum`) of the
    non-negative ``weights`` (probabilities, or the unnormalized :func:`sampling_weights`),
    clipped to ``n − 1`` and moved back to the last category with a positive weight at or before
    it (:func:`weighted_at_or_before`): a zero-weight category is never drawn. Scaling by the
    row total keeps the target within the sum even when it does not end at exactly 1.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import inverse_cdf_index
        >>> inverse_cdf_index(np.array([[0.2, 0.3, 0.5]] * 3), np.array([0.1, 0.3, 0.9]), xp=np)
        array([0, 1, 2])
    """
    c = prefix_sum(weights, xp=xp)
    count = count_below(c, inverse_cdf_target(c, u, xp=xp), xp=xp)
    return weighted_at_or_before(count, weights, xp=xp)


def weighted_at_or_before(index: Array, weights: Array, *, xp: Namespace) -> Array:
    """The last category at or before ``min(index, n − 1)`` whose weight is positive (0 in a row
    with none).

    The prefix sum's entries are sums in different trees, so the entry of a zero weight can
    round a hair above the weighted entry before it; a target between the two makes the count of
    entries below it land on the zero weight. In exact arithmetic the two entries are equal, so
    the target lies in the interval of that weighted category: a zero weight (a masked
    category) is never the sample. Integers and comparisons only: every backend agrees.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import weighted_at_or_before
        >>> w = np.array([[0.0, 0.5, 0.0, 0.0, 0.5, 0.0]] * 3)
        >>> weighted_at_or_before(np.array([0, 3, 6]), w, xp=np)
        array([0, 1, 4])
    """
    n = weights.shape[-1]
    # On index's device (None for a JAX tracer, as in one_hot_sample).
    k = xp.arange(n, dtype=index.dtype, device=getattr(index, "device", None))
    reachable = (weights > 0) & (k <= index[..., None])  # an index past n − 1 reaches them all
    return xp.max(xp.where(reachable, k, xp.zeros_like(k)), axis=-1)


def inverse_cdf_target(c: Array, u: Array, *, xp: Namespace) -> Array:
    """The point ``u · c_{n−1}`` (keepdims) that the inverse CDF looks up in the prefix sum.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import inverse_cdf_target
        >>> inverse_cdf_target(np.array([[1.0, 3.0, 4.0]]), np.array([0.5]), xp=np)
        array([[2.]])
    """
    # A target of 0 (u = 0) would make a leading zero-probability category reachable. Clamping u
    # is not enough where denormals flush to zero (TensorFlow), so the target is floored too.
    tiny = float(xp.finfo(c.dtype).smallest_normal)
    return xp.clip(uniform_clamp(u, xp=xp)[..., None] * c[..., -1:], min=tiny)


@native_capable
def count_below(c: Array, target: Array, *, xp: Namespace) -> Array:
    """``#{k : c_k < target}`` per row, for a ``(..., 1)`` ``target``.

    Every entry counts: a prefix sum in floating point (:func:`prefix_sum`) need not be sorted,
    since its entries are summed in different trees, so a binary search may find another index.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import count_below
        >>> count_below(np.array([[1.0, 3.0, 4.0]]), np.array([[3.5]]), xp=np)
        array([2])
    """
    return xp.count_nonzero(c < target, axis=-1)


@native_capable
def one_hot_sample(index: Array, probs: Array, *, xp: Namespace) -> Array:
    """The exact one-hot row of ``index``; zeros for an empty row and NaN for a NaN row.

    ``probs`` sums to 1 in an ordinary row, to 0 in an all-masked row (which has no sample) and to
    NaN where a logit is NaN or ``+inf`` (whose outputs docs/SPEC.md makes NaN).

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import one_hot_sample
        >>> probs = np.array([[0.5, 0.5], [0.0, 0.0], [np.nan, np.nan]])
        >>> one_hot_sample(np.array([1, 0, 0]), probs, xp=np)
        array([[ 0.,  1.],
               [ 0.,  0.],
               [nan, nan]])
    """
    n = probs.shape[-1]
    # On index's device: a GPU index compared with a host arange fails under torch.compile. (A
    # JAX tracer has no device attribute, and None leaves the placement to JAX.)
    device = getattr(index, "device", None)
    hit = xp.arange(n, dtype=index.dtype, device=device) == index[..., None]
    total = xp.sum(probs, axis=-1, keepdims=True)
    # Per-row values, broadcast by one full-size where: 0 or NaN off the sample, and 1, 0 or NaN
    # on it. total is finite or NaN, never infinite, so total * 0 is 0 or NaN.
    off = total * 0
    on = xp.where(total > 0, xp.ones_like(total), off)
    return xp.where(hit, on, off)


def select(x: Array, hard: Array, *, xp: Namespace) -> Array:
    """``x`` at the sampled category of each row (keepdims), without touching other entries.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import select
        >>> select(np.array([[1.0, 2.0, 3.0]]), np.array([[0.0, 1.0, 0.0]]), xp=np)
        array([[2.]])
    """
    return xp.sum(xp.where(hard == 1, x, xp.zeros_like(x)), axis=-1, keepdims=True)


def _argmax_sample(scores: Array, probs: Array, *, xp: Namespace) -> Array:
    return one_hot_sample(xp.argmax(scores, axis=-1), probs, xp=xp)


@native_capable
def inverse_cdf_sample(
    probs: Array, u: Array, weights: Array | None = None, *, xp: Namespace
) -> Array:
    """The one-hot sample of each row by inverse CDF (:func:`inverse_cdf_index`) of ``weights``.

    ``weights`` defaults to ``probs``; the estimators pass the portable :func:`sampling_weights`
    of their logits, so that every backend draws the same category. ``probs`` decides the empty
    (zeros) and broken (NaN) rows, as in :func:`one_hot_sample`.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import inverse_cdf_sample
        >>> inverse_cdf_sample(np.array([[0.2, 0.8]]), np.array([0.5]), xp=np)
        array([[0., 1.]])
    """
    index = inverse_cdf_index(probs if weights is None else weights, u, xp=xp)
    return one_hot_sample(index, probs, xp=xp)


def _sample(
    logits: Array, probs: Array, u: Array, weights: Array | None, *, xp: Namespace
) -> Array:
    """The estimators' inverse-CDF sample: from ``weights`` where the caller (uniform mixing)
    gives them, else from the portable weights of ``logits``."""
    if weights is None:
        weights = sampling_weights(logits, xp=xp)
    return inverse_cdf_sample(probs, u, weights, xp=xp)


def _tempered_backward(
    probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
) -> Array:
    """``(1/τ) J(q) g`` for the single residual ``q``: the rule of ST, ST-GS and GST."""
    (q,) = residuals
    return softmax_vjp(q, grad, tau=tau, xp=xp)


def _tempered_tau_backward(
    probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
) -> Array:
    """``gᵀ ∂y/∂τ`` for ``y = softmax(z/τ)`` (the single residual), per row (keepdims).

    ``∂y/∂τ = −(1/τ) J(y) (z/τ)``, and ``z/τ = log y`` up to a per-row constant that ``J(y)``
    removes, so the gradient is ``−(1/τ) Σ_i y_i log y_i (g_i − gᵀy)``. Written with ``log y``
    (``y log y = 0`` where ``y = 0``) rather than ``z``, it stays finite at a ``−inf`` logit.
    """
    (y,) = residuals
    positive = y > 0
    y_log_y = xp.where(positive, y * xp.log(xp.where(positive, y, xp.ones_like(y))), 0.0 * y)
    centered = grad - xp.sum(grad * y, axis=-1, keepdims=True)
    return -xp.sum(y_log_y * centered, axis=-1, keepdims=True) / tau


def _row_noise_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:-1]


def _category_noise_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape


# ---------------------------------------------------------------------------------------------
# Straight-Through
# ---------------------------------------------------------------------------------------------


def _row_sampler(
    given: Callable[..., tuple[Array, ...]],
) -> Callable[..., tuple[Array, tuple[Array, ...]]]:
    """The forward of an estimator that draws ``D ~ Cat(π)`` by inverse CDF (one uniform per
    row) and computes its residuals from the sample alone (``given``)."""

    def forward(
        logits: Array,
        probs: Array,
        noise: Array,
        tau: Array,
        *,
        xp: Namespace,
        weights: Array | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        # weights: the portable sampling weights of a mixed distribution (unimix), if any.
        hard = _sample(logits, probs, noise, weights, xp=xp)
        return hard, given(logits, probs, hard, tau, xp=xp)

    return forward


def _straight_through_given(
    logits: Array, probs: Array, hard: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, ...]:
    return (softmax(logits, tau, xp=xp),)


def straight_through_estimator() -> Estimator:
    """Straight-Through estimator (Bengio et al. 2013), with a temperature.

    Forward: ``D ~ Cat(π)``, an exact one-hot by inverse CDF from one uniform per row.
    Backward: ``∇θ = (1/τ) J(p_τ) g`` with ``p_τ = softmax(θ/τ)``. Prefers ``τ`` of 1 to 1.5.

    References:
        Bengio, Léonard, Courville. Estimating or propagating gradients through stochastic
        neurons for conditional computation. 2013. Liu et al. Bridging Discrete and
        Backpropagation: Straight-Through and Beyond. NeurIPS 2023.

    Examples:
        >>> from reinmax.core import straight_through_estimator
        >>> straight_through_estimator().name, straight_through_estimator().per_category
        ('straight_through', False)
    """
    return _STRAIGHT_THROUGH


_STRAIGHT_THROUGH = Estimator(
    "straight_through",
    _row_sampler(_straight_through_given),
    _tempered_backward,
    _row_noise_shape,
    per_category=False,
    given=_straight_through_given,
)


# ---------------------------------------------------------------------------------------------
# ReinMax
# ---------------------------------------------------------------------------------------------


def _reinmax_given(
    logits: Array, probs: Array, hard: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, ...]:
    return (reinmax_mixture(logits, hard, tau, xp=xp),)


@native_capable
def reinmax_mixture(logits: Array, hard: Array, tau: Array, *, xp: Namespace) -> Array:
    """``π_D = ½ (softmax(θ/τ) + D)``, the point where ReinMax evaluates the softmax Jacobian.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import reinmax_mixture
        >>> reinmax_mixture(np.zeros((1, 2)), np.array([[1.0, 0.0]]), np.ones((1, 1)), xp=np)
        array([[0.75, 0.25]])
    """
    return 0.5 * (softmax(logits, tau, xp=xp) + hard)


def _reinmax_backward(
    probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
) -> Array:
    # No row-mean subtraction as in the reference code: it is a no-op in exact arithmetic and
    # would give masked categories a rounding-sized, nonzero gradient.
    (pi_d,) = residuals
    return softmax_vjp(pi_d, grad, 2.0, softmax_vjp(probs, grad, -0.5, xp=xp), xp=xp)


def reinmax_estimator() -> Estimator:
    """ReinMax (Liu et al. 2023): second-order accurate Straight-Through.

    Forward: ``D ~ Cat(π)``, an exact one-hot by inverse CDF from one uniform per row.
    Backward: ``∇θ = 2 J(π_D) g − ½ J(π) g`` with ``π_D = ½ (softmax(θ/τ) + D)``; no ``1/τ``.
    Prefers ``τ ≥ 1`` (1.1 to 1.5 in the paper); a call without ``tau`` gets 1.3.

    References:
        Liu, Liu, Gao, Gao, Han. Bridging Discrete and Backpropagation: Straight-Through and
        Beyond. NeurIPS 2023.

    Examples:
        >>> import numpy as np, reinmax
        >>> from reinmax.core import reinmax_estimator
        >>> hard, soft = reinmax.estimate(reinmax_estimator(), np.zeros((2, 3)), rng=0)
        >>> hard.sum(axis=-1)
        array([1., 1.])
    """
    return _REINMAX


_REINMAX = Estimator(
    "reinmax",
    _row_sampler(_reinmax_given),
    _reinmax_backward,
    _row_noise_shape,
    per_category=False,
    given=_reinmax_given,
)


# ---------------------------------------------------------------------------------------------
# Straight-Through Gumbel-Softmax
# ---------------------------------------------------------------------------------------------


def _from_uniforms(
    from_gumbels: Callable[..., tuple[Array, tuple[Array, ...]]],
) -> Callable[..., tuple[Array, tuple[Array, ...]]]:
    """The forward from uniforms of an estimator that perturbs every category: the Gumbels
    ``−log(−log u)`` handed to its forward from Gumbel draws."""

    def forward(
        logits: Array, probs: Array, noise: Array, tau: Array, *, xp: Namespace
    ) -> tuple[Array, tuple[Array, ...]]:
        return from_gumbels(logits, probs, gumbel(noise, xp=xp), tau, xp=xp)

    return forward


def _gumbel_softmax_hard_gumbel(
    logits: Array, probs: Array, gumbels: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, tuple[Array, ...]]:
    perturbed = logits + gumbels
    hard = _argmax_sample(perturbed, probs, xp=xp)
    return hard, (softmax(perturbed, tau, xp=xp),)


def _gumbel_softmax_relaxed_gumbel(
    logits: Array, probs: Array, gumbels: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, tuple[Array, ...]]:
    relaxed = softmax(logits + gumbels, tau, xp=xp)
    # The relaxed sample's ordinary gradient is (1/τ) J(y) g, the same rule as the hard version;
    # a copy keeps the residual distinct from the output for hooks that save both.
    return relaxed, (relaxed + 0.0,)


@_memoized(lambda hard=True: (_flag("hard", hard),))
def gumbel_softmax_estimator(hard: bool = True) -> Estimator:
    """Straight-Through Gumbel-Softmax (Jang et al. 2017; Maddison et al. 2017).

    Forward: ``i = argmax(θ + G)``, ``G = −log(−log u)``, one uniform per category.
    Backward: ``∇θ = (1/τ) J(y) g`` with ``y = softmax((θ + G)/τ)``. Prefers ``τ`` of 0.3 to 1.
    With ``hard=False`` the first output is the relaxed ``y`` itself, with its ordinary gradient.

    References:
        Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR 2017.
        Maddison, Mnih, Teh. The Concrete Distribution. ICLR 2017.

    Examples:
        >>> from reinmax.core import gumbel_softmax_estimator
        >>> gumbel_softmax_estimator(hard=False).per_category
        True
    """
    from_gumbels = _gumbel_softmax_hard_gumbel if hard else _gumbel_softmax_relaxed_gumbel
    return Estimator(
        "gumbel_softmax",
        _from_uniforms(from_gumbels),
        _tempered_backward,
        _category_noise_shape,
        per_category=True,
        gumbel=from_gumbels,
        tau_backward=_tempered_tau_backward,
    )


# ---------------------------------------------------------------------------------------------
# Gumbel-Rao (GR-MCK)
# ---------------------------------------------------------------------------------------------


def conditioned_logits(logits: Array, hard: Array, uniforms: Array, *, xp: Namespace) -> Array:
    """Gumbel-perturbed ``logits`` conditioned on ``argmax = i`` (the sample ``hard``), one set
    per leading index of ``uniforms`` (one uniform per category each).

    In log space (Paulus et al. 2021, appendix), with ``E = −log u`` and ``Z = Σ exp θ``: the top
    one is ``log Z − log E_i``, the others ``−logaddexp(log E_j − θ_j, log E_i − log Z)``,
    truncated below it; a ``−inf`` logit stays ``−inf``.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import conditioned_logits
        >>> logits, hard = np.zeros((1, 3)), np.array([[0.0, 1.0, 0.0]])
        >>> y = conditioned_logits(logits, hard, np.full((4, 1, 3), 0.3), xp=np)
        >>> bool((y.argmax(-1) == 1).all())  # every conditional draw keeps the sample on top
        True
    """
    return conditioned_on(logits, hard, -gumbel(uniforms, xp=xp), xp=xp)


def conditioned_on(logits: Array, hard: Array, log_e: Array, *, xp: Namespace) -> Array:
    """:func:`conditioned_logits` from ``log E`` (the negated standard Gumbels) directly.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import conditioned_logits, conditioned_on, gumbel
        >>> logits, hard, u = np.zeros((1, 3)), np.array([[1.0, 0.0, 0.0]]), np.full((2, 1, 3), 0.4)
        >>> a = conditioned_logits(logits, hard, u, xp=np)
        >>> bool(np.allclose(a, conditioned_on(logits, hard, -gumbel(u, xp=np), xp=np)))
        True
    """
    log_z = logsumexp(logits, xp=xp)
    log_e_i = select(log_e, hard, xp=xp)
    top = log_z - log_e_i
    rest = -xp.logaddexp(log_e - logits, log_e_i - log_z)
    return xp.where(hard == 1, top, rest)


def _gumbel_rao_forward(
    logits: Array, probs: Array, noise: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, tuple[Array, ...]]:
    hard = _argmax_sample(logits + gumbel(noise[0, ...], xp=xp), probs, xp=xp)
    conditioned = conditioned_logits(logits, hard, noise[1:, ...], xp=xp)
    return hard, (softmax(conditioned, tau, xp=xp),)


def _gumbel_rao_gumbel(
    logits: Array, probs: Array, gumbels: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, tuple[Array, ...]]:
    hard = _argmax_sample(logits + gumbels[0, ...], probs, xp=xp)
    conditioned = conditioned_on(logits, hard, -gumbels[1:, ...], xp=xp)
    return hard, (softmax(conditioned, tau, xp=xp),)


def _gumbel_rao_backward(
    probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
) -> Array:
    (y,) = residuals
    return xp.mean(softmax_vjp(y, grad, xp=xp), axis=0) / tau


@_memoized(lambda k=1: (positive_int("k", k, "the number of conditional draws"),))
def gumbel_rao_estimator(k: int = 1) -> Estimator:
    """Gumbel-Rao, GR-MCK (Paulus et al. 2021): Rao-Blackwellised ST-Gumbel-Softmax.

    Forward: ``i = argmax(θ + G⁰)``; noise of shape ``(k + 1, *logits.shape)``.
    Backward: ``∇θ = (1/K) Σ_k (1/τ) J(softmax(ỹ^k/τ)) g``, with ``ỹ^k`` Gumbel-perturbed logits
    drawn conditionally on ``argmax = i``. Prefers ``τ`` of 0.3 to 2. ``k`` (K) defaults to 1;
    the literature uses K = 100 (Paulus et al. 2021; Liu et al. 2023), and each draw costs
    about one softmax.

    References:
        Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax
        Gradient Estimator. ICLR 2021.

    Examples:
        >>> from reinmax.core import gumbel_rao_estimator, noise_layout
        >>> noise_layout(gumbel_rao_estimator(k=10), (8, 5))
        (11, 8, 5)
    """

    def noise_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (k + 1, *shape)

    return Estimator(
        "gumbel_rao",
        _gumbel_rao_forward,
        _gumbel_rao_backward,
        noise_shape,
        per_category=True,
        gumbel=_gumbel_rao_gumbel,
    )


# ---------------------------------------------------------------------------------------------
# Gapped Straight-Through
# ---------------------------------------------------------------------------------------------


def _adaptive_gap(probs: Array, hard: Array, *, xp: Namespace) -> Array:
    """``−log(1 − π̃_i)/π̃_i`` with ``π̃_i = π_i (1 − 1e−5)``; 1 for an empty row (no sample)."""
    p = select(probs, hard, xp=xp) * (1.0 - 1e-5)
    safe = xp.where(p > 0, p, xp.full_like(p, 0.5))
    return xp.where(p > 0, -xp.log1p(-safe) / safe, xp.ones_like(p))


@_memoized(lambda gap=1.0: (_gap_option(gap),))
def gapped_straight_through_estimator(gap: float | str = 1.0) -> Estimator:
    """Gapped Straight-Through, GST (Fan et al. 2022).

    Forward: ``D ~ Cat(π)``, an exact one-hot by inverse CDF from one uniform per row.
    Backward: ``∇θ = (1/τ) J(softmax(θ'/τ)) g`` with ``θ'_i = max θ`` and
    ``θ'_j = min(θ_j, max θ − gap)`` for ``j ≠ i``; ``gap`` is a number (GST-1.0 uses 1) or
    ``"p"`` for the adaptive gap ``−log(1 − π̃_i)/π̃_i``. Prefers ``τ`` of 0.5 to 1.

    References:
        Fan, Zhang, Yao, Zhang, Xu. Training Discrete Deep Generative Models via Gapped
        Straight-Through Estimator. ICML 2022.

    Examples:
        >>> import numpy as np, reinmax
        >>> from reinmax.core import gapped_straight_through_estimator
        >>> gst = gapped_straight_through_estimator(gap="p")
        >>> reinmax.estimate(gst, np.zeros((1, 4)), 0.5, rng=3)[0].sum()
        np.float64(1.0)
    """
    adaptive = gap == "p"

    def given(
        logits: Array, probs: Array, hard: Array, tau: Array, *, xp: Namespace
    ) -> tuple[Array, ...]:
        top = xp.max(logits, axis=-1, keepdims=True)
        width = _adaptive_gap(probs, hard, xp=xp) if adaptive else gap
        gapped = xp.where(hard == 1, top, xp.minimum(logits, top - width))
        return (softmax(gapped, tau, xp=xp),)

    return Estimator(
        "gapped_straight_through",
        _row_sampler(given),
        _tempered_backward,
        _row_noise_shape,
        per_category=False,
        given=given,
    )


# ---------------------------------------------------------------------------------------------
# ZGR
# ---------------------------------------------------------------------------------------------


def _zgr_given(
    logits: Array, probs: Array, hard: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, ...]:
    return (hard - probs,)


def _zgr_backward(
    probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
) -> Array:
    (centered,) = residuals  # D − π: zero at masked categories, zero in an empty row
    darn = xp.sum(grad * centered, axis=-1, keepdims=True) * centered
    return softmax_vjp(probs, grad, 0.5, 0.5 * darn, xp=xp)


def zgr_estimator() -> Estimator:
    """ZGR (Shekhovtsov 2023): the zero-temperature limit of Gumbel-Rao, in closed form.

    Forward: ``D ~ Cat(π)``, an exact one-hot by inverse CDF from one uniform per row.
    Backward: ``∇θ = ½ J(π) g + ½ (g_i − gᵀπ)(D − π)``, the average of ST at ``τ = 1`` and DARN;
    equal to ReinMax at ``τ = 1`` for every sample, and exact in expectation for quadratic
    ``f``. Takes no temperature: ``τ`` does not change it.

    References:
        Shekhovtsov. Cold Analysis of Rao-Blackwellized Straight-Through Gumbel-Softmax Gradient
        Estimator. ICML 2023.

    Examples:
        >>> from reinmax.core import noise_layout, zgr_estimator
        >>> noise_layout(zgr_estimator(), (8, 5))
        (8,)
    """
    return _ZGR


_ZGR = Estimator(
    "zgr",
    _row_sampler(_zgr_given),
    _zgr_backward,
    _row_noise_shape,
    per_category=False,
    given=_zgr_given,
)


# ---------------------------------------------------------------------------------------------
# ReinMax-Rao and ReinMax-CV (Wang & Bui 2026)
# ---------------------------------------------------------------------------------------------


def _draws_noise_shape(draws: int) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    """``(draws + 1, *shape)``: draw 0's first category holds the row's sample uniform (the rest
    of draw 0 is unused), draws 1 to ``draws`` the conditional perturbations."""

    def noise_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (draws + 1, *shape)

    return noise_shape


def _reinmax_point(
    logits: Array, probs: Array, noise: Array, weights: Array | None, *, xp: Namespace
) -> tuple[Array, Array]:
    """The sample by inverse CDF from draw 0's first uniform, and ``θ_D = log ½(π + D)``."""
    hard = _sample(logits, probs, noise[0, ..., 0], weights, xp=xp)
    return hard, _reinmax_logits(probs, hard, xp=xp)


def _gumbel_point(
    logits: Array, probs: Array, gumbels: Array, *, xp: Namespace
) -> tuple[Array, Array]:
    """:func:`_reinmax_point` from Gumbels: the sample ``argmax(θ + G⁰)`` of draw 0's row."""
    hard = _argmax_sample(logits + gumbels[0, ...], probs, xp=xp)
    return hard, _reinmax_logits(probs, hard, xp=xp)


def _reinmax_logits(probs: Array, hard: Array, *, xp: Namespace) -> Array:
    """``θ_D = log ½(π + D)``, ``−inf`` where that is 0."""
    pi_d = 0.5 * (probs + hard)
    positive = pi_d > 0
    return xp.where(positive, xp.log(xp.where(positive, pi_d, xp.ones_like(pi_d))), -xp.inf)


def _reinmax_rao_forward(
    logits: Array,
    probs: Array,
    noise: Array,
    tau: Array,
    *,
    xp: Namespace,
    weights: Array | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    hard, theta_d = _reinmax_point(logits, probs, noise, weights, xp=xp)
    conditioned = conditioned_logits(theta_d, hard, noise[1:, ...], xp=xp)
    return hard, (softmax(conditioned, tau, xp=xp),)


def _reinmax_rao_gumbel(
    logits: Array, probs: Array, gumbels: Array, tau: Array, *, xp: Namespace
) -> tuple[Array, tuple[Array, ...]]:
    hard, theta_d = _gumbel_point(logits, probs, gumbels, xp=xp)
    conditioned = conditioned_on(theta_d, hard, -gumbels[1:, ...], xp=xp)
    return hard, (softmax(conditioned, tau, xp=xp),)


def _reinmax_rao_backward(
    probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
) -> Array:
    (draws,) = residuals
    rao = xp.mean(softmax_vjp(draws, grad, xp=xp), axis=0)
    return softmax_vjp(probs, grad, -0.5, 2.0 * rao / tau, xp=xp)


@_memoized(lambda k=1: (positive_int("k", k, "the number of conditional draws"),))
def reinmax_rao_estimator(k: int = 1) -> Estimator:
    """ReinMax-Rao (Wang & Bui 2026): ReinMax's ``π_D`` seen through Gumbel-Rao's draws.

    Forward: ``D ~ Cat(π)`` as ReinMax draws it, by inverse CDF; noise of shape
    ``(k + 1, *logits.shape)``, the sample's uniform in draw 0's first category.
    Backward: ``∇θ = 2 · (1/K) Σ_k (1/τ) J(softmax(ỹᵏ/τ)) g − ½ J(π) g``, with ``ỹᵏ`` Gumbel
    perturbations of ``θ_D = log ½(π + D)`` conditioned on ``argmax = i``. Not a
    Rao-Blackwellisation of ReinMax: its mean differs from ReinMax's and from the exact gradient
    (docs/SPEC.md). Prefers ``τ`` of 1 to 1.5 (a call without ``tau`` gets 1.3); the literature
    uses K = 100.

    References:
        Wang, Bui. Beyond ReinMax: Low-Variance Gradient Estimators for Discrete Latent
        Variables. arXiv 2603.08257, 2026.

    Examples:
        >>> from reinmax.core import noise_layout, reinmax_rao_estimator
        >>> noise_layout(reinmax_rao_estimator(k=4), (2, 3))
        (5, 2, 3)
    """
    return Estimator(
        "reinmax_rao",
        _reinmax_rao_forward,
        _reinmax_rao_backward,
        _draws_noise_shape(k),
        per_category=True,
        gumbel=_reinmax_rao_gumbel,
    )


def _cv_options(k: object = 1, eta: object = 0.5, tau2: object = None) -> tuple:
    draws = positive_int("k", k, "the number of conditional draws")
    weight, temperature = _real(eta), _real(tau2)
    if weight is None or not -math.inf < weight < math.inf:
        raise ValueError(f"eta must be a finite number (the control variate's weight), got {eta!r}")
    if tau2 is not None and (temperature is None or not 0 < temperature < math.inf):
        raise ValueError(f"tau2 must be a finite number > 0 or None (use tau), got {tau2!r}")
    return draws, weight, temperature


@_memoized(_cv_options)
def reinmax_cv_estimator(k: int = 1, eta: float = 0.5, tau2: float | None = None) -> Estimator:
    """ReinMax-CV (Wang & Bui 2026): ReinMax at ``τ = 1`` plus a zero-mean control variate.

    Forward: ``D ~ Cat(π)`` by inverse CDF; noise of shape ``(k + 2, *logits.shape)``: the
    sample's uniform in draw 0's first category, draws 1 to K, then the single draw ``ỹ⁰``.
    Backward: ``∇θ = [2 J(π_D) g − ½ J(π) g] + η [(1/K) Σ_k (1/τ₂) J(softmax(ỹᵏ/τ₂)) g −
    (1/τ₂) J(softmax(ỹ⁰/τ₂)) g]`` with ``π_D = ½(π + D)`` and every ``ỹ`` a Gumbel perturbation
    of ``θ_D = log π_D`` conditioned on ``argmax = i`` (``ỹ⁰`` too: then the control variate has
    zero mean, and the estimator stays exact for quadratic ``f``). ``tau2`` is ``τ₂``; None
    takes the call's ``τ`` (1.3 for a call without one). The literature uses K = 100 and η of
    0.5 to 0.7.

    References:
        Wang, Bui. Beyond ReinMax: Low-Variance Gradient Estimators for Discrete Latent
        Variables. arXiv 2603.08257, 2026.

    Examples:
        >>> from reinmax.core import noise_layout, reinmax_cv_estimator
        >>> noise_layout(reinmax_cv_estimator(k=4, eta=0.6), (2, 3))
        (6, 2, 3)
    """

    def residuals(
        probs: Array, hard: Array, conditioned: Array, tau: Array, *, xp: Namespace
    ) -> tuple[Array, ...]:
        temperature = tau if tau2 is None else tau2
        return (0.5 * (probs + hard), softmax(conditioned, temperature, xp=xp))

    def forward(
        logits: Array,
        probs: Array,
        noise: Array,
        tau: Array,
        *,
        xp: Namespace,
        weights: Array | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        hard, theta_d = _reinmax_point(logits, probs, noise, weights, xp=xp)
        conditioned = conditioned_logits(theta_d, hard, noise[1:, ...], xp=xp)
        return hard, residuals(probs, hard, conditioned, tau, xp=xp)

    def from_gumbels(
        logits: Array, probs: Array, gumbels: Array, tau: Array, *, xp: Namespace
    ) -> tuple[Array, tuple[Array, ...]]:
        hard, theta_d = _gumbel_point(logits, probs, gumbels, xp=xp)
        conditioned = conditioned_on(theta_d, hard, -gumbels[1:, ...], xp=xp)
        return hard, residuals(probs, hard, conditioned, tau, xp=xp)

    def backward(
        probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
    ) -> Array:
        pi_d, draws = residuals
        temperature = tau if tau2 is None else tau2
        jacobians = softmax_vjp(draws, grad, xp=xp)
        control = (xp.mean(jacobians[:-1, ...], axis=0) - jacobians[-1, ...]) * (eta / temperature)
        return softmax_vjp(pi_d, grad, 2.0, softmax_vjp(probs, grad, -0.5, control, xp=xp), xp=xp)

    return Estimator(
        "reinmax_cv",
        forward,
        backward,
        _draws_noise_shape(k + 1),
        per_category=True,
        gumbel=from_gumbels,
    )


# ---------------------------------------------------------------------------------------------
# Uniform mixing
# ---------------------------------------------------------------------------------------------


def _allowed(logits: Array, *, xp: Namespace) -> Array:
    """The categories that are not masked: every logit but ``-inf`` (a NaN one included, so that
    its row stays NaN rather than losing the category)."""
    return logits != -xp.inf


def unimix_probabilities(logits: Array, probs: Array, eps: float, *, xp: Namespace) -> Array:
    """``(1 − ε) π + ε/m`` over the ``m`` categories that are not masked; masked ones stay 0.

    A NaN or ``+inf`` logit makes ``π``, hence the whole mixed row, NaN.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import unimix_probabilities
        >>> logits = np.array([[0.0, -np.inf, 0.0]])
        >>> unimix_probabilities(logits, np.array([[1.0, 0.0, 0.0]]), 0.1, xp=np)
        array([[0.95, 0.  , 0.05]])
    """
    allowed = _allowed(logits, xp=xp)
    count = xp.sum(xp.astype(allowed, probs.dtype), axis=-1, keepdims=True)
    share = eps / xp.where(count > 0, count, xp.ones_like(count))
    return xp.where(allowed, (1.0 - eps) * probs + share, xp.zeros_like(probs))


def row_total(w: Array, *, xp: Namespace) -> Array:
    """The sum along the last axis (keepdims) by a fixed pairwise tree, the same bits everywhere:
    the first half plus the second (zero-padded to the same length), until one entry is left.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import row_total
        >>> row_total(np.array([[1.0, 2.0, 3.0]]), xp=np)
        array([[6.]])
    """
    while w.shape[-1] > 1:
        half = (w.shape[-1] + 1) // 2
        rest = w[..., half:]
        if rest.shape[-1] < half:
            rest = xp.concat((rest, xp.zeros_like(w[..., :1])), axis=-1)
        w = w[..., :half] + rest
    return w


def unimix_weights(logits: Array, eps: float, *, xp: Namespace) -> Array:
    """Portable unnormalized weights of ``π_ε``: ``w_k + S/κ`` on the categories not masked.

    ``w = sampling_weights(θ)``, ``S`` its :func:`row_total` and ``κ = m (1 − ε)/ε``, so that the
    weights are ``π_ε`` times ``S/(1 − ε)``. The share is a quotient, not a product, so no
    compiler can fuse it with the sum into an FMA.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import unimix_weights
        >>> w = unimix_weights(np.array([[0.0, 0.0, -np.inf]]), 0.5, xp=np)
        >>> (w / w.sum()).round(6)
        array([[0.5, 0.5, 0. ]])
    """
    w = sampling_weights(logits, xp=xp)
    allowed = _allowed(logits, xp=xp)
    count = xp.sum(xp.astype(allowed, w.dtype), axis=-1, keepdims=True)
    kappa = xp.where(count > 0, count, xp.ones_like(count)) * ((1.0 - eps) / eps)
    share = row_total(w, xp=xp) / kappa
    return xp.where(allowed, w + share, xp.zeros_like(w))


def _mixed_logits(mixed: Array, *, xp: Namespace) -> Array:
    """``log π_ε``: ``-inf`` where it is 0, NaN where it is NaN."""
    empty = mixed == 0
    log = xp.log(xp.where(empty, xp.ones_like(mixed), mixed))
    return xp.where(empty, xp.full_like(mixed, -xp.inf), log)


def _unimix_option(estimator: Estimator, eps: object) -> tuple:
    value = _real(eps)
    if value is None or not 0 <= value < 1:
        raise ValueError(f"unimix must be a number in [0, 1), got {eps!r}")
    return estimator, value


@_memoized(_unimix_option)
def unimix(estimator: Estimator, eps: float) -> Estimator:
    """``estimator`` sampling from, and working with, ``π_ε = (1 − ε) π + ε/m`` (DreamerV3's
    uniform mixing; ``m`` the categories not masked, which stay masked).

    The estimator runs on the logits ``log π_ε``, and its gradient reaches ``θ`` through them:
    ``∇θ = (1 − ε) J(π) (v / π_ε)`` for the estimator's gradient ``v`` with respect to
    ``log π_ε``. ``soft`` stays ``softmax(θ)``. With ``ε = 0`` the public functions do not wrap
    at all, so the results are today's bit for bit.

    Examples:
        >>> import numpy as np, reinmax
        >>> from reinmax.core import reinmax_estimator, unimix
        >>> mixed = unimix(reinmax_estimator(), 0.01)
        >>> reinmax.estimate(mixed, np.array([[0.0, -np.inf, 0.0]]), rng=0)[0]  # stays masked
        array([[0., 0., 1.]])
    """

    def mixed_forward(
        run: Callable[..., tuple[Array, tuple[Array, ...]]], portable: bool
    ) -> Callable[..., tuple[Array, tuple[Array, ...]]]:
        def forward(
            logits: Array, probs: Array, noise: Array, tau: Array, *, xp: Namespace
        ) -> tuple[Array, tuple[Array, ...]]:
            mixed = unimix_probabilities(logits, probs, eps, xp=xp)
            extra = {"weights": unimix_weights(logits, eps, xp=xp)} if portable else {}
            sample, residuals = run(_mixed_logits(mixed, xp=xp), mixed, noise, tau, xp=xp, **extra)
            return sample, (mixed, *residuals)

        return forward

    # An estimator that samples by inverse CDF takes the portable weights of π_ε; one that
    # draws otherwise (Gumbel noise) has no such keyword.
    portable = "weights" in inspect.signature(estimator.forward).parameters
    forward = mixed_forward(estimator.forward, portable)
    from_gumbels = gumbel_form(estimator)

    def backward(
        probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
    ) -> Array:
        mixed, *rest = residuals
        v = estimator.backward(mixed, tuple(rest), grad, tau, xp=xp)
        # Zero where π_ε is 0 (masked); NaN where it is NaN (a broken row stays NaN).
        empty = mixed == 0
        ratio = xp.where(empty, 0.0, v / xp.where(empty, xp.ones_like(mixed), mixed))
        return softmax_vjp(probs, ratio, 1.0 - eps, xp=xp)

    def tau_backward(
        probs: Array, residuals: tuple[Array, ...], grad: Array, tau: Array, *, xp: Namespace
    ) -> Array:
        mixed, *rest = residuals
        assert estimator.tau_backward is not None  # only used when it is there
        return estimator.tau_backward(mixed, tuple(rest), grad, tau, xp=xp)

    # The sample under Gumbel noise is argmax(log π_ε + G): the wrapped estimator's Gumbel form
    # on the mixed logits. (given is dropped: gumbel_form covers the Gumbel path.)
    return estimator._replace(
        forward=forward,
        backward=backward,
        given=None,
        gumbel=None if from_gumbels is None else mixed_forward(from_gumbels, False),
        tau_backward=None if estimator.tau_backward is None else tau_backward,
    )


def gumbel_form(estimator: Estimator) -> Callable[..., tuple[Array, tuple[Array, ...]]] | None:
    """``estimator``'s forward from standard Gumbel draws rather than uniforms, or None.

    An estimator that perturbs every category has its own (:attr:`Estimator.gumbel`, noise of its
    usual shape); one that samples by inverse CDF and has :attr:`Estimator.given` samples
    ``D = onehot(argmax(θ + G))`` (the same distribution, ``Cat(π)``) from one Gumbel per
    category (noise of the logits' shape).

    Examples:
        >>> from reinmax.core import gumbel_form, reinmax_estimator
        >>> callable(gumbel_form(reinmax_estimator()))
        True
    """
    if estimator.gumbel is not None:
        return estimator.gumbel
    given = estimator.given
    if given is None:
        return None

    def forward(
        logits: Array, probs: Array, gumbels: Array, tau: Array, *, xp: Namespace
    ) -> tuple[Array, tuple[Array, ...]]:
        hard = _argmax_sample(logits + gumbels, probs, xp=xp)
        return hard, given(logits, probs, hard, tau, xp=xp)

    return forward


@_memoized(lambda estimator: (estimator,))
def with_gumbel_noise(estimator: Estimator) -> Estimator:
    """``estimator`` taking standard Gumbel draws as its noise (:func:`gumbel_form`).

    Raises:
        ValueError: ``estimator`` has no Gumbel form.

    Examples:
        >>> from reinmax.core import noise_layout, reinmax_estimator, with_gumbel_noise
        >>> noise_layout(with_gumbel_noise(reinmax_estimator()), (8, 5))  # one Gumbel per category
        (8, 5)
    """
    forward = gumbel_form(estimator)
    if forward is None:
        raise ValueError(
            f"estimator {estimator.name!r} takes only uniform noise: it has no Gumbel form (give "
            "an Estimator a `given` or a `gumbel` forward for that)"
        )
    if estimator.per_category:
        return estimator._replace(forward=forward, gumbel=forward)
    return estimator._replace(
        forward=forward, noise_shape=_category_noise_shape, per_category=True, gumbel=forward
    )


# ---------------------------------------------------------------------------------------------
# REINFORCE
# ---------------------------------------------------------------------------------------------


def score_function_backward(
    probs: Array, hard: Array, advantage: Array, grad: Array, *, xp: Namespace
) -> Array:
    """The score-function gradient ``(f(D) − b)(D − π)``, scaled by the surrogate's cotangent.

    Examples:
        >>> import numpy as np
        >>> from reinmax.core import score_function_backward
        >>> probs, hard = np.array([[0.25, 0.75]]), np.array([[1.0, 0.0]])
        >>> score_function_backward(probs, hard, np.array([2.0]), np.array([1.0]), xp=np)
        array([[ 1.5, -1.5]])
    """
    return (advantage * grad)[..., None] * (hard - probs)


# ---------------------------------------------------------------------------------------------
# The registry: every estimator by name, with its options, preferred temperature and documentation
# ---------------------------------------------------------------------------------------------


class Option(NamedTuple):
    """An option of an estimator (``k``, ``gap``, ``hard``): its default and what it means.

    Examples:
        >>> from reinmax import REGISTRY
        >>> REGISTRY["gumbel_rao"].options[0]
        Option(name='k', default=1, help='conditional draws K (the literature uses 100)')
    """

    name: str
    default: Any
    help: str


class Registration(NamedTuple):
    """An estimator as the rest of the library sees it: everything is read from here.

    Calling a registration with options (``REGISTRY["gumbel_rao"](k=10)``) builds the
    :class:`Estimator`; an unknown option is a ``TypeError`` and a bad value a ``ValueError``,
    each naming the option. The public function of every backend, the command lines, the
    benchmark, the conformance suite and the tests all take their estimators from
    :data:`REGISTRY`.

    Attributes:
        name: the public name, also the name of the function in every backend.
        build: ``build(**options) -> Estimator``.
        options: the options ``build`` takes, with their defaults.
        tau: the temperature the estimator prefers, as ``(low, high)``.
        doc: what the estimator is: the docstring of its function in every backend.
        default_tau: the temperature a call gets without one (``tau=None``).

    Examples:
        >>> from reinmax import REGISTRY
        >>> registration = REGISTRY["reinmax"]
        >>> registration.tau, registration.default_tau
        ((1.1, 1.5), 1.3)
        >>> REGISTRY["gumbel_rao"](k=10).name
        'gumbel_rao'
    """

    name: str
    build: Callable[..., Estimator]
    options: tuple[Option, ...] = ()
    tau: tuple[float, float] = (1.0, 1.0)
    doc: str = ""
    default_tau: float = 1.0

    def __call__(self, **options: Any) -> Estimator:
        known = {o.name for o in self.options}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"{self.name} got unexpected option(s) {', '.join(unknown)}; its options are "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        return self.build(**options)

    @property
    def defaults(self) -> dict[str, Any]:
        """The default value of every option."""
        return {o.name: o.default for o in self.options}


REGISTRY: dict[str, Registration] = {}
"""Every estimator by name, in registration order: the five of the paper first."""


def register_estimator(
    name: str,
    estimator: Estimator | Callable[..., Estimator],
    *,
    options: tuple[Option, ...] = (),
    tau: tuple[float, float] = (1.0, 1.0),
    doc: str | None = None,
    default_tau: float = 1.0,
) -> Registration:
    """Make ``estimator`` a first-class citizen under ``name``.

    ``estimator`` is an :class:`Estimator` (no options) or a factory ``build(**options)`` with the
    given ``options``; ``doc`` (by default the factory's docstring) says what it is;
    ``default_tau`` is the temperature of a call that passes none. From then on
    it is a function of every backend module and of ``reinmax`` itself
    (``reinmax.backends.torch.<name>``), a choice of ``reinmax conformance --estimators``, of
    every ``reinmax task ... --estimator`` and of ``reinmax bench --estimators``, and the
    conformance suite checks it in every backend and transform.

    Args:
        name: a Python identifier, the function's name.
        estimator: an :class:`Estimator`, or a factory of one taking ``options``.
        options: the factory's options, with their defaults and help.
        tau: the temperatures the estimator prefers, ``(low, high)``.
        doc: what the estimator is; by default the factory's docstring.
        default_tau: the temperature of a call without one.

    Returns:
        The :class:`Registration`, also in :data:`REGISTRY`.

    Raises:
        ValueError: a name that is not an identifier, options without a factory, or a bad
            ``default_tau``.
        TypeError: ``estimator`` is neither an Estimator nor a factory.

    Examples:
        >>> import numpy as np, reinmax
        >>> from reinmax.core import REGISTRY, register_estimator, unregister_estimator
        >>> register_estimator("my_st", REGISTRY["straight_through"]())
        Registration(name='my_st', ...)
        >>> reinmax.my_st(np.zeros((1, 3)), rng=0)[0].sum()
        np.float64(1.0)
        >>> unregister_estimator("my_st")
    """
    if not name.isidentifier():
        raise ValueError(f"name must be a Python identifier, got {name!r}")
    build = estimator if callable(estimator) and not isinstance(estimator, Estimator) else None
    if build is None:
        if not isinstance(estimator, Estimator):
            raise TypeError(f"estimator must be an Estimator or a factory, got {estimator!r}")
        if options:
            raise ValueError("options need a factory that takes them, not a built Estimator")

        def build() -> Estimator:
            return estimator

    text = doc if doc is not None else (build.__doc__ or f"The estimator {name!r}.")
    value = _real(default_tau)
    if value is None or not 0 < value < math.inf:
        raise ValueError(f"default_tau must be a finite number > 0, got {default_tau!r}")
    registration = Registration(
        name, build, tuple(options), (tau[0], tau[1]), inspect.cleandoc(text), value
    )
    REGISTRY[name] = registration
    return registration


def unregister_estimator(name: str) -> None:
    """Remove an estimator registered with :func:`register_estimator`.

    Args:
        name: the registered name.

    Raises:
        ValueError: no estimator is registered under ``name``.

    Examples:
        >>> from reinmax.core import REGISTRY, register_estimator, unregister_estimator
        >>> _ = register_estimator("copy_of_zgr", REGISTRY["zgr"]())
        >>> unregister_estimator("copy_of_zgr")
        >>> "copy_of_zgr" in REGISTRY
        False
    """
    if name not in REGISTRY:
        raise ValueError(
            f"name must be a registered estimator ({', '.join(REGISTRY)}), got {name!r}"
        )
    del REGISTRY[name]


register_estimator("straight_through", straight_through_estimator, tau=(1.0, 1.5))
_K = Option("k", 1, "conditional draws K (the literature uses 100)")
"""The option of every estimator that draws K conditional perturbations."""

register_estimator(
    "gumbel_softmax",
    gumbel_softmax_estimator,
    options=(Option("hard", True, "the one-hot sample (False: the relaxed sample ``y``)"),),
    tau=(0.3, 1.0),
)
register_estimator(
    "gumbel_rao",
    gumbel_rao_estimator,
    options=(_K,),
    tau=(0.3, 2.0),
)
register_estimator(
    "gapped_straight_through",
    gapped_straight_through_estimator,
    options=(Option("gap", 1.0, 'a number (GST-1.0) or "p" for the adaptive gap'),),
    tau=(0.5, 1.0),
)
# ReinMax and its two descendants default to τ = 1.3: the paper's range for ReinMax is 1.1 to
# 1.5, ports that kept τ = 1.0 trained worse than ST-Gumbel-Softmax, and the shipped VAE
# evaluation of all three (docs/results/vae_8x4_paper.json, vae_8x4_new.json) runs at 1.3.
register_estimator("reinmax", reinmax_estimator, tau=(1.1, 1.5), default_tau=1.3)
register_estimator("zgr", zgr_estimator)
register_estimator(
    "reinmax_rao",
    reinmax_rao_estimator,
    options=(_K,),
    tau=(1.0, 1.5),
    default_tau=1.3,
)
register_estimator(
    "reinmax_cv",
    reinmax_cv_estimator,
    options=(
        _K,
        Option("eta", 0.5, "the control variate's weight η (the literature: 0.5 to 0.7)"),
        Option("tau2", None, "the control variate's temperature τ₂ (None: the call's τ)"),
    ),
    tau=(1.0, 1.5),
    default_tau=1.3,
)


_RECIPES.update(
    {
        _STRAIGHT_THROUGH: (straight_through_estimator, ()),
        _REINMAX: (reinmax_estimator, ()),
        _ZGR: (zgr_estimator, ()),
    }
)


def noise_layout(estimator: Estimator, shape: tuple[int, ...], axis: int = -1) -> tuple[int, ...]:
    """The shape of the ``noise`` that ``estimator`` takes for logits of ``shape`` (user layout).

    One uniform per row (the batch shape) for an inverse-CDF sampler; for one that perturbs every
    category, the leading axes of its core layout (Gumbel-Rao's draws) and then ``shape``.

    Examples:
        >>> from reinmax import REGISTRY
        >>> from reinmax.core import noise_layout
        >>> noise_layout(REGISTRY["reinmax"](), (8, 5))
        (8,)
        >>> noise_layout(REGISTRY["gumbel_rao"](k=2), (8, 5), axis=0)
        (3, 8, 5)
    """
    axis %= len(shape)
    core = (*shape[:axis], *shape[axis + 1 :], shape[axis])
    noise = tuple(estimator.noise_shape(core))
    if not estimator.per_category:
        return noise
    return noise[: len(noise) - len(core)] + tuple(shape)

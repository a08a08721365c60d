"""Portable noise: the same uniforms in every framework, on any number of devices.

A counter-based generator, written once on the array API with 32-bit integer operations only
(additions that wrap, rotations, exclusive-ors), so that NumPy, PyTorch, JAX (with or without
x64) and TensorFlow compute the same bits, eagerly and compiled. The uniform of element ``j`` of
row ``r`` in stream ``s`` under key ``k`` is

    u = H(k, s, r, j),

where ``H`` is Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror, Shaw. Parallel random numbers:
as easy as 1, 2, 3. SC 2011; the generator behind JAX's keys): the stream's key is Threefry of
``(s, 0)`` under the 64-bit key ``k``, and the pair of 32-bit words of Threefry of
``(r, ⌊j/2⌋)`` under the stream's key gives elements ``j`` and ``j + 1``. A word's top 24 bits
make the uniform ``w · 2⁻²⁴`` in ``[0, 1)``, exact in float32 and float64 alike.

A *row* is one categorical variable (one position of the batch axes, in C order) and ``r`` is its
*global* index: a batch split across workers, each passing the index of its first row as
``Seed.row``, draws exactly what one process draws for the whole batch. An element is one of the
row's uniforms in the estimator's layout: one per row for inverse-CDF samplers, one per category
for Gumbel noise, ``(K + 1)·n`` for Gumbel-Rao (draw-major).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from reinmax.core import Estimator, is_bool, native_capable

__all__ = [
    "Exponential",
    "Gumbel",
    "Seed",
    "as_seed",
    "estimator_noise",
    "seed_words",
    "threefry2x32",
    "uniform_rows",
    "uniform_words",
]

Array = Any
Namespace = Any

THREEFRY_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
THREEFRY_PARITY = 0x1BD11BDA
_MASK = (1 << 32) - 1


class Seed(NamedTuple):
    """Portable noise as an estimator's ``rng``: ``rng=Seed(key, stream, row)`` or just ``rng=key``.

    Attributes:
        key: an integer in ``[0, 2**64)``, or an integer array of shape ``()`` holding one (a
            step counter traced by a compiler, a member of a ``vmap`` over seeds).
        stream: which stream of that key, in ``[0, 2**32)``: one per purpose or per step (a
            Python int or an integer array, which may be traced under a compiler).
        row: the global index of the first row of these logits, in ``[0, 2**32)``: a worker that
            holds rows ``R`` to ``R + b`` of the global batch passes ``R`` (an int or an array).

    Examples:
        Two workers, each with half of a batch, draw what one process draws for all of it:

        >>> import numpy as np, reinmax
        >>> from reinmax import Seed
        >>> logits = np.zeros((4, 3))
        >>> whole = reinmax.reinmax(logits, rng=Seed(7, stream=2))[0]
        >>> halves = [reinmax.reinmax(logits[r : r + 2], rng=Seed(7, 2, row=r))[0] for r in (0, 2)]
        >>> bool(np.array_equal(whole, np.concatenate(halves)))
        True
    """

    key: Any
    stream: Any = 0
    row: Any = 0


class Gumbel(NamedTuple):
    """Noise given as standard Gumbel draws, ``noise=Gumbel(g)``, rather than uniforms.

    ``g`` has the logits' shape (one draw per category; Gumbel-Rao, ReinMax-Rao and ReinMax-CV
    take their usual ``(K + 1, ...)`` or ``(K + 2, ...)`` layout). The sample is then
    ``onehot(argmax(θ + g))`` for every estimator (the same distribution, ``Cat(π)``, as the
    inverse CDF of uniforms), and Gumbel-Softmax relaxes ``softmax((θ + g)/τ)``. A port whose
    original drew Gumbels (``F.gumbel_softmax``, ``jax.random.gumbel``) passes them here and
    gets its original's sample exactly, with no uniform in between to lose precision.

    Attributes:
        draws: the Gumbel draws, an array of the logits' framework.

    Examples:
        >>> import numpy as np, reinmax
        >>> from reinmax.noise import Gumbel
        >>> logits, g = np.log([[0.2, 0.8]]), np.array([[1.5, 0.1]])
        >>> reinmax.reinmax(logits, noise=Gumbel(g))[0]  # argmax(logits + g)
        array([[1., 0.]])
    """

    draws: Any


class Exponential(NamedTuple):
    """Noise given as standard exponential draws ``e ~ Exp(1)``: the Gumbels ``g = −log e``
    (:class:`Gumbel`), as PyTorch's ``F.gumbel_softmax`` makes them from ``exponential_()``.

    Attributes:
        draws: the exponential draws (``≥ 0``), an array of the logits' framework.

    Examples:
        >>> import numpy as np, reinmax
        >>> from reinmax.noise import Exponential, Gumbel
        >>> logits, e = np.zeros((1, 3)), np.array([[0.5, 0.1, 2.0]])
        >>> a = reinmax.gumbel_softmax(logits, noise=Exponential(e))[0]
        >>> b = reinmax.gumbel_softmax(logits, noise=Gumbel(-np.log(e)))[0]
        >>> bool(np.array_equal(a, b)), a.argmax()
        (True, np.int64(1))
    """

    draws: Any


def as_seed(rng: object) -> Seed | None:
    """``rng`` as a :class:`Seed` when it asks for portable noise (an int or a Seed), else None.

    Args:
        rng: what a caller passed as ``rng``.

    Returns:
        The :class:`Seed`, or None for anything else (a framework RNG, None).

    Raises:
        ValueError: a key that is not an integer in ``[0, 2**64)``, or a stream or row given as
            a Python integer outside ``[0, 2**32)``.

    Examples:
        >>> from reinmax.noise import Seed, as_seed
        >>> as_seed(5), as_seed(Seed(5, stream=1)), as_seed(None)
        (Seed(key=5, stream=0, row=0), Seed(key=5, stream=1, row=0), None)
    """
    if isinstance(rng, Seed):
        seed = rng
    elif isinstance(rng, numbers.Integral) and not is_bool(rng):
        seed = Seed(_plain(rng))
    else:
        return None
    key = seed.key
    for name in ("stream", "row"):
        value = getattr(seed, name)
        if isinstance(value, numbers.Integral) and not (
            not is_bool(value) and 0 <= cast(int, value) < 2**32
        ):
            raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}")
    if isinstance(key, numbers.Integral):
        if is_bool(key) or not 0 <= cast(int, key) < 2**64:
            raise ValueError(f"seed must be a non-negative integer below 2**64, got {key!r}")
        return seed._replace(key=_plain(key))
    if getattr(key, "shape", None) is None or getattr(key, "dtype", None) is None:
        raise ValueError(f"seed must be a non-negative integer below 2**64, got {key!r}")
    # An integer array: read on the device, never on the host (it may be traced).
    if tuple(key.shape) != ():
        raise ValueError(f"an array seed must have shape (), got {tuple(key.shape)}")
    return seed


def _plain(value: Any) -> int:
    """An integer as a Python int. A Python int is kept as it is: under torch.compile a changing
    one is symbolic, and converting it would burn its value into the graph."""
    return value if type(value) is int else operator.index(value)


# ---------------------------------------------------------------------------------------------
# Threefry-2x32 on int32 arrays
# ---------------------------------------------------------------------------------------------


def _signed(value: Any) -> Any:
    """The int32 with the bits of the unsigned 32-bit ``value``.

    Arithmetic rather than bit operations, with one comparison: under torch.compile a changing
    Python int is symbolic, and a comparison that keeps holding is a guard that keeps holding.
    """
    value %= 1 << 32
    return value - (1 << 32) if value >= 1 << 31 else value


def _shift_right(x: Array, bits: int, xp: Namespace) -> Array:
    """Logical right shift of int32 bits (``>>`` on int32 is arithmetic: it copies the sign)."""
    return xp.bitwise_and(xp.bitwise_right_shift(x, bits), (1 << (32 - bits)) - 1)


def _rotate_left(x: Array, bits: int, xp: Namespace) -> Array:
    return xp.bitwise_or(xp.bitwise_left_shift(x, bits), _shift_right(x, 32 - bits, xp))


def threefry2x32(
    k0: Array, k1: Array, c0: Array, c1: Array, *, xp: Namespace
) -> tuple[Array, Array]:
    """Threefry-2x32 with 20 rounds of the counter ``(c0, c1)`` under the key ``(k0, k1)``.

    All int32 arrays (broadcastable), read as unsigned 32-bit words; returns the two words.

    Args:
        k0: the key's first word.
        k1: the key's second word.
        c0: the counter's first word.
        c1: the counter's second word.
        xp: the array namespace.

    Returns:
        The two output words, int32 arrays.

    Examples:
        Random123's known answer for the zero key and counter:

        >>> import numpy as np
        >>> from reinmax.noise import threefry2x32
        >>> zero = np.zeros(1, dtype=np.int32)
        >>> [hex(int(w[0]) & 0xFFFFFFFF) for w in threefry2x32(zero, zero, zero, zero, xp=np)]
        ['0x6b200159', '0x99ba4efe']
    """
    k2 = xp.bitwise_xor(xp.bitwise_xor(k0, k1), _signed(THREEFRY_PARITY))
    keys = (k0, k1, k2)
    x0, x1 = c0 + k0, c1 + k1
    for r in range(20):
        x0 = x0 + x1
        x1 = xp.bitwise_xor(_rotate_left(x1, THREEFRY_ROTATIONS[r % 8], xp), x0)
        if r % 4 == 3:
            i = r // 4 + 1
            x0 = x0 + keys[i % 3]
            x1 = x1 + keys[(i + 1) % 3] + i
    return x0, x1


def _int32(value: Any, xp: Namespace, device: Any) -> Array:
    """A Python int (as unsigned 32 bits) or an integer scalar array, as an int32 array of shape
    ``(1,)`` (not 0-d: NumPy computes 0-d arrays as scalars, and warns when those wrap)."""
    if isinstance(value, numbers.Integral):
        # full rather than asarray of a list: a symbolic int (torch.compile) fills a tensor as a
        # graph input instead of being burnt into the graph.
        return xp.full((1,), _signed(value), dtype=xp.int32, device=device)
    return xp.reshape(xp.astype(value, xp.int32), (1,))


def _key_words(key: Any, xp: Namespace, device: Any) -> tuple[Array, Array]:
    """The low and high 32-bit words of the key, as int32 arrays of shape ``(1,)``."""
    if isinstance(key, numbers.Integral):
        return _int32(key % (1 << 32), xp, device), _int32(key // (1 << 32), xp, device)
    if xp.iinfo(key.dtype).bits <= 32:
        # A key below 2**31 (int32 and narrower arrays hold no more): its high word is 0.
        return _int32(key, xp, device), xp.zeros((1,), dtype=xp.int32, device=device)
    # astype to int32 keeps the low 32 bits (two's complement) in every framework.
    low = xp.bitwise_and(key, _MASK)
    return _int32(low, xp, device), _int32(xp.bitwise_right_shift(key, 32), xp, device)


def seed_words(seed: Seed, *, xp: Namespace, device: Any = None) -> tuple[Array, ...]:
    """``seed`` as four int32 arrays of shape ``(1,)``: the key's two words, stream and row.

    Examples:
        >>> import numpy as np
        >>> from reinmax.noise import Seed, seed_words
        >>> [int(w[0]) for w in seed_words(Seed(2**32 + 5, stream=3, row=9), xp=np)]
        [5, 1, 3, 9]
    """
    low, high = _key_words(seed.key, xp, device)
    return low, high, _int32(seed.stream, xp, device), _int32(seed.row, xp, device)


@native_capable
def uniform_words(
    k0: Array,
    k1: Array,
    stream: Array,
    first_row: Array,
    rows: int,
    elements: int,
    dtype: Any,
    *,
    xp: Namespace,
) -> Array:
    """``(rows, elements)`` uniforms for the seed given as int32 words (:func:`seed_words`).

    A backend may compute this with a kernel of its own (``reinmax.core.register_native_kernel``):
    it must give the same bits.

    Examples:
        >>> import numpy as np
        >>> from reinmax.noise import Seed, seed_words, uniform_words
        >>> u = uniform_words(*seed_words(Seed(0), xp=np), 2, 3, np.float64, xp=np)
        >>> u.shape, bool(((u >= 0) & (u < 1)).all())
        ((2, 3), True)
    """
    zero = xp.zeros_like(stream)
    k0, k1 = threefry2x32(k0, k1, stream, zero, xp=xp)
    pairs = (elements + 1) // 2
    device = getattr(k0, "device", None)
    row = xp.reshape(xp.arange(rows, dtype=xp.int32, device=device), (rows, 1))
    pair = xp.reshape(xp.arange(pairs, dtype=xp.int32, device=device), (1, pairs))
    w0, w1 = threefry2x32(k0, k1, row + first_row, pair, xp=xp)
    words = xp.reshape(xp.stack((w0, w1), axis=-1), (rows, 2 * pairs))[:, :elements]
    return xp.astype(_shift_right(words, 8, xp), dtype) * (2.0**-24)


def uniform_rows(
    seed: Seed, rows: int, elements: int, dtype: Any, *, xp: Namespace, device: Any = None
) -> Array:
    """``(rows, elements)`` uniforms in ``[0, 1)``: element ``j`` of row ``seed.row + i``.

    Examples:
        >>> import numpy as np
        >>> from reinmax.noise import Seed, uniform_rows
        >>> a = uniform_rows(Seed(1), 4, 2, np.float64, xp=np)
        >>> b = uniform_rows(Seed(1, row=2), 2, 2, np.float64, xp=np)
        >>> bool(np.array_equal(a[2:], b))
        True
    """
    return uniform_words(*seed_words(seed, xp=xp, device=device), rows, elements, dtype, xp=xp)


def estimator_noise(
    estimator: Estimator,
    core_shape: Sequence[int],
    seed: Seed,
    dtype: Any,
    *,
    xp: Namespace,
    device: Any = None,
) -> Array:
    """``estimator``'s noise for logits of ``core_shape`` (category axis last), in the core
    layout: element ``j`` of a row is the row's ``j``-th uniform in the estimator's own order
    (the row's single uniform; its categories; its draws then categories).

    Examples:
        >>> import numpy as np
        >>> from reinmax import REGISTRY
        >>> from reinmax.noise import Seed, estimator_noise
        >>> rao = REGISTRY["gumbel_rao"](k=3)
        >>> estimator_noise(rao, (5, 4), Seed(0), np.float32, xp=np).shape
        (4, 5, 4)
    """
    # Dimensions are ints, or scalar arrays where they are known only at run time (TensorFlow).
    core_shape = tuple(core_shape)
    noise_shape = tuple(estimator.noise_shape(core_shape))
    batch = core_shape[:-1]
    rows = math.prod(batch)
    if not estimator.per_category:
        return xp.reshape(uniform_rows(seed, rows, 1, dtype, xp=xp, device=device), noise_shape)
    lead = noise_shape[: len(noise_shape) - len(core_shape)]
    n = core_shape[-1]
    per_row = math.prod(lead) * n
    u = uniform_rows(seed, rows, per_row, dtype, xp=xp, device=device)
    u = xp.reshape(u, (rows, math.prod(lead), n))
    # Draw-major within a row; the draws lead the core layout: (draws, rows, n).
    u = xp.permute_dims(u, (1, 0, 2))
    return xp.reshape(u, noise_shape)

"""TensorFlow backend: each estimator's backward is registered with ``tf.custom_gradient``.

TensorFlow is not covered by ``array-api-compat``, so this module carries the small array
namespace the core uses (:class:`Namespace`), and nothing more. Works eagerly, under
``tf.function`` and ``tf.function(jit_compile=True)``. Nested tapes give the derivative of the
backward rule (docs/SPEC.md, "Higher derivatives"); forward mode
(``tf.autodiff.ForwardAccumulator``) is not supported.
"""

from __future__ import annotations

import array
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import ml_dtypes
import numpy as np
import tensorflow as tf

from reinmax.api import array_api_float_bits, bind_module
from reinmax.backends import DriverDefaults, host_array, patched, uniforms_of_shape
from reinmax.core import gumbel, inverse_cdf_index


class Namespace:
    """The subset of the array API that ``reinmax.core`` and ``reinmax.api`` use, for TF."""

    inf = float("inf")
    float32 = tf.float32
    float64 = tf.float64
    int32 = tf.int32
    int64 = tf.int64

    @staticmethod
    def asarray(x: Any, dtype: Any = None, device: Any = None) -> tf.Tensor:
        # The hint keeps a Python float from being rounded through float32 on its way to float64.
        # A buffer (array.array: the core's tables) goes through NumPy, without a copy per item.
        x = tf.convert_to_tensor(
            np.asarray(x) if isinstance(x, memoryview | array.array) else x, dtype_hint=dtype
        )
        return x if dtype is None or x.dtype == dtype else tf.cast(x, dtype)

    @staticmethod
    def astype(x: tf.Tensor, dtype: Any) -> tf.Tensor:
        return tf.cast(x, dtype)

    @staticmethod
    def isdtype(dtype: tf.DType, kind: str) -> bool:
        dtype = tf.as_dtype(dtype)
        if kind == "bool":
            return dtype == tf.bool
        if kind != "real floating":
            raise NotImplementedError(kind)
        return dtype.is_floating and not dtype.is_complex

    @staticmethod
    def iinfo(dtype: tf.DType) -> Any:
        return np.iinfo(tf.as_dtype(dtype).as_numpy_dtype)

    @staticmethod
    def finfo(dtype: tf.DType) -> Any:
        return ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype)

    @staticmethod
    def arange(n: int, dtype: Any = None, device: Any = None) -> tf.Tensor:
        # Placed by TensorFlow beside its consumers; the device argument is the array API's.
        return tf.range(n, dtype=dtype or tf.int32)

    @staticmethod
    def zeros_like(x: tf.Tensor) -> tf.Tensor:
        return tf.zeros_like(x)

    @staticmethod
    def ones_like(x: tf.Tensor) -> tf.Tensor:
        return tf.ones_like(x)

    @staticmethod
    def full_like(x: tf.Tensor, value: float) -> tf.Tensor:
        return tf.fill(tf.shape(x), tf.constant(value, dtype=x.dtype))

    @staticmethod
    def broadcast_to(x: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
        return tf.broadcast_to(x, shape)

    @staticmethod
    def permute_dims(x: tf.Tensor, axes: Sequence[int]) -> tf.Tensor:
        return tf.transpose(x, axes)

    @staticmethod
    def where(condition: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.where(condition, x, y)

    @staticmethod
    def clip(x: tf.Tensor, min: float | None = None, max: float | None = None) -> tf.Tensor:
        # tf.constant, not tf.cast: a Python float would pass through float32 and lose
        # float64's smallest normal to underflow.
        if min is not None:
            x = tf.maximum(x, tf.constant(min, x.dtype))
        if max is not None:
            x = tf.minimum(x, tf.constant(max, x.dtype))
        return x

    @staticmethod
    def full(
        shape: Sequence[int], value: float, dtype: Any = None, device: Any = None
    ) -> tf.Tensor:
        return tf.fill(shape, tf.constant(value, dtype or tf.float32))

    @staticmethod
    def minimum(x: Any, y: Any) -> tf.Tensor:
        return tf.minimum(x, y)

    @staticmethod
    def maximum(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.maximum(x, y)

    @staticmethod
    def zeros(shape: Sequence[int], dtype: Any = None, device: Any = None) -> tf.Tensor:
        return tf.zeros(shape, dtype=dtype or tf.float32)

    @staticmethod
    def reshape(x: tf.Tensor, shape: Sequence[int | None] | tf.TensorShape) -> tf.Tensor:
        # The static shape of a graph tensor (``y.shape``) may hold one dimension unknown until
        # run time (a batch): tf.reshape reads it as -1.
        if isinstance(shape, tf.TensorShape):
            shape = shape.as_list()
        if sum(d is None for d in shape) > 1:
            raise ValueError(f"cannot reshape to {shape}: more than one dimension is unknown")
        return tf.reshape(x, [-1 if d is None else d for d in shape])

    @staticmethod
    def stack(arrays: Sequence[tf.Tensor], axis: int = 0) -> tf.Tensor:
        return tf.stack(arrays, axis=axis)

    # Integer bit operations of the portable noise (int32, wrapping).
    bitwise_and = staticmethod(tf.bitwise.bitwise_and)
    bitwise_or = staticmethod(tf.bitwise.bitwise_or)
    bitwise_xor = staticmethod(tf.bitwise.bitwise_xor)
    bitwise_left_shift = staticmethod(tf.bitwise.left_shift)
    bitwise_right_shift = staticmethod(tf.bitwise.right_shift)
    exp = staticmethod(tf.exp)
    round = staticmethod(tf.math.round)  # half to even, as the array API's round
    log = staticmethod(tf.math.log)
    log1p = staticmethod(tf.math.log1p)

    @staticmethod
    def logaddexp(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        top = tf.maximum(a, b)
        # Equal infinities would give inf - inf = NaN in the difference; their sum is the infinity.
        same = tf.equal(a, b)
        diff = tf.where(same, tf.zeros_like(a), -tf.abs(a - b))
        return tf.where(same, a, top + tf.math.log1p(tf.exp(diff)))

    @staticmethod
    def take(x: tf.Tensor, indices: tf.Tensor, axis: int | None = None) -> tf.Tensor:
        return tf.gather(x, indices, axis=0 if axis is None else axis)

    @staticmethod
    def concat(arrays: Sequence[tf.Tensor], axis: int = 0) -> tf.Tensor:
        return tf.concat(list(arrays), axis=axis)

    @staticmethod
    def max(x: tf.Tensor, axis: int | None = None, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_max(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def sum(x: tf.Tensor, axis: int | None = None, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def mean(x: tf.Tensor, axis: int | None = None, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_mean(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def count_nonzero(x: tf.Tensor, axis: int | None = None) -> tf.Tensor:
        return tf.math.count_nonzero(x, axis=axis, dtype=tf.int32)

    @staticmethod
    def cumulative_sum(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
        return tf.math.cumsum(x, axis=axis)

    @staticmethod
    def argmax(x: tf.Tensor, axis: int = -1) -> tf.Tensor:
        # tf.argmax does not promise the first index on ties; the array API does.
        n = x.shape[axis]
        top = tf.reduce_max(x, axis=axis, keepdims=True)
        positions = tf.range(n, dtype=tf.int32)
        first = tf.reduce_min(tf.where(x == top, positions, n), axis=axis)
        return tf.minimum(first, n - 1)


class TensorFlowBackend:
    name = "tensorflow"
    keyword_aliases: ClassVar[dict[str, str]] = {}
    xp = Namespace

    def owns(self, x: object) -> bool:
        return isinstance(x, (tf.Tensor, tf.Variable))

    def device(self, x: tf.Tensor) -> None:
        return None

    def shape(self, x: Any) -> tuple:
        static = x.shape.as_list() if x.shape.rank is not None else None
        if static is None:
            raise ValueError("logits must have a known number of dimensions")
        dynamic = tf.shape(x)
        return tuple(dynamic[i] if d is None else d for i, d in enumerate(static))

    def float_bits(self, dtype: Any) -> int | None:
        return array_api_float_bits(Namespace, dtype)

    def host_values(self, x: tf.Tensor) -> Any:
        # Eager tensors in host memory only: inside tf.function there are no values to read.
        if not tf.executing_eagerly() or "GPU" in (x.device or "").upper():
            return None
        return tf.cast(x, tf.float64).numpy()

    def seed_array(self, rng: object) -> bool:
        return (
            isinstance(rng, (tf.Tensor, tf.Variable))
            and rng.shape.rank == 0
            and rng.dtype.is_integer
        )

    def wants_tau_grad(self, tau: object) -> bool:
        return isinstance(tau, tf.Variable) and tau.trainable

    def uniform(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: tf.Tensor) -> tf.Tensor:
        if rng is None:
            return tf.random.uniform(shape, dtype=dtype)
        if isinstance(rng, tf.random.Generator):
            return rng.uniform(shape, dtype=dtype)
        seed = tf.convert_to_tensor(rng)
        if seed.shape != (2,) or not seed.dtype.is_integer:
            raise TypeError(
                "rng must be an int seed, a reinmax.Seed, a tf.random.Generator, an integer "
                "stateless seed of shape [2], "
                f"or None; got {type(rng).__name__} of shape {tuple(seed.shape)}"
            )
        return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)

    # reinmax.compat.gumbel_softmax: Gumbel noise from the uniform draw, and tf.nn.softmax.
    gumbel_keyword = "generator"

    def gumbel(self, rng: Any, shape: tuple[int, ...], dtype: Any, like: tf.Tensor) -> tf.Tensor:
        """``−log(−log u)`` of the uniforms :meth:`uniform` draws (TensorFlow has no Gumbel)."""
        return gumbel(self.uniform(rng, shape, dtype, like), xp=Namespace)

    def softmax(self, x: tf.Tensor, axis: int) -> tf.Tensor:
        """``tf.nn.softmax`` along ``axis``."""
        return tf.nn.softmax(x, axis=axis)

    def scalar(self, value: float, like: tf.Tensor) -> tf.Tensor:
        """``value`` as TensorFlow converts a Python number in arithmetic with ``like``."""
        return tf.constant(value, dtype=like.dtype)

    def custom_vjp(self, forward: Callable, backward: Callable, num_outputs: int) -> Callable:
        @tf.custom_gradient
        def op(x: tf.Tensor, noise: tf.Tensor, tau: tf.Tensor) -> tuple:
            outputs, residuals = forward(x, noise, tau)

            def grad(*cotangents: tf.Tensor | None) -> tuple:
                # TensorFlow does not tell whether τ's gradient is wanted: None gives it where
                # there is one (a gradient nobody asks for is dropped by the tape).
                grad_x, grad_tau = backward(noise, tau, outputs, residuals, cotangents, None)
                return grad_x, None, grad_tau

            return outputs, grad

        # tf.custom_gradient must be called positionally: keyword calls drop the gradient.
        def call(x: tf.Tensor, noise: tf.Tensor, tau: tf.Tensor) -> tuple:
            # A tf.Variable is read here, outside the custom gradient, so its gradient reaches
            # the variable through the read.
            return tuple(op(tf.convert_to_tensor(x), noise, tau))

        return call


class TensorFlowDriver(DriverDefaults):
    """Drives TensorFlow from NumPy (:class:`reinmax.backends.Driver`): eagerly,
    ``tf.function(jit_compile=True)`` as the compiler and ``tf.vectorized_map`` as vmap."""

    name = "tensorflow"
    transforms = ("eager", "compiled", "vmap")
    preferred = "eager"
    native_autodiff = True

    def asarray(self, x: Any, dtype: str) -> tf.Tensor:
        return tf.cast(tf.constant(host_array(x, dtype)), getattr(tf, dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.numpy() if hasattr(x, "numpy") else x).astype(np.float64)

    def vjp(self, fn: Callable, x: tf.Tensor, cotangents: tuple) -> tuple[tuple, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = fn(x)
            outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
        grad = tape.gradient(list(outputs), x, output_gradients=list(cotangents))
        return outputs, grad

    def grad(self, fn: Callable, x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return tape.gradient(value, x)

    def pullback(self, call: Callable, transform: str, in_axes: tuple, dtype: str) -> Callable:
        def f(x, noise, tau, g, g_p):
            (first, soft), grad = self.vjp(lambda y: call(y, noise, tau), x, (g, g_p))
            return first, soft, grad

        if transform == "compiled":
            return tf.function(f, jit_compile=True)
        if transform == "vmap":
            return tf.function(_vectorized(f, in_axes))
        return f

    def patch_sampler(self, path: str, noise: np.ndarray) -> contextlib.AbstractContextManager:
        def categorical(logits: tf.Tensor, num_samples: int, dtype: Any = None, **kw: Any):
            if num_samples != 1:
                raise ValueError(f"the patched sampler draws one sample, got {num_samples}")
            rows = tuple(logits.shape[:-1])
            u = tf.constant(np.reshape(uniforms_of_shape(noise, rows), rows), logits.dtype)
            probs = tf.nn.softmax(logits, axis=-1)
            index = inverse_cdf_index(probs, u, xp=Namespace)
            return tf.cast(index, dtype or tf.int64)[:, None]

        def uniform(shape: Any, minval=0.0, maxval=None, dtype: Any = tf.float32, **kw: Any):
            shape = tuple(int(d) for d in shape)
            values = tf.constant(np.reshape(uniforms_of_shape(noise, shape), shape), dtype)
            return minval + ((1.0 if maxval is None else maxval) - minval) * values

        targets: dict[str, Callable[..., Any]] = {
            "tensorflow.random.categorical": categorical,
            "tensorflow.random.uniform": uniform,
        }
        # tf is what users write for tensorflow.
        return patched(targets, "tensorflow." + path[3:] if path.startswith("tf.") else path)


def _vectorized(f: Callable, in_axes: tuple) -> Callable:
    """``f`` mapped over axis ``in_axes[i]`` of every argument with one (``tf.vectorized_map``
    maps axis 0 of every input, so a mapped axis elsewhere is moved to the front first)."""

    def mapped(*args):
        moved = [
            a if axis in (0, None) else tf.experimental.numpy.moveaxis(a, axis, 0)
            for a, axis in zip(args, in_axes)
        ]
        batch = tf.shape(args[0])[:1]
        stacked = [a if axis is not None else tf.zeros(batch) for a, axis in zip(moved, in_axes)]

        def one(row):
            # A row of an axis moved to the front has its other axes in their own order.
            return f(*(a if axis is None else r for a, r, axis in zip(args, row, in_axes)))

        return tf.vectorized_map(one, tuple(stacked))

    return mapped


BACKEND = TensorFlowBackend()
DRIVER = TensorFlowDriver()
_functions = bind_module(globals(), BACKEND, "Namespace")

# The functions' static types (reinmax/_names.pyi); at run time bind_module made them.
if TYPE_CHECKING:
    from reinmax._names import *  # noqa: F403

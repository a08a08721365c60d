"""PyTorch backend: each estimator's backward is a ``torch.autograd.Function``.

The Function is written in the ``forward`` + ``setup_context`` style with
``generate_vmap_rule = True``, so it works under ``torch.func.vmap`` and ``torch.func.grad``, and
it draws no random numbers (the uniforms come in as an input), so ``torch.compile`` sees a pure
function. Its ``jvp`` gives forward mode (``torch.func.jvp``, ``jacfwd``) the same rule as the
backward; a gradient computed with ``create_graph=True`` (or under ``torch.func``) can itself be
differentiated, giving the derivative of the backward rule (docs/SPEC.md, "Higher derivatives").
"""

from __future__ import annotations

import contextlib
import inspect
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

import array_api_compat.torch as compat
import numpy as np
import torch

from reinmax import core
from reinmax.api import array_api_float_bits, bind_module
from reinmax.backends import DriverDefaults, host_array, patched, uniforms_of_shape
from reinmax.core import (
    NATIVE_CAPABLE,
    inverse_cdf_index,
    inverse_cdf_target,
    register_native_kernel,
    weighted_at_or_before,
)
from reinmax.noise import THREEFRY_PARITY, THREEFRY_ROTATIONS, threefry2x32


def _namespace() -> types.ModuleType:
    """array-api-compat's torch namespace, with a cumulative sum that torch.compile traces
    quietly (array-api-compat's calls ``functools.lru_cache``-wrapped helpers, about each of which
    Dynamo warns)."""
    namespace = types.ModuleType("reinmax.backends.torch.xp", compat.__doc__)
    namespace.__dict__.update(vars(compat))

    def cumulative_sum(x: torch.Tensor, /, *, axis: int | None = None) -> torch.Tensor:
        return torch.cumsum(x, dim=-1 if axis is None else axis)

    namespace.__dict__["cumulative_sum"] = cumulative_sum
    return namespace


xp = _namespace()


class _Rule(NamedTuple):
    forward: Callable
    backward: Callable
    num_outputs: int

    def __call__(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple:
        # The setup_context style that torch.func and torch.compile need costs about 20 µs more
        # per call than the classic style, so plain eager calls take the classic Function.
        # Dynamo cannot trace a Function with a custom jvp, so the compiled one has none.
        op: Any
        if torch.compiler.is_compiling():
            op = _Op
        else:
            op = _EagerOp if _transform_level() is None else _TransformedOp
        return op.apply(x, a, b, self)[: self.num_outputs]


_transform_level = torch._C._functorch.maybe_current_level


def _forward(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rule: _Rule) -> tuple:
    outputs, residuals = rule.forward(x, a, b)
    # Residuals travel as extra outputs: torch.func requires saved tensors to be inputs or
    # outputs of the Function.
    return (*outputs, *residuals)


def _setup_context(
    ctx: Any, rule: _Rule, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, output: tuple
) -> None:
    ctx.rule = rule
    ctx.mark_non_differentiable(*output[rule.num_outputs :])
    # Unused outputs (and the residuals) get None instead of a full-size tensor of zeros.
    ctx.set_materialize_grads(False)
    # x for a gradient that is itself differentiated (see _backward), the rest for the rule.
    ctx.save_for_backward(x, a, b, *output)
    ctx.save_for_forward(a, b, *output)


def _backward(ctx: Any, *cotangents: torch.Tensor) -> tuple:
    x, noise, tau, *saved = ctx.saved_tensors
    rule = ctx.rule
    n = rule.num_outputs
    if torch.is_grad_enabled():
        # The gradient is itself differentiated (create_graph=True, torch.func): the rule runs
        # on outputs and residuals recomputed from x with differentiable ops, so that the graph
        # holds the derivative of the backward rule (docs/SPEC.md, "Higher derivatives").
        outputs, residuals = rule.forward(x, noise, tau)
    else:
        outputs, residuals = saved[:n], saved[n:]
    grad, grad_tau = rule.backward(
        noise, tau, tuple(outputs), tuple(residuals), cotangents[:n], ctx.needs_input_grad[2]
    )
    return grad, None, grad_tau, None


def _jvp(ctx: Any, x_t: torch.Tensor | None, *unused: Any) -> tuple:
    """Forward mode: the outputs' tangents ``J t`` for the rule's ``∇x = Jᵀ c``, found as the
    pullback of the (linear) map ``c ↦ Jᵀ c``, so that forward and reverse mode agree."""
    a, b, *saved = ctx.saved_tensors
    rule = ctx.rule
    n = rule.num_outputs
    outputs, residuals = tuple(saved[:n]), tuple(saved[n:])
    none = (None,) * len(residuals)
    if x_t is None:
        return (None,) * n + none

    def transposed(*cotangents: torch.Tensor) -> torch.Tensor:
        return rule.backward(a, b, outputs, residuals, cotangents, False)[0]

    pullback = torch.func.vjp(transposed, *(torch.zeros_like(o) for o in outputs))[1]
    return (*pullback(x_t), *none)


class _Op(torch.autograd.Function):
    """One Function for every rule; the rule itself is a (constant) non-tensor input."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rule: _Rule) -> tuple:
        return _forward(x, a, b, rule)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        _setup_context(ctx, inputs[3], inputs[0], inputs[1], inputs[2], output)

    backward = staticmethod(_backward)


class _TransformedOp(_Op):
    """:class:`_Op` with forward mode, for torch.func (under torch.compile, :class:`_Op`)."""

    jvp = staticmethod(_jvp)


class _EagerOp(torch.autograd.Function):
    """:class:`_Op` in the classic style, for calls outside torch.func and torch.compile."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rule: _Rule) -> tuple:
        output = _forward(x, a, b, rule)
        _setup_context(ctx, rule, x, a, b, output)
        return output

    backward = staticmethod(_backward)
    jvp = staticmethod(_jvp)


# Function.apply binds its arguments to forward's signature on every call (setup_context style);
# a precomputed signature spares it inspecting the function each time.
_Op.forward.__signature__ = inspect.signature(_Op.forward)  # type: ignore[attr-defined]


# Fused ATen kernels for the core's hottest formulas. In eager mode every generic array-API line
# is a pass over memory into a freshly allocated tensor, and on a CPU a fresh large tensor costs
# page faults several times the arithmetic. These kernels compute the same functions (tests
# compare them with the generic ones) in fewer passes, working in place on their own results.


# Above this many elements a fresh tensor costs more than the Python overhead of an in-place call.
_LARGE = 1 << 16
# ATen's CPU softmax kernels are vectorized along the category axis and slow below one vector of
# floats (n = 10, say). There, the forward is 2 to 5 times faster along the leading axis of the
# transposed rows, and the generic backward 3 to 6 times faster than ATen's.
_NARROW = 16


def _softmax(x: torch.Tensor, tau: torch.Tensor | None = None) -> torch.Tensor:
    top = None
    if tau is None:
        y = x
    else:
        # (x − max x)/τ, as in the core: the quotient of x itself overflows for a tiny τ. An all
        # -inf row keeps its -inf entries (its maximum counts as 0) and is emptied below.
        top = torch.amax(x, dim=-1, keepdim=True)
        y = (x - torch.where(top == -torch.inf, 0.0, top)).div_(tau)
    if x.shape[-1] < _NARROW and x.device.type == "cpu":
        n = y.shape[-1]
        y = torch.softmax(y.reshape(-1, n).T, dim=0).T.contiguous().view(y.shape)
    elif tau is None or y.numel() < _LARGE or not y.is_contiguous():
        y = torch.softmax(y, dim=-1)
    else:
        # In place into the shifted quotient, one large allocation instead of two; the kernel
        # writes in place correctly only into a contiguous tensor (that of a permuted x is not).
        y = torch.ops.aten._softmax.out(y, -1, False, out=y)
    # torch.softmax gives a NaN row both for an all -inf row, which the spec makes empty (zeros),
    # and for a row with a NaN or +inf logit, which must stay NaN. Either is NaN in its first
    # column: on the CPU, where there is no device to sync with, that check spares the fix.
    if y.device.type == "cpu" and not torch.isnan(y[..., :1]).any():
        return y
    if top is None:
        top = torch.amax(x, dim=-1, keepdim=True)
    return torch.where(top == -torch.inf, 0.0, y)


def _softmax_vjp(
    q: torch.Tensor,
    v: torch.Tensor,
    scale: Any = None,
    add: torch.Tensor | None = None,
    tau: torch.Tensor | None = None,
) -> torch.Tensor:
    # q ⊙ (v − qᵀv) in one kernel: the formula of the core's softmax_vjp.
    if q.shape[-1] < _NARROW and q.device.type == "cpu":
        return NATIVE_CAPABLE["softmax_vjp"](q, v, scale, add, tau, xp=xp)
    if q.shape != v.shape:
        shape = torch.broadcast_shapes(q.shape, v.shape)
        q, v = q.expand(shape), v.expand(shape)
    out = torch._softmax_backward_data(v, q, -1, q.dtype)
    if scale is not None:
        out = out.mul_(scale) if _fits(out, scale) else out * scale
    if tau is not None:
        out = out.div_(tau) if _fits(out, tau) else out / tau
    if add is not None:
        out = out.add_(add) if _fits(out, add) else out + add
    return out


def _fits(out: torch.Tensor, other: Any) -> bool:
    """Whether ``out op= other`` keeps ``out``'s shape (``other`` broadcasts into it)."""
    shape = getattr(other, "shape", ())
    return len(shape) <= out.dim() and all(
        s in (1, o) for s, o in zip(reversed(shape), reversed(out.shape))
    )


def _count_below(c: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Every entry compared, not a binary search: the prefix sum's entries are summed in
    # different trees, so in floating point it need not be sorted (a zero weight after a sum
    # can end a hair below it), and a binary search could land elsewhere than the count.
    return torch.count_nonzero(c < target, dim=-1)


def _one_hot(index: torch.Tensor, total: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write into ``out`` the one-hot rows of ``index`` for rows summing to ``total``.

    Entries off the sample are 0 (NaN in a NaN row); on it, 1 (0 in an empty row, NaN in a NaN
    row). ``total`` may be a view of ``out``: it is read before ``out`` is written.
    """
    off = total * 0
    on = torch.where(total > 0, 1.0, off)
    return out.copy_(off).scatter_(-1, index[..., None], on)


def _one_hot_sample(index: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    total = torch.sum(probs, dim=-1, keepdim=True)
    return _one_hot(index, total, torch.empty_like(probs))


# reinmax.core's exponential tables as tensors, made at import (Dynamo traces neither the tables'
# construction nor array.array), then per dtype and device once in eager mode. (A buffer is
# read in the dtype given, never converted: the float64 tables must say float64.)
_PEXP_HOST = {
    bits: tuple(torch.asarray(t, dtype=getattr(torch, f"float{bits}")) for t in tables)
    for bits, tables in core._PEXP_TABLES.items()
}
_PEXP_TABLES: dict[tuple, tuple[torch.Tensor, ...]] = {}


def _pexp_tables(bits: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    if torch.compiler.is_compiling():
        return tuple(t.to(dtype=dtype, device=device) for t in _PEXP_HOST[bits])
    key = (bits, dtype, device)
    tables = _PEXP_TABLES.get(key)
    if tables is None:
        tables = tuple(t.to(dtype=dtype, device=device) for t in _PEXP_HOST[bits])
        _PEXP_TABLES[key] = tables
    return tables


def _sampling_weights(logits: torch.Tensor) -> torch.Tensor:
    """``reinmax.core.sampling_weights``, the same operations in the same order, with the tables
    held as tensors (eager, compiled and under torch.func alike: nothing is done in place)."""
    bits = torch.finfo(logits.dtype).bits
    frac, cutoff, _ = core._PEXP_LAYOUT[bits]
    top = torch.amax(logits, dim=-1, keepdim=True)
    d = logits - torch.where(top == -torch.inf, 0.0, top)
    valid = d >= -float(cutoff)
    d = torch.where(valid, d, 0.0)
    r = torch.round(d * 2.0**frac)
    x = d - r * 2.0**-frac  # exact
    index = (-r).to(torch.int32 if bits == 32 else torch.int64)
    mantissas, powers, *fine = _pexp_tables(bits, logits.dtype, logits.device)
    whole = index // 2**frac
    w = mantissas[whole]
    for k, table in enumerate(fine, start=1):
        w = w * table[(index // 2 ** (frac - 12 * k)) % 4096]
    w = w * (1 + x) * powers[whole]
    return torch.where(valid, w, 0.0)


def _prefix_sum(w: torch.Tensor) -> torch.Tensor:
    """``reinmax.core.prefix_sum``'s additions (Hillis–Steele), into a tensor of our own."""
    n = w.shape[-1]
    c = w.clone(memory_format=torch.contiguous_format)
    step = 1
    while step < n:
        # The right side is evaluated into a temporary before it is written: no aliasing.
        c[..., step:] = c[..., step:] + c[..., : n - step]
        step *= 2
    return c


def _inverse_cdf_sample(
    probs: torch.Tensor, u: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    c = _prefix_sum(probs if weights is None else weights)
    index = _count_below(c, inverse_cdf_target(c, u, xp=xp))
    # The prefix sum is ours and done with: it becomes the one-hot. Without weights its last
    # entry is the row total as far as the one-hot needs it: positive, zero for an empty row, or
    # NaN; portable weights have no NaN, so then the total comes from probs.
    total = c[..., -1:] if weights is None else torch.sum(probs, dim=-1, keepdim=True)
    index = weighted_at_or_before(index, probs if weights is None else weights, xp=xp)
    return _one_hot(index, total, c)


def _reinmax_mixture(logits: torch.Tensor, hard: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    return _softmax(logits, tau).add_(hard).mul_(0.5)


def _eager_only(name: str, native: Callable) -> Callable:
    """``native`` in eager mode; the generic kernel under torch.compile and torch.func, and where
    autograd records the call (a gradient that is itself differentiated).

    Inductor fuses the generic kernel itself, and in-place work on a batched or traced tensor is
    what those transforms cannot always follow.
    """
    generic = NATIVE_CAPABLE[name]

    def kernel(*args: Any, **kwargs: Any) -> torch.Tensor:
        if (
            torch.compiler.is_compiling()
            or _transform_level() is not None
            or _recording(args, kwargs)
        ):
            return generic(*args, xp=xp, **kwargs)
        return native(*args, **kwargs)

    return kernel


def _recording(args: tuple, kwargs: dict) -> bool:
    """Whether autograd records a call on these arguments (a gradient being differentiated):
    then the generic kernel, whose plain ops autograd can differentiate, not the in-place one."""
    if not torch.is_grad_enabled():
        return False
    values = (*args, *kwargs.values())
    return any(isinstance(v, torch.Tensor) and v.requires_grad for v in values)


# The portable noise generator as one opaque op: eager it runs the generic integer kernel (the
# same bits as every backend), and under torch.compile it stays one node, because Inductor takes
# time exponential in the depth of a fused integer chain, and Threefry's twenty rounds are deep.
@torch.library.custom_op("reinmax::uniform_words", mutates_args=())
def _uniform_words_op(
    words: torch.Tensor, rows: int, elements: int, dtype: torch.dtype
) -> torch.Tensor:
    k0, k1, stream, first_row = (words[i : i + 1] for i in range(4))
    # The stream's key, then the (row, pair) counters in cache-sized chunks, in place: a fresh
    # full-size tensor per integer operation would cost a pass over memory each, 120 of them.
    key = threefry2x32(k0, k1, stream, torch.zeros_like(stream), xp=xp)
    pairs = (elements + 1) // 2
    out = torch.empty((rows, 2 * pairs), dtype=torch.int32, device=words.device)
    step = max(1, _CHUNK // max(pairs, 1))
    pair = torch.arange(pairs, dtype=torch.int32, device=words.device)
    for start in range(0, rows, step):
        count = min(step, rows - start)
        row = torch.arange(start, start + count, dtype=torch.int32, device=words.device)
        x0 = (row + first_row)[:, None].expand(count, pairs).contiguous()
        x1 = pair.expand(count, pairs).contiguous()
        _threefry_in_place(key, x0, x1)
        out[start : start + count].view(count, pairs, 2).copy_(torch.stack((x0, x1), dim=-1))
    bits = out[:, :elements].bitwise_right_shift(8).bitwise_and_((1 << 24) - 1)
    return bits.to(dtype).mul_(2.0**-24)


_CHUNK = 1 << 18


def _threefry_in_place(key: tuple, x0: torch.Tensor, x1: torch.Tensor) -> None:
    """Threefry-2x32-20 of the counters ``(x0, x1)`` into them (``reinmax.noise.threefry2x32``)."""
    k0, k1 = key
    k2 = k0 ^ k1 ^ THREEFRY_PARITY
    keys = (k0, k1, k2)
    x0.add_(k0)
    x1.add_(k1)
    spare = torch.empty_like(x1)
    for r in range(20):
        x0.add_(x1)
        bits = THREEFRY_ROTATIONS[r % 8]
        torch.bitwise_left_shift(x1, bits, out=spare)
        x1.bitwise_right_shift_(32 - bits).bitwise_and_((1 << bits) - 1).bitwise_or_(spare)
        x1.bitwise_xor_(x0)
        if r % 4 == 3:
            i = r // 4 + 1
            x0.add_(keys[i % 3])
            x1.add_(keys[(i + 1) % 3] + i)


@_uniform_words_op.register_fake
def _(words: torch.Tensor, rows: int, elements: int, dtype: torch.dtype) -> torch.Tensor:
    return words.new_empty((rows, elements), dtype=dtype)


def _uniform_words(k0, k1, stream, first_row, rows, elements, dtype) -> torch.Tensor:
    return _uniform_words_op(torch.cat((k0, k1, stream, first_row)), rows, elements, dtype)


register_native_kernel(xp, "uniform_words", _uniform_words)


for _name, _fn in (
    ("softmax", _softmax),
    ("softmax_vjp", _softmax_vjp),
    ("count_below", _count_below),
    ("one_hot_sample", _one_hot_sample),
    ("inverse_cdf_sample", _inverse_cdf_sample),
    ("reinmax_mixture", _reinmax_mixture),
):
    register_native_kernel(xp, _name, _eager_only(_name, _fn))
register_native_kernel(xp, "sampling_weights", _sampling_weights)


class TorchBackend:
    name = "torch"
    keyword_aliases: ClassVar[dict[str, str]] = {"dim": "axis"}
    xp = xp

    def owns(self, x: object) -> bool:
        return isinstance(x, torch.Tensor)

    def device(self, x: torch.Tensor) -> torch.device:
        return x.device

    def shape(self, x: Any) -> tuple:
        return tuple(x.shape)

    def float_bits(self, dtype: torch.dtype) -> int | None:
        return array_api_float_bits(xp, dtype)

    def host_values(self, x: torch.Tensor) -> Any:
        # Reading a CPU tensor is free in eager mode; under a compiler or torch.func it breaks
        # the trace, and on an accelerator it waits for the device.
        if x.device.type != "cpu" or torch.compiler.is_compiling() or _transform_level():
            return None
        return x.detach().to(torch.float64).numpy()

    def uniform(
        self, rng: torch.Generator | None, shape: tuple[int, ...], dtype: Any, like: torch.Tensor
    ) -> torch.Tensor:
        if rng is not None and not isinstance(rng, torch.Generator):
            raise TypeError(
                "rng must be an int seed, a reinmax.Seed, a torch.Generator or None, got "
                f"{type(rng).__name__}"
            )
        if rng is None:
            # No generator keyword at all: torch.compile cannot trace generator=None with
            # symbolic (dynamic) shapes.
            return torch.rand(shape, dtype=dtype, device=like.device)
        return torch.rand(shape, generator=rng, dtype=dtype, device=like.device)

    # reinmax.compat.gumbel_softmax: the draw, the softmax and the scalar τ exactly as
    # torch.nn.functional.gumbel_softmax computes them.
    gumbel_keyword = "generator"

    def gumbel(
        self, rng: torch.Generator | None, shape: tuple[int, ...], dtype: Any, like: torch.Tensor
    ) -> torch.Tensor:
        """Standard Gumbel noise drawn as ``F.gumbel_softmax`` draws it: ``−log`` of Exp(1)."""
        if rng is not None and not isinstance(rng, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(rng).__name__}"
            )
        draws = torch.empty(shape, dtype=dtype, device=like.device)
        # No generator keyword for None: torch.compile cannot trace it with symbolic shapes.
        draws = draws.exponential_() if rng is None else draws.exponential_(generator=rng)
        return -draws.log()

    def softmax(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """PyTorch's own softmax along ``axis``."""
        return x.softmax(axis)

    def scalar(self, value: float, like: torch.Tensor) -> torch.Tensor:
        """``value`` as PyTorch holds a Python number in arithmetic with ``like``: a CPU scalar,
        read in the compute dtype (float32 for half precision)."""
        bits = self.float_bits(like.dtype)
        dtype = torch.float32 if bits is not None and bits < 32 else like.dtype
        return torch.tensor(value, dtype=dtype)

    def seed_array(self, rng: object) -> bool:
        return (
            isinstance(rng, torch.Tensor)
            and rng.dim() == 0
            and not (rng.is_floating_point() or rng.is_complex() or rng.dtype == torch.bool)
        )

    def wants_tau_grad(self, tau: object) -> bool:
        return isinstance(tau, torch.Tensor) and tau.requires_grad and torch.is_grad_enabled()

    def custom_vjp(
        self, forward: Callable, backward: Callable, num_outputs: int
    ) -> Callable[..., tuple]:
        # A NamedTuple with a __call__, which mypy does not see as a callable: the cast says so.
        return cast(Callable[..., tuple], _Rule(forward, backward, num_outputs))


class TorchDriver(DriverDefaults):
    """Drives PyTorch from NumPy (:class:`reinmax.backends.Driver`)."""

    name = "torch"
    transforms = ("eager", "compiled", "vmap")
    preferred = "eager"
    native_autodiff = True
    # torch.compile's backend per compute dtype: inductor generates code and takes seconds per
    # graph, so it compiles float32 (the dtype people train in); float64 goes through Dynamo and
    # AOTAutograd (fullgraph tracing of the custom Function forward and backward) without codegen.
    COMPILERS: ClassVar[dict[str, str]] = {"float32": "inductor", "float64": "aot_eager"}
    RECOMPILE_LIMIT = 256

    def asarray(self, x: Any, dtype: str) -> torch.Tensor:
        # host_array copies: writable, and a 0-d input stays 0-d.
        return torch.from_numpy(host_array(x, dtype)).to(getattr(torch, dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().to(torch.float64).numpy()
        return np.asarray(x, dtype=np.float64)

    def vjp(self, fn: Callable, x: torch.Tensor, cotangents: tuple) -> tuple[tuple, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        outputs = _as_tuple(fn(x))
        (grad,) = torch.autograd.grad(outputs, (x,), cotangents)
        return tuple(o.detach() for o in outputs), grad

    def grad(self, fn: Callable, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x), (x,))
        return grad

    def pullback(self, call: Callable, transform: str, in_axes: tuple, dtype: str) -> Callable:
        if transform == "eager":
            return self._eager(call)
        if transform == "compiled":
            return self._compiled(call, self.COMPILERS.get(dtype, "inductor"))
        return self._vmapped(call, in_axes)

    def _eager(self, call: Callable) -> Callable:
        def f(x, noise, tau, g, g_p):
            (first, soft), grad = self.vjp(lambda y: call(y, noise, tau), x, (g, g_p))
            return first, soft, grad

        return f

    def _compiled(self, call: Callable, compiler: str) -> Callable:
        forward = torch.compile(call, fullgraph=True, backend=compiler)
        eager = self._eager(forward)

        def f(*args):
            # Every (estimator, dtype, shape) is a guarded recompile of one code object: a limit
            # above the default, for this call only.
            with _recompile_limit(self.RECOMPILE_LIMIT):
                return eager(*args)

        return f

    def _vmapped(self, call: Callable, in_axes: tuple) -> Callable:
        def row(x, noise, tau, g, g_p):
            (first, soft), pullback = torch.func.vjp(lambda y: call(y, noise, tau), x)
            (grad,) = pullback((g, g_p))
            return first, soft, grad

        return torch.func.vmap(row, in_dims=in_axes)

    def patch_sampler(self, path: str, noise: np.ndarray) -> contextlib.AbstractContextManager:
        def uniforms(like: torch.Tensor, shape: tuple) -> torch.Tensor:
            values = uniforms_of_shape(noise, shape)
            return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(shape)

        def multinomial(probs: torch.Tensor, num_samples: int, *args: Any, **kw: Any):
            if num_samples != 1:
                raise ValueError(f"the patched sampler draws one sample, got {num_samples}")
            u = uniforms(probs, probs.shape[:-1])
            return inverse_cdf_index(probs, u, xp=xp)[..., None]

        def rand(*size: Any, **kw: Any) -> torch.Tensor:
            shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
            return uniforms(torch.empty((), dtype=kw.get("dtype") or torch.float32), shape)

        def rand_like(like: torch.Tensor, **kw: Any) -> torch.Tensor:
            return uniforms(like, tuple(like.shape))

        targets: dict[str, Callable[..., Any]] = {
            "torch.multinomial": multinomial,
            "torch.rand": rand,
        }
        return patched({**targets, "torch.rand_like": rand_like}, path)


def _as_tuple(outputs: Any) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _recompile_limit(limit: int) -> contextlib.AbstractContextManager:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: max(limit, getattr(config, name))})


BACKEND = TorchBackend()
DRIVER = TorchDriver()
_functions = bind_module(globals(), BACKEND)

# The functions' static types (reinmax/_names.pyi); at run time bind_module made them.
if TYPE_CHECKING:
    from reinmax._names import *  # noqa: F403


# ---------------------------------------------------------------------------------------------
# The distribution: torch.distributions' OneHotCategorical, reparameterized by an estimator
# ---------------------------------------------------------------------------------------------

from reinmax.distributions import OneHotSampler  # noqa: E402


class OneHotCategorical(torch.distributions.OneHotCategorical):
    """``torch.distributions.OneHotCategorical`` whose ``rsample`` has an estimator's gradient.

    Everything but ``rsample`` is PyTorch's own (inherited): ``sample`` (no gradient),
    ``log_prob``, ``entropy``, ``mode``, ``mean``, ``support``, ``enumerate_support`` and
    ``kl_divergence`` with any ``OneHotCategorical``. ``rsample`` returns an exact one-hot sample
    whose gradient is the estimator's rule (``reinmax.reinmax`` and the other estimator
    functions; ``docs/distributions.md``). The parameters come in PyTorch's order (``probs``
    first).

    Args:
        probs: event probabilities (normalized along the last axis), or None.
        logits: event log-probabilities (unnormalized), or None: pass exactly one of the two.
        validate_args: as PyTorch's (None: PyTorch's default). Under ``torch.compile(
            fullgraph=True)`` pass False: PyTorch's argument checks cannot be traced.
        estimator: a registered estimator's name (``"reinmax"``, ``"straight_through"``,
            ``"gumbel_softmax"``, ``"gumbel_rao"``, ...) or an ``reinmax.Estimator``.
        tau: the temperature of the estimator's backward rule (a number > 0, or a tensor that
            broadcasts to the batch shape); None for the estimator function's own default.
        **options: the estimator's options (``k`` for Gumbel-Rao, ``gap`` for Gapped ST, ...),
            checked here.

    Raises:
        ValueError: an unknown estimator, a bad option value or temperature, or an option that
            would sample from another distribution (``unimix``, ``hard=False``).
        TypeError: an option the estimator does not take.

    Example:
        >>> import torch
        >>> from reinmax.backends.torch import OneHotCategorical
        >>> logits = torch.zeros(4, 3, requires_grad=True)
        >>> dist = OneHotCategorical(logits=logits, estimator="gumbel_rao", tau=0.5, k=10)
        >>> z = dist.rsample((2,), rng=0)
        >>> z.shape, dist.log_prob(z).shape
        (torch.Size([2, 4, 3]), torch.Size([2, 4]))
        >>> (z * torch.arange(3.0)).sum().backward()
        >>> logits.grad.shape
        torch.Size([4, 3])
    """

    has_rsample = True

    def __init__(
        self,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
        *,
        estimator: Any = "reinmax",
        tau: Any = None,
        **options: Any,
    ) -> None:
        self._sampler = OneHotSampler.create(estimator, tau, options)
        self._from_probs = logits is None
        super().__init__(probs, logits, validate_args)

    @property
    def estimator(self) -> Any:
        """The estimator's name (or Estimator).

        Example:
            >>> import torch
            >>> from reinmax.backends.torch import OneHotCategorical
            >>> OneHotCategorical(logits=torch.zeros(3), estimator="zgr").estimator
            'zgr'
        """
        return self._sampler.estimator

    @property
    def tau(self) -> Any:
        """The temperature (None: the estimator function's own default).

        Example:
            >>> import torch
            >>> from reinmax.backends.torch import OneHotCategorical
            >>> OneHotCategorical(logits=torch.zeros(3), tau=1.3).tau
            1.3
        """
        return self._sampler.tau

    @property
    def options(self) -> dict[str, Any]:
        """The estimator's options (a copy).

        Example:
            >>> import torch
            >>> from reinmax.backends.torch import OneHotCategorical
            >>> OneHotCategorical(logits=torch.zeros(3), estimator="gumbel_rao", k=4).options
            {'k': 4}
        """
        return dict(self._sampler.options)

    def rsample(
        self,
        sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(),  # noqa: B008 (PyTorch's)
        *,
        rng: Any = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """An exact one-hot sample of shape ``sample_shape + batch_shape + event_shape`` whose
        gradient is the estimator's rule.

        It is the estimator function's sample of the logits broadcast to that shape, with the
        same gradient (from ``probs``, the logits are ``log(probs)``, ``-inf`` where a
        probability is 0, so that a category of probability 0 is never sampled).

        Args:
            sample_shape: the leading axes of the sample.
            rng: None (PyTorch's global generator), a ``torch.Generator``, an int seed or a
                ``reinmax.Seed`` (portable noise: the same samples in every framework).
            noise: explicit uniforms in the estimator's layout for logits of the sample's shape
                (``reinmax.core.noise_layout``), instead of ``rng``.

        Returns:
            The sample, in the parameters' dtype.

        Example:
            >>> import torch
            >>> from reinmax.backends.torch import OneHotCategorical
            >>> dist = OneHotCategorical(probs=torch.tensor([0.2, 0.8, 0.0]), tau=1.3)
            >>> dist.rsample((3,), rng=7)
            tensor([[0., 1., 0.],
                    [0., 1., 0.],
                    [1., 0., 0.]])
        """
        parameter = {"probs": self.probs} if self._from_probs else {"logits": self.logits}
        return self._sampler.rsample(BACKEND, sample_shape, rng=rng, noise=noise, **parameter)

    def expand(
        self, batch_shape: torch.Size | list[int] | tuple[int, ...], _instance: Any = None
    ) -> OneHotCategorical:
        """The distribution with its batch shape expanded, estimator, ``tau`` and options kept.

        Example:
            >>> import torch
            >>> from reinmax.backends.torch import OneHotCategorical
            >>> dist = OneHotCategorical(logits=torch.zeros(3), estimator="gumbel_rao", k=4)
            >>> wide = dist.expand((5,))
            >>> wide.batch_shape, wide.estimator, wide.options
            (torch.Size([5]), 'gumbel_rao', {'k': 4})
        """
        new = self._get_checked_instance(OneHotCategorical, _instance)
        new = super().expand(batch_shape, _instance=new)
        new._sampler, new._from_probs = self._sampler, self._from_probs
        return new

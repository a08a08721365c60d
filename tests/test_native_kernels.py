"""The fused kernels a backend registers compute the same functions as the generic core kernels.

Edge cases included: masked categories, empty (all -inf) rows, NaN and +inf rows, narrow and wide
category axes, small tensors and the large ones that take the in-place paths.
"""

from __future__ import annotations

import math

import pytest

from reinmax import core

torch = pytest.importorskip("torch")

from reinmax.backends.torch import BACKEND  # noqa: E402  (registers the torch kernels)

xp = BACKEND.xp

NATIVE = {
    name: core.native_kernel(xp, name)
    for name in core.NATIVE_CAPABLE
    if core.native_kernel(xp, name) is not None
}
# (rows, n): narrow and wide category axes, tiny tensors and ones above the in-place threshold.
SHAPES = [(7, 1), (64, 8), (5000, 10), (33, 40), (2200, 32)]


def _logits(rows: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(rows, n, generator=g, dtype=dtype)
    if rows >= 5:
        if n > 1:
            x[0, 1:] = -math.inf  # one category left
            x[1, ::2] = -math.inf  # masked every other category
        x[2] = -math.inf  # empty row
        x[3, n // 2] = math.nan  # NaN row
        x[4, 0] = math.inf  # +inf row
    return x


def _same(actual: torch.Tensor, expected: torch.Tensor, exact: bool = False) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    # NaN exactly where the generic kernel has NaN, and zeros exactly where it has zeros.
    assert torch.equal(torch.isnan(actual), torch.isnan(expected))
    assert torch.equal(actual == 0, expected == 0)
    if exact:
        assert torch.equal(torch.nan_to_num(actual), torch.nan_to_num(expected))
    else:
        tol = 1e-13 if actual.dtype == torch.float64 else 2e-6
        torch.testing.assert_close(actual, expected, rtol=tol, atol=tol, equal_nan=True)


def test_torch_registers_every_native_capable_kernel() -> None:
    assert set(NATIVE) == set(core.NATIVE_CAPABLE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [None, "scalar", "row"])
def test_softmax(shape, dtype, tau) -> None:
    x = _logits(*shape, dtype)
    if tau == "scalar":
        tau = torch.tensor(1.3, dtype=dtype)
    elif tau == "row":
        tau = torch.linspace(0.5, 2.0, shape[0], dtype=dtype)[:, None]
    expected = core.NATIVE_CAPABLE["softmax"](x, tau, xp=xp)
    _same(NATIVE["softmax"](x, tau), expected)
    if shape[0] >= 5:
        assert torch.all(expected[2] == 0) and torch.all(torch.isnan(expected[3:5]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [None, 2.0, "row"])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("tau", [None, "row"])
def test_softmax_vjp(shape, dtype, scale, add, tau) -> None:
    q = core.softmax(_logits(*shape, dtype), xp=xp)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(shape, generator=g, dtype=dtype)
    if scale == "row":
        scale = torch.linspace(0.5, 2.0, shape[0], dtype=dtype)[:, None]
    if tau == "row":
        tau = torch.linspace(0.25, 3.0, shape[0], dtype=dtype)[:, None]
    extra = torch.randn(shape, generator=g, dtype=dtype) if add else None
    expected = core.NATIVE_CAPABLE["softmax_vjp"](q, v, scale, extra, tau, xp=xp)
    _same(NATIVE["softmax_vjp"](q, v, scale, extra, tau), expected)


@pytest.mark.parametrize("n", [3, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_temperatures_and_huge_logits_stay_finite(n, dtype) -> None:
    # (x − max x)/τ never overflows: x/τ first would be ±inf here and the row NaN.
    big = float(torch.finfo(dtype).max) / 2
    x = torch.full((4, n), -1.0, dtype=dtype)
    x[0, 1] = 1e9
    x[1, 0], x[1, 1:] = big, -big
    x[2, :] = -torch.inf
    x[2, 0] = -big
    x[3, 2] = 0.5
    tau = torch.tensor([[1e-30], [0.5], [1e-30], [float(torch.finfo(dtype).tiny)]], dtype=dtype)
    for kernel in (NATIVE["softmax"], core.NATIVE_CAPABLE["softmax"]):
        y = kernel(x, tau) if kernel is NATIVE["softmax"] else kernel(x, tau, xp=xp)
        assert torch.isfinite(y).all()
        assert torch.equal(y.sum(-1), torch.ones(4, dtype=dtype))
    q = core.softmax(x, tau, xp=xp)
    v = torch.randn(4, n, generator=torch.Generator().manual_seed(3), dtype=dtype)
    for grad in (
        NATIVE["softmax_vjp"](q, v, None, None, tau),
        core.NATIVE_CAPABLE["softmax_vjp"](q, v, None, None, tau, xp=xp),
    ):
        assert torch.equal(grad, torch.zeros_like(grad))  # one-hot q: J(q)v is exactly 0


def test_softmax_vjp_broadcasts_like_the_generic_kernel() -> None:
    # Gumbel-Rao's K conditional draws have a leading axis that the cotangent lacks.
    g = torch.Generator().manual_seed(2)
    q = torch.softmax(torch.randn(3, 50, 32, generator=g), dim=-1)
    v = torch.randn(50, 32, generator=g)
    expected = core.NATIVE_CAPABLE["softmax_vjp"](q, v, None, None, xp=xp)
    _same(NATIVE["softmax_vjp"](q, v), expected)
    # An ``add`` that does not fit the product's shape is broadcast, not written into.
    big = torch.randn(4, 3, 50, 32, generator=g)
    _same(
        NATIVE["softmax_vjp"](q, v, 0.5, big),
        core.NATIVE_CAPABLE["softmax_vjp"](q, v, 0.5, big, xp=xp),
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_count_below_is_exact(shape) -> None:
    c = torch.cumsum(core.softmax(_logits(*shape, torch.float32), xp=xp), dim=-1)[5:]
    g = torch.Generator().manual_seed(3)
    target = torch.rand(c.shape[0], 1, generator=g)
    # Targets exactly on the cumsum's values exercise the strict inequality.
    target[::3, 0] = c[::3, c.shape[1] // 2]
    expected = core.NATIVE_CAPABLE["count_below"](c, target, xp=xp)
    assert torch.equal(NATIVE["count_below"](c, target), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_sampling_kernels_are_exact(shape, dtype) -> None:
    probs = core.softmax(_logits(*shape, dtype), xp=xp)
    g = torch.Generator().manual_seed(4)
    u = torch.rand(shape[0], generator=g, dtype=dtype)
    u[: min(3, shape[0])] = torch.tensor([0.0, 1 - 2**-24, 0.5], dtype=dtype)[: min(3, shape[0])]
    expected = core.NATIVE_CAPABLE["inverse_cdf_sample"](probs, u, xp=xp)
    _same(NATIVE["inverse_cdf_sample"](probs, u), expected, exact=True)
    index = torch.randint(0, shape[1], (shape[0],), generator=g)
    expected = core.NATIVE_CAPABLE["one_hot_sample"](index, probs, xp=xp)
    _same(NATIVE["one_hot_sample"](index, probs), expected, exact=True)
    # Neither writes into its arguments.
    assert torch.equal(
        torch.nan_to_num(probs), torch.nan_to_num(core.softmax(_logits(*shape, dtype), xp=xp))
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_reinmax_mixture(shape, dtype) -> None:
    x = _logits(*shape, dtype)
    probs = core.softmax(x, xp=xp)
    u = torch.rand(shape[0], generator=torch.Generator().manual_seed(5), dtype=dtype)
    hard = core.inverse_cdf_sample(probs, u, xp=xp)
    tau = torch.tensor(1.3, dtype=dtype)
    x_before = x.clone()
    expected = core.NATIVE_CAPABLE["reinmax_mixture"](x, hard, tau, xp=xp)
    _same(NATIVE["reinmax_mixture"](x, hard, tau), expected)
    assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(x_before))


def test_register_native_kernel_names_the_bad_argument() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        core.register_native_kernel(xp, "logsumexp", lambda x: x)


@pytest.mark.parametrize("tau", [None, "scalar"])
def test_softmax_of_a_permuted_tensor(tau) -> None:
    # A category axis that is not the last one reaches the kernels as a permuted view, and the
    # quotient by tau keeps its strides: large enough for the in-place path, not contiguous.
    x = _logits(2200, 40, torch.float64).reshape(55, 40, 40).permute(0, 2, 1)
    assert not x.is_contiguous()
    tau = torch.tensor(1.3, dtype=torch.float64) if tau else None
    _same(NATIVE["softmax"](x, tau), core.NATIVE_CAPABLE["softmax"](x, tau, xp=xp))


@pytest.mark.parametrize("name", ["straight_through", "reinmax", "gumbel_softmax"])
def test_large_non_last_axis_matches_numpy(name) -> None:
    """End to end, at a size that takes the in-place paths, with the category axis first."""
    np = pytest.importorskip("numpy")
    from reinmax.backends import numpy as rn
    from reinmax.backends import torch as rt

    g = torch.Generator().manual_seed(6)
    x = 2 * torch.randn(300, 40, 20, generator=g, dtype=torch.float64)
    x[0] = -math.inf
    shape = {"gumbel_softmax": x.shape}.get(name, (300, 20))
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    w1, w2 = (
        torch.randn(x.shape, generator=g, dtype=torch.float64),
        torch.randn(x.shape, dtype=torch.float64),
    )
    xg = x.clone().requires_grad_()
    hard, soft = getattr(rt, name)(xg, 1.3, axis=1, noise=u)
    (grad,) = torch.autograd.grad((hard * w1).sum() + (soft * w2).sum(), xg)
    (hard_np, _), pullback = rn.vjp(getattr(rn, name), x.numpy(), 1.3, axis=1, noise=u.numpy())
    np.testing.assert_array_equal(hard.detach().numpy(), hard_np)
    np.testing.assert_allclose(
        grad.numpy(), pullback(w1.numpy(), w2.numpy()), rtol=1e-12, atol=1e-12
    )

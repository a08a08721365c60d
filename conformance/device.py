"""PyTorch on an accelerator against PyTorch on the CPU, given the same noise.

:func:`device_check` runs every registered estimator on a device and on the CPU with the same
logits, noise and cotangents, through the torch backend's driver (its eager and compiled
transforms), and compares the samples and the gradients. The same noise is given either as
explicit uniforms drawn on the CPU, or as a portable seed (``rng=Seed``) from which each side
draws its own on its own device (:mod:`reinmax.noise`: the same bits everywhere).
``reinmax bench --device cuda`` runs it before timing anything and refuses to time a device that
disagrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from reinmax.backends import load_driver
from reinmax.backends import torch as rt
from reinmax.conformance.suite import TOLERANCE
from reinmax.core import REGISTRY, noise_layout
from reinmax.noise import Seed

__all__ = [
    "COMPILED",
    "DTYPES",
    "SEED",
    "SHAPES",
    "TAU",
    "Case",
    "cases",
    "compare",
    "device_check",
    "inputs",
]

TAU = 1.3
DTYPES = ("float64", "float32")
SHAPES = ((64, 4, 8), (100, 30, 10), (2200, 40), (512, 300))
COMPILED = ("reinmax", "straight_through")
"""The estimators also checked under ``torch.compile`` (float32, the two middle shapes)."""
SEED = Seed(7, 3, 11)
"""The portable noise of the cases that draw their own: a key, a stream and a first row."""

Outputs = tuple[torch.Tensor, torch.Tensor]


class Case(NamedTuple):
    """One comparison: an estimator, a dtype name, a logits shape, whether the device side runs
    under ``torch.compile``, and whether each side draws its noise from :data:`SEED` (else both
    get the same explicit uniforms)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    compiled: bool
    portable: bool = False


def cases(compiled: bool = True) -> list[Case]:
    """Every registered estimator in float64 and float32 at each of :data:`SHAPES`, eagerly, and
    in float32 at the two middle shapes with portable noise; then, with ``compiled``,
    :data:`COMPILED` in float32 under ``torch.compile`` (the generic kernels, fused by
    Inductor), with explicit and with portable noise."""
    eager = [Case(n, d, s, False) for d in DTYPES for s in SHAPES for n in REGISTRY]
    eager += [Case(n, "float32", s, False, True) for s in SHAPES[1:3] for n in REGISTRY]
    if not compiled:
        return eager
    both = (False, True)
    return eager + [
        Case(n, "float32", s, True, p) for p in both for n in COMPILED for s in SHAPES[1:3]
    ]


def inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, noise, g, g_p)`` of ``case`` on the CPU, drawn from seed 0: the logits hold a
    one-category row, a row with every other category masked and an empty (all ``-inf``) row;
    ``g`` and ``g_p`` are the cotangents of ``hard`` and ``soft``."""
    dtype = getattr(torch, case.dtype)
    generator = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(case.shape, generator=generator, dtype=dtype)
    rows = x.view(-1, case.shape[-1])
    rows[0, 1:] = -math.inf
    rows[1, ::2] = -math.inf
    rows[2] = -math.inf
    g = torch.randn(case.shape, generator=generator, dtype=dtype)
    g_p = torch.randn(case.shape, generator=generator, dtype=dtype)
    layout = noise_layout(REGISTRY[case.name](), case.shape)
    noise = torch.rand(layout, generator=generator, dtype=dtype)
    return x, noise, g, g_p


def _call(name: str, portable: bool) -> Callable:
    """``call(x, noise, tau) -> (hard, soft)`` through the torch backend's public function;
    ``portable``: ``noise`` is not used, the function draws its own from :data:`SEED` on the
    device of ``x``."""
    fn = getattr(rt, name)
    if portable:
        return lambda x, noise, tau: fn(x, tau, rng=SEED)
    return lambda x, noise, tau: fn(x, tau, noise=noise)


def _run(case: Case, device: str, host: tuple[torch.Tensor, ...]) -> tuple[Outputs, Outputs]:
    """``(hard, grad)`` on the CPU (eager), then on ``device``, both back on the CPU."""
    driver = load_driver("torch")
    call = _call(case.name, case.portable)
    transform = "compiled" if case.compiled else "eager"
    out = []
    for where, pullback in (
        ("cpu", driver.pullback(call, "eager", (), case.dtype)),
        (device, driver.pullback(call, transform, (), case.dtype)),
    ):
        x, noise, g, g_p = (t.to(where) for t in host)
        hard, _soft, grad = pullback(x, noise, TAU, g, g_p)
        out.append((hard.detach().cpu(), grad.cpu()))
    return out[0], out[1]


def compare(x: torch.Tensor, cpu: Outputs, device: Outputs) -> dict[str, Any]:
    """Samples, gradients, NaN patterns and masked entries of the two runs, and the verdict.

    The gradient difference is in units of the dtype's eps times the largest gradient entry,
    over the rows whose samples agree, and must stay within the conformance suite's
    :data:`~reinmax.conformance.suite.TOLERANCE`; every sample must agree, and masked categories
    must get exactly zero gradient on both.
    """
    (hard_cpu, grad_cpu), (hard_dev, grad_dev) = cpu, device
    same = (hard_cpu == hard_dev).all(-1, keepdim=True)
    scale = grad_cpu.abs().max().item() or 1.0
    error = ((grad_cpu - grad_dev).abs() * same).max().item()
    error /= scale * torch.finfo(x.dtype).eps
    mismatches = int((~same).sum())
    nan_equal = torch.equal(torch.isnan(grad_cpu), torch.isnan(grad_dev))
    masked = torch.isneginf(x)
    masked_zero = bool((grad_cpu[masked] == 0).all() and (grad_dev[masked] == 0).all())
    return {
        "sample_mismatches": mismatches,
        "max_scaled_error": error,
        "nan_pattern_equal": nan_equal,
        "masked_gradient_zero": masked_zero,
        "passed": mismatches == 0 and error <= TOLERANCE and nan_equal and masked_zero,
    }


def device_check(device: str = "cuda", *, compiled: bool = True) -> list[dict[str, Any]]:
    """PyTorch on ``device`` against the CPU, given the same noise: samples and gradients.

    One record per :func:`cases` entry (``name``, ``compiled``, ``portable``, ``dtype``,
    ``shape``, then what :func:`compare` found), in float64 and float32, with masked and empty
    rows.
    """
    records = []
    for case in cases(compiled):
        host = inputs(case)
        cpu, dev = _run(case, device, host)
        record = {
            "name": case.name,
            "compiled": case.compiled,
            "portable": case.portable,
            "dtype": case.dtype,
            "shape": list(case.shape),
        }
        record.update(compare(host[0], cpu, dev))
        records.append(record)
    return records

"""The benchmark in PyTorch: its cases, memory probes, device checks and settings.

One of the framework modules of :mod:`reinmax.tasks.bench` (see its ``Framework`` protocol).
PyTorch also runs two of the baselines that exist nowhere else: ``torch.nn.functional``'s
``gumbel_softmax(hard=True)`` and the reference package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from reinmax.backends import torch as rt
from reinmax.conformance.device import device_check as _device_check
from reinmax.tasks.bench import timing
from reinmax.tasks.bench.records import TAU, Record
from reinmax.tasks.common import estimator_names

__all__ = [
    "VERSION",
    "cases",
    "check_device",
    "cuda_peak_bytes",
    "device_check",
    "dispatch_overhead_us",
    "machine",
    "memory",
    "saved_bytes",
    "settings",
]

VERSION = torch.__version__
Step = Callable[[], None]
# Every Dynamo limit on recompiles that this PyTorch has (older ones name them differently).
_LIMITS = ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit")


def settings() -> contextlib.AbstractContextManager:
    """Dynamo's recompile limits raised to 4096, for the cases' building, timing and probes.

    Every case compiles its own lambda of the same code object, once per shape: above Dynamo's
    default recompile limit it would silently fall back to eager and time that instead. The
    limits are restored on exit, so that the process's settings are the same afterwards.
    """
    config = torch._dynamo.config
    return config.patch(**{name: 4096 for name in _LIMITS if hasattr(config, name)})


def _functions(names: Sequence[str], reference: Any | None) -> dict[str, Callable]:
    """``fn(logits) -> outputs`` of each of ``names`` that PyTorch runs: the registered
    estimators in the order given, then the baselines."""
    estimators = set(estimator_names())

    def estimator(name: str) -> Callable:
        return lambda t: getattr(rt, name)(t, TAU)

    fns: dict[str, Callable] = {n: estimator(n) for n in names if n in estimators}
    if "softmax" in names:
        fns["softmax"] = lambda t: (torch.softmax(t, dim=-1),)
    if "torch_gumbel_softmax" in names:
        fns["torch_gumbel_softmax"] = lambda t: (F.gumbel_softmax(t, tau=TAU, hard=True),)
    if "reference" in names and reference is not None:
        fns["reference"] = lambda t: reference.reinmax(t, TAU)
    return fns


def cases(
    shape: tuple[int, ...],
    names: Sequence[str],
    modes: Sequence[str],
    *,
    device: str = "cpu",
    reference: Any | None = None,
) -> dict[tuple[str, str], Step]:
    """One forward and backward step per ``(name, mode)``, in float32 on ``device``: eager, or
    the function under ``torch.compile``. Each step ends with a synchronize on a GPU."""
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(shape, device=device)
    sync = torch.cuda.synchronize if x.is_cuda else lambda: None
    steps = {}
    for name, fn in _functions(names, reference).items():
        for mode in modes:
            f = torch.compile(fn) if mode == "compiled" else fn

            def step(f: Callable = f) -> None:
                out = f(x)
                loss = sum((o * w).sum() for o in out)
                torch.autograd.grad(loss, x)
                sync()

            steps[(name, mode)] = step
    return steps


def cuda_peak_bytes(step: Step) -> int:
    """Peak CUDA memory allocated during one step, above what was allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    return torch.cuda.max_memory_allocated() - before


def saved_bytes(step: Step) -> int:
    """The bytes of every tensor that one step saves for its backward pass."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


def memory(record: Record, step: Step, device: str) -> None:
    """An eager case's bytes saved for the backward pass, and on a GPU (in ``extra``) the peak
    of allocated memory during a step. A compiled case's memory is not measured."""
    if record.mode != "eager":
        return
    record.memory_bytes, record.memory_kind = saved_bytes(step), "saved_for_backward"
    if device != "cpu":
        record.extra["cuda_peak_bytes"] = cuda_peak_bytes(step)


def check_device(device: str) -> None:
    """Refuse (``RuntimeError``) a ``device`` that PyTorch does not see."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: PyTorch sees no CUDA device")


def device_check(device: str) -> list[dict[str, Any]]:
    """PyTorch on ``device`` against the CPU (:func:`reinmax.conformance.device.device_check`)."""
    return _device_check(device)


def dispatch_overhead_us(repeats: int = 200_000) -> float:
    """The top-level function's dispatch overhead on a PyTorch tensor
    (:func:`reinmax.tasks.bench.timing.dispatch_overhead_us`)."""
    return timing.dispatch_overhead_us(torch.randn(2, 3), rt._functions, repeats)


def machine() -> dict[str, Any]:
    """PyTorch's CPU threads and, if it sees one, the name of its first GPU."""
    info: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info

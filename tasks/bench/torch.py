"""The benchmark in PyTorch: steps through ``torch.autograd``, eager or under ``torch.compile``,
the memory they save, the device check, and two baselines that exist nowhere else:
``torch.nn.functional``'s ``gumbel_softmax(hard=True)`` and the reference package.

One of the framework modules of :mod:`reinmax.tasks.bench` (see :class:`.framework.Framework`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from reinmax.backends import torch as rt
from reinmax.conformance.device import device_check as _device_check
from reinmax.tasks.bench import timing
from reinmax.tasks.bench.framework import Fn, Step, native_rng
from reinmax.tasks.bench.records import TAU, Record

__all__ = ["VERSION", "arrays", "baselines", "check_device", "cuda_peak_bytes", "device_check"]
__all__ += ["dispatch_overhead_us", "machine", "memory", "native_rng", "saved_bytes"]
__all__ += ["settings", "step"]

VERSION = torch.__version__
# Every Dynamo limit on recompiles that this PyTorch has (older ones name them differently).
_LIMITS = ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit")


def settings() -> contextlib.AbstractContextManager:
    """Dynamo's recompile limits raised to 4096, for the cases' building, timing and probes.

    Every case compiles its own lambda of the same code object, once per shape: above Dynamo's
    default recompile limit it would silently fall back to eager and time that instead. The
    limits are restored on exit, so that the process's settings are the same afterwards.
    """
    config = torch._dynamo.config
    return config.patch({name: 4096 for name in _LIMITS if hasattr(config, name)})


def arrays(shape: tuple[int, ...], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (which require a gradient) and weights in float32 on ``device``."""
    x = torch.randn(shape, device=device, requires_grad=True)
    return x, torch.randn(shape, device=device)


def baselines(reference: Any | None) -> dict[str, Fn]:
    """The softmax floor, ``F.gumbel_softmax(hard=True)`` and, when loaded, the reference
    package's ReinMax."""
    fns: dict[str, Fn] = {
        "softmax": lambda t: (torch.softmax(t, dim=-1),),
        "torch_gumbel_softmax": lambda t: (F.gumbel_softmax(t, tau=TAU, hard=True),),
    }
    if reference is not None:
        fns["reference"] = lambda t: reference.reinmax(t, TAU)
    return fns


def step(fn: Fn, x: torch.Tensor, w: torch.Tensor | None, inputs: tuple, compiled: bool) -> Step:
    """``fn`` eager or under ``torch.compile``, then the gradient of the loss with
    ``torch.autograd.grad`` (with ``w`` None, ``fn`` alone under ``no_grad``); a synchronize
    ends each step on a GPU."""
    f = torch.compile(fn) if compiled else fn

    def no_sync() -> None:
        return None

    sync: Callable[[], None] = torch.cuda.synchronize if x.is_cuda else no_sync

    def forward() -> None:
        with torch.no_grad():
            f(x, *inputs)
        sync()

    def backward() -> None:
        loss = sum((o * w).sum() for o in f(x, *inputs))
        torch.autograd.grad(loss, x)
        sync()

    return forward if w is None else backward


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

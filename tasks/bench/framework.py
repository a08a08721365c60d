"""What each framework module of the benchmark offers the shared code, and the defaults.

A framework module (``reinmax.tasks.bench.torch``, ``.jax``, ``.tensorflow``) holds only its
framework's idiom: its arrays, how a function becomes a timed step (gradient, compiler,
synchronization), its baselines and what it can say of memory and of the machine. Everything
else (which cases, their noise, timing, records, goals) is shared. A module imports from here
the defaults of what it has nothing of its own for (``device_check``, ``machine``...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from reinmax.tasks.bench.records import Record

__all__ = [
    "Fn",
    "Framework",
    "Step",
    "device_check",
    "dispatch_overhead_us",
    "machine",
    "memory",
    "native_rng",
    "settings",
]

Step = Callable[[], None]
Fn = Callable[..., tuple[Any, ...]]
"""``fn(x, *inputs) -> outputs``: what a case computes from the logits and its inputs."""


class Framework(Protocol):
    """What each module of :data:`reinmax.tasks.bench.FRAMEWORKS` offers the shared code.

    Attributes:
        VERSION: the framework's version.
    """

    VERSION: str

    def settings(self) -> contextlib.AbstractContextManager:
        """The scope in which one shape's cases are built, timed and probed."""

    def arrays(self, shape: tuple[int, ...], device: str) -> tuple[Any, Any]:
        """``(x, w)``: float32 logits and the weights of the loss, both standard normal."""

    def native_rng(self) -> Any | None:
        """The ``rng`` of the framework's own generator that the backend needs (a JAX key), or
        None where the backend draws without one."""

    def baselines(self, reference: Any | None) -> Mapping[str, Fn]:
        """``fn(x) -> outputs`` of each baseline the framework runs: ``softmax`` at least."""

    def step(self, fn: Fn, x: Any, w: Any | None, inputs: tuple, compiled: bool) -> Step:
        """One call of ``fn(x, *inputs)``, eager or under the framework's compiler, finished
        (synchronized) before it returns: with ``w``, forward and backward of
        ``Σ_k sum(outputs_k · w)`` (value and gradient, so that no compiler drops an output);
        with ``w`` None, the forward pass alone."""

    def memory(self, record: Record, step: Step, device: str) -> None:
        """Fill ``record``'s memory fields with what the framework reports of ``step``."""

    def check_device(self, device: str) -> None:
        """Raise if the framework cannot be timed on ``device``."""

    def device_check(self, device: str) -> list[dict[str, Any]] | None:
        """The framework on ``device`` against the CPU (records with ``passed``), or None."""

    def dispatch_overhead_us(self, repeats: int = 200_000) -> float | None:
        """The top-level dispatch overhead on this framework's arrays, or None."""

    def machine(self) -> dict[str, Any]:
        """What the framework says of the machine."""


# ---------------------------------------------------------------------------------------------
# The defaults: a framework that has nothing of its own for one of these imports it from here.
# ---------------------------------------------------------------------------------------------


def settings() -> contextlib.AbstractContextManager:
    """Nothing to change: the cases run under the process's settings."""
    return contextlib.nullcontext()


def native_rng() -> None:
    """None: the backend draws from the framework's global generator."""
    return None


def memory(record: Record, step: Step, device: str) -> None:
    """Nothing: the framework reports no memory of a step on its own terms (None)."""
    return None


def device_check(device: str) -> None:
    """None: the framework on a device is not compared with the CPU (PyTorch's check covers the
    core)."""
    return None


def dispatch_overhead_us(repeats: int = 200_000) -> None:
    """None: the dispatch overhead is measured on PyTorch tensors only."""
    return None


def machine() -> dict[str, Any]:
    """Nothing beyond the host's own description."""
    return {}

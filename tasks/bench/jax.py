"""The benchmark in JAX: arrays, steps under ``value_and_grad`` and ``jax.jit``, XLA's memory.

One of the framework modules of :mod:`reinmax.tasks.bench` (see :class:`.framework.Framework`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from reinmax.backends import load_driver
from reinmax.tasks.bench.framework import Fn, Step, device_check, dispatch_overhead_us
from reinmax.tasks.bench.records import Record

__all__ = ["VERSION", "JaxStep", "arrays", "baselines", "check_device", "compiled_bytes"]
__all__ += ["device_check", "dispatch_overhead_us", "machine", "memory", "native_rng"]
__all__ += ["settings", "step"]

VERSION = jax.__version__


def settings() -> contextlib.AbstractContextManager:
    """The scope in which JAX's cases are built, timed and probed: float64 enabled, as in every
    task (the driver's scope), and restored on exit so that the process's settings are the same
    afterwards. The cases themselves compute in float32."""
    return load_driver("jax").float64()


def arrays(shape: tuple[int, ...], device: str) -> tuple[jax.Array, jax.Array]:
    """Logits and weights in float32 on JAX's default device."""
    x = jax.random.normal(jax.random.key(0), shape, dtype=jnp.float32)
    return x, jax.random.normal(jax.random.key(1), shape, dtype=jnp.float32)


def native_rng() -> jax.Array:
    """A PRNG key: JAX draws nothing without one."""
    return jax.random.key(2)


def baselines(reference: Any | None) -> dict[str, Fn]:
    """The softmax floor."""
    return {"softmax": lambda t: (jax.nn.softmax(t, axis=-1),)}


@dataclasses.dataclass(frozen=True)
class JaxStep:
    """A benchmark step (:data:`.framework.Step`): ``run(*args)``, finished before it returns.

    Attributes:
        run: what the step calls, ``jitted`` itself or the function it compiles.
        jitted: the function under ``jax.jit``, whose compiled program :func:`compiled_bytes`
            measures.
        args: the arguments of both.
    """

    run: Callable[..., Any]
    jitted: Any
    args: tuple

    def __call__(self) -> None:
        jax.block_until_ready(self.run(*self.args))


def step(fn: Fn, x: jax.Array, w: jax.Array | None, inputs: tuple, compiled: bool) -> JaxStep:
    """``value_and_grad`` of the loss (or ``fn`` alone), eager or under ``jax.jit``. The step
    carries the jitted function and its arguments for :func:`memory`."""
    f: Callable[..., Any] = fn
    if w is not None:
        f = jax.value_and_grad(lambda t, *a: sum(jnp.sum(o * w) for o in fn(t, *a)))
    jitted = jax.jit(f)
    return JaxStep(jitted if compiled else f, jitted, (x, *inputs))


def compiled_bytes(step: JaxStep) -> int | None:
    """The compiled program's temporary plus output bytes (``memory_analysis``), if XLA says."""
    analysis = step.jitted.lower(*step.args).compile().memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


def memory(record: Record, step: Step, device: str) -> None:
    """A compiled case's temporary plus output bytes; an eager case's is not measured."""
    if record.mode != "compiled":
        return
    if not isinstance(step, JaxStep):
        raise TypeError(f"step must be a JaxStep (made by step()), got {type(step).__name__}")
    record.memory_bytes, record.memory_kind = compiled_bytes(step), "xla_temp_plus_output"


def check_device(device: str) -> None:
    """Refuse (``RuntimeError``) to time on ``device`` unless JAX's default device is a GPU."""
    if jax.devices()[0].platform != "gpu":
        raise RuntimeError(f"--device {device}: JAX's default device is {jax.devices()[0]}")


def machine() -> dict[str, Any]:
    """JAX's default device."""
    return {"jax_device": str(jax.devices()[0])}

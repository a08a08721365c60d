"""The benchmark in JAX: its cases, memory probe, device check and settings.

One of the framework modules of :mod:`reinmax.tasks.bench` (see its ``Framework`` protocol).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from reinmax.backends import jax as rj
from reinmax.backends import load_driver
from reinmax.tasks.bench.records import TAU, Record
from reinmax.tasks.common import estimator_names

__all__ = [
    "VERSION",
    "cases",
    "check_device",
    "compiled_bytes",
    "device_check",
    "dispatch_overhead_us",
    "machine",
    "memory",
    "settings",
]

VERSION = jax.__version__
Step = Callable[[], None]


def settings() -> contextlib.AbstractContextManager:
    """The scope in which JAX's cases are built, timed and probed: float64 enabled, as in every
    task (the driver's scope), and restored on exit so that the process's settings are the same
    afterwards. The cases themselves compute in float32."""
    return load_driver("jax").float64()


def _loss(name: str, w: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``loss(logits, key)``: both outputs of estimator ``name`` (or the softmax) against ``w``."""
    if name == "softmax":
        return lambda t, k: jnp.sum(jax.nn.softmax(t, axis=-1) * w)

    def loss(t: jax.Array, k: jax.Array) -> jax.Array:
        hard, soft = getattr(rj, name)(t, TAU, rng=k)
        return jnp.sum(hard * w) + jnp.sum(soft * w)

    return loss


def cases(
    shape: tuple[int, ...],
    names: Sequence[str],
    modes: Sequence[str],
    *,
    device: str = "cpu",
    reference: Any | None = None,
) -> dict[tuple[str, str], Step]:
    """One ``value_and_grad`` step per ``(name, mode)`` of the registered estimators and the
    softmax floor, in float32 on JAX's default device: eager, or under ``jax.jit``. Each step
    carries, as ``step.jitted``, the jitted function and its arguments for :func:`memory`."""
    key = jax.random.key(0)
    x = jax.random.normal(key, shape, dtype=jnp.float32)
    w = jax.random.normal(jax.random.key(1), shape, dtype=jnp.float32)
    estimators = set(estimator_names())
    steps = {}
    for name in names:
        if name not in estimators and name != "softmax":
            continue
        for mode in modes:
            grad = jax.value_and_grad(_loss(name, w))
            if mode == "compiled":
                grad = jax.jit(grad)

            def step(grad: Callable = grad) -> None:
                jax.block_until_ready(grad(x, key))

            step.jitted = (jax.jit(jax.value_and_grad(_loss(name, w))), x, key)
            steps[(name, mode)] = step
    return steps


def compiled_bytes(step: Step) -> int | None:
    """The compiled program's temporary plus output bytes (``memory_analysis``), if XLA says."""
    fn, x, key = step.jitted
    analysis = fn.lower(x, key).compile().memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


def memory(record: Record, step: Step, device: str) -> None:
    """A compiled case's temporary plus output bytes; an eager case's is not measured."""
    if record.mode == "compiled":
        record.memory_bytes, record.memory_kind = compiled_bytes(step), "xla_temp_plus_output"


def check_device(device: str) -> None:
    """Refuse (``RuntimeError``) to time on ``device`` unless JAX's default device is a GPU."""
    if jax.devices()[0].platform != "gpu":
        raise RuntimeError(f"--device {device}: JAX's default device is {jax.devices()[0]}")


def device_check(device: str) -> None:
    """None: JAX on a device is not compared with the CPU (PyTorch's check covers the core)."""
    return None


def dispatch_overhead_us(repeats: int = 200_000) -> None:
    """None: the dispatch overhead is measured on PyTorch tensors only."""
    return None


def machine() -> dict[str, Any]:
    """JAX's default device."""
    return {"jax_device": str(jax.devices()[0])}

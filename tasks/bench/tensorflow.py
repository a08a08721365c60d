"""The benchmark in TensorFlow: its cases (CPU only; no memory is measured).

One of the framework modules of :mod:`reinmax.tasks.bench` (see its ``Framework`` protocol).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from reinmax.backends import tensorflow as rtf
from reinmax.tasks.bench.records import TAU, Record
from reinmax.tasks.common import estimator_names

__all__ = [
    "VERSION",
    "cases",
    "check_device",
    "device_check",
    "dispatch_overhead_us",
    "machine",
    "memory",
    "settings",
]

VERSION = tf.__version__
Step = Callable[[], None]


def settings() -> contextlib.AbstractContextManager:
    """Nothing to change: TensorFlow's cases run under the process's settings."""
    return contextlib.nullcontext()


def _grad(name: str, w: tf.Tensor) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """``grad(logits) -> (loss, gradient)``: both outputs of estimator ``name`` (or the
    softmax) against ``w``, through a ``GradientTape``."""

    def grad(t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(t)
            if name == "softmax":
                loss = tf.reduce_sum(tf.nn.softmax(t, axis=-1) * w)
            else:
                hard, soft = getattr(rtf, name)(t, TAU)
                loss = tf.reduce_sum(hard * w) + tf.reduce_sum(soft * w)
        return loss, tape.gradient(loss, t)

    return grad


def cases(
    shape: tuple[int, ...],
    names: Sequence[str],
    modes: Sequence[str],
    *,
    device: str = "cpu",
    reference: Any | None = None,
) -> dict[tuple[str, str], Step]:
    """One forward and backward step per ``(name, mode)`` of the registered estimators and the
    softmax floor, in float32: eager, or under ``tf.function(jit_compile=True)``."""
    x = tf.random.normal(shape)
    w = tf.random.normal(shape)
    estimators = set(estimator_names())
    steps = {}
    for name in names:
        if name not in estimators and name != "softmax":
            continue
        for mode in modes:
            grad = _grad(name, w)
            if mode == "compiled":
                grad = tf.function(grad, jit_compile=True)

            def step(grad: Callable = grad) -> None:
                _loss, g = grad(x)
                g.numpy()

            steps[(name, mode)] = step
    return steps


def memory(record: Record, step: Step, device: str) -> None:
    """Nothing: TensorFlow reports no memory of a step on its own terms (``memory_bytes`` None)."""
    return None


def check_device(device: str) -> None:
    """Refuse (``ValueError``) any device but the CPU: the benchmark times TensorFlow on it only."""
    raise ValueError(f"--device {device} covers torch and jax; drop tensorflow from --backends")


def device_check(device: str) -> None:
    """None: TensorFlow is never timed on a device."""
    return None


def dispatch_overhead_us(repeats: int = 200_000) -> None:
    """None: the dispatch overhead is measured on PyTorch tensors only."""
    return None


def machine() -> dict[str, Any]:
    """Nothing beyond the host's own description."""
    return {}

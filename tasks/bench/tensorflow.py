"""The benchmark in TensorFlow: steps through a ``GradientTape``, eager or under XLA (CPU only;
no memory is measured).

One of the framework modules of :mod:`reinmax.tasks.bench` (see :class:`.framework.Framework`).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from reinmax.tasks.bench.framework import (
    Fn,
    Step,
    device_check,
    dispatch_overhead_us,
    machine,
    memory,
    native_rng,
    settings,
)

__all__ = ["VERSION", "arrays", "baselines", "check_device", "device_check", "machine"]
__all__ += ["dispatch_overhead_us", "memory", "native_rng", "settings", "step"]

VERSION = tf.__version__


def arrays(shape: tuple[int, ...], device: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Logits and weights in float32."""
    return tf.random.normal(shape), tf.random.normal(shape)


def baselines(reference: Any | None) -> dict[str, Fn]:
    """The softmax floor."""
    return {"softmax": lambda t: (tf.nn.softmax(t, axis=-1),)}


def step(fn: Fn, x: tf.Tensor, w: tf.Tensor | None, inputs: tuple, compiled: bool) -> Step:
    """The loss and its gradient through a ``GradientTape`` (or ``fn`` alone), eager or under
    ``tf.function(jit_compile=True)``; the last result is read back, as a user would."""

    def grad(t: tf.Tensor, *a: Any) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = sum(tf.reduce_sum(o * w) for o in fn(t, *a))
        return loss, tape.gradient(loss, t)

    f = fn if w is None else grad
    if compiled:
        f = tf.function(f, jit_compile=True)

    def call() -> None:
        f(x, *inputs)[-1].numpy()

    return call


def check_device(device: str) -> None:
    """Refuse (``ValueError``) any device but the CPU: the benchmark times TensorFlow on it only."""
    raise ValueError(f"--device {device} covers torch and jax; drop tensorflow from --backends")

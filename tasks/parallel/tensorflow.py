"""Data parallelism in TensorFlow: ``tf.distribute.MirroredStrategy`` in one process.

The ``N`` replicas are ``N`` GPUs when there are that many, else ``N`` logical CPU devices, which
:func:`start` configures (``tf.config.set_logical_device_configuration``, task setup) before
TensorFlow starts; it refuses when TensorFlow has already started in this process with fewer.
Each replica computes its slice of the global batch, with its noise rows offset by its replica
id; the per-replica losses are sums over the global batch size, and Keras' optimizers sum the
replicas' gradients, so a step follows the gradient of the loss averaged over the global batch.
One worker uses the default strategy (no replicas, no copies).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from reinmax.tasks.common import import_framework
from reinmax.tasks.parallel import ParallelError, refuse_torchrun

__all__ = ["PROCESS_PER_WORKER", "TensorFlowEngine", "single", "start", "world_size"]


PROCESS_PER_WORKER = False
"""One process drives every worker (``--workers N``)."""


def world_size(workers: int) -> int:
    """``workers``: one process drives them all (refused under ``torchrun``)."""
    refuse_torchrun("tensorflow")
    return workers


@dataclass
class TensorFlowEngine:
    """A started TensorFlow engine: an :class:`reinmax.tasks.parallel.Engine`.

    Attributes:
        workers: the replicas.
        strategy: ``MirroredStrategy`` over them (the default strategy for one).
    """

    workers: int
    strategy: Any
    rank: int = 0

    @property
    def writer(self) -> bool:
        """Always: one process drives every replica."""
        return True

    def agree(self, values: Any) -> None:
        """Nothing to compare: one process."""

    def close(self) -> None:
        """Nothing to release."""


def _devices(tf: Any, workers: int) -> list[str]:
    """The names of ``workers`` devices for the replicas: GPUs, else logical CPU devices."""
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= workers:
        return [f"/gpu:{i}" for i in range(workers)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    # Once TensorFlow has started its devices are what they are: checked below.
    with contextlib.suppress(RuntimeError):
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(workers)]
        )
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < workers:
        raise ParallelError(
            f"--workers {workers}: TensorFlow had already started in this process with "
            f"{len(logical)} CPU device(s), before {workers} logical devices could be "
            "configured; run the command in a fresh process"
        )
    return [device.name for device in logical[:workers]]


def single() -> TensorFlowEngine:
    """One replica: the default strategy."""
    tf = import_framework("tensorflow")
    return TensorFlowEngine(1, tf.distribute.get_strategy())


def start(workers: int) -> TensorFlowEngine:
    """``MirroredStrategy`` over ``workers`` devices (the default strategy for one).

    Raises:
        ParallelError: TensorFlow already started in this process with fewer devices.
    """
    world_size(workers)
    if workers == 1:
        return single()
    tf = import_framework("tensorflow")
    return TensorFlowEngine(workers, tf.distribute.MirroredStrategy(_devices(tf, workers)))

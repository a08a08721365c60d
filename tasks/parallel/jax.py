"""Data parallelism in JAX: one process, a ``jax.sharding.Mesh`` over ``N`` devices.

The batch is split over the mesh's ``data`` axis and the parameters are replicated
(``NamedSharding``); one ``jax.jit`` step computes on the global arrays, and XLA partitions it
and reduces the gradients across the devices. Where there are not ``N`` accelerators, the ``N``
devices are host (CPU) devices, which XLA makes when ``XLA_FLAGS`` holds
``--xla_force_host_platform_device_count=N`` as it starts: :func:`start` adds that flag (task
setup), and refuses when JAX has already started in this process with fewer devices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from reinmax.tasks.common import import_framework
from reinmax.tasks.parallel import ParallelError, refuse_torchrun

__all__ = [
    "DATA_AXIS",
    "HOST_DEVICE_FLAG",
    "PROCESS_PER_WORKER",
    "JaxEngine",
    "host_device_flags",
    "single",
    "start",
    "world_size",
]

DATA_AXIS = "data"
HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"


PROCESS_PER_WORKER = False
"""One process drives every worker (``--workers N``)."""


def world_size(workers: int) -> int:
    """``workers``: one process drives them all (refused under ``torchrun``)."""
    refuse_torchrun("jax")
    return workers


def host_device_flags(flags: str, count: int) -> str:
    """``XLA_FLAGS`` ``flags`` changed to ask for at least ``count`` host devices."""
    parts = flags.split()
    asked = [p for p in parts if p.startswith(HOST_DEVICE_FLAG + "=")]
    counts = [int(p.split("=", 1)[1]) for p in asked if p.split("=", 1)[1].isdigit()]
    if counts and max(counts) >= count:
        return flags
    kept = [p for p in parts if p not in asked]
    return " ".join([*kept, f"{HOST_DEVICE_FLAG}={count}"])


@dataclass
class JaxEngine:
    """A started JAX engine: an :class:`reinmax.tasks.parallel.Engine`.

    Attributes:
        workers: the devices of the mesh.
        mesh: a one-axis mesh (:data:`DATA_AXIS`) over them.
    """

    workers: int
    mesh: Any
    rank: int = 0

    @property
    def writer(self) -> bool:
        """Always: one process drives every device."""
        return True

    def replicated(self) -> Any:
        """The sharding of the parameters and the optimizer state: a copy on every device."""
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec())

    def split(self, axis: int = 0) -> Any:
        """The sharding of a batch whose ``axis`` is split over the devices."""
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(*([None] * axis), DATA_AXIS))

    def agree(self, values: Any) -> None:
        """Nothing to compare: one process."""

    def close(self) -> None:
        """Nothing to release."""


def single() -> JaxEngine:
    """One device, JAX's default."""
    jax = import_framework("jax")
    from jax.sharding import Mesh

    return JaxEngine(1, Mesh(np.asarray(jax.devices()[:1]), (DATA_AXIS,)))


def start(workers: int) -> JaxEngine:
    """A mesh over ``workers`` devices: the accelerators when there are enough, else host
    devices (asked for through ``XLA_FLAGS`` before JAX starts).

    Raises:
        ParallelError: JAX already started in this process with fewer devices.
    """
    world_size(workers)
    if workers > 1:
        os.environ["XLA_FLAGS"] = host_device_flags(os.environ.get("XLA_FLAGS", ""), workers)
    jax = import_framework("jax")
    devices = jax.devices()
    if len(devices) < workers:
        devices = jax.devices("cpu")
    if len(devices) < workers:
        raise ParallelError(
            f"--workers {workers}: JAX had already started in this process with "
            f"{len(devices)} device(s), before {HOST_DEVICE_FLAG}={workers} could take effect; "
            "run the command in a fresh process (or set that flag in XLA_FLAGS before JAX "
            "starts)"
        )
    from jax.sharding import Mesh

    return JaxEngine(workers, Mesh(np.asarray(devices[:workers]), (DATA_AXIS,)))

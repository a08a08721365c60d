"""Data parallelism in PyTorch: ``torch.distributed`` and ``DistributedDataParallel``.

Each worker is a process, started by ``torchrun --nproc-per-node N -m reinmax.cli task ...``,
which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every
one of them: :func:`start` finds them and joins the process group (gloo on CPU; NCCL when every
local rank has a GPU of its own). Without them one process trains alone, on the GPU when there is
one. The framework is imported by :func:`start`, so that parsing a command line imports none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reinmax.tasks.parallel import ParallelError, disagreements

__all__ = ["PROCESS_PER_WORKER", "TorchEngine", "launched", "single", "start", "world_size"]


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or an equivalent launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


PROCESS_PER_WORKER = True
"""Each worker is a process of its own, started by ``torchrun``."""


def world_size(workers: int) -> int:
    """The processes of this run: ``torchrun``'s ``WORLD_SIZE``, else 1.

    Raises:
        ParallelError: ``workers`` is not 1: torch's workers are processes, which ``torchrun``
            starts.
    """
    if workers != 1:
        raise ParallelError(
            f"--workers {workers}: with --backend torch every worker is a process; start "
            f"them with torchrun --nproc-per-node {workers} -m reinmax.cli task ... and leave "
            "--workers at 1"
        )
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


@dataclass
class TorchEngine:
    """A started torch engine: an :class:`reinmax.tasks.parallel.Engine`.

    Attributes:
        workers: the processes of the run.
        rank: this process's rank.
        device: where this process computes (``cuda:LOCAL_RANK`` or the CPU).
        distributed: whether a process group was joined (``torchrun``).
    """

    workers: int
    rank: int
    device: Any
    distributed: bool

    @property
    def writer(self) -> bool:
        """Whether this process writes the results, checkpoints and plots (rank 0)."""
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous slice of ``count`` global items (``count`` divides evenly)."""
        size = count // self.workers
        return slice(self.rank * size, (self.rank + 1) * size)

    def wrap(self, module: Any) -> Any:
        """``module`` in ``DistributedDataParallel`` (which averages its gradients over the
        ranks in ``backward``) when distributed; else ``module`` itself."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def all_sum(self, tensor: Any) -> Any:
        """``tensor`` summed over the ranks, as a new tensor off the graph."""
        if not self.distributed:
            return tensor.detach()
        import torch.distributed as dist

        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total

    def agree(self, values: Mapping[str, Any]) -> None:
        """Raise :class:`ParallelError` on every rank unless all ranks have the same ``values``
        (gathered from every rank and compared)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.workers
        dist.all_gather_object(gathered, dict(values))
        lines = disagreements(gathered)
        if lines:
            raise ParallelError(f"every rank must run the same command: {'; '.join(lines)}")

    def close(self) -> None:
        """Leave the process group."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _device(local_rank: int, local_world: int) -> Any:
    """``cuda:local_rank`` when every local rank has a GPU of its own, else the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world:
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def single() -> TorchEngine:
    """One process alone, on the GPU when there is one, whatever the environment says."""
    return TorchEngine(1, 0, _device(0, 1), False)


def start(workers: int) -> TorchEngine:
    """Join ``torchrun``'s process group when launched by it, else train in this process alone.

    Raises:
        ParallelError: ``workers`` is not 1 (see :func:`world_size`).
    """
    world = world_size(workers)
    if not launched():
        return single()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return TorchEngine(dist.get_world_size(), dist.get_rank(), device, True)

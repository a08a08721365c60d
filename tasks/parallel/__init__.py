"""Data-parallel training for the tasks, on each framework's own engine.

One engine per framework, in its module (chosen through :data:`ENGINES`):

- PyTorch (:mod:`reinmax.tasks.parallel.torch`): ``torch.distributed`` with
  ``DistributedDataParallel``, one process per worker started by ``torchrun``; gloo on CPU,
  NCCL when every local rank has a GPU.
- JAX (:mod:`reinmax.tasks.parallel.jax`): one process, a ``jax.sharding.Mesh`` over ``N``
  devices (``N`` host devices made through ``XLA_FLAGS`` when there are not ``N``
  accelerators), the batch split over the mesh's ``data`` axis and the parameters replicated.
- TensorFlow (:mod:`reinmax.tasks.parallel.tensorflow`): one process, ``N`` logical CPU devices
  (or ``N`` GPUs) under ``tf.distribute.MirroredStrategy``.

Every engine trains on the same global batch as one process: each worker takes an equal,
contiguous slice of it, and the noise of a row depends only on the seed, the step and the row's
global index (:func:`reinmax.tasks.common.noise_seed`), so ``N`` workers draw the samples one
process draws. The gradients are averaged over the global batch, so the parameters match one
process within float rounding, and a checkpoint (host NumPy arrays) does not depend on the
worker count.

This module holds what the engines share: the command-line options, the checks that the global
batch divides among the workers, and the engine interface.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol

from reinmax.runtime import quiet

__all__ = [
    "ENGINES",
    "SEED_LIMIT",
    "Engine",
    "ParallelError",
    "add_options",
    "check_divides",
    "check_options",
    "command_values",
    "disagreements",
    "engine_module",
    "refuse_torchrun",
    "run_command",
    "seed_int",
    "single",
    "start",
    "world_size",
]

ENGINES: dict[str, str] = {
    "torch": "reinmax.tasks.parallel.torch",
    "jax": "reinmax.tasks.parallel.jax",
    "tensorflow": "reinmax.tasks.parallel.tensorflow",
}
"""The module of each backend's engine: ``world_size(workers)``, ``start(workers)``,
``single()`` and ``PROCESS_PER_WORKER`` (True: each worker is a process, started by the
framework's launcher; False: one process drives every worker, ``--workers N``)."""

SEED_LIMIT = 2**64
"""Seeds are non-negative integers below this: the key of the portable noise."""

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE")


class ParallelError(RuntimeError):
    """A data-parallel run that cannot start as asked (the message says what to do)."""


class Engine(Protocol):
    """A started engine: how many workers, which of them this process is, and the collectives
    the shared code needs. Each module's engine adds what its framework's trainers use.

    Attributes:
        workers: the data-parallel workers in all (processes times devices).
        rank: this process's rank among the processes (0 where one process drives every
            worker).
    """

    workers: int
    rank: int

    @property
    def writer(self) -> bool:
        """Whether this process writes the results, checkpoints and plots (rank 0)."""

    def agree(self, values: Mapping[str, Any]) -> None:
        """Raise :class:`ParallelError` unless every process has the same ``values``."""

    def close(self) -> None:
        """Release what :func:`start` took (a process group); nothing else."""


def engine_module(backend: str) -> ModuleType:
    """The engine module of ``backend`` (a key of :data:`ENGINES`); imports no framework."""
    if backend not in ENGINES:
        raise ValueError(f"backend must be one of {', '.join(ENGINES)}, got {backend!r}")
    return importlib.import_module(ENGINES[backend])


def world_size(backend: str, workers: int) -> int:
    """The number of workers ``backend`` will train on, from ``--workers`` and the environment
    (``torchrun``'s), without starting anything.

    Raises:
        ParallelError: ``--workers`` asks for what ``backend`` does not do (torch's processes
            come from ``torchrun``; ``torchrun`` starts processes for torch only).
    """
    return engine_module(backend).world_size(workers)


def start(backend: str, workers: int) -> Engine:
    """Start ``backend``'s engine on ``workers`` workers: task setup that may change the
    framework's process-wide settings (a process group, host devices, logical devices).

    Raises:
        ParallelError: the engine cannot give what is asked (the message says why and what to
            do), for example JAX or TensorFlow already initialized with fewer devices.
    """
    return engine_module(backend).start(workers)


def run_command(
    prog: str, args: argparse.Namespace, agreed: Sequence[str], body: Callable[[Engine], None]
) -> int:
    """Run a data-parallel command: start ``args.backend``'s engine on ``args.workers``, check
    that every rank was given the same options ``agreed`` (:func:`command_values`), run
    ``body(engine)`` (quiet outside the writing process) and close the engine. The exit status:
    0, or 2 after one line on stderr, ``prog: why``, when the engine refuses."""
    engine = None
    try:
        engine = start(args.backend, args.workers)
        engine.agree(command_values(args, agreed))
        with quiet(not engine.writer):
            body(engine)
    except ParallelError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.close()
    return 0


def single(backend: str) -> Engine:
    """``backend``'s engine with one worker in this process, set up without changing any of the
    framework's process-wide settings (what a library caller or a test gets)."""
    return engine_module(backend).single()


def refuse_torchrun(backend: str) -> None:
    """Refuse to run ``backend`` (one process driving every worker) under ``torchrun``, which
    would start copies of the same run that all write the same files."""
    launched = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    if launched and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ParallelError(
            f"torchrun starts processes for --backend torch only; --backend {backend} runs "
            "in one process: pass --workers N instead"
        )


def check_divides(total: int, workers: int, what: str) -> None:
    """Raise ``ValueError`` unless ``total`` items (a global batch) split evenly among
    ``workers``; ``what`` names them and the option that sets them."""
    if total % workers:
        raise ValueError(
            f"{what} is {total}, which does not divide among {workers} workers: choose a "
            f"multiple of {workers}"
        )


def disagreements(gathered: list[Mapping[str, Any]]) -> list[str]:
    """What differs between the processes' ``values`` (one mapping per rank): one line per
    name, with every rank's value."""
    lines = []
    for name in gathered[0]:
        values = [g.get(name) for g in gathered]
        if any(v != values[0] for v in values):
            shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            lines.append(f"{name} differs across ranks ({shown})")
    return lines


def command_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The values of the options ``names`` (attribute names) of ``args``, by their flags
    (``"--batch-size"``): what every rank of a run must agree on (:meth:`Engine.agree`)."""
    return {f"--{name.replace('_', '-')}": getattr(args, name) for name in names}


def seed_int(text: str) -> int:
    """argparse type: a seed, a non-negative integer below 2**64."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be a non-negative integer below 2**64, got {text!r}"
        )
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--seed`` and ``--workers``, the options every data-parallel task shares."""
    parser.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        help="the first seed, a non-negative integer below 2**64 (default 0); --seeds S runs "
        "SEED .. SEED+S-1",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-parallel workers (default 1). jax: a mesh over N devices, N host devices "
        "made by adding --xla_force_host_platform_device_count=N to XLA_FLAGS before JAX "
        "starts; tensorflow: MirroredStrategy over N logical CPU devices, configured before "
        "TensorFlow starts (both are process-wide task setup, refused once the framework has "
        "started with fewer). torch: leave at 1 and start N processes with torchrun "
        "--nproc-per-node N -m reinmax.cli task ...; each global batch is split evenly",
    )


def check_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, batches: Mapping[str, int]
) -> int:
    """The world size of the parsed ``args`` (``backend``, ``workers``, ``seed``, ``seeds``).

    A usage error (exit status 2, before any work) when ``--workers`` is not positive or the
    backend refuses it, when ``--seed`` plus ``--seeds`` passes 2**64, or when a global batch
    does not divide among the workers: ``batches`` maps each one's description (naming its
    option) to its size.
    """
    if args.workers < 1:
        parser.error(f"--workers must be an integer >= 1, got {args.workers}")
    if args.seed + args.seeds > SEED_LIMIT:
        parser.error(f"--seed {args.seed} with --seeds {args.seeds} passes 2**64")
    try:
        world = world_size(args.backend, args.workers)
        for what, size in batches.items():
            check_divides(size, world, what)
    except (ParallelError, ValueError) as error:
        parser.error(str(error))
    return world

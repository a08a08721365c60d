"""What every task shares: frameworks, progress, atomic results, checkpoints, plots, the gate.

Every long-running command shows progress on stderr, writes its results as JSON atomically (a
killed run never leaves half a file), checkpoints so that ``--resume`` loses nothing, and runs
behind the conformance check of its backend and estimators.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reinmax.core import ESTIMATORS as CORE_ESTIMATORS
from reinmax.runtime import (
    load_checkpoint,
    progress,
    read_json,
    save_checkpoint,
    status,
    write_json,
)

__all__ = [
    "BACKENDS",
    "ESTIMATORS",
    "import_framework",
    "load_checkpoint",
    "progress",
    "pyplot",
    "read_json",
    "require_conformance",
    "save_checkpoint",
    "save_figure",
    "status",
    "write_json",
]

BACKENDS = ("torch", "jax", "tensorflow")

# Task-level names: the five (hard, soft) estimators of the paper's comparisons, in the core's
# order. GST means GST-1.0 (gap 1); "gumbel_softmax" is the straight-through (hard) version.
ESTIMATORS = tuple(CORE_ESTIMATORS)


def fix_threads(threads: int) -> None:
    """Run every framework of this process on ``threads`` CPU threads.

    For the commands that promise bit-identical reruns (``reinmax main``): the thread count
    decides how reductions are split, hence their rounding. The environment variables reach the
    frameworks imported after this call; torch, if already imported, is set directly. XLA (JAX)
    sizes its own pool from the machine, which changes no result of these tasks on one machine.
    """
    for name in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def import_framework(backend: str) -> Any:
    """Import a framework the way every task needs it, and return its module.

    torch is imported before tensorflow in one process (importing them the other way round
    crashes some builds), and JAX runs with float64 enabled so float64 checks are real.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "tensorflow":
        with contextlib.suppress(ImportError):
            importlib.import_module("torch")
        # TensorFlow's C++ INFO lines (oneDNN notices) would bury the task's own progress.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        return importlib.import_module("tensorflow")
    module = importlib.import_module(backend)
    if backend == "jax":
        module.config.update("jax_enable_x64", True)
    return module


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path


def require_conformance(backend: str, estimators: Sequence[str]) -> None:
    """Refuse to run a task whose backend fails the quick conformance suite for ``estimators``.

    The result is cached per library version and backend (``reinmax.conformance.gate``); a
    failure raises ``RuntimeError`` naming what failed.
    """
    from reinmax.conformance import gate

    gate(backend, list(estimators))

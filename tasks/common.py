"""What every task shares: frameworks, progress, atomic results, checkpoints, plots, the gate.

Every long-running command shows progress on stderr, writes its results as JSON atomically (a
killed run never leaves half a file), checkpoints so that ``--resume`` loses nothing, and runs
behind the conformance check of its backend and estimators.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reinmax.backends import load_driver, registered
from reinmax.core import REGISTRY
from reinmax.noise import Seed
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
    "THREAD_VARIABLES",
    "choose_estimators",
    "estimator",
    "estimator_names",
    "import_framework",
    "load_checkpoint",
    "mean_and_std",
    "noise_seed",
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
"""The backends the tasks train in (NumPy has no autodiff to train with)."""


def estimator_names() -> tuple[str, ...]:
    """Every registered estimator, read when called: the choices of every task's
    ``--estimator`` (an estimator registered at run time with ``reinmax.register_estimator`` is
    one too). GST means GST-1.0 (gap 1); ``gumbel_softmax`` is the straight-through (hard) one."""
    return tuple(REGISTRY)


def choose_estimators(parser: Any, chosen: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """``--estimator`` values checked against the registry (plus a task's ``extra`` methods),
    ``["all"]`` meaning every one; a wrong name is a usage error naming the choices."""
    allowed = (*estimator_names(), *extra)
    if list(chosen) == ["all"]:
        return list(allowed)
    unknown = [name for name in chosen if name not in allowed]
    if unknown:
        parser.error(f"--estimator: {', '.join(unknown)} not among all, {', '.join(allowed)}")
    return list(chosen)


def estimator(name: str, **options: Any) -> Any:
    """The registered estimator ``name`` built with ``options`` (the unknown ones ignored, so that
    a task can pass every option it has to any estimator)."""
    registration = REGISTRY[name]
    known = {o.name for o in registration.options}
    return registration(**{k: v for k, v in options.items() if k in known})


PURPOSES = 16
"""Streams per step of :func:`noise_seed`: the purposes a task draws noise for (train, test...)."""


def noise_seed(seed: int, purpose: int, step: Any, row: Any = 0) -> Seed:
    """The portable noise (:mod:`reinmax.noise`) of one step of a task, as an estimator's ``rng``.

    Stream ``purpose + PURPOSES · step`` of key ``seed``, so that training, evaluation and
    analysis never share draws and every step draws fresh ones; ``row`` is the global index of
    the step's first row (a data-parallel worker's offset), so that the batch split across
    workers draws what one process draws. ``step`` and ``row`` may be integer arrays (traced in
    a compiled step, which then does not recompile per step).
    """
    if not 0 <= purpose < PURPOSES:
        raise ValueError(f"purpose must be in [0, {PURPOSES}), got {purpose!r}")
    return Seed(seed, purpose + PURPOSES * step, row)


ESTIMATORS = estimator_names()
"""The estimators registered when the tasks were imported (use :func:`estimator_names`)."""


THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
"""The environment variables that set the frameworks' CPU threads (:func:`fix_threads`)."""


def fix_threads(threads: int) -> None:
    """Run every framework of this process on ``threads`` CPU threads.

    For the commands that promise bit-identical reruns (``reinmax main``): the thread count
    decides how reductions are split, hence their rounding. The environment variables reach the
    frameworks imported after this call; torch, if already imported, is set directly. XLA (JAX)
    sizes its own pool from the machine, which changes no result of these tasks on one machine.
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def import_framework(backend: str) -> Any:
    """Import a backend's framework the way every task needs it, and return its module.

    The backend's driver imports it in a safe order (torch before tensorflow), and float64 is
    turned on for the task's process (JAX computes in float32 otherwise): this is task setup.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    load_driver(backend).enable_float64()
    (registration,) = [r for r in registered() if r.name == backend]
    return sys.modules[registration.framework]


def mean_and_std(values: Any) -> tuple[Any, Any]:
    """The mean of a result over seeds (the first axis of ``values``) and its sample standard
    deviation (``ddof=1``; 0 for one seed): what every task's "mean ± std" and seed band report.

    Floats for one number per seed; arrays for curves (one row per seed).
    """
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    mean = array.mean(axis=0)
    std = array.std(axis=0, ddof=1) if len(array) > 1 else np.zeros_like(mean)
    return (float(mean), float(std)) if mean.ndim == 0 else (mean, std)


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

"""What every task shares: frameworks, progress, atomic results, checkpoints, plots, the gate.

Every long-running command shows progress on stderr, writes its results as JSON atomically (a
killed run never leaves half a file), checkpoints so that ``--resume`` loses nothing, and runs
behind the conformance check of its backend and estimators.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from reinmax.core import ESTIMATORS as CORE_ESTIMATORS

T = TypeVar("T")

BACKENDS = ("torch", "jax", "tensorflow")

# Task-level names: the five (hard, soft) estimators of the paper's comparisons, in the core's
# order. GST means GST-1.0 (gap 1); "gumbel_softmax" is the straight-through (hard) version.
ESTIMATORS = tuple(CORE_ESTIMATORS)


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
        return importlib.import_module("tensorflow")
    module = importlib.import_module(backend)
    if backend == "jax":
        module.config.update("jax_enable_x64", True)
    return module


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
    """A progress bar on stderr (tqdm), or plain iteration when tqdm is missing."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield from iterable
        return
    yield from tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON atomically: to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    _atomic_write_bytes(path, text.encode())
    return path


def save_checkpoint(path: str | os.PathLike[str], state: Any) -> Path:
    """Pickle ``state`` (NumPy arrays, numbers, dicts) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> Any | None:
    """The state saved at ``path``, or None if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    with path.open("rb") as f:
        return pickle.load(f)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; results are meant to be read like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    for attr in ("tolist", "item"):
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


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

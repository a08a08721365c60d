"""Shared fixtures: the ``backend`` parameter and the summary of observed errors.

``REINMAX_BACKENDS`` (a comma list of numpy, torch, jax, tensorflow) chooses the backends; by
default every installed one runs and a missing framework is skipped with ``importorskip``.
Frameworks are imported in a safe order (torch before tensorflow) with JAX's float64 enabled.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable

import pytest

ALL_BACKENDS = ("numpy", "torch", "jax", "tensorflow")


def selected_backends() -> list[str]:
    """The backends chosen by ``REINMAX_BACKENDS`` (all of them when it is unset or empty)."""
    raw = os.environ.get("REINMAX_BACKENDS", "").strip()
    if not raw:
        return list(ALL_BACKENDS)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ALL_BACKENDS))
    if unknown:
        raise pytest.UsageError(
            f"REINMAX_BACKENDS names unknown backends {unknown}; choose from {ALL_BACKENDS}"
        )
    return names


def import_backend(name: str) -> None:
    """Import ``name``'s framework (skipping the test if it is missing) and its reinmax backend."""
    if name == "tensorflow":
        # Importing torch after tensorflow crashes some builds; keep the safe order.
        with contextlib.suppress(ImportError):
            importlib.import_module("torch")
    if name != "numpy":
        module = pytest.importorskip(name)
        if name == "jax":
            module.config.update("jax_enable_x64", True)
    pytest.importorskip(f"reinmax.backends.{name}")


@pytest.fixture(params=selected_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """A backend name, for one test per backend; its framework is imported and ready."""
    import_backend(request.param)
    return request.param


# Largest error (in units of eps · row scale) observed per (check, backend, dtype, transform),
# printed at the end of the run whether or not pytest captures output.
_OBSERVED: dict[tuple[str, ...], float] = {}


@pytest.fixture
def record_error() -> Callable[..., None]:
    """``record_error(value, *key)`` keeps the maximum of ``value`` per key for the summary."""

    def record(value: float, *key: str) -> None:
        _OBSERVED[key] = max(value, _OBSERVED.get(key, 0.0))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _OBSERVED:
        return
    terminalreporter.section("observed errors, in eps(dtype) x row scale (max per group)")
    for key in sorted(_OBSERVED):
        terminalreporter.write_line(f"{' '.join(key):<60} {_OBSERVED[key]:8.3f}")

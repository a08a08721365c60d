"""Shared fixtures: the ``backend`` parameter and the summary of observed errors.

``REINMAX_BACKENDS`` (a comma list of numpy, torch, jax, tensorflow) chooses the backends; by
default every installed one runs and a missing framework is skipped with ``importorskip``.
Each backend's driver imports its framework (in a safe order) and turns float64 on for the test
session, since the tests make float64 arrays of every framework directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from reinmax import backends

ALL_BACKENDS = ("numpy", *(name for name in backends.registered_names() if name != "numpy"))


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
    """Import ``name``'s framework (skipping the test if it is missing) and its reinmax backend,
    with float64 on: the tests make float64 arrays of every framework directly."""
    try:
        driver = backends.load_driver(name)
    except ImportError as error:
        pytest.skip(f"{name} is not installed: {error}")
    driver.enable_float64()


@pytest.fixture(params=selected_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """A backend name, for one test per backend; its framework is imported and ready."""
    import_backend(request.param)
    return request.param


# Largest error (in units of eps · row scale) observed per (check, backend, dtype, transform),
# printed at the end of the run whether or not pytest captures output.
_OBSERVED: dict[tuple[str, ...], float] = {}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny MNIST-like IDX directory (the VAE's ``--data-dir``): 60 train and 20 test images
    of random grey levels."""
    import numpy as np

    from reinmax.tasks.vae.data import write_idx

    directory = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    write_idx(directory / "train-images-idx3-ubyte", rng.integers(0, 256, (60, 28, 28)))
    write_idx(directory / "t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)))
    return directory


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

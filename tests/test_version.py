"""One version source: ``reinmax.__version__``, which pyproject.toml reads and the installed
distribution's metadata carries."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

import reinmax

ROOT = Path(__file__).resolve().parents[1]


def installed_distribution() -> importlib.metadata.Distribution:
    """The ``reinmax`` distribution installed in this environment: the first on ``sys.path``
    outside the checkout, whose ``reinmax.egg-info`` (left by a build) would otherwise be found
    first, since the tests run with the checkout on the path."""
    path = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT]
    found = list(importlib.metadata.distributions(name="reinmax", path=path))
    assert found, "reinmax is not installed (pip install -e .)"
    return found[0]


def test_pyproject_reads_the_version_from_the_package():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "reinmax.__version__"}


def test_the_installed_distribution_has_the_package_version():
    # An install made before a version change (reinstall with pip install -e .) or a second,
    # hard-coded version would differ here.
    assert installed_distribution().version == reinmax.__version__

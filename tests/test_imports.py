"""``import reinmax`` imports no framework, and dispatch picks the backend of the array's type."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

FRAMEWORKS = ("torch", "jax", "tensorflow")


def test_import_reinmax_imports_no_framework():
    code = textwrap.dedent(
        """
        import sys
        import reinmax
        import reinmax.core, reinmax.api
        import numpy as np
        reinmax.reinmax(np.zeros((2, 3)), noise=np.full(2, 0.5))
        print(",".join(sorted(m for m in ("torch", "jax", "tensorflow") if m in sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "", f"import reinmax imported {result.stdout.strip()}"


def test_dispatch_picks_the_backend_of_the_array(backend):
    import reinmax
    from reinmax._dispatch import backend_for
    from reinmax.conformance.harness import to_backend

    logits = to_backend(backend, np.zeros((2, 3)), "float32")
    assert backend_for(logits).name == backend
    hard, soft = reinmax.reinmax(logits, 1.0, noise=to_backend(backend, np.full(2, 0.5), "float32"))
    assert backend_for(hard).name == backend and backend_for(soft).name == backend
    np.testing.assert_array_equal(np.asarray(hard), [[0, 1, 0], [0, 1, 0]])


def test_backend_module_refuses_foreign_arrays(backend):
    import importlib

    module = importlib.import_module(f"reinmax.backends.{backend}")
    foreign = [[1.0, 2.0]]  # a Python list belongs to no backend
    with pytest.raises(TypeError):
        module.reinmax(foreign, 1.0)


def test_dispatch_rejects_unknown_types():
    import reinmax

    with pytest.raises(TypeError, match="logits must be"):
        reinmax.straight_through([[0.0, 1.0]])

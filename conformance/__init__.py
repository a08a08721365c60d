"""Conformance: every backend against an independent oracle, each other and docs/SPEC.md.

Run it as ``reinmax conformance [--quick] [--backends ...] [--estimators ...] [--dtypes ...]
[--json PATH]`` or ``python -m reinmax.conformance``. Tasks call :func:`gate` before training.

Checking your own estimator on every backend, without touching the library: write its two
functions with the core's interface and pass it to :func:`run_suite` under a new name::

    from reinmax.core import Estimator, inverse_cdf_sample, softmax, softmax_vjp
    from reinmax.conformance import format_report, run_suite

    def forward(logits, probs, noise, tau, *, xp):          # one uniform per row
        hard = inverse_cdf_sample(probs, noise, xp=xp)
        return hard, (softmax(logits, tau, xp=xp),)     # softmax(logits / tau)

    def backward(probs, residuals, grad, tau, *, xp):       # (1/τ) J(p_τ) g
        (p_tau,) = residuals
        return softmax_vjp(p_tau, grad, xp=xp) / tau

    mine = Estimator("my_st", forward, backward, lambda shape: shape[:-1], per_category=False)
    report = run_suite(estimators={"my_st": mine})          # every installed backend
    print(format_report(report)); assert report.passed

A new name is compared with itself run by NumPy in float64; registering it under a docs/SPEC.md name
(``{"straight_through": mine}``) compares it with the oracle and runs that name's identities.

Checking a port (your own function of ``(logits, noise)``, written once per framework) against a
reference estimator, with the same report::

    import torch, jax.numpy as jnp
    from reinmax.conformance import check_port

    def st_torch(logits, noise, tau, axis):                  # -> (hard, soft)
        ...
    def st_jax(logits, noise, tau, axis):
        ...
    report = check_port("my_st", {"torch": st_torch, "jax": st_jax}, "straight_through")
    assert report.passed, report.failures()
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from reinmax.conformance.ports import Port, check_port
from reinmax.conformance.suite import Report, format_report, run_suite

__all__ = [
    "Port",
    "Report",
    "cache_path",
    "check_port",
    "format_report",
    "gate",
    "remember",
    "run_suite",
]


def cache_path() -> Path:
    """Where :func:`gate` remembers what passed: ``$REINMAX_CACHE_DIR`` or ``~/.cache/reinmax``.

    Examples:
        >>> import os
        >>> from reinmax.conformance import cache_path
        >>> cache_path().name
        'conformance.json'
    """
    root = os.environ.get("REINMAX_CACHE_DIR") or Path.home() / ".cache" / "reinmax"
    return Path(root) / "conformance.json"


def gate(backend: str, estimators: Sequence[str]) -> None:
    """Refuse (``RuntimeError``) unless ``backend`` passes the quick suite for ``estimators``.

    A pass is cached per (library version, backend, estimator), so each combination is checked
    once per installed version; a failure is never cached, so a fix takes effect at once. The
    error names every failing estimator, backend and check.

    Examples:
        >>> import os, tempfile
        >>> from reinmax.conformance import gate
        >>> before = os.environ.get("REINMAX_CACHE_DIR")
        >>> os.environ["REINMAX_CACHE_DIR"] = tempfile.mkdtemp()
        >>> gate("numpy", ["zgr"])  # passes quietly; a failure raises RuntimeError
        >>> _ = os.environ.pop("REINMAX_CACHE_DIR") if before is None else None
    """
    cache = _read_cache()
    keys = {name: _cache_key(backend, name) for name in estimators}
    todo = [name for name, key in keys.items() if not cache.get(key)]
    if not todo:
        return
    report = run_suite([backend], todo, quick=True, show_progress=False)
    if not report.passed:
        failures = "\n  ".join(report.failures())
        raise RuntimeError(
            f"conformance failed for {backend} ({', '.join(todo)}); refusing to start:\n  "
            f"{failures}\nRun `reinmax conformance --backends {backend}` for the full report."
        )
    remember(report)


def remember(report: Report) -> None:
    """Cache, for :func:`gate`, every (backend, estimator) whose runs and identity checks all
    passed in ``report``: the report of the quick suite (what the gate runs: ``quick=True``,
    every dtype, seed 0), so that ``reinmax conformance --quick`` before the tasks spares each
    task its own run.

    Example:
        >>> import os, tempfile
        >>> from reinmax.conformance import gate, remember, run_suite
        >>> before = os.environ.get("REINMAX_CACHE_DIR")
        >>> os.environ["REINMAX_CACHE_DIR"] = tempfile.mkdtemp()
        >>> report = run_suite(
        ...     ["numpy"], ["zgr"], quick=True, identities=False, show_progress=False
        ... )
        >>> remember(report)
        >>> gate("numpy", ["zgr"])  # found in the cache: no second run
        >>> _ = os.environ.pop("REINMAX_CACHE_DIR") if before is None else None
    """
    from reinmax.runtime import write_json

    outcome: dict[str, bool] = {}
    for record in report.records + report.identities:
        key = _cache_key(record["backend"], record["estimator"])
        outcome[key] = outcome.get(key, True) and bool(record["passed"])
    passed = {key: True for key, ok in outcome.items() if ok}
    if passed:
        write_json(cache_path(), {**_read_cache(), **passed})


def _cache_key(backend: str, estimator: str) -> str:
    import reinmax

    return f"{reinmax.__version__}/{backend}/{estimator}"


def _read_cache() -> dict[str, object]:
    try:
        cache = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}

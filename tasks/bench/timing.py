"""How the benchmark times: interleaved rounds of every case, and the dispatch overhead."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import reinmax

__all__ = ["dispatch_overhead_us", "measure"]

Step = Callable[[], None]
Key = TypeVar("Key", bound=Hashable)


def _warm_up(
    steps: Mapping[Key, Step], min_time: float
) -> tuple[dict[Key, list[float]], dict[Key, Exception]]:
    """Up to three calls of each step (compilation happens here), the third only if the first
    two took less than ``min_time``: empty time lists for the steps that ran, and the errors of
    those that raised."""
    times: dict[Key, list[float]] = {}
    errors: dict[Key, Exception] = {}
    for key, step in steps.items():
        try:
            t0 = time.perf_counter()
            for _ in range(2):
                step()
            if time.perf_counter() - t0 < min_time:
                step()
            times[key] = []
        except Exception as err:  # a failing case is reported, not fatal to the others
            errors[key] = err
    return times, errors


def measure(
    steps: Mapping[Key, Step], min_time: float, max_repeats: int
) -> tuple[dict[Key, list[float]], dict[Key, Exception]]:
    """Seconds per call of each step, in interleaved rounds.

    Each step is warmed up (compilation happens here: two or three calls); then every round
    calls each step once, until each has had ``min_time`` seconds or ``max_repeats`` calls (at
    least 3). Interleaving
    makes the machine's slow drifts (other load, clocks) fall on every case alike, so that the
    ratios between cases stay meaningful. A step that raises is dropped with its error.
    """
    times, errors = _warm_up(steps, min_time)
    spent = dict.fromkeys(times, 0.0)
    live = [key for key in steps if key in times]
    while live:
        for key in list(live):
            t0 = time.perf_counter()
            try:
                steps[key]()
            except Exception as err:
                errors[key] = err
                live.remove(key)
                continue
            elapsed = time.perf_counter() - t0
            times[key].append(elapsed)
            spent[key] += elapsed
            n = len(times[key])
            if n >= 3 and (spent[key] >= min_time or n >= max_repeats):
                live.remove(key)
    return {k: v for k, v in times.items() if k not in errors}, errors


def dispatch_overhead_us(x: Any, direct: Any, repeats: int = 200_000) -> float:
    """Extra time per call of ``reinmax.reinmax`` over the backend module's own ``reinmax``, for
    the array ``x`` whose backend module's functions are ``direct``.

    The two run the same code but for one step: the top-level function finds the backend from
    the type of ``logits``, the backend module's checks that it owns ``logits``. That step is
    timed on its own (best of interleaved rounds): the difference of two whole calls of a few
    hundred microseconds is below the noise of either.
    """
    top = reinmax._functions
    assert top._backend_for(x) is direct._backend_for(x)

    def per_call(functions: Any) -> float:
        step = functions._backend_for
        t0 = time.perf_counter()
        for _ in range(repeats // 20):
            step(x)
        return (time.perf_counter() - t0) / (repeats // 20)

    tops, directs = [], []
    for _ in range(20):
        tops.append(per_call(top))
        directs.append(per_call(direct))
    return 1e6 * (min(tops) - min(directs))

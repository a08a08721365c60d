"""The benchmark's records and what is drawn from them: ratios, goals and the Markdown table.

Nothing here imports a framework: a results file is read and drawn anywhere. Records are
:class:`Record` objects or the dicts of a results file's ``"records"`` list, either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FLOOR_GOALS",
    "LARGE",
    "REFERENCE",
    "TAU",
    "Record",
    "as_records",
    "goals",
    "lookup",
    "ratios",
    "table",
]

TAU = 1.3
"""The temperature of every timed estimator."""
# The two large shapes have 2^20 and 2^25 elements; the goals differ above this size.
LARGE = 1 << 20
REFERENCE = ("torch", "reference", "eager")
"""Where the reference package's time is: it exists only in PyTorch, run eagerly."""
FLOOR_GOALS: dict[tuple[str, str], float] = {
    ("torch", "eager"): 4.0,
    ("torch", "compiled"): 2.0,
    ("jax", "compiled"): 2.0,
}
"""The issue's bound on ReinMax's time over the softmax floor, per (backend, mode)."""
_ST_GOAL = 1.25
_DISPATCH_GOAL_US = 5.0


@dataclass
class Record:
    """One case's measurement: median and interquartile range of its forward plus backward
    time, its repeats, the memory its framework reports (``memory_kind`` says what), and the
    error that stopped it, if any."""

    backend: str
    name: str
    mode: str
    shape: tuple[int, ...]
    median_ms: float
    iqr_ms: float
    repeats: int
    memory_bytes: int | None = None
    memory_kind: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Record:
        """A record as a results file holds it (its shape a list)."""
        return cls(**{**record, "shape": tuple(record["shape"])})


def as_records(records: Iterable[Record | Mapping[str, Any]]) -> list[Record]:
    """``records`` as :class:`Record` objects (a results file's dicts are converted)."""
    return [r if isinstance(r, Record) else Record.from_json(r) for r in records]


def lookup(records: Iterable[Record]) -> dict[tuple, Record]:
    """Every record by ``(backend, name, mode, shape)``."""
    return {(r.backend, r.name, r.mode, r.shape): r for r in records}


def ratios(records: Iterable[Record | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each record's time relative to the reference package, our own ST and the softmax floor."""
    records = as_records(records)
    by = lookup(records)
    rows = []
    for r in records:
        row = {"backend": r.backend, "name": r.name, "mode": r.mode, "shape": r.shape}
        for label, other in (
            ("vs_reference", (*REFERENCE, r.shape)),
            ("vs_straight_through", (r.backend, "straight_through", r.mode, r.shape)),
            ("vs_softmax", (r.backend, "softmax", r.mode, r.shape)),
        ):
            o = by.get(other)
            row[label] = r.median_ms / o.median_ms if o and o.median_ms == o.median_ms else None
        rows.append(row)
    return rows


def _goal(text: str, value: float, met: bool) -> dict[str, Any]:
    return {"goal": text, "value": value, "met": met}


def _reference_goals(by: dict[tuple, Record], shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """PyTorch's ReinMax against the reference package: 1× faster, 3× at the large shapes."""
    ours = by.get((REFERENCE[0], "reinmax", REFERENCE[2], shape))
    ref = by.get((*REFERENCE, shape))
    if not (ours and ref):
        return []
    speedup = ref.median_ms / ours.median_ms
    target = 3.0 if math.prod(shape) >= LARGE else 1.0
    text = f"{REFERENCE[0]} reinmax vs reference at {shape}: ≥{target:g}× faster"
    return [_goal(text, speedup, speedup >= target)]


def _mode_goals(
    by: dict[tuple, Record], backend: str, mode: str, shape: tuple[int, ...]
) -> list[dict[str, Any]]:
    """ReinMax over ST (≤ 1.25) and, where the issue sets a bound, over the softmax floor."""
    out = []
    rm = by.get((backend, "reinmax", mode, shape))
    st = by.get((backend, "straight_through", mode, shape))
    sm = by.get((backend, "softmax", mode, shape))
    if rm and st:
        v = rm.median_ms / st.median_ms
        text = f"{backend} {mode} reinmax/ST at {shape} ≤ {_ST_GOAL:g}"
        out.append(_goal(text, v, v <= _ST_GOAL))
    limit = FLOOR_GOALS.get((backend, mode))
    if rm and sm and limit:
        v = rm.median_ms / sm.median_ms
        text = f"{backend} {mode} reinmax/softmax at {shape} ≤ {limit:g}"
        out.append(_goal(text, v, v <= limit))
    return out


def goals(
    records: Iterable[Record | Mapping[str, Any]],
    overhead_us: float | None,
    backends: Iterable[str] = ("torch", "jax", "tensorflow"),
) -> list[dict[str, Any]]:
    """The issue's goals, each with the measured value and whether it is met, shape by shape
    and then ``backends`` in order, eager before compiled."""
    records = as_records(records)
    by = lookup(records)
    backends = tuple(backends)
    out = []
    for shape in sorted({r.shape for r in records}, key=math.prod):
        out += _reference_goals(by, shape)
        for backend in backends:
            for mode in ("eager", "compiled"):
                out += _mode_goals(by, backend, mode, shape)
    if overhead_us is not None:
        text = f"top-level dispatch overhead ≤ {_DISPATCH_GOAL_US:g} µs"
        out.append(_goal(text, overhead_us, overhead_us <= _DISPATCH_GOAL_US))
    return out


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(records: Iterable[Record | Mapping[str, Any]]) -> str:
    """Every record as a row of a Markdown table: time, spread, the three ratios, memory."""
    records = as_records(records)
    rat = {(r["backend"], r["name"], r["mode"], r["shape"]): r for r in ratios(records)}
    head = "| backend | estimator | mode | shape | median ms | IQR ms "
    head += "| ×reference | ×ST | ×softmax | memory MB |"
    lines = [head, "|" + "---|" * 10]
    for r in records:
        q = rat[(r.backend, r.name, r.mode, r.shape)]
        mem = "" if r.memory_bytes is None else f"{r.memory_bytes / 2**20:.1f}"
        time_cell = f"{r.median_ms:.3f}" if r.error is None else f"error: {r.error[:40]}"
        lines.append(
            f"| {r.backend} | {r.name} | {r.mode} | {'×'.join(map(str, r.shape))} | {time_cell} "
            f"| {r.iqr_ms:.3f} | {_number(q['vs_reference'])} "
            f"| {_number(q['vs_straight_through'])} | {_number(q['vs_softmax'])} | {mem} |"
        )
    return "\n".join(lines)

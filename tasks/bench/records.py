"""The benchmark's records and what is drawn from them: ratios, goals and the Markdown table.

Nothing here imports a framework: a results file is read and drawn anywhere. Records are
:class:`Record` objects or the dicts of a results file's ``"records"`` list, either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FLOOR_GOALS",
    "LARGE",
    "NOISE_GOALS",
    "REFERENCE",
    "SOFTMAX_PASS",
    "TAU",
    "Record",
    "as_records",
    "draw_name",
    "goals",
    "is_draw",
    "lookup",
    "noise_table",
    "ratios",
    "split_name",
    "step_name",
    "step_noise_table",
    "table",
    "wide_table",
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
NOISE_GOALS = {"1/row": "per-row", "n/row": "per-category"}
"""The noise layouts whose portable draw is held to one softmax forward pass (goal: below it)."""
SOFTMAX_PASS = "softmax_forward"
"""One softmax forward pass: the bar for drawing noise."""
_ST_GOAL = 1.25
_RNG_SUFFIXES = ("noise", "seed")
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


def step_name(label: str, rng: str) -> str:
    """The name of an estimator step whose noise comes from ``rng``: ``native`` (the framework's
    generator) the label alone, ``noise`` (explicit) ``label[noise]``, portable ``label[seed]``."""
    return label if rng == "native" else f"{label}[{rng}]"


def split_name(name: str) -> tuple[str, str]:
    """``(label, rng)`` of a step's name (:func:`step_name`'s inverse)."""
    for rng in _RNG_SUFFIXES:
        if name.endswith(f"[{rng}]"):
            return name[: -len(rng) - 2], rng
    return name, "native"


def draw_name(generator: str, layout: str) -> str:
    """The name of drawing the noise ``layout`` (``1/row``...) with ``generator`` alone."""
    return f"{generator}_uniform[{layout}]"


def is_draw(name: str) -> bool:
    """Whether ``name`` is a draw of noise alone (:func:`draw_name`)."""
    return name.startswith(("portable_uniform[", "native_uniform["))


def _ratio(record: Record, other: Record | None) -> float | None:
    if other is None or other.median_ms != other.median_ms:
        return None
    return record.median_ms / other.median_ms


def _others(r: Record) -> dict[str, tuple]:
    """The records each ratio of ``r`` divides by: reference, ST, floor, explicit noise; for a
    draw, the softmax pass and the framework's generator."""
    label = split_name(r.name)[0]
    others = {
        "vs_reference": (*REFERENCE, r.shape),
        "vs_straight_through": (r.backend, "straight_through", r.mode, r.shape),
        "vs_softmax": (r.backend, "softmax", r.mode, r.shape),
        "vs_explicit_noise": (r.backend, step_name(label, "noise"), r.mode, r.shape),
    }
    if is_draw(r.name):
        layout = r.name[r.name.index("[") :]
        others["vs_softmax_pass"] = (r.backend, SOFTMAX_PASS, r.mode, r.shape)
        others["vs_native_uniform"] = (r.backend, f"native_uniform{layout}", r.mode, r.shape)
    return others


def ratios(records: Iterable[Record | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each record's time relative to the reference package, our own ST, the softmax floor and
    the same step with explicit noise; a draw's also to one softmax pass and to the framework's
    generator (None where there is no such record)."""
    records = as_records(records)
    by = lookup(records)
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "backend": r.backend,
            "name": r.name,
            "mode": r.mode,
            "shape": r.shape,
        }
        row.update((label, _ratio(r, by.get(o))) for label, o in _others(r).items())
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


def _noise_goals(
    by: dict[tuple, Record], backend: str, mode: str, shape: tuple[int, ...]
) -> list[dict[str, Any]]:
    """The portable generator's draw of each of :data:`NOISE_GOALS` below one softmax pass."""
    out = []
    bar = by.get((backend, SOFTMAX_PASS, mode, shape))
    for layout, what in NOISE_GOALS.items():
        draw = by.get((backend, draw_name("portable", layout), mode, shape))
        v = _ratio(draw, bar) if draw else None
        if v is not None:
            text = f"{backend} {mode} portable {what} noise/softmax pass at {shape} < 1"
            out.append(_goal(text, v, v < 1))
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
                out += _noise_goals(by, backend, mode, shape)
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


def wide_table(
    records: Iterable[Record | Mapping[str, Any]], keep: Callable[[str], bool] | None = None
) -> str:
    """Median milliseconds, one row per (backend, mode, case) and one column per shape, in the
    order the records were measured; only the cases whose name ``keep`` accepts, if given."""
    kept = [r for r in as_records(records) if keep is None or keep(r.name)]
    shapes = list(dict.fromkeys(r.shape for r in kept))
    rows = list(dict.fromkeys((r.backend, r.mode, r.name) for r in kept))
    by = {(r.backend, r.mode, r.name, r.shape): r for r in kept}
    head = " | ".join("×".join(map(str, shape)) for shape in shapes)
    lines = [f"| backend | mode | case | {head} |", "|---" * (len(shapes) + 3) + "|"]
    for backend, mode, name in rows:
        cells = " | ".join(_ms(by.get((backend, mode, name, shape))) for shape in shapes)
        lines.append(f"| {backend} | {mode} | {name} | {cells} |")
    return "\n".join(lines)


def _ms(record: Record | None) -> str:
    if record is None or record.error is not None:
        return ""
    value = record.median_ms
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def _times(record: Record | None, other: Record | None) -> str:
    if record is None or other is None or record.error or other.error:
        return ""
    return f"{record.median_ms / other.median_ms:.2f}"


def _comparison(
    records: Iterable[Record | Mapping[str, Any]],
    columns: tuple[str, str, str, str],
    pick: Callable[[str], tuple[str, tuple[str, str, str]] | None],
) -> str:
    """A Markdown table of three records side by side, and the third over each of the others.

    ``columns`` names what a row is and the three records; ``pick(name)`` is None for a record
    that starts no row, else what the row is and the names of its three records (the record's
    own among them) at the same backend, mode and shape.
    """
    by = lookup(as_records(records))
    what, a, b, c = columns
    lines = [
        f"| backend | mode | {what} | shape | {a} ms | {b} ms | {c} ms | {c} ×{a} | {c} ×{b} |",
        "|" + "---|" * 9,
    ]
    for backend, name, mode, shape in by:
        picked = pick(name)
        if picked is None:
            continue
        row, names = picked
        first, second, third = (by.get((backend, n, mode, shape)) for n in names)
        lines.append(
            f"| {backend} | {mode} | {row} | {'×'.join(map(str, shape))} | {_ms(first)} "
            f"| {_ms(second)} | {_ms(third)} | {_times(third, first)} | {_times(third, second)} |"
        )
    return "\n".join(lines)


def _draw_row(name: str) -> tuple[str, tuple[str, str, str]] | None:
    if not name.startswith("portable_uniform["):
        return None
    layout = name[name.index("[") + 1 : -1]
    return layout, (SOFTMAX_PASS, draw_name("native", layout), name)


def _step_row(name: str) -> tuple[str, tuple[str, str, str]] | None:
    label, rng = split_name(name)
    return None if rng != "seed" else (label, (step_name(label, "noise"), label, name))


def noise_table(records: Iterable[Record | Mapping[str, Any]]) -> str:
    """Drawing each noise layout alone: the portable generator against one softmax forward pass
    and against the framework's own generator, as a Markdown table."""
    return _comparison(records, ("noise", "softmax pass", "framework", "portable"), _draw_row)


def step_noise_table(records: Iterable[Record | Mapping[str, Any]]) -> str:
    """Each estimator step with explicit noise, the framework's generator and the portable one
    (``rng=Seed``), and the portable one over the other two, as a Markdown table."""
    return _comparison(records, ("estimator", "explicit", "framework", "portable"), _step_row)

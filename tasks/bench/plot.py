"""The benchmark's figure: time against size, and time over the softmax floor, per backend."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reinmax.tasks.bench.records import (
    FLOOR_GOALS,
    SOFTMAX_PASS,
    Record,
    as_records,
    is_draw,
    lookup,
    split_name,
)
from reinmax.tasks.common import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.artist import Artist

__all__ = ["COLORS", "plot"]

# One color per estimator in every panel; the mode is the line style. A name not listed here
# (an estimator registered at run time) takes matplotlib's next color.
COLORS = {
    "reinmax": "tab:red",
    "straight_through": "tab:blue",
    "gumbel_softmax": "tab:green",
    "gumbel_rao": "tab:purple",
    "gapped_straight_through": "tab:olive",
    "softmax": "black",
    "reference": "tab:gray",
    "torch_gumbel_softmax": "tab:brown",
}


def _style(name: str, mode: str) -> dict[str, Any]:
    return {
        "color": COLORS.get(name),
        "ls": "-" if mode == "eager" else "--",
        "marker": "o" if mode == "eager" else "s",
        "lw": 2.5 if name == "reinmax" else 1.2,
        "label": f"{name} ({mode})",
    }


def _plotted(name: str) -> bool:
    """Whether ``name`` has a line: the estimators with their framework's noise, the baselines
    (their noise variants and the noise alone are in the tables only)."""
    return split_name(name)[1] == "native" and not is_draw(name) and name != SOFTMAX_PASS


def _series(records: list[Record], backend: str, name: str, mode: str) -> list[Record]:
    """The records of one line, without errors, by size."""
    rows = sorted(
        (r for r in records if (r.backend, r.name, r.mode) == (backend, name, mode)),
        key=lambda r: math.prod(r.shape),
    )
    return [r for r in rows if r.error is None]


def _panels(top: Any, bottom: Any, records: list[Record], backend: str) -> None:
    """One backend's column: its times on ``top``, its ratios to the floor on ``bottom``."""
    from matplotlib import ticker

    by = lookup(records)
    lines = {(r.name, r.mode) for r in records if r.backend == backend and _plotted(r.name)}
    for name, mode in sorted(lines):
        rows = _series(records, backend, name, mode)
        if not rows:
            continue
        style = _style(name, mode)
        top.plot([math.prod(r.shape) for r in rows], [r.median_ms for r in rows], **style)
        floor = [(r, by.get((backend, "softmax", mode, r.shape))) for r in rows]
        pts = [(math.prod(r.shape), r.median_ms / f.median_ms) for r, f in floor if f]
        if name != "softmax" and pts:
            bottom.plot(*zip(*pts), **style)
    for mode in ("eager", "compiled"):
        goal = FLOOR_GOALS.get((backend, mode))
        if goal:
            bottom.axhline(goal, color="gray", ls=":" if mode == "eager" else "-.", lw=1)
    top.set(xscale="log", yscale="log", ylabel="forward+backward ms", title=backend)
    bottom.set(xscale="log", yscale="log", xlabel="elements", ylabel="× softmax floor")
    for axis in (bottom.yaxis.set_major_formatter, bottom.yaxis.set_minor_formatter):
        axis(ticker.FormatStrFormatter("%g"))


def plot(records: Iterable[Record | Mapping[str, Any]], path: Path) -> None:
    """Time against size (top row) and time over the softmax floor of the same mode (bottom row),
    one column per backend, with the issue's floor goals as dotted lines."""
    records = as_records(records)
    plt = pyplot()
    backends = sorted({r.backend for r in records})
    fig, axes = plt.subplots(
        2, len(backends), figsize=(5.5 * len(backends), 8), squeeze=False, sharex=True
    )
    for col, backend in enumerate(backends):
        _panels(axes[0][col], axes[1][col], records, backend)
    handles: dict[str, Artist] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save_figure(fig, path)

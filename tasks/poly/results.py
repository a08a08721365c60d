"""The polynomial-programming results: the JSON object, the summary over seeds, the table and
the plot."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.runtime import ResultFileError
from reinmax.tasks.common import mean_and_std, pyplot, save_figure
from reinmax.tasks.poly.problem import PolyConfig, estimator_options, optimum

__all__ = ["assemble", "format_table", "merge", "p_key", "plot_curves", "summarize"]


def p_key(p: float) -> str:
    """The JSON key of power ``p`` (``"2"``, ``"1.5"``)."""
    return f"{p:g}"


def _cell(rows: Sequence[dict[str, Any]], p: float) -> dict[str, float]:
    """The summary of one method at one ``p`` over its seeds ``rows``."""
    exp_mean, exp_std = mean_and_std([r["final_expected_loss"] for r in rows])
    gap_mean, gap_std = mean_and_std([r["final_expected_loss"] - optimum(p) for r in rows])
    smp_mean, smp_std = mean_and_std([r["final_sampled_loss"] for r in rows])
    return {
        "expected_loss_mean": exp_mean,
        "expected_loss_std": exp_std,
        "gap_mean": gap_mean,
        "gap_std": gap_std,
        "sampled_loss_mean": smp_mean,
        "sampled_loss_std": smp_std,
        "optimum": optimum(p),
        "seeds": len(rows),
    }


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and ``p``: final expected loss, its gap to the optimum, and the sampled loss,
    as mean and (sample) standard deviation over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        table[method] = {}
        for p in dict.fromkeys(r["p"] for r in runs if r["method"] == method):
            rows = [r for r in runs if r["method"] == method and r["p"] == p]
            table[method][p_key(p)] = _cell(rows, p)
    return table


def _loss_cell(cell: dict[str, float] | None) -> str:
    """``mean ± std`` of the final expected loss; the mean alone for one seed (no spread)."""
    if cell is None:
        return ""
    mean = f"{cell['expected_loss_mean']:.6f}"
    return mean if cell["seeds"] == 1 else f"{mean} ± {cell['expected_loss_std']:.6f}"


def format_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """A Markdown table: final expected loss (mean ± std over seeds) per method and ``p``, with
    the number of seeds behind each method's cells."""
    powers = list(dict.fromkeys(k for cells in summary.values() for k in cells))
    head = " | ".join(f"p={p} (opt {optimum(float(p)):.6f})" for p in powers)
    lines = [f"| method | seeds | {head} |", "|---" * (len(powers) + 2) + "|"]
    for method, cells in summary.items():
        seeds = sorted({c["seeds"] for c in cells.values()})
        row = ["/".join(str(n) for n in seeds)]
        for p in powers:
            row.append(_loss_cell(cells.get(p)))
        lines.append(f"| {method} | {' | '.join(row)} |")
    return "\n".join(lines)


def _plot_power(top: Any, bottom: Any, runs: Sequence[dict], p: float, steps: np.ndarray) -> None:
    """The two panels of one ``p``: the gap to the optimum above, the sampled loss below."""
    for method in dict.fromkeys(r["method"] for r in runs):
        rows = [r for r in runs if r["method"] == method and r["p"] == p]
        gap = np.array([r["expected_loss"] for r in rows]) - optimum(p)
        mean, std = mean_and_std(gap)
        (line,) = top.plot(steps, mean, label=method)
        top.fill_between(
            steps, np.maximum(mean - std, 1e-12), mean + std, alpha=0.2, color=line.get_color()
        )
        # The sampled loss is a mean over the steps before each logged step: none at step 0.
        smp = np.array([r["sampled_loss"][1:] for r in rows], dtype=np.float64)
        bottom.plot(steps[1:], smp.mean(0), label=method, color=line.get_color())
    top.set_yscale("log")
    top.set_title(f"p = {p:g}: expected loss − optimum ({optimum(p):.6f})")
    bottom.axhline(optimum(p), color="black", lw=0.8, ls="--", label="optimum")
    bottom.set_title(f"p = {p:g}: sampled training loss")
    for ax in (top, bottom):
        ax.set_xlabel("step")
    top.legend(fontsize=7)


def plot_curves(result: dict[str, Any], path: str | Path) -> Path:
    """Expected loss minus the optimum (log scale) and the sampled loss, per ``p``, mean ± std."""
    plt = pyplot()
    runs = result["runs"]
    powers = list(dict.fromkeys(r["p"] for r in runs))
    steps = np.asarray(result["steps"])
    fig, axes = plt.subplots(2, len(powers), figsize=(5 * len(powers), 8), squeeze=False)
    for col, p in enumerate(powers):
        _plot_power(axes[0][col], axes[1][col], runs, p, steps)
    fig.suptitle(
        f"Polynomial programming, {result['backend']}, τ = {result['config']['tau']:g}, "
        f"{len(set(r['seed'] for r in runs))} seeds"
    )
    return save_figure(fig, path)


def _method_runs(
    method: str, out: dict[str, Any], config: PolyConfig, seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """One JSON row per ``(p, seed)`` of one method's training output ``out``."""
    runs = []
    options = estimator_options(method, config)
    for i, p in enumerate(config.powers):
        for j, seed in enumerate(seeds):
            exp = out["expected_loss"][i, j]
            smp = out["sampled_loss"][i, j]
            runs.append(
                {
                    "method": method,
                    "p": p,
                    "seed": seed,
                    "estimator_options": options,
                    "final_expected_loss": float(exp[-1]),
                    "final_sampled_loss": float(smp[-1]),
                    "expected_loss": exp,
                    "sampled_loss": [None if math.isnan(v) else float(v) for v in smp],
                }
            )
    return runs


_TIMING_KEYS = ("seconds", "seconds_per_step", "first_step_seconds")


def assemble(
    backend: str, config: PolyConfig, seeds: Sequence[int], done: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The JSON object of a run: config, optimum, logged steps, summary, timing and every run,
    from ``done`` (the training output of every method of ``config``)."""
    runs: list[dict[str, Any]] = []
    for method in config.methods:
        runs += _method_runs(method, done[method], config, seeds)
    return {
        "task": "poly",
        "backend": backend,
        "config": dataclasses.asdict(config),
        "optimum": {p_key(p): optimum(p) for p in config.powers},
        "steps": next(iter(done.values()))["steps"],
        "summary": summarize(runs),
        "timing": {m: {k: done[m][k] for k in _TIMING_KEYS} for m in config.methods},
        "runs": runs,
    }


_SPLIT = ("methods", "seed", "seeds")
"""The options in which merged results may differ: how the runs were split over processes."""


def _timing_of_parts(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """One method's timing from the runs of its seeds apart: seconds summed (the time one process
    would take for them all, one after another), and how many processes ran them."""
    timing = {key: sum(part[key] for part in parts) for key in _TIMING_KEYS}
    return {**timing, "processes": sum(part.get("processes", 1) for part in parts)}


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from the results of runs split over processes by method or by seed (one file
    per method, per group of methods, or per seed), as if one command had run them all.

    Each seed trains alone (its noise is keyed by the seed), so the merged runs are those of one
    command with every method and seed. Methods keep the order of their first appearance.

    Raises:
        ResultFileError: a result that is not a polynomial-programming result; results of
            another backend, other options (steps, K, powers, ...) or other logged steps; a
            method and seed in two of them; or seeds that are not one range ``seed`` to
            ``seed + seeds − 1`` (the merged config's).
    """
    if not results:
        raise ValueError("results must name at least one polynomial-programming result")
    first = results[0]

    def setting(result: dict[str, Any]) -> tuple:
        options = {k: v for k, v in result["config"].items() if k not in _SPLIT}
        return result["backend"], options, list(result["steps"])

    for i, result in enumerate(results):
        if not isinstance(result, dict) or result.get("task") != "poly":
            raise ResultFileError(f"result {i} is not a polynomial-programming result")
        if setting(result) != setting(first):
            raise ResultFileError(
                f"poly result {i} was run with other options than result 0 (backend, config "
                "other than methods and seeds, or logged steps); only runs of one setting merge"
            )
    methods = list(dict.fromkeys(m for r in results for m in r["config"]["methods"]))
    runs = [run for result in results for run in result["runs"]]
    pairs = [(run["method"], run["seed"]) for run in runs if run["p"] == runs[0]["p"]]
    twice = sorted({f"{m} seed {s}" for m, s in pairs if pairs.count((m, s)) > 1})
    if twice:
        raise ResultFileError(f"poly results hold {', '.join(twice)} twice")
    seeds = sorted({seed for _, seed in pairs})
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ResultFileError(f"the merged seeds must be one range, got {seeds}")
    powers = list(first["config"]["powers"])
    runs.sort(key=lambda r: (methods.index(r["method"]), powers.index(r["p"]), r["seed"]))
    config = dict(first["config"], methods=methods, seed=seeds[0], seeds=len(seeds))
    merged = dict(first, config=config, runs=runs, summary=summarize(runs))
    merged["timing"] = {
        m: _timing_of_parts([r["timing"][m] for r in results if m in r["timing"]]) for m in methods
    }
    if len({result.get("workers") for result in results}) > 1:
        merged.pop("workers", None)  # the worker counts differ: no one count is true of all
    return merged

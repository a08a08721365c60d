"""``reinmax task grid``: many independent runs of a task at once on one machine, resumable.

The paper's full grids (the VAE: six configurations × five estimators × ten seeds; ListOps in its
full setting) are hundreds of independent runs. On one accelerator (or a many-core CPU) they fit
side by side: this command keeps ``--parallel P`` of them running, each a ``reinmax task``
process of its own with its own results file and checkpoint under ``OUT/runs/``, and merges
every finished file into one ``OUT/grid.json``, one ``OUT/table.md`` and the task's plots.

A run is one (estimator, configuration, seed) of the VAE, or one estimator with all its seeds of
ListOps (the ListOps command numbers its seeds from 0). Stopped at any point (a killed command,
a preempted machine), the same command again skips the finished runs and resumes the others
from their checkpoints (each task's ``--resume``). Options after ``--`` go to every run, e.g.
``-- --lr 5e-4 --tau 1.3 --optimizer adam`` or ListOps' ``-- --word-dim 300 ...``.

Each run computes on the device its framework picks (PyTorch: the GPU when there is one); the
runs share it. JAX runs are told not to preallocate most of the device's memory
(``XLA_PYTHON_CLIENT_PREALLOCATE=false`` in the runs' environment only), so that many fit.

Command: ``reinmax task grid --task {vae,listops} --backend B --estimator E ... [--config C ...]
--seeds S [--seed N] [--epochs N] --parallel P --out DIR [-- task options]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reinmax.runtime import (
    ResultFileError,
    add_publish_option,
    add_quiet_option,
    check_destination,
    command,
    non_negative_int,
    positive_int,
    read_json,
    status,
    write_json,
)
from reinmax.tasks.common import BACKENDS, choose_estimators

__all__ = ["Run", "finished", "grid_runs", "main", "merge", "run_grid"]

TASKS = ("vae", "listops")


@dataclasses.dataclass(frozen=True)
class Run:
    """One independent run of the grid: its name, results file, command line and seeds."""

    name: str
    json: Path
    argv: tuple[str, ...]
    seeds: int = 1


def grid_runs(args: argparse.Namespace, extra: Sequence[str]) -> list[Run]:
    """Every run of the grid ``args`` asks for, in the order they start."""
    out = Path(args.out) / "runs"
    epochs = () if args.epochs is None else ("--epochs", str(args.epochs))
    runs = []
    argv: tuple[str, ...]
    if args.task == "listops":
        for estimator in args.estimator:
            argv = ("listops", "--estimator", estimator, "--seeds", str(args.seeds))
            runs.append(Run(f"listops-{estimator}", Path(), argv, args.seeds))
    else:
        for config in args.config:
            for estimator in args.estimator:
                for seed in range(args.seed, args.seed + args.seeds):
                    argv = ("vae", "--estimator", estimator, "--config", config)
                    argv += ("--seed", str(seed), "--seeds", "1")
                    runs.append(Run(f"vae-{estimator}-{config}-{seed}", Path(), argv))
    publish = ("--publish",) if getattr(args, "publish", False) else ()
    common = ("--backend", args.backend, *epochs, "--quiet", "--resume", *publish, *extra)
    return [
        dataclasses.replace(
            r,
            json=out / f"{r.name}.json",
            argv=(*r.argv, "--json", str(out / f"{r.name}.json"), *common),
        )
        for r in runs
    ]


def finished(run: Run) -> bool:
    """Whether ``run``'s results file holds every seed finished (a missing file: not started)."""
    if not run.json.exists():
        return False
    result = read_json(run.json)
    if "complete" in result:  # the VAE's flag
        return bool(result["complete"])
    return sum("final" in r for r in result.get("runs", [])) == run.seeds


def _environment() -> dict[str, str]:
    """The runs' environment: the caller's, with JAX told not to preallocate the device."""
    return {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def run_grid(runs: Sequence[Run], parallel: int, logs: Path) -> dict[str, int]:
    """Run every unfinished run, ``parallel`` at a time; returns each failed run's exit code.

    Each run's output goes to ``logs/<name>.log``; one line per start and end on stderr.
    """
    logs.mkdir(parents=True, exist_ok=True)
    waiting = [r for r in runs if not finished(r)]
    status(f"grid: {len(runs) - len(waiting)} of {len(runs)} runs already finished")
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    failed: dict[str, int] = {}
    done = len(runs) - len(waiting)
    while waiting or running:
        while waiting and len(running) < parallel:
            run = waiting.pop(0)
            log = (logs / f"{run.name}.log").open("w", encoding="utf-8")
            argv = [sys.executable, "-m", "reinmax.cli", "task", *run.argv]
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=_environment()
            )
            running[run.name] = (process, log)
            status(f"grid: started {run.name} ({len(running)} running, {len(waiting)} waiting)")
        time.sleep(0.2)
        for name, (process, log) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            log.close()
            del running[name]
            done += 1
            if code != 0:
                failed[name] = code
            outcome = "finished" if code == 0 else f"FAILED (exit {code}, see {logs / name}.log)"
            status(f"grid: {name} {outcome}; {done}/{len(runs)} done")
    return failed


def merge(runs: Sequence[Run], task: str, out: Path) -> dict[str, Any]:
    """One results file, table and curves plot from the finished runs' files."""
    results = [read_json(r.json) for r in runs if r.json.exists()]
    if task == "vae":
        from reinmax.tasks.vae import format_gradient_table, format_table
        from reinmax.tasks.vae.plots import plot_results
        from reinmax.tasks.vae.training import summary

        finished = [run for result in results if result.get("complete") for run in result["runs"]]
        table = summary(finished)
        text = format_table(table)
        gradients = format_gradient_table(table)
        if gradients:
            text += "\n\nRelative std ‖σ‖/‖mean‖ of each estimator's own gradient:\n\n" + gradients
        if finished:
            plot_results([{"runs": finished, "backend": results[0]["backend"]}], out / "vae")
        merged: dict[str, Any] = {"task": task, "runs": finished, "summary": table}
    else:
        from reinmax.tasks.listops.report import accuracy_table, plot_curves

        baseline = results[0]["majority_baseline"] if results else None
        finished = [run for result in results for run in result.get("runs", []) if "final" in run]
        text = accuracy_table(results, baseline)
        if finished:
            plot_curves(results, out / "accuracy.png", baseline)
        merged = {"task": task, "runs": finished, "majority_baseline": baseline}
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    write_json(out / "grid.json", merged)
    return {**merged, "table": text}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reinmax task grid",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--estimator", nargs="+", default=["all"], help="'all' or some names")
    parser.add_argument(
        "--config", nargs="+", default=["8x4"], help="VAE configurations CxL, or 'all'"
    )
    parser.add_argument("--seeds", type=positive_int, default=1, help="seeds per estimator")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="the VAE's first seed")
    parser.add_argument("--epochs", type=positive_int, default=None, help="the task's default")
    parser.add_argument("--parallel", type=positive_int, default=4, help="runs at once")
    parser.add_argument("--out", required=True, help="folder of the runs, grid.json and table.md")
    add_quiet_option(parser)
    add_publish_option(parser)
    return parser


@command("reinmax task grid")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task grid``: run the grid, merge it, print the table; 1 if any run failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = _parser()
    args = parser.parse_args(argv[:split])
    extra = argv[split + 1 :]
    args.estimator = choose_estimators(parser, args.estimator)
    if args.task == "vae":
        from reinmax.tasks.vae.config import CONFIGS

        args.config = list(CONFIGS) if args.config == ["all"] else args.config
    elif args.seed != 0:
        parser.error("--seed: ListOps numbers its seeds from 0; leave --seed at 0")
    out = check_destination(args.out)
    runs = grid_runs(args, extra)
    try:
        failed = run_grid(runs, args.parallel, out / "logs")
        merged = merge(runs, args.task, out)
    except ResultFileError as error:
        print(f"reinmax task grid: {error}", file=sys.stderr)
        return 2
    print(merged["table"])
    for name, code in failed.items():
        print(f"reinmax task grid: {name} failed with exit code {code}", file=sys.stderr)
    status(f"wrote {out / 'grid.json'}")
    return 1 if failed else 0

"""``reinmax main``: the conformance suite, then every task on the embedded data, one table.

The default profile (``--profile quick``) fits ten minutes on a 2-core CPU: every installed
backend against the oracle and docs/SPEC.md (one line per backend), then polynomial programming
(1,000 steps, 3 seeds: ReinMax ends below ST-Gumbel-Softmax and Straight-Through, as in the
paper, by a hundred times the spread over seeds), and the MNIST VAE (10 epochs, 2 seeds) and
ListOps (3 epochs on 1,000 expressions) with Straight-Through, ST-Gumbel-Softmax and ReinMax:
the paper profile's runs of these three, which at these sizes do not separate the estimators
(the spread over seeds is larger than the gaps; the README's long runs do). ``paper`` (also
``readme``) is the longer run the README's main-job table came from, every estimator; ``smoke``
runs the same pipeline at toy sizes, to check that everything is wired.

Each stage is one ``reinmax`` command, run in this process, and its banner (``$ reinmax ...``)
is that command: pasted into a shell after the ``export`` line of the thread settings, it
reproduces the stage. Every stage writes its JSON and figures under ``--out``; this command adds
``summary.md`` and ``main.json`` (the tables of all of them, the commands and the time each
took) and ends with one summary table and the paths of the figures.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from reinmax.runtime import (
    add_publish_option,
    add_quiet_option,
    atomic_write_bytes,
    check_destination,
    command,
    markdown_table,
    positive_int,
    status,
)
from reinmax.tasks.common import BACKENDS, THREAD_VARIABLES, fix_threads, write_json

STAGES: dict[str, tuple[str, ...]] = {
    "conformance": ("conformance",),
    "poly": ("task", "poly"),
    "vae": ("task", "vae"),
    "listops": ("task", "listops"),
}
"""Each stage and the words of its ``reinmax`` command (``reinmax.cli.COMMANDS``)."""

# The paper's central comparison: the VAE and ListOps stages of the default profile train these
# three (the poly stage every estimator that costs no K = 100 conditional draws).
_PAPER_THREE = "--estimator straight_through gumbel_softmax reinmax"

# Options of each stage per profile, before --json, --backend, --resume and --publish (which
# this command sets).
PROFILES: dict[str, dict[str, str]] = {
    "quick": {
        "conformance": "--quick --summary",
        # At 1,000 steps and 3 seeds ReinMax (and ZGR) end 0.02 below ST-Gumbel-Softmax and
        # Straight-Through at every p, 100 times the spread over seeds.
        "poly": "--estimator straight_through gumbel_softmax gapped_straight_through reinmax zgr "
        "reinforce reinforce_baseline exact --steps 1000 --seeds 3",
        # The paper profile's VAE and ListOps runs of these three estimators, number for number,
        # without the gradient analysis (which costs more than the training here).
        "vae": f"{_PAPER_THREE} --config 8x4 --epochs 10 --seeds 2 --analysis-images 0",
        "listops": f"{_PAPER_THREE}",
    },
    "paper": {
        "conformance": "--quick --summary",
        # The estimators that draw K = 100 conditional samples per step (Gumbel-Rao, ReinMax-Rao,
        # ReinMax-CV) cost minutes per hundred steps here: the README's poly table runs them.
        "poly": "--estimator straight_through gumbel_softmax gapped_straight_through reinmax zgr "
        "reinforce reinforce_baseline exact --steps 2000 --seeds 10",
        "vae": "--estimator all --config 8x4 --epochs 10 --seeds 2",
        "listops": "--estimator all",
    },
    "smoke": {
        "conformance": "--quick --summary --estimators straight_through,reinmax",
        "poly": "--estimator straight_through reinmax exact --steps 20 --seeds 2 --p 2",
        "vae": "--estimator straight_through reinmax --config 8x4 --epochs 1 --max-batches 3 "
        "--eval-samples 2 --analysis-images 1 --analysis-draws 8",
        "listops": "--estimator straight_through reinmax --epochs 1 --n-train 32 --n-test 16 "
        "--word-dim 8 --hidden-dim 8 --clf-hidden-dim 8 --max-train-length 12",
    },
}
ALIASES = {"readme": "paper"}
"""Other names of a profile (``readme``: the name the README's main-job file records)."""
# Each task's default backend: the one that runs it fastest on a CPU (measured, see README).
DEFAULT_BACKEND = {"poly": "jax", "vae": "torch", "listops": "torch"}


def stage_argv(
    name: str,
    profile: str,
    out: Path,
    *,
    backend: str | None = None,
    resume: bool = False,
    publish: bool = False,
) -> list[str]:
    """The options of stage ``name`` of ``profile`` (after its command words), writing
    ``out/<name>.json``."""
    argv = [*PROFILES[ALIASES.get(profile, profile)][name].split()]
    argv += ["--json", str(out / f"{name}.json")]
    if name != "conformance":
        argv += ["--backend", backend or DEFAULT_BACKEND[name]]
        if resume:
            argv.append("--resume")
    if publish:
        argv.append("--publish")
    return argv


def banner(name: str, argv: list[str]) -> str:
    """The shell command of stage ``name`` with options ``argv``, as the stage's banner."""
    return "$ " + shlex.join(["reinmax", *STAGES[name], *argv])


def threads_banner(threads: int) -> str:
    """The shell line that gives a pasted stage command this job's CPU threads."""
    return "$ export " + " ".join(f"{name}={threads}" for name in THREAD_VARIABLES)


def _step(name: str, argv: list[str]) -> tuple[float, float]:
    """Run stage ``name``'s command with options ``argv`` in this process, as ``reinmax`` would
    run it; returns its wall time and this process's CPU time in seconds (the CPU time says what
    the stage costs when other work shares the machine)."""
    from reinmax.cli import main as cli

    print(f"\n{banner(name, argv)}", flush=True)
    started, cpu = time.perf_counter(), time.process_time()
    code = cli([*STAGES[name], *argv])
    if code:
        raise SystemExit(f"reinmax main: step {name} failed with exit status {code}")
    return time.perf_counter() - started, time.process_time() - cpu


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def summary_tables(out: Path) -> dict[str, str]:
    """The Markdown table of every step whose JSON is in ``out``."""
    tables: dict[str, str] = {}
    report = _read(out / "conformance.json")
    if report is not None:
        runs = report["runs"]
        failed = [r for r in runs if not r["passed"]]
        worst = max((r["max_scaled_error"] for r in runs), default=0.0)
        identities = report["identities"]
        tables["conformance"] = (
            f"{len(runs) - len(failed)}/{len(runs)} backend runs pass (largest gradient error "
            f"{worst:.2f} eps·scale); {sum(i['passed'] for i in identities)}/{len(identities)} "
            "identity checks pass."
        )
    result = _read(out / "poly.json")
    if result is not None:
        from reinmax.tasks.poly import format_table

        tables["poly"] = format_table(result["summary"])
    result = _read(out / "vae.json")
    if result is not None:
        from reinmax.tasks.vae import format_table

        tables["vae"] = format_table(result["summary"])
    result = _read(out / "listops.json")
    if result is not None:
        from reinmax.tasks.listops import accuracy_table

        tables["listops"] = accuracy_table([result], result.get("majority_baseline"))
    return tables


TITLES = {
    "conformance": "Conformance (quick suite)",
    "poly": "Polynomial programming: final expected loss (mean ± std over seeds)",
    "vae": "MNIST VAE (embedded 5k digits): −ELBO in nats (mean ± std over seeds)",
    "listops": "ListOps: accuracy % on the real validation split",
}


def _ordered(values: dict[str, tuple[float, float, int]], digits: int, *, descending: bool) -> str:
    """``a m ± s < b m ± s ...``: the methods from best to worst (``descending``: larger is
    better) by their mean over ``n`` seeds; ``=`` where the shown means are equal, no ``±``
    for one seed (its std is no spread)."""
    names = sorted(values, key=lambda n: values[n][0], reverse=descending)
    text = ""
    for i, name in enumerate(names):
        mean, std, seeds = values[name]
        shown = f"{mean:.{digits}f}"
        if i:
            previous = f"{values[names[i - 1]][0]:.{digits}f}"
            text += " = " if shown == previous else (" > " if descending else " < ")
        text += f"{name} {shown}" + (f" ± {std:.{digits}f}" if seeds > 1 else "")
    return text


def _headline_conformance(report: dict[str, Any]) -> str:
    records = report["runs"] + report["identities"]
    backends = list(dict.fromkeys(r["backend"] for r in records))
    agree = [b for b in backends if all(r["passed"] for r in records if r["backend"] == b)]
    return (
        f"{len(agree)}/{len(backends)} backends agree ({', '.join(backends)}): "
        f"{sum(r['passed'] for r in report['runs'])}/{len(report['runs'])} runs, "
        f"{sum(r['passed'] for r in report['identities'])}/{len(report['identities'])} "
        "identity checks"
    )


def _headline_poly(result: dict[str, Any]) -> str:
    summary = result["summary"]
    powers = list(next(iter(summary.values())))
    p = "2" if "2" in powers else powers[0]
    values = {
        m: (s[p]["expected_loss_mean"], s[p]["expected_loss_std"], s[p]["seeds"])
        for m, s in summary.items()
        if m in _PAPER_THREE.split() or m == "exact"
    }
    return f"expected loss at p = {p}: {_ordered(values, 4, descending=False)}"


def _headline_vae(result: dict[str, Any]) -> str:
    parts = []
    for config, summary in result["summary"].items():
        values = {
            e: (s["test_neg_elbo_mean"], s["test_neg_elbo_std"], s["seeds"])
            for e, s in summary.items()
        }
        parts.append(f"{config} test −ELBO: {_ordered(values, 1, descending=False)}")
    return "; ".join(parts)


def _headline_listops(result: dict[str, Any]) -> str:
    from reinmax.tasks.common import mean_and_std

    accuracies: dict[str, list[float]] = {}
    for run in result["runs"]:
        if "final" in run:
            accuracies.setdefault(run["estimator"], []).append(100 * run["final"]["valid_accuracy"])
    values = {e: (*mean_and_std(a), len(a)) for e, a in accuracies.items()}
    baseline = result.get("majority_baseline")
    tail = f" (majority class {100 * baseline:.1f})" if baseline is not None else ""
    return f"real validation accuracy %: {_ordered(values, 1, descending=True)}{tail}"


_HEADLINES = {
    "conformance": _headline_conformance,
    "poly": _headline_poly,
    "vae": _headline_vae,
    "listops": _headline_listops,
}


def summary_table(
    out: Path, seconds: dict[str, float], cpu_seconds: dict[str, float] | None = None
) -> str:
    """One Markdown table: each stage's wall (and CPU) seconds, what it shows, its results."""
    rows = []
    for name, took in seconds.items():
        path = out / f"{name}.json"
        result = _read(path)
        shows = _HEADLINES[name](result) if result is not None else "no results file"
        cpu = f"{cpu_seconds[name]:.0f}" if cpu_seconds and name in cpu_seconds else ""
        rows.append([name, f"{took:.0f}", cpu, shows, str(path)])
    header = ["stage", "wall s", "CPU s", "what it shows", "results"]
    return markdown_table(header, rows)


def figures(out: Path) -> list[Path]:
    """The figures the stages drew under ``out``."""
    return sorted(out.rglob("*.png"))


@command("reinmax main")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reinmax main", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--profile",
        choices=sorted([*PROFILES, *ALIASES]),
        default="quick",
        help="quick (default, ten minutes on 2 cores), paper (also readme: the longer run of the "
        "README's table) or smoke (toy sizes)",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None, help="one backend for every task"
    )
    parser.add_argument("--out", type=Path, default=Path("results/main"))
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads of every framework (default 1: these small models gain little from a "
        "second thread, and lose tenfold when other work shares the cores); runs with the same "
        "thread count on one machine print identical tables",
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=list(STAGES),
        default=list(STAGES),
        help="the stages to run (default: all, in this order)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="each task continues from its checkpoints under --out (the conformance suite reruns)",
    )
    add_quiet_option(parser)
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    check_destination(args.out)
    fix_threads(args.threads)

    started = time.perf_counter()
    print(threads_banner(args.threads), flush=True)
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    commands: dict[str, str] = {}
    for name in args.steps:
        step_argv = stage_argv(
            name,
            args.profile,
            args.out,
            backend=args.backend,
            resume=args.resume,
            publish=args.publish,
        )
        commands[name] = banner(name, step_argv)
        seconds[name], cpu_seconds[name] = _step(name, step_argv)

    tables = summary_tables(args.out)
    table = summary_table(args.out, seconds, cpu_seconds)
    drawn = figures(args.out)
    text = "\n\n".join(
        f"### {TITLES[name]} ({seconds[name]:.0f} s)\n\n{tables[name]}"
        for name in args.steps
        if name in tables
    )
    total = time.perf_counter() - started
    atomic_write_bytes(args.out / "summary.md", f"{table}\n\n{text}\n".encode())
    write_json(
        args.out / "main.json",
        {
            "profile": args.profile,
            "threads": args.threads,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "total_seconds": total,
            "commands": commands,
            "tables": tables,
            "summary": table,
            "figures": [str(f) for f in drawn],
        },
    )
    print(f"\n{table}\n\nfigures:")
    for path in drawn:
        print(f"  {path}")
    status(f"\nwrote {args.out / 'summary.md'} and {args.out / 'main.json'} ({total:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``reinmax main``: the conformance suite, then every task on the embedded data, one table.

The default profile (``--profile readme``) is the run whose numbers the README shows; ``smoke``
runs the same pipeline at toy sizes in about a minute, to check that everything is wired.
Every step writes its own JSON and plots under ``--out``; this command adds ``summary.md`` and
``main.json`` with the tables of all of them and the time each step took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from reinmax.runtime import add_quiet_option, command, positive_int, status
from reinmax.tasks.common import BACKENDS, fix_threads, write_json

# Arguments of each step per profile, before --backend and --json (which this command sets).
PROFILES: dict[str, dict[str, str]] = {
    "readme": {
        "conformance": "--quick",
        # The estimators that draw K = 100 conditional samples per step (Gumbel-Rao, ReinMax-Rao,
        # ReinMax-CV) cost minutes per hundred steps here: the README's poly table runs them.
        "poly": "--estimator straight_through gumbel_softmax gapped_straight_through reinmax zgr "
        "reinforce reinforce_baseline exact --steps 2000 --seeds 10",
        "vae": "--estimator all --config 8x4 --epochs 10 --seeds 2",
        "listops": "--estimator all",
    },
    "smoke": {
        "conformance": "--quick --estimators straight_through,reinmax",
        "poly": "--estimator straight_through reinmax exact --steps 20 --seeds 2 --p 2",
        "vae": "--estimator straight_through reinmax --config 8x4 --epochs 1 --max-batches 3 "
        "--eval-samples 2 --analysis-images 1 --analysis-draws 8",
        "listops": "--estimator straight_through reinmax --epochs 1 --n-train 32 --n-test 16 "
        "--word-dim 8 --hidden-dim 8 --clf-hidden-dim 8 --max-train-length 12",
    },
}
# Each task's default backend: the one that runs it fastest on a CPU (measured, see README).
DEFAULT_BACKEND = {"poly": "jax", "vae": "torch", "listops": "torch"}


def _step(name: str, argv: list[str]) -> float:
    """Run one step's command in this process; returns its wall time in seconds."""
    from importlib import import_module

    module = {
        "conformance": "reinmax.conformance.cli",
        "poly": "reinmax.tasks.poly",
        "vae": "reinmax.tasks.vae",
        "listops": "reinmax.tasks.listops",
    }[name]
    status(f"\n=== reinmax {name} {' '.join(argv)}")
    started = time.perf_counter()
    code = import_module(module).main(argv)
    if code:
        raise SystemExit(f"reinmax main: step {name} failed with exit status {code}")
    return time.perf_counter() - started


def summary_tables(out: Path) -> dict[str, str]:
    """The Markdown table of every step whose JSON is in ``out``."""
    tables: dict[str, str] = {}
    path = out / "conformance.json"
    if path.exists():
        report = json.loads(path.read_text())
        runs = report["runs"]
        failed = [r for r in runs if not r["passed"]]
        worst = max((r["max_scaled_error"] for r in runs), default=0.0)
        identities = report["identities"]
        tables["conformance"] = (
            f"{len(runs) - len(failed)}/{len(runs)} backend runs pass (largest gradient error "
            f"{worst:.2f} eps·scale); {sum(i['passed'] for i in identities)}/{len(identities)} "
            "identity checks pass."
        )
    path = out / "poly.json"
    if path.exists():
        from reinmax.tasks.poly import format_table

        tables["poly"] = format_table(json.loads(path.read_text())["summary"])
    path = out / "vae.json"
    if path.exists():
        from reinmax.tasks.vae import format_table

        tables["vae"] = format_table(json.loads(path.read_text())["summary"])
    path = out / "listops.json"
    if path.exists():
        from reinmax.tasks.listops import accuracy_table

        result = json.loads(path.read_text())
        tables["listops"] = accuracy_table([result], result.get("majority_baseline"))
    return tables


TITLES = {
    "conformance": "Conformance (quick suite)",
    "poly": "Polynomial programming: final expected loss (mean ± std over seeds)",
    "vae": "MNIST VAE (embedded 5k digits): −ELBO in nats (mean ± std over seeds)",
    "listops": "ListOps: accuracy % on the real validation split",
}


@command("reinmax main")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reinmax main", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="readme")
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None, help="one backend for every task"
    )
    parser.add_argument("--out", type=Path, default=Path("results/main"))
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=2,
        help="CPU threads of every framework (default 2): runs with the same thread count on "
        "one machine print identical tables",
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=["conformance", "poly", "vae", "listops"],
        default=["conformance", "poly", "vae", "listops"],
    )
    add_quiet_option(parser)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    fix_threads(args.threads)

    profile = PROFILES[args.profile]
    seconds: dict[str, float] = {}
    for name in args.steps:
        step_argv = [*profile[name].split(), "--json", str(args.out / f"{name}.json")]
        if name != "conformance":
            step_argv += ["--backend", args.backend or DEFAULT_BACKEND[name]]
        seconds[name] = _step(name, step_argv)

    tables = summary_tables(args.out)
    text = "\n\n".join(
        f"### {TITLES[name]} ({seconds[name]:.0f} s)\n\n{tables[name]}"
        for name in args.steps
        if name in tables
    )
    (args.out / "summary.md").write_text(text + "\n", encoding="utf-8")
    write_json(
        args.out / "main.json",
        {"profile": args.profile, "threads": args.threads, "seconds": seconds, "tables": tables},
    )
    print("\n" + text)
    status(f"\nwrote {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

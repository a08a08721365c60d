"""The ``reinmax`` command: one entry point for the conformance suite, the tasks and benchmarks."""

from __future__ import annotations

import importlib
import os
import sys

# (words, module): ``reinmax task poly ...`` runs ``reinmax.tasks.poly.main([...])``. Each module
# is imported only when its command runs, so one command never pays for another's frameworks.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("conformance",): (
        "reinmax.conformance.cli",
        "every backend against the oracle and docs/SPEC.md",
    ),
    ("fuzz",): ("reinmax.conformance.fuzz", "random inputs against docs/SPEC.md's invariants"),
    ("task", "poly"): ("reinmax.tasks.poly", "polynomial programming"),
    ("task", "vae"): ("reinmax.tasks.vae", "MNIST VAE with categorical latents"),
    ("task", "listops"): ("reinmax.tasks.listops", "ListOps unsupervised parsing"),
    ("task", "grid"): ("reinmax.tasks.grid", "many runs of a task at once, resumed, one table"),
    ("task", "listops-eval"): (
        "reinmax.tasks.listops.evaluation",
        "score a ListOps checkpoint",
    ),
    ("study", "bias"): ("reinmax.tasks.poly.bias", "bias and variance of every estimator"),
    ("bench",): ("reinmax.tasks.bench", "speed and memory benchmarks"),
    ("main",): ("reinmax.tasks.main", "conformance, then every task, with a results table"),
    ("readme",): ("reinmax.tasks.readme", "redraw README.md's result tables from their files"),
}


def _usage() -> str:
    lines = ["usage: reinmax COMMAND [options]   (reinmax COMMAND --help for its options)", ""]
    for words, (_, summary) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<20} {summary}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command line's own output: TensorFlow's C++ INFO lines (oneDNN notices) would bury the
    # progress lines. A user's own setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    for words, (module, _) in COMMANDS.items():
        if tuple(argv[: len(words)]) == words:
            return int(importlib.import_module(module).main(argv[len(words) :]) or 0)
    print(_usage(), file=sys.stderr)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())

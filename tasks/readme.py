"""``reinmax readme``: rewrite the result tables of README.md and the docs pages from their JSON.

Every table of results in README.md sits between two markers that name how to draw it and the
file it comes from::

    <!-- results: poly docs/results/poly/full.json -->
    | method | ... |
    <!-- /results -->

The file is written by the command printed above the table (``--json`` or ``--out``); this
command redraws every table from its file, so that the README says only what the files hold.
``--check`` changes nothing and exits 1 if any table differs from its file (a test runs it).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reinmax.runtime import add_quiet_option, command, markdown_table, read_json

__all__ = [
    "BLOCK",
    "DEFAULT_PAGES",
    "KINDS",
    "Block",
    "blocks",
    "main",
    "provenance_line",
    "render",
]

BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<kind>[\w-]+) (?P<files>[^>]*?) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- /results -->)",
    re.DOTALL,
)


class Block:
    """One results block of the README: its kind, its files and its current text."""

    def __init__(self, match: re.Match[str]) -> None:
        self.kind = match["kind"]
        self.files = match["files"].split()
        self.body = match["body"]
        self.start = match.start()

    def __repr__(self) -> str:
        return f"Block({self.kind}, {self.files})"


def blocks(text: str) -> list[Block]:
    """The results blocks of a README's text, in order."""
    return [Block(m) for m in BLOCK.finditer(text)]


# ---------------------------------------------------------------------------------------------
# How each kind of block is drawn from its files
# ---------------------------------------------------------------------------------------------


def _conformance_backends(results: Sequence[dict]) -> str:
    """Estimators × backends: the largest gradient error, float64 / float32, over transforms."""
    (report,) = results
    runs = report["runs"]
    estimators = list(dict.fromkeys(r["estimator"] for r in runs))
    backends = list(dict.fromkeys(r["backend"] for r in runs))
    dtypes = list(dict.fromkeys(r["dtype"] for r in runs))

    def cell(estimator: str, backend: str) -> str:
        mine = [r for r in runs if r["estimator"] == estimator and r["backend"] == backend]
        worst = [
            max((r["max_scaled_error"] for r in mine if r["dtype"] == d), default=None)
            for d in dtypes
        ]
        mark = "✓" if mine and all(r["passed"] for r in mine) else "✗"
        return " / ".join("–" if w is None else f"{w:.2f}" for w in worst) + f" {mark}"

    table = markdown_table(
        ["estimator", *backends], [[e, *(cell(e, b) for b in backends)] for e in estimators]
    )
    passed = sum(r["passed"] for r in runs)
    identities = report["identities"]
    return (
        f"{table}\n\n{passed}/{len(runs)} backend runs and "
        f"{sum(i['passed'] for i in identities)}/{len(identities)} identity checks pass; "
        f"{sum(r['sample_mismatches'] for r in runs)} samples differ from the oracle (dtypes: "
        f"{' / '.join(dtypes)})."
    )


def _conformance_identities(results: Sequence[dict]) -> str:
    """The identity checks on the first backend (NumPy); the others must give the same."""
    (report,) = results
    identities = report["identities"]
    first = identities[0]["backend"] if identities else "numpy"
    return markdown_table(
        ["identity", "check", "estimator", f"value ({first})", "result"],
        (
            (r["identity"], r["check"], r["estimator"], f"{r['value']:.3g}", _passed(r))
            for r in identities
            if r["backend"] == first
        ),
    )


def _passed(record: dict) -> str:
    return "pass" if record["passed"] else "FAIL"


def _main_job(results: Sequence[dict]) -> str:
    """What ``reinmax main`` printed: each step's table and time."""
    from reinmax.tasks.main import TITLES

    (result,) = results
    seconds = result["seconds"]
    parts = [
        f"Profile `{result['profile']}`, {result.get('threads', '?')} threads, "
        f"{sum(seconds.values()) / 60:.1f} minutes in all."
    ]
    for name, table in result["tables"].items():
        parts.append(f"**{TITLES[name]}** ({seconds[name]:.0f} s)\n\n{table}")
    return "\n\n".join(parts)


def _poly(results: Sequence[dict]) -> str:
    from reinmax.tasks.poly.results import format_table, merge

    return format_table(merge(results)["summary"])


def _vae_summary(results: Sequence[dict]) -> dict:
    """The summary over the finished runs of every file (VAE results or a grid's ``grid.json``)."""
    from reinmax.tasks.vae.training import summary

    return summary([run for result in results for run in result["runs"]])


def _vae(results: Sequence[dict]) -> str:
    from reinmax.tasks.vae import format_table

    return format_table(_vae_summary(results))


def _vae_gradients(results: Sequence[dict]) -> str:
    from reinmax.tasks.vae import format_gradient_table

    return format_gradient_table(_vae_summary(results))


def _listops(results: Sequence[dict]) -> str:
    from reinmax.tasks.listops import accuracy_table

    return accuracy_table(list(results), results[0].get("majority_baseline"))


def _bench(results: Sequence[dict]) -> str:
    from reinmax.tasks.bench import table

    (result,) = results
    return table(result["records"])


def _bench_wide(results: Sequence[dict]) -> str:
    from reinmax.tasks.bench.records import wide_table

    (result,) = results
    return wide_table(result["records"])


def _bench_steps(results: Sequence[dict]) -> str:
    """The estimator steps with the framework's own generator, and the softmax floor."""
    from reinmax.tasks.bench.records import SOFTMAX_PASS, is_draw, split_name, wide_table

    (result,) = results

    def keep(name: str) -> bool:
        return split_name(name)[1] == "native" and not is_draw(name) and name != SOFTMAX_PASS

    return wide_table(result["records"], keep)


def _bench_noise(results: Sequence[dict]) -> str:
    """Drawing the noise alone, portable and native, against one softmax forward pass."""
    from reinmax.tasks.bench.records import SOFTMAX_PASS, is_draw, wide_table

    (result,) = results
    return wide_table(result["records"], lambda name: is_draw(name) or name == SOFTMAX_PASS)


def _bench_goals(results: Sequence[dict]) -> str:
    (result,) = results
    lines = ["| goal | measured | met |", "|---|---|---|"]
    for goal in result["goals"]:
        lines.append(f"| {goal['goal']} | {goal['value']:.2f} | {'yes' if goal['met'] else 'NO'} |")
    return "\n".join(lines)


def _bias(results: Sequence[dict]) -> str:
    from reinmax.tasks.poly.bias import slope_table

    (result,) = results
    return slope_table(result)


def _fuzz(results: Sequence[dict]) -> str:
    """One column per backend over the fuzz runs' files. The reference backend (NumPy) of
    runs with the same seed checks the same calls, so an equal column is shown once; a column
    that differs keeps its file's number."""
    from reinmax.conformance.fuzz import summary_table

    merged: dict[str, dict] = {}
    for number, result in enumerate(results, 1):
        for backend, tally in result.items():
            if backend == "provenance" or merged.get(backend) == tally:
                continue
            merged[backend if backend not in merged else f"{backend} (file {number})"] = tally
    return summary_table(merged)


def _portable_sampling(results: Sequence[dict]) -> str:
    from reinmax.tasks.bench.portable_sampling import mismatch_table

    (result,) = results
    return mismatch_table(result["records"])


KINDS: dict[str, Callable[[Sequence[dict]], str]] = {
    "conformance-backends": _conformance_backends,
    "conformance-identities": _conformance_identities,
    "main": _main_job,
    "poly": _poly,
    "vae": _vae,
    "vae-gradients": _vae_gradients,
    "listops": _listops,
    "bench": _bench,
    "bench-wide": _bench_wide,
    "bench-steps": _bench_steps,
    "bench-noise": _bench_noise,
    "bench-goals": _bench_goals,
    "bias": _bias,
    "fuzz": _fuzz,
    "portable-sampling": _portable_sampling,
}
"""Block kind → how to draw it from the JSON of its files."""


def render(text: str, root: Path) -> str:
    """``text`` with every results block redrawn from its files (paths relative to ``root``),
    each followed by the line that says which machine and versions produced it."""

    def redraw(match: re.Match[str]) -> str:
        block = Block(match)
        draw = KINDS.get(block.kind)
        if draw is None:
            raise ValueError(f"README block of unknown kind {block.kind!r}; known: {sorted(KINDS)}")
        if not block.files:
            raise ValueError(f"README block {block.kind!r} names no results file")
        results = [_load(root / name) for name in block.files]
        table = draw(results).rstrip()
        return f"{match['open']}{table}\n\n{provenance_line(results)}\n{match['close']}"

    return BLOCK.sub(redraw, text)


def provenance_line(results: Sequence[Any]) -> str:
    """One line on where the results come from: the provenance of each distinct run."""
    seen: list[str] = []
    for result in results:
        record = result.get("provenance") if isinstance(result, dict) else None
        line = _describe(record)
        if line not in seen:
            seen.append(line)
    return "<sub>" + "; ".join(seen) + "</sub>"


def _describe(record: dict | None) -> str:
    if not record:
        return "Provenance not recorded."
    versions = ", ".join(f"{k} {v}" for k, v in (record.get("frameworks") or {}).items())
    commit = (record.get("commit") or "")[:7] or "unknown commit"
    machine = record.get("machine")
    if machine:
        gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
        # A run that imported no framework before writing records no thread count.
        threads = machine.get("threads")
        used = f", {threads} threads" if threads is not None else ""
        where = (
            f"on {machine.get('cpu') or 'an unknown CPU'} ({machine.get('cores')} cores{used}{gpu})"
        )
    else:
        where = "machine not recorded"
    time = (record.get("time") or "")[:10] or "date unknown"
    kind = "Reconstructed provenance" if record.get("reconstructed") else "Produced"
    return (
        f"{kind}: reinmax {record.get('reinmax')} at {commit}, {versions or 'versions unknown'}, "
        f"{where}, {time}."
    )


def _load(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist; run the command above it")
    return read_json(path)


DEFAULT_PAGES = ("README.md", "docs/results.md", "docs/conformance.md", "docs/benchmarks.md")
"""The files whose results blocks ``reinmax readme`` redraws by default (paths from the root)."""


@command("reinmax readme")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reinmax readme", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--readme",
        type=Path,
        action="append",
        help="a markdown file to redraw (repeatable; default: README.md and the docs pages "
        "with results)",
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="where the results paths start (default: .)"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a table is out of date"
    )
    add_quiet_option(parser)
    args = parser.parse_args(argv)
    if args.readme:
        paths = args.readme
        root = args.root or paths[0].resolve().parent
    else:
        root = args.root or Path(".")
        paths = [root / page for page in DEFAULT_PAGES if (root / page).is_file()]
    total = redrawn = 0
    stale: list[str] = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        try:
            new = render(text, root.resolve())
        except (FileNotFoundError, ValueError) as error:
            print(f"reinmax readme: {path}: {error}", file=sys.stderr)
            return 2
        changed = [
            f"{path}: {old.kind} {' '.join(old.files)}"
            for old, fresh in zip(blocks(text), blocks(new))
            if old.body != fresh.body
        ]
        stale += changed
        total += len(blocks(new))
        if changed and not args.check:
            path.write_text(new, encoding="utf-8")
            redrawn += len(changed)
    if args.check:
        for name in stale:
            print(f"out of date: {name}", file=sys.stderr)
        return 1 if stale else 0
    print(f"{total} tables, {redrawn} redrawn")
    return 0

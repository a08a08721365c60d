"""``reinmax conformance`` (also ``python -m reinmax.conformance``): run the suite, print a table.

Exits 0 when everything passes, 1 when anything fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from reinmax.backends import registered_names
from reinmax.conformance import harness
from reinmax.conformance.ports import TAKES, Port, check_port, load_port
from reinmax.conformance.suite import DTYPES, Report, format_report, format_summary, run_suite
from reinmax.core import REGISTRY
from reinmax.runtime import (
    add_publish_option,
    add_quiet_option,
    check_destination,
    command,
    non_negative_int,
    status,
)


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--{what} takes a comma-separated list of {', '.join(allowed)}; got {text!r}"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reinmax conformance",
        description="Every installed backend against the NumPy float64 oracle, each other and "
        "docs/SPEC.md's exact identities, on the same host-drawn noise.",
    )
    parser.add_argument(
        "--backends",
        type=lambda t: _names(t, registered_names(), "backends"),
        help="comma-separated backends (default: every installed one)",
    )
    parser.add_argument(
        "--estimators",
        type=lambda t: _names(t, tuple(REGISTRY), "estimators"),
        help="comma-separated estimators (default: every registered one)",
    )
    parser.add_argument(
        "--dtypes",
        type=lambda t: _names(t, harness.DTYPES, "dtypes"),
        default=list(DTYPES),
        help=f"comma-separated dtypes (default: {','.join(DTYPES)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="skip torch.compile, fewer Monte Carlo draws"
    )
    parser.add_argument("--json", metavar="PATH", help="write every record to PATH as JSON")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print one line per backend (and any failure) instead of the tables; the records "
        "go to --json",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the host noise (Philox)"
    )
    port = parser.add_argument_group(
        "a port of your own (instead of the suite)",
        "check module:function against --reference; see reinmax.conformance.ports for the cases",
    )
    port.add_argument("--port", metavar="MODULE:FUNCTION", help="the port's function")
    port.add_argument("--framework", help="its framework: torch, jax or tensorflow")
    port.add_argument("--reference", help="the registered estimator it ports")
    port.add_argument(
        "--takes",
        type=lambda t: tuple(n.strip() for n in t.split(",")),
        default=TAKES,
        help=f"the arguments it takes, in order (default: {','.join(TAKES)})",
    )
    port.add_argument(
        "--sampler", help="the function it samples with, for a port that takes no noise"
    )
    port.add_argument(
        "--tau", choices=("number", "array"), default="array", help="the tau it takes"
    )
    return parser


def _port_report(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Report:
    if not (args.framework and args.reference):
        parser.error("--port needs --framework and --reference")
    if args.reference not in REGISTRY:
        parser.error(f"--reference must be one of {', '.join(REGISTRY)}, got {args.reference}")
    # The user's module is found where the command runs, as `python -m` would.
    sys.path.insert(0, os.getcwd())
    try:
        fn = load_port(args.port)
    except (ImportError, AttributeError, ValueError) as error:
        parser.error(f"--port {args.port}: {error}")
    port = Port(fn, args.framework, args.takes, args.sampler, args.tau)
    return check_port(args.port, port, args.reference, args.dtypes, seed=args.seed)


@command("reinmax conformance")
def main(argv: list[str] | None = None) -> int:
    """Run the suite with command-line options; the exit status says whether it passed."""
    parser = _parser()
    add_quiet_option(parser)
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if args.json:
        check_destination(args.json)
    start = time.perf_counter()
    try:
        if args.port:
            report = _port_report(parser, args)
        else:
            report = run_suite(
                args.backends, args.estimators, args.dtypes, quick=args.quick, seed=args.seed
            )
    except ValueError as error:
        print(f"reinmax conformance: {error}", file=sys.stderr)
        return 2
    if not args.port and args.quick and args.seed == 0 and list(args.dtypes) == list(DTYPES):
        from reinmax.conformance import remember

        remember(report)  # the tasks' gate runs this very suite: its passes count there too
    print(format_summary(report) if args.summary else format_report(report))
    done = (
        f"{len(report.records)} runs and {len(report.identities)} identity checks in "
        f"{time.perf_counter() - start:.1f} s"
    )
    if args.summary:
        status(done)
    else:
        print(f"\n{done}")
    if args.json:
        from reinmax.runtime import write_json

        write_json(
            args.json,
            {"passed": report.passed, "runs": report.records, "identities": report.identities},
        )
        (status if args.summary else print)(f"wrote {args.json}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""``reinmax bench``: speed and memory of every estimator, forward plus backward, and of its noise.

Each case times one forward and backward pass (median of repeats after warm-up, with the
interquartile range) of an estimator in float32, with the category axis last, eagerly and under
the framework's compiler, beside three baselines measured on the same tensors:

- ``reference``: the PyPI package ``reinmax`` 0.1.0 (PyTorch), loaded from its own directory
  (``.reference/reinmax-0.1.0`` or ``--reference-dir``) under another module name;
- ``torch_gumbel_softmax``: ``torch.nn.functional.gumbel_softmax(hard=True)``;
- ``softmax``: the floor, one softmax forward plus backward in the same framework.

The estimators are those of the core's registry when the command line is read, so that one
registered at run time (``reinmax.register_estimator``) is benchmarked like the others, with its
registered default options, or at the values ``--option NAME=V1,V2`` gives every estimator that
has that option (``--option gumbel_rao.k=1,10,100`` for one estimator only; Gumbel-Rao's K is
1, 10 and 100 by default). Every case returns the loss as well as the gradient, so that no
compiler can drop the sampling as dead code (an estimator whose backward never reads the sample
would otherwise look cheaper).

The noise, too (:mod:`.cases`): every estimator step once per ``--rng``, with the framework's
own generator (named as the estimator), explicit uniforms drawn beforehand (``[noise]``), and
the portable generator of :mod:`reinmax.noise` (``[seed]``); and the group ``noise`` times
drawing each noise layout alone, portable and the framework's own, against one softmax forward
pass (the goal: the portable per-row draw below it, and the per-category draw reported against
the same bar). Noise over ``--max-noise-gib`` is not drawn (Gumbel-Rao's K = 100 at large shapes).

Memory is what each framework can report on its own terms: PyTorch, the bytes saved for the
backward pass (``saved_tensors_hooks``), and on a GPU also the peak of allocated memory during
the step; JAX under ``jit``, the compiled program's temporary and output bytes
(``memory_analysis``); TensorFlow, not measured (None).

``--device cuda`` runs PyTorch on the first CUDA device (each step ends with a synchronize) and
JAX on its default device, which must then be a GPU. Before timing anything it checks PyTorch on
the device against the CPU (:func:`reinmax.conformance.device.device_check`) and refuses to time
a device that disagrees.

This package holds what every framework shares (the cases in :mod:`.cases`, timing in
:mod:`.timing`, records, ratios, goals and tables in :mod:`.records`, the figure in :mod:`.plot`,
and the command line here); each framework's module (:data:`FRAMEWORKS`) holds its idiom only,
the functions of :class:`.framework.Framework`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reinmax.backends import load_driver
from reinmax.core import REGISTRY
from reinmax.runtime import (
    add_publish_option,
    add_quiet_option,
    check_destination,
    command,
    positive_float,
    positive_int,
    progress,
    status,
    write_json,
)
from reinmax.tasks.bench.cases import NOISE, RNGS, OptionSpec, Plan, build, configs, parse_option
from reinmax.tasks.bench.framework import Framework, Step
from reinmax.tasks.bench.plot import plot
from reinmax.tasks.bench.records import (
    TAU,
    Record,
    as_records,
    goals,
    noise_table,
    ratios,
    step_noise_table,
    table,
)
from reinmax.tasks.bench.timing import measure
from reinmax.tasks.common import estimator_names, fix_threads

__all__ = [
    "BASELINES",
    "DEFAULT_OPTIONS",
    "DEFAULT_SHAPES",
    "DEVICES",
    "FRAMEWORKS",
    "NOISE",
    "RNGS",
    "TAU",
    "Framework",
    "Record",
    "as_records",
    "check_device",
    "framework",
    "goals",
    "load_reference",
    "machine",
    "main",
    "measure",
    "noise_table",
    "parse_args",
    "plot",
    "ratios",
    "run",
    "step_noise_table",
    "table",
    "versions",
]

FRAMEWORKS = {
    "torch": "reinmax.tasks.bench.torch",
    "jax": "reinmax.tasks.bench.jax",
    "tensorflow": "reinmax.tasks.bench.tensorflow",
}
"""Each backend the benchmark times, and its module (in the order goals are listed)."""
DEFAULT_SHAPES = ((64, 4, 8), (100, 30, 10), (1024, 64, 64), (4096, 32, 256))
BASELINES = ("reference", "torch_gumbel_softmax", "softmax")
DEVICES = ("cpu", "cuda")
DEFAULT_OPTIONS = (OptionSpec("gumbel_rao", "k", (1, 10, 100)),)
"""Options benchmarked at more than their default unless ``--option`` says otherwise: the
price of Gumbel-Rao's K (the research code uses K = 100)."""
MAX_NOISE_GIB = 2.0
_REPO = Path(__file__).resolve().parents[2]


def framework(backend: str) -> Framework:
    """The benchmark's module for ``backend``, its framework imported first by the backend's
    driver (which imports torch before tensorflow: the other order crashes some builds)."""
    if backend not in FRAMEWORKS:
        raise ValueError(f"backend must be one of {', '.join(FRAMEWORKS)}, got {backend!r}")
    load_driver(backend)
    return importlib.import_module(FRAMEWORKS[backend])


def _selected(backends: Sequence[str]) -> list[Framework]:
    """The modules of ``backends``, in the order of :data:`FRAMEWORKS`."""
    return [framework(name) for name in FRAMEWORKS if name in backends]


def load_reference(directory: Path | None = None) -> Any | None:
    """The reference package's module, loaded from its file as ``reinmax_reference``."""
    directory = directory or _REPO / ".reference" / "reinmax-0.1.0"
    path = directory / "reinmax" / "reinmax.py"
    if not path.exists():
        return None
    if "reinmax_reference" in sys.modules:
        return sys.modules["reinmax_reference"]
    spec = importlib.util.spec_from_file_location("reinmax_reference", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the reference package from {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered so that torch.compile can find the module of the functions it traces.
    sys.modules["reinmax_reference"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def check_device(backends: Sequence[str], device: str) -> None:
    """Refuse (``ValueError`` or ``RuntimeError``) a device that one of ``backends`` cannot be
    timed on."""
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    for module in _selected(backends):
        module.check_device(device)


def _error(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:300]


def _fill(module: Framework, rec: Record, step: Step, times: list[float], device: str) -> None:
    """``rec``'s median and spread from ``times``, then its memory; an error on the way is
    ``rec``'s error."""
    try:
        q = statistics.quantiles(times, n=4)
        rec.median_ms = 1e3 * statistics.median(times)
        rec.iqr_ms = 1e3 * (q[2] - q[0])
        rec.repeats = len(times)
        module.memory(rec, step, device)
    except Exception as err:  # a failing case is reported, not fatal to the others
        rec.error = _error(err)


def _group(backend: str, shape: tuple[int, ...], plan: Plan) -> list[Record]:
    """Every case of one backend at one shape, built, timed and probed in its settings."""
    module = framework(backend)
    records = []
    with module.settings():
        steps = build(module, backend, shape, plan)
        measured, errors = measure(steps, plan.min_time, plan.max_repeats)
        for (name, mode), step in steps.items():
            rec = Record(backend, name, mode, tuple(shape), math.nan, math.nan, 0)
            if (name, mode) in errors:
                rec.error = _error(errors[(name, mode)])
            else:
                _fill(module, rec, step, measured[(name, mode)], plan.device)
            records.append(rec)
    return records


def _reference(names: Sequence[str], directory: Path | None) -> Any | None:
    """The reference package when ``names`` asks for it; a note on stderr when it is missing."""
    if "reference" not in names:
        return None
    reference = load_reference(directory)
    if reference is None:
        print("reference package not found: run .ci/setup or pass --reference-dir", file=sys.stderr)
    return reference


def run(
    backends: list[str],
    names: list[str],
    shapes: list[tuple[int, ...]],
    modes: list[str],
    *,
    min_time: float,
    max_repeats: int,
    rngs: Sequence[str] = RNGS,
    options: Sequence[OptionSpec] = (),
    max_noise_gib: float = MAX_NOISE_GIB,
    reference_dir: Path | None = None,
    device: str = "cpu",
    on_records: Callable[[list[Record]], None] | None = None,
) -> list[Record]:
    """Every case of ``names`` (estimators at the values of ``options``, each once per way of
    drawing its noise in ``rngs``; baselines; the group ``noise``) × ``modes`` at each shape and
    backend; ``on_records`` gets the records so far after each shape and backend (for partial
    results on disk)."""
    for backend in backends:
        framework(backend)
    if device != "cpu":
        check_device(backends, device)
    reference = _reference(names, reference_dir)
    plan = Plan(
        names,
        configs(names, options),
        rngs,
        modes,
        min_time,
        max_repeats,
        device,
        reference,
        max_noise_gib * 2**30,
    )
    groups = [(shape, backend) for shape in shapes for backend in backends]
    records: list[Record] = []
    for shape, backend in progress(groups, total=len(groups), desc="bench"):
        records += _group(backend, shape, plan)
        if on_records is not None:
            on_records(records)
    return records


# ---------------------------------------------------------------------------------------------
# The machine, the device check, the command line
# ---------------------------------------------------------------------------------------------


def machine(backends: Sequence[str] = ()) -> dict[str, Any]:
    """The host, and what each of ``backends`` says of it (threads, devices)."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    for module in _selected(backends):
        info.update(module.machine())
    return info


def versions(backends: Sequence[str]) -> dict[str, str]:
    """Python's version and each of ``backends``' framework's."""
    return {"python": platform.python_version(), **{b: framework(b).VERSION for b in backends}}


def _device_checks(backends: Sequence[str], device: str) -> list[dict[str, Any]] | None:
    """Every check of ``backends`` on ``device`` against the CPU; None if none checks."""
    check_device(backends, device)
    checks = [module.device_check(device) for module in _selected(backends)]
    found = [records for records in checks if records is not None]
    return [r for records in found for r in records] if found else None


def _device_agrees(args: argparse.Namespace, checked: list[dict[str, Any]]) -> bool:
    """Print the device check's summary; if any check failed, write it and say why not."""
    failed = [r for r in checked if not r["passed"]]
    worst = max(r["max_scaled_error"] for r in checked)
    passed = len(checked) - len(failed)
    print(
        f"{args.device} against cpu: {passed}/{len(checked)} checks passed, "
        f"{sum(r['sample_mismatches'] for r in checked)} samples differ, "
        f"largest gradient difference {worst:.2f} eps·scale"
    )
    if failed:
        write_json(args.json, {"device_check": checked})
        print(f"not timing a device that disagrees with the CPU: {failed}", file=sys.stderr)
    return not failed


def _dispatch_overhead(backends: Sequence[str]) -> float | None:
    """The top-level dispatch overhead, from the first of ``backends`` that measures it."""
    for module in _selected(backends):
        overhead = module.dispatch_overhead_us()
        if overhead is not None:
            return overhead
    return None


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 64x4x8, got {text!r}") from None
    if len(shape) < 1 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must have positive sizes, got {text!r}")
    return shape


def _option(text: str) -> OptionSpec:
    try:
        return parse_option(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    """The command line, with ``names`` (estimators and baselines) as ``--estimators``' default."""
    parser = argparse.ArgumentParser(prog="reinmax bench", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--backends", nargs="+", default=list(FRAMEWORKS))
    add("--estimators", nargs="+", default=list(names), help=f"of {', '.join(names)}")
    add("--shapes", nargs="+", type=_parse_shape, default=list(DEFAULT_SHAPES))
    add("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    add(
        "--rng",
        nargs="+",
        default=list(RNGS),
        choices=list(RNGS),
        dest="rngs",
        help="an estimator's noise in a step: its framework's generator, explicit, portable",
    )
    add(
        "--option",
        nargs="+",
        action="extend",
        type=_option,
        default=[],
        dest="options",
        metavar="[ESTIMATOR.]NAME=V1[,V2...]",
        help="values of an option for every estimator that has it (or one estimator); after "
        "the default gumbel_rao.k=1,10,100, the last that applies wins",
    )
    add(
        "--max-noise-gib",
        type=positive_float,
        default=MAX_NOISE_GIB,
        help="noise larger than this is not drawn (its cases are skipped)",
    )
    add("--min-time", type=positive_float, default=1.0, help="seconds of repeats per case")
    add("--threads", type=positive_int, default=None, help="CPU threads (default: each's own)")
    add("--max-repeats", type=positive_int, default=200)
    add("--reference-dir", type=Path, default=None)
    add("--device", default="cpu", choices=list(DEVICES))
    add("--json", type=Path, default=Path("results/bench/bench.json"))
    add("--plot", type=Path, default=None, help="default: beside the JSON")
    add_quiet_option(parser)
    add_publish_option(parser)
    return parser


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every ``--option`` names an option of a chosen estimator, and every value builds."""
    for spec in args.options:
        owners = [spec.estimator] if spec.estimator else args.estimators
        if not any(spec.option in REGISTRY[n].defaults for n in owners if n in REGISTRY):
            parser.error(f"--option {spec.option}: no estimator of {owners} has that option")
    args.options = [*DEFAULT_OPTIONS, *args.options]
    try:
        configs(args.estimators, args.options)
    except (TypeError, ValueError) as err:
        parser.error(f"--option: {err}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, its names and options checked against the registry as it is now and
    the backends against :data:`FRAMEWORKS` (a wrong one is a usage error)."""
    names = (*estimator_names(), *BASELINES, NOISE)
    parser = _parser(names)
    args = parser.parse_args(argv)
    unknown = set(args.estimators) - set(names)
    if unknown:
        parser.error(f"unknown --estimators {sorted(unknown)}; choose from {names}")
    unknown = set(args.backends) - set(FRAMEWORKS)
    if unknown:
        parser.error(f"unknown --backends {sorted(unknown)}; choose from {', '.join(FRAMEWORKS)}")
    _check_options(parser, args)
    return args


def _result(
    args: argparse.Namespace,
    records: list[Record],
    started: float,
    checked: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """Everything the results file holds."""
    overhead = _dispatch_overhead(args.backends)
    return {
        "machine": machine(args.backends),
        "device": args.device,
        "versions": versions(args.backends),
        "seconds": time.time() - started,
        "tau": TAU,
        "options": [spec._asdict() for spec in args.options],
        "rngs": args.rngs,
        "max_noise_gib": args.max_noise_gib,
        "records": [asdict(r) for r in records],
        "ratios": ratios(records),
        "goals": goals(records, overhead, FRAMEWORKS),
        "dispatch_overhead_us": overhead,
        "device_check": checked,
    }


def _show(result: dict[str, Any], records: list[Record]) -> None:
    """The machine, the table of every case, the two tables of noise and the table of goals, on
    stdout."""
    host, device, framework_versions = result["machine"], result["device"], result["versions"]
    print(f"machine: {host}, device: {device}, versions: {framework_versions}")
    print(table(records))
    for title, drawn in (("noise alone", noise_table), ("noise in a step", step_noise_table)):
        print(f"\n{title}:\n{drawn(records)}")
    print()
    print("| goal | measured | met |\n|---|---|---|")
    for g in result["goals"]:
        print(f"| {g['goal']} | {g['value']:.2f} | {'yes' if g['met'] else 'NO'} |")


@command("reinmax bench")
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line ``argv``; 1 if the device disagrees with the
    CPU (nothing is then timed), else 0."""
    args = parse_args(argv)
    check_destination(args.json)
    if args.threads is not None:
        fix_threads(args.threads)  # before any framework is imported
    started = time.time()
    checked = None
    if args.device != "cpu":
        checked = _device_checks(args.backends, args.device)
        if checked is not None and not _device_agrees(args, checked):
            return 1

    def partial(records: list[Record]) -> None:
        write_json(args.json, {"partial": True, "records": [asdict(r) for r in records]})

    records = run(
        args.backends,
        args.estimators,
        args.shapes,
        args.modes,
        rngs=args.rngs,
        options=args.options,
        max_noise_gib=args.max_noise_gib,
        min_time=args.min_time,
        max_repeats=args.max_repeats,
        reference_dir=args.reference_dir,
        device=args.device,
        on_records=partial,
    )
    result = _result(args, records, started, checked)
    _show(result, records)
    write_json(args.json, result)
    plot_path = args.plot or args.json.with_suffix(".png")
    plot(records, plot_path)
    status(f"\nwrote {args.json} and {plot_path}")
    return 0

"""Fuzzing the contract: a seeded stream of random inputs per backend, and the invariants of
docs/SPEC.md that must hold on every one of them.

An *input* is one row (one categorical variable). Calls draw a shape, a category axis, a dtype
(float64, float32, float16, bfloat16), a temperature (from 1e-30 to 1e6, or one per row), an
estimator with its options, logits at scales from 1e-3 to half the dtype's largest number with
masked categories, all-masked rows, rows at the dtype's extremes and broken (NaN or ``+inf``)
rows, and uniforms that include the edges 0, the smallest normal and the last float below 1.
Every row must then satisfy:

- ``hard`` is an exact one-hot (a row of zeros when all its categories are masked, NaN when a
  logit is NaN or ``+inf``);
- a masked category is never sampled and gets exactly zero gradient;
- the gradient is finite wherever its true value is representable in the dtype (bounded by
  ``(2 max|g| + max|g_p|) · max(2, 1/τ)``);
- the sample equals the reference backend's (NumPy) on the same noise.

A tenth of the calls are invalid on purpose (a temperature that is not finite and positive in
the compute dtype, an axis out of range or a bool, integer logits, noise of the wrong shape or
outside ``[0, 1)``, a size-0 category axis, a bad option): each must raise ``ValueError`` or
``TypeError`` naming the argument. ``reinmax fuzz`` runs it from the shell; ``--long`` runs
100,000 calls per backend, with a checkpoint beside ``--json`` so that ``--resume`` goes on
where a stopped run ended.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reinmax import backends
from reinmax.conformance import harness, oracle
from reinmax.runtime import (
    add_publish_option,
    add_quiet_option,
    check_destination,
    command,
    load_checkpoint,
    non_negative_int,
    positive_int,
    progress,
    save_checkpoint,
)

__all__ = ["LONG", "fuzz", "main"]

LONG = 100_000
"""Calls per backend of ``reinmax fuzz --long`` (about 4 million rows)."""

CHECKPOINT_EVERY = 1000
"""Calls between two checkpoints of a fuzz run with a checkpoint file."""

SHAPES = ((64, 3), (16, 4, 5), (48, 1), (24, 17), (8, 6, 2), (32, 2), (4, 300))
DTYPES = ("float64", "float32", "float16", "bfloat16")
TAUS = (1e-30, 1e-6, 0.1, 0.5, 1.0, 1.3, 7.0, 1e6)
SCALES = (1e-3, 1.0, 30.0, 1e4, 1e30)
CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("straight_through", {}),
    ("reinmax", {}),
    ("gumbel_softmax", {}),
    ("gumbel_softmax", {"hard": False}),
    ("gumbel_rao", {"k": 3}),
    ("gapped_straight_through", {"gap": 1.0}),
    ("gapped_straight_through", {"gap": "p"}),
    ("zgr", {}),
    ("reinmax_rao", {"k": 2}),
    ("reinmax_cv", {"k": 2}),
)
ARGUMENTS = ("logits", "axis", "tau", "noise", "k", "gap", "rng")
_MAX = {"float64": 1.7e308, "float32": 3.4e38, "float16": 65504.0, "bfloat16": 3.38e38}


def _tally() -> dict[str, Any]:
    return {
        "calls": 0,
        "rows": 0,
        "valid_rows": 0,
        "invalid_calls": 0,
        "not_one_hot": 0,
        "masked_sampled": 0,
        "masked_gradient": 0,
        "nonfinite_gradient": 0,
        "sample_mismatches": 0,
        "unnamed_errors": 0,
        "unexpected_errors": 0,
        "examples": [],
    }


def fuzz(
    backends: Sequence[str],
    inputs: int | None = None,
    *,
    calls: int | None = None,
    seed: int = 0,
    plans: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run about ``inputs`` random rows (or exactly ``calls`` calls) through each backend; one
    tally of violations each.

    The first backend is the reference whose samples the others must reproduce (NumPy when
    present). ``examples`` holds the first few violations, with what was called. ``plans``
    limits the distinct (estimator, shape, axis, dtype) combinations to a random subset of that
    size, so that compilers that trace per shape (JAX, TensorFlow) warm up once per plan; the
    values, temperatures and noise are drawn afresh on every call either way.

    With ``checkpoint``, the tallies and the random stream are saved there every
    ``CHECKPOINT_EVERY`` calls (and once a minute), and ``resume=True`` goes on from that file:
    a resumed run draws exactly the calls an uninterrupted one would.

    Raises:
        ValueError: neither or both of ``inputs`` and ``calls``; a checkpoint written with other
            arguments.
    """
    if (inputs is None) == (calls is None):
        raise ValueError("pass exactly one of inputs (rows per backend) and calls")
    # What the stream of calls depends on; how long it runs may change between a run and its
    # resumption (a resumed run may go further).
    arguments = {"backends": list(backends), "seed": seed, "plans": plans}
    rng = np.random.Generator(np.random.Philox(seed))
    every = [
        (case, shape, axis, dtype)
        for case in CASES
        for shape in SHAPES
        for axis in range(-len(shape), len(shape))
        for dtype in DTYPES
    ]
    chosen = [every[i] for i in rng.permutation(len(every))[: plans or len(every)]]
    state: dict[str, Any] = {
        "arguments": arguments,
        "tallies": {b: _tally() for b in backends},
        "rows": 0,
        "calls": 0,
    }
    saved = load_checkpoint(checkpoint, "fuzz") if checkpoint is not None and resume else None
    if saved is not None:
        if saved["arguments"] != arguments:
            raise ValueError(
                f"checkpoint {checkpoint} was written by a fuzz with {saved['arguments']}; rerun "
                "with those arguments, or without --resume to start afresh"
            )
        state = saved
        rng.bit_generator.state = saved["rng"]
    tallies: dict[str, dict[str, Any]] = state["tallies"]
    last_save = time.perf_counter()
    for _ in progress(iter(int, 1), total=calls, desc="fuzz calls", initial=state["calls"]):
        if (calls is not None and state["calls"] >= calls) or (
            inputs is not None and state["rows"] >= inputs
        ):
            break
        case = _draw(rng, chosen[rng.integers(len(chosen))])
        state["rows"] += case["rows"]
        state["calls"] += 1
        reference = None
        for backend in backends:
            hard = _check(backend, case, tallies[backend], reference)
            if reference is None:
                reference = hard
        now = time.perf_counter()
        if checkpoint is not None and (
            state["calls"] % CHECKPOINT_EVERY == 0 or now - last_save > 60
        ):
            save_checkpoint(checkpoint, {**state, "rng": rng.bit_generator.state}, "fuzz")
            last_save = now
    return tallies


def _draw(rng: np.random.Generator, plan: tuple) -> dict[str, Any]:
    (estimator, options), shape, axis, dtype = plan
    batch = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    tau: Any = float(TAUS[rng.integers(len(TAUS))])
    if rng.random() < 0.2:
        tau = rng.choice(np.array(TAUS), size=batch)
    logits = _logits(rng, shape, axis, dtype)
    noise = rng.random(oracle.noise_shape(estimator, shape, axis=axis, options=options))
    compute = np.float64 if dtype == "float64" else np.float32
    below_one = float(np.nextafter(compute(1.0), compute(0.0)))
    edges = np.array([0.0, float(np.finfo(compute).tiny), float(np.finfo(compute).eps), below_one])
    spots = rng.random(noise.shape) < 0.1
    noise[spots] = rng.choice(edges, size=int(spots.sum()))
    g, g_p = rng.normal(size=(2, *shape)) * rng.choice([1e-3, 1.0, 100.0])
    case = {
        "estimator": estimator,
        "options": dict(options),
        "shape": shape,
        "axis": axis,
        "dtype": dtype,
        "tau": tau,
        "logits": logits,
        "noise": noise,
        "g": g,
        "g_p": g_p,
        "rows": math.prod(batch),
        "corruption": None,
    }
    if rng.random() < 0.1:
        case["corruption"] = _CORRUPTIONS[rng.integers(len(_CORRUPTIONS))]
    return case


def _logits(rng: np.random.Generator, shape: tuple, axis: int, dtype: str) -> np.ndarray:
    """Logits at a random scale, with masked, all-masked, extreme and broken rows (float64,
    already representable in ``dtype``)."""
    top = _MAX[dtype] / 2
    x = np.moveaxis(rng.normal(size=shape) * rng.choice(SCALES), axis, -1)
    x = np.clip(x, -top, top)
    rows = x.reshape(-1, shape[axis])
    for row in rows:
        kind = rng.random()
        if kind < 0.3:
            row[rng.random(row.shape) < 0.4] = -np.inf
        elif kind < 0.35:
            row[:] = -np.inf
        elif kind < 0.42:
            row[:] = rng.choice([-top, top, 0.0], size=row.shape)
        elif kind < 0.45:
            row[rng.integers(row.size)] = np.nan
        elif kind < 0.48:
            row[rng.integers(row.size)] = np.inf
    x = np.moveaxis(rows.reshape(x.shape), -1, axis)
    return np.asarray(x.astype(oracle.numpy_dtype(dtype)), dtype=np.float64)


def _check(backend: str, case: dict, tally: dict, reference: np.ndarray | None):
    tally["calls"] += 1
    if case["corruption"] is not None:
        tally["invalid_calls"] += 1
        _check_invalid(backend, case, tally)
        return None
    tally["rows"] += case["rows"]
    try:
        got = harness.run(
            backend, case["estimator"], case["logits"], case["noise"], case["tau"], case["g"],
            case["g_p"], dtype=case["dtype"], axis=case["axis"], options=case["options"],
        )  # fmt: skip
    except Exception as error:
        _record(tally, "unexpected_errors", case, f"{type(error).__name__}: {error}")
        return None
    axis = case["axis"]
    x = np.moveaxis(case["logits"], axis, -1).reshape(-1, case["shape"][axis])
    hard = np.moveaxis(got.hard, axis, -1).reshape(x.shape)
    grad = np.moveaxis(got.grad, axis, -1).reshape(x.shape)
    masked = np.isneginf(x)
    broken = np.any(np.isnan(x) | np.isposinf(x), axis=-1)
    empty = np.all(masked, axis=-1)
    valid = ~broken & ~empty
    tally["valid_rows"] += int(valid.sum())
    one_hot = case["options"].get("hard", True)
    if one_hot:
        exact = np.all((hard == 0) | (hard == 1), axis=-1) & (np.sum(hard, axis=-1) == 1)
        _count(tally, "not_one_hot", valid & ~exact, case)
        _count(tally, "not_one_hot", empty & np.any(hard != 0, axis=-1), case)
        _count(tally, "masked_sampled", np.any(masked & (hard != 0), axis=-1) & ~broken, case)
    _count(tally, "masked_gradient", np.any(masked & (grad != 0), axis=-1) & ~broken, case)
    bound = _gradient_bound(case, x.shape)
    representable = valid & (bound < _MAX[case["dtype"]] / 2)
    _count(tally, "nonfinite_gradient", representable & ~np.all(np.isfinite(grad), -1), case)
    if reference is not None and one_hot:
        differ = np.any(hard != reference, axis=-1) & valid
        _count(tally, "sample_mismatches", differ, case)
    return hard


def _gradient_bound(case: dict, rows_shape: tuple) -> np.ndarray:
    axis = case["axis"]
    g = np.moveaxis(np.abs(case["g"]), axis, -1).reshape(rows_shape).max(axis=-1)
    g_p = np.moveaxis(np.abs(case["g_p"]), axis, -1).reshape(rows_shape).max(axis=-1)
    tau = np.broadcast_to(np.asarray(case["tau"], dtype=np.float64), _batch(case)).reshape(-1)
    return (2 * g + g_p) * np.maximum(2.0, 1.0 / tau)


def _batch(case: dict) -> tuple:
    shape, axis = case["shape"], case["axis"] % len(case["shape"])
    return shape[:axis] + shape[axis + 1 :]


def _count(tally: dict, key: str, rows: np.ndarray, case: dict) -> None:
    found = int(np.sum(rows))
    if found:
        tally[key] += found
        _record(tally, None, case, key)


def _record(tally: dict, key: str | None, case: dict, what: str) -> None:
    if key is not None:
        tally[key] += 1
    if len(tally["examples"]) < 10:
        shown = {k: case[k] for k in ("estimator", "options", "shape", "axis", "dtype")}
        tau = case["tau"]
        shown["tau"] = tau if isinstance(tau, float) else "per row"
        shown["corruption"] = case["corruption"]
        tally["examples"].append({"violation": what, "case": shown})


# ---------------------------------------------------------------------------------------------
# Invalid inputs: each must be a named ValueError or TypeError
# ---------------------------------------------------------------------------------------------

_CORRUPTIONS = (
    "tau zero",
    "tau negative",
    "tau nan",
    "tau inf",
    "tau overflows",
    "axis out of range",
    "axis bool",
    "integer logits",
    "noise shape",
    "noise nan",
    "noise above one",
    "size-0 axis",
    "bad option",
)


def _check_invalid(backend: str, case: dict, tally: dict) -> None:
    # In the driver's float64 scope, as every valid call: a float64 case stays float64.
    with harness.driver(backend).float64():
        name, expected, call = _invalid_call(backend, case)
        try:
            call()
        except (ValueError, TypeError) as error:
            if expected not in str(error):
                _record(tally, "unnamed_errors", case, f"{type(error).__name__}: {error}")
            return
        except Exception as error:
            _record(tally, "unnamed_errors", case, f"{type(error).__name__}: {error}")
            return
    _record(tally, "unnamed_errors", case, f"{name}: accepted")


def _invalid_call(backend: str, case: dict):
    module = backends.load_module(backend)
    estimator, options = case["estimator"], dict(case["options"])
    logits, noise, axis, tau = case["logits"], case["noise"], case["axis"], case["tau"]
    dtype = case["dtype"]
    compute = "float32" if dtype in ("float16", "bfloat16") else dtype
    corruption = case["corruption"]
    expected = corruption.split()[0]
    if corruption.startswith("tau"):
        tau = {
            "tau zero": 0.0,
            "tau negative": -1.0,
            "tau nan": float("nan"),
            "tau inf": float("inf"),
            "tau overflows": 1e39 if compute == "float32" else 1e309,
        }[corruption]
    elif corruption == "axis out of range":
        axis = len(case["shape"]) + 1
    elif corruption == "axis bool":
        axis = True
    elif corruption == "noise shape":
        noise = np.full((*np.shape(noise), 2), 0.5)
    elif corruption == "noise nan":
        noise = noise.copy()
        noise.reshape(-1)[0] = np.nan
    elif corruption == "noise above one":
        noise = noise.copy()
        noise.reshape(-1)[0] = 1.5
    elif corruption == "size-0 axis":
        logits = np.zeros((2, 0))
        axis, expected = -1, "axis"
        noise = np.zeros(oracle.noise_shape(estimator, (2, 0), options=options))
    elif corruption == "bad option":
        estimator, options, expected = "gumbel_rao", {"k": 0}, "k"
        noise = np.zeros((1, *np.shape(logits)))
    drive = harness.driver(backend)
    x = drive.asarray(logits, "float32" if corruption == "size-0 axis" else dtype)
    if corruption == "integer logits":
        x = drive.asarray(np.zeros(np.shape(logits)), "int32")
        expected = "logits"
    u = drive.asarray(noise, compute)
    fn = getattr(module, estimator)
    return corruption, expected, lambda: fn(x, tau, axis=axis, noise=u, **options)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def summary_table(tallies: dict[str, dict[str, Any]]) -> str:
    """Markdown: one column per backend, one row per count."""
    keys = [k for k in _tally() if k != "examples"]
    lines = ["| | " + " | ".join(tallies) + " |", "|---" * (len(tallies) + 1) + "|"]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(str(t[key]) for t in tallies.values()) + " |")
    return "\n".join(lines)


VIOLATIONS = (
    "not_one_hot",
    "masked_sampled",
    "masked_gradient",
    "nonfinite_gradient",
    "sample_mismatches",
    "unnamed_errors",
    "unexpected_errors",
)


@command("reinmax fuzz")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reinmax fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=None, help="default: every installed")
    parser.add_argument(
        "--inputs", type=positive_int, default=None, help="rows per backend (default: 3000)"
    )
    parser.add_argument("--calls", type=positive_int, default=None, help="calls per backend")
    parser.add_argument("--long", action="store_true", help=f"{LONG:,} calls per backend")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--plans",
        type=positive_int,
        default=None,
        help="distinct (estimator, shape, axis, dtype) combinations (default: all of them)",
    )
    parser.add_argument("--json", default=None, help="write the tallies here")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from the checkpoint beside --json (JSON.ckpt) that a stopped run left",
    )
    add_quiet_option(parser)
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if args.json:
        check_destination(args.json)
    elif args.resume:
        parser.error("--resume: needs --json (the checkpoint lies beside it)")
    if sum([args.long, args.calls is not None, args.inputs is not None]) > 1:
        parser.error("--inputs, --calls, --long: pass one of them")
    backends = args.backends or harness.available_backends()
    unknown = [b for b in backends if b not in harness.BACKENDS]
    if unknown:
        parser.error(f"--backends: unknown {unknown}; choose from {harness.BACKENDS}")
    calls = LONG if args.long else args.calls
    checkpoint = Path(args.json).with_suffix(".ckpt") if args.json else None
    tallies = fuzz(
        backends,
        (args.inputs or 3000) if calls is None else None,
        calls=calls,
        seed=args.seed,
        plans=args.plans,
        checkpoint=checkpoint,
        resume=args.resume,
    )
    print(summary_table(tallies))
    if args.json:
        from reinmax.runtime import write_json

        write_json(args.json, tallies)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
    bad = {b: {k: t[k] for k in VIOLATIONS if t[k]} for b, t in tallies.items()}
    bad = {b: v for b, v in bad.items() if v}
    for backend, found in bad.items():
        print(f"{backend}: {found}; first examples: {tallies[backend]['examples'][:3]}")
    return 1 if bad else 0

"""Checking a port: your own implementation of an estimator, written as research code writes it.

A :class:`Port` is a function in one framework plus what it takes. Research code usually takes
``(logits, tau)`` with a float ``τ``, works on the last axis and samples by itself (ReinMax's
reference package calls ``torch.multinomial``); others take the noise as an argument. The checker
runs every case the port can take, gives it the case's uniforms (as an argument, or through the
sampler it names, patched for the call to draw from them), differentiates it with the framework's
own autodiff, and compares it with the reference estimator (the float64 oracle for a registered
name) and with every other port of the same report.

The cases, each with the reference's noise layout (docs/SPEC.md) and random cotangents:

- ``rows``: 6 rows of 5 categories at ``τ = 0.7``, two categories masked (``-inf``), category
  axis last;
- ``axis 1, per-row tau``: logits of shape ``(3, 4, 2)`` with the category axis 1 and one ``τ``
  per row, for ports that take an ``axis`` and an array ``τ``;
- ``wide row, last masked, u near 1``: one row of 3,000 categories at ``τ = 1``, the last one
  masked, drawn at uniforms just below 1 (an inverse CDF that forgets to scale by the row's
  total samples the masked category);
- ``tau 1.3``: the ``rows`` again at ``τ = 1.3``, ReinMax's preferred temperature (ReinMax only).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from reinmax.conformance import harness, oracle
from reinmax.conformance.suite import (
    DTYPES,
    Case,
    Record,
    Report,
    _cases,
    _cross_compare,
    _dtype_name,
    _new_record,
    _run_case,
)
from reinmax.core import Estimator

__all__ = ["TAKES", "Port", "check_port", "load_port"]

TAKES = ("logits", "noise", "tau", "axis")
"""The arguments a port takes by default, in order; ``logits`` and ``tau`` are required, and a
port may also take ``key`` (a PRNG key for the sampler it names: JAX's, or None elsewhere)."""
_KNOWN = (*TAKES, "key")


class Port(NamedTuple):
    """A port of an estimator to one framework.

    Attributes:
        fn: returns ``(hard, soft)``; takes the arguments named in ``takes``, in that order.
        framework: its backend's name: ``"torch"``, ``"jax"`` or ``"tensorflow"``.
        takes: the arguments ``fn`` takes, in order, among ``logits``, ``noise``, ``tau``,
            ``axis`` and ``key``. Without ``axis`` the port works on the last axis, and only
            last-axis cases run; ``key`` is a PRNG key for a patched JAX sampler.
        sampler: for a port that samples by itself (no ``noise``), the framework function it
            samples with, patched during the call to draw from the case's uniforms:
            ``torch.multinomial``, ``torch.rand``, ``torch.rand_like``,
            ``jax.random.categorical``, ``jax.random.uniform``, ``tf.random.categorical``,
            ``tf.random.uniform``.
        tau: ``"number"`` for a port that takes a float ``τ`` only (per-row cases are skipped), or
            ``"array"`` for one that also takes a ``τ`` per row.

    Examples:
        >>> import reinmax.backends.torch as rt
        >>> from reinmax.conformance import Port
        >>> def my_st(logits, noise, tau, axis):
        ...     return rt.straight_through(logits, tau, noise=noise, axis=axis)
        >>> Port(my_st, "torch").takes
        ('logits', 'noise', 'tau', 'axis')
    """

    fn: Callable[..., tuple[Any, Any]]
    framework: str
    takes: tuple[str, ...] = TAKES
    sampler: str | None = None
    tau: str = "array"


def _checked(port: Port) -> Port:
    takes = tuple(port.takes)
    unknown = [t for t in takes if t not in _KNOWN]
    if unknown or not {"logits", "tau"} <= set(takes) or len(set(takes)) != len(takes):
        raise ValueError(
            f"takes must name logits, tau and any of noise, axis, key, each once; got {takes}"
        )
    if ("noise" in takes) == (port.sampler is not None):
        raise ValueError(
            "a port takes its noise as an argument (takes has noise) or samples with a "
            f"sampler it names (sampler=...), exactly one of the two; got takes={takes} and "
            f"sampler={port.sampler!r}"
        )
    if port.tau not in ("number", "array"):
        raise ValueError(f'tau must be "number" or "array", got {port.tau!r}')
    if not harness.driver(port.framework).native_autodiff:
        raise ValueError(
            f"ports are differentiated by their framework's autodiff, which {port.framework} "
            "lacks: write the port in torch, jax or tensorflow"
        )
    return port._replace(takes=takes)


def _supports(port: Port, case: Case) -> bool:
    last = case.axis % case.logits.ndim == case.logits.ndim - 1
    return ("axis" in port.takes or last) and (port.tau == "array" or np.ndim(case.tau) == 0)


def _run_port(port: Port, case: Case, dtype: str) -> tuple[oracle.Result, list[str]]:
    """Call the port on one case, differentiate it eagerly, and return the result with the
    dtypes of ``hard``, ``soft`` and the gradient."""
    compute = str(oracle.compute_dtype(dtype))
    drive = harness.driver(port.framework)
    with drive.float64():
        x, g, g_p = (drive.asarray(a, dtype) for a in (case.logits, case.g, case.g_p))
        given = {
            "noise": drive.asarray(case.noise, compute),
            "tau": case.tau if np.ndim(case.tau) == 0 else drive.asarray(case.tau, compute),
            "axis": case.axis,
            "key": drive.sampler_key(),
        }
        rest = [given[name] for name in port.takes[1:]]
        patched = (
            drive.patch_sampler(port.sampler, case.noise)
            if port.sampler is not None
            else contextlib.nullcontext()
        )
        with patched:
            (hard, soft), grad = drive.vjp(lambda y: port.fn(y, *rest), x, (g, g_p))
        dtypes = [_dtype_name(a) for a in (hard, soft, grad)]
        return oracle.Result(*(drive.to_numpy(a) for a in (hard, soft, grad))), dtypes


def check_port(
    name: str,
    ports: Port | Sequence[Port] | Mapping[str, Callable],
    reference: str | Estimator,
    dtypes: Sequence[str] = DTYPES,
    *,
    seed: int = 0,
) -> Report:
    """Check ``ports`` of the estimator ``reference`` on every case each can take.

    ``ports``: one :class:`Port`, several (one per framework), or a mapping of framework name to
    ``fn(logits, noise, tau, axis) -> (hard, soft)``. ``reference``: a registered estimator name
    (checked against the float64 oracle) or an :class:`~reinmax.core.Estimator` (run by NumPy
    in float64); the noise follows its layout. The records are those of
    :func:`~reinmax.conformance.run_suite`, one per (port, dtype), with the largest difference
    from every other port in ``max_cross_backend_error``; a case a port cannot take is named in
    its ``skipped``.

    Examples:
        >>> import reinmax.backends.torch as rt
        >>> from reinmax.conformance import Port, check_port
        >>> def my_st(logits, noise, tau, axis):
        ...     return rt.straight_through(logits, tau, noise=noise, axis=axis)
        >>> port = Port(my_st, "torch")
        >>> report = check_port("my_st", port, "straight_through", dtypes=("float64",))
        >>> report.passed
        True
    """
    if isinstance(ports, Port):
        ports = [ports]
    elif isinstance(ports, Mapping):
        ports = [Port(fn, framework) for framework, fn in ports.items()]
    ports = [_checked(port) for port in ports]
    cases = _cases(reference, seed)
    records: list[Record] = []
    results: dict[tuple, list] = {}
    for port in ports:
        for dtype in dtypes:
            record, found = _check_one(name, port, reference, cases, dtype)
            records.append(record)
            results[(port.framework, name, dtype, "eager")] = found
    _cross_compare(records, results, {name: cases})
    return Report(records, [])


def _check_one(name: str, port: Port, reference, cases: list[Case], dtype: str):
    record = _new_record(name, port.framework, dtype, "eager")
    record["skipped"] = [case.name for case in cases if not _supports(port, case)]
    problems: list[str] = []
    found: list[oracle.Result | None] = []
    for case in cases:
        if not _supports(port, case):
            found.append(None)
            continue
        dtypes: list[str] = []

        def run(case: Case = case, dtypes: list[str] = dtypes) -> oracle.Result:
            result, seen = _run_port(port, case, dtype)
            dtypes += seen
            return result

        found.append(_run_case(record, problems, run, reference, case, dtype))
        if dtypes and any(d != dtype for d in dtypes):
            problems.append(f"{case.name}: outputs are {dtypes}, must be {dtype}")
        record["output_dtypes"] = dtypes or record["output_dtypes"]
    if len(record["skipped"]) == len(cases):
        problems.append("the port takes none of the cases")
    record["passed"] = not problems
    record["detail"] = "; ".join(problems) or "ok"
    return record, found


def load_port(spec: str) -> Callable:
    """The function named by ``"module:function"`` (a module importable from here)."""
    module, _, function = spec.partition(":")
    if not module or not function:
        raise ValueError(f"--port must be module:function, got {spec!r}")
    return getattr(importlib.import_module(module), function)

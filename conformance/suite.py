"""The conformance suite: every backend against the oracle, each other and docs/SPEC.md.

:func:`run_suite` draws every input once on the host (NumPy's counter-based Philox generator, in
float64), feeds the same noise to every backend eagerly, under its compiler and under vmap
(:mod:`reinmax.conformance.harness`), and compares each result with the independent float64
oracle (:mod:`reinmax.conformance.oracle`) and with every other backend. A record per
``(estimator, backend, dtype, transform)`` holds:

- ``sample_mismatches``: rows whose sample differs from the oracle's (must be 0);
- ``max_scaled_error``: the largest gradient (and ``soft``) difference from the oracle on the
  agreeing rows, in units of ``eps(dtype) · row scale`` (:func:`harness.row_scale`; must be
  ``≤`` :data:`TOLERANCE`);
- ``output_dtypes``: the dtypes of ``hard``, ``soft`` and the gradient (probed under the
  backend's first transform; each must be the logits' dtype);
- ``max_cross_backend_error`` / ``cross_backend_mismatches``: the same comparisons with every
  run of every other backend on the same dtype (reported; the oracle decides pass or fail, so
  that one faulty backend is never blamed on the others);
- ``passed`` and ``detail`` (what failed).

Then it runs :mod:`reinmax.conformance.identities` 1 to 8 on NumPy and on every other backend
(float64, under the backend's first transform). An estimator that is not one of the oracle's
(a user's own, registered under a new name) is compared with itself run by the NumPy backend
in float64 on the same rounded inputs. :func:`check_port` checks a user's own function of
``(logits, noise)``, written once per framework, against a reference, with the same records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from reinmax import backends as registry
from reinmax.conformance import harness, oracle
from reinmax.conformance.enumeration import Runner
from reinmax.conformance.identities import Target, run_identities
from reinmax.core import REGISTRY, Estimator, noise_layout, softmax

__all__ = [
    "DTYPES",
    "TOLERANCE",
    "Report",
    "format_report",
    "run_suite",
    "target",
    "transforms_for",
]

DTYPES = ("float64", "float32")
TOLERANCE = 64.0
"""Largest accepted difference from the oracle, in units of ``eps(dtype) · row scale``."""

Record = dict[str, Any]


class Report(NamedTuple):
    """What :func:`run_suite` found: one record per run, one per identity check.

    Examples:
        >>> from reinmax.conformance import run_suite
        >>> report = run_suite(
        ...     ["numpy"], ["reinmax"], ["float64"], identities=False, show_progress=False
        ... )
        >>> report.passed, len(report.records), report.failures()
        (True, 1, [])
    """

    records: list[Record]
    identities: list[Record]

    @property
    def passed(self) -> bool:
        """Whether every run and every identity passed."""
        return all(r["passed"] for r in self.records + self.identities)

    def failures(self) -> list[str]:
        """One line per failed record, naming the estimator, backend and check."""
        lines = [
            f"{r['estimator']} on {r['backend']} ({r['dtype']}, {r['transform']}): {r['detail']}"
            for r in self.records
            if not r["passed"]
        ]
        lines += [
            f"{r['estimator']} on {r['backend']}: identity {r['identity']} ({r['check']}): "
            f"{r['detail']}"
            for r in self.identities
            if not r["passed"]
        ]
        return lines


# ---------------------------------------------------------------------------------------------
# Inputs, drawn once on the host
# ---------------------------------------------------------------------------------------------


class Case(NamedTuple):
    """One input: logits, noise and cotangents in the user layout, float64 NumPy."""

    name: str
    logits: np.ndarray
    axis: int
    tau: Any
    noise: np.ndarray
    g: np.ndarray
    g_p: np.ndarray


def _noise_shape(estimator: str | Estimator, shape: tuple[int, ...], axis: int) -> tuple:
    if isinstance(estimator, str):
        estimator = REGISTRY[estimator]()
    return noise_layout(estimator, shape, axis)


def _cases(estimator: str | Estimator, seed: int) -> list[Case]:
    """A batch of rows with a masked category and a scalar ``τ``, a moved axis with per-row
    ``τ``, a wide row whose last category is masked, drawn at uniforms just below 1, and wide
    rows with ties and masks; ReinMax also at its preferred ``τ = 1.3``."""
    rng = np.random.Generator(np.random.Philox(seed))
    rows = 2.0 * rng.normal(size=(6, 5))
    rows[1, 2] = rows[4, 0] = -np.inf
    moved = rng.normal(size=(3, 4, 2))
    per_row_tau = rng.uniform(0.5, 2.0, size=(3, 2))
    # 3,000 categories, the last masked: the float32 cumulative sum ends below 1, so an inverse
    # CDF that looks up u instead of u · c_{n−1} samples the masked category at u near 1.
    wide = rng.normal(size=(1, 3000))
    wide[:, -1] = -np.inf
    # Wide rows with exact ties at the maximum and masked entries: every backend must draw the
    # same category (docs/SPEC.md, the portable inverse-CDF sample), whatever its cumsum's order.
    # (Their own generator, so that the other cases keep their draws.)
    tie_rng = np.random.default_rng([seed, 1])
    tied = tie_rng.normal(size=(2, 3000))
    tied[tie_rng.random(size=tied.shape) < 0.1] = np.max(tied)
    tied[tie_rng.random(size=tied.shape) < 0.2] = -np.inf
    name = estimator if isinstance(estimator, str) else estimator.name
    specs = [
        ("rows", rows, -1, 0.7),
        ("axis 1, per-row tau", moved, 1, per_row_tau),
        ("wide row, last masked, u near 1", wide, -1, 1.0),
    ]
    if name == "reinmax":
        specs.append(("tau 1.3", rows, -1, 1.3))
    specs.append(("wide rows, ties and masks", tied, -1, 1.0))
    cases = []
    for label, logits, axis, tau in specs:
        noise: np.ndarray = rng.random(_noise_shape(estimator, logits.shape, axis))
        if label.startswith("wide"):
            noise = 1.0 - 2.0**-24 * rng.integers(1, 4, size=noise.shape)
        g, g_p = rng.normal(size=logits.shape), rng.normal(size=logits.shape)
        cases.append(Case(label, logits, axis, tau, noise, g, g_p))
    return cases


def _rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(x).astype(oracle.numpy_dtype(dtype)).astype(np.float64)


def _reference(estimator: str | Estimator, case: Case, dtype: str) -> oracle.Result:
    if isinstance(estimator, str) and estimator in oracle.ESTIMATORS:
        return oracle.evaluate(
            estimator,
            case.logits,
            case.noise,
            case.tau,
            case.g,
            case.g_p,
            axis=case.axis,
            dtype=dtype,
        )
    compute = str(oracle.compute_dtype(dtype))
    return harness.run(
        "numpy",
        estimator,
        _rounded(case.logits, dtype),
        _rounded(case.noise, compute),
        case.tau,
        _rounded(case.g, dtype),
        _rounded(case.g_p, dtype),
        dtype="float64",
        axis=case.axis,
    )


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------


def _compare(result: oracle.Result, reference: oracle.Result, case: Case, dtype: str):
    """``(sample mismatches, max scaled error)``; rows that sampled differently are left out of
    the error, since their gradients answer a different sample."""
    axis = case.axis % case.logits.ndim
    differs = np.any(result.hard != reference.hard, axis=axis)
    both_nan = np.isnan(result.hard) & np.isnan(reference.hard)
    differs &= ~np.all(both_nan, axis=axis)
    agree = np.expand_dims(~differs, axis)
    scale = harness.row_scale(case.g, case.g_p, case.tau, axis=case.axis)
    scale = np.broadcast_to(scale, case.logits.shape)
    keep = np.broadcast_to(agree, case.logits.shape)
    grad_error = harness.scaled_error(result.grad[keep], reference.grad[keep], scale[keep], dtype)
    soft_error = harness.scaled_error(result.soft, reference.soft, np.ones(()), dtype)
    return int(np.sum(differs)), max(grad_error, soft_error)


def _dtype_name(x: Any) -> str:
    dtype = x.dtype
    return getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]


def _output_dtypes(
    backend: str, estimator: str | Estimator, case: Case, dtype: str, transform: str
) -> list[str]:
    """The dtypes of ``hard``, ``soft`` and the gradient as the framework returns them.

    The harness hands results back as float64 NumPy; this probe looks before that cast.
    """
    axis = case.axis % case.logits.ndim
    compute = str(oracle.compute_dtype(dtype))
    f = harness._build(backend, estimator, {}, axis, transform, (), compute)
    drive = harness.driver(backend)
    with drive.float64():
        args = [
            drive.asarray(case.logits, dtype),
            drive.asarray(case.noise, compute),
            case.tau if np.ndim(case.tau) == 0 else drive.asarray(case.tau, compute),
            drive.asarray(case.g, dtype),
            drive.asarray(case.g_p, dtype),
        ]
        return [_dtype_name(x) for x in f(*args)]


def transforms_for(backend: str, quick: bool) -> tuple[str, ...]:
    """Transforms run per backend: all it has, or with ``quick`` the one tasks train with (which
    keeps the quick suite under a minute: JAX's eager mode compiles every primitive per shape,
    and torch.compile takes seconds per graph)."""
    drive = harness.driver(backend)
    return (drive.preferred,) if quick else drive.transforms


def _vmappable(case: Case) -> bool:
    return case.axis % case.logits.ndim != 0


def _new_record(name: str, backend: str, dtype: str, transform: str) -> Record:
    return {
        "estimator": name,
        "backend": backend,
        "dtype": dtype,
        "transform": transform,
        "max_scaled_error": 0.0,
        "sample_mismatches": 0,
        "output_dtypes": None,
        "max_cross_backend_error": 0.0,
        "cross_backend_mismatches": 0,
        "passed": True,
        "detail": "",
    }


def _run_case(
    record: Record,
    problems: list[str],
    run: Callable[[], oracle.Result],
    reference: str | Estimator,
    case: Case,
    dtype: str,
) -> oracle.Result | None:
    """One case of a run (``run()`` gives its result), compared with the reference; what failed
    goes into ``problems``."""
    try:
        result = run()
        mismatches, error = _compare(result, _reference(reference, case, dtype), case, dtype)
    except Exception as exc:
        problems.append(f"{case.name}: raised {type(exc).__name__}: {exc}")
        record["max_scaled_error"] = math.inf
        return None
    record["sample_mismatches"] += mismatches
    record["max_scaled_error"] = max(record["max_scaled_error"], error)
    if mismatches:
        problems.append(f"{case.name}: {mismatches} rows sampled differently from the oracle")
    if error > TOLERANCE:
        problems.append(f"{case.name}: error {error:.3g} eps·scale > {TOLERANCE:g}")
    return result


def _probe_dtypes(record, problems, backend, estimator, dtype, transform, case: Case) -> None:
    """The outputs' dtypes as the framework returns them: each must be the logits' dtype."""
    try:
        found = _output_dtypes(backend, estimator, case, dtype, transform)
    except Exception as exc:
        found = []
        problems.append(f"dtype probe raised {type(exc).__name__}: {exc}")
    record["output_dtypes"] = found
    wrong = [
        f"{what} is {got}" for what, got in zip(("hard", "soft", "grad"), found) if got != dtype
    ]
    if wrong:
        problems.append(f"outputs must be {dtype}: {', '.join(wrong)}")


def _run_one(
    backend: str,
    estimator: str | Estimator,
    name: str,
    dtype: str,
    transform: str,
    cases: list[Case],
    probe_dtypes: bool,
) -> tuple[Record, list[oracle.Result | None]]:
    record = _new_record(name, backend, dtype, transform)
    problems: list[str] = []

    def runner(case: Case) -> Callable[[], oracle.Result]:
        return lambda: harness.run(
            backend, estimator, case.logits, case.noise, case.tau, case.g, case.g_p,
            dtype=dtype, transform=transform, axis=case.axis,
        )  # fmt: skip

    results = [
        None
        if transform == "vmap" and not _vmappable(case)
        else _run_case(record, problems, runner(case), estimator, case, dtype)
        for case in cases
    ]
    if probe_dtypes:
        _probe_dtypes(record, problems, backend, estimator, dtype, transform, cases[0])
    record["passed"] = not problems
    record["detail"] = "; ".join(problems) or "ok"
    return record, results


def _cross_compare(records: list[Record], results: dict, cases_by: dict) -> None:
    """Fill the cross-backend fields: each run against every run of another backend on the
    same estimator and dtype (any transform)."""
    for record in records:
        mine = results[
            (record["backend"], record["estimator"], record["dtype"], record["transform"])
        ]
        for other in records:
            if (other["estimator"], other["dtype"]) != (record["estimator"], record["dtype"]):
                continue
            if other["backend"] == record["backend"]:
                continue
            theirs = results[
                (other["backend"], other["estimator"], other["dtype"], other["transform"])
            ]
            for case, a, b in zip(cases_by[record["estimator"]], mine, theirs):
                if a is None or b is None:
                    continue
                mismatches, error = _compare(a, b, case, record["dtype"])
                record["cross_backend_mismatches"] += mismatches
                record["max_cross_backend_error"] = max(record["max_cross_backend_error"], error)


# ---------------------------------------------------------------------------------------------
# Identity targets for every backend
# ---------------------------------------------------------------------------------------------


def _by_name(estimator: Estimator) -> str | Estimator:
    """The registered name when ``estimator`` is the library's own, so the backend's public
    function (not only the shared core) is what runs."""
    factory = REGISTRY.get(estimator.name)
    return estimator.name if factory is not None and factory() == estimator else estimator


def _harness_runner(backend: str, dtype: str, transform: str) -> Runner:
    def runner(estimator, logits, noise, tau, grad_of_sample):
        spec = _by_name(estimator)
        first = harness.run(backend, spec, logits, noise, tau, dtype=dtype, transform=transform)
        g = grad_of_sample(first.hard)
        second = harness.run(backend, spec, logits, noise, tau, g, dtype=dtype, transform=transform)
        return second.hard, second.grad

    return runner


def _reinforce_gradient(backend: str, dtype: str) -> Callable[..., np.ndarray]:
    """The gradient of the summed REINFORCE surrogate through ``backend``'s own autodiff."""
    module = registry.load_module(backend)
    drive, xp = harness.driver(backend), module.BACKEND.xp

    def gradient(logits, hard, value, baseline):
        with drive.float64():
            x, d, v = (drive.asarray(a, dtype) for a in (logits, hard, value))
            total = drive.grad(lambda y: xp.sum(module.reinforce(y, d, v, baseline)), x)
            return drive.to_numpy(total)

    return gradient


def _core_forward(backend: str, dtype: str) -> Callable:
    """The estimator's core forward in ``backend``'s namespace, results as NumPy."""
    drive = harness.driver(backend)
    xp = registry.load_module(backend).BACKEND.xp

    def forward(estimator, logits, noise, tau):
        with drive.float64():
            x = drive.asarray(logits, dtype)
            u = drive.asarray(noise, dtype)
            t = drive.asarray(np.asarray(tau), dtype)
            hard, residuals = estimator.forward(x, softmax(x, xp=xp), u, t, xp=xp)
            return drive.to_numpy(hard), tuple(drive.to_numpy(r) for r in residuals)

    return forward


def target(backend: str, dtype: str = "float64", transform: str = "eager") -> Target:
    """An identities :class:`~reinmax.conformance.identities.Target` running in ``backend``."""
    return Target(
        backend,
        dtype,
        transform,
        _harness_runner(backend, dtype, transform),
        _reinforce_gradient(backend, dtype),
        _core_forward(backend, dtype),
    )


# ---------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------


def _estimator_map(estimators: Iterable[str] | Mapping[str, Estimator] | None):
    if estimators is None:
        estimators = list(REGISTRY)
    if isinstance(estimators, Mapping):
        return {name: est for name, est in estimators.items()}
    resolved = {}
    for name in estimators:
        if name not in REGISTRY:
            raise ValueError(
                f"estimators must name registered estimators ({', '.join(REGISTRY)}) or map "
                f"names to Estimator objects, got {name!r}"
            )
        resolved[name] = REGISTRY[name]()
    return resolved


def run_suite(
    backends: Sequence[str] | None = None,
    estimators: Iterable[str] | Mapping[str, Estimator] | None = None,
    dtypes: Sequence[str] = DTYPES,
    *,
    quick: bool = False,
    transforms: Sequence[str] | None = None,
    identities: bool = True,
    show_progress: bool = True,
    seed: int = 0,
) -> Report:
    """Run the conformance suite and return its :class:`Report`.

    ``backends``: names (default: every installed one). ``estimators``: registered names, or a
    mapping of name to :class:`~reinmax.core.Estimator` (a user's own estimator, or a
    replacement for a registered one, checked without touching the library). ``dtypes``: any of
    ``float64``, ``float32``, ``float16``, ``bfloat16``. ``quick`` skips ``torch.compile`` and
    uses fewer Monte Carlo draws. ``transforms`` overrides the per-backend transforms.

    Examples:
        >>> from reinmax.conformance import run_suite
        >>> report = run_suite(
        ...     ["numpy"], ["zgr"], ["float64"], quick=True, identities=False, show_progress=False
        ... )
        >>> report.passed, report.records[0]["sample_mismatches"]
        (True, 0)
    """
    from reinmax.runtime import progress

    backends = _installed(backends)
    for dtype in dtypes:
        if dtype not in harness.DTYPES:
            raise ValueError(f"dtypes must be among {', '.join(harness.DTYPES)}, got {dtype!r}")
    chosen = _estimator_map(estimators)
    # A registered estimator runs by its name, through every backend's public function; the
    # oracle checks it if it knows the name, NumPy in float64 otherwise.
    specs = {
        name: (name if name in REGISTRY and est == REGISTRY[name]() else est)
        for name, est in chosen.items()
    }
    cases_by = {name: _cases(spec, seed) for name, spec in specs.items()}
    runs = {b: _transforms(b, transforms, quick) for b in backends}
    jobs = [
        (name, backend, dtype, transform)
        for name in specs
        for backend in backends
        for dtype in dtypes
        for transform in runs[backend]
    ]
    records, results = [], {}
    wrap = progress if show_progress else (lambda it, **_: it)
    for name, backend, dtype, transform in wrap(jobs, total=len(jobs), desc="conformance"):
        probe = transform == runs[backend][0]
        record, found = _run_one(
            backend, specs[name], name, dtype, transform, cases_by[name], probe
        )
        records.append(record)
        results[(backend, name, dtype, transform)] = found
    _cross_compare(records, results, cases_by)
    identity_records: list[Record] = []
    if identities:
        for backend in wrap(backends, total=len(backends), desc="identities"):
            where = target(backend, "float64", runs[backend][0])
            identity_records += run_identities(where, chosen, quick=quick)
    return Report(records, identity_records)


def _installed(backends: Sequence[str] | None) -> list[str]:
    installed = harness.available_backends()
    chosen = list(installed if backends is None else backends)
    for name in chosen:
        if name not in installed:
            # A backend registered after the harness looked (a user's own) loads here.
            try:
                harness.driver(name)
            except (ImportError, ValueError):
                raise ValueError(
                    f"backends {[name]} are not installed (installed: {installed})"
                ) from None
    return chosen


def _transforms(backend: str, transforms: Sequence[str] | None, quick: bool) -> tuple[str, ...]:
    supported = harness.driver(backend).transforms
    return tuple(t for t in transforms or transforms_for(backend, quick) if t in supported)


# ---------------------------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------------------------


def format_summary(report: Report) -> str:
    """One line per backend: whether it agrees (every run and identity check passes), how many
    pass and its largest errors; then one line per failure, if any (the records hold the rest)."""
    backends = list(dict.fromkeys(r["backend"] for r in report.records + report.identities))
    lines = []
    for backend in backends:
        runs = [r for r in report.records if r["backend"] == backend]
        checks = [r for r in report.identities if r["backend"] == backend]
        agrees = all(r["passed"] for r in runs + checks)
        error = max((r["max_scaled_error"] for r in runs), default=0.0)
        cross = max((r.get("max_cross_backend_error", 0.0) for r in runs), default=0.0)
        lines.append(
            f"{backend}: {'agrees' if agrees else 'FAILS'}: {sum(r['passed'] for r in runs)}/"
            f"{len(runs)} runs pass (largest error {error:.2g} eps·scale against the oracle, "
            f"{cross:.2g} against the other backends), {sum(r['passed'] for r in checks)}/"
            f"{len(checks)} identity checks pass"
        )
    failures = report.failures()
    if failures:
        lines += [f"{len(failures)} FAILED:"] + [f"  {line}" for line in failures]
    return "\n".join(lines)


def format_report(report: Report) -> str:
    """One table (estimator × backend × dtype over transforms) and the identity results.

    Examples:
        >>> from reinmax.conformance import format_report, run_suite
        >>> report = run_suite(
        ...     ["numpy"], ["zgr"], ["float64"], identities=False, show_progress=False
        ... )
        >>> print(format_report(report).splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
        estimator backend dtype transforms max err x-backend mismatch result
    """
    groups: dict[tuple, list[Record]] = {}
    for r in report.records:
        groups.setdefault((r["estimator"], r["backend"], r["dtype"]), []).append(r)
    header = (
        f"{'estimator':<24} {'backend':<11} {'dtype':<8} {'transforms':<22} "
        f"{'max err':>9} {'x-backend':>9} {'mismatch':>8}  result"
    )
    lines = [header, "-" * len(header)]
    for (estimator, backend, dtype), rs in groups.items():
        error = max(r["max_scaled_error"] for r in rs)
        cross = max(r.get("max_cross_backend_error", 0.0) for r in rs)
        mismatches = sum(r["sample_mismatches"] for r in rs)
        passed = all(r["passed"] for r in rs)
        transforms = ",".join(r["transform"] for r in rs)
        lines.append(
            f"{estimator:<24} {backend:<11} {dtype:<8} {transforms:<22} {error:>9.3g} "
            f"{cross:>9.3g} {mismatches:>8}  {'pass' if passed else 'FAIL'}"
        )
    if report.identities:
        lines += [
            "",
            f"{'identity':<9} {'estimator':<24} {'backend':<11} {'check':<28} "
            f"{'value':>10}  result",
        ]
        for r in report.identities:
            lines.append(
                f"{r['identity']:<9} {r['estimator']:<24} {r['backend']:<11} {r['check']:<28} "
                f"{r['value']:>10.3g}  {'pass' if r['passed'] else 'FAIL'}"
            )
    failures = report.failures()
    lines += [
        "",
        "max err: largest difference from the oracle in eps(dtype)·row scale (≤ "
        f"{TOLERANCE:g}); x-backend: the same against the other backends.",
    ]
    if failures:
        lines += ["", f"{len(failures)} FAILED:"] + [f"  {line}" for line in failures]
    else:
        lines += ["", "all checks passed"]
    return "\n".join(lines)

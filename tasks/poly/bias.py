"""Bias and variance of every estimator where the exact gradient is computable.

Two studies, both written to one JSON file with log-log plots beside it:

- **Small problem.** ``L`` independent rows of ``n`` categories and
  ``f_ε(D) = exp(ε · Σ_l c_l·D_l)`` for a fixed random ``c``: every derivative of ``exp`` is
  nonzero, so the Taylor argument of Liu et al. (2023) applies in full. As ``ε → 0`` the bias
  of Straight-Through at ``τ = 1`` is ``O(ε²)`` and ReinMax's ``O(ε³)``, while the gradient is
  ``O(ε)``: the *relative* bias ``‖E[ĝ] − ∇‖ / ‖∇‖`` falls with slope 1 (first order) and 2
  (second order) on a log-log plot. Bias and variance are mapped over ``τ`` and ``ε``.
- **Polynomial problem** (:mod:`reinmax.tasks.poly`) at its initial point, per power ``p``: the
  bias and the variance of one training step's estimate (``N`` samples).

Every registered estimator is studied (one registered at run time too). Those deterministic given
the sample (ST, GST, ReinMax; REINFORCE) are computed exactly by enumeration
(:mod:`reinmax.conformance.enumeration`); those that draw noise beyond the sample, one uniform per
category (Gumbel-Softmax, Gumbel-Rao), by Monte Carlo, with the standard error of the bias
reported as its noise floor.

Command: ``reinmax study bias [--rows L] [--categories n] [--taus ...] [--eps ...] --json PATH``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.conformance.enumeration import (
    exact_gradient,
    expected_reinforce,
    joint_samples,
    monte_carlo_estimate,
    variance_by_enumeration,
)
from reinmax.core import Estimator, noise_layout
from reinmax.diagnostics import Diagnosis
from reinmax.runtime import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    add_publish_option,
    check_destination,
    command,
    config_from_args,
    config_parser,
    finite_float,
    status,
)
from reinmax.tasks.common import (
    estimator,
    estimator_names,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from reinmax.tasks.poly import problem as poly

__all__ = [
    "StudyConfig",
    "estimator_moments",
    "fit_slope",
    "main",
    "methods",
    "poly_study",
    "run",
    "slope_table",
    "small_problem",
    "small_study",
]


def methods() -> tuple[str, ...]:
    """The methods of the small problem, read when called: every registered estimator and
    REINFORCE (without a baseline: a single-sample estimate)."""
    return (*estimator_names(), "reinforce")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The grids and sizes of both studies."""

    rows: PositiveInt = 2
    categories: PositiveInt = 3
    taus: tuple[PositiveFloat, ...] = (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
    eps: tuple[PositiveFloat, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    eps_at_tau: PositiveFloat = 0.5
    slope_below: PositiveFloat = 0.1
    draws: PositiveInt = 20_000
    seed: NonNegativeInt = 0
    gumbel_rao_k: PositiveInt = 1
    gap: NonNegativeFloat = 1.0
    poly_tau: PositiveFloat = 1.0
    poly_draws: PositiveInt = 4_000
    reinforce_steps: PositiveInt = 400

    def __post_init__(self) -> None:
        if self.rows < 1 or self.categories < 2:
            raise ValueError(
                f"rows must be >= 1 and categories >= 2, got {self.rows} and {self.categories}"
            )
        if self.categories**self.rows > 5_000:
            raise ValueError(
                f"categories**rows = {self.categories**self.rows} joint samples is too many to "
                "enumerate (at most 5000)"
            )
        for name in ("taus", "eps"):
            values = getattr(self, name)
            if not values or any(not v > 0 for v in values):
                raise ValueError(f"{name} must be a non-empty list of positive numbers")
        if sum(e <= self.slope_below for e in self.eps) < 2:
            raise ValueError(
                f"at least two eps values must be <= slope_below={self.slope_below} to fit a slope"
            )
        if min(self.draws, self.poly_draws, self.reinforce_steps) < 2:
            raise ValueError("draws, poly_draws and reinforce_steps must be >= 2")


def _estimator(method: str, config: StudyConfig) -> Estimator:
    """The registered estimator ``method`` with the study's options (each takes its own); the
    gradients studied are those through the one-hot sample, hence ``hard``."""
    return estimator(method, hard=True, k=config.gumbel_rao_k, gap=config.gap)


def _needs_monte_carlo(est: Estimator) -> bool:
    """Whether ``est`` draws noise beyond the sample (one uniform per category): then it is not
    deterministic given ``D``, and only Monte Carlo sees its mean."""
    return est.per_category


# ---------------------------------------------------------------------------------------------
# Moments of one estimator
# ---------------------------------------------------------------------------------------------


def _reinforce_moments(
    logits: np.ndarray, f: Callable[[np.ndarray], float]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-entry mean and variance of single-sample REINFORCE ``f(D)(D − π)``.

    Each joint sample's gradient comes from the library's own surrogate (NumPy backend).
    """
    from reinmax.backends import numpy as rnp

    samples, probability = joint_samples(logits)
    values = np.array([f(d) for d in samples], dtype=np.float64)
    batch = np.broadcast_to(logits, samples.shape).copy()
    value = np.broadcast_to(values[:, None], samples.shape[:2]).copy()
    surrogate, pullback = rnp.vjp(rnp.reinforce, batch, samples, value)
    rules = pullback(np.ones_like(surrogate))
    mean = expected_reinforce(logits, f)
    variance = np.einsum("m,m...->...", probability, (rules - mean) ** 2)
    return mean, variance


def estimator_moments(
    method: str,
    logits: np.ndarray,
    f: Callable[[np.ndarray], float],
    grad_f: Callable[[np.ndarray], np.ndarray],
    tau: float,
    config: StudyConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, variance, std_error)`` per entry of one sample's estimate, shape ``(L, n)``.

    Exact (``std_error`` zero) for the methods deterministic given ``D``; Monte Carlo with
    ``config.draws`` draws for Gumbel-Softmax and Gumbel-Rao.
    """
    if method == "reinforce":
        mean, variance = _reinforce_moments(logits, f)
        return mean, variance, np.zeros_like(mean)
    est = _estimator(method, config)
    if _needs_monte_carlo(est):
        mean, std_error, variance = monte_carlo_estimate(
            est, logits, grad_f, tau, config.draws, config.seed
        )
        return mean, variance, std_error
    mean, variance = variance_by_enumeration(est, logits, grad_f, tau)
    return mean, variance, np.zeros_like(mean)


def _relative(mean: np.ndarray, std_error: np.ndarray, exact: np.ndarray, variance: np.ndarray):
    """The cell of one estimator: :class:`reinmax.diagnostics.Diagnosis` of its exact (or Monte
    Carlo) moments, with the Monte Carlo noise floor of the bias."""
    report = Diagnosis(draws=1, batch_axes=0, mean=mean, variance=variance, exact=exact)
    bias, cosine = report.relative_bias(), report.cosine()
    assert bias is not None and cosine is not None  # the exact gradient is given
    return {
        "bias": float(bias),
        # Adam is blind to the scale of a gradient but not to its direction.
        "cosine": float(cosine),
        # The bias a Monte Carlo mean would show with no bias at all: its noise floor.
        "bias_floor": float(np.linalg.norm(std_error) / np.linalg.norm(exact)),
        "variance": float(np.sum(variance)),
        "relative_std": float(report.relative_std()),
    }


# ---------------------------------------------------------------------------------------------
# The small problem: f_ε(D) = exp(ε Σ_l c_l·D_l)
# ---------------------------------------------------------------------------------------------


def small_problem(
    config: StudyConfig,
) -> tuple[np.ndarray, Callable[[float], tuple[Callable, Callable]]]:
    """``(logits, make)`` where ``make(ε) -> (f_ε, ∇f_ε)`` for ``f_ε(D) = exp(ε · Σ c ⊙ D)``."""
    rng = np.random.Generator(np.random.Philox(config.seed))
    logits = rng.normal(size=(config.rows, config.categories))
    c = rng.normal(size=(config.rows, config.categories))

    def make(eps: float) -> tuple[Callable, Callable]:
        def f(d: np.ndarray) -> float:
            return float(np.exp(eps * np.sum(c * d)))

        def grad_f(d: np.ndarray) -> np.ndarray:
            return eps * np.exp(eps * np.sum(c * d)) * c

        return f, grad_f

    return logits, make


def fit_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the order of a power law)."""
    slope, _ = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(slope)


def _slopes(cells: dict[str, dict[str, list[list[float]]]], config: StudyConfig) -> dict:
    """``slopes[method][τ]``: the fitted order of the relative bias in ``ε <= slope_below``."""
    small = [j for j, e in enumerate(config.eps) if e <= config.slope_below]
    return {
        m: {
            f"{tau:g}": fit_slope(
                [config.eps[j] for j in small], [cells[m]["bias"][i][j] for j in small]
            )
            for i, tau in enumerate(config.taus)
        }
        for m in cells
    }


def small_study(config: StudyConfig) -> dict[str, Any]:
    """Relative bias, its noise floor and the variance on the ``τ × ε`` grid, and the slopes.

    ``slopes[method][τ]`` is the fitted order of the relative bias in ``ε`` over
    ``ε <= slope_below``: about 1 for ST at ``τ = 1``, about 2 for ReinMax.
    """
    logits, make = small_problem(config)
    studied = methods()
    grid = [(t, e) for t in config.taus for e in config.eps]
    cells: dict[str, dict[str, list[list[float]]]] = {
        m: {k: [[0.0] * len(config.eps) for _ in config.taus] for k in _CELL_KEYS} for m in studied
    }
    for tau, eps in progress(grid, total=len(grid), desc="bias study: tau x eps"):
        i, j = config.taus.index(tau), config.eps.index(eps)
        f, grad_f = make(eps)
        exact = exact_gradient(logits, f)
        for method in studied:
            mean, variance, std_error = estimator_moments(method, logits, f, grad_f, tau, config)
            for key, value in _relative(mean, std_error, exact, variance).items():
                cells[method][key][i][j] = value
    return {
        "rows": config.rows,
        "categories": config.categories,
        "logits": logits,
        "f": "exp(eps * sum(c * D)), c ~ N(0, 1) fixed by the seed",
        "taus": list(config.taus),
        "eps": list(config.eps),
        "results": cells,
        "slopes": _slopes(cells, config),
    }


_CELL_KEYS = ("bias", "cosine", "bias_floor", "variance", "relative_std")


# ---------------------------------------------------------------------------------------------
# The polynomial problem at its initial point
# ---------------------------------------------------------------------------------------------


def _poly_grad_f(p: float, variables: int) -> Callable[[np.ndarray], np.ndarray]:
    """``∂f/∂D`` of the polynomial problem's sample loss at power ``p`` over ``variables`` rows."""
    return functools.partial(poly.sample_loss_gradient, p=p, variables=variables)


def _reinforce_step_moments(
    logits: np.ndarray, p: float, samples: int, baseline: bool, config: StudyConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monte Carlo ``(mean, variance, std_error)`` of one training step's REINFORCE estimate.

    The loss couples all rows, so the joint space (``2^L``) cannot be enumerated: each of
    ``reinforce_steps`` replicate steps draws ``samples`` joint samples, as training does (with
    the same sampler).
    """
    from reinmax.backends import numpy as rnp

    rng = np.random.Generator(np.random.Philox(config.seed))
    shape = (config.reinforce_steps, samples, *logits.shape)
    batch = np.broadcast_to(logits, shape)
    sampler = estimator(poly.REINFORCE_SAMPLER)
    hard, _ = rnp.estimate(sampler, batch, noise=rng.random(noise_layout(sampler, shape)))
    values = poly.sample_loss(hard[..., 0], p)
    base = poly.leave_one_out_baseline(values) if baseline else np.zeros_like(values)
    value = np.broadcast_to(values[..., None], shape[:-1])
    surrogate, pullback = rnp.vjp(rnp.reinforce, batch, hard, value, base[..., None])
    steps = pullback(np.ones_like(surrogate)).mean(axis=1)
    variance = steps.var(axis=0, ddof=1)
    return steps.mean(axis=0), variance, np.sqrt(variance / config.reinforce_steps)


def _step_moments(
    method: str, logits: np.ndarray, p: float, samples: int, config: StudyConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, variance, std_error)`` per entry of one training step's estimate (``samples``
    samples) by ``method`` at the polynomial problem's ``logits``."""
    if method in poly.REINFORCE:
        return _reinforce_step_moments(logits, p, samples, method == "reinforce_baseline", config)
    est = _estimator(method, config)
    if _needs_monte_carlo(est):
        grad_f = _poly_grad_f(p, logits.shape[0])
        mean, std_error, variance = monte_carlo_estimate(
            est, logits, grad_f, config.poly_tau, config.poly_draws, config.seed
        )
        return mean, variance / samples, std_error
    mean, variance = _rowwise_moments(method, logits, p, config)
    return mean, variance / samples, np.zeros_like(mean)


def poly_study(
    config: StudyConfig,
    powers: Sequence[float] = poly.POWERS,
    poly_config: poly.PolyConfig | None = None,
) -> dict[str, Any]:
    """Bias and variance of one training step's estimate at the polynomial problem's start.

    The rows are independent and the loss is a sum over rows, so every estimator but REINFORCE
    acts row by row: a row's expectation is enumerated over its two categories. REINFORCE
    (with and without the leave-one-out baseline) sees the whole loss and is estimated by
    Monte Carlo. The variance is the trace of the covariance of the ``N``-sample step estimate.
    """
    poly_config = poly_config or poly.PolyConfig()
    variables, samples = poly_config.variables, poly_config.samples
    logits = poly.initial_logits(config.seed, variables, poly_config.init_scale)
    out: dict[str, Any] = {"tau": config.poly_tau, "samples": samples, "powers": {}}
    jobs = [(p, m) for p in powers for m in (*estimator_names(), *poly.REINFORCE)]
    for p, method in progress(jobs, total=len(jobs), desc="bias study: polynomial"):
        exact = poly.exact_gradient(logits, p)
        mean, variance, std_error = _step_moments(method, logits, p, samples, config)
        out["powers"].setdefault(f"{p:g}", {})[method] = _relative(mean, std_error, exact, variance)
    return out


def _rowwise_moments(
    method: str, logits: np.ndarray, p: float, config: StudyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-entry mean and variance of one sample, enumerating each row on its own."""
    grad_f = _poly_grad_f(p, logits.shape[0])
    est = _estimator(method, config)
    moments = [variance_by_enumeration(est, row[None], grad_f, config.poly_tau) for row in logits]
    return np.concatenate([m for m, _ in moments]), np.concatenate([v for _, v in moments])


# ---------------------------------------------------------------------------------------------
# Plots, the JSON, the command
# ---------------------------------------------------------------------------------------------


def plot_small(small: dict[str, Any], config: StudyConfig, path: str | Path) -> Path:
    """Relative bias against ``ε`` at ``τ = 1`` (with fitted slopes), against ``τ``, and the
    relative standard deviation against ``τ``."""
    plt = pyplot()
    eps = np.asarray(small["eps"])
    taus = np.asarray(small["taus"])
    i_tau = _closest(small["taus"], 1.0)
    j_eps = _closest(small["eps"], config.eps_at_tau)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for method, cell in small["results"].items():
        bias = np.asarray(cell["bias"])
        slope = small["slopes"][method][f"{taus[i_tau]:g}"]
        # REINFORCE's bias is rounding error (below the axes): its slope means nothing.
        note = "unbiased, below 1e-7" if method == "reinforce" else f"slope {slope:.2f}"
        (line,) = axes[0].loglog(eps, bias[i_tau], "o-", label=f"{method} ({note})")
        floor = np.asarray(cell["bias_floor"])[i_tau]
        if floor.any():
            axes[0].loglog(eps, floor, ":", color=line.get_color(), lw=0.8)
        axes[1].loglog(taus, bias[:, j_eps], "o-", color=line.get_color(), label=method)
        std = np.asarray(cell["relative_std"])[:, j_eps]
        axes[2].loglog(taus, std, "o-", color=line.get_color(), label=method)
    axes[0].set(
        xlabel="ε (scale of f)",
        ylabel="‖E[ĝ] − ∇‖ / ‖∇‖",
        title=f"relative bias at τ = {taus[i_tau]:g} (dotted: Monte Carlo floor)",
    )
    axes[1].set(xlabel="τ", ylabel="relative bias", title=f"relative bias at ε = {eps[j_eps]:g}")
    axes[2].set(xlabel="τ", ylabel="√tr Cov / ‖E ĝ‖", title=f"relative std at ε = {eps[j_eps]:g}")
    # REINFORCE is unbiased: its bias is rounding error, far below the others; clip it away.
    for ax in axes[:2]:
        ax.set_ylim(bottom=1e-7)
    for ax in axes[1:]:
        ax.set_xticks(taus, [f"{t:g}" for t in taus])
        ax.minorticks_off()
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"f(D) = exp(ε Σ c·D), {small['rows']} rows × {small['categories']} categories")
    return save_figure(fig, path)


def plot_poly(study: dict[str, Any], path: str | Path) -> Path:
    """Relative bias, cosine to the exact gradient and relative standard deviation per method,
    one group of bars per ``p``."""
    plt = pyplot()
    powers = list(study["powers"])
    studied = list(next(iter(study["powers"].values())))
    panels = (
        ("bias", "relative bias ‖E[ĝ] − ∇‖ / ‖∇‖", "log"),
        ("cosine", "cos(E[ĝ], ∇)", "linear"),
        ("relative_std", f"relative std of one step ({study['samples']} samples)", "log"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(19, 4.5))
    width = 0.8 / len(studied)
    for k, method in enumerate(studied):
        x = np.arange(len(powers)) + k * width
        for ax, (key, _, _) in zip(axes, panels):
            ax.bar(x, [study["powers"][p][method][key] for p in powers], width, label=method)
    for ax, (_, title, scale) in zip(axes, panels):
        ax.set_xticks(np.arange(len(powers)) + 0.4 - width / 2, [f"p = {p}" for p in powers])
        ax.set_yscale(scale)
        ax.set_title(title)
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"polynomial problem at its initial point, τ = {study['tau']:g}", y=1.03)
    return save_figure(fig, path)


def _closest(values: Sequence[float], target: float) -> int:
    """The index of the value nearest ``target`` on a log scale."""
    return int(np.argmin(np.abs(np.log(np.asarray(values, float)) - np.log(target))))


def run(
    config: StudyConfig, json_path: str | Path, *, powers: Sequence[float] = poly.POWERS
) -> dict[str, Any]:
    """Both studies; writes the JSON and the two plots beside it, returns the JSON object."""
    json_path = Path(json_path)
    small = small_study(config)
    poly_part = poly_study(config, powers)
    result = {
        "study": "bias",
        "config": dataclasses.asdict(config),
        "small": small,
        "poly": poly_part,
    }
    write_json(json_path, result)
    plot_small(small, config, json_path.with_name(json_path.stem + "_small.png"))
    plot_poly(poly_part, json_path.with_name(json_path.stem + "_poly.png"))
    return result


def _parser() -> argparse.ArgumentParser:
    parser = config_parser(
        "reinmax study bias",
        "Bias (relative to the exact gradient) and variance of every estimator, "
        "by enumeration where possible, against the temperature and the scale of f.",
        StudyConfig(),
        helps={
            "eps_at_tau": "the ε of the plots against τ",
            "slope_below": "fit the order over ε <= this",
            "draws": "Monte Carlo draws",
            "poly_draws": "Monte Carlo samples for the Gumbel estimators on the polynomial",
            "reinforce_steps": "Monte Carlo replicate steps for REINFORCE on the polynomial",
        },
    )
    parser.add_argument("--p", type=finite_float, nargs="+", default=list(poly.POWERS))
    parser.add_argument("--json", default="results/bias/bias.json")
    add_publish_option(parser)
    return parser


def slope_table(result: dict[str, Any]) -> str:
    """Markdown: the fitted order of each estimator's relative bias in ε at the τ closest to 1,
    then, per p, the polynomial problem at its start (relative bias with its Monte Carlo floor,
    cosine with the exact gradient, relative standard deviation)."""
    small = result["small"]
    taus = [float(t) for t in next(iter(small["slopes"].values()))]
    tau = f"{taus[_closest(tuple(taus), 1.0)]:g}"
    lines = [
        f"| estimator | order of the relative bias in ε (τ = {tau}) |",
        "|---|---|",
    ]
    for method, slopes in small["slopes"].items():
        note = " (unbiased: a fit of rounding error)" if method == "reinforce" else ""
        lines.append(f"| {method} | {slopes[tau]:.2f}{note} |")
    lines += [
        "",
        "| p | estimator | relative bias (MC floor) | cosine | relative std |",
        "|---|---|---|---|---|",
    ]
    for p, cells in result["poly"]["powers"].items():
        for method, c in cells.items():
            lines.append(
                f"| {p} | {method} | {c['bias']:.3g} ({c['bias_floor']:.1g}) | "
                f"{c['cosine']:+.4f} | {c['relative_std']:.3g} |"
            )
    return "\n".join(lines)


@command("reinmax study bias")
def main(argv: list[str] | None = None) -> int:
    """``reinmax study bias``: print the fitted orders and the polynomial table, write JSON."""
    parser = _parser()
    args = parser.parse_args(argv)
    check_destination(args.json)
    result = run(_config(parser, args), args.json, powers=args.p)
    print(slope_table(result))
    status(f"wrote {args.json}")
    return 0


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> StudyConfig:
    """The :class:`StudyConfig` of the command line; a bad value is a usage error."""
    return config_from_args(parser, StudyConfig, args)

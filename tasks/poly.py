"""Polynomial programming: the first experiment of Liu et al. (2023), in every backend.

``L`` independent binary variables (two categories each) with logits ``θ`` of shape ``L × 2``
minimise ``(1/L) Σ_l |z_l − 0.45|^p`` averaged over ``N`` samples per step, where ``z_l`` is the
indicator of the first category (Tucker et al. 2017; Paulus et al. 2021; Liu et al. 2023 use
``L = 128``, ``N = 64``, Adam at ``1e-3`` for 8,000 steps). The expected loss is analytic,

    ``E(θ) = (1/L) Σ_l [π_l · 0.55^p + (1 − π_l) · 0.45^p]``,  ``π_l = softmax(θ_l)_0``,

so its minimum is ``0.45^p`` (every ``π_l → 0``) and its gradient is exact; the task reports
``E(θ)`` (not the noisy sampled loss) as its metric, next to the sampled training loss.

The noise is drawn on the host from NumPy Philox streams keyed by the seed and fed to every
backend as ``noise=``, so the three backends see identical samples. Seeds and powers ``p`` are
trained together as leading axes of one parameter array: Adam is elementwise and each seed's loss
depends only on its own slice, so this is exactly ``len(p) × seeds`` independent runs, and a
seed's curve does not depend on which other seeds or powers run beside it.

Command: ``reinmax task poly --backend B --estimator E [--p P ...] [--tau T] [--steps N]
[--seeds S] --json PATH``.

References:
    Liu, Liu, Gao, Gao, Han. Bridging Discrete and Backpropagation: Straight-Through and Beyond.
    NeurIPS 2023. Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein. REBAR. NeurIPS 2017.
    Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
    Estimator. ICLR 2021.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.core import ESTIMATORS as ESTIMATOR_FACTORIES
from reinmax.core import Estimator, softmax
from reinmax.runtime import (
    CheckpointError,
    add_quiet_option,
    command,
    finite_float,
    non_negative_float,
    positive_float,
    positive_int,
    status,
)
from reinmax.tasks.common import (
    BACKENDS,
    ESTIMATORS,
    import_framework,
    load_checkpoint,
    progress,
    pyplot,
    save_checkpoint,
    save_figure,
    write_json,
)

__all__ = [
    "METHODS",
    "POWERS",
    "TARGET",
    "PolyConfig",
    "draw_noise",
    "exact_gradient",
    "expected_loss",
    "initial_logits",
    "main",
    "noise_generators",
    "optimum",
    "run",
    "summarize",
    "train",
]

TARGET = 0.45
"""The point every ``z_l`` is pulled toward: the loss is ``|z_l − TARGET|^p``."""

POWERS = (1.5, 2.0, 3.0)

METHODS = (*ESTIMATORS, "reinforce", "reinforce_baseline", "exact")
"""The five estimators, REINFORCE without and with a leave-one-out baseline, and the exact
gradient of the expected loss (the reference curve)."""

# Philox streams per seed: the initial logits and the per-step noise never share draws.
_INIT_STREAM = 0
_NOISE_STREAM = 1


@dataclasses.dataclass(frozen=True)
class PolyConfig:
    """One polynomial-programming experiment; the defaults are the paper's setting."""

    methods: tuple[str, ...] = METHODS
    powers: tuple[float, ...] = POWERS
    tau: float = 1.0
    steps: int = 8000
    seeds: int = 10
    variables: int = 128
    samples: int = 64
    lr: float = 1e-3
    eps: float = 1e-8
    init_scale: float = 0.01
    dtype: str = "float32"
    log_every: int = 40
    gumbel_rao_k: int = 1
    gap: float = 1.0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {unknown}")
        if not self.powers or any(not (p >= 1) for p in self.powers):
            raise ValueError(f"powers must be numbers >= 1, got {self.powers}")
        for name in ("steps", "seeds", "variables", "log_every", "gumbel_rao_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples < 2:
            raise ValueError(
                f"samples must be >= 2 (the baseline leaves one out), got {self.samples}"
            )
        for name in ("tau", "lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")


# ---------------------------------------------------------------------------------------------
# The problem, analytically
# ---------------------------------------------------------------------------------------------


def _loss_weights(powers: Any) -> tuple[Any, Any]:
    """The loss at ``z = 1`` and at ``z = 0``: ``|1 − 0.45|^p`` and ``|0 − 0.45|^p``."""
    return (1.0 - TARGET) ** powers, TARGET**powers


def expected_loss(logits: Any, powers: Any, *, xp: Any = np) -> Any:
    """``E(θ) = (1/L) Σ_l [π_l · 0.55^p + (1 − π_l) · 0.45^p]`` with ``π_l = softmax(θ_l)_0``.

    Args:
        logits: shape ``(..., L, 2)``.
        powers: ``p``, broadcastable to the leading shape ``(...)``.
        xp: the array namespace of ``logits`` (NumPy by default).

    Returns:
        The expected loss, shape ``(...)``.
    """
    first = softmax(logits, xp=xp)[..., 0]
    at_one, at_zero = _loss_weights(xp.asarray(powers))
    return xp.mean(first * at_one[..., None] + (1.0 - first) * at_zero[..., None], axis=-1)


def exact_gradient(logits: np.ndarray, powers: np.ndarray | float) -> np.ndarray:
    """``∇θ E(θ)``: row ``l`` is ``(0.55^p − 0.45^p)/L · π_l (1 − π_l) · (1, −1)``.

    ``logits`` has shape ``(..., L, 2)``, ``powers`` broadcasts to ``(...)``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    powers = np.asarray(powers, dtype=np.float64)
    first = softmax(logits, xp=np)[..., 0]
    slope = ((1.0 - TARGET) ** powers - TARGET**powers)[..., None] / logits.shape[-2]
    row = slope * first * (1.0 - first)
    return np.stack([row, -row], axis=-1)


def optimum(p: float) -> float:
    """The minimum of the expected loss, ``min(0.45, 0.55)^p = 0.45^p``."""
    return min(TARGET, 1.0 - TARGET) ** p


def initial_logits(seed: int, variables: int = 128, scale: float = 0.01) -> np.ndarray:
    """Logits of shape ``(variables, 2)``, uniform in ``[−scale, scale]``, from seed's Philox."""
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, _INIT_STREAM])))
    return rng.uniform(-scale, scale, size=(variables, 2))


def noise_generators(seeds: Sequence[int]) -> list[np.random.Generator]:
    """One Philox noise stream per seed (independent of the initialisation stream)."""
    return [
        np.random.Generator(np.random.Philox(np.random.SeedSequence([s, _NOISE_STREAM])))
        for s in seeds
    ]


def estimator_for(method: str, config: PolyConfig) -> Estimator | None:
    """The core estimator that draws (and, except for REINFORCE, differentiates) the sample."""
    if method == "exact":
        return None
    if method.startswith("reinforce"):
        # REINFORCE only needs D ~ Cat(π): the inverse-CDF sampler of straight-through.
        return ESTIMATOR_FACTORIES["straight_through"]()
    options = {
        "gumbel_softmax": {"hard": True},
        "gumbel_rao": {"k": config.gumbel_rao_k},
        "gapped_straight_through": {"gap": config.gap},
    }.get(method, {})
    return ESTIMATOR_FACTORIES[method](**options)


def draw_noise(
    estimator: Estimator, generators: Sequence[np.random.Generator], powers: int, config: PolyConfig
) -> np.ndarray:
    """One step's uniforms for the batched problem ``(powers, seeds, samples, L, 2)``.

    Each seed draws its own problem's noise from its own stream; every power ``p`` of that seed
    shares it (common random numbers), so adding a power or a seed changes no other run.
    """
    one = (1, 1, config.samples, config.variables, 2)
    shape = tuple(estimator.noise_shape(one))
    lead = len(shape) - (len(one) if estimator.per_category else len(one) - 1)
    per_seed = [g.random(shape) for g in generators]
    stacked = np.concatenate(per_seed, axis=lead + 1)
    target = list(stacked.shape)
    target[lead] = powers
    return np.ascontiguousarray(np.broadcast_to(stacked, target), dtype=config.dtype)


# ---------------------------------------------------------------------------------------------
# The objective, written once for every framework
# ---------------------------------------------------------------------------------------------


def _objective(
    fns: Any,
    stop_gradient: Callable[[Any], Any],
    method: str,
    estimator: Estimator | None,
    theta: Any,
    noise: Any,
    powers: Any,
    config: PolyConfig,
) -> tuple[Any, Any]:
    """``(objective, sampled_loss)`` for ``theta`` of shape ``(P, S, L, 2)``.

    The objective's gradient is the method's estimate of ``∇θ Σ_{p,s} E``; ``sampled_loss`` is
    the mean loss of this step's samples, shape ``(P, S)`` (the exact method, which draws no
    samples, reports its expected loss there).
    """
    xp = fns.BACKEND.xp
    if estimator is None:
        loss = expected_loss(theta, powers[:, None], xp=xp)
        return xp.sum(loss), loss
    p_count, s_count, variables, _ = theta.shape
    shape = (p_count, s_count, config.samples, variables, 2)
    logits = xp.broadcast_to(theta[:, :, None], shape)
    hard, _ = fns.estimate(estimator, logits, config.tau, noise=noise)
    z = hard[..., 0]
    per_sample = xp.mean(abs(z - TARGET) ** powers[:, None, None, None], axis=-1)
    sampled = xp.mean(per_sample, axis=-1)
    if not method.startswith("reinforce"):
        return xp.sum(sampled), sampled
    if method == "reinforce_baseline":
        # Leave-one-out: the mean loss of the other samples does not depend on this sample's D,
        # so the estimate stays unbiased.
        total = xp.sum(per_sample, axis=-1, keepdims=True)
        baseline = (total - per_sample) / (config.samples - 1)
    else:
        baseline = xp.zeros_like(per_sample)
    # REINFORCE needs f(D), not a path through D: the sample and the values carry no gradient.
    value, baseline = stop_gradient(per_sample)[..., None], stop_gradient(baseline)[..., None]
    surrogate = fns.reinforce(logits, stop_gradient(hard), value, baseline)
    return xp.sum(surrogate) / config.samples, sampled


# ---------------------------------------------------------------------------------------------
# One trainer per framework, each with its own Adam
# ---------------------------------------------------------------------------------------------


def _torch_trainer(theta0: np.ndarray, powers: np.ndarray, method: str, config: PolyConfig):
    import torch

    from reinmax.backends import torch as fns

    dtype = getattr(torch, config.dtype)
    theta = torch.nn.Parameter(torch.tensor(theta0, dtype=dtype))
    p = torch.tensor(powers, dtype=dtype)
    estimator = estimator_for(method, config)
    optimizer = torch.optim.Adam([theta], lr=config.lr, eps=config.eps)

    def step(noise: np.ndarray | None) -> np.ndarray:
        optimizer.zero_grad(set_to_none=True)
        u = None if noise is None else torch.from_numpy(noise)
        objective, sampled = _objective(
            fns, torch.Tensor.detach, method, estimator, theta, u, p, config
        )
        objective.backward()
        optimizer.step()
        return sampled.detach().numpy()

    return step, lambda: theta.detach().numpy().copy()


def _jax_trainer(theta0: np.ndarray, powers: np.ndarray, method: str, config: PolyConfig):
    import jax
    import jax.numpy as jnp
    import optax

    from reinmax.backends import jax as fns

    dtype = getattr(jnp, config.dtype)
    p = jnp.asarray(powers, dtype=dtype)
    estimator = estimator_for(method, config)
    optimizer = optax.adam(config.lr, eps=config.eps)
    state = {"theta": jnp.asarray(theta0, dtype=dtype)}
    state["opt"] = optimizer.init(state["theta"])

    def objective(theta: jax.Array, noise: jax.Array | None) -> tuple:
        return _objective(fns, jax.lax.stop_gradient, method, estimator, theta, noise, p, config)

    @jax.jit
    def update(theta: jax.Array, opt_state: Any, noise: jax.Array | None) -> tuple:
        (_, sampled), grad = jax.value_and_grad(objective, has_aux=True)(theta, noise)
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, sampled

    def step(noise: np.ndarray | None) -> np.ndarray:
        state["theta"], state["opt"], sampled = update(state["theta"], state["opt"], noise)
        return np.asarray(sampled)

    return step, lambda: np.asarray(state["theta"]).copy()


def _tensorflow_trainer(theta0: np.ndarray, powers: np.ndarray, method: str, config: PolyConfig):
    import tensorflow as tf

    from reinmax.backends import tensorflow as fns

    dtype = getattr(tf, config.dtype)
    theta = tf.Variable(theta0, dtype=dtype)
    p = tf.constant(powers, dtype=dtype)
    estimator = estimator_for(method, config)
    optimizer = tf.keras.optimizers.Adam(learning_rate=config.lr, epsilon=config.eps)

    @tf.function
    def update(noise: tf.Tensor | None) -> tf.Tensor:
        with tf.GradientTape() as tape:
            objective, sampled = _objective(
                fns, tf.stop_gradient, method, estimator, theta, noise, p, config
            )
        optimizer.apply_gradients([(tape.gradient(objective, theta), theta)])
        return sampled

    def step(noise: np.ndarray | None) -> np.ndarray:
        return update(None if noise is None else tf.constant(noise)).numpy()

    return step, lambda: theta.numpy().copy()


_TRAINERS: dict[str, Callable] = {
    "torch": _torch_trainer,
    "jax": _jax_trainer,
    "tensorflow": _tensorflow_trainer,
}


def train(backend: str, method: str, config: PolyConfig, seeds: Sequence[int]) -> dict[str, Any]:
    """Train every ``(p, seed)`` of one method in ``backend``; returns the curves and the timing.

    Returns a dict with ``steps`` (the logged step numbers, starting at 0), ``expected_loss`` and
    ``sampled_loss`` (arrays ``(P, S, len(steps))``; the sampled loss at a logged step is the mean
    over the ``log_every`` steps before it, NaN at step 0), ``final_theta`` and ``seconds``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    import_framework(backend)
    powers = np.asarray(config.powers, dtype=np.float64)
    theta0 = np.stack([initial_logits(s, config.variables, config.init_scale) for s in seeds])
    theta0 = np.broadcast_to(theta0, (len(powers), *theta0.shape)).copy()
    step, current = _TRAINERS[backend](theta0, powers, method, config)
    estimator = estimator_for(method, config)
    generators = noise_generators(seeds)

    steps, expected, sampled = (
        [0],
        [expected_loss(theta0, powers[:, None])],
        [np.full(theta0.shape[:2], np.nan)],
    )
    window: list[np.ndarray] = []
    compile_seconds = 0.0
    start = time.perf_counter()
    for t in progress(range(1, config.steps + 1), total=config.steps, desc=f"{backend} {method}"):
        noise = (
            None if estimator is None else draw_noise(estimator, generators, len(powers), config)
        )
        window.append(step(noise))
        if t == 1:
            # The first step traces and compiles (jit, tf.function); keep it out of the rate.
            compile_seconds = time.perf_counter() - start
        if t % config.log_every == 0 or t == config.steps:
            steps.append(t)
            expected.append(expected_loss(current().astype(np.float64), powers[:, None]))
            sampled.append(np.mean(window, axis=0))
            window = []
    seconds = time.perf_counter() - start
    return {
        "steps": steps,
        "expected_loss": np.stack(expected, axis=-1),
        "sampled_loss": np.stack(sampled, axis=-1),
        "final_theta": current(),
        "seconds": seconds,
        "seconds_per_step": (seconds - compile_seconds) / max(config.steps - 1, 1),
        "first_step_seconds": compile_seconds,
    }


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and ``p``: final expected loss, its gap to the optimum, and the sampled loss,
    as mean and (sample) standard deviation over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        table[method] = {}
        for p in dict.fromkeys(r["p"] for r in runs if r["method"] == method):
            rows = [r for r in runs if r["method"] == method and r["p"] == p]
            exp_mean, exp_std = _mean_std([r["final_expected_loss"] for r in rows])
            gap_mean, gap_std = _mean_std([r["final_expected_loss"] - optimum(p) for r in rows])
            smp_mean, smp_std = _mean_std([r["final_sampled_loss"] for r in rows])
            table[method][_p_key(p)] = {
                "expected_loss_mean": exp_mean,
                "expected_loss_std": exp_std,
                "gap_mean": gap_mean,
                "gap_std": gap_std,
                "sampled_loss_mean": smp_mean,
                "sampled_loss_std": smp_std,
                "optimum": optimum(p),
                "seeds": len(rows),
            }
    return table


def _p_key(p: float) -> str:
    return f"{p:g}"


def format_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """A Markdown table: final expected loss (mean ± std over seeds) per method and ``p``."""
    powers = list(dict.fromkeys(k for cells in summary.values() for k in cells))
    head = " | ".join(f"p={p} (opt {optimum(float(p)):.6f})" for p in powers)
    lines = [f"| method | {head} |", "|---" * (len(powers) + 1) + "|"]
    for method, cells in summary.items():
        row = []
        for p in powers:
            c = cells.get(p)
            row.append(
                "" if c is None else f"{c['expected_loss_mean']:.6f} ± {c['expected_loss_std']:.6f}"
            )
        lines.append(f"| {method} | {' | '.join(row)} |")
    return "\n".join(lines)


def plot_curves(result: dict[str, Any], path: str | Path) -> Path:
    """Expected loss minus the optimum (log scale) and the sampled loss, per ``p``, mean ± std."""
    plt = pyplot()
    runs = result["runs"]
    powers = list(dict.fromkeys(r["p"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    steps = np.asarray(result["steps"])
    fig, axes = plt.subplots(2, len(powers), figsize=(5 * len(powers), 8), squeeze=False)
    for col, p in enumerate(powers):
        top, bottom = axes[0][col], axes[1][col]
        for method in methods:
            rows = [r for r in runs if r["method"] == method and r["p"] == p]
            gap = np.array([r["expected_loss"] for r in rows]) - optimum(p)
            mean, std = gap.mean(0), gap.std(0)
            (line,) = top.plot(steps, mean, label=method)
            top.fill_between(
                steps, np.maximum(mean - std, 1e-12), mean + std, alpha=0.2, color=line.get_color()
            )
            # The sampled loss is a mean over the steps before each logged step: none at step 0.
            smp = np.array([r["sampled_loss"][1:] for r in rows], dtype=np.float64)
            bottom.plot(steps[1:], smp.mean(0), label=method, color=line.get_color())
        top.set_yscale("log")
        top.set_title(f"p = {p:g}: expected loss − optimum ({optimum(p):.6f})")
        bottom.axhline(optimum(p), color="black", lw=0.8, ls="--", label="optimum")
        bottom.set_title(f"p = {p:g}: sampled training loss")
        for ax in (top, bottom):
            ax.set_xlabel("step")
        top.legend(fontsize=7)
    fig.suptitle(
        f"Polynomial programming, {result['backend']}, τ = {result['config']['tau']:g}, "
        f"{len(set(r['seed'] for r in runs))} seeds"
    )
    return save_figure(fig, path)


def run(
    backend: str,
    config: PolyConfig,
    json_path: str | Path,
    *,
    plot_path: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run every method of ``config`` in ``backend``, write the JSON and the plot, return the JSON.

    Behind the conformance gate. A checkpoint beside ``json_path`` holds every finished method,
    so ``resume=True`` starts where a killed run stopped.
    """
    from reinmax.tasks.common import require_conformance

    json_path = Path(json_path)
    checkpoint = json_path.with_suffix(".ckpt")
    seeds = list(range(config.seeds))
    # The checkpoint is read before any work, so that a bad one stops the command at once.
    state = load_checkpoint(checkpoint, "poly") if resume else None
    if state is not None and state.get("config") != dataclasses.asdict(config):
        raise CheckpointError(
            f"checkpoint {checkpoint} was written with other options; rerun with the same "
            "options, or without --resume to start afresh"
        )
    if state is None:
        state = {"config": dataclasses.asdict(config), "done": {}}
    # REINFORCE draws its samples with straight-through's sampler, so that one is checked too.
    sampled = ["straight_through" if m.startswith("reinforce") else m for m in config.methods]
    require_conformance(backend, [m for m in dict.fromkeys(sampled) if m in ESTIMATORS])
    for method in config.methods:
        if method in state["done"]:
            continue
        state["done"][method] = train(backend, method, config, seeds)
        save_checkpoint(checkpoint, state, "poly")
    result = _assemble(backend, config, seeds, state["done"])
    write_json(json_path, result)
    plot_curves(result, plot_path or json_path.with_suffix(".png"))
    checkpoint.unlink(missing_ok=True)
    return result


def _assemble(
    backend: str, config: PolyConfig, seeds: list[int], done: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    runs, timing = [], {}
    steps = next(iter(done.values()))["steps"]
    for method in config.methods:
        out = done[method]
        timing[method] = {
            "seconds": out["seconds"],
            "seconds_per_step": out["seconds_per_step"],
            "first_step_seconds": out["first_step_seconds"],
        }
        for i, p in enumerate(config.powers):
            for j, seed in enumerate(seeds):
                exp = out["expected_loss"][i, j]
                smp = out["sampled_loss"][i, j]
                runs.append(
                    {
                        "method": method,
                        "p": p,
                        "seed": seed,
                        "final_expected_loss": float(exp[-1]),
                        "final_sampled_loss": float(smp[-1]),
                        "expected_loss": exp,
                        "sampled_loss": [None if math.isnan(v) else float(v) for v in smp],
                    }
                )
    return {
        "task": "poly",
        "backend": backend,
        "config": dataclasses.asdict(config),
        "optimum": {_p_key(p): optimum(p) for p in config.powers},
        "steps": steps,
        "summary": summarize(runs),
        "timing": timing,
        "runs": runs,
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = PolyConfig()
    parser = argparse.ArgumentParser(
        prog="reinmax task poly",
        description="Polynomial programming (Liu et al. 2023): 128 binary variables, "
        "loss mean_l |z_l - 0.45|^p, Adam; reports the analytic expected loss per seed.",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument(
        "--estimator",
        nargs="+",
        default=["all"],
        metavar="E",
        help=f"one or more of {', '.join(METHODS)}, or all (default)",
    )
    parser.add_argument("--p", nargs="+", type=finite_float, default=list(POWERS), help="powers p")
    parser.add_argument("--tau", type=positive_float, default=defaults.tau)
    parser.add_argument("--steps", type=positive_int, default=defaults.steps)
    parser.add_argument("--seeds", type=positive_int, default=defaults.seeds, help="seeds 0..S-1")
    parser.add_argument("--variables", type=positive_int, default=defaults.variables)
    parser.add_argument("--samples", type=positive_int, default=defaults.samples)
    parser.add_argument("--lr", type=positive_float, default=defaults.lr)
    parser.add_argument("--eps", type=non_negative_float, default=defaults.eps, help="Adam epsilon")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=defaults.dtype)
    parser.add_argument("--log-every", type=positive_int, default=defaults.log_every)
    parser.add_argument("--gumbel-rao-k", type=positive_int, default=defaults.gumbel_rao_k)
    parser.add_argument("--gap", type=non_negative_float, default=defaults.gap, help="GST gap")
    parser.add_argument("--json", default=None, help="default results/poly/<backend>.json")
    parser.add_argument("--plot", default=None, help="default: the JSON path with .png")
    parser.add_argument("--resume", action="store_true", help="skip methods already finished")
    return parser


@command("reinmax task poly")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task poly``: train, print the results table, write the JSON and the plot."""
    parser = _parser()
    add_quiet_option(parser)
    args = parser.parse_args(argv)
    methods = METHODS if args.estimator == ["all"] else tuple(args.estimator)
    try:
        config = PolyConfig(
            methods=methods,
            powers=tuple(args.p),
            tau=args.tau,
            steps=args.steps,
            seeds=args.seeds,
            variables=args.variables,
            samples=args.samples,
            lr=args.lr,
            eps=args.eps,
            dtype=args.dtype,
            log_every=args.log_every,
            gumbel_rao_k=args.gumbel_rao_k,
            gap=args.gap,
        )
    except ValueError as error:
        parser.error(str(error))
    json_path = Path(args.json or f"results/poly/{args.backend}.json")
    result = run(args.backend, config, json_path, plot_path=args.plot, resume=args.resume)
    print(format_table(result["summary"]))
    for method, t in result["timing"].items():
        print(f"{method}: {t['seconds']:.1f} s, {1e3 * t['seconds_per_step']:.2f} ms/step")
    status(f"wrote {json_path}")
    return 0

"""The polynomial-programming problem, written once for every framework.

The analytic expected loss and its exact gradient, the optimum, the initial logits, the noise
of a step, the per-sample loss and the objective that each framework's trainer differentiates
(:mod:`reinmax.tasks.poly.torch`, ``.jax``, ``.tensorflow`` hold only the framework idiom and
its data-parallel engine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from reinmax.core import REGISTRY, Estimator, noise_layout, softmax
from reinmax.noise import estimator_noise
from reinmax.runtime import NonNegativeFloat, PositiveFloat, PositiveInt
from reinmax.tasks.common import estimator, estimator_names, noise_seed
from reinmax.tasks.parallel import SEED_LIMIT

__all__ = [
    "EXTRA_METHODS",
    "GUMBEL_RAO_K",
    "NOISE_PURPOSE",
    "POWERS",
    "REINFORCE",
    "REINFORCE_SAMPLER",
    "TARGET",
    "Hooks",
    "PolyConfig",
    "Setup",
    "Trainer",
    "estimator_for",
    "estimator_options",
    "exact_gradient",
    "expected_loss",
    "initial_logits",
    "initial_theta",
    "leave_one_out_baseline",
    "methods",
    "objective",
    "optimum",
    "sample_loss",
    "sample_loss_gradient",
    "seeds_of",
    "step_noise",
]

TARGET = 0.45
"""The point every ``z_l`` is pulled toward: the loss is ``|z_l − TARGET|^p``."""

POWERS = (1.5, 2.0, 3.0)

REINFORCE = ("reinforce", "reinforce_baseline")
"""REINFORCE without and with a leave-one-out baseline."""

EXTRA_METHODS = (*REINFORCE, "exact")
"""The task's own methods beside the registered estimators: REINFORCE without and with a
leave-one-out baseline, and the exact gradient of the expected loss (the reference curve)."""

REINFORCE_SAMPLER = "straight_through"
"""The estimator whose sampler draws REINFORCE's samples: REINFORCE only needs ``D ~ Cat(π)``,
which straight-through's inverse-CDF sampler draws."""

GUMBEL_RAO_K = 100
"""Gumbel-Rao's conditional draws K in the paper's polynomial-programming script."""

# The Philox stream of the initial logits of a seed.
_INIT_STREAM = 0
NOISE_PURPOSE = 1
"""The purpose of the training noise (:func:`reinmax.tasks.common.noise_seed`)."""

Step = Callable[[int], np.ndarray]
"""One optimizer step, given the step number (from 1), drawing its noise on the device; returns
the sampled loss of every ``(p, seed)``, shape ``(P, S)``, averaged over every worker's
samples."""

Trainer = tuple[Step, Callable[[], np.ndarray]]
"""What a framework's ``trainer`` returns: the step, and a function returning the current
logits ``(P, S, L, 2)`` as a NumPy copy."""


def methods() -> tuple[str, ...]:
    """Every method the task trains with, read when called: the registered estimators (one
    registered at run time too), then :data:`EXTRA_METHODS`."""
    return (*estimator_names(), *EXTRA_METHODS)


@dataclasses.dataclass(frozen=True)
class PolyConfig:
    """One polynomial-programming experiment; the defaults are the paper's setting."""

    methods: tuple[str, ...] = dataclasses.field(default_factory=methods)
    powers: tuple[float, ...] = POWERS
    tau: PositiveFloat = 1.0
    steps: PositiveInt = 8000
    seeds: PositiveInt = 10
    seed: int = 0
    variables: PositiveInt = 128
    samples: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    eps: NonNegativeFloat = 1e-8
    init_scale: float = 0.01
    dtype: str = "float32"
    log_every: PositiveInt = 40
    gumbel_rao_k: PositiveInt = GUMBEL_RAO_K
    gap: NonNegativeFloat = 1.0

    def __post_init__(self) -> None:
        known = methods()
        unknown = [m for m in self.methods if m not in known]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {known}, got {unknown}")
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
        if not 0 <= self.seed <= SEED_LIMIT - self.seeds:
            raise ValueError(
                f"seed must be a non-negative integer with seed + seeds <= 2**64, got {self.seed}"
            )

    def estimator_options(self) -> dict[str, Any]:
        """The estimator options this task sets, by their registry names; each estimator takes
        the ones it has. The loss reads ``z`` off a one-hot sample, hence ``hard``."""
        return {"hard": True, "k": self.gumbel_rao_k, "gap": self.gap}


class Setup(NamedTuple):
    """What a framework's ``trainer(setup) -> Trainer`` is given: the initial logits
    ``theta0`` ``(P, S, L, 2)``, the powers ``(P,)``, the method, the configuration, the seeds
    and the started :mod:`reinmax.tasks.parallel` engine of the framework."""

    theta0: np.ndarray
    powers: np.ndarray
    method: str
    config: PolyConfig
    seeds: Sequence[int]
    engine: Any


def seeds_of(config: PolyConfig) -> list[int]:
    """The seeds ``config`` trains: ``seed`` to ``seed + seeds − 1``."""
    return list(range(config.seed, config.seed + config.seeds))


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
    at_one, at_zero = _loss_weights(powers)
    slope = (at_one - at_zero)[..., None] / logits.shape[-2]
    row = slope * first * (1.0 - first)
    return np.stack([row, -row], axis=-1)


def optimum(p: float) -> float:
    """The minimum of the expected loss, ``min(0.45, 0.55)^p = 0.45^p``."""
    return min(TARGET, 1.0 - TARGET) ** p


def sample_loss(z: Any, powers: Any, *, xp: Any = np) -> Any:
    """The loss of a sample, ``(1/L) Σ_l |z_l − 0.45|^p``, for indicators ``z`` of shape
    ``(..., L)`` and ``powers`` broadcastable to ``z``; shape ``(...)``."""
    return xp.mean(abs(z - TARGET) ** powers, axis=-1)


def sample_loss_gradient(d: np.ndarray, p: float, variables: int) -> np.ndarray:
    """``∂f/∂D`` of the sample loss ``f(D) = (1/L) Σ_l |D_l0 − 0.45|^p`` with ``L = variables``,
    at one-hot rows ``D`` of shape ``(..., 2)`` (some or all of the ``L`` rows): nonzero only in
    the first category's entry."""
    z = d[..., 0] - TARGET
    g = np.zeros_like(d)
    g[..., 0] = p * np.abs(z) ** (p - 1) * np.sign(z) / variables
    return g


def leave_one_out_baseline(
    per_sample: Any, *, xp: Any = np, total: Any = None, count: int | None = None
) -> Any:
    """The mean loss of the other samples, for losses ``(..., N)`` of ``N`` samples.

    It does not depend on the sample it is the baseline of, so REINFORCE stays unbiased. A
    worker holding some of the ``count`` samples passes their ``total`` (``(..., 1)``, summed
    over every worker); by default the samples given are all of them.
    """
    if total is None:
        total = xp.sum(per_sample, axis=-1, keepdims=True)
    count = per_sample.shape[-1] if count is None else count
    return (total - per_sample) / (count - 1)


# ---------------------------------------------------------------------------------------------
# The starting point, on the host, and the noise, on the device
# ---------------------------------------------------------------------------------------------


def initial_logits(seed: int, variables: int = 128, scale: float = 0.01) -> np.ndarray:
    """Logits of shape ``(variables, 2)``, uniform in ``[−scale, scale]``, from seed's Philox."""
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, _INIT_STREAM])))
    return rng.uniform(-scale, scale, size=(variables, 2))


def initial_theta(config: PolyConfig, seeds: Sequence[int]) -> np.ndarray:
    """The starting logits of every ``(p, seed)``, shape ``(P, S, L, 2)``: every power of a
    seed starts from that seed's :func:`initial_logits`."""
    theta0 = np.stack([initial_logits(s, config.variables, config.init_scale) for s in seeds])
    return np.broadcast_to(theta0, (len(config.powers), *theta0.shape)).copy()


def estimator_for(method: str, config: PolyConfig) -> Estimator | None:
    """The registered estimator that draws (and, except for REINFORCE, differentiates) the
    sample of ``method``, with the options of ``config``; None for the exact method."""
    if method == "exact":
        return None
    name = REINFORCE_SAMPLER if method in REINFORCE else method
    return estimator(name, **config.estimator_options())


def estimator_options(method: str, config: PolyConfig) -> dict[str, Any]:
    """The options ``method``'s estimator takes from ``config`` (``{"k": K}`` for
    Gumbel-Rao), for the results file; none for REINFORCE and the exact method."""
    if method not in REGISTRY:
        return {}
    given = config.estimator_options()
    return {o.name: given[o.name] for o in REGISTRY[method].options if o.name in given}


def step_noise(
    estimator: Estimator,
    seeds: Sequence[int],
    step: Any,
    first_sample: Any,
    samples: int,
    powers: int,
    config: PolyConfig,
    *,
    xp: Any,
    device: Any = None,
) -> Any:
    """The uniforms of one step for samples ``first_sample`` to ``first_sample + samples − 1``
    of the batched problem ``(powers, seeds, samples, L, 2)``, from the portable generator.

    Each seed draws its own problem's noise, keyed by the seed itself (a seed's curve does not
    depend on which other seeds run beside it); every power ``p`` of that seed shares it (common
    random numbers). A sample's rows are numbered ``sample · L + l``, so a worker holding some of
    the samples draws what one process draws for them. ``step`` and ``first_sample`` may be
    traced integer arrays.
    """
    core = (samples, config.variables, 2)
    dtype = getattr(xp, config.dtype)
    rows = first_sample * config.variables
    per_seed = [
        estimator_noise(
            estimator, core, noise_seed(s, NOISE_PURPOSE, step, rows), dtype, xp=xp, device=device
        )
        for s in seeds
    ]
    one = noise_layout(estimator, core)
    lead = len(one) - len(core) if estimator.per_category else 0
    stacked = xp.stack(per_seed, axis=lead)
    stacked = xp.reshape(stacked, (*one[:lead], 1, len(seeds), *one[lead:]))
    return xp.broadcast_to(stacked, noise_layout(estimator, (powers, len(seeds), *core)))


# ---------------------------------------------------------------------------------------------
# The objective, written once for every framework
# ---------------------------------------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


class Hooks(NamedTuple):
    """What :func:`objective` needs of a framework and of its data-parallel engine.

    Attributes:
        fns: the framework's reinmax backend module.
        stop_gradient: cuts a value off the graph.
        total: sums a value over every worker (off the graph); identity for one worker, or where
            the step computes on the global arrays (JAX).
        place: gives the broadcast logits ``(P, S, samples, L, 2)`` their placement on the
            devices (JAX's sharding constraint over the samples); identity elsewhere.
    """

    fns: Any
    stop_gradient: Callable[[Any], Any]
    total: Callable[[Any], Any] = _identity
    place: Callable[[Any], Any] = _identity


def objective(
    hooks: Hooks,
    method: str,
    estimator: Estimator | None,
    theta: Any,
    noise: Any,
    powers: Any,
    config: PolyConfig,
) -> tuple[Any, Any]:
    """``(objective, sampled_loss)`` for ``theta`` of shape ``(P, S, L, 2)`` and this worker's
    samples, whose uniforms are ``noise`` (:func:`step_noise`; None for the exact method).

    The objective's gradient is the method's estimate of ``∇θ Σ_{p,s} E`` from the worker's
    samples (their mean); ``sampled_loss`` is the mean loss of the worker's samples, shape
    ``(P, S)`` (the exact method, which draws no samples, reports its expected loss there).
    Averaged over equal workers, both are those of all the samples.
    """
    xp = hooks.fns.BACKEND.xp
    if estimator is None:
        loss = expected_loss(theta, powers[:, None], xp=xp)
        return xp.sum(loss), loss
    # The samples axis of the noise: (..., samples, L, 2) per category, (..., samples, L) a row.
    samples = noise.shape[-3] if estimator.per_category else noise.shape[-2]
    p_count, s_count, variables, _ = theta.shape
    shape = (p_count, s_count, samples, variables, 2)
    logits = hooks.place(xp.broadcast_to(theta[:, :, None], shape))
    hard, _ = hooks.fns.estimate(estimator, logits, config.tau, noise=noise)
    per_sample = sample_loss(hard[..., 0], powers[:, None, None, None], xp=xp)
    sampled = xp.mean(per_sample, axis=-1)
    if method not in REINFORCE:
        return xp.sum(sampled), sampled
    surrogate = _reinforce_surrogate(hooks, method, logits, hard, per_sample, config)
    return xp.sum(surrogate) / samples, sampled


def _reinforce_surrogate(
    hooks: Hooks, method: str, logits: Any, hard: Any, per_sample: Any, config: PolyConfig
) -> Any:
    """The REINFORCE surrogate of every sample, whose gradient is ``(f(D) − b)(D − π)``."""
    xp, stop = hooks.fns.BACKEND.xp, hooks.stop_gradient
    # REINFORCE needs f(D), not a path through D: the sample and the values carry no gradient.
    value = stop(per_sample)
    if method == "reinforce_baseline":
        total = hooks.total(xp.sum(value, axis=-1, keepdims=True))
        baseline = leave_one_out_baseline(value, xp=xp, total=total, count=config.samples)
    else:
        baseline = xp.zeros_like(value)
    return hooks.fns.reinforce(logits, stop(hard), value[..., None], baseline[..., None])

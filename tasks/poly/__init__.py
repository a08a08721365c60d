"""Polynomial programming: the first experiment of Liu et al. (2023), in every backend.

``L`` independent binary variables (two categories each) with logits ``θ`` of shape ``L × 2``
minimise ``(1/L) Σ_l |z_l − 0.45|^p`` averaged over ``N`` samples per step, where ``z_l`` is the
indicator of the first category (Tucker et al. 2017; Paulus et al. 2021; Liu et al. 2023 use
``L = 128``, ``N = 64``, Adam at ``1e-3`` for 8,000 steps). The expected loss is analytic,

    ``E(θ) = (1/L) Σ_l [π_l · 0.55^p + (1 − π_l) · 0.45^p]``,  ``π_l = softmax(θ_l)_0``,

so its minimum is ``0.45^p`` (every ``π_l → 0``) and its gradient is exact; the task reports
``E(θ)`` (not the noisy sampled loss) as its metric, next to the sampled training loss.

The noise is the library's portable generator (:mod:`reinmax.noise`), drawn on the device
inside each step and keyed by the seed, the step and each variable's global row (sample × L), so
the three backends, and any number of data-parallel workers sharing the samples
(:mod:`reinmax.tasks.parallel`), see identical samples. Seeds and powers ``p`` are trained
together as leading axes of one parameter array: Adam is elementwise and each seed's loss
depends only on its own slice, so this is exactly ``len(p) × seeds`` independent runs, and a
seed's curve does not depend on which other seeds or powers run beside it. Gumbel-Rao draws
K = 100 conditional samples by default, as the paper's script.

The package: :mod:`~reinmax.tasks.poly.problem` (the problem and the objective, once),
:mod:`~reinmax.tasks.poly.results` (JSON, summary, table, plot), one trainer per framework
(:mod:`~reinmax.tasks.poly.torch`, ``.jax``, ``.tensorflow``), the bias study
(:mod:`~reinmax.tasks.poly.bias`), and here the training loop and the command.

Command: ``reinmax task poly --backend B --estimator E [--p P ...] [--tau T] [--steps N]
[--seeds S] [--workers N] --json PATH`` (with torch, ``torchrun --nproc-per-node N -m
reinmax.cli task poly ...`` for ``N`` workers). Runs split over processes by method or by seed
(``--seed N --seeds 1``) join into one file, table and plot with ``reinmax task poly --merge FILE
... --json PATH``: a seed's runs do not depend on what trained beside it.

References:
    Liu, Liu, Gao, Gao, Han. Bridging Discrete and Backpropagation: Straight-Through and Beyond.
    NeurIPS 2023. Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein. REBAR. NeurIPS 2017.
    Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
    Estimator. ICLR 2021.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from reinmax.runtime import (
    CheckpointError,
    add_publish_option,
    check_destination,
    command,
    config_from_args,
    config_parser,
    finite_float,
    read_json,
    status,
)
from reinmax.tasks import parallel
from reinmax.tasks.common import (
    BACKENDS,
    choose_estimators,
    estimator_names,
    import_framework,
    load_checkpoint,
    progress,
    require_conformance,
    save_checkpoint,
    write_json,
)
from reinmax.tasks.poly.problem import (
    EXTRA_METHODS,
    POWERS,
    REINFORCE,
    REINFORCE_SAMPLER,
    TARGET,
    PolyConfig,
    Setup,
    estimator_for,
    exact_gradient,
    expected_loss,
    initial_logits,
    initial_theta,
    methods,
    optimum,
    seeds_of,
    step_noise,
)
from reinmax.tasks.poly.results import assemble, format_table, merge, plot_curves, summarize

__all__ = [
    "EXTRA_METHODS",
    "POWERS",
    "TARGET",
    "TRAINERS",
    "PolyConfig",
    "estimator_for",
    "exact_gradient",
    "expected_loss",
    "format_table",
    "initial_logits",
    "main",
    "merge",
    "methods",
    "optimum",
    "plot_curves",
    "run",
    "seeds_of",
    "step_noise",
    "summarize",
    "train",
    "trainer_module",
]

TRAINERS = {
    "torch": "reinmax.tasks.poly.torch",
    "jax": "reinmax.tasks.poly.jax",
    "tensorflow": "reinmax.tasks.poly.tensorflow",
}
"""The module of each backend's trainer: ``trainer(setup)`` (a
:class:`~reinmax.tasks.poly.problem.Setup`) returns a
:data:`~reinmax.tasks.poly.problem.Trainer`, with the framework's own Adam, on the workers of a
started :mod:`reinmax.tasks.parallel` engine."""


def trainer_module(backend: str) -> ModuleType:
    """The trainer module of ``backend``, its framework imported and set up for the task
    (``ValueError`` for an unknown backend, ``ImportError`` if the framework is missing)."""
    import_framework(backend)
    return importlib.import_module(TRAINERS[backend])


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Curves:
    """The curves logged while training every ``(p, seed)`` of one method."""

    powers: np.ndarray
    steps: list[int]
    expected: list[np.ndarray]
    sampled: list[np.ndarray]
    window: list[np.ndarray] = dataclasses.field(default_factory=list)

    @classmethod
    def start(cls, theta0: np.ndarray, powers: np.ndarray) -> _Curves:
        """The curves at step 0: the expected loss at ``theta0``, no sampled loss yet (NaN)."""
        nan = np.full(theta0.shape[:2], np.nan)
        return cls(powers, [0], [expected_loss(theta0, powers[:, None])], [nan])

    def log(self, step: int, theta: np.ndarray) -> None:
        """Log the expected loss at ``theta`` and the sampled loss averaged since the last log."""
        self.steps.append(step)
        self.expected.append(expected_loss(theta.astype(np.float64), self.powers[:, None]))
        self.sampled.append(np.mean(self.window, axis=0))
        self.window = []


def train(
    backend: str,
    method: str,
    config: PolyConfig,
    seeds: Sequence[int],
    engine: parallel.Engine | None = None,
) -> dict[str, Any]:
    """Train every ``(p, seed)`` of one method in ``backend``; returns the curves and the timing.

    On the workers of ``engine`` (a started :mod:`reinmax.tasks.parallel` engine of ``backend``;
    None: one worker), each drawing its share of the samples of every step.

    Returns a dict with ``steps`` (the logged step numbers, starting at 0), ``expected_loss`` and
    ``sampled_loss`` (arrays ``(P, S, len(steps))``; the sampled loss at a logged step is the mean
    over the ``log_every`` steps before it, NaN at step 0), ``final_theta`` and ``seconds``.
    """
    if method not in methods():
        raise ValueError(f"method must be one of {', '.join(methods())}, got {method!r}")
    module = trainer_module(backend)
    engine = engine if engine is not None else parallel.single(backend)
    parallel.check_divides(config.samples, engine.workers, "samples")
    powers = np.asarray(config.powers, dtype=np.float64)
    theta0 = initial_theta(config, seeds)
    step, current = module.trainer(Setup(theta0, powers, method, config, seeds, engine))
    curves = _Curves.start(theta0, powers)
    first_step_seconds = 0.0
    start = time.perf_counter()
    for t in progress(range(1, config.steps + 1), total=config.steps, desc=f"{backend} {method}"):
        curves.window.append(step(t))
        if t == 1:
            # The first step traces and compiles (jit, tf.function); keep it out of the rate.
            first_step_seconds = time.perf_counter() - start
        if t % config.log_every == 0 or t == config.steps:
            curves.log(t, current())
    seconds = time.perf_counter() - start
    return {
        "steps": curves.steps,
        "expected_loss": np.stack(curves.expected, axis=-1),
        "sampled_loss": np.stack(curves.sampled, axis=-1),
        "final_theta": current(),
        "seconds": seconds,
        "seconds_per_step": (seconds - first_step_seconds) / max(config.steps - 1, 1),
        "first_step_seconds": first_step_seconds,
    }


def _checked_estimators(config: PolyConfig) -> list[str]:
    """The registered estimators whose samples (and gradients) the methods of ``config`` use:
    REINFORCE draws its samples with :data:`REINFORCE_SAMPLER`'s sampler, so that one too."""
    sampled = [REINFORCE_SAMPLER if m in REINFORCE else m for m in config.methods]
    registered = estimator_names()
    return [m for m in dict.fromkeys(sampled) if m in registered]


def _start_state(checkpoint: Path, config: PolyConfig, resume: bool) -> dict[str, Any]:
    """The methods already finished (from the checkpoint with ``resume``) and the config."""
    state = load_checkpoint(checkpoint, "poly") if resume else None
    if state is not None and state.get("config") != dataclasses.asdict(config):
        raise CheckpointError(
            f"checkpoint {checkpoint} was written with other options; rerun with the same "
            "options, or without --resume to start afresh"
        )
    return state if state is not None else {"config": dataclasses.asdict(config), "done": {}}


def run(
    backend: str,
    config: PolyConfig,
    json_path: str | Path,
    *,
    plot_path: str | Path | None = None,
    resume: bool = False,
    engine: parallel.Engine | None = None,
) -> dict[str, Any]:
    """Run every method of ``config`` in ``backend``, write the JSON and the plot, return the JSON.

    Behind the conformance gate, on the workers of ``engine`` (None: one). A checkpoint beside
    ``json_path`` holds every finished method, so ``resume=True`` starts where a killed run
    stopped, on any number of workers. Only the writing process (rank 0) writes files.
    """
    json_path = Path(json_path)
    checkpoint = json_path.with_suffix(".ckpt")
    engine = engine if engine is not None else parallel.single(backend)
    seeds = seeds_of(config)
    # The checkpoint is read before any work, so that a bad one stops the command at once.
    state = _start_state(checkpoint, config, resume)
    require_conformance(backend, _checked_estimators(config))
    for method in config.methods:
        if method in state["done"]:
            continue
        state["done"][method] = train(backend, method, config, seeds, engine)
        if engine.writer:
            save_checkpoint(checkpoint, state, "poly")
    result = assemble(backend, config, seeds, state["done"])
    result["workers"] = engine.workers
    if engine.writer:
        write_json(json_path, result)
        plot_curves(result, plot_path or json_path.with_suffix(".png"))
        checkpoint.unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


_AGREED = (
    "estimator", "p", "tau", "steps", "seeds", "seed", "variables", "samples", "lr", "eps",
    "dtype", "log_every", "gumbel_rao_k", "gap", "json", "resume",
)  # fmt: skip
"""The options every rank of a run must share."""


def _parser() -> argparse.ArgumentParser:
    parser = config_parser(
        "reinmax task poly",
        "Polynomial programming (Liu et al. 2023): 128 binary variables, "
        "loss mean_l |z_l - 0.45|^p, Adam; reports the analytic expected loss per seed.",
        PolyConfig(),
        helps={
            "seeds": "seeds SEED .. SEED+S-1",
            "samples": "samples per step, the global batch split evenly among the workers "
            "(default %(default)s)",
            "eps": "Adam epsilon",
            "gumbel_rao_k": "Gumbel-Rao's conditional draws K (default %(default)s, as the "
            "paper's script)",
            "gap": "GST gap",
        },
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default=PolyConfig.dtype)
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument(
        "--estimator",
        nargs="+",
        default=["all"],
        metavar="E",
        help=f"one or more of {', '.join(methods())}, or all (default)",
    )
    parser.add_argument("--p", nargs="+", type=finite_float, default=list(POWERS), help="powers p")
    parser.add_argument("--json", default=None, help="default results/poly/<backend>.json")
    parser.add_argument("--plot", default=None, help="default: the JSON path with .png")
    parser.add_argument("--resume", action="store_true", help="skip methods already finished")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="FILE",
        help="train nothing: merge the results files of runs split by method or by seed (one "
        "process each, the same other options) into --json, its plot and its table",
    )
    parallel.add_options(parser)
    add_publish_option(parser)
    return parser


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> PolyConfig:
    """The :class:`PolyConfig` of the command line; a bad value is a usage error."""
    # Read at parse time, so that an estimator registered at run time is a choice.
    chosen = choose_estimators(parser, args.estimator, extra=EXTRA_METHODS)
    return config_from_args(parser, PolyConfig, args, methods=tuple(chosen), powers=tuple(args.p))


@command("reinmax task poly")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task poly``: train, print the results table, write the JSON and the plot."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.merge is not None:
        return _merge_files(parser, args)
    config = _config(parser, args)
    parallel.check_options(parser, args, {"--samples": args.samples})
    json_path = check_destination(args.json or f"results/poly/{args.backend}.json")

    def body(engine: parallel.Engine) -> None:
        result = run(
            args.backend,
            config,
            json_path,
            plot_path=args.plot,
            resume=args.resume,
            engine=engine,
        )
        if engine.writer:
            _report(result, json_path)

    return parallel.run_command("reinmax task poly", args, _AGREED, body)


_MERGE_OPTIONS = ("merge", "json", "plot", "quiet", "publish")
"""What ``--merge`` reads: the options of the runs come from their files."""


def _merge_files(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--merge``: one results file, plot and table from the files of runs split apart."""
    ignored = [
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name not in _MERGE_OPTIONS and value != parser.get_default(name)
    ]
    if ignored:
        parser.error(f"--merge trains nothing and takes no {', '.join(ignored)}")
    if args.json is None:
        parser.error("--merge needs --json, the merged results file to write")
    check_destination(args.json)
    missing = [f for f in args.merge if not Path(f).is_file()]
    if missing:
        parser.error(f"--merge: no such results file: {', '.join(missing)}")
    parts = [read_json(f) for f in args.merge]
    result = merge(parts)
    # The merged file's provenance is this command's; each part's run is recorded beside it.
    result["provenance_of_parts"] = {
        name: part.get("provenance") for name, part in zip(args.merge, parts, strict=True)
    }
    json_path = Path(args.json)
    write_json(json_path, result)
    plot_curves(result, args.plot or json_path.with_suffix(".png"))
    _report(result, json_path)
    return 0


def _report(result: dict[str, Any], json_path: Path) -> None:
    """The results table and the timing, on stdout."""
    print(format_table(result["summary"]))
    for method, t in result["timing"].items():
        print(f"{method}: {t['seconds']:.1f} s, {1e3 * t['seconds_per_step']:.2f} ms/step")
    status(f"wrote {json_path}")

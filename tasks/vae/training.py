"""The runs of ``reinmax task vae``: training one (configuration, estimator, seed) with a
checkpoint after every epoch, its final evaluation and analysis, and the results file."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.runtime import CheckpointError, markdown_table
from reinmax.tasks.common import (
    estimator_names,
    load_checkpoint,
    mean_and_std,
    progress,
    save_checkpoint,
    write_json,
)
from reinmax.tasks.parallel import Engine
from reinmax.tasks.vae.analysis import ANALYSIS_LIMIT, gradient_analysis
from reinmax.tasks.vae.config import ModelSpec, analysis_tau
from reinmax.tasks.vae.data import MnistData, batches
from reinmax.tasks.vae.evaluation import artifacts, evaluate
from reinmax.tasks.vae.model import (
    Stream,
    Trainer,
    estimator_options,
    initial_parameters,
    make_trainer,
)

__all__ = [
    "RESULT_OPTIONS",
    "Session",
    "format_gradient_table",
    "format_table",
    "initial_state",
    "output_paths",
    "results",
    "steps_per_epoch",
    "summary",
    "train_run",
    "write_results",
]

RESULT_OPTIONS = (
    "backend",
    "estimator",
    "config",
    "epochs",
    "seed",
    "seeds",
    "data_dir",
    "lr",
    "tau",
    "optimizer",
    "gumbel_rao_k",
    "batch_size",
    "max_batches",
    "eval_samples",
    "analysis_images",
    "analysis_draws",
)
"""The options that change results: a checkpoint only resumes a run with the same ones (the
number of workers is not one of them: a checkpoint resumes on any)."""


def output_paths(json_path: Path) -> dict[str, Path]:
    """The checkpoint and the plots, beside the results file ``json_path``."""
    stem = json_path.with_suffix("")
    return {
        "checkpoint": stem.with_name(stem.name + ".ckpt.pkl"),
        "curves": stem.with_name(stem.name + "_curves.png"),
        "reconstructions": stem.with_name(stem.name + "_reconstructions.png"),
        "prior_samples": stem.with_name(stem.name + "_prior_samples.png"),
        "gradients": stem.with_name(stem.name + "_gradients.png"),
    }


def initial_state(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    """The state to start from: the checkpoint's with ``--resume`` (when there is one), else an
    empty one. ``{"options", "runs": {key: {"result", "artifacts"}}, "current"}``, ``current``
    being the run in progress (its trainer state and history) or None.

    Raises:
        CheckpointError: the checkpoint was written with other :data:`RESULT_OPTIONS`.
    """
    options = {name: getattr(args, name) for name in RESULT_OPTIONS}
    state = load_checkpoint(checkpoint, "vae") if args.resume else None
    if state is None:
        return {"options": options, "runs": {}, "current": None}
    if state["options"] != options:
        changed = [k for k in options if state["options"].get(k) != options[k]]
        raise CheckpointError(
            f"checkpoint {checkpoint} was written with other options ({', '.join(changed)}); "
            "rerun with the same options, or without --resume to start afresh"
        )
    return state


@dataclass
class Session:
    """One ``reinmax task vae`` command: its arguments, its data, the state it checkpoints
    (:func:`initial_state`), its results file and the data-parallel engine it trains on."""

    args: argparse.Namespace
    data: MnistData
    state: dict[str, Any]
    json_path: Path
    engine: Engine

    def save(self) -> None:
        """Checkpoint the state, then rewrite the (incomplete) results file from it: in the
        writing process only (rank 0), the others keep the same state unwritten."""
        if self.engine.writer:
            save_checkpoint(output_paths(self.json_path)["checkpoint"], self.state, "vae")
            write_results(self, complete=False)


def train_run(session: Session, key: str, spec: ModelSpec, seed: int) -> None:
    """Train one (estimator, config, seed) called ``key``, from where the checkpoint left it,
    checkpointing after every epoch; then evaluate and analyse it and record it as done."""
    trainer = _initial(session, spec, seed)
    history = _resume(session, key, trainer)
    for epoch in range(len(history), session.args.epochs):
        history.append(_train_epoch(session, trainer, key, spec, seed, epoch))
        session.state["current"] = {"key": key, "trainer": trainer.get_state(), "history": history}
        session.save()
    result = _run_result(session, trainer, spec, seed, history)
    shown = artifacts(trainer, spec, seed, session.data.test_images)
    session.state["runs"][key] = {"result": result, "artifacts": shown}
    session.state["current"] = None
    session.save()


def _resume(session: Session, key: str, trainer: Trainer) -> list[dict[str, Any]]:
    """The epochs of ``key`` already trained, restoring ``trainer`` to the end of the last."""
    current = session.state["current"]
    if current is None or current["key"] != key:
        return []
    trainer.set_state(current["trainer"])
    return current["history"]


def steps_per_epoch(train_images: int, batch_size: int, max_batches: int | None) -> int:
    """The training steps of an epoch: every batch, or the first ``max_batches``."""
    steps = math.ceil(train_images / batch_size)
    return steps if max_batches is None else min(steps, max_batches)


def _train_epoch(
    session: Session, trainer: Trainer, key: str, spec: ModelSpec, seed: int, epoch: int
) -> dict[str, Any]:
    """One epoch of training, then the test −ELBO from one draw per image."""
    args, data = session.args, session.data
    steps = steps_per_epoch(len(data.train_images), args.batch_size, args.max_batches)
    start = time.perf_counter()
    losses = []
    stream = batches(data.train_images, args.batch_size, seed=seed, epoch=epoch)
    desc = f"{args.backend} {key} epoch {epoch + 1}/{args.epochs}"
    for step, images in progress(zip(range(steps), stream), total=steps, desc=desc):
        # The global step count keys the noise: every step of the run draws fresh noise.
        losses.append(trainer.train_step(images, epoch * steps + step))
    seconds = time.perf_counter() - start
    evaluation = evaluate(trainer, data.test_images, 1, seed, Stream.TEST)
    return {
        "epoch": epoch + 1,
        "train_neg_elbo": float(np.mean(losses)),
        "test_neg_elbo": evaluation["neg_elbo"],
        "train_seconds": seconds,
    }


def _run_result(
    session: Session, trainer: Trainer, spec: ModelSpec, seed: int, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """The entry of one finished run in the results file."""
    args, test = session.args, session.data.test_images
    final = evaluate(trainer, test, args.eval_samples, seed, Stream.EVAL_MANY)
    return {
        "estimator": spec.estimator,
        "config": spec.config,
        "seed": seed,
        "lr": spec.lr,
        "tau": spec.tau,
        "optimizer": spec.optimizer,
        "estimator_options": estimator_options(spec.estimator, spec),
        "epochs": history,
        "train_neg_elbo": history[-1]["train_neg_elbo"],
        "test_neg_elbo": history[-1]["test_neg_elbo"],
        f"test_neg_elbo_{args.eval_samples}": final["neg_elbo"],
        f"test_iwae_{args.eval_samples}": final["iwae"],
        "seconds_per_epoch": float(np.mean([h["train_seconds"] for h in history])),
        # The initial model is rebuilt (from the seed alone) only when it is analysed.
        "gradient_analysis_start": _analysis(
            lambda: _initial(session, spec, seed), spec, seed, args, test
        ),
        "gradient_analysis": _analysis(lambda: trainer, spec, seed, args, test),
    }


def _initial(session: Session, spec: ModelSpec, seed: int) -> Trainer:
    """The model of ``spec`` and ``seed`` as training starts (its initialisation depends on the
    seed alone, so a resumed run analyses the same one)."""
    params = initial_parameters(spec.categories, spec.latents, seed)
    return make_trainer(session.args.backend, spec, params, seed, session.engine)


def _analysis(
    model: Callable[[], Trainer],
    spec: ModelSpec,
    seed: int,
    args: argparse.Namespace,
    test: np.ndarray,
) -> dict[str, Any] | None:
    """The gradient analysis of every registered estimator at the trainer ``model()`` returns,
    where it is asked for and the configuration is small enough to enumerate (``model`` is
    called only then)."""
    if args.analysis_images == 0 or spec.categories**spec.latents >= ANALYSIS_LIMIT:
        return None
    taus = {name: analysis_tau(spec.config, name, args.tau) for name in estimator_names()}
    analysis = gradient_analysis(
        model(), test[: args.analysis_images], taus, args.analysis_draws, seed
    )
    for name, stats in analysis["estimators"].items():
        stats["options"] = estimator_options(name, spec)
    return analysis


def results(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of the finished runs, in the order they were trained."""
    return [entry["result"] for entry in state["runs"].values()]


def write_results(session: Session, *, complete: bool) -> None:
    """Write the results file: the finished runs, the run in progress and the summary; the
    plots' paths once ``complete``."""
    runs, current = results(session.state), session.state["current"]
    in_progress = None
    if current is not None:
        in_progress = {
            "run": current["key"],
            "epochs": current["history"],
            # Trained and checkpointed: --resume only reruns the final evaluation.
            "trained": len(current["history"]) == session.args.epochs,
        }
    paths = output_paths(session.json_path)
    write_json(
        session.json_path,
        {
            "task": "vae",
            "complete": complete,
            "backend": session.args.backend,
            "workers": session.engine.workers,
            "data": session.data.source,
            "options": session.state["options"],
            "runs": runs,
            "in_progress": in_progress,
            "summary": summary(runs),
            "plots": {k: str(v) for k, v in paths.items() if k != "checkpoint"} if complete else {},
        },
    )


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """config → estimator → the number of seeds, the train and test −ELBO's mean and std, and
    (where the runs were analysed) the mean over seeds of the relative standard deviation of the
    estimator's own gradient at the start and at the end of its training."""
    cells: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        cell = cells.setdefault(run["config"], {}).setdefault(
            run["estimator"], {"train": [], "test": [], "start": [], "end": []}
        )
        cell["train"].append(run["train_neg_elbo"])
        cell["test"].append(run["test_neg_elbo"])
        for moment, field in (("start", "gradient_analysis_start"), ("end", "gradient_analysis")):
            analysis = run.get(field)
            if analysis is not None and run["estimator"] in analysis["estimators"]:
                cell[moment].append(analysis["estimators"][run["estimator"]]["relative_std"])
    return {
        config: {name: _mean_and_std(cell) for name, cell in row.items()}
        for config, row in cells.items()
    }


def _mean_and_std(cell: dict[str, list[float]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"seeds": len(cell["train"])}
    for split in ("train", "test"):
        mean, std = mean_and_std(cell[split])
        entry[f"{split}_neg_elbo_mean"], entry[f"{split}_neg_elbo_std"] = mean, std
    for moment in ("start", "end"):
        if cell[moment]:
            entry[f"relative_std_{moment}"] = float(np.mean(cell[moment]))
    return entry


def format_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table, estimators × configurations: train and test −ELBO (mean ± std over seeds)
    and the number of seeds behind each configuration's pair."""
    configs = list(summary)
    estimators = list(dict.fromkeys(e for cells in summary.values() for e in cells))

    def cells(cell: dict[str, Any] | None) -> list[str]:
        if cell is None:
            return ["", "", ""]
        shown = [
            f"{cell[f'{split}_neg_elbo_mean']:.1f} ± {cell[f'{split}_neg_elbo_std']:.1f}"
            for split in ("train", "test")
        ]
        return [*shown, str(cell["seeds"])]

    header = [f"{c} {column}" for c in configs for column in ("train", "test", "seeds")]
    rows = [[e, *(x for c in configs for x in cells(summary[c].get(e)))] for e in estimators]
    return markdown_table(["estimator", *header], rows)


def format_gradient_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table, estimators × configurations: the relative standard deviation ‖σ‖/‖mean‖
    of each estimator's own gradient at the start and at the end of its training (mean over
    seeds); empty where the runs were not analysed."""
    configs = [
        c for c, cells in summary.items() if any("relative_std_end" in v for v in cells.values())
    ]
    if not configs:
        return ""
    estimators = list(dict.fromkeys(e for c in configs for e in summary[c]))
    head = " | ".join(f"{c} start | {c} end" for c in configs)
    lines = [f"| estimator | {head} |", "|---" * (2 * len(configs) + 1) + "|"]
    for estimator in estimators:
        cells = []
        for config in configs:
            cell = summary[config].get(estimator, {})
            cells += [
                f"{cell[k]:.3g}" if k in cell else ""
                for k in ("relative_std_start", "relative_std_end")
            ]
        lines.append(f"| {estimator} | {' | '.join(cells)} |")
    return "\n".join(lines)

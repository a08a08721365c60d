"""The training loop every backend shares, with checkpoints and ``--resume``.

The shuffle is a function of seed and epoch and the merge noise of seed and step (counted over
epochs), so a resumed run gives the same result as an uninterrupted one; model selection and the
learning-rate schedule look at the generated test set only, never at the real split.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.tasks.common import load_checkpoint, progress, save_checkpoint
from reinmax.tasks.listops.data import Example, GeneratorConfig, Vocabulary, read_tsv, splits
from reinmax.tasks.listops.evaluation import evaluate_examples, summary, tree_examples
from reinmax.tasks.listops.model import (
    Batch,
    ModelConfig,
    TrainConfig,
    Trainer,
    build_trainer,
    encode_padded,
    init_weights,
    shuffle_rng,
)

__all__ = ["Data", "checkpoint_path", "final_scores", "train"]


@dataclass
class Data:
    """Generated train and test sets and the real validation split."""

    train: list[Example]
    test: list[Example]
    valid: list[Example]

    @classmethod
    def load(cls, config: TrainConfig, valid_path: str | Path | None = None) -> Data:
        """The real split at ``valid_path`` (default: the packaged one) and the generated sets
        of ``config``, which avoid every real expression."""
        valid = read_tsv(valid_path)
        generator = GeneratorConfig(max_length=config.max_train_length)
        train, test = splits(
            config.data_seed, config.n_train, config.n_test, generator, exclude=valid
        )
        return cls(train, test, valid)


@dataclass
class _Run:
    """One model being trained: what each of its epochs needs."""

    backend: str
    config: TrainConfig
    seed: int
    data: Data
    vocab: Vocabulary
    model_config: ModelConfig
    trainer: Trainer


def checkpoint_path(json_path: Path, estimator: str, seed: int) -> Path:
    """Where the run of ``estimator`` and ``seed`` keeps its checkpoint, beside the JSON."""
    return json_path.parent / "checkpoints" / f"{json_path.stem}-{estimator}-seed{seed}.pkl"


def train(
    backend: str,
    config: TrainConfig,
    seed: int,
    data: Data,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one model; returns its run record (config, per-epoch history, final evaluation).

    After every epoch the model, optimizer, learning-rate schedule and history are saved to
    ``checkpoint``; with ``resume`` a run continues from there and gives the same result as an
    uninterrupted one (the shuffle and the noise are functions of seed, epoch and step).
    """
    vocab = Vocabulary()
    model_config = config.model_config(len(vocab))
    trainer = build_trainer(backend, model_config, init_weights(model_config, seed), config, seed)
    run = _Run(backend, config, seed, data, vocab, model_config, trainer)
    record: dict[str, Any] = {
        "backend": backend,
        "estimator": config.estimator,
        "seed": seed,
        "tau": config.temperature,
        "config": dataclasses.asdict(config),
        "history": [],
    }
    schedule = {"best": -1.0, "bad_epochs": 0}
    if resume and checkpoint is not None:
        schedule = _resume(run, checkpoint, record, schedule)
    for epoch in range(len(record["history"]), config.epochs):
        entry, test_accuracy = _epoch(run, epoch)
        schedule = _adjust_schedule(run, schedule, entry, test_accuracy)
        record["history"].append(entry)
        if checkpoint is not None:
            _save(run, checkpoint, record["history"], schedule)
        if on_epoch is not None:
            on_epoch(record)
    record["final"] = final_scores(record["history"])
    record["trees"] = tree_examples(trainer, data.valid, vocab)
    return record


def _resume(
    run: _Run, checkpoint: Path, record: dict[str, Any], schedule: dict[str, Any]
) -> dict[str, Any]:
    """Restore the trainer and ``record``'s history from ``checkpoint`` if it exists; returns
    the learning-rate schedule to continue with (``schedule`` when there is no checkpoint)."""
    saved = load_checkpoint(checkpoint, "listops")
    if saved is None:
        return schedule
    # More epochs may be asked of a resumed run; anything else must match.
    ours = {**dataclasses.asdict(run.config), "epochs": None, "backend": run.backend}
    theirs = {**saved["config"], "epochs": None, "backend": saved["backend"]}
    if ours != theirs:
        changed = sorted(key for key in ours if ours[key] != theirs.get(key))
        raise ValueError(
            f"checkpoint {checkpoint} was written with different settings: {', '.join(changed)}"
        )
    run.trainer.load_state(saved["trainer"])
    record["history"] = saved["history"]
    return saved["schedule"]


def _train_epoch(run: _Run, epoch: int) -> tuple[list[float], list[float]]:
    """One pass over the shuffled training set; the (loss, accuracy) of every batch."""
    config = run.config
    order = shuffle_rng(run.seed, epoch).permutation(len(run.data.train))
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    losses, accuracies = [], []
    desc = f"{run.backend} {config.estimator} s{run.seed} epoch {epoch + 1}/{config.epochs}"
    # Steps are counted over epochs: each draws its own merge noise.
    first_step = epoch * len(batches)
    for step, batch in enumerate(progress(batches, total=len(batches), desc=desc), first_step):
        arrays = encode_padded([run.data.train[i] for i in batch], run.vocab)
        loss, accuracy = run.trainer.train_step(Batch(*arrays, step=step))
        losses.append(loss)
        accuracies.append(accuracy)
    return losses, accuracies


def _epoch(run: _Run, epoch: int) -> tuple[dict[str, Any], float]:
    """Train one epoch and evaluate; returns its history entry and the generated test accuracy."""
    started = time.perf_counter()
    losses, accuracies = _train_epoch(run, epoch)
    train_seconds = time.perf_counter() - started
    test = evaluate_examples(run.trainer, run.data.test, run.vocab, desc="generated test")
    valid = evaluate_examples(run.trainer, run.data.valid, run.vocab, desc="real valid")
    entry = {
        "epoch": epoch + 1,
        "lr": run.trainer.learning_rate,
        "train_loss": float(np.mean(losses)),
        "train_accuracy": float(np.mean(accuracies)),
        "test": summary(test),
        "valid": summary(valid),
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
    }
    return entry, test["accuracy"]


def _adjust_schedule(
    run: _Run, schedule: dict[str, Any], entry: dict[str, Any], test_accuracy: float
) -> dict[str, Any]:
    """The schedule after an epoch: a new best marks ``entry``; ``patience`` epochs without one
    halve the learning rate."""
    # The generated test accuracy decides: model selection never looks at the real split.
    if test_accuracy > schedule["best"]:
        entry["best"] = True
        return {"best": test_accuracy, "bad_epochs": 0}
    schedule["bad_epochs"] += 1
    if schedule["bad_epochs"] >= run.config.patience:
        run.trainer.learning_rate = run.trainer.learning_rate * 0.5
        schedule["bad_epochs"] = 0
    return schedule


def _save(
    run: _Run, checkpoint: Path, history: list[dict[str, Any]], schedule: dict[str, Any]
) -> None:
    """Checkpoint everything a resumed run needs to continue exactly."""
    save_checkpoint(
        checkpoint,
        {
            "backend": run.backend,
            "config": dataclasses.asdict(run.config),
            "seed": run.seed,
            "model_config": dataclasses.asdict(run.model_config),
            "trainer": run.trainer.state(),
            "history": history,
            "schedule": schedule,
        },
        "listops",
    )


def final_scores(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch chosen on generated test accuracy (the last such epoch) and its scores."""
    best = max(history, key=lambda entry: (entry["test"]["accuracy"], entry["epoch"]))
    return {
        "epoch": best["epoch"],
        "test_accuracy": best["test"]["accuracy"],
        "valid_accuracy": best["valid"]["accuracy"],
        "valid_parse_f1": best["valid"]["parse_f1"],
        "last_valid_accuracy": history[-1]["valid"]["accuracy"],
    }

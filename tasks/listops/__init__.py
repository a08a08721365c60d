"""ListOps unsupervised parsing with a Gumbel Tree-LSTM (Choi et al. 2018), in every backend.

A leaf LSTM reads the tokens; then, until one node is left, a Tree-LSTM cell composes every
adjacent pair, a query vector scores the candidates, the estimator samples one merge position
from the scores' softmax (padding masked with ``-inf``), and the chosen pair is replaced by its
composition. At evaluation the merge is the greedy argmax. A one-hidden-layer MLP classifies the
root into the 10 values. The parser gets no supervision: it learns whatever trees help classify.

This package holds what every framework shares, once: the model and training configuration,
the initial weights, the padding, the trainer's NumPy boundary and the merge noise, drawn in the
step from the library's portable generator (:mod:`.model`), the training loop with checkpoints
and ``--resume`` (:mod:`.training`), evaluation of a trainer and of a saved checkpoint with the
``listops-eval`` command (:mod:`.evaluation`), induced trees and their parse F1 (:mod:`.trees`),
the plots and the table (:mod:`.report`) and the command (:func:`main`, here). Each framework's
model and ``Trainer`` is in :mod:`.torch`, :mod:`.jax` and :mod:`.tensorflow` (see
:data:`TRAINERS`); the data is in :mod:`.data`.

Run ``reinmax task listops --help``.

References:
    Choi, Yoo, Lee. Learning to Compose Task-Specific Tree Structures. AAAI 2018.
    Nangia, Bowman. ListOps: A Diagnostic Dataset for Latent Tree Learning. NAACL-SRW 2018.
    Liu, Liu, Gao, Gao, Han. Bridging Discrete and Backpropagation: Straight-Through and
    Beyond. NeurIPS 2023.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.runtime import (
    add_publish_option,
    add_quiet_option,
    check_destination,
    command,
    positive_int,
    status,
)
from reinmax.tasks.common import (
    BACKENDS,
    choose_estimators,
    estimator_names,
    require_conformance,
    write_json,
)
from reinmax.tasks.listops.data import describe
from reinmax.tasks.listops.evaluation import evaluate_examples
from reinmax.tasks.listops.model import (
    DEFAULT_TAU,
    TRAIN_NOISE,
    TRAINERS,
    Batch,
    ModelConfig,
    TrainConfig,
    Trainer,
    build_trainer,
    default_tau,
    encode_padded,
    init_weights,
    merge_nodes,
    pad_width,
    shuffle_rng,
    tree_lstm_cell,
)
from reinmax.tasks.listops.report import accuracy_table, plot_curves, plot_trees, sibling_results
from reinmax.tasks.listops.training import Data, checkpoint_path, train
from reinmax.tasks.listops.trees import induced_tree, parse_f1

__all__ = [
    "DEFAULT_TAU",
    "TRAINERS",
    "TRAIN_NOISE",
    "Batch",
    "Data",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "accuracy_table",
    "build_trainer",
    "checkpoint_path",
    "default_tau",
    "encode_padded",
    "evaluate_examples",
    "induced_tree",
    "init_weights",
    "main",
    "merge_nodes",
    "pad_width",
    "parse_f1",
    "plot_curves",
    "plot_trees",
    "shuffle_rng",
    "train",
    "tree_lstm_cell",
]


def _command_options() -> dict[str, dict[str, Any]]:
    """The command's options besides :class:`TrainConfig`'s own: flag -> ``add_argument``
    keywords (the estimators are read when called: one registered at run time is a choice)."""
    return {
        "--backend": {"choices": BACKENDS, "default": "torch"},
        "--estimator": {
            "nargs": "+",
            "default": ["all"],
            "metavar": "E",
            "help": f"one or more of {', '.join(estimator_names())}, or all (default)",
        },
        "--seeds": {"type": positive_int, "default": 1, "help": "number of seeds (0 .. S-1)"},
        "--valid": {"help": "real validation TSV (default: the split shipped with the package)"},
        "--json": {"help": "default results/listops/<backend>.json"},
        "--resume": {
            "action": "store_true",
            "help": "continue from the checkpoints beside --json",
        },
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reinmax task listops",
        description="ListOps with a Gumbel Tree-LSTM (Choi et al. 2018): train on generated "
        "expressions, evaluate on generated test data and the real validation split. The paper's "
        "setting: --word-dim 300 --hidden-dim 300 --clf-hidden-dim 300 --n-train 90000 "
        "--max-train-length 100 --epochs 20.",
    )
    for flag, keywords in _command_options().items():
        parser.add_argument(flag, **keywords)
    for field in TrainConfig.command_line():
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=field.metadata["parse"],
            default=field.default,
            help=field.metadata["help"],
        )
    add_quiet_option(parser)
    add_publish_option(parser)
    return parser


def _configs(
    parser: argparse.ArgumentParser, args: argparse.Namespace, estimators: list[str]
) -> list[TrainConfig]:
    """One training config per estimator; a bad value is a usage error."""
    settings = {field.name: getattr(args, field.name) for field in TrainConfig.command_line()}
    try:
        return [TrainConfig(estimator=estimator, **settings) for estimator in estimators]
    except ValueError as error:
        parser.error(str(error))


def _new_result(
    args: argparse.Namespace, argv: list[str] | None, data: Data, baseline: float
) -> dict[str, Any]:
    """The result file's record before any run: the command and the data it trains on."""
    return {
        "task": "listops",
        "backend": args.backend,
        "command": "reinmax task listops " + " ".join(sys.argv[1:] if argv is None else argv),
        "majority_baseline": baseline,
        "data": {
            "n_train": len(data.train),
            "n_test": len(data.test),
            "n_valid": len(data.valid),
            "train_length_mean": float(np.mean([len(e.tokens) for e in data.train])),
        },
        "runs": [],
    }


def _run_all(
    args: argparse.Namespace,
    configs: list[TrainConfig],
    data: Data,
    json_path: Path,
    result: dict[str, Any],
    started: float,
) -> None:
    """Train every config and seed, rewriting the result file (its ``seconds`` counted from
    ``started``) after every epoch and run."""
    finished: list[dict[str, Any]] = []

    def publish(record: dict[str, Any], done: list[dict[str, Any]]) -> None:
        result["runs"] = [*done, record]
        result["seconds"] = time.perf_counter() - started
        write_json(json_path, result)

    for config in configs:
        for seed in range(args.seeds):
            record = train(
                args.backend,
                config,
                seed,
                data,
                checkpoint=checkpoint_path(json_path, config.estimator, seed),
                resume=args.resume,
                on_epoch=lambda record: publish(record, finished),
            )
            finished.append(record)
            publish(record, finished[:-1])
            final = record["final"]
            print(
                f"{args.backend} {config.estimator} seed {seed}: real valid accuracy "
                f"{final['valid_accuracy']:.3f} (epoch {final['epoch']}), generated test "
                f"{final['test_accuracy']:.3f}, parse F1 {final['valid_parse_f1']:.3f}"
            )
            plot_trees(record, json_path.parent / f"{json_path.stem}-trees-{config.estimator}.png")


def _write_summary(result: dict[str, Any], json_path: Path, baseline: float) -> None:
    """The curves and the table over this backend's result and its siblings beside it."""
    everything = [result, *sibling_results(json_path)]
    plot_curves(everything, json_path.parent / "accuracy.png", baseline)
    table = accuracy_table(everything, baseline)
    (json_path.parent / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)


@command("reinmax task listops")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task listops``: train, evaluate, write the JSON, the plots and the table."""
    parser = _parser()
    args = parser.parse_args(argv)
    estimators = choose_estimators(parser, args.estimator)
    configs = _configs(parser, args, estimators)
    json_path = check_destination(args.json or f"results/listops/{args.backend}.json")
    sibling_results(json_path)
    require_conformance(args.backend, estimators)

    started = time.perf_counter()
    data = Data.load(configs[0], args.valid)
    baseline = describe(data.valid)["labels"]["majority_share"]
    result = _new_result(args, argv, data, baseline)
    _run_all(args, configs, data, json_path, result, started)
    _write_summary(result, json_path, baseline)
    status(f"wrote {json_path} ({result['seconds']:.0f} s)")
    return 0

"""Score a ListOps checkpoint on any file in the reader's ``LABEL<TAB>EXPRESSION`` format.

``reinmax task listops-eval CHECKPOINT [--data TSV ...] [--json PATH]`` rebuilds the model in the
backend that trained it, parses every expression greedily and prints, per file, the accuracy,
the mean cross-entropy, the bracketing F1 of the induced trees against the files' gold trees,
and the majority-class baseline of the file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from reinmax.runtime import add_publish_option, add_quiet_option, check_destination, command
from reinmax.tasks.common import load_checkpoint, write_json
from reinmax.tasks.listops.data import Vocabulary, default_valid_path, describe, read_tsv
from reinmax.tasks.listops.evaluation import evaluate_examples
from reinmax.tasks.listops.model import ModelConfig, TrainConfig
from reinmax.tasks.listops.trainer import build_trainer

__all__ = ["evaluate_checkpoint", "main"]


def evaluate_checkpoint(checkpoint: str | Path, paths: list[str | Path]) -> dict[str, Any]:
    """Load ``checkpoint`` (written by ``reinmax task listops``) and score each TSV in ``paths``.

    Returns ``{"checkpoint", "backend", "estimator", "seed", "epoch", "files": [{"path", "n",
    "accuracy", "loss", "parse_f1", "majority_baseline", "predictions"}]}``.

    Raises:
        FileNotFoundError: the checkpoint or a data file does not exist.
        ValueError: the checkpoint is not a ListOps checkpoint, or a data line is malformed.
    """
    saved = load_checkpoint(checkpoint, "listops")
    if saved is None:
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    required = ("backend", "config", "model_config", "trainer", "history")
    if not isinstance(saved, dict) or any(key not in saved for key in required):
        raise ValueError(f"checkpoint {checkpoint} is not a ListOps checkpoint")
    config = TrainConfig(**saved["config"])
    model_config = ModelConfig(**saved["model_config"])
    weights = saved["trainer"]["weights"]
    trainer = build_trainer(saved["backend"], model_config, weights, config, saved.get("seed", 0))
    trainer.load_state(saved["trainer"])
    vocab = Vocabulary()
    files = []
    for path in paths:
        examples = read_tsv(path)
        if not examples:
            raise ValueError(f"{path} holds no examples")
        scores = evaluate_examples(trainer, examples, vocab, desc=Path(path).name)
        files.append(
            {
                "path": str(path),
                "n": scores["n"],
                "accuracy": scores["accuracy"],
                "loss": scores["loss"],
                "parse_f1": scores["parse_f1"],
                "majority_baseline": describe(examples)["labels"]["majority_share"],
                "predictions": scores["predictions"],
            }
        )
    return {
        "checkpoint": str(checkpoint),
        "backend": saved["backend"],
        "estimator": config.estimator,
        "seed": saved.get("seed"),
        "epoch": len(saved["history"]),
        "files": files,
    }


@command("reinmax task listops-eval")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task listops-eval``: print the scores of a checkpoint and optionally write JSON.

    Returns 0 on success and 1 when the checkpoint or a file cannot be read.
    """
    parser = argparse.ArgumentParser(
        prog="reinmax task listops-eval",
        description="Score a checkpoint of `reinmax task listops` on ListOps TSV files.",
    )
    parser.add_argument("checkpoint", help="a .pkl written by reinmax task listops")
    parser.add_argument(
        "--data", nargs="+", default=None, help="TSV files (default: the real validation split)"
    )
    parser.add_argument("--json", default=None, help="also write the scores here")
    add_quiet_option(parser)
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if args.json is not None:
        check_destination(args.json)
    paths = args.data or [default_valid_path()]
    started = time.perf_counter()
    try:
        result = evaluate_checkpoint(args.checkpoint, paths)
    except (FileNotFoundError, ValueError) as error:
        print(f"listops-eval: {error}", file=sys.stderr)
        return 1
    result["seconds"] = time.perf_counter() - started
    print(f"{result['backend']} {result['estimator']} after {result['epoch']} epochs")
    for scores in result["files"]:
        print(
            f"{scores['path']}: accuracy {scores['accuracy']:.4f} on {scores['n']} examples "
            f"(majority class {scores['majority_baseline']:.4f}), loss {scores['loss']:.4f}, "
            f"parse F1 {scores['parse_f1']:.4f}"
        )
    if args.json is not None:
        write_json(args.json, result)
    return 0

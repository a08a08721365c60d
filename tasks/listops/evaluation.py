"""Greedy evaluation on ListOps examples: accuracy, loss and parse F1, of a trainer in memory
(:func:`evaluate_examples`, what training reports every epoch) or of a saved checkpoint on any
file in the reader's ``LABEL<TAB>EXPRESSION`` format (:func:`evaluate_checkpoint`).

``reinmax task listops-eval CHECKPOINT [--data TSV ...] [--json PATH]`` (:func:`main`) rebuilds
the model in the backend that trained it, parses every expression greedily and prints, per file,
the accuracy, the mean cross-entropy, the bracketing F1 of the induced trees against the files'
gold trees, and the majority-class baseline of the file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.runtime import add_publish_option, add_quiet_option, check_destination, command
from reinmax.tasks.common import load_checkpoint, progress, write_json
from reinmax.tasks.listops.data import (
    Example,
    Vocabulary,
    default_valid_path,
    describe,
    format_tree,
    read_tsv,
)
from reinmax.tasks.listops.model import (
    ModelConfig,
    TrainConfig,
    Trainer,
    build_trainer,
    encode_padded,
    pad_width,
)
from reinmax.tasks.listops.trees import induced_tree, parse_f1

__all__ = [
    "EVAL_BUDGET",
    "EVAL_MAX_BATCH",
    "evaluate_checkpoint",
    "evaluate_examples",
    "main",
    "summary",
    "tree_examples",
]

# The evaluation batch holds about this many (position x merge step) cells: sequences are sorted
# by length and a batch of width W holds EVAL_BUDGET // W² of them, so one 900-token expression
# does not make 255 short ones pay for its width.
EVAL_BUDGET = 64 * 64 * 64
EVAL_MAX_BATCH = 256

# Real validation expressions drawn in the tree figure: short enough to read.
TREE_EXAMPLES = 3
TREE_LENGTHS = (9, 14)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _batches(examples: Sequence[Example]) -> list[list[int]]:
    """The indices of ``examples`` in evaluation batches: by length, each within the budget."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        width = pad_width(len(examples[order[start]].tokens))
        size = max(1, min(EVAL_MAX_BATCH, EVAL_BUDGET // (width * width)))
        # The batch's width is that of its longest member; keep it within the budget.
        while size > 1:
            longest = len(examples[order[min(start + size, len(order)) - 1]].tokens)
            if size * pad_width(longest) ** 2 <= EVAL_BUDGET:
                break
            size //= 2
        batches.append(order[start : start + size])
        start += size
    return batches


def evaluate_examples(
    trainer: Trainer, examples: Sequence[Example], vocab: Vocabulary, *, desc: str = "eval"
) -> dict[str, Any]:
    """Greedy-parse and classify ``examples``.

    Returns ``accuracy``, ``loss`` (mean cross-entropy), ``parse_f1`` (mean bracketing F1 of the
    induced trees against the gold trees), ``n``, and per example ``predictions`` and ``merges``
    (in the order of ``examples``).
    """
    if not examples:
        raise ValueError("evaluate_examples needs at least one example")
    batches = _batches(examples)
    predictions = np.zeros(len(examples), np.int64)
    losses = np.zeros(len(examples), np.float64)
    merges: list[list[int]] = [[] for _ in examples]
    for batch in progress(batches, total=len(batches), desc=desc):
        ids, lengths, labels = encode_padded([examples[i] for i in batch], vocab)
        logits, merge_positions = trainer.predict(ids, lengths)
        log_probs = _log_softmax(np.asarray(logits, np.float64))
        for row, index in enumerate(batch):
            predictions[index] = int(np.argmax(logits[row]))
            losses[index] = -log_probs[row, labels[row]]
            merges[index] = [int(m) for m in merge_positions[row, : lengths[row] - 1]]
    gold = np.array([example.label for example in examples])
    f1 = [
        parse_f1(induced_tree(merges[i], len(example.tokens)), example.tree)
        for i, example in enumerate(examples)
    ]
    return {
        "n": len(examples),
        "accuracy": float(np.mean(predictions == gold)),
        "loss": float(losses.mean()),
        "parse_f1": float(np.mean(f1)),
        "predictions": predictions.tolist(),
        "merges": merges,
    }


def summary(evaluation: dict[str, Any]) -> dict[str, float]:
    """The scores of an :func:`evaluate_examples` result, without the per-example lists."""
    return {key: evaluation[key] for key in ("accuracy", "loss", "parse_f1")}


def tree_examples(
    trainer: Trainer, valid: Sequence[Example], vocab: Vocabulary
) -> list[dict[str, Any]]:
    """A few short real validation expressions with their gold and induced (greedy) trees."""
    low, high = TREE_LENGTHS
    chosen = [e for e in valid if low <= len(e.tokens) <= high][:TREE_EXAMPLES]
    if not chosen:
        return []
    result = evaluate_examples(trainer, chosen, vocab, desc="trees")
    return [
        {
            "label": example.label,
            "predicted": result["predictions"][i],
            "tokens": list(example.tokens),
            "gold": format_tree(example.tree, example.tokens),
            "induced": format_tree(
                induced_tree(result["merges"][i], len(example.tokens)), example.tokens
            ),
            "merges": result["merges"][i],
        }
        for i, example in enumerate(chosen)
    ]


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

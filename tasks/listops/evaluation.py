"""Greedy evaluation of a trainer on ListOps examples: accuracy, loss and parse F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reinmax.tasks.common import progress
from reinmax.tasks.listops.data import Example, Vocabulary, format_tree
from reinmax.tasks.listops.model import encode_padded, pad_width
from reinmax.tasks.listops.trainer import Trainer
from reinmax.tasks.listops.trees import induced_tree, parse_f1

__all__ = [
    "EVAL_BUDGET",
    "EVAL_MAX_BATCH",
    "evaluate_examples",
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

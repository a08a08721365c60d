"""ListOps unsupervised parsing with a Gumbel Tree-LSTM (Choi et al. 2018), in every backend.

A leaf LSTM reads the tokens; then, until one node is left, a Tree-LSTM cell composes every
adjacent pair, a query vector scores the candidates, the estimator samples one merge position
from the scores' softmax (padding masked with ``-inf``), and the chosen pair is replaced by its
composition. At evaluation the merge is the greedy argmax. A one-hidden-layer MLP classifies the
root into the 10 values. The parser gets no supervision: it learns whatever trees help classify.

This module holds what every framework shares: the model and training configuration, the
initial weights (drawn once on the host in one canonical layout, so every backend starts from
the same model), the merge noise (NumPy Philox from seed, epoch and step, passed to the estimator
as ``noise=`` so that backends are comparable), batching, the training loop with checkpoints and
``--resume``, evaluation, the JSON results and the plots. Each framework's model is in
``listops_torch``, ``listops_jax`` and ``listops_tensorflow`` (a ``Trainer`` class each, see
:class:`Trainer`).

Run ``reinmax task listops --help``.

References:
    Choi, Yoo, Lee. Learning to Compose Task-Specific Tree Structures. AAAI 2018.
    Nangia, Bowman. ListOps: A Diagnostic Dataset for Latent Tree Learning. NAACL-SRW 2018.
    Liu, Liu, Gao, Gao, Han. Bridging Discrete and Backpropagation: Straight-Through and
    Beyond. NeurIPS 2023.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reinmax.runtime import (
    ResultFileError,
    add_quiet_option,
    command,
    non_negative_int,
    positive_float,
    positive_int,
    read_json,
    status,
)
from reinmax.tasks.common import (
    BACKENDS,
    ESTIMATORS,
    import_framework,
    load_checkpoint,
    progress,
    pyplot,
    require_conformance,
    save_checkpoint,
    save_figure,
    write_json,
)
from reinmax.tasks.listops_data import (
    Example,
    GeneratorConfig,
    Tree,
    Vocabulary,
    describe,
    encode_batch,
    format_tree,
    read_tsv,
    splits,
)

__all__ = [
    "DEFAULT_TAU",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "build_trainer",
    "estimator_function",
    "evaluate_examples",
    "induced_tree",
    "init_weights",
    "main",
    "merge_noise",
    "pad_width",
    "parse_f1",
    "train",
]

N_CLASSES = 10

# The estimators whose noise is one uniform per row (inverse-CDF sampling); the others take one
# uniform per candidate position (and Gumbel-Rao K + 1 of them).
_ROW_NOISE = ("straight_through", "reinmax", "gapped_straight_through")

# ReinMax at τ = 1.1 is the paper's ListOps setting; the others use τ = 1, as Choi et al. did
# for ST-Gumbel-Softmax.
DEFAULT_TAU = {name: 1.1 if name == "reinmax" else 1.0 for name in ESTIMATORS}

# The evaluation batch holds about this many (position x merge step) cells: sequences are sorted
# by length and a batch of width W holds EVAL_BUDGET // W² of them, so one 900-token expression
# does not make 255 short ones pay for its width.
EVAL_BUDGET = 64 * 64 * 64
EVAL_MAX_BATCH = 256

# Real validation expressions drawn in the tree figure: short enough to read.
TREE_EXAMPLES = 3
TREE_LENGTHS = (9, 14)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the Gumbel Tree-LSTM (the paper uses 300 for both dimensions)."""

    vocab_size: int
    word_dim: int = 64
    hidden_dim: int = 64
    clf_hidden_dim: int = 64
    n_classes: int = N_CLASSES

    def __post_init__(self) -> None:
        for field in ("vocab_size", "word_dim", "hidden_dim", "clf_hidden_dim", "n_classes"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; the defaults are the CPU-friendly setting of the README.

    The paper's setting (Choi et al. 2018 as used by Liu et al. 2023) is 300-dimensional words
    and hidden states, batch 16, RAdam at 7e-4, clipping at norm 5 and the learning rate halved
    on a validation plateau, on the full 90k-example training set.
    """

    estimator: str = "reinmax"
    tau: float | None = None
    gumbel_rao_k: int = 1
    gap: float = 1.0
    epochs: int = 3
    batch_size: int = 16
    lr: float = 7e-4
    clip: float = 5.0
    patience: int = 1
    word_dim: int = 32
    hidden_dim: int = 32
    clf_hidden_dim: int = 32
    n_train: int = 1000
    n_test: int = 200
    max_train_length: int = 30
    data_seed: int = 0

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}"
            )
        if self.tau is not None and not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        positive = ("gumbel_rao_k", "epochs", "batch_size", "patience", "n_train", "n_test")
        for field in positive:
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        for field in ("lr", "clip"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0, got {getattr(self, field)}")
        if self.max_train_length < 4:
            raise ValueError(f"max_train_length must be at least 4, got {self.max_train_length}")

    @property
    def temperature(self) -> float:
        """``tau``, or the estimator's default (:data:`DEFAULT_TAU`)."""
        return DEFAULT_TAU[self.estimator] if self.tau is None else self.tau

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size, self.word_dim, self.hidden_dim, self.clf_hidden_dim)


class Trainer(Protocol):
    """What each framework module's ``Trainer`` provides (weights in the canonical layout).

    ``Trainer(config: ModelConfig, weights, *, estimator, tau, gumbel_rao_k, gap, lr, clip)``.
    Arrays in and out are NumPy: ``ids`` and ``lengths`` from :func:`encode_batch`, ``noise``
    from :func:`merge_noise`.
    """

    learning_rate: float

    def train_step(
        self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray, noise: np.ndarray
    ) -> tuple[float, float]:
        """One RAdam step on the batch; returns the batch's (loss, accuracy) before the step."""

    def loss_and_gradients(
        self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray, noise: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy with sampled merges and its gradient (canonical layout), no step."""

    def predict(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy parse: class logits ``[B, 10]`` and merge positions ``[B, W - 1]``."""

    def weights(self) -> dict[str, np.ndarray]:
        """The parameters in the canonical layout of :func:`init_weights`."""

    def state(self) -> dict[str, Any]:
        """Parameters and optimizer state as NumPy, for a checkpoint."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


# ---------------------------------------------------------------------------------------------
# Weights, noise, batches
# ---------------------------------------------------------------------------------------------


def init_weights(config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Draw the initial parameters on the host, in the canonical layout every backend loads.

    Kernels map inputs to outputs (``x @ kernel``). LSTM gates are ordered (input, forget, cell,
    output); Tree-LSTM gates (input, left forget, right forget, cell, output). Forget-gate biases
    start at 1, which Choi et al. add as a constant inside the cell. The padding embedding is 0.
    """
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, 0x11570])))
    e, h, c = config.word_dim, config.hidden_dim, config.clf_hidden_dim

    def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    embedding = rng.normal(0.0, 0.1, size=(config.vocab_size, e)).astype(np.float32)
    embedding[Vocabulary.pad_id] = 0.0
    leaf_bias = np.zeros(4 * h, np.float32)
    leaf_bias[h : 2 * h] = 1.0
    compose_bias = np.zeros(5 * h, np.float32)
    compose_bias[h : 3 * h] = 1.0
    return {
        "embedding": embedding,
        "leaf_kernel": uniform((e, 4 * h), h),
        "leaf_recurrent_kernel": uniform((h, 4 * h), h),
        "leaf_bias": leaf_bias,
        "compose_kernel": uniform((2 * h, 5 * h), 2 * h),
        "compose_bias": compose_bias,
        "query": rng.normal(0.0, 0.01, size=h).astype(np.float32),
        "hidden_kernel": uniform((h, c), h),
        "hidden_bias": np.zeros(c, np.float32),
        "output_kernel": uniform((c, config.n_classes), c),
        "output_bias": np.zeros(config.n_classes, np.float32),
    }


def noise_shape(estimator: str, batch: int, width: int, gumbel_rao_k: int = 1) -> tuple[int, ...]:
    """Shape of the merge noise of a batch padded to ``width`` tokens.

    Axis 0 is the merge step (``width − 1`` of them). Each step's slice is the ``noise=`` of the
    estimator on the ``[batch, width − 1]`` candidate scores; a backend that shrinks the sequence
    as it merges takes the first ``width − 1 − t`` candidates at step ``t``.
    """
    steps = candidates = max(width - 1, 0)
    if estimator in _ROW_NOISE:
        return (steps, batch)
    if estimator == "gumbel_softmax":
        return (steps, batch, candidates)
    if estimator == "gumbel_rao":
        return (steps, gumbel_rao_k + 1, batch, candidates)
    raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")


def step_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The Philox stream of one training step: the same on every backend and on resume."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, epoch, step])))


def shuffle_rng(seed: int, epoch: int) -> np.random.Generator:
    """The Philox stream that orders one epoch's training examples."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, epoch])))


def merge_noise(
    estimator: str,
    batch: int,
    width: int,
    rng: np.random.Generator,
    gumbel_rao_k: int = 1,
) -> np.ndarray:
    """Uniforms in ``[0, 1)`` for every merge step of a batch (float32, see :func:`noise_shape`)."""
    return rng.random(noise_shape(estimator, batch, width, gumbel_rao_k), dtype=np.float32)


def pad_width(length: int) -> int:
    """The padded width of a batch whose longest expression has ``length`` tokens.

    Multiples of 8 up to 64, then steps of about 25%: few distinct widths, so JAX compiles few
    programs, and at most about 25% wasted width.
    """
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    width = 8
    while width < length:
        width = width + 8 if width < 64 else int(math.ceil(width * 1.25 / 8) * 8)
    return width


def estimator_function(name: str, *, gumbel_rao_k: int = 1, gap: float = 1.0) -> Callable:
    """``f(scores, tau, noise) -> hard``: the named estimator's one-hot merge choice.

    Dispatches on the type of ``scores`` (``reinmax.<name>``), so every framework calls the
    same thing; the gradient reaching ``scores`` is the estimator's rule.
    """
    import reinmax

    if name not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {name!r}")
    function = getattr(reinmax, name)
    options: dict[str, Any] = {}
    if name == "gumbel_rao":
        options["k"] = gumbel_rao_k
    elif name == "gapped_straight_through":
        options["gap"] = gap

    def sample(scores: Any, tau: float, noise: Any) -> Any:
        return function(scores, tau, noise=noise, **options)[0]

    return sample


def build_trainer(
    backend: str, model_config: ModelConfig, weights: dict[str, np.ndarray], config: TrainConfig
) -> Trainer:
    """The framework's ``Trainer`` for ``config``, starting from ``weights``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    import_framework(backend)
    module = importlib.import_module(f"reinmax.tasks.listops_{backend}")
    return module.Trainer(
        model_config,
        weights,
        estimator=config.estimator,
        tau=config.temperature,
        gumbel_rao_k=config.gumbel_rao_k,
        gap=config.gap,
        lr=config.lr,
        clip=config.clip,
    )


# ---------------------------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------------------------


def induced_tree(merges: Sequence[int], length: int) -> Tree:
    """The binary tree built by merging position ``merges[t]`` with its right neighbour at step t.

    Only the first ``length − 1`` merges are used (later steps of a padded batch merge nothing).
    """
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    nodes: list[Tree] = list(range(length))
    for step in range(length - 1):
        k = int(merges[step])
        if not 0 <= k < len(nodes) - 1:
            raise ValueError(f"merge {k} at step {step} is outside 0..{len(nodes) - 2}")
        nodes[k : k + 2] = [(nodes[k], nodes[k + 1])]
    return nodes[0]


def _spans(tree: Tree, into: set[tuple[int, int]]) -> tuple[int, int]:
    """Add the span of every internal node to ``into``; returns the root's span.

    Iterative: an induced tree over a long real expression can be a chain hundreds of nodes
    deep, past Python's recursion limit.
    """
    if isinstance(tree, int):
        return tree, tree + 1
    span_of: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Tree, bool]] = [(tree, False)]
    while stack:
        node, children_done = stack.pop()
        if isinstance(node, int):
            span_of[id(node)] = (node, node + 1)
        elif children_done:
            span = (span_of[id(node[0])][0], span_of[id(node[-1])][1])
            span_of[id(node)] = span
            into.add(span)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in node)
    return span_of[id(tree)]


def parse_f1(predicted: Tree, gold: Tree) -> float:
    """Unlabelled bracketing F1 of two trees over the same tokens, without the whole-sentence span.

    Returns 1.0 when neither tree has a non-trivial span (a two-token expression).
    """
    ours: set[tuple[int, int]] = set()
    theirs: set[tuple[int, int]] = set()
    whole = _spans(predicted, ours)
    if _spans(gold, theirs) != whole:
        raise ValueError("the trees cover different tokens")
    ours.discard(whole)
    theirs.discard(whole)
    if not ours and not theirs:
        return 1.0
    overlap = len(ours & theirs)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(ours), overlap / len(theirs)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


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
    predictions = np.zeros(len(examples), np.int64)
    losses = np.zeros(len(examples), np.float64)
    merges: list[list[int]] = [[] for _ in examples]
    for batch in progress(batches, total=len(batches), desc=desc):
        chosen = [examples[i] for i in batch]
        width = pad_width(max(len(example.tokens) for example in chosen))
        ids, lengths, labels = encode_batch(chosen, vocab, pad_to=width)
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


def _summary(evaluation: dict[str, Any]) -> dict[str, float]:
    return {key: evaluation[key] for key in ("accuracy", "loss", "parse_f1")}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class Data:
    """Generated train and test sets and the real validation split."""

    train: list[Example]
    test: list[Example]
    valid: list[Example]

    @classmethod
    def load(cls, config: TrainConfig, valid_path: str | Path | None = None) -> Data:
        valid = read_tsv(valid_path)
        generator = GeneratorConfig(max_length=config.max_train_length)
        train, test = splits(
            config.data_seed, config.n_train, config.n_test, generator, exclude=valid
        )
        return cls(train, test, valid)


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
    trainer = build_trainer(backend, model_config, init_weights(model_config, seed), config)
    record: dict[str, Any] = {
        "backend": backend,
        "estimator": config.estimator,
        "seed": seed,
        "tau": config.temperature,
        "config": dataclasses.asdict(config),
        "history": [],
    }
    schedule = {"best": -1.0, "bad_epochs": 0}
    saved = load_checkpoint(checkpoint, "listops") if resume and checkpoint is not None else None
    if saved is not None:
        # More epochs may be asked of a resumed run; anything else must match.
        ours = {**dataclasses.asdict(config), "epochs": None, "backend": backend}
        theirs = {**saved["config"], "epochs": None, "backend": saved["backend"]}
        if ours != theirs:
            changed = sorted(key for key in ours if ours[key] != theirs.get(key))
            raise ValueError(
                f"checkpoint {checkpoint} was written with different settings: {', '.join(changed)}"
            )
        trainer.load_state(saved["trainer"])
        record["history"] = saved["history"]
        schedule = saved["schedule"]
    for epoch in range(len(record["history"]), config.epochs):
        started = time.perf_counter()
        order = shuffle_rng(seed, epoch).permutation(len(data.train))
        batches = [
            order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
        ]
        losses, accuracies = [], []
        desc = f"{backend} {config.estimator} s{seed} epoch {epoch + 1}/{config.epochs}"
        for step, batch in enumerate(progress(batches, total=len(batches), desc=desc)):
            chosen = [data.train[i] for i in batch]
            width = pad_width(max(len(example.tokens) for example in chosen))
            ids, lengths, labels = encode_batch(chosen, vocab, pad_to=width)
            noise = merge_noise(
                config.estimator,
                len(chosen),
                width,
                step_rng(seed, epoch, step),
                config.gumbel_rao_k,
            )
            loss, accuracy = trainer.train_step(ids, lengths, labels, noise)
            losses.append(loss)
            accuracies.append(accuracy)
        train_seconds = time.perf_counter() - started
        test = evaluate_examples(trainer, data.test, vocab, desc="generated test")
        valid = evaluate_examples(trainer, data.valid, vocab, desc="real valid")
        entry = {
            "epoch": epoch + 1,
            "lr": trainer.learning_rate,
            "train_loss": float(np.mean(losses)),
            "train_accuracy": float(np.mean(accuracies)),
            "test": _summary(test),
            "valid": _summary(valid),
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - started,
        }
        # Halve the learning rate when the generated test accuracy stops improving: model
        # selection never looks at the real split.
        if test["accuracy"] > schedule["best"]:
            schedule = {"best": test["accuracy"], "bad_epochs": 0}
            entry["best"] = True
        else:
            schedule["bad_epochs"] += 1
            if schedule["bad_epochs"] >= config.patience:
                trainer.learning_rate = trainer.learning_rate * 0.5
                schedule["bad_epochs"] = 0
        record["history"].append(entry)
        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "backend": backend,
                    "config": dataclasses.asdict(config),
                    "seed": seed,
                    "model_config": dataclasses.asdict(model_config),
                    "trainer": trainer.state(),
                    "history": record["history"],
                    "schedule": schedule,
                },
                "listops",
            )
        if on_epoch is not None:
            on_epoch(record)
    record["final"] = _final(record["history"])
    record["trees"] = _tree_examples(trainer, data.valid, vocab)
    return record


def _final(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch chosen on generated test accuracy (the last such epoch) and its scores."""
    best = max(history, key=lambda entry: (entry["test"]["accuracy"], entry["epoch"]))
    return {
        "epoch": best["epoch"],
        "test_accuracy": best["test"]["accuracy"],
        "valid_accuracy": best["valid"]["accuracy"],
        "valid_parse_f1": best["valid"]["parse_f1"],
        "last_valid_accuracy": history[-1]["valid"]["accuracy"],
    }


def _tree_examples(trainer: Trainer, valid: Sequence[Example], vocab: Vocabulary) -> list[dict]:
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


# ---------------------------------------------------------------------------------------------
# Plots and tables
# ---------------------------------------------------------------------------------------------


def _parse_bracketed(text: str, tokens: Sequence[str]) -> Tree:
    """The tree of a ``format_tree`` string (parentheses around every inner node)."""
    stack: list[list[Tree]] = [[]]
    position = 0
    for token in text.split():
        if token == "(":
            stack.append([])
        elif token == ")":
            children = stack.pop()
            stack[-1].append(tuple(children))
        else:
            if tokens[position] != token:
                raise ValueError(f"token {token!r} does not match {tokens[position]!r}")
            stack[-1].append(position)
            position += 1
    return stack[0][0]


def _draw_tree(ax: Any, tree: Tree, tokens: Sequence[str], title: str) -> None:
    """Draw a tree with the tokens as leaves in order and each inner node above its children."""

    def place(node: Tree) -> tuple[float, int]:
        if isinstance(node, int):
            ax.text(node, -0.3, tokens[node], ha="center", va="top", fontsize=8, rotation=90)
            return float(node), 0
        children = [place(child) for child in node]
        x = float(np.mean([cx for cx, _ in children]))
        y = 1 + max(cy for _, cy in children)
        for cx, cy in children:
            ax.plot([x, cx], [y, cy], color="tab:blue", linewidth=1)
        ax.plot([x], [y], "o", color="tab:blue", markersize=3)
        return x, y

    _, height = place(tree)
    ax.set_xlim(-0.8, len(tokens) - 0.2)
    ax.set_ylim(-2.5, height + 0.5)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_trees(record: dict[str, Any], path: Path) -> Path | None:
    """Induced trees of a few real validation expressions beside their true structure."""
    examples = record.get("trees") or []
    if not examples:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(examples), 2, figsize=(11, 2.8 * len(examples)), squeeze=False)
    for row, example in enumerate(examples):
        tokens = example["tokens"]
        _draw_tree(
            axes[row, 0],
            _parse_bracketed(example["gold"], tokens),
            tokens,
            f"gold (value {example['label']})",
        )
        title = f"induced, greedy (predicted {example['predicted']})"
        _draw_tree(axes[row, 1], _parse_bracketed(example["induced"], tokens), tokens, title)
    fig.suptitle(f"{record['backend']} {record['estimator']} (seed {record['seed']})")
    return save_figure(fig, path)


def plot_curves(results: Sequence[dict[str, Any]], path: Path, baseline: float | None) -> Path:
    """Per-epoch accuracy on the real split and generated test, and training loss; one panel per
    backend, one colour per estimator (mean over seeds, band = min..max)."""
    plt = pyplot()
    backends = sorted({run["backend"] for result in results for run in result["runs"]})
    fig, axes = plt.subplots(2, len(backends), figsize=(5.5 * len(backends), 7), squeeze=False)
    colours = dict(zip(ESTIMATORS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for column, backend in enumerate(backends):
        runs = [run for result in results for run in result["runs"] if run["backend"] == backend]
        for estimator in ESTIMATORS:
            mine = [
                run["history"] for run in runs if run["estimator"] == estimator and run["history"]
            ]
            if not mine:
                continue
            epochs = min(len(history) for history in mine)
            x = np.arange(1, epochs + 1)
            for row, series, style in (
                (0, lambda e: e["valid"]["accuracy"], "-"),
                (0, lambda e: e["test"]["accuracy"], ":"),
                (1, lambda e: e["train_loss"], "-"),
            ):
                values = np.array(
                    [[series(entry) for entry in history[:epochs]] for history in mine]
                )
                label = estimator if style == "-" else None
                axes[row, column].plot(
                    x, values.mean(0), style, color=colours[estimator], label=label
                )
                if len(mine) > 1:
                    axes[row, column].fill_between(
                        x, values.min(0), values.max(0), color=colours[estimator], alpha=0.15
                    )
        if baseline is not None:
            axes[0, column].axhline(baseline, color="grey", linestyle="--", label="majority class")
        axes[0, column].set_title(f"{backend}: accuracy (solid real valid, dotted generated test)")
        axes[0, column].set_xlabel("epoch")
        axes[0, column].set_ylabel("accuracy")
        axes[0, column].legend(fontsize=8)
        axes[1, column].set_title(f"{backend}: training loss")
        axes[1, column].set_xlabel("epoch")
        axes[1, column].set_ylabel("cross-entropy")
    return save_figure(fig, path)


def accuracy_table(results: Sequence[dict[str, Any]], baseline: float | None) -> str:
    """Markdown table, estimators x backends: real validation accuracy (mean ± std over seeds)
    at the epoch of best generated test accuracy."""
    runs = [run for result in results for run in result["runs"] if "final" in run]
    backends = [b for b in BACKENDS if any(run["backend"] == b for run in runs)]
    lines = ["| estimator | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for estimator in ESTIMATORS:
        cells = []
        for backend in backends:
            values = [
                100 * run["final"]["valid_accuracy"]
                for run in runs
                if run["backend"] == backend and run["estimator"] == estimator
            ]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.1f}")
            else:
                cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f} (n={len(values)})")
        if any(cells):
            lines.append(f"| {estimator} | " + " | ".join(cells) + " |")
    if baseline is not None:
        lines.append(
            "| majority class | " + " | ".join(f"{100 * baseline:.1f}" for _ in backends) + " |"
        )
    return "\n".join(lines)


def _sibling_results(json_path: Path) -> list[dict[str, Any]]:
    """The results of the other backends written beside ``json_path``, each checked.

    Called before training too, so that a truncated or foreign file stops the command at once
    (:class:`~reinmax.runtime.ResultFileError` naming it) rather than after hours of training.
    """
    results = []
    for backend in BACKENDS:
        path = json_path.parent / f"{backend}.json"
        if path.exists() and path != json_path:
            result = read_json(path)
            if not isinstance(result, dict) or result.get("task") != "listops":
                raise ResultFileError(
                    f"{path} is not a ListOps result file; move it away or write the results "
                    "to another folder"
                )
            results.append(result)
    return results


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="reinmax task listops",
        description="ListOps with a Gumbel Tree-LSTM (Choi et al. 2018): train on generated "
        "expressions, evaluate on generated test data and the real validation split. The paper's "
        "setting: --word-dim 300 --hidden-dim 300 --clf-hidden-dim 300 --n-train 90000 "
        "--max-train-length 100 --epochs 20.",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument(
        "--estimator",
        nargs="+",
        default=["all"],
        metavar="E",
        help=f"one or more of {', '.join(ESTIMATORS)}, or all (default)",
    )
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    parser.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (0 .. S-1)")
    parser.add_argument(
        "--tau", type=positive_float, default=None, help="default: 1.1 for reinmax, else 1"
    )
    parser.add_argument("--gumbel-rao-k", type=positive_int, default=defaults.gumbel_rao_k)
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument(
        "--lr", type=positive_float, default=defaults.lr, help="RAdam learning rate"
    )
    parser.add_argument(
        "--clip", type=positive_float, default=defaults.clip, help="gradient norm clip"
    )
    parser.add_argument(
        "--patience",
        type=positive_int,
        default=defaults.patience,
        help="epochs before halving the lr",
    )
    parser.add_argument("--word-dim", type=positive_int, default=defaults.word_dim)
    parser.add_argument("--hidden-dim", type=positive_int, default=defaults.hidden_dim)
    parser.add_argument("--clf-hidden-dim", type=positive_int, default=defaults.clf_hidden_dim)
    parser.add_argument(
        "--n-train", type=positive_int, default=defaults.n_train, help="generated training examples"
    )
    parser.add_argument(
        "--n-test", type=positive_int, default=defaults.n_test, help="generated test examples"
    )
    parser.add_argument(
        "--max-train-length",
        type=positive_int,
        default=defaults.max_train_length,
        help="longest generated expression",
    )
    parser.add_argument("--data-seed", type=non_negative_int, default=defaults.data_seed)
    parser.add_argument(
        "--valid",
        default=None,
        help="real validation TSV (default: the split shipped with the package)",
    )
    parser.add_argument("--json", default=None, help="default results/listops/<backend>.json")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints beside --json"
    )
    return parser


@command("reinmax task listops")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task listops``: train, evaluate, write the JSON, the plots and the table."""
    parser = _parser()
    add_quiet_option(parser)
    args = parser.parse_args(argv)
    estimators = ESTIMATORS if args.estimator == ["all"] else tuple(args.estimator)
    if args.seeds < 1:
        parser.error(f"--seeds must be positive, got {args.seeds}")
    try:
        configs = [
            TrainConfig(
                estimator=estimator,
                tau=args.tau,
                gumbel_rao_k=args.gumbel_rao_k,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                clip=args.clip,
                patience=args.patience,
                word_dim=args.word_dim,
                hidden_dim=args.hidden_dim,
                clf_hidden_dim=args.clf_hidden_dim,
                n_train=args.n_train,
                n_test=args.n_test,
                max_train_length=args.max_train_length,
                data_seed=args.data_seed,
            )
            for estimator in estimators
        ]
    except ValueError as error:
        parser.error(str(error))
    json_path = Path(args.json or f"results/listops/{args.backend}.json")
    _sibling_results(json_path)
    require_conformance(args.backend, list(estimators))

    started = time.perf_counter()
    data = Data.load(configs[0], args.valid)
    baseline = describe(data.valid)["labels"]["majority_share"]
    result: dict[str, Any] = {
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

    def publish(record: dict[str, Any], finished: list[dict[str, Any]]) -> None:
        result["runs"] = [*finished, record]
        result["seconds"] = time.perf_counter() - started
        write_json(json_path, result)

    finished: list[dict[str, Any]] = []
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

    everything = [result, *_sibling_results(json_path)]
    plot_curves(everything, json_path.parent / "accuracy.png", baseline)
    table = accuracy_table(everything, baseline)
    (json_path.parent / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    status(f"wrote {json_path} ({result['seconds']:.0f} s)")
    return 0

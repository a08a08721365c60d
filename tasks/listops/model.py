"""What the three frameworks share: the model's sizes, the settings, the initial weights, the
padding, and the :class:`Trainer` every framework subclasses, with its merge noise.

The initial weights are drawn once on the host in one canonical layout, so every backend starts
from the same model. The settings of a run (:class:`TrainConfig`) are also the command's options:
each field that is one says so in its metadata, which gives the option its parser, its help and
the check of the field. Each framework's ``Trainer`` is chosen from :data:`TRAINERS`
(:func:`build_trainer`); arrays in and out of a trainer are NumPy, weights and gradients in the
canonical layout of :func:`init_weights`.

Merge noise. The training step draws it from the library's portable generator
(:mod:`reinmax.noise`): the same bits in every framework, eager or compiled. Under ``jit`` and
``tf.function`` the estimator of every merge gets ``rng=`` (:meth:`Trainer.sampler`), with the
step and the row traced; eager torch draws the same uniforms for the whole step in one call.
The merges of training step ``s`` are a ``[W − 1, batch_size]`` array of categorical variables
(merge step, example), one row each in C order, so that merge step ``t`` of example ``b`` of the
step's global batch is row ``t · batch_size + b`` of stream :data:`TRAIN_NOISE` of step ``s``
(:func:`reinmax.tasks.common.noise_seed`, key = the run's seed); its categories are the
``W − 1`` candidate positions of the padded width ``W``, those past a row's remaining length
masked with ``-inf``. A trainer given a part of the global batch (a data-parallel shard:
examples ``b0`` to ``b0 + B``) passes ``row=b0`` and draws exactly what one process draws for
those examples, provided that it pads to the global batch's width (the Gumbel-Rao layout of a
row depends on its number of categories).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from reinmax import estimate
from reinmax.core import Estimator
from reinmax.noise import Seed
from reinmax.runtime import non_negative_int, positive_float, positive_int
from reinmax.tasks.common import estimator as build_estimator
from reinmax.tasks.common import estimator_names, import_framework, noise_seed
from reinmax.tasks.listops.data import Example, Vocabulary, encode_batch

__all__ = [
    "DEFAULT_TAU",
    "N_CLASSES",
    "TRAINERS",
    "TRAIN_NOISE",
    "Batch",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "build_trainer",
    "default_tau",
    "encode_padded",
    "init_weights",
    "merge_nodes",
    "merge_seed",
    "pad_width",
    "shuffle_rng",
    "tree_lstm_cell",
]

N_CLASSES = 10

# ReinMax at τ = 1.1 is the paper's ListOps setting; the others use τ = 1, as Choi et al. did
# for ST-Gumbel-Softmax (a task setting, not the registry's preferred range).
DEFAULT_TAU: dict[str, float] = {"reinmax": 1.1}
"""The temperature of an estimator when ``--tau`` is not given, where it is not 1."""

TRAINERS = {
    "torch": "reinmax.tasks.listops.torch",
    "jax": "reinmax.tasks.listops.jax",
    "tensorflow": "reinmax.tasks.listops.tensorflow",
}
"""The module of each backend's ``Trainer``."""


def default_tau(estimator: str) -> float:
    """The temperature ``estimator`` trains at when none is given (:data:`DEFAULT_TAU`, else 1)."""
    return DEFAULT_TAU.get(estimator, 1.0)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the Gumbel Tree-LSTM (the paper uses 300 for both dimensions)."""

    vocab_size: int
    word_dim: int = 64
    hidden_dim: int = 64
    clf_hidden_dim: int = 64
    n_classes: int = N_CLASSES

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"{field.name} must be positive, got {getattr(self, field.name)}")


def _expression_length(text: str) -> int:
    """argparse type: the longest generated expression, at least 4 tokens (``[SM 1 2 ]``)."""
    value = positive_int(text)
    if value < 4:
        raise argparse.ArgumentTypeError(f"must be an integer >= 4, got {text!r}")
    return value


def _option(default: Any, parse: Callable[[str], Any], help: str | None = None) -> Any:
    """A :class:`TrainConfig` field that is the command's option ``--name-with-dashes``:
    ``parse`` (an argparse type) reads the option and checks the field."""
    return dataclasses.field(default=default, metadata={"parse": parse, "help": help})


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; the defaults are the CPU-friendly setting of the README.

    The paper's setting (Choi et al. 2018 as used by Liu et al. 2023) is 300-dimensional words
    and hidden states, batch 16, RAdam at 7e-4, clipping at norm 5 and the learning rate halved
    on a validation plateau, on the full 90k-example training set. ``gumbel_rao_k`` and ``gap``
    are the options of the estimators that take them (``k`` and ``gap``). ``batch_size`` is the
    global batch: the rows of every merge step's noise (:func:`merge_seed`).
    """

    estimator: str = "reinmax"
    tau: float | None = _option(None, positive_float, "default: 1.1 for reinmax, else 1")
    gumbel_rao_k: int = _option(1, positive_int)
    gap: float = 1.0
    epochs: int = _option(3, positive_int)
    batch_size: int = _option(16, positive_int)
    lr: float = _option(7e-4, positive_float, "RAdam learning rate")
    clip: float = _option(5.0, positive_float, "gradient norm clip")
    patience: int = _option(1, positive_int, "epochs before halving the lr")
    word_dim: int = _option(32, positive_int)
    hidden_dim: int = _option(32, positive_int)
    clf_hidden_dim: int = _option(32, positive_int)
    n_train: int = _option(1000, positive_int, "generated training examples")
    n_test: int = _option(200, positive_int, "generated test examples")
    max_train_length: int = _option(30, _expression_length, "longest generated expression")
    data_seed: int = _option(0, non_negative_int)

    def __post_init__(self) -> None:
        names = estimator_names()
        if self.estimator not in names:
            raise ValueError(f"estimator must be one of {', '.join(names)}, got {self.estimator!r}")
        for field in self.command_line():
            value = getattr(self, field.name)
            if value is None and field.default is None:
                continue
            try:
                field.metadata["parse"](str(value))
            except argparse.ArgumentTypeError as error:
                raise ValueError(f"{field.name} {error}") from None

    @classmethod
    def command_line(cls) -> list[dataclasses.Field]:
        """The fields that are options of the command (``--tau``, ``--batch-size``, ...)."""
        return [field for field in dataclasses.fields(cls) if "parse" in field.metadata]

    @property
    def temperature(self) -> float:
        """``tau``, or the estimator's default (:func:`default_tau`)."""
        return default_tau(self.estimator) if self.tau is None else self.tau

    @property
    def options(self) -> dict[str, Any]:
        """Every estimator option this config sets; each estimator takes those it knows."""
        return {"k": self.gumbel_rao_k, "gap": self.gap}

    def build_estimator(self) -> Estimator:
        """The registered estimator of this run, built with its options."""
        return build_estimator(self.estimator, **self.options)

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model sizes of this run for a vocabulary of ``vocab_size`` tokens."""
        return ModelConfig(vocab_size, self.word_dim, self.hidden_dim, self.clf_hidden_dim)


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


def tree_lstm_cell(
    gates: Sequence[Any], c: Any, sigmoid: Callable[[Any], Any], tanh: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """The Tree-LSTM cell on every adjacent pair of nodes: ``(h, c)`` of the pairs.

    ``gates`` are the pairs' five pre-activations (input, left forget, right forget, cell,
    output), each ``[B, L − 1, H]``, and ``c`` the nodes' ``[B, L, H]`` cell states. Written with
    operators and the framework's ``sigmoid`` and ``tanh``: one cell for every framework.
    """
    i, f_left, f_right, u, o = gates
    new_c = sigmoid(f_left) * c[:, :-1] + sigmoid(f_right) * c[:, 1:] + sigmoid(i) * tanh(u)
    return sigmoid(o) * tanh(new_c), new_c


def merge_nodes(
    choice: Any, taken: Any, nodes: Sequence[Any], pairs: Sequence[Any]
) -> tuple[Any, ...]:
    """Replace the chosen pair by its composition in each of ``nodes``: ``[B, L, H] -> [B, L − 1,
    H]`` (the ``pairs`` ``[B, L − 1, H]`` hold the compositions; ``h`` and ``c`` go together).

    Nodes left of the one-hot ``choice`` ``[B, L − 1]`` stay, the chosen position takes the
    composition of its pair, and nodes right of it shift left by one; ``taken`` is ``choice``'s
    cumulative sum along the candidates. An all-zero choice (a finished row) keeps the first
    ``L − 1`` nodes. Gradients reach ``choice`` through these masks, which is where the
    estimator's rule comes in. Operators only: one merge for every framework.
    """
    left, right, chosen = (1.0 - taken)[..., None], (taken - choice)[..., None], choice[..., None]
    return tuple(
        left * x[:, :-1] + chosen * pair + right * x[:, 1:]
        for x, pair in zip(nodes, pairs, strict=True)
    )


def shuffle_rng(seed: int, epoch: int) -> np.random.Generator:
    """The Philox stream that orders one epoch's training examples."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, epoch])))


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


def encode_padded(
    examples: Sequence[Example], vocab: Vocabulary
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ids``, ``lengths`` and ``labels`` of ``examples`` padded to the :func:`pad_width` of
    the longest."""
    width = pad_width(max(len(example.tokens) for example in examples))
    return encode_batch(examples, vocab, pad_to=width)


TRAIN_NOISE = 0
"""The purpose (:func:`reinmax.tasks.common.noise_seed`) of the training merges' noise."""


def merge_seed(seed: int, step: Any, row: Any, t: Any, batch_size: int) -> Seed:
    """The portable noise of merge step ``t`` of training ``step`` for the batch whose first
    example is ``row`` of a global batch of ``batch_size``: rows ``t · batch_size + row`` on.
    ``step``, ``row`` and ``t`` may be integer arrays of any framework, traced or not."""
    return noise_seed(seed, TRAIN_NOISE, step, row + t * batch_size)


class Batch(NamedTuple):
    """One training batch (``encode_batch`` arrays) and where its merge noise comes from.

    Attributes:
        ids: ``[B, W]`` token ids, padded to a width ``W``.
        lengths: ``[B]`` expression lengths.
        labels: ``[B]`` values 0–9.
        step: the training step, counted over epochs (the noise stream).
        row: the index of the first example in the step's global batch (0 in one process).
    """

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    step: int = 0
    row: int = 0


class Trainer:
    """Training and greedy evaluation of one framework's Gumbel Tree-LSTM with RAdam.

    ``Trainer(model_config, weights, config, seed)``: the model of ``model_config`` starting from
    ``weights``, trained with ``config``'s estimator, temperature, learning rate and clipping;
    ``seed`` keys the merge noise. A framework's subclass builds itself in :meth:`_build` and
    provides ``_integers`` (a NumPy integer array as its own), ``_train_step`` and
    ``_loss_and_gradients`` (on those arrays: ``ids, lengths, labels, step, row``).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        weights: dict[str, np.ndarray],
        config: TrainConfig,
        seed: int = 0,
    ) -> None:
        self.estimator = config.build_estimator()
        self.tau = config.temperature
        self.seed = seed
        self.batch_size = config.batch_size
        self._build(model_config, weights, config)

    def sampler(self, step: Any, row: Any) -> Callable[[Any, Any], Any]:
        """``select(scores, t)``: the estimator's one-hot choice among the masked ``[B, W − 1]``
        candidate ``scores`` of merge step ``t`` of training step ``step``, for the batch whose
        first example is ``row`` of the global batch (:func:`merge_seed`)."""
        estimator, tau, seed, batch_size = self.estimator, self.tau, self.seed, self.batch_size

        def select(scores: Any, t: Any) -> Any:
            rng = merge_seed(seed, step, row, t, batch_size)
            return estimate(estimator, scores, tau, rng=rng)[0]

        return select

    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One RAdam step on ``batch``; returns its (loss, accuracy) before the step."""
        loss, accuracy = self._train_step(*self._inputs(batch))
        return float(loss), float(accuracy)

    def loss_and_gradients(self, batch: Batch) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy with sampled merges and its gradient (canonical layout), no step."""
        loss, gradients = self._loss_and_gradients(*self._inputs(batch))
        return float(loss), gradients

    def _inputs(self, batch: Batch) -> tuple[Any, ...]:
        """``batch`` as the framework's integer arrays; its rows must fit the global batch."""
        if not 0 <= batch.row <= self.batch_size - len(batch.ids):
            raise ValueError(
                f"a batch of {len(batch.ids)} examples from row {batch.row} does not fit the "
                f"global batch of {self.batch_size} (TrainConfig.batch_size)"
            )
        return tuple(self._integers(np.asarray(value)) for value in batch)

    def _build(
        self, model_config: ModelConfig, weights: dict[str, np.ndarray], config: TrainConfig
    ) -> None:
        raise NotImplementedError

    @staticmethod
    def _integers(array: np.ndarray) -> Any:
        """``array`` (NumPy integers) as the framework's array."""
        raise NotImplementedError

    def _train_step(self, *inputs: Any) -> tuple[Any, Any]:
        """One RAdam step on ``ids, lengths, labels, step, row``: ``(loss, accuracy)`` before it."""
        raise NotImplementedError

    def _loss_and_gradients(self, *inputs: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """The loss on ``ids, lengths, labels, step, row`` and its gradient (canonical layout)."""
        raise NotImplementedError

    @property
    def learning_rate(self) -> float:
        """The optimizer's learning rate (settable: the schedule halves it)."""
        raise NotImplementedError

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        raise NotImplementedError

    def predict(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy parse: class logits ``[B, 10]`` and merge positions ``[B, W − 1]``."""
        raise NotImplementedError

    def weights(self) -> dict[str, np.ndarray]:
        """The parameters in the canonical layout."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Parameters and optimizer state as NumPy, for a checkpoint."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        raise NotImplementedError


def build_trainer(
    backend: str,
    model_config: ModelConfig,
    weights: dict[str, np.ndarray],
    config: TrainConfig,
    seed: int = 0,
) -> Trainer:
    """The framework's trainer for ``config``, starting from ``weights``, its noise keyed by
    ``seed``."""
    import_framework(backend)
    module = importlib.import_module(TRAINERS[backend])
    return module.Trainer(model_config, weights, config, seed)

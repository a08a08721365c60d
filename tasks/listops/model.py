"""What the three frameworks' models share: sizes, settings, weights, merge noise and choice.

The initial weights are drawn once on the host in one canonical layout, so every backend starts
from the same model; the merge noise is NumPy Philox from seed, epoch and step, passed to the
estimator as ``noise=`` so that backends are comparable. Each framework's ``Trainer``
(:class:`Trainer`) is chosen from :data:`TRAINERS`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from reinmax.core import Estimator, noise_layout
from reinmax.tasks.common import estimator as build_estimator
from reinmax.tasks.common import estimator_names, import_framework
from reinmax.tasks.listops.data import Vocabulary

__all__ = [
    "DEFAULT_TAU",
    "N_CLASSES",
    "TRAINERS",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "build_trainer",
    "choose_merge",
    "default_tau",
    "estimator_function",
    "init_weights",
    "merge_noise",
    "merge_noise_shape",
    "pad_width",
    "shuffle_rng",
    "step_rng",
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
"""The module of each backend's :class:`Trainer`."""


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
        for field in ("vocab_size", "word_dim", "hidden_dim", "clf_hidden_dim", "n_classes"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; the defaults are the CPU-friendly setting of the README.

    The paper's setting (Choi et al. 2018 as used by Liu et al. 2023) is 300-dimensional words
    and hidden states, batch 16, RAdam at 7e-4, clipping at norm 5 and the learning rate halved
    on a validation plateau, on the full 90k-example training set. ``gumbel_rao_k`` and ``gap``
    are the options of the estimators that take them (``k`` and ``gap``).
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
        names = estimator_names()
        if self.estimator not in names:
            raise ValueError(f"estimator must be one of {', '.join(names)}, got {self.estimator!r}")
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


class Trainer(Protocol):
    """What each framework module's ``Trainer`` provides (weights in the canonical layout).

    ``Trainer(config: ModelConfig, weights, *, estimator: Estimator, tau, lr, clip)``. Arrays in
    and out are NumPy: ``ids`` and ``lengths`` from ``encode_batch``, ``noise`` from
    :func:`merge_noise`.
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


def merge_noise_shape(
    estimator: Estimator, batch: int | None, width: int
) -> tuple[int | None, ...]:
    """Shape of the merge noise of a batch padded to ``width`` tokens.

    Axis 0 is the merge step (``width − 1`` of them). Each step's slice is the ``noise=`` of
    ``estimator`` on the ``[batch, width − 1]`` candidate scores, in the registry's layout
    (:func:`reinmax.core.noise_layout`); a backend that shrinks the sequence as it merges takes
    the first ``width − 1 − t`` candidates at step ``t``. ``batch`` may be ``None`` (unknown),
    for a traced signature.
    """
    candidates = max(width - 1, 0)
    return (candidates, *noise_layout(estimator, (batch, candidates), axis=-1))


def step_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The Philox stream of one training step: the same on every backend and on resume."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, epoch, step])))


def shuffle_rng(seed: int, epoch: int) -> np.random.Generator:
    """The Philox stream that orders one epoch's training examples."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, epoch])))


def merge_noise(
    estimator: Estimator, batch: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniforms in ``[0, 1)`` for every merge step of a batch (float32, see
    :func:`merge_noise_shape`)."""
    return rng.random(merge_noise_shape(estimator, batch, width), dtype=np.float32)


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


def choose_merge(estimator: Estimator, scores: Any, tau: float, noise: Any) -> Any:
    """The one-hot merge choice ``estimator`` samples from the masked candidate ``scores``.

    Dispatches on the type of ``scores`` (``reinmax.estimate``), so every framework calls the
    same thing; the gradient reaching ``scores`` is the estimator's rule.
    """
    import reinmax

    return reinmax.estimate(estimator, scores, tau, noise=noise)[0]


def estimator_function(name: str, **options: Any) -> Callable[[Any, float, Any], Any]:
    """``f(scores, tau, noise) -> hard``: :func:`choose_merge` with the registered estimator
    ``name`` built with ``options`` (those it does not take are ignored)."""
    estimator = build_estimator(name, **options)

    def sample(scores: Any, tau: float, noise: Any) -> Any:
        return choose_merge(estimator, scores, tau, noise)

    return sample


def build_trainer(
    backend: str, model_config: ModelConfig, weights: dict[str, np.ndarray], config: TrainConfig
) -> Trainer:
    """The framework's ``Trainer`` for ``config``, starting from ``weights``."""
    import_framework(backend)
    module = importlib.import_module(TRAINERS[backend])
    return module.Trainer(
        model_config,
        weights,
        estimator=config.build_estimator(),
        tau=config.temperature,
        lr=config.lr,
        clip=config.clip,
    )

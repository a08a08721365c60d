"""What every framework's trainer shares: the NumPy boundary, the settings and the merge noise.

Each framework module (:data:`~reinmax.tasks.listops.model.TRAINERS`) subclasses
:class:`Trainer` with its model, its optimizer and its compiled functions; arrays in and out of a
trainer are NumPy, weights and gradients in the canonical layout of
:func:`~reinmax.tasks.listops.model.init_weights`.

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

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from reinmax import estimate
from reinmax.noise import Seed
from reinmax.tasks.common import import_framework, noise_seed
from reinmax.tasks.listops.model import TRAINERS, ModelConfig, TrainConfig

__all__ = ["TRAIN_NOISE", "Batch", "Trainer", "build_trainer", "merge_seed"]

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

    @property
    def learning_rate(self) -> float:
        """The optimizer's learning rate (settable: the schedule halves it)."""
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

"""The Gumbel Tree-LSTM for ListOps in TensorFlow: Keras layers driven by ``tf.function``.

The loops are ``tf.while_loop``\\ s over a padded width ``W``; the batch dimension is dynamic in
the traced signature, so one graph serves every batch of a width. As in the JAX version the
sequence keeps its width: every step composes all ``W − 1`` adjacent pairs, masks the candidates
past each row's remaining length with ``-inf`` and re-pads. See :mod:`reinmax.tasks.listops`
for the model and the shared training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from reinmax.tasks.keras_radam import RAdam
from reinmax.tasks.listops import model as listops
from reinmax.tasks.listops.model import ModelConfig, TrainConfig, merge_nodes, tree_lstm_cell

__all__ = ["Trainer", "TreeLSTMClassifier"]


class TreeLSTMClassifier(keras.Model):
    """Embeddings, a leaf LSTM, Tree-LSTM merges chosen by ``select``, and an MLP on the root.

    ``call(ids, lengths, select=None)`` returns class logits ``[B, n_classes]`` and merge
    positions ``[B, W − 1]``; ``select(scores, t) -> one-hot`` picks the merge of step ``t``, and
    ``None`` merges greedily. The layers are built on construction.
    """

    def __init__(self, config: ModelConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_dim = config.hidden_dim
        self.embedding = keras.layers.Embedding(config.vocab_size, config.word_dim)
        self.leaf = keras.layers.LSTMCell(config.hidden_dim)
        self.compose = keras.layers.Dense(5 * config.hidden_dim)
        self.hidden = keras.layers.Dense(config.clf_hidden_dim, activation="relu")
        self.output_layer = keras.layers.Dense(config.n_classes)
        self.embedding.build((None, None))
        self.leaf.build((None, config.word_dim))
        self.compose.build((None, 2 * config.hidden_dim))
        self.hidden.build((None, config.hidden_dim))
        self.output_layer.build((None, config.clf_hidden_dim))
        self.query = self.add_weight(shape=(config.hidden_dim,), initializer="zeros", name="query")

    def _leaves(self, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = self.embedding(ids)
        batch, width = tf.shape(ids)[0], tf.shape(ids)[1]
        zeros = tf.zeros([batch, self.hidden_dim], x.dtype)

        def body(t: tf.Tensor, h: tf.Tensor, c: tf.Tensor, hs: tf.TensorArray, cs: tf.TensorArray):
            _, (h, c) = self.leaf(x[:, t], [h, c])
            return t + 1, h, c, hs.write(t, h), cs.write(t, c)

        arrays = (tf.TensorArray(x.dtype, size=width), tf.TensorArray(x.dtype, size=width))
        *_, hs, cs = tf.while_loop(
            lambda t, *_: t < width, body, (tf.constant(0), zeros, zeros, *arrays)
        )
        # The stacked arrays lose the static width, which the estimators need.
        shape = [None, ids.shape[1], self.hidden_dim]
        h, c = tf.transpose(hs.stack(), [1, 0, 2]), tf.transpose(cs.stack(), [1, 0, 2])
        return tf.ensure_shape(h, shape), tf.ensure_shape(c, shape)

    def call(
        self,
        ids: tf.Tensor,
        lengths: tf.Tensor,
        select: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        h, c = self._leaves(ids)
        candidates = ids.shape[1] - 1

        def body(step: tf.Tensor, h: tf.Tensor, c: tf.Tensor, merges: tf.TensorArray):
            gates = self.compose(tf.concat([h[:, :-1], h[:, 1:]], axis=-1))
            new_h, new_c = tree_lstm_cell(tf.split(gates, 5, axis=-1), c, tf.sigmoid, tf.tanh)
            scores = tf.linalg.matvec(new_h, self.query)
            valid = tf.range(candidates)[None, :] < (lengths - 1 - step)[:, None]
            scores = tf.where(valid, scores, tf.constant(-math.inf, scores.dtype))
            if select is None:
                choice = tf.one_hot(tf.argmax(scores, -1), candidates, dtype=h.dtype)
                choice = choice * tf.cast(tf.reduce_any(valid, -1, keepdims=True), h.dtype)
            else:
                choice = select(scores, step)
            merged = merge_nodes(choice, tf.cumsum(choice, -1), (h, c), (new_h, new_c))
            # Re-pad with the last column: it is past every row's length, so never a candidate.
            h, c = (tf.concat([m, x[:, -1:]], 1) for m, x in zip(merged, (h, c), strict=True))
            return step + 1, h, c, merges.write(step, tf.argmax(choice, -1, output_type=tf.int32))

        merges = tf.TensorArray(tf.int32, size=candidates, element_shape=[None])
        _, h, _, merges = tf.while_loop(
            lambda step, *_: step < candidates, body, (tf.constant(0), h, c, merges)
        )
        logits = self.output_layer(self.hidden(h[:, 0]))
        return logits, tf.transpose(merges.stack(), [1, 0])


def _canonical_variables(model: TreeLSTMClassifier) -> dict[str, Any]:
    """The model's variables by canonical name; Keras stores kernels as ``[in, out]`` and LSTM
    gates in (input, forget, cell, output) order, the canonical layout itself."""
    return {
        "embedding": model.embedding.embeddings,
        "leaf_kernel": model.leaf.kernel,
        "leaf_recurrent_kernel": model.leaf.recurrent_kernel,
        "leaf_bias": model.leaf.bias,
        "compose_kernel": model.compose.kernel,
        "compose_bias": model.compose.bias,
        "query": model.query,
        "hidden_kernel": model.hidden.kernel,
        "hidden_bias": model.hidden.bias,
        "output_kernel": model.output_layer.kernel,
        "output_bias": model.output_layer.bias,
    }


class Trainer(listops.Trainer):
    """Training and greedy evaluation of :class:`TreeLSTMClassifier` with :class:`RAdam` (see
    :class:`reinmax.tasks.listops.model.Trainer`). One traced graph per function and shape:
    the step and the row of the noise are tensors of the signature."""

    def _build(
        self, model_config: ModelConfig, weights: dict[str, np.ndarray], config: TrainConfig
    ) -> None:
        self.model = TreeLSTMClassifier(model_config)
        self._variables = _canonical_variables(self.model)
        self._names = list(self._variables)
        self._trainable = [self._variables[name] for name in self._names]
        for name, value in weights.items():
            self._variables[name].assign(value)
        self.optimizer = RAdam(learning_rate=config.lr, global_clipnorm=config.clip)
        self.optimizer.build(self._trainable)

        def loss_and_gradients(ids, lengths, labels, step, row):
            with tf.GradientTape() as tape:
                logits, _ = self.model(ids, lengths, select=self.sampler(step, row))
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
                )
            accuracy = tf.reduce_mean(
                tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
            )
            # The embedding's gradient arrives as IndexedSlices; convert_to_tensor densifies it,
            # so that every gradient has the shape of its variable whatever the batch.
            gradients = tape.gradient(loss, self._trainable)
            return loss, accuracy, [tf.convert_to_tensor(gradient) for gradient in gradients]

        def predict(ids, lengths):
            return self.model(ids, lengths)

        def apply(gradients: list[tf.Tensor]) -> None:
            self.optimizer.apply_gradients(zip(gradients, self._trainable))

        # A training step runs the gradients' graph, then the optimizer's (traced once).
        self._functions = {"gradients": loss_and_gradients, "predict": predict}
        self._graphs: dict[tuple[str, int | None, int], Callable] = {}
        self._apply = tf.function(apply, autograph=False)

    def _graph(self, kind: str, batch: int | None, width: int) -> Callable:
        """The traced function ``kind`` for ``[batch, width]`` token ids (``None``: any batch).

        The width is static because ``reinmax`` needs the category axis's size when tracing, and
        so is the batch of a training function: the portable noise needs its number of rows.
        One graph per padded width (a handful, see :func:`reinmax.tasks.listops.pad_width`) and
        training batch size (the last batch of an epoch may be smaller).
        """
        graph = self._graphs.get((kind, batch, width))
        if graph is None:
            rows = tf.TensorSpec([batch], tf.int32)
            scalar = tf.TensorSpec([], tf.int32)
            signature = [tf.TensorSpec([batch, width], tf.int32), rows, rows, scalar, scalar]
            if kind == "predict":
                signature = signature[:2]
            # The loops are tf.while_loops already: autograph would only slow the tracing.
            graph = tf.function(self._functions[kind], input_signature=signature, autograph=False)
            self._graphs[(kind, batch, width)] = graph
        return graph

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate.numpy())

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate = value

    @staticmethod
    def _integers(array: np.ndarray) -> tf.Tensor:
        return tf.constant(array, tf.int32)

    def _train_step(self, *inputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss, accuracy, gradients = self._graph("gradients", *inputs[0].shape)(*inputs)
        self._apply(gradients)
        return loss, accuracy

    def _loss_and_gradients(self, *inputs: tf.Tensor) -> tuple[tf.Tensor, dict]:
        loss, _, gradients = self._graph("gradients", *inputs[0].shape)(*inputs)
        return loss, {
            name: gradient.numpy() for name, gradient in zip(self._names, gradients, strict=True)
        }

    def predict(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        graph = self._graph("predict", None, ids.shape[1])
        logits, merges = graph(self._integers(ids), self._integers(lengths))
        return logits.numpy(), merges.numpy()

    def weights(self) -> dict[str, np.ndarray]:
        return {name: variable.numpy().copy() for name, variable in self._variables.items()}

    def state(self) -> dict[str, Any]:
        return {
            "weights": self.weights(),
            "optimizer": [variable.numpy().copy() for variable in self.optimizer.variables],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for name, value in state["weights"].items():
            self._variables[name].assign(value)
        for variable, value in zip(self.optimizer.variables, state["optimizer"], strict=True):
            variable.assign(value)

"""The Gumbel Tree-LSTM for ListOps in JAX: a flax.linen module trained with optax, under jit.

XLA wants static shapes, so the sequence never shrinks: every merge step composes all ``W − 1``
adjacent pairs of the padded width ``W``, masks the candidates past each row's remaining length
with ``-inf``, and re-pads the merged sequence to ``W``; the steps are an ``nn.scan``. A row that
is finished sees only ``-inf`` scores, for which the estimators return an all-zero choice, and
so keeps its root. See :mod:`reinmax.tasks.listops` for the model and the shared training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from reinmax.tasks.listops import model as listops
from reinmax.tasks.listops.model import ModelConfig, TrainConfig, merge_nodes, tree_lstm_cell

__all__ = ["Trainer", "TreeLSTMClassifier"]

_GATES = ("i", "f", "g", "o")


class _LeafCell(nn.Module):
    """An LSTM step that also emits its cell state: the leaves need both ``c`` and ``h``."""

    features: int

    @nn.compact
    def __call__(self, carry: tuple, x: jax.Array) -> tuple[tuple, tuple]:
        carry, _ = nn.LSTMCell(self.features, name="lstm")(carry, x)
        return carry, carry


class _MergeStep(nn.Module):
    """One merge over the padded width: compose, score, choose, combine."""

    hidden_dim: int
    select: Callable[[jax.Array, jax.Array], jax.Array] | None

    @nn.compact
    def __call__(self, carry: tuple, step: jax.Array) -> tuple[tuple, jax.Array]:
        h, c, lengths = carry
        gates = nn.Dense(5 * self.hidden_dim, name="compose")(
            jnp.concatenate([h[:, :-1], h[:, 1:]], axis=-1)
        )
        new_h, new_c = tree_lstm_cell(jnp.split(gates, 5, axis=-1), c, nn.sigmoid, jnp.tanh)
        query = self.param("query", nn.initializers.normal(0.01), (self.hidden_dim,))
        scores = new_h @ query
        valid = jnp.arange(scores.shape[-1]) < (lengths - 1 - step)[:, None]
        scores = jnp.where(valid, scores, -jnp.inf)
        if self.select is None:
            choice = jax.nn.one_hot(jnp.argmax(scores, -1), scores.shape[-1], dtype=h.dtype)
            choice = choice * jnp.any(valid, -1, keepdims=True)
        else:
            choice = self.select(scores, step)
        merged = merge_nodes(choice, jnp.cumsum(choice, -1), (h, c), (new_h, new_c))
        # Re-pad with the last column: it is past every row's length, so never a candidate.
        h, c = (jnp.concatenate([m, x[:, -1:]], 1) for m, x in zip(merged, (h, c), strict=True))
        return (h, c, lengths), jnp.argmax(choice, -1)


class TreeLSTMClassifier(nn.Module):
    """Embeddings, a leaf LSTM, Tree-LSTM merges chosen by ``select``, and an MLP on the root.

    ``select(scores, t) -> one-hot`` at merge step ``t``; ``None`` merges greedily.
    ``__call__(ids, lengths)`` returns class logits ``[B, n_classes]`` and merge positions
    ``[B, W − 1]``.
    """

    config: ModelConfig
    select: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    @nn.compact
    def __call__(self, ids: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        config = self.config
        x = nn.Embed(config.vocab_size, config.word_dim, name="embedding")(ids)
        scan = nn.scan(
            _LeafCell,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )
        zeros = jnp.zeros((ids.shape[0], config.hidden_dim), x.dtype)
        _, (c, h) = scan(config.hidden_dim, name="leaf")((zeros, zeros), x)
        merge = nn.scan(_MergeStep, variable_broadcast="params", split_rngs={"params": False})
        steps = jnp.arange(ids.shape[1] - 1, dtype=jnp.int32)
        (h, _, _), merges = merge(config.hidden_dim, self.select, name="merge")(
            (h, c, lengths), steps
        )
        hidden = nn.relu(nn.Dense(config.clf_hidden_dim, name="hidden")(h[:, 0]))
        return nn.Dense(config.n_classes, name="output")(hidden), merges.T


def to_flax(weights: dict[str, np.ndarray]) -> dict[str, Any]:
    """Canonical weights (see :func:`reinmax.tasks.listops.init_weights`) as the module's params
    tree."""
    split = {
        name: np.split(weights[name], 4, axis=-1)
        for name in ("leaf_kernel", "leaf_recurrent_kernel", "leaf_bias")
    }
    lstm: dict[str, Any] = {}
    for index, gate in enumerate(_GATES):
        lstm[f"i{gate}"] = {"kernel": split["leaf_kernel"][index]}
        lstm[f"h{gate}"] = {
            "kernel": split["leaf_recurrent_kernel"][index],
            "bias": split["leaf_bias"][index],
        }
    params = {
        "embedding": {"embedding": weights["embedding"]},
        "leaf": {"lstm": lstm},
        "merge": {
            "compose": {"kernel": weights["compose_kernel"], "bias": weights["compose_bias"]},
            "query": weights["query"],
        },
        "hidden": {"kernel": weights["hidden_kernel"], "bias": weights["hidden_bias"]},
        "output": {"kernel": weights["output_kernel"], "bias": weights["output_bias"]},
    }
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)


def from_flax(params: dict[str, Any]) -> dict[str, np.ndarray]:
    """The module's params tree (or a gradient of the same structure) in the canonical layout."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a).copy(), params)
    lstm = p["leaf"]["lstm"]
    return {
        "embedding": p["embedding"]["embedding"],
        "leaf_kernel": np.concatenate([lstm[f"i{g}"]["kernel"] for g in _GATES], -1),
        "leaf_recurrent_kernel": np.concatenate([lstm[f"h{g}"]["kernel"] for g in _GATES], -1),
        "leaf_bias": np.concatenate([lstm[f"h{g}"]["bias"] for g in _GATES], -1),
        "compose_kernel": p["merge"]["compose"]["kernel"],
        "compose_bias": p["merge"]["compose"]["bias"],
        "query": p["merge"]["query"],
        "hidden_kernel": p["hidden"]["kernel"],
        "hidden_bias": p["hidden"]["bias"],
        "output_kernel": p["output"]["kernel"],
        "output_bias": p["output"]["bias"],
    }


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class Trainer(listops.Trainer):
    """Training and greedy evaluation of :class:`TreeLSTMClassifier` with optax RAdam, under
    ``jit`` (see :class:`reinmax.tasks.listops.model.Trainer`). Programs are compiled once per
    batch shape: the step and the row of the noise are traced."""

    def _build(
        self, model_config: ModelConfig, weights: dict[str, np.ndarray], config: TrainConfig
    ) -> None:
        self.params = to_flax(weights)
        greedy_model = TreeLSTMClassifier(model_config)
        self.optimizer = optax.inject_hyperparams(
            lambda learning_rate: optax.chain(
                optax.clip_by_global_norm(config.clip), optax.radam(learning_rate)
            ),
            hyperparam_dtype=jnp.float32,
        )(learning_rate=config.lr)
        self.opt_state = self.optimizer.init(self.params)

        def loss_fn(params: Any, ids, lengths, labels, step, row):
            model = TreeLSTMClassifier(model_config, self.sampler(step, row))
            logits, _ = model.apply({"params": params}, ids, lengths)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

        def update(params: Any, opt_state: Any, grads: Any):
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        def predict(params: Any, ids: jax.Array, lengths: jax.Array):
            return greedy_model.apply({"params": params}, ids, lengths)

        # A training step runs the gradients' program, then the optimizer's (compiled once).
        self._gradients = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        self._update = jax.jit(update, donate_argnums=(0, 1))
        self._predict = jax.jit(predict)

    @property
    def learning_rate(self) -> float:
        return float(self.opt_state.hyperparams["learning_rate"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.opt_state.hyperparams["learning_rate"] = jnp.asarray(value, jnp.float32)

    @staticmethod
    def _integers(array: np.ndarray) -> jax.Array:
        return jnp.asarray(array, jnp.int32)

    def _train_step(self, *inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        (loss, accuracy), grads = self._gradients(self.params, *inputs)
        self.params, self.opt_state = self._update(self.params, self.opt_state, grads)
        return loss, accuracy

    def _loss_and_gradients(self, *inputs: jax.Array) -> tuple[jax.Array, dict]:
        (loss, _), grads = self._gradients(self.params, *inputs)
        return loss, from_flax(grads)

    def predict(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Rounding the batch up to a power of two bounds the number of compiled programs; the
        # extra rows have length 1 and are dropped.
        batch = ids.shape[0]
        rows = _next_power_of_two(batch)
        padded_ids = np.zeros((rows, ids.shape[1]), np.int32)
        padded_ids[:batch] = ids
        padded_lengths = np.ones(rows, np.int32)
        padded_lengths[:batch] = lengths
        logits, merges = self._predict(self.params, padded_ids, padded_lengths)
        return np.asarray(logits)[:batch], np.asarray(merges)[:batch]

    def weights(self) -> dict[str, np.ndarray]:
        return from_flax(self.params)

    def state(self) -> dict[str, Any]:
        leaves = jax.tree_util.tree_leaves(self.opt_state)
        return {"weights": self.weights(), "optimizer": [np.asarray(x).copy() for x in leaves]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.params = to_flax(state["weights"])
        treedef = jax.tree_util.tree_structure(self.optimizer.init(self.params))
        leaves = [jnp.asarray(x) for x in state["optimizer"]]
        self.opt_state = jax.tree_util.tree_unflatten(treedef, leaves)

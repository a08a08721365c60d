"""The Gumbel Tree-LSTM for ListOps in PyTorch: an ``nn.Module`` run eagerly.

PyTorch handles ragged work eagerly, so the batch is trimmed to its longest expression and the
sequence shrinks by one node per merge, as in Choi et al.'s own code; the merge noise of a step
is drawn in one call (:meth:`Trainer.step_sampler`). See :mod:`reinmax.tasks.listops` for the
model and the shared training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch
from torch import nn

from reinmax import estimate
from reinmax.noise import estimator_noise
from reinmax.tasks.listops import model as listops
from reinmax.tasks.listops.model import ModelConfig, TrainConfig, merge_nodes, tree_lstm_cell

__all__ = ["Trainer", "TreeLSTMClassifier"]


class TreeLSTMClassifier(nn.Module):
    """Embeddings, a leaf LSTM, Tree-LSTM merges chosen by an estimator, and an MLP on the root."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.hidden_dim = config.hidden_dim
        self.embedding = nn.Embedding(config.vocab_size, config.word_dim, padding_idx=0)
        self.leaf = nn.LSTMCell(config.word_dim, config.hidden_dim)
        self.compose = nn.Linear(2 * config.hidden_dim, 5 * config.hidden_dim)
        self.query = nn.Parameter(torch.zeros(config.hidden_dim))
        self.classifier = nn.Sequential(
            nn.Linear(config.hidden_dim, config.clf_hidden_dim),
            nn.ReLU(),
            nn.Linear(config.clf_hidden_dim, config.n_classes),
        )

    def _compose(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Tree-LSTM cell on every adjacent pair of nodes: ``[B, L, H] -> [B, L - 1, H]``."""
        gates = self.compose(torch.cat([h[:, :-1], h[:, 1:]], dim=-1))
        return tree_lstm_cell(gates.chunk(5, dim=-1), c, torch.sigmoid, torch.tanh)

    def forward(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        select: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[B, n_classes]`` and merge positions ``[B, T - 1]``.

        ``select(scores, t)`` returns the one-hot choice of merge step ``t`` among the masked
        ``[B, L - 1]`` scores; ``None`` merges greedily (argmax).
        """
        x = self.embedding(ids)
        batch, width = ids.shape
        state = (x.new_zeros(batch, self.hidden_dim), x.new_zeros(batch, self.hidden_dim))
        hs, cs = [], []
        for t in range(width):
            state = self.leaf(x[:, t], state)
            hs.append(state[0])
            cs.append(state[1])
        h, c = torch.stack(hs, dim=1), torch.stack(cs, dim=1)
        merges = []
        for step in range(width - 1):
            new_h, new_c = self._compose(h, c)
            scores = new_h @ self.query
            positions = torch.arange(width - 1 - step, device=ids.device)
            valid = positions < (lengths - 1 - step)[:, None]
            scores = scores.masked_fill(~valid, -torch.inf)
            if select is None:
                # A finished row (nothing valid) merges nothing, like the estimators' empty row.
                choice = nn.functional.one_hot(scores.argmax(-1), width - 1 - step)
                choice = choice.to(h.dtype) * valid.any(-1, keepdim=True)
            else:
                choice = select(scores, step)
            merges.append(choice.argmax(-1))
            h, c = merge_nodes(choice, choice.cumsum(-1), (h, c), (new_h, new_c))
        merge_positions = (
            torch.stack(merges, dim=1) if merges else ids.new_zeros(batch, 0, dtype=torch.int64)
        )
        return self.classifier(h[:, 0]), merge_positions


# Canonical name -> (module attribute path, transposed): torch's Linear and LSTMCell store
# [out, in] kernels; LSTMCell's two biases are summed, so the recurrent one is kept at zero.
_LAYOUT = {
    "embedding": ("embedding.weight", False),
    "leaf_kernel": ("leaf.weight_ih", True),
    "leaf_recurrent_kernel": ("leaf.weight_hh", True),
    "leaf_bias": ("leaf.bias_ih", False),
    "compose_kernel": ("compose.weight", True),
    "compose_bias": ("compose.bias", False),
    "query": ("query", False),
    "hidden_kernel": ("classifier.0.weight", True),
    "hidden_bias": ("classifier.0.bias", False),
    "output_kernel": ("classifier.2.weight", True),
    "output_bias": ("classifier.2.bias", False),
}


class Trainer(listops.Trainer):
    """Training and greedy evaluation of :class:`TreeLSTMClassifier` with RAdam, eagerly (see
    :class:`reinmax.tasks.listops.model.Trainer`)."""

    def _build(
        self, model_config: ModelConfig, weights: dict[str, np.ndarray], config: TrainConfig
    ) -> None:
        self.model = TreeLSTMClassifier(model_config)
        self._parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            self._parameters["leaf.bias_hh"].zero_()
        self._load_weights(weights)
        # The recurrent bias duplicates leaf_bias; freezing it keeps the canonical layout exact.
        self._parameters["leaf.bias_hh"].requires_grad_(False)
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.RAdam(self._trainable, lr=config.lr)
        self.clip = config.clip

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    @staticmethod
    def _integers(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array, np.int64))

    def step_sampler(
        self, step: Any, row: Any, batch: int, merges: int, width: int
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """:meth:`sampler` for ``merges`` merge steps of ``batch`` examples padded to ``width``,
        for the shrinking sequence: the same noise, drawn for the whole step in one call (eager
        torch pays a fixed cost per draw, several estimator calls' worth), and the estimator
        sees the ``width − 1`` candidates of the padded width, as the static backends do
        (Gumbel-Rao's noise layout depends on their number)."""
        rows = slice(int(row), int(row) + batch)
        seed = listops.merge_seed(self.seed, step, 0, 0, self.batch_size)
        core_shape = (max(merges, 1), self.batch_size, width - 1)
        block = estimator_noise(self.estimator, core_shape, seed, torch.float32, xp=xp)
        # Merge step t's noise: the batch axes (t, rows), then the category axis if it has one.
        categories = (slice(None),) if self.estimator.per_category else ()

        def select(scores: torch.Tensor, t: int) -> torch.Tensor:
            n = scores.shape[-1]
            padded = nn.functional.pad(scores, (0, width - 1 - n), value=-math.inf)
            noise = block[(..., t, rows, *categories)]
            return estimate(self.estimator, padded, self.tau, noise=noise)[0][:, :n]

        return select

    def _loss(
        self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, step, row
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length = int(lengths.max())
        select = self.step_sampler(step, row, len(ids), length - 1, ids.shape[1])
        logits, _ = self.model(ids[:, :length], lengths, select)
        loss = nn.functional.cross_entropy(logits, labels)
        accuracy = (logits.argmax(-1) == labels).to(torch.float32).mean()
        return loss, accuracy

    def _train_step(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.train()
        loss, accuracy = self._loss(*inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self._trainable, self.clip)
        self.optimizer.step()
        return loss.detach(), accuracy

    def _loss_and_gradients(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        self.model.zero_grad(set_to_none=True)
        loss, _ = self._loss(*inputs)
        loss.backward()
        gradients = self._canonical(lambda parameter: parameter.grad)
        self.model.zero_grad(set_to_none=True)
        return loss.detach(), gradients

    @torch.no_grad()
    def predict(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        width = ids.shape[1]
        length = int(lengths.max())
        logits, merges = self.model(self._integers(ids[:, :length]), self._integers(lengths))
        # Report merges at the padded width the caller asked for, like the static backends.
        padded = np.zeros((ids.shape[0], max(width - 1, 0)), np.int64)
        padded[:, : merges.shape[1]] = merges.numpy()
        return logits.numpy(), padded

    def weights(self) -> dict[str, np.ndarray]:
        return self._canonical(lambda parameter: parameter.detach())

    def _canonical(
        self, tensor: Callable[[torch.Tensor], torch.Tensor | None]
    ) -> dict[str, np.ndarray]:
        """``tensor(parameter)`` of every parameter, as NumPy in the canonical layout (a
        ``RuntimeError`` where it is None: a parameter that got no gradient)."""
        result = {}
        for name, (path, transposed) in _LAYOUT.items():
            found = tensor(self._parameters[path])
            if found is None:
                raise RuntimeError(f"parameter {path} ({name}) has no gradient")
            value = found.numpy()
            result[name] = (value.T if transposed else value).copy()
        return result

    def _load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy canonical-layout ``weights`` into the parameters."""
        with torch.no_grad():
            for name, value in weights.items():
                path, transposed = _LAYOUT[name]
                array = value.T if transposed else value
                self._parameters[path].copy_(torch.from_numpy(np.ascontiguousarray(array)))

    def state(self) -> dict[str, Any]:
        return {"weights": self.weights(), "optimizer": _to_numpy(self.optimizer.state_dict())}

    def load_state(self, state: dict[str, Any]) -> None:
        self._load_weights(state["weights"])
        self.optimizer.load_state_dict(_to_torch(state["optimizer"]))


def _to_numpy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().numpy().copy()
    if isinstance(obj, dict):
        return {key: _to_numpy(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_to_numpy(value) for value in obj]
    return obj


def _to_torch(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        return {key: _to_torch(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_to_torch(value) for value in obj]
    return obj

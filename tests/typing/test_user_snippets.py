"""What a user's type checker sees: each snippet is code a user writes, with its types asserted.

mypy checks this file (``.ci/typecheck``): ``assert_type`` fails the check when a revealed type
differs. Run by pytest too, where ``assert_type`` is a no-op and the calls must simply work.
"""

from __future__ import annotations

from typing import assert_type

import torch  # torch before tensorflow in one process

# isort: split
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

import reinmax
from reinmax.backends import jax as rj
from reinmax.backends import numpy as rnp
from reinmax.backends import tensorflow as rtf
from reinmax.backends import torch as rt
from reinmax.noise import Gumbel, Seed


def test_numpy_snippets() -> None:
    logits: np.ndarray = np.zeros((4, 3))
    hard, soft = reinmax.reinmax(logits, rng=0)
    assert_type(hard, np.ndarray)
    assert_type(soft, np.ndarray)
    hard, soft = rnp.reinmax(logits, rng=0)
    hard, soft, index = reinmax.gumbel_softmax(logits, 0.5, rng=Seed(1, 2), return_index=True)
    assert_type(index, np.ndarray)
    assert_type(rnp.gumbel_rao(logits, 1.0, rng=0, k=4), tuple[np.ndarray, np.ndarray])
    assert_type(rnp.reinmax_cv(logits, rng=0, k=2, eta=0.6), tuple[np.ndarray, np.ndarray])
    assert_type(rnp.gapped_straight_through(logits, rng=0, gap="p")[0], np.ndarray)
    assert_type(reinmax.zgr(logits, noise=Gumbel(np.zeros((4, 3))))[1], np.ndarray)
    surrogate = reinmax.reinforce(logits, hard, np.ones(4))
    assert_type(surrogate, np.ndarray)
    binary: np.ndarray = np.zeros(5)
    z, p = reinmax.bernoulli(binary, rng=0)
    assert_type(z, np.ndarray)
    assert_type(p, np.ndarray)
    estimator = reinmax.REGISTRY["reinmax"]()
    assert_type(reinmax.estimate(estimator, logits, rng=0), tuple[np.ndarray, np.ndarray])


def test_torch_snippets() -> None:
    logits = torch.zeros(4, 3, requires_grad=True)
    hard, soft = reinmax.reinmax(logits, 1.3, rng=0)
    assert_type(hard, torch.Tensor)
    hard, soft, index = rt.straight_through(logits, rng=0, return_index=True)
    assert_type(soft, torch.Tensor)
    assert_type(index, torch.Tensor)
    assert_type(rt.reinmax_rao(logits, rng=0, k=2), tuple[torch.Tensor, torch.Tensor])


def test_jax_snippets() -> None:
    logits: jax.Array = jnp.zeros((4, 3))
    hard, soft = rj.reinmax(logits, rng=jax.random.key(0))
    assert_type(hard, jax.Array)
    assert_type(soft, jax.Array)
    assert_type(reinmax.gumbel_softmax(logits, rng=0, hard=False), tuple[jax.Array, jax.Array])


def test_tensorflow_snippets() -> None:
    logits: tf.Tensor = tf.zeros((4, 3))
    hard, soft = rtf.reinmax(logits, rng=0)
    assert_type(hard, tf.Tensor)
    assert_type(soft, tf.Tensor)

"""A Keras 3 layer: any estimator of the registry as a layer, under every Keras backend.

``CategoricalSampler`` samples a one-hot ``D ~ Cat(softmax(logits))`` along ``axis`` with the
estimator's backward rule, and works unchanged under ``KERAS_BACKEND=tensorflow``, ``jax`` and
``torch``, in functional and subclassed models::

    import keras
    from reinmax.keras import CategoricalSampler

    inputs = keras.Input((16,))
    logits = keras.layers.Reshape((4, 8))(keras.layers.Dense(32)(inputs))
    sample = CategoricalSampler("reinmax", tau=1.3, seed=0)(logits)      # (batch, 4, 8), one-hot

The noise is the library's portable noise (:mod:`reinmax.noise`): the layer's ``seed`` is the key
and a ``keras.random.SeedGenerator`` counts the calls, so the same seed draws the same samples on
all three Keras backends, and the counter is part of the layer's state (saved with the model).
Importing this module imports Keras; ``import reinmax`` does not.
"""

from __future__ import annotations

import secrets
from typing import Any

import keras

import reinmax
from reinmax.core import REGISTRY
from reinmax.noise import Seed

__all__ = ["CategoricalSampler"]


@keras.saving.register_keras_serializable(package="reinmax")
class CategoricalSampler(keras.layers.Layer):
    """A categorical sample with a gradient estimator's backward rule, as a Keras layer.

    Args:
        estimator: a registered estimator (``reinmax.REGISTRY``): ``"reinmax"``,
            ``"straight_through"``, ``"gumbel_softmax"``, ``"gumbel_rao"``, ...
        tau: the estimator's temperature (a number > 0).
        axis: the category axis of the logits.
        seed: the key of the layer's portable noise (an integer in ``[0, 2**32)``); None draws
            one at construction (and the config records it).
        return_soft: also return ``soft = softmax(logits)``: the layer then returns
            ``(hard, soft)``.
        **kwargs: the estimator's options (``k`` for Gumbel-Rao, ``gap`` for GST, ...), then the
            usual Layer arguments (``name``, ``dtype``, ...).

    Returns ``hard`` (the exact one-hot sample, in the logits' dtype), or ``(hard, soft)``.
    """

    def __init__(
        self,
        estimator: str = "reinmax",
        tau: float = 1.0,
        axis: int = -1,
        seed: int | None = None,
        return_soft: bool = False,
        **kwargs: Any,
    ) -> None:
        registration = REGISTRY.get(estimator)
        if registration is None:
            raise ValueError(f"estimator must be one of {', '.join(REGISTRY)}, got {estimator!r}")
        names = {option.name for option in registration.options}
        options = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        registration(**options)  # bad options are refused here, not at the first call
        super().__init__(**kwargs)
        if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0):
            raise ValueError(f"tau must be a number > 0, got {tau!r}")
        if seed is None:
            seed = secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
        self.estimator, self.tau, self.axis, self.seed = estimator, float(tau), axis, seed
        self.return_soft, self.options = bool(return_soft), options
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, logits: Any) -> Any:
        # The generator's state is [seed, calls so far]: the count is the stream, so every call
        # draws fresh noise, under jit too (it is a traced value there).
        count = self.seed_generator.next()[1]
        function = getattr(reinmax, self.estimator)
        hard, soft = function(
            logits, self.tau, axis=self.axis, rng=Seed(self.seed, count), **self.options
        )
        return (hard, soft) if self.return_soft else hard

    def compute_output_spec(self, logits: Any) -> Any:
        spec = keras.KerasTensor(logits.shape, dtype=logits.dtype)
        soft = keras.KerasTensor(logits.shape, dtype=logits.dtype)
        return (spec, soft) if self.return_soft else spec

    # The noise counter is state: a saved model goes on with the noise it would have drawn.
    def save_own_variables(self, store: Any) -> None:
        store["seed_generator_state"] = keras.ops.convert_to_numpy(self.seed_generator.state.value)

    def load_own_variables(self, store: Any) -> None:
        if "seed_generator_state" in store:
            self.seed_generator.state.assign(store["seed_generator_state"])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "estimator": self.estimator,
            "tau": self.tau,
            "axis": self.axis,
            "seed": self.seed,
            "return_soft": self.return_soft,
            **self.options,
        }

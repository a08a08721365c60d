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
Importing this module imports Keras; ``import reinmax`` does not. ``docs/keras.md`` is the guide.
"""

from __future__ import annotations

import inspect
import math
import numbers
import secrets
from collections.abc import Callable
from typing import Any, TypeAlias, cast

import keras

import reinmax
from reinmax.api import resolve_estimator
from reinmax.core import REGISTRY, is_bool
from reinmax.noise import Seed

__all__ = ["CategoricalSampler"]

Schedule: TypeAlias = "keras.optimizers.schedules.LearningRateSchedule | Callable[[Any], Any]"
"""A temperature that changes with training: ``schedule(step) -> τ``."""

# The keywords keras.layers.Layer takes (name, dtype, trainable, ...; input_shape and input_dim
# are read from its **kwargs): every other keyword is an option of the estimator.
_LAYER_KEYWORDS = frozenset(
    name
    for name, parameter in inspect.signature(keras.layers.Layer.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
) | {"input_shape", "input_dim"}


def _is_number(value: object) -> bool:
    """A Python or NumPy real number, not a bool."""
    return isinstance(value, numbers.Real) and not is_bool(value)


def _checked_tau(tau: object) -> float:
    if not _is_number(tau):
        raise TypeError(
            f"tau must be a number > 0, a keras.Variable or a schedule, got {type(tau).__name__}"
        )
    value = float(cast(float, tau))  # a number: checked above
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"tau must be a number > 0, got {tau!r}")
    return value


def _value(variable: keras.Variable) -> float:
    """A variable's value as the shortest float that its dtype reads back the same (0.001, not
    float32's 0.0010000000474974513), so that a config holds the number that was assigned."""
    return float(str(keras.ops.convert_to_numpy(variable.value)[()]))


def _default_tau(estimator: str) -> float:
    """The temperature a call of the estimator without one gets (1.3 for the ReinMax family)."""
    return REGISTRY[estimator].default_tau


@keras.saving.register_keras_serializable(package="reinmax")
class CategoricalSampler(keras.layers.Layer):
    """A categorical sample with a gradient estimator's backward rule, as a Keras layer.

    In training (``training=True``, as ``fit`` calls it) the layer draws ``D ~ Cat(softmax(x))``
    along ``axis`` and returns the exact one-hot ``D``, whose gradient is the estimator's. At
    inference (``training=False``: ``predict``, ``evaluate``, a plain call) it returns the
    one-hot of ``argmax(x)``, the mode, and draws nothing, unless ``sample_at_inference=True``.

    The temperature lives in a non-trainable variable that the compiled train step reads, so
    ``layer.tau = 0.5`` between two ``fit`` calls, or in a callback's ``on_epoch_begin``, takes
    effect under every backend and ``jit_compile``; ``get_config()`` reports the current value.
    A schedule is evaluated at the layer's ``step``: the number of training calls so far
    (``optimizer.iterations`` when the layer runs once per train step), saved with the model.

    Args:
        estimator: a registered estimator (``reinmax.REGISTRY``): ``"reinmax"``,
            ``"straight_through"``, ``"gumbel_softmax"``, ``"gumbel_rao"``, ...
        tau: the estimator's temperature: a number > 0; a non-trainable scalar
            ``keras.Variable`` (read at every call: assign it to change τ); or a schedule, a
            ``keras.optimizers.schedules.LearningRateSchedule`` or any callable
            ``schedule(step) -> τ`` written with ``keras.ops``. None: the estimator's default.
        axis: the category axis of the logits.
        seed: the key of the layer's portable noise (an integer in ``[0, 2**31)``); None draws
            one at construction (and the config records it).
        return_soft: also return ``soft = softmax(logits)``: the layer then returns
            ``(hard, soft)``.
        sample_at_inference: sample at inference too (``training=False``) instead of returning
            the mode.
        temperature: another name of ``tau`` (pass one of the two).
        **kwargs: the estimator's options (``k`` for Gumbel-Rao, ``gap`` for GST, ``unimix``,
            ``hard``, ...) and the usual Layer arguments (``name``, ``dtype``, ``trainable``).

    Calling the layer on logits returns ``hard`` (one-hot, in the logits' dtype), or
    ``(hard, soft)``.

    Raises:
        ValueError: an unknown estimator, a bad value of one of its options, a τ that is not
            > 0, a trainable or non-scalar ``tau`` variable, or a bad seed.
        TypeError: an option the estimator does not have, a ``tau`` of none of the three
            kinds, both ``tau`` and ``temperature``, or a new ``tau`` of another kind than the
            one the layer was made with.

    Examples:
        >>> import numpy as np
        >>> from reinmax.keras import CategoricalSampler
        >>> layer = CategoricalSampler("reinmax", tau=1.3, seed=0)
        >>> logits = np.log(np.array([[0.1, 0.2, 0.7]], dtype="float32"))
        >>> hard = layer(logits, training=True)          # a sample, one-hot
        >>> float(np.asarray(hard).sum())
        1.0
        >>> np.asarray(layer(logits)).tolist()           # inference: the mode
        [[0.0, 0.0, 1.0]]
        >>> layer.tau = 0.5
        >>> layer.get_config()["tau"]
        0.5
    """

    def __init__(
        self,
        estimator: str = "reinmax",
        tau: float | keras.Variable | Schedule | None = None,
        axis: int = -1,
        seed: int | None = None,
        return_soft: bool = False,
        sample_at_inference: bool = False,
        *,
        temperature: float | keras.Variable | Schedule | None = None,
        **kwargs: Any,
    ) -> None:
        if temperature is not None:
            if tau is not None:
                raise TypeError("pass tau or its alias temperature, not both")
            tau = temperature
        layer_kwargs = {name: kwargs.pop(name) for name in list(kwargs) if name in _LAYER_KEYWORDS}
        if not isinstance(estimator, str):
            raise TypeError(
                f"estimator must be the name of a registered estimator, got {estimator!r}"
            )
        # The functions' own checks: an unknown name, option or value is refused here.
        self._estimator = resolve_estimator(estimator, kwargs)
        super().__init__(**layer_kwargs)
        if seed is None:
            seed = secrets.randbelow(2**31)
        if is_bool(seed) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}")
        self.estimator, self.axis, self.seed = estimator, axis, seed
        self.return_soft, self.sample_at_inference = bool(return_soft), bool(sample_at_inference)
        self.options = dict(kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._schedule: Schedule | None = None
        self._step: keras.Variable | None = None
        self._given_variable = isinstance(tau, keras.Variable)
        if self._given_variable:
            self._tau = self._checked_variable(tau)
        elif tau is not None and not _is_number(tau) and callable(tau):
            self._schedule = tau
            self._tau = None
            # The optimizer's iterations have the same dtype ("int").
            self._step = self.add_weight(
                shape=(), initializer="zeros", dtype="int", trainable=False, name="step"
            )
        else:
            value = _default_tau(estimator) if tau is None else _checked_tau(tau)
            self._tau = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype=self.variable_dtype,
                trainable=False,
                autocast=False,
                name="tau",
            )

    @staticmethod
    def _checked_variable(tau: keras.Variable) -> keras.Variable:
        if tau.trainable:
            raise ValueError(
                "tau must be a non-trainable keras.Variable (trainable=False): the estimators "
                f"give τ no gradient, got the trainable variable {tau.path!r}"
            )
        if tuple(tau.shape) != () or "float" not in str(tau.dtype):
            raise ValueError(
                f"tau must be a scalar floating-point keras.Variable, got shape "
                f"{tuple(tau.shape)} and dtype {tau.dtype}"
            )
        return tau

    @property
    def tau(self) -> float | keras.Variable | Schedule:
        """The temperature: its current value (a float), the ``keras.Variable`` the layer was
        given, or the schedule.

        Assigning a number sets the variable the compiled step reads (the layer's own, or the
        one it was given). A schedule is fixed at construction, and so is the choice of a
        number or a schedule: assigning another kind raises a ``TypeError``.
        """
        if self._schedule is not None:
            return self._schedule
        if self._given_variable:
            return self._tau
        return _value(self._tau)

    @tau.setter
    def tau(self, value: float) -> None:
        if self._schedule is not None:
            raise TypeError(
                "this CategoricalSampler was created with a schedule as its tau, hence its tau "
                "is not settable; create it with a number or a keras.Variable to assign τ"
            )
        if not _is_number(value):
            raise TypeError(
                "tau takes a number after construction (assigned to the variable the compiled "
                f"step reads); a keras.Variable or a schedule is given at construction, got "
                f"{type(value).__name__}"
            )
        self._tau.assign(_checked_tau(value))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "tau":  # the property: Layer's tracking would adopt a variable given here
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def step(self) -> int | None:
        """The training calls so far, at which a schedule is evaluated (None without one)."""
        return None if self._step is None else int(keras.ops.convert_to_numpy(self._step.value))

    def _current_tau(self, training: bool) -> Any:
        if self._schedule is None:
            return keras.ops.convert_to_tensor(self._tau)  # read when the step runs
        assert self._step is not None  # made with the schedule
        step = keras.ops.convert_to_tensor(self._step)
        tau = keras.ops.cast(self._schedule(step), self.variable_dtype)
        if training:
            self._step.assign_add(1)
        return tau

    def call(self, logits: Any, training: bool = False) -> Any:
        if not (training or self.sample_at_inference):
            return self._mode(logits)
        # The generator's state is [seed, calls so far]: the count is the stream, so every call
        # draws fresh noise, under jit too (it is a traced value there).
        count = self.seed_generator.next()[1]
        hard, soft = reinmax.estimate(
            self._estimator,
            logits,
            self._current_tau(bool(training)),
            axis=self.axis,
            rng=Seed(self.seed, count),
        )
        return (hard, soft) if self.return_soft else hard

    def _mode(self, logits: Any) -> Any:
        """The one-hot of ``argmax(logits)`` (and ``softmax(logits)``), drawing no noise."""
        ops = keras.ops
        axis = self.axis % len(logits.shape)
        index = ops.argmax(logits, axis=axis)
        hard = ops.one_hot(index, logits.shape[axis], axis=axis, dtype=logits.dtype)
        if not self.return_soft:
            return hard
        # As the estimators compute it: below 32 bits in float32, then rounded.
        dtype = keras.backend.standardize_dtype(logits.dtype)
        soft = ops.softmax(ops.cast(logits, "float64" if dtype == "float64" else "float32"), axis)
        return hard, ops.cast(soft, logits.dtype)

    def compute_output_spec(self, logits: Any, training: bool = False) -> Any:
        spec = keras.KerasTensor(logits.shape, dtype=logits.dtype)
        soft = keras.KerasTensor(logits.shape, dtype=logits.dtype)
        return (spec, soft) if self.return_soft else spec

    # The noise counter and the schedule's step are state: a saved model goes on with the noise
    # it would have drawn and the temperature it would have used.
    def save_own_variables(self, store: Any) -> None:
        store["seed_generator_state"] = keras.ops.convert_to_numpy(self.seed_generator.state.value)
        if self._step is not None:
            store["step"] = keras.ops.convert_to_numpy(self._step.value)

    def load_own_variables(self, store: Any) -> None:
        if "seed_generator_state" in store:
            self.seed_generator.state.assign(store["seed_generator_state"])
        if self._step is not None and "step" in store:
            self._step.assign(store["step"])

    def get_config(self) -> dict[str, Any]:
        if self._schedule is not None:
            tau = keras.saving.serialize_keras_object(self._schedule)
        else:
            tau = _value(self._tau)
        return {
            **super().get_config(),
            "estimator": self.estimator,
            "tau": tau,
            "axis": self.axis,
            "seed": self.seed,
            "return_soft": self.return_soft,
            "sample_at_inference": self.sample_at_inference,
            **self.options,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CategoricalSampler:
        config = dict(config)
        if isinstance(config.get("tau"), dict):
            config["tau"] = keras.saving.deserialize_keras_object(config["tau"])
        return cls(**config)

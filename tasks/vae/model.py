"""What every framework's VAE shares: the loss, the initial weights, the noise's keys, the
:class:`Trainer` interface, and the table of the frameworks' trainers."""

from __future__ import annotations

import importlib
import itertools
import math
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from reinmax.core import REGISTRY, Estimator
from reinmax.noise import Seed, as_seed
from reinmax.tasks.common import estimator as build_estimator
from reinmax.tasks.common import estimator_names, import_framework, noise_seed
from reinmax.tasks.parallel import Engine, single
from reinmax.tasks.vae.config import OPTIMIZERS, ModelSpec
from reinmax.tasks.vae.data import IMAGE_SIDE

__all__ = [
    "HIDDEN",
    "PIXELS",
    "TRAINERS",
    "Stream",
    "Trainer",
    "TrainerBase",
    "estimator_options",
    "generator",
    "initial_parameters",
    "kl_to_uniform",
    "make_trainer",
    "negative_elbo",
    "reconstruction_nll",
    "task_estimator",
    "traced_seed",
    "train_seed",
]

PIXELS = IMAGE_SIDE * IMAGE_SIDE
HIDDEN = (512, 256)
"""Hidden widths of the encoder; the decoder mirrors them (256 then 512)."""


class Stream(IntEnum):
    """The purposes of the portable noise (:func:`reinmax.tasks.common.noise_seed`), so that
    training, evaluation and analysis never share draws."""

    TRAIN = 0
    TEST = 1
    EVAL_MANY = 2
    ANALYSIS = 3
    PRIOR = 4
    RECON = 5


class Trainer(Protocol):
    """One model and its optimizer in one framework, on the workers of an engine
    (:mod:`reinmax.tasks.parallel`); NumPy arrays in and out."""

    def train_step(self, images: np.ndarray, step: int) -> float:
        """One optimizer step on the global batch ``images``; returns its −ELBO before the step.

        Each worker takes its slice of the batch; the noise is :func:`train_seed` of the run's
        seed, ``step`` (the global step count) and the worker's first image, drawn on the
        device inside the step.
        """

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encoder logits ``[B, L, C]`` (float32)."""

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder logits (before the sigmoid) ``[B, 784]`` for one-hot latents ``[B, L, C]``."""

    def logit_gradients(
        self, images: np.ndarray, logits: np.ndarray, rng: Seed, estimator: str, tau: float
    ) -> np.ndarray:
        """``∂/∂logits Σ_b recon(images_b, decode(hard_b))`` through ``estimator``, ``[B, L, C]``.

        ``hard`` is ``estimator``'s sample of ``logits`` at ``tau``, its noise drawn from the
        portable generator with ``rng`` (row ``rng.row`` is the first of ``logits``).
        """

    def get_state(self) -> dict[str, Any]:
        """Parameters and optimizer state as NumPy arrays, for a checkpoint (the same whatever
        the number of workers)."""

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned, exactly."""


class TrainerBase:
    """What every framework's :class:`Trainer` keeps: its :class:`ModelSpec`, the key of its
    noise (``seed``) and its engine; a subclass builds its model and optimizer from the weights
    ``params`` (:func:`initial_parameters`) in :meth:`build`."""

    def __init__(
        self, spec: ModelSpec, params: list[tuple[np.ndarray, np.ndarray]], seed: int, engine: Any
    ):
        self.spec, self.seed, self.engine = spec, seed, engine
        self.build(params)

    def build(self, params: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Build the model from ``params`` and its optimizer on ``self.engine``."""
        raise NotImplementedError


TRAINERS: dict[str, str] = {
    "torch": "reinmax.tasks.vae.torch",
    "jax": "reinmax.tasks.vae.jax",
    "tensorflow": "reinmax.tasks.vae.tensorflow",
}
"""The module holding each backend's :class:`Trainer` (a class named ``Trainer``)."""


def make_trainer(
    backend: str,
    spec: ModelSpec,
    params: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    engine: Engine | None = None,
) -> Trainer:
    """The :class:`Trainer` of ``backend`` (a key of :data:`TRAINERS`) for ``spec``, starting
    from the weights ``params`` (:func:`initial_parameters`), its noise keyed by ``seed``, on
    the workers of ``engine`` (a started :mod:`reinmax.tasks.parallel` engine of ``backend``;
    None: one worker)."""
    if backend not in TRAINERS:
        raise ValueError(f"backend must be one of {', '.join(TRAINERS)}, got {backend!r}")
    names = estimator_names()
    if spec.estimator not in names:
        raise ValueError(f"estimator must be one of {', '.join(names)}, got {spec.estimator!r}")
    if spec.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {spec.optimizer!r}"
        )
    as_seed(seed)  # a named error for a key outside [0, 2**64)
    import_framework(backend)
    engine = engine if engine is not None else single(backend)
    return importlib.import_module(TRAINERS[backend]).Trainer(spec, params, seed, engine)


def task_estimator(name: str, spec: ModelSpec) -> Estimator:
    """The registered estimator ``name`` with the options the task sets (``spec``'s K for
    Gumbel-Rao)."""
    return build_estimator(name, k=spec.gumbel_rao_k)


def estimator_options(name: str, spec: ModelSpec) -> dict[str, Any]:
    """The options of :func:`task_estimator` that ``name`` takes (``{"k": K}`` for Gumbel-Rao,
    ``{}`` for an estimator without options), for the results file."""
    given = {"k": spec.gumbel_rao_k}
    return {o.name: given[o.name] for o in REGISTRY[name].options if o.name in given}


def train_seed(seed: int, step: Any, first_image: Any, latents: int) -> Seed:
    """The noise of training step ``step`` for the images from the global batch's
    ``first_image`` on: rows are numbered image by image, ``latents`` rows an image, so a worker
    holding a slice draws what one process draws for it. ``step`` and ``first_image`` may be
    traced integer arrays."""
    return noise_seed(seed, Stream.TRAIN, step, first_image * latents)


def traced_seed(rng: Seed) -> tuple[int, np.ndarray, np.ndarray]:
    """``rng`` as its key and int32 NumPy scalars of its stream and row (their 32 bits), to pass
    to a compiled function as arrays: a new stream or row then does not recompile."""
    stream, row = (np.array(int(v) & 0xFFFFFFFF, dtype=np.uint32).view(np.int32) for v in rng[1:])
    return rng.key, stream, row


# ---------------------------------------------------------------------------------------------
# The loss: one formula for every framework
# ---------------------------------------------------------------------------------------------

# q log q with q clamped from below: exact for every probability that matters (q log q < 1e-28
# below it), and finite for the q that underflow to 0.
_PROBABILITY_FLOOR = 1e-30


def reconstruction_nll(images: Any, decoder_logits: Any, *, xp: Any) -> Any:
    """Binary cross-entropy of ``sigmoid(decoder_logits)`` against grey levels, summed per image.

    ``BCE(x, σ(z)) = −x log σ(z) − (1 − x) log(1 − σ(z)) = softplus(z) − x z``, written with
    ``logaddexp(0, z)`` so that it is finite for any logit. ``images`` are in ``[0, 1]`` (not
    binarised). Shapes ``[B, 784]`` → ``[B]``.
    """
    return xp.sum(
        xp.logaddexp(xp.zeros_like(decoder_logits), decoder_logits) - images * decoder_logits,
        axis=-1,
    )


def kl_to_uniform(soft: Any, *, xp: Any) -> Any:
    """``KL(q ‖ uniform) = Σ_l Σ_c q log q + L log C`` per image, from ``q`` ``[B, L, C]``."""
    latents, categories = soft.shape[-2], soft.shape[-1]
    q_log_q = soft * xp.log(xp.maximum(soft, _PROBABILITY_FLOOR))
    return xp.sum(xp.sum(q_log_q, axis=-1), axis=-1) + latents * math.log(categories)


def negative_elbo(images: Any, decoder_logits: Any, soft: Any, *, xp: Any) -> Any:
    """The negative ELBO per image, in nats: :func:`reconstruction_nll` + :func:`kl_to_uniform`.

    Args:
        images: grey levels in ``[0, 1]``, ``[B, 784]``.
        decoder_logits: the decoder's output before its sigmoid, ``[B, 784]``, computed from the
            one-hot sample ``hard``.
        soft: the encoder's probabilities ``q = softmax(logits)`` as the estimator returns them,
            ``[B, L, C]`` (the KL's gradient flows through them).
        xp: the array namespace (``numpy``, ``array_api_compat.torch``, ``jax.numpy``,
            ``tensorflow.experimental.numpy``).

    Returns:
        ``[B]``; the training loss is its mean over the batch.
    """
    return reconstruction_nll(images, decoder_logits, xp=xp) + kl_to_uniform(soft, xp=xp)


# ---------------------------------------------------------------------------------------------
# The initial weights, drawn on the host
# ---------------------------------------------------------------------------------------------


def generator(*key: int) -> np.random.Generator:
    """NumPy's Philox keyed by ``key``: the same stream on every backend."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(k) for k in key])))


def initial_parameters(
    categories: int, latents: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The six dense layers' ``(kernel [in, out], bias [out])``, float32, drawn from ``seed``.

    Encoder layers first, then decoder layers. Each entry is uniform in ``±1/√fan_in`` (PyTorch's
    default for ``nn.Linear``), drawn with NumPy so every backend starts from identical weights.
    """
    size = categories * latents
    widths = (PIXELS, *HIDDEN, size, *reversed(HIDDEN), PIXELS)
    rng = generator(seed, 0xC0FFEE)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = 1.0 / math.sqrt(fan_in)
        kernel = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        bias = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
        layers.append((kernel, bias))
    return layers

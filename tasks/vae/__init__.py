"""MNIST VAE with categorical latent variables (Liu et al. 2023, section 6.2), in every backend.

``reinmax task vae --backend torch --estimator all --config 8x4 --epochs 5 --json PATH``

The model: ``L`` categorical latent variables of ``C`` categories each. The encoder
``784 → 512 → 256 → L·C`` (ReLU) gives the logits; the decoder ``L·C → 256 → 512 → 784`` (ReLU,
sigmoid output) reads the one-hot sample ``hard``. The loss is the negative ELBO in nats, summed
per image and averaged over the batch (:func:`negative_elbo`).

Everything the three frameworks share lives in this package, once: the configurations and their
tuned hyper-parameters (``config``), the loss formula, the initial weights (drawn on the host with
NumPy, so every backend starts from the same point) and the keys of the noise (``model``),
evaluation (``evaluation``), the gradient-quality analysis (``analysis``), the runs, checkpoints
and results (``training``), the plots (``plots``), the command line (``cli``) and the data
(``data``). Each of ``reinmax.tasks.vae.torch``, ``.jax`` and ``.tensorflow`` supplies one
:class:`Trainer`: the model and optimizer in its framework's own idiom, chosen through
:data:`TRAINERS`, trained on the workers of a :mod:`reinmax.tasks.parallel` engine.

The noise is the library's portable generator (:mod:`reinmax.noise`), drawn on the device inside
each step: keyed by the seed, the purpose (:class:`Stream`), the global step count and the
global index of each latent variable (image × latents), so every backend, and any number of
workers sharing the global batch, sees the same samples. Evaluation draws from it too, in NumPy.
"""

from __future__ import annotations

from reinmax.tasks.vae.analysis import (
    exact_reconstruction_gradient,
    expected_reconstruction,
    gradient_analysis,
    gradient_statistics,
)
from reinmax.tasks.vae.cli import main
from reinmax.tasks.vae.config import (
    CONFIGS,
    HYPERPARAMETERS,
    Hyperparameters,
    ModelSpec,
    model_spec,
    parse_config,
)
from reinmax.tasks.vae.model import (
    HIDDEN,
    PIXELS,
    TRAINERS,
    Stream,
    Trainer,
    estimator_options,
    initial_parameters,
    kl_to_uniform,
    make_trainer,
    negative_elbo,
    reconstruction_nll,
    task_estimator,
    train_seed,
)
from reinmax.tasks.vae.training import format_gradient_table, format_table

__all__ = [
    "CONFIGS",
    "HIDDEN",
    "HYPERPARAMETERS",
    "PIXELS",
    "TRAINERS",
    "Hyperparameters",
    "ModelSpec",
    "Stream",
    "Trainer",
    "estimator_options",
    "exact_reconstruction_gradient",
    "expected_reconstruction",
    "format_gradient_table",
    "format_table",
    "gradient_analysis",
    "gradient_statistics",
    "initial_parameters",
    "kl_to_uniform",
    "main",
    "make_trainer",
    "model_spec",
    "negative_elbo",
    "parse_config",
    "reconstruction_nll",
    "task_estimator",
    "train_seed",
]

"""Gradient estimators for categorical variables, in every framework.

``import reinmax`` imports no framework: each function dispatches on the type of ``logits`` to
the backend of the framework the caller already uses (``reinmax.backends.torch``, ``.jax``,
``.tensorflow``, ``.numpy``; each module has the same names).

>>> import torch, reinmax
>>> hard, soft = reinmax.reinmax(torch.randn(8, 10, requires_grad=True), tau=1.3)

Every estimator returns ``(hard, soft)``: ``hard`` is an exact one-hot sample ``D ~ Cat(π)``
whose gradient is the estimator's rule, ``soft = π = softmax(logits)`` with its ordinary
gradient. See ``docs/SPEC.md`` for the rules, the noise layout and the errors.

The estimators are those of :data:`REGISTRY` (``straight_through``, ``gumbel_softmax``,
``gumbel_rao``, ``gapped_straight_through``, ``reinmax``, ...): :func:`register_estimator`
adds one of your own, which then is a function here and in every backend module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reinmax._dispatch import backend_for
from reinmax.api import Backend, Functions
from reinmax.core import (
    REGISTRY,
    Estimator,
    Option,
    Registration,
    register_estimator,
    unregister_estimator,
)
from reinmax.noise import Seed

__version__ = "0.3.0"

_functions = Functions(resolve=backend_for, module=__name__)
# The functions' static types (reinmax/_names.pyi); at run time they come from the registry.
if TYPE_CHECKING:
    from reinmax._names import *  # noqa: F403
else:
    estimate = _functions.estimate
    reinforce = _functions.reinforce
    bernoulli = _functions.bernoulli
__getattr__ = _functions.module_getattr(__name__)
__dir__ = _functions.module_dir(globals())

__all__ = [
    "REGISTRY",
    "Backend",
    "Estimator",
    "Option",
    "Registration",
    "Seed",
    "register_estimator",
    "unregister_estimator",
    *_functions.names(),
]

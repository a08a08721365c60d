"""Gradient estimators for categorical variables, in every framework.

``import reinmax`` imports no framework: each function dispatches on the type of ``logits`` to
the backend of the framework the caller already uses (``reinmax.backends.torch``, ``.jax``,
``.tensorflow``, ``.numpy``; each module has the same names).

>>> import torch, reinmax
>>> hard, soft = reinmax.reinmax(torch.randn(8, 10, requires_grad=True), tau=1.3)

Every estimator returns ``(hard, soft)``: ``hard`` is an exact one-hot sample ``D ~ Cat(π)``
whose gradient is the estimator's rule, ``soft = π = softmax(logits)`` with its ordinary
gradient. See ``docs/SPEC.md`` for the rules, the noise layout and the errors.
"""

from __future__ import annotations

from reinmax._dispatch import backend_for
from reinmax.api import Backend, Functions
from reinmax.core import ESTIMATORS, Estimator

__all__ = [
    "ESTIMATORS",
    "Backend",
    "Estimator",
    "estimate",
    "gapped_straight_through",
    "gumbel_rao",
    "gumbel_softmax",
    "reinforce",
    "reinmax",
    "straight_through",
]
__version__ = "0.2.0"

_functions = Functions(resolve=backend_for)
estimate = _functions.estimate
straight_through = _functions.straight_through
reinmax = _functions.reinmax
gumbel_softmax = _functions.gumbel_softmax
gumbel_rao = _functions.gumbel_rao
gapped_straight_through = _functions.gapped_straight_through
reinforce = _functions.reinforce

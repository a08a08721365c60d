"""PyTorch backend: each estimator's backward is a ``torch.autograd.Function``.

The Function is written in the ``forward`` + ``setup_context`` style with
``generate_vmap_rule = True``, so it works under ``torch.func.vmap`` and ``torch.func.grad``, and
it draws no random numbers (the uniforms come in as an input), so ``torch.compile`` sees a pure
function. Forward-mode AD (``torch.func.jvp``) and double backward are not supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat.torch as xp
import torch

from reinmax.api import Functions

__all__ = [
    "BACKEND",
    "estimate",
    "gapped_straight_through",
    "gumbel_rao",
    "gumbel_softmax",
    "reinforce",
    "reinmax",
    "straight_through",
]


class _Rule(NamedTuple):
    forward: Callable
    backward: Callable
    num_outputs: int

    def __call__(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple:
        return _Op.apply(x, a, b, self)[: self.num_outputs]


class _Op(torch.autograd.Function):
    """One Function for every rule; the rule itself is a (constant) non-tensor input."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rule: _Rule) -> tuple:
        outputs, residuals = rule.forward(x, a, b)
        # Residuals travel as extra outputs: torch.func requires saved tensors to be inputs or
        # outputs of the Function.
        return (*outputs, *residuals)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        rule = inputs[3]
        ctx.rule = rule
        ctx.mark_non_differentiable(*output[rule.num_outputs :])
        # Unused outputs (and the residuals) get None instead of a full-size tensor of zeros.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inputs[1], inputs[2], *output)

    @staticmethod
    def backward(ctx: Any, *cotangents: torch.Tensor) -> tuple:
        a, b, *saved = ctx.saved_tensors
        n = ctx.rule.num_outputs
        grad = ctx.rule.backward((a, b), tuple(saved[:n]), tuple(saved[n:]), cotangents[:n])
        return grad, None, None, None


class TorchBackend:
    name = "torch"
    xp = xp

    def owns(self, x: object) -> bool:
        return isinstance(x, torch.Tensor)

    def device(self, x: torch.Tensor) -> torch.device:
        return x.device

    def uniform(
        self, rng: torch.Generator | None, shape: tuple[int, ...], dtype: Any, like: torch.Tensor
    ) -> torch.Tensor:
        if rng is not None and not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator or None, got {type(rng).__name__}")
        if rng is None:
            # No generator keyword at all: torch.compile cannot trace generator=None with
            # symbolic (dynamic) shapes.
            return torch.rand(shape, dtype=dtype, device=like.device)
        return torch.rand(shape, generator=rng, dtype=dtype, device=like.device)

    def custom_vjp(self, forward: Callable, backward: Callable, num_outputs: int) -> _Rule:
        return _Rule(forward, backward, num_outputs)


BACKEND = TorchBackend()
_functions = Functions(BACKEND)
estimate = _functions.estimate
straight_through = _functions.straight_through
reinmax = _functions.reinmax
gumbel_softmax = _functions.gumbel_softmax
gumbel_rao = _functions.gumbel_rao
gapped_straight_through = _functions.gapped_straight_through
reinforce = _functions.reinforce

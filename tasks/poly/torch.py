"""The polynomial-programming trainer in PyTorch: ``torch.optim.Adam`` on the shared objective,
with ``DistributedDataParallel`` over ``torchrun``'s processes
(:mod:`reinmax.tasks.parallel.torch`), each drawing its slice of the samples."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reinmax.backends import torch as fns
from reinmax.tasks.poly.problem import Hooks, Setup, Trainer, estimator_for, objective, step_noise

__all__ = ["trainer"]


class _Problem(nn.Module):
    """The logits ``(P, S, L, 2)`` as a parameter; ``forward(step)`` is the step's objective and
    sampled loss on this rank's samples (what ``DistributedDataParallel`` runs)."""

    def __init__(self, setup: Setup):
        super().__init__()
        theta0, powers, method, config, seeds, engine = setup
        dtype = getattr(torch, config.dtype)
        self.theta = nn.Parameter(torch.tensor(theta0, dtype=dtype, device=engine.device))
        self.powers = torch.tensor(powers, dtype=dtype, device=engine.device)
        self.method, self.config, self.seeds, self.engine = method, config, list(seeds), engine
        self.estimator = estimator_for(method, config)
        self.hooks = Hooks(fns, torch.Tensor.detach, total=engine.all_sum)

    def forward(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = None
        if self.estimator is not None:
            mine = self.engine.shard(self.config.samples)
            noise = step_noise(
                self.estimator,
                self.seeds,
                step,
                mine.start,
                mine.stop - mine.start,
                len(self.powers),
                self.config,
                xp=fns.BACKEND.xp,
                device=self.theta.device,
            )
        return objective(
            self.hooks, self.method, self.estimator, self.theta, noise, self.powers, self.config
        )


def trainer(setup: Setup) -> Trainer:
    """Adam on ``method``'s gradient estimate, from logits ``theta0`` of shape ``(P, S, L, 2)``,
    on this rank's share of the samples (``DistributedDataParallel`` averages the gradients)."""
    config, engine = setup.config, setup.engine
    problem = _Problem(setup)
    parallel = engine.wrap(problem)
    optimizer = torch.optim.Adam([problem.theta], lr=config.lr, eps=config.eps)

    def step(t: int) -> np.ndarray:
        optimizer.zero_grad(set_to_none=True)
        loss, sampled = parallel(t)
        loss.backward()
        optimizer.step()
        return (engine.all_sum(sampled) / engine.workers).cpu().numpy()

    return step, lambda: problem.theta.detach().cpu().numpy().copy()

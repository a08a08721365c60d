"""The polynomial-programming trainer in PyTorch: ``torch.optim.Adam`` on the shared objective."""

from __future__ import annotations

import numpy as np
import torch

from reinmax.backends import torch as fns
from reinmax.tasks.poly.problem import PolyConfig, Trainer, estimator_for, objective

__all__ = ["trainer"]


def trainer(theta0: np.ndarray, powers: np.ndarray, method: str, config: PolyConfig) -> Trainer:
    """Adam on ``method``'s gradient estimate, from logits ``theta0`` of shape ``(P, S, L, 2)``."""
    dtype = getattr(torch, config.dtype)
    theta = torch.nn.Parameter(torch.tensor(theta0, dtype=dtype))
    p = torch.tensor(powers, dtype=dtype)
    estimator = estimator_for(method, config)
    optimizer = torch.optim.Adam([theta], lr=config.lr, eps=config.eps)

    def step(noise: np.ndarray | None) -> np.ndarray:
        optimizer.zero_grad(set_to_none=True)
        u = None if noise is None else torch.from_numpy(noise)
        loss, sampled = objective(fns, torch.Tensor.detach, method, estimator, theta, u, p, config)
        loss.backward()
        optimizer.step()
        return sampled.detach().numpy()

    return step, lambda: theta.detach().numpy().copy()

"""The categorical VAE in PyTorch: ``nn.Sequential`` encoder and decoder, ``torch.optim``."""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch
from torch import nn

import reinmax
from reinmax.tasks.common import estimator as build_estimator
from reinmax.tasks.vae.config import ModelSpec
from reinmax.tasks.vae.model import negative_elbo, reconstruction_nll

__all__ = ["Trainer"]


def _mlp(layers: list[tuple[np.ndarray, np.ndarray]]) -> nn.Sequential:
    """Dense layers with ReLU between them, loaded from ``(kernel [in, out], bias)`` pairs."""
    modules: list[nn.Module] = []
    for kernel, bias in layers:
        linear = nn.Linear(*kernel.shape)
        with torch.no_grad():
            # nn.Linear stores its weight as [out, in].
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        modules += [linear, nn.ReLU()]
    return nn.Sequential(*modules[:-1])


class Trainer:
    """One VAE and its optimizer (``torch.optim.Adam`` or ``RAdam``): a
    :class:`reinmax.tasks.vae.model.Trainer`."""

    def __init__(self, spec: ModelSpec, params: list[tuple[np.ndarray, np.ndarray]]):
        self.spec = spec
        self.encoder = _mlp(params[:3])
        self.decoder = _mlp(params[3:])
        parameters = [*self.encoder.parameters(), *self.decoder.parameters()]
        optimizer = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[spec.optimizer]
        self.optimizer = optimizer(parameters, lr=spec.lr)
        self.estimator = build_estimator(spec.estimator)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).reshape(len(images), self.spec.latents, self.spec.categories)

    def train_step(self, images: np.ndarray, noise: np.ndarray) -> float:
        """One optimizer step on a batch; returns the batch's −ELBO before the step."""
        x = torch.from_numpy(images)
        logits = self._logits(x)
        hard, soft = reinmax.estimate(
            self.estimator, logits, self.spec.tau, noise=torch.from_numpy(noise)
        )
        decoded = self.decoder(hard.reshape(len(x), -1))
        loss = negative_elbo(x, decoded, soft, xp=xp).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encoder logits ``[B, L, C]``."""
        return self._logits(torch.from_numpy(np.ascontiguousarray(images))).numpy()

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder logits ``[B, 784]`` for one-hot latents ``[B, L, C]``."""
        z = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32))
        return self.decoder(z.reshape(len(z), -1)).numpy()

    def logit_gradients(
        self, images: np.ndarray, logits: np.ndarray, noise: np.ndarray, estimator: str, tau: float
    ) -> np.ndarray:
        """``∂/∂logits Σ_b recon(images_b, decode(hard_b))`` through ``estimator``."""
        theta = torch.from_numpy(np.ascontiguousarray(logits)).requires_grad_(True)
        hard, _ = reinmax.estimate(
            build_estimator(estimator), theta, tau, noise=torch.from_numpy(noise)
        )
        decoded = self.decoder(hard.reshape(len(theta), -1))
        recon = reconstruction_nll(torch.from_numpy(images), decoded, xp=xp).sum()
        (grad,) = torch.autograd.grad(recon, theta)
        return grad.numpy()

    def get_state(self) -> dict[str, Any]:
        """Weights and optimizer state as NumPy arrays."""

        def to_numpy(value):
            return value.detach().numpy().copy() if isinstance(value, torch.Tensor) else value

        optimizer = self.optimizer.state_dict()
        return {
            "encoder": {k: to_numpy(v) for k, v in self.encoder.state_dict().items()},
            "decoder": {k: to_numpy(v) for k, v in self.decoder.state_dict().items()},
            "optimizer": {
                "state": {
                    i: {k: to_numpy(v) for k, v in s.items()} for i, s in optimizer["state"].items()
                },
                "param_groups": optimizer["param_groups"],
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` exactly."""

        def to_tensor(value):
            return torch.from_numpy(value.copy()) if isinstance(value, np.ndarray) else value

        self.encoder.load_state_dict({k: to_tensor(v) for k, v in state["encoder"].items()})
        self.decoder.load_state_dict({k: to_tensor(v) for k, v in state["decoder"].items()})
        optimizer = state["optimizer"]
        self.optimizer.load_state_dict(
            {
                "state": {
                    i: {k: to_tensor(v) for k, v in s.items()}
                    for i, s in optimizer["state"].items()
                },
                "param_groups": optimizer["param_groups"],
            }
        )

"""The categorical VAE in PyTorch: ``nn.Sequential`` encoder and decoder, ``torch.optim``, and
``DistributedDataParallel`` over ``torchrun``'s processes (:mod:`reinmax.tasks.parallel.torch`)."""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch
from torch import nn

import reinmax
from reinmax.noise import Seed
from reinmax.tasks.parallel.torch import TorchEngine
from reinmax.tasks.vae import model as vae
from reinmax.tasks.vae.config import ModelSpec

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


class _VAE(nn.Module):
    """The encoder and the decoder; ``forward`` is the batch's mean −ELBO (what
    ``DistributedDataParallel`` runs, so that it can average the gradients)."""

    def __init__(self, spec: ModelSpec, params: list[tuple[np.ndarray, np.ndarray]]):
        super().__init__()
        self.spec = spec
        self.estimator = vae.task_estimator(spec.estimator, spec)
        self.encoder = _mlp(params[:3])
        self.decoder = _mlp(params[3:])

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).reshape(len(images), self.spec.latents, self.spec.categories)

    def forward(self, images: torch.Tensor, rng: Seed) -> torch.Tensor:
        hard, soft = reinmax.estimate(self.estimator, self.logits(images), self.spec.tau, rng=rng)
        decoded = self.decoder(hard.reshape(len(images), -1))
        return vae.negative_elbo(images, decoded, soft, xp=xp).mean()


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy().copy() if isinstance(value, torch.Tensor) else value


def _to_tensor(value: Any) -> Any:
    return torch.from_numpy(value.copy()) if isinstance(value, np.ndarray) else value


class Trainer(vae.TrainerBase):
    """One VAE and its optimizer (``torch.optim.Adam`` or ``RAdam``), on this process's device:
    a :class:`reinmax.tasks.vae.model.Trainer`. Under ``torchrun`` each rank trains on its slice
    of the global batch and ``DistributedDataParallel`` averages the gradients."""

    engine: TorchEngine

    def build(self, params: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """The model from ``params`` and its optimizer on the engine's workers."""
        spec, engine = self.spec, self.engine
        self.device = engine.device
        self.model = _VAE(spec, params).to(self.device)
        self.parallel = engine.wrap(self.model)
        optimizer = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[spec.optimizer]
        self.optimizer = optimizer(self.model.parameters(), lr=spec.lr)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def train_step(self, images: np.ndarray, step: int) -> float:
        """One optimizer step on the global batch; returns its −ELBO before the step."""
        mine = self.engine.shard(len(images))
        rng = vae.train_seed(self.seed, step, mine.start, self.spec.latents)
        loss = self.parallel(self._tensor(images[mine]), rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # Equal slices: the global batch's mean is the mean of the ranks' means.
        return float(self.engine.all_sum(loss)) / self.engine.workers

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encoder logits ``[B, L, C]``."""
        return self.model.logits(self._tensor(images)).cpu().numpy()

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decoder logits ``[B, 784]`` for one-hot latents ``[B, L, C]``."""
        z = self._tensor(latents)
        return self.model.decoder(z.reshape(len(z), -1)).cpu().numpy()

    def logit_gradients(
        self, images: np.ndarray, logits: np.ndarray, rng: Seed, estimator: str, tau: float
    ) -> np.ndarray:
        """``∂/∂logits Σ_b recon(images_b, decode(hard_b))`` through ``estimator``."""
        theta = self._tensor(logits).requires_grad_(True)
        chosen = vae.task_estimator(estimator, self.spec)
        hard, _ = reinmax.estimate(chosen, theta, tau, rng=rng)
        decoded = self.model.decoder(hard.reshape(len(theta), -1))
        recon = vae.reconstruction_nll(self._tensor(images), decoded, xp=xp).sum()
        (grad,) = torch.autograd.grad(recon, theta)
        return grad.cpu().numpy()

    def get_state(self) -> dict[str, Any]:
        """Weights and optimizer state as NumPy arrays."""
        optimizer = self.optimizer.state_dict()
        return {
            "encoder": {k: _to_numpy(v) for k, v in self.model.encoder.state_dict().items()},
            "decoder": {k: _to_numpy(v) for k, v in self.model.decoder.state_dict().items()},
            "optimizer": {
                "state": {
                    i: {k: _to_numpy(v) for k, v in s.items()}
                    for i, s in optimizer["state"].items()
                },
                "param_groups": optimizer["param_groups"],
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` exactly (on this process's device)."""
        self.model.encoder.load_state_dict({k: _to_tensor(v) for k, v in state["encoder"].items()})
        self.model.decoder.load_state_dict({k: _to_tensor(v) for k, v in state["decoder"].items()})
        optimizer = state["optimizer"]
        self.optimizer.load_state_dict(
            {
                "state": {
                    i: {k: _to_tensor(v) for k, v in s.items()}
                    for i, s in optimizer["state"].items()
                },
                "param_groups": optimizer["param_groups"],
            }
        )

"""Porting a Gumbel vector quantizer from ``F.gumbel_softmax`` to ``reinmax.compat``.

:class:`GumbelQuantizer` is written as such modules are (a projection to logits per group, an
annealed temperature, a ``hard`` flag, a KL term to the uniform prior, a codebook embedding,
straight-through samples) on ``torch.nn.functional.gumbel_softmax``. :class:`PortedQuantizer`
is its port to :func:`reinmax.compat.gumbel_softmax`: the same code but for the lines that
``docs/walkthrough.md`` shows as a diff (the import, the call, and the temperature held as a 0-d
buffer so that ``torch.compile`` compiles once while it is annealed).

``python -m tasks.walkthrough`` checks the port (bit for bit with the original under the same
seed, outputs and gradients over several training steps; one compile under an annealed τ) and
trains the small autoencoder around it on the embedded MNIST digits with ST-Gumbel-Softmax and
with ReinMax, side by side, writing a JSON file with provenance and a figure.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import reinmax
from reinmax.compat import gumbel_softmax
from reinmax.runtime import add_publish_option, command, output_path, write_json

DEFAULT_JSON = Path("results") / "walkthrough.json"
DEFAULT_FIGURE = Path("results") / "walkthrough.png"


class GumbelQuantizer(nn.Module):
    """Gumbel-Softmax vector quantization of ``in_features`` into ``groups`` codes of a codebook."""

    def __init__(self, in_features, groups, codes, code_dim, kl_weight=5e-4, temperature=1.0):
        super().__init__()
        self.groups, self.codes = groups, codes
        self.proj = nn.Linear(in_features, groups * codes)
        self.embed = nn.Embedding(codes, code_dim)
        self.kl_weight = kl_weight
        self.straight_through = True
        self.temperature = temperature

    def forward(self, z):
        logits = self.proj(z).unflatten(-1, (self.groups, self.codes))
        hard = self.straight_through if self.training else True
        one_hot = F.gumbel_softmax(logits, tau=self.temperature, dim=-1, hard=hard)
        z_q = torch.einsum("bgk,kd->bgd", one_hot, self.embed.weight).flatten(1)
        qy = F.softmax(logits, dim=-1)
        kl = self.kl_weight * torch.sum(qy * torch.log(qy * self.codes + 1e-10), dim=-1).mean()
        return z_q, kl, one_hot.argmax(dim=-1)


class PortedQuantizer(nn.Module):
    """Gumbel-Softmax vector quantization of ``in_features`` into ``groups`` codes of a codebook."""

    def __init__(self, in_features, groups, codes, code_dim, kl_weight=5e-4, temperature=1.0):
        super().__init__()
        self.groups, self.codes = groups, codes
        self.proj = nn.Linear(in_features, groups * codes)
        self.embed = nn.Embedding(codes, code_dim)
        self.kl_weight = kl_weight
        self.straight_through = True
        self.register_buffer("temperature", torch.tensor(temperature), persistent=False)
        self.estimator = "gumbel_softmax"

    def forward(self, z):
        logits = self.proj(z).unflatten(-1, (self.groups, self.codes))
        hard = self.straight_through if self.training else True
        one_hot = gumbel_softmax(
            logits, tau=self.temperature, dim=-1, hard=hard, estimator=self.estimator
        )
        z_q = torch.einsum("bgk,kd->bgd", one_hot, self.embed.weight).flatten(1)
        qy = F.softmax(logits, dim=-1)
        kl = self.kl_weight * torch.sum(qy * torch.log(qy * self.codes + 1e-10), dim=-1).mean()
        return z_q, kl, one_hot.argmax(dim=-1)


def port_diff() -> str:
    """The port as a unified diff of the module's source (docs/walkthrough.md quotes it)."""
    original = inspect.getsource(GumbelQuantizer).splitlines()
    source = inspect.getsource(PortedQuantizer)
    ported = source.replace(PortedQuantizer.__name__, GumbelQuantizer.__name__).splitlines()
    diff = difflib.unified_diff(original, ported, "original.py", "ported.py", n=1, lineterm="")
    return "\n".join(diff) + "\n"


def set_temperature(quantizer: Any, tau: float) -> None:
    """Anneal either module: a Python float for the original, the 0-d buffer in place for the
    port (a new value is then no new input to a compiled graph)."""
    if isinstance(quantizer.temperature, torch.Tensor):
        quantizer.temperature.fill_(tau)
    else:
        quantizer.temperature = tau


class AutoEncoder(nn.Module):
    """MNIST images through an MLP encoder, a quantizer and an MLP decoder (Bernoulli pixels)."""

    def __init__(self, quantizer: type[nn.Module], groups: int = 8, codes: int = 16):
        super().__init__()
        hidden, code_dim = 256, 16
        self.encoder = nn.Sequential(nn.Linear(784, hidden), nn.ReLU())
        self.quantizer = quantizer(hidden, groups, codes, code_dim)
        self.decoder = nn.Sequential(
            nn.Linear(groups * code_dim, hidden), nn.ReLU(), nn.Linear(hidden, 784)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, reconstruction logits)``: the Bernoulli NLL per image (nats) plus the KL."""
        z_q, kl, _ = self.quantizer(self.encoder(x))
        recon = self.decoder(z_q)
        nll = F.binary_cross_entropy_with_logits(recon, x, reduction="sum") / x.shape[0]
        return nll + kl, recon


def annealed_tau(step: int, start: float = 2.0, end: float = 0.5, rate: float = 1e-2) -> float:
    """The usual exponential schedule ``max(end, start · exp(−rate · step))``."""
    return max(end, start * math.exp(-rate * step))


def make_pair(seed: int = 0) -> tuple[AutoEncoder, AutoEncoder]:
    """The original and the port with the same initial weights."""
    torch.manual_seed(seed)
    original = AutoEncoder(GumbelQuantizer)
    torch.manual_seed(seed)
    ported = AutoEncoder(PortedQuantizer)
    ported.load_state_dict(original.state_dict())
    return original, ported


def compare_ports(images: np.ndarray, steps: int, seed: int = 0, batch: int = 50) -> dict:
    """Train the original and the STGS port side by side under the same seeds for ``steps``
    steps (annealed τ); the largest difference of their losses, reconstructions, gradients and
    weights over the steps (all 0.0 when the port is bit for bit the original)."""
    original, ported = make_pair(seed)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (original, ported)]
    worst = {"loss": 0.0, "reconstruction": 0.0, "gradient": 0.0, "weight": 0.0}
    x = torch.from_numpy(images)
    for step in range(steps):
        tau = annealed_tau(step * 50)
        batch_x = x[(step * batch) % len(x) :][:batch]
        results = []
        for model, optimizer in zip((original, ported), optimizers):
            set_temperature(model.quantizer, tau)
            torch.manual_seed(seed + 1000 + step)
            optimizer.zero_grad()
            loss, recon = model(batch_x)
            loss.backward()
            grads = [
                torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in model.parameters()
            ]
            optimizer.step()
            results.append((loss.detach(), recon.detach(), grads, list(model.parameters())))
        (l0, r0, g0, w0), (l1, r1, g1, w1) = results
        worst["loss"] = max(worst["loss"], _gap(l0, l1))
        worst["reconstruction"] = max(worst["reconstruction"], _gap(r0, r1))
        worst["gradient"] = max(worst["gradient"], *(_gap(a, b) for a, b in zip(g0, g1)))
        worst["weight"] = max(worst["weight"], *(_gap(a, b) for a, b in zip(w0, w1)))
    return {"steps": steps, "largest_difference": worst}


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def count_compiles(
    estimator: str, images: np.ndarray, steps: int, tensor_tau: bool, warm: bool = True
) -> int:
    """Frames Dynamo compiles for the port's training step over ``steps`` annealed τ values,
    with τ as the port's 0-d buffer (``tensor_tau``) or as a Python float attribute.

    ``warm``: one eager step first, which builds the library's op for this estimator and axis;
    without it, the first compiled call builds it inside the trace and recompiles once.
    """
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    reinmax.api._OPS.clear()
    counter = CompileCounter()
    torch.manual_seed(0)
    model: Any = AutoEncoder(PortedQuantizer)  # a module whose quantizer has attributes
    model.quantizer.estimator = estimator
    if not tensor_tau:
        # The original's style: a Python float attribute in place of the buffer.
        del model.quantizer.temperature
        model.quantizer.temperature = annealed_tau(0)
    x = torch.from_numpy(images[:32])
    if warm:
        model(x)[0].backward()
    compiled = torch.compile(model, backend=counter)
    for step in range(steps):
        tau = annealed_tau(step * 50)
        if tensor_tau:
            set_temperature(model.quantizer, tau)
        else:
            model.quantizer.temperature = tau
        loss, _ = compiled(x)
        loss.backward()
    return counter.frame_count


def dropin_check(seed: int = 0) -> dict:
    """``gumbel_softmax`` against ``F.gumbel_softmax`` under the same seed, per dtype: whether
    every value is equal and the largest gradient difference (relative to the cotangent's
    ``max|g| / τ``, in units of the dtype's eps)."""
    report = {}
    shapes = [((256, 10), -1), ((64, 512), -1), ((16, 32, 8), 1)]
    for dtype in (torch.float32, torch.float64):
        equal, worst = True, 0.0
        for shape, dim in shapes:
            for hard in (False, True):
                for tau in (0.5, 1.0, 1.3):
                    logits = torch.randn(shape, dtype=dtype, requires_grad=True)
                    weights = torch.randn(shape, dtype=dtype)
                    torch.manual_seed(seed)
                    ref = F.gumbel_softmax(logits, tau=tau, hard=hard, dim=dim)
                    torch.manual_seed(seed)
                    ours = gumbel_softmax(logits, tau=tau, hard=hard, dim=dim)
                    equal &= torch.equal(ref, ours)
                    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
                    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
                    scale = float(weights.abs().max()) / tau * torch.finfo(dtype).eps
                    worst = max(worst, _gap(g_ref, g_ours) / scale)
        report[str(dtype).removeprefix("torch.")] = {
            "values_equal": bool(equal),
            "largest_gradient_difference_eps": worst,
        }
    return report


def train(
    estimator: str, data: Any, steps: int, tau: float, seed: int, batch: int = 100
) -> dict[str, Any]:
    """Train the port with ``estimator`` at a fixed ``tau``; the training loss every 10 steps
    and the test loss (hard samples, fixed seed) at the end."""
    torch.manual_seed(seed)
    model: Any = AutoEncoder(PortedQuantizer)  # a module whose quantizer has attributes
    model.quantizer.estimator = estimator
    set_temperature(model.quantizer, tau)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_x = torch.from_numpy(data.train_images)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    curve, window = [], []
    start = time.perf_counter()
    for step in range(steps):
        first = (step * batch) % len(train_x)
        x = train_x[order[first : first + batch]]
        optimizer.zero_grad()
        loss, _ = model(x)
        loss.backward()
        optimizer.step()
        window.append(float(loss.detach()))
        if len(window) == 10:
            curve.append([step + 1, float(np.mean(window))])
            window = []
    seconds = time.perf_counter() - start
    model.eval()
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        test_loss, _ = model(torch.from_numpy(data.test_images))
    return {"curve": curve, "test_loss": float(test_loss), "seconds": seconds}


def train_seeds(estimator: str, data: Any, steps: int, tau: float, seeds: Sequence[int]) -> dict:
    """:func:`train` for each seed; the mean ± sample std of the final training loss (its last
    10-step window) and of the test loss, and the mean curve."""
    from reinmax.tasks.common import mean_and_std

    runs = [train(estimator, data, steps, tau, seed) for seed in seeds]
    final = mean_and_std([run["curve"][-1][1] for run in runs])
    test = mean_and_std([run["test_loss"] for run in runs])
    curve, _ = mean_and_std([[loss for _, loss in run["curve"]] for run in runs])
    steps_axis = [step for step, _ in runs[0]["curve"]]
    return {
        "seeds": list(seeds),
        "final_train_loss": {"mean": final[0], "std": final[1]},
        "test_loss": {"mean": test[0], "std": test[1]},
        "curve": [[step, float(loss)] for step, loss in zip(steps_axis, curve)],
        "runs": runs,
    }


def plot(result: dict, path: Path) -> Path:
    """The two mean training curves side by side."""
    from reinmax.tasks.common import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, run in result["runs"].items():
        steps, losses = zip(*run["curve"])
        test = run["test_loss"]
        ax.plot(steps, losses, label=f"{name} (test {test['mean']:.1f} ± {test['std']:.1f})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats per image)")
    seeds = len(next(iter(result["runs"].values()))["seeds"])
    ax.set_title(
        f"Gumbel VQ autoencoder, embedded MNIST, τ = {result['options']['tau']}, {seeds} seeds"
    )
    ax.legend()
    return save_figure(fig, path)


@command("python -m reinmax.tasks.walkthrough")
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reinmax.tasks.walkthrough", description=__doc__
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps per estimator")
    parser.add_argument("--check-steps", type=int, default=20, help="steps of the port check")
    parser.add_argument(
        "--compile-steps", type=int, default=6, help="annealed steps of the compile count"
    )
    parser.add_argument("--tau", type=float, default=1.3, help="the training temperature")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=3, help="training runs per estimator")
    parser.add_argument("--json", type=output_path, default=DEFAULT_JSON, help="the result file")
    parser.add_argument("--figure", type=output_path, default=DEFAULT_FIGURE, help="the figure")
    add_publish_option(parser)
    args = parser.parse_args(argv)
    from reinmax.tasks.vae.data import load_mnist

    torch.set_num_threads(1)
    data = load_mnist()
    seeds = range(args.seed, args.seed + args.seeds)
    images, compile_steps = data.train_images, args.compile_steps
    result: dict[str, Any] = {
        "task": "walkthrough",
        "data": data.source,
        "options": {
            "steps": args.steps,
            "check_steps": args.check_steps,
            "compile_steps": args.compile_steps,
            "tau": args.tau,
            "seed": args.seed,
            "seeds": args.seeds,
            "batch": 100,
        },
        "dropin": dropin_check(args.seed),
        "port": compare_ports(data.train_images, args.check_steps, args.seed),
        "compiles": {
            estimator: {
                "tau as a 0-d tensor": count_compiles(estimator, images, compile_steps, True),
                "tau as a python float": count_compiles(estimator, images, compile_steps, False),
                "tau as a 0-d tensor, first call compiled": count_compiles(
                    estimator, images, compile_steps, True, warm=False
                ),
            }
            for estimator in ("gumbel_softmax", "reinmax")
        },
        "runs": {
            name: train_seeds(name, data, args.steps, args.tau, seeds)
            for name in ("gumbel_softmax", "reinmax")
        },
    }
    write_json(args.json, result)
    plot(result, args.figure)
    print(f"wrote {args.json} and {args.figure}")
    for name, run in result["runs"].items():
        final, test = run["final_train_loss"], run["test_loss"]
        print(
            f"{name}: final train {final['mean']:.2f} ± {final['std']:.2f}, "
            f"test {test['mean']:.2f} ± {test['std']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The plots of ``reinmax task vae``: learning curves, reconstructions and prior samples, and the
gradient-quality bars, drawn from the checkpointed state of a command."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reinmax.tasks.common import estimator_names, mean_and_std, pyplot, save_figure
from reinmax.tasks.vae.analysis import ANALYSIS_LIMIT
from reinmax.tasks.vae.data import IMAGE_SIDE
from reinmax.tasks.vae.evaluation import SHOWN
from reinmax.tasks.vae.training import results

if TYPE_CHECKING:
    from matplotlib.artist import Artist

__all__ = ["plot_all", "plot_curves", "plot_gradients", "plot_images", "plot_results"]

_GRADIENT_FIELDS = ("relative_bias", "relative_std", "cosine")


def plot_all(
    paths: dict[str, Path], state: dict[str, Any], args: argparse.Namespace, test: np.ndarray
) -> None:
    """Every plot of a finished command, at its path in ``paths`` (``training.output_paths``)."""
    plot_curves(paths["curves"], state, args)
    plot_images(paths["reconstructions"], state, args, "reconstructions", test)
    plot_images(paths["prior_samples"], state, args, "prior_samples", None)
    plot_gradients(paths["gradients"], state, args.seed)


def plot_curves(path: Path, state: dict[str, Any], args: argparse.Namespace) -> None:
    """−ELBO per epoch: one panel per configuration, train solid and test dashed, mean ± std."""
    plt = pyplot()
    configs = args.config
    fig, axes = plt.subplots(
        1, len(configs), figsize=(5 * len(configs) + 2, 4), squeeze=False, layout="constrained"
    )
    # One colour per registered estimator, the same in every panel and every plot.
    colors = dict(
        zip(estimator_names(), itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    )
    for ax, config in zip(axes[0], configs):
        means = []
        for estimator in args.estimator:
            runs = [
                r for r in results(state) if r["config"] == config and r["estimator"] == estimator
            ]
            if runs:
                means += _plot_curve(ax, runs, estimator, colors[estimator])
        _focus(ax, means)
        ax.set_title(f"C×L = {config} ({args.backend})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("−ELBO (nats)")
    # One legend for every panel (the same colour is the same estimator everywhere).
    labelled: dict[str, Artist] = {}
    for ax in axes[0]:
        labelled.update(zip(ax.get_legend_handles_labels()[1], ax.get_legend_handles_labels()[0]))
    fig.legend(labelled.values(), labelled.keys(), loc="outside right upper", fontsize=7)
    save_figure(fig, path)


def _plot_curve(ax: Any, runs: list[dict[str, Any]], estimator: str, color: Any) -> list:
    """Train and test −ELBO of ``runs`` (one estimator's seeds): the mean and a ±std band;
    returns the two means."""
    epochs = np.arange(1, len(runs[0]["epochs"]) + 1)
    means = []
    for field, style in (("train_neg_elbo", "-"), ("test_neg_elbo", "--")):
        values = np.array([[h[field] for h in r["epochs"]] for r in runs])
        mean, std = mean_and_std(values)
        label = f"{estimator} ({field.split('_')[0]})"
        ax.plot(epochs, mean, style, color=color, label=label)
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15)
        means.append(mean)
    return means


def _focus(ax: Any, means: list[np.ndarray]) -> None:
    """Limit the y axis to what the curves span after the first tenth of training, where the
    estimators differ (the first epochs fall from hundreds of nats)."""
    tails = [m[len(m) // 10 :] for m in means if len(m)]
    if not tails:
        return
    low, high = min(t.min() for t in tails), max(t.max() for t in tails)
    pad = 0.05 * (high - low) or 1.0
    ax.set_ylim(low - pad, high + pad)


def plot_images(
    path: Path,
    state: dict[str, Any],
    args: argparse.Namespace,
    kind: str,
    originals: np.ndarray | None,
) -> None:
    """One grid per configuration: a row per estimator (the first seed, ``--seed``),
    :data:`SHOWN` images each, under a row of the ``originals`` when given. ``kind`` is the
    artifact shown (``reconstructions`` or ``prior_samples``)."""
    plt = pyplot()
    rows = [("original", None)] if originals is not None else []
    rows += [(e, e) for e in args.estimator]
    configs = args.config
    fig, axes = plt.subplots(
        len(rows) * len(configs), 1, figsize=(SHOWN, 1.1 * len(rows) * len(configs)), squeeze=False
    )
    for c, config in enumerate(configs):
        for r, (label, estimator) in enumerate(rows):
            ax = axes[c * len(rows) + r, 0]
            if estimator is None:
                assert originals is not None  # the row of the originals is there only with them
                images = originals[:SHOWN]
            else:
                entry = state["runs"].get(f"{estimator}/{config}/{args.seed}")
                if entry is None:
                    ax.axis("off")
                    continue
                images = entry["artifacts"][kind]
            _show_strip(ax, images, f"{config}\n{label}")
    fig.suptitle(f"{kind.replace('_', ' ')} ({args.backend}, seed {args.seed})")
    save_figure(fig, path)


def _show_strip(ax: Any, images: np.ndarray, label: str) -> None:
    """``images`` ``[N, 784]`` side by side, in grey, labelled on the left."""
    strip = np.concatenate(list(images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)), axis=1)
    ax.imshow(strip, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)


def plot_gradients(path: Path, state: dict[str, Any], seed: int = 0) -> None:
    """Bars of relative bias, relative std and cosine per estimator, per analysed model of
    ``seed`` (the first of the command)."""
    analysed = [r for r in results(state) if r["gradient_analysis"] and r["seed"] == seed]
    plt = pyplot()
    rows = max(len(analysed), 1)
    fig, axes = plt.subplots(
        rows,
        len(_GRADIENT_FIELDS),
        figsize=(4.5 * len(_GRADIENT_FIELDS), 3.6 * rows),
        squeeze=False,
        layout="constrained",
    )
    if not analysed:
        axes[0, 0].text(0.5, 0.5, f"no configuration with C**L < {ANALYSIS_LIMIT}", ha="center")
    for row, run in zip(axes, analysed):
        _plot_gradient_row(row, run)
    save_figure(fig, path)


def _plot_gradient_row(row: Any, run: dict[str, Any]) -> None:
    """One bar chart per statistic of one analysed model, an estimator per bar."""
    stats = run["gradient_analysis"]["estimators"]
    names = list(stats)
    short = [n.replace("gapped_straight_through", "GST").replace("_", "\n") for n in names]
    for ax, field in zip(row, _GRADIENT_FIELDS):
        ax.bar(range(len(names)), [stats[n][field] for n in names])
        ax.set_xticks(range(len(names)), short, fontsize=7)
        ax.set_title(f"{field} — model {run['estimator']}, {run['config']}", fontsize=8)
        if field == "relative_bias":
            floor = np.mean([stats[n]["bias_noise_floor"] for n in names])
            ax.axhline(floor, color="gray", ls=":", label="MC noise floor")
            ax.legend(fontsize=7)


def plot_results(results: list[dict[str, Any]], prefix: str | Path) -> dict[str, Path]:
    """The curves and the gradient bars of the finished runs of several results files (of
    ``reinmax task vae``, or a grid's ``grid.json``), as ``PREFIX_curves.png`` and
    ``PREFIX_gradients.png``; returns the paths. The gradient bars show the first seed."""
    runs = [run for result in results for run in result["runs"]]
    if not runs:
        raise ValueError("no finished run in the results given")
    state = {"runs": {f"{r['estimator']}/{r['config']}/{r['seed']}": {"result": r} for r in runs}}
    shown = argparse.Namespace(
        config=list(dict.fromkeys(r["config"] for r in runs)),
        estimator=list(dict.fromkeys(r["estimator"] for r in runs)),
        backend=", ".join(dict.fromkeys(result.get("backend", "?") for result in results)),
    )
    paths = {"curves": Path(f"{prefix}_curves.png"), "gradients": Path(f"{prefix}_gradients.png")}
    plot_curves(paths["curves"], state, shown)
    plot_gradients(paths["gradients"], state, min(r["seed"] for r in runs))
    return paths

"""The ListOps results as figures and a table, over the result files of every backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reinmax.runtime import ResultFileError, read_json
from reinmax.tasks.common import BACKENDS, estimator_names, mean_and_std, pyplot, save_figure
from reinmax.tasks.listops.data import Tree
from reinmax.tasks.listops.trees import parse_bracketed

__all__ = ["accuracy_table", "plot_curves", "plot_trees", "sibling_results"]

# The curves of one estimator: (panel row, value of a history entry, line style); solid lines
# carry the legend.
_CURVES = (
    (0, lambda entry: entry["valid"]["accuracy"], "-"),
    (0, lambda entry: entry["test"]["accuracy"], ":"),
    (1, lambda entry: entry["train_loss"], "-"),
)


def _estimator_order(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The registered estimators, then any other estimator the runs name (one registered by
    the process that wrote them), each once."""
    names = list(estimator_names())
    for run in runs:
        if run["estimator"] not in names:
            names.append(run["estimator"])
    return names


def _draw_tree(ax: Any, tree: Tree, tokens: Sequence[str], title: str) -> None:
    """Draw a tree with the tokens as leaves in order and each inner node above its children."""

    def place(node: Tree) -> tuple[float, int]:
        if isinstance(node, int):
            ax.text(node, -0.3, tokens[node], ha="center", va="top", fontsize=8, rotation=90)
            return float(node), 0
        children = [place(child) for child in node]
        x = float(np.mean([cx for cx, _ in children]))
        y = 1 + max(cy for _, cy in children)
        for cx, cy in children:
            ax.plot([x, cx], [y, cy], color="tab:blue", linewidth=1)
        ax.plot([x], [y], "o", color="tab:blue", markersize=3)
        return x, y

    _, height = place(tree)
    ax.set_xlim(-0.8, len(tokens) - 0.2)
    ax.set_ylim(-2.5, height + 0.5)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_trees(record: dict[str, Any], path: Path) -> Path | None:
    """Induced trees of a few real validation expressions beside their true structure."""
    examples = record.get("trees") or []
    if not examples:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(examples), 2, figsize=(11, 2.8 * len(examples)), squeeze=False)
    for row, example in enumerate(examples):
        tokens = example["tokens"]
        _draw_tree(
            axes[row, 0],
            parse_bracketed(example["gold"], tokens),
            tokens,
            f"gold (value {example['label']})",
        )
        title = f"induced, greedy (predicted {example['predicted']})"
        _draw_tree(axes[row, 1], parse_bracketed(example["induced"], tokens), tokens, title)
    fig.suptitle(f"{record['backend']} {record['estimator']} (seed {record['seed']})")
    return save_figure(fig, path)


def _plot_estimator(
    axes: Any, column: int, histories: list[list[dict]], colour: str | None, label: str
) -> None:
    """One estimator's curves in a backend's column: the mean over seeds, a band min..max."""
    epochs = min(len(history) for history in histories)
    x = np.arange(1, epochs + 1)
    for row, series, line in _CURVES:
        values = np.array([[series(entry) for entry in history[:epochs]] for history in histories])
        legend = label if line == "-" else None
        axes[row, column].plot(x, values.mean(0), line, color=colour, label=legend)
        axes[row, column].set_xticks(x)
        if len(histories) > 1:
            axes[row, column].fill_between(
                x, values.min(0), values.max(0), color=colour, alpha=0.15
            )


def _label_column(axes: Any, column: int, backend: str, baseline: float | None) -> None:
    if baseline is not None:
        axes[0, column].axhline(baseline, color="grey", linestyle="--", label="majority class")
    axes[0, column].set_title(f"{backend}: accuracy (solid real valid, dotted generated test)")
    axes[0, column].set_xlabel("epoch")
    axes[0, column].set_ylabel("accuracy")
    axes[0, column].legend(fontsize=8)
    axes[1, column].set_title(f"{backend}: training loss")
    axes[1, column].set_xlabel("epoch")
    axes[1, column].set_ylabel("cross-entropy")


def plot_curves(results: Sequence[dict[str, Any]], path: Path, baseline: float | None) -> Path:
    """Per-epoch accuracy on the real split and generated test, and training loss; one panel per
    backend, one colour per estimator (mean over seeds, band = min..max)."""
    plt = pyplot()
    runs = [run for result in results for run in result["runs"]]
    backends = sorted({run["backend"] for run in runs})
    fig, axes = plt.subplots(
        2, len(backends), figsize=(5.5 * len(backends), 7), squeeze=False, layout="constrained"
    )
    estimators = _estimator_order(runs)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = dict(zip(estimators, cycle, strict=False))
    for column, backend in enumerate(backends):
        for estimator in estimators:
            histories = [
                run["history"]
                for run in runs
                if run["backend"] == backend and run["estimator"] == estimator and run["history"]
            ]
            if histories:
                _plot_estimator(axes, column, histories, colours.get(estimator), estimator)
        _label_column(axes, column, backend, baseline)
    return save_figure(fig, path)


def _table_cell(values: list[float]) -> str:
    """Accuracies in percent: one as is, several as mean ± std and their count."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    mean, std = mean_and_std(values)
    return f"{mean:.1f} ± {std:.1f} (n={len(values)})"


def accuracy_table(results: Sequence[dict[str, Any]], baseline: float | None) -> str:
    """Markdown table, estimators x backends: real validation accuracy (mean ± std over seeds)
    at the epoch of best generated test accuracy."""
    runs = [run for result in results for run in result["runs"] if "final" in run]
    backends = [b for b in BACKENDS if any(run["backend"] == b for run in runs)]
    lines = ["| estimator | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for estimator in _estimator_order(runs):
        cells = [
            _table_cell(
                [
                    100 * run["final"]["valid_accuracy"]
                    for run in runs
                    if run["backend"] == backend and run["estimator"] == estimator
                ]
            )
            for backend in backends
        ]
        if any(cells):
            lines.append(f"| {estimator} | " + " | ".join(cells) + " |")
    if baseline is not None:
        lines.append(
            "| majority class | " + " | ".join(f"{100 * baseline:.1f}" for _ in backends) + " |"
        )
    return "\n".join(lines)


def sibling_results(json_path: Path) -> list[dict[str, Any]]:
    """The results of the other backends written beside ``json_path``, each checked.

    Called before training too, so that a truncated or foreign file stops the command at once
    (:class:`~reinmax.runtime.ResultFileError` naming it) rather than after hours of training.
    """
    results = []
    for backend in BACKENDS:
        path = json_path.parent / f"{backend}.json"
        if path.exists() and path != json_path:
            result = read_json(path)
            if not isinstance(result, dict) or result.get("task") != "listops":
                raise ResultFileError(
                    f"{path} is not a ListOps result file; move it away or write the results "
                    "to another folder"
                )
            results.append(result)
    return results

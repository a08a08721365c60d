"""``reinmax task vae``: the command line, from its arguments to the results, plots and table."""

from __future__ import annotations

import argparse
from pathlib import Path

from reinmax.runtime import (
    add_publish_option,
    add_quiet_option,
    check_destination,
    command,
    non_negative_int,
    positive_float,
    positive_int,
)
from reinmax.tasks import parallel
from reinmax.tasks.common import (
    BACKENDS,
    choose_estimators,
    estimator_names,
    require_conformance,
)
from reinmax.tasks.vae.config import (
    BATCH_SIZE,
    CONFIGS,
    GUMBEL_RAO_K,
    OPTIMIZERS,
    SETTING_OF,
    TUNED_ESTIMATORS,
    ModelSpec,
    model_spec,
    parse_config,
)
from reinmax.tasks.vae.data import MnistData, load_mnist
from reinmax.tasks.vae.plots import plot_all
from reinmax.tasks.vae.training import (
    RESULT_OPTIONS,
    Session,
    format_gradient_table,
    format_table,
    initial_state,
    output_paths,
    results,
    steps_per_epoch,
    summary,
    train_run,
    write_results,
)

__all__ = ["build_parser", "main", "parse_args"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``reinmax task vae``, unchecked (see :func:`parse_args`)."""
    parser = argparse.ArgumentParser(
        prog="reinmax task vae",
        description="Train a VAE with categorical latents on MNIST with each estimator.",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument(
        "--estimator",
        nargs="+",
        default=["all"],
        help=f"'all' or some of: {', '.join(estimator_names())}",
    )
    parser.add_argument(
        "--config", nargs="+", default=["8x4"], help=f"'all' or CxL, e.g. {' '.join(CONFIGS)}"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=5, help="epochs per run (paper: 160)"
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, help="number of seeds (SEED .. SEED+S-1)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="MNIST IDX files (default: embedded 5k digits)"
    )
    parser.add_argument(
        "--json",
        default="results/vae/vae.json",
        help="results file; plots and checkpoint go beside it",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint beside --json"
    )
    _add_hyperparameter_options(parser)
    _add_evaluation_options(parser)
    parallel.add_options(parser)
    add_quiet_option(parser)
    add_publish_option(parser)
    return parser


def _add_hyperparameter_options(parser: argparse.ArgumentParser) -> None:
    tuned = (
        f"tuned for {', '.join(TUNED_ESTIMATORS)} on {', '.join(CONFIGS)} ("
        f"{', '.join(SETTING_OF)}: ReinMax's); required otherwise"
    )
    parser.add_argument(
        "--lr", type=positive_float, default=None, help=f"the learning rate ({tuned})"
    )
    parser.add_argument("--tau", type=positive_float, default=None, help=f"the τ ({tuned})")
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=None, help=f"the optimizer ({tuned})"
    )
    parser.add_argument(
        "--gumbel-rao-k",
        type=positive_int,
        default=GUMBEL_RAO_K,
        help="Gumbel-Rao's conditional draws K (default %(default)s, as the paper's scripts)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=BATCH_SIZE,
        help="the global batch, split evenly among the workers (default %(default)s)",
    )
    parser.add_argument(
        "--max-batches",
        type=positive_int,
        default=None,
        help="stop each epoch after this many batches",
    )


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval-samples",
        type=positive_int,
        default=100,
        help="draws per test image for the final estimate",
    )
    parser.add_argument(
        "--analysis-images",
        type=non_negative_int,
        default=4,
        help="images in the gradient analysis (0: none)",
    )
    parser.add_argument(
        "--analysis-draws",
        type=positive_int,
        default=1024,
        help="estimator draws per analysed image",
    )


def parse_args(
    argv: list[str] | None = None,
) -> tuple[argparse.Namespace, dict[tuple[str, str], ModelSpec]]:
    """The checked arguments, ``all`` expanded in ``--estimator`` and ``--config``, and the
    :class:`ModelSpec` of every (config, estimator). A wrong value, or hyper-parameters missing
    where none are tuned, is a usage error (exit status 2) naming what to pass."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.estimator = choose_estimators(parser, args.estimator)
    args.config = list(CONFIGS) if args.config == ["all"] else args.config
    for config in args.config:
        try:
            parse_config(config)
        except ValueError as exc:
            parser.error(f"--config: {exc}")
    specs = {}
    for config in args.config:
        for estimator in args.estimator:
            try:
                specs[config, estimator] = model_spec(
                    config,
                    estimator,
                    lr=args.lr,
                    tau=args.tau,
                    optimizer=args.optimizer,
                    gumbel_rao_k=args.gumbel_rao_k,
                )
            except ValueError as exc:
                parser.error(str(exc))
    args.world = parallel.check_options(parser, args, {"--batch-size": args.batch_size})
    return args, specs


def _check_last_batch(args: argparse.Namespace, data: MnistData) -> None:
    """A usage error (exit status 2) when the short last batch of an epoch, if it is trained
    on, does not divide among the workers."""
    train = len(data.train_images)
    last = train - (steps_per_epoch(train, args.batch_size, None) - 1) * args.batch_size
    if steps_per_epoch(train, args.batch_size, args.max_batches) * args.batch_size > train:
        try:
            parallel.check_divides(last, args.world, "the last batch of an epoch")
        except ValueError as error:
            build_parser().error(
                f"{error} ({train} training images, --batch-size {args.batch_size})"
            )


@command("reinmax task vae")
def main(argv: list[str] | None = None) -> int:
    """``reinmax task vae``: train, evaluate, analyse and plot; see ``--help``."""
    args, specs = parse_args(argv)
    check_destination(args.json)
    data = load_mnist(args.data_dir)
    _check_last_batch(args, data)
    agreed = (*RESULT_OPTIONS, "json", "resume")
    return parallel.run_command(
        "reinmax task vae", args, agreed, lambda engine: _run(args, specs, data, engine)
    )


def _run(
    args: argparse.Namespace,
    specs: dict[tuple[str, str], ModelSpec],
    data: MnistData,
    engine: parallel.Engine,
) -> None:
    """Every run of the command, then (in the writing process) the results, plots and table."""
    json_path = Path(args.json)
    paths = output_paths(json_path)
    state = initial_state(args, paths["checkpoint"])
    require_conformance(args.backend, args.estimator)
    session = Session(args, data, state, json_path, engine)
    for config in args.config:
        for estimator in args.estimator:
            for seed in range(args.seed, args.seed + args.seeds):
                key = f"{estimator}/{config}/{seed}"
                if key not in state["runs"]:
                    train_run(session, key, specs[config, estimator], seed)
    if not engine.writer:
        return
    write_results(session, complete=True)
    plot_all(paths, state, args, data.test_images)
    table = summary(results(state))
    print(format_table(table))
    gradients = format_gradient_table(table)
    if gradients:
        print("\nRelative std ‖σ‖/‖mean‖ of each estimator's own gradient, start and end:")
        print(gradients)
    print(f"results: {json_path}")

"""``python -m reinmax.tasks.bench.portable_sampling``: does every backend draw the same category?

A measurement, not a test: for each width and input dtype, N(0, 1) logits (every fourth row with
ties at its maximum and masked entries) and portable uniforms (``reinmax.noise``), the index of
the portable inverse-CDF sample (docs/SPEC.md) on NumPy, PyTorch, JAX and TensorFlow, eager and
compiled (torch.compile, jax.jit, tf.function with jit_compile=True), counted against NumPy's.
Rows go in chunks of a fixed shape, so each compiled variant compiles once per width. Prints
the table, writes JSON with its provenance under ``results/`` by default (``--publish`` to
write under ``docs/results/``) and plots each variant's time per element against the width.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reinmax import core
from reinmax.noise import Seed, uniform_rows
from reinmax.runtime import (
    add_publish_option,
    add_quiet_option,
    command,
    markdown_table,
    non_negative_int,
    output_path,
    positive_int,
    progress,
    status,
    write_json,
)

PROG = "python -m reinmax.tasks.bench.portable_sampling"

VARIANTS = (
    "torch eager",
    "torch.compile",
    "jax eager",
    "jax.jit",
    "tensorflow eager",
    "tf.function(jit_compile=True)",
)
DTYPES = ("float32", "bfloat16", "float16")


def _index(xp: Any) -> Callable[[Any, Any], Any]:
    def index(theta: Any, u: Any) -> Any:
        return core.inverse_cdf_index(core.sampling_weights(theta, xp=xp), u, xp=xp)

    return index


def variants() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Each backend's ``(float32 logits, uniforms) -> index`` in NumPy, eager and compiled."""
    import torch  # before TensorFlow, in one process

    # isort: split
    import jax
    import jax.numpy as jnp
    import tensorflow as tf

    from reinmax.backends.tensorflow import Namespace
    from reinmax.backends.torch import xp as torch_xp

    torch_eager = _index(torch_xp)
    torch_compiled = torch.compile(torch_eager, dynamic=False)
    jax_eager = _index(jnp)
    jax_jit = jax.jit(jax_eager)
    tf_eager = _index(Namespace)
    tf_xla = tf.function(tf_eager, jit_compile=True)
    return {
        "torch eager": lambda t, u: torch_eager(torch.asarray(t), torch.asarray(u)).numpy(),
        "torch.compile": lambda t, u: torch_compiled(torch.asarray(t), torch.asarray(u)).numpy(),
        "jax eager": lambda t, u: np.asarray(jax_eager(jnp.asarray(t), jnp.asarray(u))),
        "jax.jit": lambda t, u: np.asarray(jax_jit(jnp.asarray(t), jnp.asarray(u))),
        "tensorflow eager": lambda t, u: tf_eager(tf.constant(t), tf.constant(u)).numpy(),
        "tf.function(jit_compile=True)": lambda t, u: tf_xla(
            tf.constant(t), tf.constant(u)
        ).numpy(),
    }


def logits(rows: int, n: int, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """N(0, 1) logits rounded to ``dtype`` and returned in float32 (exactly what the core computes
    with); every fourth row has ties at its maximum and a fifth of its entries masked."""
    theta = rng.standard_normal((rows, n), dtype=np.float32)
    tied = theta[::4]
    tied[rng.random(tied.shape) < 0.2] = -np.inf
    tied[:, 0] = 0.0
    top = np.max(tied, axis=-1, keepdims=True)
    theta[::4] = np.where(rng.random(tied.shape) < 0.25, top, tied)
    if dtype == "float32":
        return theta
    import ml_dtypes

    kind = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    return theta.astype(kind).astype(np.float32)


def measure(widths: dict[int, int], chunk_elements: int, seed: int) -> list[dict[str, Any]]:
    import array_api_compat.numpy as npx

    runners = variants()
    reference = _index(npx)
    records = []
    for n, rows in widths.items():
        chunk = max(1, min(rows, chunk_elements // n))
        for dtype in DTYPES:
            counts = dict.fromkeys(VARIANTS, 0)
            seconds = dict.fromkeys(VARIANTS, 0.0)
            rng = np.random.default_rng([seed, n, DTYPES.index(dtype)])
            done = timed_rows = 0
            chunks = -(-rows // chunk)
            for i in progress(range(chunks), total=chunks, desc=f"{n} categories, {dtype}"):
                # Whole chunks only (a compiled variant keeps its one shape): the last may overlap.
                start = min(done, rows - chunk)
                theta = logits(chunk, n, dtype, rng)
                u = np.asarray(uniform_rows(Seed(seed, n, start), chunk, 1, np.float32, xp=npx))
                u = u[:, 0]
                expected = reference(theta, u)
                # The first chunk compiles: it is timed only when it is the only one.
                timed = i > 0 or chunks == 1
                for name in VARIANTS:
                    begin = time.perf_counter()
                    got = runners[name](theta, u)
                    if timed:
                        seconds[name] += time.perf_counter() - begin
                    counts[name] += int(np.sum(np.asarray(got) != expected))
                timed_rows += chunk if timed else 0
                done = start + chunk
            for name in VARIANTS:
                records.append(
                    {
                        "categories": n,
                        "rows": rows,
                        "dtype": dtype,
                        "variant": name,
                        "mismatches_vs_numpy": counts[name],
                        "seconds": round(seconds[name], 3),
                        "timed_rows": timed_rows,
                    }
                )
            status(
                f"{n:>5} categories, {rows} rows, {dtype}: mismatches "
                + ", ".join(f"{name} {counts[name]}" for name in VARIANTS)
            )
    return records


def mismatch_table(records: list[dict[str, Any]]) -> str:
    """Markdown: mismatches against NumPy, one row per width and dtype, one column per variant."""
    header = ["categories", "rows", "dtype", *VARIANTS]
    table = []
    for n, rows in dict.fromkeys((r["categories"], r["rows"]) for r in records):
        for dtype in DTYPES:
            found = {
                r["variant"]: r["mismatches_vs_numpy"]
                for r in records
                if r["categories"] == n and r["dtype"] == dtype
            }
            table.append([n, rows, dtype, *(found[v] for v in VARIANTS)])
    return markdown_table(header, table)


def plot(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Each variant's time per element (mean over the input dtypes) against the row width."""
    from reinmax.tasks.common import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for variant in VARIANTS:
        mine = [r for r in records if r["variant"] == variant]
        widths = sorted({r["categories"] for r in mine})
        per_element = [
            1e9
            * np.mean([r["seconds"] / (r["timed_rows"] * n) for r in mine if r["categories"] == n])
            for n in widths
        ]
        ax.plot(widths, per_element, marker="o", label=variant)
    ax.set(xscale="log", yscale="log", xlabel="categories per row", ylabel="ns per element")
    ax.set_title("Portable inverse-CDF index (0 mismatches means every backend agrees)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--widths",
        nargs="+",
        default=["16:1000000", "64:1000000", "300:1000000", "3000:1000000"],
        help="CATEGORIES:ROWS pairs (default 10^6 rows at 16, 64, 300 and 3000 categories)",
    )
    parser.add_argument("--chunk-elements", type=positive_int, default=1 << 21)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--json", type=output_path, default=Path("results") / "portable_sampling.json"
    )
    parser.add_argument(
        "--plot", type=output_path, default=Path("results") / "portable_sampling.png"
    )
    add_quiet_option(parser)
    add_publish_option(parser)
    args = parser.parse_args(argv)
    widths = {}
    for pair in args.widths:
        n, _, rows = pair.partition(":")
        if not (n.isdigit() and rows.isdigit() and int(n) > 0 and int(rows) > 0):
            parser.error(f"--widths takes CATEGORIES:ROWS with positive integers, got {pair!r}")
        widths[int(n)] = int(rows)
    records = measure(widths, args.chunk_elements, args.seed)
    print(mismatch_table(records))
    path = write_json(args.json, {"widths": widths, "records": records})
    figure = plot(records, args.plot)
    print(f"wrote {path} and {figure}")
    return 0 if all(r["mismatches_vs_numpy"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

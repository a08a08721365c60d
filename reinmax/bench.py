"""``reinmax bench``: speed and memory of every estimator, forward plus backward.

Each case times one forward and backward pass (median of repeats after warm-up, with the
interquartile range) of an estimator in float32, with the category axis last, eagerly and under
the framework's compiler, beside three baselines measured on the same tensors:

- ``reference``: the PyPI package ``reinmax`` 0.1.0 (PyTorch), loaded from its own directory
  (``.reference/reinmax-0.1.0`` or ``--reference-dir``) under another module name;
- ``torch_gumbel_softmax``: ``torch.nn.functional.gumbel_softmax(hard=True)``;
- ``softmax``: the floor, one softmax forward plus backward in the same framework.

Every case returns the loss as well as the gradient, so that no compiler can drop the sampling
as dead code (an estimator whose backward never reads the sample would otherwise look cheaper).

Memory is what each framework can report on its own terms: PyTorch, the bytes saved for the
backward pass (``saved_tensors_hooks``), and on a GPU also the peak of allocated memory during
the step; JAX under ``jit``, the compiled program's temporary and output bytes
(``memory_analysis``); TensorFlow, not measured (None).

``--device cuda`` runs PyTorch on the first CUDA device (each step ends with a synchronize) and
JAX on its default device, which must then be a GPU. Before timing anything it checks PyTorch on
the device against the CPU (:func:`device_check`) and refuses to time a device that disagrees.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reinmax.core import ESTIMATORS as CORE_ESTIMATORS
from reinmax.runtime import add_quiet_option, command, positive_float, positive_int, status

DEFAULT_SHAPES = ((64, 4, 8), (100, 30, 10), (1024, 64, 64), (4096, 32, 256))
ESTIMATORS = tuple(CORE_ESTIMATORS)
BASELINES = ("reference", "torch_gumbel_softmax", "softmax")
TAU = 1.3
# The two large shapes have 2^20 and 2^25 elements; the goals differ above this size.
LARGE = 1 << 20
_REPO = Path(__file__).resolve().parents[1]


@dataclass
class Record:
    backend: str
    name: str
    mode: str
    shape: tuple[int, ...]
    median_ms: float
    iqr_ms: float
    repeats: int
    memory_bytes: int | None = None
    memory_kind: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _measure(
    steps: dict[Any, Callable[[], None]], min_time: float, max_repeats: int
) -> tuple[dict[Any, list[float]], dict[Any, Exception]]:
    """Seconds per call of each step, in interleaved rounds.

    Each step is warmed up (compilation happens here); then every round calls each step once,
    until each has had ``min_time`` seconds or ``max_repeats`` calls (at least 3). Interleaving
    makes the machine's slow drifts (other load, clocks) fall on every case alike, so that the
    ratios between cases stay meaningful. A step that raises is dropped with its error.
    """
    times: dict[Any, list[float]] = {}
    errors: dict[Any, Exception] = {}
    for key, step in steps.items():
        try:
            for _ in range(3):
                step()
            times[key] = []
        except Exception as err:  # a failing case is reported, not fatal to the others
            errors[key] = err
    spent = dict.fromkeys(times, 0.0)
    live = [key for key in steps if key in times]
    while live:
        for key in list(live):
            t0 = time.perf_counter()
            try:
                steps[key]()
            except Exception as err:
                errors[key] = err
                live.remove(key)
                continue
            elapsed = time.perf_counter() - t0
            times[key].append(elapsed)
            spent[key] += elapsed
            n = len(times[key])
            if n >= 3 and (spent[key] >= min_time or n >= max_repeats):
                live.remove(key)
    return {k: v for k, v in times.items() if k not in errors}, errors


def load_reference(directory: Path | None = None) -> Any | None:
    """The reference package's module, loaded from its file as ``reinmax_reference``."""
    directory = directory or _REPO / ".reference" / "reinmax-0.1.0"
    path = directory / "reinmax" / "reinmax.py"
    if not path.exists():
        return None
    if "reinmax_reference" in sys.modules:
        return sys.modules["reinmax_reference"]
    spec = importlib.util.spec_from_file_location("reinmax_reference", path)
    module = importlib.util.module_from_spec(spec)
    # Registered so that torch.compile can find the module of the functions it traces.
    sys.modules["reinmax_reference"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------


def _torch_cases(shape, names, modes, reference, device) -> dict[tuple[str, str], Callable]:
    import torch
    import torch.nn.functional as F

    from reinmax.backends import torch as rt

    # Every case compiles its own lambda of the same code object, once per shape: above Dynamo's
    # default recompile limit it would silently fall back to eager and time that instead.
    for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 4096)
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(shape, device=device)
    sync = torch.cuda.synchronize if x.is_cuda else lambda: None

    def estimator(name: str) -> Callable:
        return lambda t: getattr(rt, name)(t, TAU)

    fns: dict[str, Callable] = {n: estimator(n) for n in names if n in ESTIMATORS}
    if "softmax" in names:
        fns["softmax"] = lambda t: (torch.softmax(t, dim=-1),)
    if "torch_gumbel_softmax" in names:
        fns["torch_gumbel_softmax"] = lambda t: (F.gumbel_softmax(t, tau=TAU, hard=True),)
    if "reference" in names and reference is not None:
        fns["reference"] = lambda t: reference.reinmax(t, TAU)

    cases = {}
    for name, fn in fns.items():
        for mode in modes:
            f = torch.compile(fn) if mode == "compiled" else fn

            def step(f: Callable = f) -> None:
                out = f(x)
                loss = sum((o * w).sum() for o in out)
                torch.autograd.grad(loss, x)
                sync()

            cases[(name, mode)] = step
    return cases


def _torch_cuda_peak_bytes(step: Callable[[], None]) -> int:
    """Peak CUDA memory allocated during one step, above what was allocated before it."""
    import torch

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    return torch.cuda.max_memory_allocated() - before


def _torch_saved_bytes(step: Callable[[], None]) -> int:
    import torch

    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


# ---------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------


def _jax_cases(shape, names, modes) -> dict[tuple[str, str], Callable]:
    import jax
    import jax.numpy as jnp

    from reinmax.backends import jax as rj

    key = jax.random.key(0)
    x = jax.random.normal(key, shape, dtype=jnp.float32)
    w = jax.random.normal(jax.random.key(1), shape, dtype=jnp.float32)

    def loss_of(name: str) -> Callable:
        if name == "softmax":
            return lambda t, k: jnp.sum(jax.nn.softmax(t, axis=-1) * w)

        def loss(t: jax.Array, k: jax.Array) -> jax.Array:
            hard, soft = getattr(rj, name)(t, TAU, rng=k)
            return jnp.sum(hard * w) + jnp.sum(soft * w)

        return loss

    cases = {}
    for name in names:
        if name not in ESTIMATORS and name != "softmax":
            continue
        for mode in modes:
            grad = jax.value_and_grad(loss_of(name))
            if mode == "compiled":
                grad = jax.jit(grad)

            def step(grad: Callable = grad) -> None:
                jax.block_until_ready(grad(x, key))

            step.jitted = (jax.jit(jax.value_and_grad(loss_of(name))), x, key)
            cases[(name, mode)] = step
    return cases


def _jax_memory(step: Callable) -> int | None:
    fn, x, key = step.jitted
    analysis = fn.lower(x, key).compile().memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


# ---------------------------------------------------------------------------------------------
# TensorFlow
# ---------------------------------------------------------------------------------------------


def _tf_cases(shape, names, modes) -> dict[tuple[str, str], Callable]:
    import tensorflow as tf

    from reinmax.backends import tensorflow as rtf

    x = tf.random.normal(shape)
    w = tf.random.normal(shape)

    def grad_of(name: str) -> Callable:
        def grad(t: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(t)
                if name == "softmax":
                    loss = tf.reduce_sum(tf.nn.softmax(t, axis=-1) * w)
                else:
                    hard, soft = getattr(rtf, name)(t, TAU)
                    loss = tf.reduce_sum(hard * w) + tf.reduce_sum(soft * w)
            return loss, tape.gradient(loss, t)

        return grad

    cases = {}
    for name in names:
        if name not in ESTIMATORS and name != "softmax":
            continue
        for mode in modes:
            grad = grad_of(name)
            if mode == "compiled":
                grad = tf.function(grad, jit_compile=True)

            def step(grad: Callable = grad) -> None:
                _loss, g = grad(x)
                g.numpy()

            cases[(name, mode)] = step
    return cases


# ---------------------------------------------------------------------------------------------
# Running, reporting
# ---------------------------------------------------------------------------------------------


def _framework_versions(backends: list[str]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for b in backends:
        versions[b] = importlib.import_module(b).__version__
    return versions


def machine(backends: Sequence[str] = ()) -> dict[str, Any]:
    import os

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if "jax" in backends:
        import jax

        info["jax_device"] = str(jax.devices()[0])
    return info


def run(
    backends: list[str],
    names: list[str],
    shapes: list[tuple[int, ...]],
    modes: list[str],
    *,
    min_time: float,
    max_repeats: int,
    reference_dir: Path | None = None,
    device: str = "cpu",
    on_records: Callable[[list[Record]], None] | None = None,
) -> list[Record]:
    """Every case of ``names`` × ``modes`` at each shape and backend; ``on_records`` gets the
    records so far after each shape and backend (for partial results on disk)."""
    from reinmax.tasks.common import import_framework, progress

    for b in backends:
        import_framework(b)
    if device != "cpu":
        _check_device(backends, device)
    reference = load_reference(reference_dir) if "reference" in names else None
    if "reference" in names and reference is None:
        print("reference package not found: run .ci/setup or pass --reference-dir", file=sys.stderr)
    plan = []
    for shape in shapes:
        for backend in backends:
            plan.append((shape, backend))
    records: list[Record] = []
    for shape, backend in progress(plan, total=len(plan), desc="bench"):
        if backend == "torch":
            cases = _torch_cases(shape, names, modes, reference, device)
        elif backend == "jax":
            cases = _jax_cases(shape, names, modes)
        else:
            cases = _tf_cases(shape, names, modes)
        measured, errors = _measure(cases, min_time, max_repeats)
        for (name, mode), step in cases.items():
            rec = Record(backend, name, mode, tuple(shape), float("nan"), float("nan"), 0)
            if (name, mode) in errors:
                err = errors[(name, mode)]
                rec.error = f"{type(err).__name__}: {err}"[:300]
                records.append(rec)
                continue
            try:
                times = measured[(name, mode)]
                q = statistics.quantiles(times, n=4)
                rec.median_ms = 1e3 * statistics.median(times)
                rec.iqr_ms = 1e3 * (q[2] - q[0])
                rec.repeats = len(times)
                if backend == "torch" and mode == "eager":
                    rec.memory_bytes, rec.memory_kind = (
                        _torch_saved_bytes(step),
                        "saved_for_backward",
                    )
                    if device != "cpu":
                        rec.extra["cuda_peak_bytes"] = _torch_cuda_peak_bytes(step)
                elif backend == "jax" and mode == "compiled":
                    rec.memory_bytes, rec.memory_kind = _jax_memory(step), "xla_temp_plus_output"
            except Exception as err:  # a failing case is reported, not fatal to the others
                rec.error = f"{type(err).__name__}: {err}"[:300]
            records.append(rec)
        if on_records is not None:
            on_records(records)
    return records


def device_check(device: str = "cuda", *, compiled: bool = True) -> list[dict[str, Any]]:
    """PyTorch on ``device`` against the CPU, given the same noise: samples and gradients.

    Every estimator in float64 and float32 at four shapes, with a one-category row, a row with
    every other category masked and an empty row; then ReinMax and ST under ``torch.compile``
    (the generic kernels, fused by Inductor). Gradient differences are in units of the dtype's
    eps times the largest gradient entry, over rows whose samples agree, and must stay within the
    conformance suite's tolerance; as there, every sample must agree, and masked categories must
    get exactly zero gradient on both.
    """
    import torch

    from reinmax.backends import torch as rt
    from reinmax.conformance.suite import TOLERANCE

    def run_case(name: str, x, noise, w1, w2, fn) -> dict[str, Any]:
        out = []
        for where, f in (("cpu", getattr(rt, name)), (device, fn)):
            xd = x.to(where).requires_grad_()
            hard, soft = f(xd, TAU, noise=noise.to(where))
            loss = (hard * w1.to(where)).sum() + (soft * w2.to(where)).sum()
            (grad,) = torch.autograd.grad(loss, xd)
            out.append((hard.detach().cpu(), grad.cpu()))
        (hard_cpu, grad_cpu), (hard_dev, grad_dev) = out
        same = (hard_cpu == hard_dev).all(-1, keepdim=True)
        scale = grad_cpu.abs().max().item() or 1.0
        error = ((grad_cpu - grad_dev).abs() * same).max().item()
        error /= scale * torch.finfo(x.dtype).eps
        mismatches = int((~same).sum())
        nan_equal = torch.equal(torch.isnan(grad_cpu), torch.isnan(grad_dev))
        masked = torch.isneginf(x)
        masked_zero = bool((grad_cpu[masked] == 0).all() and (grad_dev[masked] == 0).all())
        return {
            "sample_mismatches": mismatches,
            "max_scaled_error": error,
            "nan_pattern_equal": nan_equal,
            "masked_gradient_zero": masked_zero,
            "passed": mismatches == 0 and error <= TOLERANCE and nan_equal and masked_zero,
        }

    records = []
    cases = [
        (n, d, s, False)
        for d in (torch.float64, torch.float32)
        for s in _CHECK_SHAPES
        for n in ESTIMATORS
    ]
    if compiled:
        cases += [
            (n, torch.float32, s, True)
            for n in ("reinmax", "straight_through")
            for s in _CHECK_SHAPES[1:3]
        ]
    for name, dtype, shape, compile_it in cases:
        g = torch.Generator().manual_seed(0)
        x = 3 * torch.randn(shape, generator=g, dtype=dtype)
        rows = x.view(-1, shape[-1])
        rows[0, 1:] = -math.inf
        rows[1, ::2] = -math.inf
        rows[2] = -math.inf
        w1, w2 = (
            torch.randn(shape, generator=g, dtype=dtype),
            torch.randn(shape, generator=g, dtype=dtype),
        )
        noise_shape = {"gumbel_softmax": shape, "gumbel_rao": (2, *shape)}.get(name, shape[:-1])
        noise = torch.rand(noise_shape, generator=g, dtype=dtype)
        fn = getattr(rt, name)
        if compile_it:
            fn = torch.compile(lambda t, tau, noise, fn=fn: fn(t, tau, noise=noise))
        rec = {
            "name": name,
            "compiled": compile_it,
            "dtype": str(dtype).replace("torch.", ""),
            "shape": list(shape),
        }
        rec.update(run_case(name, x, noise, w1, w2, fn))
        records.append(rec)
    return records


_CHECK_SHAPES = ((64, 4, 8), (100, 30, 10), (2200, 40), (512, 300))


def _check_device(backends: list[str], device: str) -> None:
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if "torch" in backends:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: PyTorch sees no CUDA device")
    if "jax" in backends:
        import jax

        if jax.devices()[0].platform != "gpu":
            raise RuntimeError(f"--device cuda: JAX's default device is {jax.devices()[0]}")
    if "tensorflow" in backends:
        raise ValueError("--device cuda covers torch and jax; drop tensorflow from --backends")


def _lookup(records: list[Record]) -> dict[tuple, Record]:
    return {(r.backend, r.name, r.mode, r.shape): r for r in records}


def ratios(records: list[Record]) -> list[dict[str, Any]]:
    """Each record's time relative to the reference package, our own ST and the softmax floor."""
    by = _lookup(records)
    rows = []
    for r in records:
        row = {"backend": r.backend, "name": r.name, "mode": r.mode, "shape": r.shape}
        for label, other in (
            ("vs_reference", ("torch", "reference", "eager", r.shape)),
            ("vs_straight_through", (r.backend, "straight_through", r.mode, r.shape)),
            ("vs_softmax", (r.backend, "softmax", r.mode, r.shape)),
        ):
            o = by.get(other)
            row[label] = r.median_ms / o.median_ms if o and o.median_ms == o.median_ms else None
        rows.append(row)
    return rows


def goals(records: list[Record], overhead_us: float | None) -> list[dict[str, Any]]:
    """The issue's goals, each with the measured value and whether it is met."""
    by = _lookup(records)
    out = []
    shapes = sorted({r.shape for r in records}, key=math.prod)
    for shape in shapes:
        ours = by.get(("torch", "reinmax", "eager", shape))
        ref = by.get(("torch", "reference", "eager", shape))
        if ours and ref:
            speedup = ref.median_ms / ours.median_ms
            large = math.prod(shape) >= LARGE
            target = 3.0 if large else 1.0
            out.append(
                {
                    "goal": f"torch reinmax vs reference at {shape}: ≥{target:g}× faster",
                    "value": speedup,
                    "met": speedup >= target,
                }
            )
        for backend in ("torch", "jax", "tensorflow"):
            for mode in ("eager", "compiled"):
                rm = by.get((backend, "reinmax", mode, shape))
                st = by.get((backend, "straight_through", mode, shape))
                sm = by.get((backend, "softmax", mode, shape))
                if rm and st:
                    v = rm.median_ms / st.median_ms
                    out.append(
                        {
                            "goal": f"{backend} {mode} reinmax/ST at {shape} ≤ 1.25",
                            "value": v,
                            "met": v <= 1.25,
                        }
                    )
                limit = {("torch", "eager"): 4.0, ("torch", "compiled"): 2.0}.get((backend, mode))
                if backend == "jax" and mode == "compiled":
                    limit = 2.0
                if rm and sm and limit:
                    v = rm.median_ms / sm.median_ms
                    out.append(
                        {
                            "goal": f"{backend} {mode} reinmax/softmax at {shape} ≤ {limit:g}",
                            "value": v,
                            "met": v <= limit,
                        }
                    )
    if overhead_us is not None:
        out.append(
            {
                "goal": "top-level dispatch overhead ≤ 5 µs",
                "value": overhead_us,
                "met": overhead_us <= 5.0,
            }
        )
    return out


def dispatch_overhead_us(repeats: int = 200_000) -> float | None:
    """Extra time per call of ``reinmax.reinmax`` over ``reinmax.backends.torch.reinmax``.

    The two run the same code but for one step: the top-level function finds the backend from
    the type of ``logits``, the backend module's checks that it owns ``logits``. That step is
    timed on its own (best of interleaved rounds): the difference of two whole calls of a few
    hundred microseconds is below the noise of either.
    """
    try:
        import torch
    except ImportError:
        return None
    import reinmax
    from reinmax.backends import torch as rt

    x = torch.randn(2, 3)
    top, direct = reinmax._functions, rt._functions
    assert top._backend_for(x) is direct._backend_for(x)

    def per_call(functions: Any) -> float:
        step = functions._backend_for
        t0 = time.perf_counter()
        for _ in range(repeats // 20):
            step(x)
        return (time.perf_counter() - t0) / (repeats // 20)

    tops, directs = [], []
    for _ in range(20):
        tops.append(per_call(top))
        directs.append(per_call(direct))
    return 1e6 * (min(tops) - min(directs))


def table(records: list[Record]) -> str:
    rat = {(r["backend"], r["name"], r["mode"], r["shape"]): r for r in ratios(records)}
    head = "| backend | estimator | mode | shape | median ms | IQR ms "
    head += "| ×reference | ×ST | ×softmax | memory MB |"
    lines = [head, "|" + "---|" * 10]
    for r in records:
        q = rat[(r.backend, r.name, r.mode, r.shape)]
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        mem = "" if r.memory_bytes is None else f"{r.memory_bytes / 2**20:.1f}"
        time_cell = f"{r.median_ms:.3f}" if r.error is None else f"error: {r.error[:40]}"
        lines.append(
            f"| {r.backend} | {r.name} | {r.mode} | {'×'.join(map(str, r.shape))} | {time_cell} "
            f"| {r.iqr_ms:.3f} | {fmt(q['vs_reference'])} | {fmt(q['vs_straight_through'])} "
            f"| {fmt(q['vs_softmax'])} | {mem} |"
        )
    return "\n".join(lines)


# One color per estimator in every panel; the mode is the line style.
_COLORS = {
    "reinmax": "tab:red",
    "straight_through": "tab:blue",
    "gumbel_softmax": "tab:green",
    "gumbel_rao": "tab:purple",
    "gapped_straight_through": "tab:olive",
    "softmax": "black",
    "reference": "tab:gray",
    "torch_gumbel_softmax": "tab:brown",
}
_FLOOR_GOALS = {("torch", "eager"): 4.0, ("torch", "compiled"): 2.0, ("jax", "compiled"): 2.0}


def plot(records: list[Record], path: Path) -> None:
    """Time against size (top row) and time over the softmax floor of the same mode (bottom row),
    one column per backend, with the issue's floor goals as dotted lines."""
    from matplotlib import ticker

    from reinmax.tasks.common import pyplot, save_figure

    plt = pyplot()
    backends = sorted({r.backend for r in records})
    fig, axes = plt.subplots(
        2, len(backends), figsize=(5.5 * len(backends), 8), squeeze=False, sharex=True
    )
    by = _lookup(records)
    for col, backend in enumerate(backends):
        top, bottom = axes[0][col], axes[1][col]
        for name, mode in sorted({(r.name, r.mode) for r in records if r.backend == backend}):
            rows = sorted(
                (r for r in records if (r.backend, r.name, r.mode) == (backend, name, mode)),
                key=lambda r: math.prod(r.shape),
            )
            rows = [r for r in rows if r.error is None]
            if not rows:
                continue
            style = {
                "color": _COLORS.get(name),
                "ls": "-" if mode == "eager" else "--",
                "marker": "o" if mode == "eager" else "s",
                "lw": 2.5 if name == "reinmax" else 1.2,
                "label": f"{name} ({mode})",
            }
            top.plot([math.prod(r.shape) for r in rows], [r.median_ms for r in rows], **style)
            floor = [(r, by.get((backend, "softmax", mode, r.shape))) for r in rows]
            pts = [(math.prod(r.shape), r.median_ms / f.median_ms) for r, f in floor if f]
            if name != "softmax" and pts:
                bottom.plot(*zip(*pts), **style)
        for mode in ("eager", "compiled"):
            goal = _FLOOR_GOALS.get((backend, mode))
            if goal:
                bottom.axhline(goal, color="gray", ls=":" if mode == "eager" else "-.", lw=1)
        top.set(xscale="log", yscale="log", ylabel="forward+backward ms", title=backend)
        bottom.set(xscale="log", yscale="log", xlabel="elements", ylabel="× softmax floor")
        for axis in (bottom.yaxis.set_major_formatter, bottom.yaxis.set_minor_formatter):
            axis(ticker.FormatStrFormatter("%g"))
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save_figure(fig, path)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 64x4x8, got {text!r}") from None
    if len(shape) < 1 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must have positive sizes, got {text!r}")
    return shape


@command("reinmax bench")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reinmax bench", description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "jax", "tensorflow"])
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS) + list(BASELINES))
    parser.add_argument("--shapes", nargs="+", type=_parse_shape, default=list(DEFAULT_SHAPES))
    parser.add_argument(
        "--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"]
    )
    parser.add_argument(
        "--min-time", type=positive_float, default=1.0, help="seconds of repeats per case"
    )
    parser.add_argument("--max-repeats", type=positive_int, default=200)
    parser.add_argument("--reference-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, default=Path("results/bench/bench.json"))
    parser.add_argument("--plot", type=Path, default=None, help="default: beside the JSON")
    add_quiet_option(parser)
    args = parser.parse_args(argv)
    unknown = set(args.estimators) - set(ESTIMATORS) - set(BASELINES)
    if unknown:
        parser.error(
            f"unknown --estimators {sorted(unknown)}; choose from {ESTIMATORS + BASELINES}"
        )
    unknown = set(args.backends) - {"torch", "jax", "tensorflow"}
    if unknown:
        parser.error(f"unknown --backends {sorted(unknown)}; choose from torch, jax, tensorflow")

    from reinmax.runtime import write_json

    started = time.time()
    checked = None
    if args.device != "cpu" and "torch" in args.backends:
        _check_device(args.backends, args.device)
        checked = device_check(args.device)
        failed = [r for r in checked if not r["passed"]]
        worst = max(r["max_scaled_error"] for r in checked)
        passed = len(checked) - len(failed)
        print(
            f"{args.device} against cpu: {passed}/{len(checked)} checks passed, "
            f"{sum(r['sample_mismatches'] for r in checked)} samples differ, "
            f"largest gradient difference {worst:.2f} eps·scale"
        )
        if failed:
            write_json(args.json, {"device_check": checked})
            print(f"not timing a device that disagrees with the CPU: {failed}", file=sys.stderr)
            return 1

    def partial(records: list[Record]) -> None:
        write_json(args.json, {"partial": True, "records": [asdict(r) for r in records]})

    records = run(
        args.backends,
        args.estimators,
        args.shapes,
        args.modes,
        min_time=args.min_time,
        max_repeats=args.max_repeats,
        reference_dir=args.reference_dir,
        device=args.device,
        on_records=partial,
    )
    overhead = dispatch_overhead_us() if "torch" in args.backends else None
    checks = goals(records, overhead)
    info = machine(args.backends)
    print(f"machine: {info}, device: {args.device}, versions: {_framework_versions(args.backends)}")
    print(table(records))
    print()
    print("| goal | measured | met |\n|---|---|---|")
    for g in checks:
        print(f"| {g['goal']} | {g['value']:.2f} | {'yes' if g['met'] else 'NO'} |")
    result = {
        "machine": info,
        "device": args.device,
        "versions": _framework_versions(args.backends),
        "seconds": time.time() - started,
        "tau": TAU,
        "records": [asdict(r) for r in records],
        "ratios": ratios(records),
        "goals": checks,
        "dispatch_overhead_us": overhead,
        "device_check": checked,
    }
    write_json(args.json, result)
    plot_path = args.plot or args.json.with_suffix(".png")
    plot(records, plot_path)
    status(f"\nwrote {args.json} and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

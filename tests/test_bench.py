"""The benchmark command runs end to end on a tiny shape and reports what it measured."""

from __future__ import annotations

import ast
import json
import math
import time
from pathlib import Path

import pytest

from reinmax.tasks import bench
from reinmax.tasks.bench.cases import OptionSpec, configs, layout_label, parse_option
from reinmax.tasks.bench.records import as_records

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_table_json_and_plot(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    config = torch._dynamo.config
    limits = (config.recompile_limit, config.accumulated_recompile_limit)
    out = tmp_path / "bench.json"
    argv = ["--backends", "torch", "--shapes", "4x3x5", "--min-time", "1e-6", "--max-repeats", "3"]
    argv += ["--estimators", "straight_through", "reinmax", "softmax", "reference"]
    # Eager only: compilation would dominate the test's time, and the conformance tests
    # already run every estimator under torch.compile.
    argv += ["--modes", "eager", "--json", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    names = {(r["name"], r["mode"]) for r in result["records"]}
    assert {("reinmax", "eager"), ("softmax", "eager"), ("straight_through", "eager")} <= names
    for r in result["records"]:
        if r["name"] == "reference" and bench.load_reference() is None:
            continue
        assert r["error"] is None, r
        assert r["median_ms"] > 0 and r["repeats"] >= 3
    median = {r["name"]: r["median_ms"] for r in result["records"] if r["mode"] == "eager"}
    eager = [r for r in result["records"] if r["mode"] == "eager" and r["name"] == "reinmax"]
    # ReinMax saves at least π_D and π for its backward: two float32 arrays of 4×3×5 entries.
    assert eager[0]["memory_bytes"] >= 2 * 4 * 60
    ratio = next(q for q in result["ratios"] if q["name"] == "reinmax" and q["mode"] == "eager")
    assert ratio["vs_straight_through"] == pytest.approx(
        median["reinmax"] / median["straight_through"]
    )
    assert ratio["vs_softmax"] == pytest.approx(median["reinmax"] / median["softmax"])
    assert any(g["goal"].startswith("torch eager reinmax/ST") for g in result["goals"])
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| torch | reinmax | eager | 4×3×5 |" in capsys.readouterr().out
    # Dynamo's limits were raised for the cases only.
    assert (config.recompile_limit, config.accumulated_recompile_limit) == limits


def test_bench_rejects_unknown_names():
    with pytest.raises(SystemExit):
        bench.main(["--estimators", "nope"])
    with pytest.raises(SystemExit):  # no chosen estimator has that option
        bench.main(["--estimators", "reinmax", "--option", "k=3"])
    with pytest.raises(SystemExit):  # a value the estimator refuses
        bench.main(["--estimators", "gumbel_rao", "--option", "k=0"])
    with pytest.raises(SystemExit):
        bench.main(["--option", "k"])
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "4xq"])
    with pytest.raises(SystemExit):
        bench.main(["--backends", "numpy"])


def test_bench_writes_partial_results_after_each_group(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    seen = []
    original = bench.run

    def spy(*args, on_records=None, **kwargs):
        def record(records):
            seen.append(len(records))
            on_records(records)
            # What is on disk after a group is a readable partial result.
            partial = json.loads((tmp_path / "b.json").read_text())
            assert partial["partial"] is True and len(partial["records"]) == len(records)

        return original(*args, on_records=record, **kwargs)

    monkeypatch.setattr(bench, "run", spy)
    argv = ["--backends", "torch", "--shapes", "2x3", "4x5", "--min-time", "1e-6"]
    argv += ["--max-repeats", "3", "--estimators", "softmax", "--modes", "eager"]
    assert bench.main([*argv, "--json", str(tmp_path / "b.json")]) == 0
    assert seen == [1, 2]
    assert "partial" not in json.loads((tmp_path / "b.json").read_text())


def test_an_estimator_registered_at_run_time_is_benchmarked(tmp_path):
    pytest.importorskip("torch")
    import reinmax
    from reinmax.conformance import device
    from reinmax.core import straight_through_estimator

    reinmax.register_estimator("bench_st", straight_through_estimator)
    try:
        out = tmp_path / "bench.json"
        argv = ["--backends", "torch", "--shapes", "4x3x5", "--min-time", "1e-6"]
        argv += ["--max-repeats", "3", "--estimators", "bench_st", "softmax", "--modes", "eager"]
        assert bench.main([*argv, "--json", str(out)]) == 0
        (record,) = [r for r in json.loads(out.read_text())["records"] if r["name"] == "bench_st"]
        assert record["error"] is None and record["repeats"] >= 3
        assert "bench_st" in {case.name for case in device.cases(compiled=False)}
    finally:
        reinmax.unregister_estimator("bench_st")
    with pytest.raises(SystemExit):
        bench.main(["--estimators", "bench_st"])


def test_bench_device_cuda_needs_a_gpu():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="--device cuda: PyTorch sees no CUDA device"):
        bench.run(
            ["torch"], ["softmax"], [(2, 3)], ["eager"], min_time=0, max_repeats=1, device="cuda"
        )
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        bench.run(
            ["torch"], ["softmax"], [(2, 3)], ["eager"], min_time=0, max_repeats=1, device="tpu"
        )


def test_settings_are_scoped_to_the_cases():
    # Each framework's settings hold while its cases run and are restored afterwards.
    torch = pytest.importorskip("torch")
    from reinmax.tasks.bench import torch as bench_torch

    config = torch._dynamo.config
    before = config.recompile_limit
    with bench_torch.settings():
        assert config.recompile_limit == 4096
    assert config.recompile_limit == before
    jax = pytest.importorskip("jax")
    x64 = jax.config.jax_enable_x64
    records = bench.run(["jax"], ["softmax"], [(2, 3)], ["eager"], min_time=0, max_repeats=3)
    assert [r.error for r in records] == [None]
    assert jax.config.jax_enable_x64 == x64


def test_dispatch_overhead_measures_the_step_that_differs(monkeypatch):
    # A number, not a bound: speed goals are the benchmark's to report, not a test's to time.
    # But the number must be of the right thing: a dispatch made 30 µs slower shows as such.
    pytest.importorskip("torch")
    import reinmax
    from reinmax.tasks.bench import torch as bench_torch

    plain = bench_torch.dispatch_overhead_us(repeats=2000)
    assert isinstance(plain, float) and math.isfinite(plain)
    resolve = reinmax._functions._resolve

    def slow(x):
        start = time.perf_counter()
        while time.perf_counter() - start < 30e-6:
            pass
        return resolve(x)

    monkeypatch.setattr(reinmax._functions, "_resolve", slow)
    slowed = bench_torch.dispatch_overhead_us(repeats=2000)
    assert slowed > plain + 15 and slowed > 15


def test_device_check_compares_samples_and_gradients(monkeypatch):
    pytest.importorskip("torch")
    from reinmax.conformance.device import device_check
    from reinmax.core import REGISTRY

    records = device_check("cpu", compiled=False)
    # Explicit noise in two dtypes at four shapes; portable noise in float32 at two.
    assert len(records) == 2 * 4 * len(REGISTRY) + 2 * len(REGISTRY)
    assert sum(r["portable"] for r in records) == 2 * len(REGISTRY)
    assert all(r["passed"] and r["sample_mismatches"] == 0 for r in records)
    assert max(r["max_scaled_error"] for r in records) == 0.0
    # A device whose gradients are off is caught. The check calls the function on the CPU
    # first and on the device second: the second call's soft output gets 1.5 times its gradient.
    from reinmax.backends import torch as rt

    original = rt.reinmax
    calls = []

    def cpu_right_device_wrong(logits, tau=1.0, **kwargs):
        calls.append(1)
        hard, soft = original(logits, tau, **kwargs)
        if len(calls) % 2 == 0:
            soft = soft * 1.5 - soft.detach() * 0.5
        return hard, soft

    monkeypatch.setattr(rt, "reinmax", cpu_right_device_wrong)
    records = device_check("cpu", compiled=False)
    assert {r["name"] for r in records if not r["passed"]} == {"reinmax"}


def test_table_draws_a_results_file():
    # The README's benchmark tables come from the results files; their dicts draw the same
    # table as the records they were written from.
    records = json.loads((ROOT / "docs/bench/bench_cpu.json").read_text())["records"]
    text = bench.table(records)
    assert text == bench.table(as_records(records))
    lines = text.splitlines()
    assert len(lines) == 2 + len(records)
    assert lines[2] == (
        "| torch | straight_through | eager | 64×4×8 | 0.635 | 0.311 | 1.09 | 1.00 | 4.10 | 0.0 |"
    )


def test_wide_table_has_a_column_per_shape():
    from reinmax.tasks.bench.records import wide_table

    records = json.loads((ROOT / "docs/bench/bench_cpu.json").read_text())["records"]
    lines = wide_table(records).splitlines()
    assert lines[0] == "| backend | mode | case | 64×4×8 | 100×30×10 | 1024×64×64 | 4096×32×256 |"
    assert lines[2] == "| torch | eager | straight_through | 0.635 | 1.48 | 26 | 502 |"
    assert "| torch | eager | gumbel_softmax | 0.656 | 1.7 | 49.1 | 1,050 |" in lines
    kept = wide_table(records, lambda name: name == "reinmax").splitlines()
    assert len(kept) == 2 + 6  # eager and compiled in torch, jax and tensorflow
    assert all("| reinmax |" in line for line in kept[2:])


def test_every_framework_module_offers_the_same_functions():
    wanted = [n for n in dir(bench.Framework) if not n.startswith("_")] + ["VERSION"]
    for name in bench.FRAMEWORKS:
        try:
            module = bench.framework(name)
        except ImportError:
            continue
        assert not [n for n in wanted if not hasattr(module, n)], name


def _names_compared(path: Path) -> set[str]:
    """The framework names that ``path`` compares anything with (``==``, ``!=``, ``in``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if isinstance(side, ast.Constant) and side.value in bench.FRAMEWORKS:
                    found.add(side.value)
    return found


def test_shared_code_and_tests_never_branch_on_a_framework_name():
    shared = [ROOT / "tasks/bench" / f"{m}.py" for m in ("__init__", "records", "timing", "plot")]
    for path in [*shared, Path(__file__)]:
        assert not _names_compared(path), path
    # Conformance never imports the tasks: imports run core ← backends ← conformance ← tasks.
    source = (ROOT / "conformance/device.py").read_text()
    assert "reinmax.tasks" not in source


def test_options_give_every_estimator_that_has_them_its_values():
    # Registered defaults, unless an option says otherwise; the last option that applies wins,
    # for one estimator (gumbel_rao.k) or for every estimator that has the option (k).
    assert parse_option("gumbel_rao.k=1,10,100") == OptionSpec("gumbel_rao", "k", (1, 10, 100))
    assert parse_option("gap=p,0.5") == OptionSpec(None, "gap", ("p", 0.5))
    names = ["reinmax", "gumbel_rao", "gapped_straight_through", "softmax"]
    labels = [c.label for c in configs(names, [*bench.DEFAULT_OPTIONS, parse_option("gap=p")])]
    assert labels == [
        "reinmax",
        "gumbel_rao",
        "gumbel_rao(k=10)",
        "gumbel_rao(k=100)",
        "gapped_straight_through(gap=p)",
    ]
    assert [c.label for c in configs(["gumbel_rao"])] == ["gumbel_rao"]
    later = [*bench.DEFAULT_OPTIONS, parse_option("k=2")]
    assert [c.options for c in configs(["gumbel_rao"], later)] == [(("k", 2),)]
    layouts = [layout_label(c.estimator(), (4, 3, 5)) for c in configs(names, later)]
    assert layouts == ["1/row", "3n/row", "1/row"]


def test_an_estimator_registered_later_is_benchmarked_with_its_options():
    import reinmax
    from reinmax.core import Option, gumbel_rao_estimator

    options = (Option("k", 4, "draws"), Option("eta", 0.5, "unused"))
    reinmax.register_estimator(
        "bench_rao", lambda k=4, eta=0.5: gumbel_rao_estimator(k), options=options
    )
    try:
        assert [c.label for c in configs(["bench_rao"], bench.DEFAULT_OPTIONS)] == ["bench_rao"]
        args = bench.parse_args(["--estimators", "bench_rao", "--option", "k=1,4", "eta=2"])
        assert [c.label for c in configs(args.estimators, args.options)] == [
            "bench_rao(k=1,eta=2)",
            "bench_rao(eta=2)",
        ]
    finally:
        reinmax.unregister_estimator("bench_rao")


def _by_name(records):
    assert [(r.name, r.error) for r in records if r.error] == []
    return {r.name: r for r in records}


def test_noise_is_timed_alone_and_in_every_step():
    # Each estimator step with the framework's noise, explicit noise and portable noise; each
    # distinct noise layout drawn alone by both generators, beside one softmax pass.
    pytest.importorskip("torch")
    names = ["reinmax", "gumbel_rao", "noise"]
    options = [parse_option("gumbel_rao.k=1,3")]
    records = bench.run(
        ["torch"], names, [(4, 3, 5)], ["eager"], min_time=0, max_repeats=3, options=options
    )
    by = _by_name(records)
    assert set(by) == {
        *(
            f"{label}{rng}"
            for label in ("reinmax", "gumbel_rao", "gumbel_rao(k=3)")
            for rng in ("", "[noise]", "[seed]")
        ),
        *(
            f"{g}_uniform[{layout}]"
            for g in ("portable", "native")
            for layout in ("1/row", "2n/row", "4n/row")
        ),
        "softmax_forward",
    }
    ratio = next(q for q in bench.ratios(records) if q["name"] == "reinmax[seed]")
    assert ratio["vs_explicit_noise"] == pytest.approx(
        by["reinmax[seed]"].median_ms / by["reinmax[noise]"].median_ms
    )
    draw = next(q for q in bench.ratios(records) if q["name"] == "portable_uniform[1/row]")
    assert draw["vs_softmax_pass"] == pytest.approx(
        by["portable_uniform[1/row]"].median_ms / by["softmax_forward"].median_ms
    )
    goals = [g["goal"] for g in bench.goals(records, None)]
    assert "torch eager portable per-row noise/softmax pass at (4, 3, 5) < 1" in goals
    assert "| torch | eager | 4n/row | 4×3×5 |" in bench.noise_table(records)
    assert "| torch | eager | gumbel_rao(k=3) | 4×3×5 |" in bench.step_noise_table(records)
    # Noise over the limit is never drawn: its cases are reported as skipped.
    records = bench.run(
        ["torch"],
        ["gumbel_rao"],
        [(4, 3, 5)],
        ["eager"],
        min_time=0,
        max_repeats=3,
        rngs=["seed"],
        max_noise_gib=1e-9,
    )
    (record,) = records
    assert record.error == "Skipped: noise of 4.47e-07 GiB over --max-noise-gib 1e-09"


def test_every_framework_draws_portable_noise_in_its_steps():
    for backend in ("jax", "tensorflow"):
        pytest.importorskip(backend)
        records = bench.run(
            [backend], ["reinmax", "noise"], [(4, 3, 5)], ["eager"], min_time=0, max_repeats=3
        )
        assert set(_by_name(records)) == {
            "reinmax",
            "reinmax[noise]",
            "reinmax[seed]",
            "portable_uniform[1/row]",
            "native_uniform[1/row]",
            "softmax_forward",
        }

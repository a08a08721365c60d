"""The benchmark command runs end to end on a tiny shape and reports what it measured."""

from __future__ import annotations

import json
import math
import time

import pytest

from reinmax import bench


def test_bench_writes_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    argv = ["--backends", "torch", "--shapes", "4x3x5", "--min-time", "0", "--max-repeats", "3"]
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


def test_bench_rejects_unknown_names():
    with pytest.raises(SystemExit):
        bench.main(["--estimators", "nope"])
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "4xq"])


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
    argv = ["--backends", "torch", "--shapes", "2x3", "4x5", "--min-time", "0"]
    argv += ["--max-repeats", "3", "--estimators", "softmax", "--modes", "eager"]
    assert bench.main([*argv, "--json", str(tmp_path / "b.json")]) == 0
    assert seen == [1, 2]
    assert "partial" not in json.loads((tmp_path / "b.json").read_text())


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


def test_dispatch_overhead_measures_the_step_that_differs(monkeypatch):
    # A number, not a bound: speed goals are the benchmark's to report, not a test's to time.
    # But the number must be of the right thing: a dispatch made 30 µs slower shows as such.
    pytest.importorskip("torch")
    import reinmax

    plain = bench.dispatch_overhead_us(repeats=2000)
    assert isinstance(plain, float) and math.isfinite(plain)
    resolve = reinmax._functions._resolve

    def slow(x):
        start = time.perf_counter()
        while time.perf_counter() - start < 30e-6:
            pass
        return resolve(x)

    monkeypatch.setattr(reinmax._functions, "_resolve", slow)
    slowed = bench.dispatch_overhead_us(repeats=2000)
    assert slowed > plain + 15 and slowed > 15


def test_device_check_compares_samples_and_gradients(monkeypatch):
    pytest.importorskip("torch")
    records = bench.device_check("cpu", compiled=False)
    assert len(records) == 2 * 4 * len(bench.ESTIMATORS)
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
    records = bench.device_check("cpu", compiled=False)
    assert {r["name"] for r in records if not r["passed"]} == {"reinmax"}

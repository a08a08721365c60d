"""The conformance suite: it passes on the library, and blames exactly the planted bug."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from reinmax.conformance import gate, harness, run_suite
from reinmax.conformance.cli import main
from reinmax.conformance.ports import check_port
from reinmax.core import (
    Estimator,
    gumbel_rao_estimator,
    gumbel_softmax_estimator,
    inverse_cdf_sample,
    one_hot_sample,
    reinmax_estimator,
    softmax,
    softmax_vjp,
    straight_through_estimator,
)


def _suite(backends, **kwargs):
    return run_suite(backends, transforms=("eager",), quick=True, show_progress=False, **kwargs)


def _blamed(report):
    return {
        (r["estimator"], r["backend"])
        for r in report.records + report.identities
        if not r["passed"]
    }


@pytest.fixture
def plant(monkeypatch):
    """Replace one backend's public function by ``estimator`` (a port with a bug)."""

    def planted(backend: str, name: str, estimator: Estimator) -> None:
        pytest.importorskip(backend)
        module = importlib.import_module(f"reinmax.backends.{backend}")

        def buggy(logits, tau=1.0, *, axis=-1, rng=None, noise=None, **options):
            return module.estimate(estimator, logits, tau, axis=axis, rng=rng, noise=noise)

        monkeypatch.setattr(module, name, buggy)
        # The harness caches the functions it built; start afresh so the bug is seen, and again
        # afterwards (monkeypatch restores the cache object) so it does not leak.
        monkeypatch.setattr(harness, "_CACHE", {})

    return planted


def test_library_passes_on_numpy_and_torch():
    pytest.importorskip("torch")
    report = _suite(["numpy", "torch"])
    assert report.passed, report.failures()
    assert {r["backend"] for r in report.records} == {"numpy", "torch"}
    for r in report.records:
        assert r["sample_mismatches"] == 0 and r["max_scaled_error"] <= 64
        assert r["output_dtypes"] == [r["dtype"]] * 3
    assert {r["identity"] for r in report.identities} == set(range(1, 11))


def _tempered_forward(residual):
    def forward(logits, probs, noise, tau, *, xp):
        hard = inverse_cdf_sample(probs, noise, xp=xp)
        return hard, residual(logits, hard, tau, xp)

    return forward


def _st_without_temperature() -> Estimator:
    def backward(probs, residuals, grad, tau, *, xp):
        return softmax_vjp(residuals[0], grad, xp=xp)

    return straight_through_estimator()._replace(backward=backward)


def _reinmax_with_temperature() -> Estimator:
    base = reinmax_estimator()

    def backward(probs, residuals, grad, tau, *, xp):
        return base.backward(probs, residuals, grad, tau, xp=xp) / tau

    return base._replace(backward=backward)


def _reinmax_without_correction() -> Estimator:
    def backward(probs, residuals, grad, tau, *, xp):
        return 2.0 * softmax_vjp(residuals[0], grad, xp=xp)

    return reinmax_estimator()._replace(backward=backward)


def _gumbel_rao_twice_the_logits() -> Estimator:
    base = gumbel_rao_estimator(1)

    def forward(logits, probs, noise, tau, *, xp):
        hard, (y,) = base.forward(logits, probs, noise, tau, xp=xp)
        return hard, (softmax((xp.log(y) * tau + logits) / tau, xp=xp),)

    return base._replace(forward=forward)


def _gumbel_from_normal() -> Estimator:
    import torch

    def forward(logits, probs, noise, tau, *, xp):
        perturbed = logits + torch.special.ndtri(noise.clamp(1e-7, 1 - 1e-7))
        hard = one_hot_sample(xp.argmax(perturbed, axis=-1), probs, xp=xp)
        return hard, (softmax(perturbed / tau, xp=xp),)

    return gumbel_softmax_estimator(True)._replace(forward=forward)


@pytest.mark.parametrize(
    ("backend", "name", "bug"),
    [
        ("torch", "straight_through", _st_without_temperature),
        ("tensorflow", "reinmax", _reinmax_with_temperature),
        ("torch", "reinmax", _reinmax_without_correction),
        ("torch", "gumbel_rao", _gumbel_rao_twice_the_logits),
        ("torch", "gumbel_softmax", _gumbel_from_normal),
    ],
)
def test_a_planted_bug_is_blamed_on_exactly_its_estimator_and_backend(plant, backend, name, bug):
    pytest.importorskip("torch")
    plant(backend, name, bug())
    report = _suite(["numpy", backend])
    assert not report.passed
    assert _blamed(report) == {(name, backend)}, report.failures()


def test_float32_gradients_for_float64_logits_are_caught(monkeypatch):
    tf = pytest.importorskip("tensorflow")
    module = importlib.import_module("reinmax.backends.tensorflow")
    original = module.reinmax

    @tf.custom_gradient
    def float32_gradient(x):
        return tf.identity(x), lambda dy: tf.cast(dy, tf.float32)

    def buggy(logits, tau=1.0, **kwargs):
        return original(float32_gradient(logits), tau, **kwargs)

    monkeypatch.setattr(module, "reinmax", buggy)
    monkeypatch.setattr(harness, "_CACHE", {})
    report = _suite(["numpy", "tensorflow"], dtypes=("float64", "float32"), identities=False)
    assert _blamed(report) == {("reinmax", "tensorflow")}
    failed = [r for r in report.records if not r["passed"]]
    assert [r["dtype"] for r in failed] == ["float64"]
    assert failed[0]["output_dtypes"] == ["float64", "float64", "float32"]
    assert "grad is float32" in failed[0]["detail"]


def _inverse_cdf_st(name: str) -> Estimator:
    def backward(probs, residuals, grad, tau, *, xp):
        return softmax_vjp(residuals[0], grad, xp=xp) / tau

    forward = _tempered_forward(lambda x, hard, tau, xp: (softmax(x / tau, xp=xp),))
    return Estimator(name, forward, backward, lambda shape: shape[:-1], per_category=False)


def test_a_users_estimator_runs_under_a_new_name():
    pytest.importorskip("torch")
    mine = _inverse_cdf_st("my_st")
    report = _suite(["numpy", "torch"], estimators={"my_st": mine})
    assert report.passed, report.failures()
    assert {r["estimator"] for r in report.records} == {"my_st"}
    assert {r["identity"] for r in report.identities} == {5, 6, 8}


def test_a_users_port_is_checked_against_the_oracle():
    torch = pytest.importorskip("torch")

    def port(logits, noise, tau, axis):
        x = torch.movedim(logits, axis, -1)
        probs = torch.softmax(x, -1)
        c = torch.cumsum(probs, -1)
        index = (c < noise[..., None] * c[..., -1:]).sum(-1).clamp(max=x.shape[-1] - 1)
        hard = torch.nn.functional.one_hot(index, x.shape[-1]).to(x.dtype)
        # The port forgets the temperature: its backward is J(π) g, not (1/τ) J(p_τ) g.
        hard = hard - probs.detach() + probs
        return torch.movedim(hard, -1, axis), torch.movedim(probs, -1, axis)

    report = check_port("my_st", {"torch": port}, "straight_through", dtypes=("float64",))
    record = report.records[0]
    assert not record["passed"]
    assert "error" in record["detail"]

    def exact_port(logits, noise, tau, axis):
        return importlib.import_module("reinmax.backends.torch").straight_through(
            logits, tau, axis=axis, noise=noise
        )

    assert check_port("lib", {"torch": exact_port}, "straight_through").passed


def test_gate_caches_a_pass_and_names_a_failure(tmp_path, monkeypatch, plant):
    pytest.importorskip("torch")
    monkeypatch.setenv("REINMAX_CACHE_DIR", str(tmp_path))
    gate("torch", ["straight_through"])
    cache = json.loads((tmp_path / "conformance.json").read_text())
    assert any(key.endswith("/torch/straight_through") for key in cache)

    def no_rerun(*args, **kwargs):
        raise AssertionError("a cached pass must not rerun the suite")

    monkeypatch.setattr("reinmax.conformance.run_suite", no_rerun)
    gate("torch", ["straight_through"])
    monkeypatch.undo()

    monkeypatch.setenv("REINMAX_CACHE_DIR", str(tmp_path))
    plant("torch", "reinmax", _reinmax_without_correction())
    with pytest.raises(RuntimeError, match=r"reinmax on torch"):
        gate("torch", ["reinmax"])
    cache = json.loads((tmp_path / "conformance.json").read_text())
    assert not any(key.endswith("/torch/reinmax") for key in cache)


def test_cli_writes_json_and_exits_by_result(tmp_path, capsys):
    path = tmp_path / "out.json"
    code = main(
        [
            "--quick",
            "--backends",
            "numpy",
            "--estimators",
            "straight_through,reinmax",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    data = json.loads(path.read_text())
    run_fields = {
        "estimator",
        "backend",
        "dtype",
        "transform",
        "max_scaled_error",
        "sample_mismatches",
        "passed",
    }
    assert data["runs"] and all(run_fields <= set(r) for r in data["runs"])
    assert all({"identity", "estimator", "value", "passed"} <= set(r) for r in data["identities"])
    assert "all checks passed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--backends", "cuda"])
    assert exit_info.value.code == 2


def test_noise_is_shared_across_backends():
    pytest.importorskip("torch")
    report = _suite(["numpy", "torch"], estimators=["gumbel_rao"], identities=False)
    for r in report.records:
        assert r["cross_backend_mismatches"] == 0
        assert np.isfinite(r["max_cross_backend_error"]) and r["max_cross_backend_error"] < 64


_GLOBAL_STATE = """
import json, torch, jax
from reinmax import conformance
def state():
    config = torch._dynamo.config
    return {
        "x64": bool(jax.config.jax_enable_x64),
        "recompile": getattr(config, "recompile_limit", None),
        "cache": getattr(config, "cache_size_limit", None),
    }
before = state()
conformance.gate("jax", ["reinmax"])
after_gate = state()
conformance.run_suite(["numpy", "torch", "jax"], ["reinmax"], ["float64"],
                      transforms=["eager", "compiled"], show_progress=False)
print(json.dumps([before, after_gate, state()]))
"""


def test_checking_a_port_changes_no_global_setting_of_any_framework(tmp_path):
    """gate() and run_suite() scope JAX's x64 and Dynamo's recompile limit to their own calls."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    env = {**os.environ, "REINMAX_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _GLOBAL_STATE], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    before, after_gate, after_suite = json.loads(done.stdout.splitlines()[-1])
    assert before["x64"] is False
    assert before == after_gate == after_suite


def test_a_quick_suite_run_fills_the_gate_cache(tmp_path, monkeypatch):
    """What `reinmax conformance --quick` passed, the tasks' gate does not run again; a
    (backend, estimator) with any failed run or identity check is not remembered."""
    from reinmax.conformance import Report, remember

    monkeypatch.setenv("REINMAX_CACHE_DIR", str(tmp_path))
    runs = [
        {"backend": "torch", "estimator": "reinmax", "passed": True},
        {"backend": "torch", "estimator": "straight_through", "passed": True},
        {"backend": "jax", "estimator": "reinmax", "passed": True},
    ]
    identities = [{"backend": "jax", "estimator": "reinmax", "passed": False}]
    remember(Report(runs, identities))

    def no_rerun(*args, **kwargs):
        raise AssertionError("a remembered pass must not rerun the suite")

    monkeypatch.setattr("reinmax.conformance.run_suite", no_rerun)
    gate("torch", ["reinmax", "straight_through"])
    with pytest.raises(AssertionError, match="must not rerun"):
        gate("jax", ["reinmax"])

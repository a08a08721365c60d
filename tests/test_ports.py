"""Checking ports as research code writes them: a float tau, the last axis, its own sampling
through a patched sampler; the cross-port column; the command line."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from reinmax.conformance import Port, check_port, format_report
from reinmax.conformance.cli import main as conformance_main

REFERENCE = Path(__file__).resolve().parents[1] / ".reference" / "reinmax-0.1.0" / "reinmax"


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("torch")
    path = REFERENCE / "reinmax.py"
    if not path.is_file():
        pytest.skip(f"reference package not found at {path} (.ci/setup installs it)")
    spec = importlib.util.spec_from_file_location("reinmax_reference_port", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jax_reinmax(logits, tau, key):
    """A hand JAX port of ReinMax, as research code writes it: float tau, last axis, and a
    sample from jax.random.categorical."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def sample(logits):
        probs = jax.nn.softmax(logits, axis=-1)
        index = jax.random.categorical(key, logits, axis=-1)
        return jax.nn.one_hot(index, logits.shape[-1], dtype=logits.dtype), probs

    def forward(logits):
        hard, probs = sample(logits)
        return (hard, probs), (logits, hard, probs)

    def backward(saved, cotangents):
        logits, hard, probs = saved
        g, g_p = cotangents
        pi_d = 0.5 * (jax.nn.softmax(logits / tau, axis=-1) + hard)

        def jvp(q, v):
            return q * v - q * jnp.sum(q * v, axis=-1, keepdims=True)

        return (2 * jvp(pi_d, g) - 0.5 * jvp(probs, g) + jvp(probs, g_p),)

    sample.defvjp(forward, backward)
    return sample(logits)


def test_the_reference_package_passes_naming_only_its_sampler(reference):
    port = Port(reference.reinmax, "torch", ("logits", "tau"), "torch.multinomial", tau="number")
    report = check_port("reference", port, "reinmax")
    assert report.passed, report.failures()
    for record in report.records:
        assert record["skipped"] == ["axis 1, per-row tau"]
        assert record["max_scaled_error"] < 2


def test_a_hand_jax_port_and_the_cross_port_column(reference):
    pytest.importorskip("jax")
    ports = [
        Port(reference.reinmax, "torch", ("logits", "tau"), "torch.multinomial", tau="number"),
        Port(_jax_reinmax, "jax", ("logits", "tau", "key"), "jax.random.categorical", "number"),
    ]
    report = check_port("reinmax port", ports, "reinmax", dtypes=("float64",))
    assert report.passed, report.failures()
    for record in report.records:
        assert record["cross_backend_mismatches"] == 0
        assert 0 < record["max_cross_backend_error"] < 4
    assert "x-backend" in format_report(report)


def test_a_wrong_port_is_blamed_alone_and_the_cross_column_shows_it(reference):
    pytest.importorskip("jax")

    def too_hot(logits, tau, key):  # a temperature in the wrong place
        return _jax_reinmax(logits, tau * tau, key)

    ports = [
        Port(reference.reinmax, "torch", ("logits", "tau"), "torch.multinomial", tau="number"),
        Port(too_hot, "jax", ("logits", "tau", "key"), "jax.random.categorical", "number"),
    ]
    report = check_port("ports", ports, "reinmax", dtypes=("float64",))
    failed = {r["backend"] for r in report.records if not r["passed"]}
    assert failed == {"jax"}
    assert all(r["max_cross_backend_error"] > 64 for r in report.records)


@pytest.mark.parametrize(
    ("port", "message"),
    [
        (Port(print, "torch", ("logits", "tau")), "exactly one of the two"),
        (Port(print, "torch", ("logits", "noise"), tau="number"), "takes must name logits, tau"),
        (Port(print, "numpy"), "autodiff"),
    ],
)
def test_bad_ports_are_named(port, message):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=message):
        check_port("bad", port, "reinmax")


def test_an_unknown_sampler_is_a_failed_record_naming_the_choices():
    pytest.importorskip("torch")
    port = Port(print, "torch", ("logits", "tau"), "torch.poisson", tau="number")
    report = check_port("bad", port, "reinmax", dtypes=("float64",))
    assert not report.passed
    assert "sampler must be one of torch.multinomial" in report.failures()[0]


def test_the_command_checks_a_port_from_the_shell(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    (tmp_path / "my_port.py").write_text(
        textwrap.dedent(
            """
            import torch

            def st(logits, noise, tau, axis):
                import reinmax
                return reinmax.straight_through(logits, tau, noise=noise, axis=axis)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    argv = ["--port", "my_port:st", "--framework", "torch", "--reference", "straight_through"]
    assert conformance_main(argv) == 0
    out = capsys.readouterr().out
    assert "my_port:st" in out and "all checks passed" in out
    with pytest.raises(SystemExit):
        conformance_main(["--port", "my_port:st"])  # no --framework nor --reference

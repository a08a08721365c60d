"""One home for each fact: a new estimator is one block and a registration, a new framework one
module and a registration, and from then on both are first-class citizens everywhere."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import reinmax
from reinmax import backends
from reinmax.conformance import harness, run_suite
from reinmax.conformance.cli import main as conformance_main
from reinmax.core import Estimator, inverse_cdf_sample, softmax, softmax_vjp


# The whole definition of a new estimator: a forward, a backward and a noise shape.
def _forward(logits, probs, noise, tau, *, xp):
    hard = inverse_cdf_sample(probs, noise, xp=xp)
    return hard, (softmax(logits, tau, xp=xp),)


def _backward(probs, residuals, grad, tau, *, xp):
    return softmax_vjp(residuals[0], grad, tau=tau, xp=xp)  # (1/τ) J(p_τ) g


NEW = Estimator("tempered_st", _forward, _backward, lambda shape: shape[:-1], per_category=False)


@pytest.fixture
def registered():
    reinmax.register_estimator(
        "tempered_st",
        NEW,
        tau=(1.0, 1.5),
        doc="Straight-Through with a temperature, written in a test.",
    )
    yield "tempered_st"
    reinmax.unregister_estimator("tempered_st")


def test_a_registered_estimator_is_a_function_of_every_backend(registered):
    for name in harness.available_backends():
        module = importlib.import_module(f"reinmax.backends.{name}")
        assert registered in dir(module)
        assert getattr(module, registered).__doc__.startswith("Straight-Through with a")
    from reinmax.backends.numpy import tempered_st

    logits = np.array([[0.3, -1.0, 2.0]])
    hard, _ = tempered_st(logits, 1.3, noise=np.array([0.9]))
    assert hard.tolist() == [[0.0, 0.0, 1.0]]
    assert reinmax.tempered_st(logits, noise=np.array([0.1]))[0].tolist() == [[1.0, 0.0, 0.0]]


def test_an_unregistered_estimator_is_gone(registered):
    reinmax.unregister_estimator(registered)
    with pytest.raises(AttributeError, match="tempered_st"):
        reinmax.tempered_st  # noqa: B018
    reinmax.register_estimator(registered, NEW)


def test_the_suite_checks_it_in_every_backend_and_transform(registered):
    report = run_suite(estimators=[registered], dtypes=["float64"], show_progress=False)
    assert report.passed, report.failures()
    ran = {(r["backend"], r["transform"]) for r in report.records}
    for name in harness.available_backends():
        for transform in harness.driver(name).transforms:
            assert (name, transform) in ran
    # Identities that hold for any estimator (5: zero sums and shift invariance; 8: frequencies).
    assert {r["identity"] for r in report.identities} >= {5, 8}


def test_it_is_a_choice_of_the_conformance_command(registered, capsys, tmp_path):
    argv = ["--estimators", registered, "--backends", "numpy,torch", "--quick"]
    assert conformance_main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    assert registered in capsys.readouterr().out


def test_options_are_checked_by_name():
    with pytest.raises(TypeError, match="reinmax got unexpected option"):
        reinmax.reinmax(np.zeros((2, 3)), k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        reinmax.gumbel_rao(np.zeros((2, 3)), k=0)
    with pytest.raises(ValueError, match="name must be a Python identifier"):
        reinmax.register_estimator("not a name", NEW)


@pytest.fixture
def toy():
    backends.register_backend("toy", "numpy", lambda: importlib.import_module("tests.toy_backend"))
    yield importlib.import_module("tests.toy_backend")
    backends.unregister_backend("toy")
    from reinmax import _dispatch

    _dispatch._BY_TYPE.clear()


def test_a_toy_backend_is_one_module_and_its_registration(toy):
    x = np.array([[0.5, 1.5, -2.0]]).view(toy.ToyArray)
    # The top-level functions find it by the type of the logits.
    hard, _ = reinmax.reinmax(x, 1.3, noise=np.array([0.6]).view(toy.ToyArray))
    assert type(hard) is toy.ToyArray
    report = run_suite(["numpy", "toy"], ["straight_through", "reinmax"], show_progress=False)
    assert report.passed, report.failures()
    assert {r["backend"] for r in report.records} == {"numpy", "toy"}
    assert {r["backend"] for r in report.identities} == {"numpy", "toy"}

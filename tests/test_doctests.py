"""Every docstring example runs, and every public object of the documented modules has one."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import reinmax
from reinmax.core import REGISTRY

# The modules whose public objects (``__all__``) are documented in the API reference, each with
# an example. Data (REGISTRY) and type aliases are documented by the module instead.
DOCUMENTED = [
    "reinmax",
    "reinmax.backends",
    "reinmax.conformance",
    "reinmax.core",
    "reinmax.diagnostics",
    "reinmax.errors",
    "reinmax.noise",
]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    return [(name, getattr(module, name)) for name in module.__all__]


def _run(docstring: str, name: str) -> None:
    test = doctest.DocTestParser().get_doctest(docstring, {}, name, None, 0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0, name


@pytest.mark.parametrize("module_name", DOCUMENTED)
def test_module_examples_run(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in finder.find(module, module_name):
        runner.run(test)
    for name, obj in _public(module_name):
        if callable(obj) and obj.__doc__ and getattr(obj, "__module__", "") != module_name:
            _run(obj.__doc__, f"{module_name}.{name}")
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize("module_name", DOCUMENTED)
def test_every_public_object_has_an_example(module_name):
    missing = [
        name
        for name, obj in _public(module_name)
        if (inspect.isclass(obj) or callable(obj)) and ">>>" not in (inspect.getdoc(obj) or "")
    ]
    assert not missing, f"{module_name}: no example in {missing}"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_estimator_function_examples_run(name):
    _run(getattr(reinmax, name).__doc__, name)

"""The static types of the public functions agree with the registry they are built from."""

from __future__ import annotations

import inspect
import pathlib
import re
import types
import typing

import pytest

import reinmax
from reinmax import functions
from reinmax.api import _signature
from reinmax.core import REGISTRY

BUILT_IN = list(functions.SIGNATURES)


def _parameters(signature: inspect.Signature) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_protocol_matches_its_registration(name):
    """Every overload of the protocol takes exactly the registration's parameters, in order and
    with its defaults (the second overload's return_index=True has no default)."""
    expected = _parameters(_signature(REGISTRY[name]))
    protocol = functions.SIGNATURES[name]
    # A protocol of overloads alone has no implementation to ask: look its overloads up by name.
    key = types.SimpleNamespace(
        __module__=protocol.__module__, __qualname__=f"{protocol.__qualname__}.__call__"
    )
    overloads = typing.get_overloads(key)
    assert len(overloads) == 2
    for overload in overloads:
        got = _parameters(inspect.signature(overload))[1:]  # without self
        got = [(n, k, False if n == "return_index" else d) for n, k, d in got]
        assert got == expected


def test_every_built_in_estimator_has_a_protocol():
    built_in = [name for name in REGISTRY if REGISTRY[name].build.__module__ == "reinmax.core"]
    assert sorted(built_in) == sorted(BUILT_IN)


def test_the_stub_declares_every_public_function():
    stub = pathlib.Path(functions.__file__).with_name("_names.pyi").read_text()
    declared = set(re.findall(r"^(\w+): \w+$", stub, flags=re.MULTILINE))
    assert declared == {*BUILT_IN, "estimate", "reinforce", "bernoulli"}


@pytest.mark.parametrize("module", ["reinmax", "reinmax.backends.numpy"])
def test_runtime_signatures_are_the_registrations(module):
    import importlib

    namespace = importlib.import_module(module)
    for name in BUILT_IN:
        function = getattr(namespace, name)
        assert inspect.signature(function) == _signature(REGISTRY[name])
        assert function.__module__ == module and function.__qualname__ == name


def test_the_package_ships_py_typed():
    assert pathlib.Path(reinmax.__file__).with_name("py.typed").is_file()

"""The fuzz of docs/SPEC.md's invariants: clean on every backend, and able to find a real bug."""

from __future__ import annotations

import pytest

from reinmax import core
from reinmax.conformance import fuzz, harness

INPUTS = 3000
PLANS = 24


def test_a_few_thousand_inputs_break_no_invariant_on_any_backend():
    backends = harness.available_backends()
    tallies = fuzz.fuzz(backends, INPUTS, seed=1, plans=PLANS)
    for backend, tally in tallies.items():
        # Rows of the invalid calls count towards the inputs drawn, not towards the rows run.
        assert tally["rows"] >= INPUTS * 0.8, backend
        assert tally["valid_rows"] > tally["rows"] * 0.5, backend
        assert tally["invalid_calls"] >= 3, backend  # some invalid calls were exercised
        found = {key: tally[key] for key in fuzz.VIOLATIONS if tally[key]}
        assert not found, f"{backend}: {found}; {tally['examples'][:3]}"


def _unshifted_softmax(x, tau=None, *, xp):
    # The old softmax: x/τ before the row maximum is subtracted, which overflows for tiny τ.
    if tau is not None:
        x = x / tau
    e = xp.exp(x - core._row_max(x, xp=xp))
    s = xp.sum(e, axis=-1, keepdims=True)
    return e / xp.where(s == 0, xp.ones_like(s), s)


def test_the_fuzz_finds_the_overflow_of_dividing_before_shifting(monkeypatch):
    monkeypatch.setattr(core, "softmax", _unshifted_softmax)
    tally = fuzz.fuzz(["numpy"], 1500, seed=1, plans=PLANS)["numpy"]
    assert tally["nonfinite_gradient"] + tally["not_one_hot"] > 0


def test_the_command_exits_1_on_a_violation(monkeypatch, capsys):
    monkeypatch.setattr(core, "softmax", _unshifted_softmax)
    assert (
        fuzz.main(["--backends", "numpy", "--inputs", "1500", "--plans", "24", "--seed", "1"]) == 1
    )
    out = capsys.readouterr().out
    assert "| nonfinite_gradient |" in out


@pytest.mark.parametrize(
    "argv",
    [["--backends", "cupy"], ["--inputs", "0"], ["--resume"], ["--long", "--calls", "5"]],
)
def test_the_command_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as exit_:
        fuzz.main(argv)
    assert exit_.value.code == 2


def test_a_resumed_fuzz_draws_the_calls_an_uninterrupted_one_does(tmp_path, monkeypatch):
    whole = fuzz.fuzz(["numpy"], calls=12, seed=3, plans=PLANS)
    checkpoint = tmp_path / "fuzz.ckpt"
    monkeypatch.setattr(fuzz, "CHECKPOINT_EVERY", 5)
    first = fuzz.fuzz(["numpy"], calls=7, seed=3, plans=PLANS, checkpoint=checkpoint)
    assert first["numpy"]["calls"] == 7  # the checkpoint holds the state after call 5
    resumed = fuzz.fuzz(
        ["numpy"], calls=12, seed=3, plans=PLANS, checkpoint=checkpoint, resume=True
    )
    assert resumed == whole
    with pytest.raises(ValueError, match="was written by a fuzz with"):
        fuzz.fuzz(["numpy"], calls=12, seed=4, plans=PLANS, checkpoint=checkpoint, resume=True)
    with pytest.raises(ValueError, match="exactly one of inputs"):
        fuzz.fuzz(["numpy"], 10, calls=12)

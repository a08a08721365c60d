"""The porting walkthrough: the STGS port is the original bit for bit, the ReinMax port compiles
once under an annealed τ, and docs/walkthrough.md shows the port's code and numbers as they are."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tasks import walkthrough  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "walkthrough.md"
PUBLISHED = ROOT / "docs" / "results" / "walkthrough.json"


def _images(n: int = 100) -> np.ndarray:
    return np.random.default_rng(0).random((n, 784), dtype=np.float32)


def test_the_stgs_port_is_the_original_bit_for_bit_over_training_steps():
    report = walkthrough.compare_ports(_images(), steps=3)
    assert report["largest_difference"] == {
        "loss": 0.0,
        "reconstruction": 0.0,
        "gradient": 0.0,
        "weight": 0.0,
    }


def test_the_comparison_sees_a_changed_port(monkeypatch):
    # The check can fail: the port with another estimator's backward trains differently.
    original_init = walkthrough.PortedQuantizer.__init__

    def reinmax_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.estimator = "reinmax"

    monkeypatch.setattr(walkthrough.PortedQuantizer, "__init__", reinmax_init)
    report = walkthrough.compare_ports(_images(), steps=1)
    # One step: the same sample, hence the same loss, and another gradient.
    assert report["largest_difference"]["loss"] == 0.0
    assert report["largest_difference"]["gradient"] > 0.0


@pytest.mark.parametrize("estimator", ["gumbel_softmax", "reinmax"])
def test_the_port_compiles_once_under_an_annealed_tau(estimator):
    assert walkthrough.count_compiles(estimator, _images(32), steps=4, tensor_tau=True) == 1


def test_the_docs_quote_the_port_as_the_code_has_it():
    assert walkthrough.port_diff() in DOC.read_text()


def test_the_docs_quote_the_published_numbers():
    text = DOC.read_text()
    result = json.loads(PUBLISHED.read_text())
    for run in result["runs"].values():
        for name in ("test_loss", "final_train_loss"):
            assert f"{run[name]['mean']:.1f} ± {run[name]['std']:.1f}" in text
    assert result["port"]["largest_difference"]["gradient"] == 0.0
    for check in result["dropin"].values():
        assert check["values_equal"]
        assert f"{check['largest_gradient_difference_eps']:.2f}" in text


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend is absent")
def test_the_script_writes_its_json_and_figure(tmp_path):
    out, figure = tmp_path / "w.json", tmp_path / "w.png"
    argv = ["--steps", "10", "--check-steps", "2", "--compile-steps", "2", "--seeds", "2"]
    argv += ["--json", str(out), "--figure", str(figure)]
    assert walkthrough.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["provenance"]["command"].endswith(" ".join(argv))
    assert set(result["runs"]) == {"gumbel_softmax", "reinmax"}
    assert len(result["runs"]["reinmax"]["curve"]) == 1
    assert result["runs"]["reinmax"]["seeds"] == [0, 1]
    # Held as the port's 0-d buffer, an annealed τ compiles once.
    assert result["compiles"]["reinmax"]["tau as a 0-d tensor"] == 1
    assert result["port"]["largest_difference"]["weight"] == 0.0
    assert figure.stat().st_size > 0

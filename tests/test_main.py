"""``reinmax main`` runs the whole pipeline (conformance, then every task) end to end."""

from __future__ import annotations

import json

import pytest

from reinmax.tasks import main as main_job


def test_smoke_profile_runs_every_step_and_writes_one_summary(tmp_path, monkeypatch):
    for framework in ("torch", "jax"):
        pytest.importorskip(framework)
    from reinmax.tasks.listops_data import default_valid_path

    if not default_valid_path().exists():
        pytest.skip(f"the real ListOps split is not at {default_valid_path()}")
    monkeypatch.setenv("REINMAX_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "main"
    assert main_job.main(["--profile", "smoke", "--out", str(out)]) == 0
    result = json.loads((out / "main.json").read_text())
    assert set(result["seconds"]) == {"conformance", "poly", "vae", "listops"}
    tables = result["tables"]
    assert "backend runs pass" in tables["conformance"]
    assert "| reinmax |" in tables["poly"] and "| exact |" in tables["poly"]
    assert "8x4 train" in tables["vae"]
    assert "majority class" in tables["listops"]
    summary = (out / "summary.md").read_text()
    for name in ("conformance", "poly", "vae", "listops"):
        assert tables[name] in summary


def test_a_failing_step_stops_the_run(monkeypatch):
    from reinmax.tasks import poly

    monkeypatch.setattr(poly, "main", lambda argv: 1)
    with pytest.raises(SystemExit, match="step poly failed with exit status 1"):
        main_job._step("poly", [])

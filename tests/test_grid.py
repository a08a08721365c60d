"""``reinmax task grid`` on a tiny CPU grid: runs at once, merged, resumed, failures named."""

from __future__ import annotations

import argparse
import json

import pytest

from reinmax.tasks import grid


def _vae_grid(out, data_dir, *task_options):
    return [
        "--task", "vae", "--estimator", "reinmax", "--config", "3x2",
        "--seeds", "2", "--epochs", "1", "--parallel", "2", "--out", str(out), "--",
        "--lr", "1e-3", "--tau", "1.0", "--optimizer", "adam", "--batch-size", "20",
        "--max-batches", "2", "--eval-samples", "2", "--analysis-images", "0",
        "--data-dir", str(data_dir), *task_options,
    ]  # fmt: skip


def test_a_tiny_vae_grid_runs_merges_and_resumes(tmp_path, data_dir, capsys):
    out = tmp_path / "grid"
    assert grid.main(_vae_grid(out, data_dir)) == 0
    merged = json.loads((out / "grid.json").read_text())
    keys = sorted((r["estimator"], r["seed"]) for r in merged["runs"])
    assert keys == [("reinmax", 0), ("reinmax", 1)]
    assert merged["summary"]["3x2"]["reinmax"]["seeds"] == 2
    table = (out / "table.md").read_text()
    assert "| reinmax |" in table and (out / "vae_curves.png").stat().st_size > 0
    assert (out / "vae_gradients.png").stat().st_size > 0
    assert len(list((out / "logs").glob("*.log"))) == 2

    # A run whose file is not complete runs again (from its checkpoint, or from the start, as
    # here); the finished ones are skipped; the numbers are the same.
    first = out / "runs" / "vae-reinmax-3x2-1.json"
    result = json.loads(first.read_text())
    result["complete"] = False
    first.write_text(json.dumps(result))
    capsys.readouterr()
    assert grid.main(_vae_grid(out, data_dir)) == 0
    assert "1 of 2 runs already finished" in capsys.readouterr().err
    assert json.loads((out / "grid.json").read_text())["summary"] == merged["summary"]


def test_a_failed_run_is_named_and_the_command_fails(tmp_path, data_dir, capsys):
    out = tmp_path / "grid"
    assert grid.main(_vae_grid(out, data_dir, "--batch-size", "0")) == 1
    err = capsys.readouterr().err
    assert "vae-reinmax-3x2-0 failed with exit code 2" in err
    assert "--batch-size" in (out / "logs" / "vae-reinmax-3x2-0.log").read_text()


def test_listops_runs_are_one_per_estimator_with_its_seeds(tmp_path):
    args = argparse.Namespace(
        task="listops", backend="jax", estimator=["reinmax", "straight_through"], config=[],
        seeds=3, seed=0, epochs=5, out=str(tmp_path),
    )  # fmt: skip
    runs = grid.grid_runs(args, ["--word-dim", "64"])
    assert [r.name for r in runs] == ["listops-reinmax", "listops-straight_through"]
    argv = runs[0].argv
    assert argv[:5] == ("listops", "--estimator", "reinmax", "--seeds", "3")
    assert "--resume" in argv and argv[-2:] == ("--word-dim", "64")
    assert argv[argv.index("--json") + 1] == str(tmp_path / "runs" / "listops-reinmax.json")
    assert not grid.finished(runs[0])
    runs[0].json.parent.mkdir(parents=True)
    runs[0].json.write_text(json.dumps({"runs": [{"final": {}}, {"final": {}}, {}]}))
    assert not grid.finished(runs[0])
    runs[0].json.write_text(json.dumps({"runs": [{"final": {}}] * 3}))
    assert grid.finished(runs[0])


def test_seeds_of_listops_start_at_zero():
    with pytest.raises(SystemExit):
        grid.main(["--task", "listops", "--seed", "3", "--out", "x"])

"""``reinmax main`` runs the whole pipeline (conformance, then every task) end to end.

The end-to-end test installs the package from a wheel into a fresh virtual environment and runs
the main job from an empty folder, twice: what ships must be enough (the ListOps split is package
data, nothing is read from beside the repository), and two runs with the same thread count must
print identical tables.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from reinmax.tasks import main as main_job

ROOT = Path(__file__).resolve().parents[1]
_PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation")
_OFFLINE = ("--quiet", "--no-deps", "--no-index")
_NOT_SOURCE = (".git", ".venv", ".reference", "build", "*.egg-info", "results", "__pycache__")


def _install_wheel(tmp_path: Path) -> Path:
    """A fresh venv with this package installed from a wheel and the test venv's dependencies."""
    # Built from a copy, so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [*_PIP_WHEEL, "--wheel-dir", str(wheels), str(source)],
        check=True,
        cwd=tmp_path,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies come from the test environment; this package only from the wheel.
    Path(site, "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = wheels.glob("reinmax-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", *_OFFLINE, str(wheel)],
        check=True,
    )
    return python


def test_the_installed_package_runs_the_main_job_alone_and_reproducibly(tmp_path):
    for framework in ("torch", "jax"):
        pytest.importorskip(framework)
    python = _install_wheel(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "REINMAX_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("REINMAX_LISTOPS_VALID", None)
    results = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        done = subprocess.run(
            [python, "-m", "reinmax.cli", "main", "--profile", "smoke", "--out", str(out)],
            cwd=empty,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        # Not a terminal: short progress lines, never a carriage-return bar.
        assert "\r" not in done.stderr
        results.append(json.loads((out / "main.json").read_text()))
    assert list(empty.iterdir()) == []
    first, second = results
    assert first["threads"] == 2
    assert first["tables"] == second["tables"]
    tables = first["tables"]
    assert set(tables) == {"conformance", "poly", "vae", "listops"}
    assert "backend runs pass" in tables["conformance"]
    assert "| reinmax |" in tables["poly"] and "| exact |" in tables["poly"]
    assert "8x4 train" in tables["vae"]
    assert "majority class" in tables["listops"]
    summary = (tmp_path / "run0" / "summary.md").read_text()
    for name in ("conformance", "poly", "vae", "listops"):
        assert tables[name] in summary


def test_a_failing_step_stops_the_run(monkeypatch):
    from reinmax.tasks import poly

    monkeypatch.setattr(poly, "main", lambda argv: 1)
    with pytest.raises(SystemExit, match="step poly failed with exit status 1"):
        main_job._step("poly", [])


def test_quiet_silences_progress(tmp_path, capsys):
    code = main_job.main(["--steps", "poly", "--profile", "smoke", "--out", str(tmp_path)])
    assert code == 0
    loud = capsys.readouterr()
    assert "poly" in loud.err
    code = main_job.main(
        ["--steps", "poly", "--profile", "smoke", "--out", str(tmp_path), "--quiet"]
    )
    assert code == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert "| reinmax |" in quiet.out


def test_every_package_folder_ships():
    """Each folder with an ``__init__.py`` is a package the wheel lists (a new subpackage
    missing from pyproject.toml would import in the checkout and fail installed)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert found == set(config["packages"])

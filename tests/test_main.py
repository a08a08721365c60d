"""``reinmax main`` runs the whole pipeline (conformance, then every task) end to end.

The end-to-end test installs the package from a wheel into a fresh virtual environment and runs
the main job from an empty folder, twice: what ships must be enough (the ListOps split is package
data, nothing is read from beside the repository), and two runs with the same thread count must
print identical tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from reinmax import runtime
from reinmax.tasks import main as main_job
from reinmax.tasks.common import THREAD_VARIABLES

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
    # The dependencies come from the test environment (its site-packages and those it adds, as a
    # venv that shares another's dependencies does); this package only from the wheel.
    sites = [sysconfig.get_paths()["purelib"]]
    sites += [p for p in sys.path if p.endswith("site-packages") and p not in sites]
    Path(site, "test_dependencies.pth").write_text("".join(f"{p}\n" for p in sites))
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
    assert first["threads"] == 1
    assert first["tables"] == second["tables"]
    tables = first["tables"]
    assert set(tables) == {"conformance", "poly", "vae", "listops"}
    assert "backend runs pass" in tables["conformance"]
    assert "| reinmax |" in tables["poly"] and "| exact |" in tables["poly"]
    assert "8x4 train" in tables["vae"]
    assert "majority class" in tables["listops"]
    for path in sorted((tmp_path / "run0").glob("*.json")):
        record = json.loads(path.read_text())["provenance"]
        assert _provenance_schema_errors(record) == [], path
        assert record["commit"] is None and record["dirty"] is None  # a wheel, not a checkout
        assert record["machine"]["threads"] == 1
        words = (("reinmax", "main"), *(("reinmax", *w) for w in main_job.STAGES.values()))
        assert any(record["command"].startswith(" ".join(w)) for w in words), record["command"]
    summary = (tmp_path / "run0" / "summary.md").read_text()
    for name in ("conformance", "poly", "vae", "listops"):
        assert tables[name] in summary


def _provenance_schema_errors(record):
    """What is wrong with a results file's provenance block (an empty list: nothing)."""
    errors = []
    if not isinstance(record, dict):
        return [f"provenance is {record!r}"]
    expected = {"reinmax", "commit", "dirty", "python", "frameworks", "machine", "time", "command"}
    if not expected <= set(record):
        errors.append(f"missing {sorted(expected - set(record))}")
    machine = record.get("machine")
    if not record.get("reconstructed"):
        if set(machine or {}) != {"cpu", "cores", "threads", "gpu", "platform"}:
            errors.append(f"machine is {machine!r}")
        if not isinstance(record.get("python"), str) or not record["python"].startswith("3."):
            errors.append(f"python is {record.get('python')!r}")
    if not isinstance(record.get("frameworks"), dict) or "numpy" not in record["frameworks"]:
        errors.append(f"frameworks is {record.get('frameworks')!r}")
    time = record.get("time")
    if not isinstance(time, str) or not time.endswith("+00:00"):
        errors.append(f"time is {time!r}")
    return errors


def _banner_argv(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[:2] == ["$", "reinmax"], line
    return words[2:]


def _parsed_options(monkeypatch, argv):
    """The namespace the real command line parses ``argv`` into; nothing runs beyond parsing."""
    from reinmax.cli import main as cli

    class Parsed(Exception):
        pass

    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    with pytest.raises(Parsed) as parsed:
        cli(argv)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original)
    return parsed.value.args[0]


@pytest.mark.parametrize("profile", ["quick", "paper", "smoke", "readme"])
def test_every_stage_banner_is_a_reinmax_command_with_valid_options(profile, monkeypatch):
    from reinmax.cli import COMMANDS
    from reinmax.tasks.common import estimator_names
    from reinmax.tasks.poly.problem import EXTRA_METHODS

    out = Path("results/main")
    for name, words in main_job.STAGES.items():
        argv = main_job.stage_argv(name, profile, out, resume=True)
        command = _banner_argv(main_job.banner(name, argv))
        assert tuple(command[: len(words)]) in COMMANDS, command
        args = _parsed_options(monkeypatch, command)
        assert Path(args.json) == out / f"{name}.json"
        for estimator in getattr(args, "estimator", None) or []:
            assert estimator in (*estimator_names(), *EXTRA_METHODS, "all")
        if name != "conformance":
            assert args.backend == main_job.DEFAULT_BACKEND[name] and args.resume
        else:
            assert args.summary  # one line per backend
    export = shlex.split(main_job.threads_banner(3))
    assert export[:2] == ["$", "export"]
    assert dict(w.split("=") for w in export[2:]) == dict.fromkeys(THREAD_VARIABLES, "3")


def test_the_job_prints_each_stage_as_its_command_then_one_table(tmp_path, monkeypatch, capsys):
    """The stages run through the real command line (here with their work replaced by a stub
    that writes a results file): the banners come in order, are the commands that ran, and the
    job ends with one table naming each results file, then the figures."""
    from reinmax import cli

    ran = []

    def fake_cli(argv):
        ran.append(list(argv))
        args = argv[argv.index("--json") + 1]
        Path(args).parent.mkdir(parents=True, exist_ok=True)
        Path(args).with_suffix(".png").write_bytes(b"")
        return 0

    monkeypatch.setattr(cli, "main", fake_cli)
    monkeypatch.setattr(main_job, "summary_tables", lambda out: {})
    monkeypatch.setattr(main_job, "_HEADLINES", dict.fromkeys(main_job.STAGES, lambda r: "x"))
    for name in main_job.STAGES:
        runtime.write_json(tmp_path / f"{name}.json", {"task": name})
    assert main_job.main(["--out", str(tmp_path), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    banners = [line for line in lines if line.startswith("$ ")]
    assert banners[0] == main_job.threads_banner(1)
    assert [_banner_argv(b) for b in banners[1:]] == ran
    assert [r[0] if r[0] == "conformance" else r[1] for r in ran] == list(main_job.STAGES)
    table = lines[lines.index("| stage | wall s | CPU s | what it shows | results |") :]
    assert [row.split(" | ")[0] for row in table[2:6]] == [f"| {n}" for n in main_job.STAGES]
    assert table[7] == "figures:" and table[8:] == [
        f"  {tmp_path / name}.png" for name in sorted(main_job.STAGES)
    ]
    record = json.loads((tmp_path / "main.json").read_text())
    assert record["commands"]["poly"] == banners[2]
    assert _provenance_schema_errors(record["provenance"]) == []


def test_the_job_refuses_to_write_into_docs_results_without_publish(tmp_path, capsys):
    code = main_job.main(["--out", str(tmp_path / "docs" / "results" / "main")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "docs/results/" in err and "--publish" in err and "\n" not in err


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


def test_the_conformance_summary_prints_one_line_per_backend(tmp_path, capsys):
    from reinmax.conformance.cli import main as conformance

    path = tmp_path / "conformance.json"
    argv = ["--quick", "--summary", "--estimators", "straight_through", "--dtypes", "float64"]
    assert conformance([*argv, "--backends", "numpy,torch", "--json", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["numpy", "torch"]
    assert all(": agrees: " in line and "identity checks pass" in line for line in lines)
    report = json.loads(path.read_text())
    assert {r["backend"] for r in report["runs"]} == {"numpy", "torch"}  # details in the file
    assert report["provenance"]["command"].startswith("reinmax conformance --quick --summary")


def test_the_conformance_summary_names_every_failure():
    from reinmax.conformance.suite import Report, format_summary

    def record(backend, passed, **more):
        return {"backend": backend, "estimator": "reinmax", "passed": passed, **more}

    runs = [
        record("numpy", True, dtype="float64", transform="x", max_scaled_error=0.5),
        record("jax", False, dtype="float32", transform="vmap", max_scaled_error=99.0),
    ]
    runs[1]["detail"] = "gradient differs"
    identities = [record("jax", True, identity="I1", check="c", detail="")]
    lines = format_summary(Report(runs, identities)).splitlines()
    assert lines[0].startswith("numpy: agrees: 1/1 runs pass")
    assert lines[1].startswith("jax: FAILS: 0/1 runs pass (largest error 99")
    assert lines[1].endswith("1/1 identity checks pass")
    assert lines[2:] == ["1 FAILED:", "  reinmax on jax (float32, vmap): gradient differs"]


def test_the_summary_orders_methods_and_shows_no_spread_for_one_seed():
    values = {"st": (16.04, 0.0, 1), "reinmax": (15.98, 0.0, 1), "gs": (15.1, 0.0, 1)}
    assert main_job._ordered(values, 1, descending=True) == "st 16.0 = reinmax 16.0 > gs 15.1"
    values = {"st": (0.2475, 2e-5, 3), "reinmax": (0.2267, 8e-5, 3)}
    assert main_job._ordered(values, 4, descending=False) == (
        "reinmax 0.2267 ± 0.0001 < st 0.2475 ± 0.0000"
    )

"""What long-running commands share: progress lines, --quiet, atomic files, checkpoints that
cannot go silently bad, and command-line values checked before any work starts."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import pickle
import platform
from pathlib import Path

import numpy as np
import pytest

from reinmax import runtime

STATE = {"options": {"lr": 1e-3}, "weights": [np.arange(6.0).reshape(2, 3)], "step": 7}


def test_progress_prints_short_lines_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "PLAIN_INTERVAL", 0.0)
    assert list(runtime.progress(range(3), total=3, desc="epoch 1/2")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines)
    assert lines[-1].startswith("epoch 1/2: done 3/3 in ")
    assert all(line.startswith("epoch 1/2: at ") for line in lines[:-1])


def test_progress_of_a_resumed_loop_counts_from_where_it_was(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "PLAIN_INTERVAL", 0.0)
    list(runtime.progress(range(3), total=10, desc="calls", initial=7))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == [
        "calls: at 8/10",
        "calls: at 9/10",
        "calls: at 10/10",
        "calls: done 10/10",
    ]


def test_progress_prints_one_line_per_loop_by_default(capsys):
    list(runtime.progress(range(1000), total=1000, desc="steps"))
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_quiet_silences_progress_and_status_and_is_restored(capsys):
    with runtime.quiet():
        list(runtime.progress(range(3), desc="x"))
        runtime.status("hidden")
        assert runtime.is_quiet()
    assert not runtime.is_quiet()
    runtime.status("shown")
    assert capsys.readouterr().err == "shown\n"


def test_write_json_is_atomic_and_read_json_names_a_bad_file(tmp_path):
    path = runtime.write_json(tmp_path / "a" / "r.json", {"x": np.float32(1.5), "y": np.ones(2)})
    record = runtime.read_json(path)
    assert record.pop("provenance")["command"]
    assert record == {"x": 1.5, "y": [1.0, 1.0]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    path.write_text('{"x": 1')
    with pytest.raises(runtime.ResultFileError, match=rf"{path} is not a valid JSON result"):
        runtime.read_json(path)


def test_checkpoint_round_trip(tmp_path):
    path = runtime.save_checkpoint(tmp_path / "c.ckpt", STATE, "vae")
    loaded = runtime.load_checkpoint(path, "vae")
    assert loaded["options"] == STATE["options"] and loaded["step"] == 7
    np.testing.assert_array_equal(loaded["weights"][0], STATE["weights"][0])
    assert runtime.load_checkpoint(tmp_path / "missing.ckpt", "vae") is None


def _corruptions(good: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(good)
    flipped[-20] ^= 0x04  # one bit inside the payload
    foreign = pickle.dumps(STATE)
    return {
        "empty": (b"", "is empty"),
        "truncated": (good[: len(good) - 30], "truncated or corrupted"),
        "one flipped bit": (bytes(flipped), "truncated or corrupted"),
        "garbage": (b"\x00\x13garbage" * 10, "is not a reinmax checkpoint"),
        "a bare pickle": (foreign, "is not a reinmax checkpoint"),
        "another version": (good.replace(b"\n1\n", b"\n99\n", 1), "format version '99'"),
        "another command": (good.replace(b"\nvae\n", b"\npoly\n", 1), "written by 'poly'"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "truncated",
        "one flipped bit",
        "garbage",
        "a bare pickle",
        "another version",
        "another command",
    ],
)
def test_a_bad_checkpoint_is_refused_with_one_line_naming_it(tmp_path, case):
    path = runtime.save_checkpoint(tmp_path / "c.ckpt", STATE, "vae")
    data, why = _corruptions(path.read_bytes())[case]
    path.write_bytes(data)
    with pytest.raises(runtime.CheckpointError) as error:
        runtime.load_checkpoint(path, "vae")
    message = str(error.value)
    assert str(path) in message and why in message and "delete it" in message
    assert "\n" not in message


def test_a_checkpoint_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "c.ckpt"
    runtime.save_checkpoint(path, {"x": Evil()}, "vae")
    with pytest.raises(runtime.CheckpointError, match=r"builtins\.print is not plain data"):
        runtime.load_checkpoint(path, "vae")


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (runtime.positive_float, "inf", "a finite number > 0"),
        (runtime.positive_float, "0", "a finite number > 0"),
        (runtime.positive_float, "nan", "a finite number > 0"),
        (runtime.positive_float, "abc", "a finite number > 0"),
        (runtime.non_negative_float, "-1", "a finite number >= 0"),
        (runtime.positive_int, "0", "an integer >= 1"),
        (runtime.positive_int, "1.5", "an integer >= 1"),
        (runtime.non_negative_int, "-2", "an integer >= 0"),
    ],
)
def test_argument_types_refuse_bad_values(parse, text, expected):
    with pytest.raises(argparse.ArgumentTypeError, match=expected):
        parse(text)
    assert runtime.positive_float("1e-3") == 1e-3 and runtime.non_negative_int("0") == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["task", "poly", "--lr", "inf"],
        ["task", "poly", "--tau", "inf"],
        ["task", "poly", "--gap", "-1"],
        ["task", "vae", "--tau", "0"],
        ["task", "vae", "--eval-samples", "0"],
        ["task", "listops", "--lr", "nan"],
        ["study", "bias", "--draws", "0"],
        ["main", "--threads", "0"],
    ],
)
def test_bad_command_line_values_exit_2_before_any_work(argv, capsys, monkeypatch):
    import reinmax.conformance
    from reinmax.cli import main

    def no_work(*args, **kwargs):
        raise AssertionError("the command started work")

    monkeypatch.setattr(reinmax.conformance, "gate", no_work)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_a_corrupt_checkpoint_ends_a_command_with_one_line(tmp_path, capsys):
    from reinmax.cli import main

    json_path = tmp_path / "poly.json"
    checkpoint = json_path.with_suffix(".ckpt")
    checkpoint.write_bytes(b"not a checkpoint")
    code = main(["task", "poly", "--steps", "2", "--json", str(json_path), "--resume"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"reinmax task poly: checkpoint {checkpoint} is not a reinmax")


@dataclasses.dataclass(frozen=True)
class _Config:
    steps: runtime.PositiveInt = 10
    lr: runtime.PositiveFloat = 0.5
    gap: runtime.NonNegativeFloat = 1.0
    taus: tuple[runtime.PositiveFloat, ...] = (0.5, 1.0)
    name: str = "plain"  # not annotated with a type: not an option

    def __post_init__(self) -> None:
        if self.steps > 100:
            raise ValueError("steps must be <= 100")


def test_config_parser_declares_the_annotated_fields_with_their_defaults(capsys):
    parser = runtime.config_parser("prog", "what it does", _Config(), helps={"lr": "step size"})
    args = parser.parse_args([])
    assert (args.steps, args.lr, args.gap, args.taus, args.quiet) == (
        10,
        0.5,
        1.0,
        [0.5, 1.0],
        False,
    )
    assert not hasattr(args, "name")
    assert "step size" in parser.format_help()
    config = runtime.config_from_args(parser, _Config, parser.parse_args(["--taus", "2", "3"]))
    assert config == _Config(taus=(2.0, 3.0))
    for argv, message in (
        (["--steps", "0"], "--steps: must be an integer >= 1, got '0'"),
        (["--gap", "-1"], "--gap: must be a finite number >= 0, got '-1'"),
        (["--taus", "1", "nan"], "--taus: must be a finite number > 0, got 'nan'"),
        (["--name", "x"], "unrecognized arguments: --name x"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    # The dataclass's own checks are usage errors too.
    with pytest.raises(SystemExit):
        runtime.config_from_args(parser, _Config, parser.parse_args(["--steps", "101"]))
    assert "steps must be <= 100" in capsys.readouterr().err


def test_config_parser_refuses_a_help_for_no_option():
    with pytest.raises(ValueError, match="helps names fields that are not options: name, stesp"):
        runtime.config_parser("prog", "", _Config(), helps={"stesp": "typo", "name": "plain"})


def test_markdown_table():
    table = runtime.markdown_table(["a", "b"], [[1, "x"], (2.5, "")])
    assert table == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 |  |"


PROVENANCE_KEYS = sorted(
    ["command", "commit", "dirty", "frameworks", "machine", "python", "reinmax", "time"]
)


def test_every_results_file_records_its_provenance(tmp_path):
    @runtime.command("reinmax demo")
    def demo(argv):
        runtime.write_json(tmp_path / "r.json", {"x": 1})
        return 0

    assert demo(["--n", "two words"]) == 0
    record = runtime.read_json(tmp_path / "r.json")
    assert record["x"] == 1
    provenance = record["provenance"]
    assert sorted(provenance) == PROVENANCE_KEYS
    assert provenance["command"] == "reinmax demo --n 'two words'"
    assert provenance["python"] == platform.python_version()
    assert provenance["reinmax"] == importlib.metadata.version("reinmax")
    assert provenance["frameworks"]["numpy"] == np.__version__
    assert set(provenance["frameworks"]) <= {"torch", "jax", "tensorflow", "keras", "numpy"}
    machine = provenance["machine"]
    assert sorted(machine) == ["cores", "cpu", "gpu", "platform", "threads"]
    assert machine["cores"] == os.cpu_count()
    assert datetime.datetime.fromisoformat(provenance["time"]).utcoffset().total_seconds() == 0
    # This checkout is a git one: its commit, and whether its tracked files changed.
    assert len(provenance["commit"]) == 40 and isinstance(provenance["dirty"], bool)
    # Outside a command, the process's own command line.
    runtime.write_json(tmp_path / "s.json", {})
    assert runtime.read_json(tmp_path / "s.json")["provenance"]["command"] != provenance["command"]


def test_the_shipped_results_record_their_provenance():
    """Every file under docs/results/ has a provenance block; those written before files had
    one say that it is reconstructed, and leave unknown what was not recorded."""
    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    paths = sorted(root.rglob("*.json"))
    assert paths
    for path in paths:
        provenance = runtime.read_json(path)["provenance"]
        assert set(PROVENANCE_KEYS) <= set(provenance), path
        if provenance.get("reconstructed"):
            assert provenance["machine"] is None, path  # never recorded before provenance()
            assert len(provenance["commit"]) == 40, path
        else:
            assert sorted(provenance["machine"]) == ["cores", "cpu", "gpu", "platform", "threads"]


def test_writing_into_docs_results_needs_publish(tmp_path):
    shipped = tmp_path / "docs" / "results" / "r.json"
    with pytest.raises(runtime.PublishError, match=r"docs/results/.*pass --publish"):
        runtime.write_json(shipped, {"x": 1})
    with pytest.raises(runtime.PublishError):
        runtime.save_checkpoint(shipped.with_suffix(".ckpt"), STATE, "vae")
    assert not shipped.parent.exists()
    with runtime.publishing():
        runtime.write_json(shipped, {"x": 1})
    assert runtime.read_json(shipped)["x"] == 1
    runtime.write_json(tmp_path / "docs" / "other" / "r.json", {})  # only docs/results


@pytest.mark.parametrize(
    "argv",
    [
        ["task", "poly", "--steps", "2"],
        ["task", "vae", "--epochs", "1"],
        ["task", "listops", "--epochs", "1"],
        ["conformance", "--quick"],
        ["study", "bias"],
        ["main"],
    ],
)
def test_a_command_refuses_docs_results_without_publish_before_any_work(
    argv, tmp_path, capsys, monkeypatch
):
    import reinmax.conformance
    import reinmax.conformance.cli
    from reinmax.cli import main

    def no_work(*args, **kwargs):
        raise AssertionError("the command started work")

    monkeypatch.setattr(reinmax.conformance, "gate", no_work)
    monkeypatch.setattr(reinmax.conformance.cli, "run_suite", no_work)
    target = tmp_path / "docs" / "results" / "x.json"
    flag = "--out" if argv == ["main"] else "--json"
    assert main([*argv, flag, str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    words = argv[:2] if argv[0] in ("task", "study") else argv[:1]
    assert err[-1].startswith(f"reinmax {' '.join(words)}: ")
    assert f"{target} is under docs/results/" in err[-1] and "--publish" in err[-1]
    assert not target.parent.exists()


def test_publish_is_an_option_of_every_command_that_writes_results(capsys):
    from reinmax.cli import main

    for words in (
        ["task", "poly"],
        ["task", "vae"],
        ["task", "listops"],
        ["task", "grid"],
        ["task", "listops-eval"],
        ["study", "bias"],
        ["bench"],
        ["conformance"],
        ["fuzz"],
        ["main"],
    ):
        with pytest.raises(SystemExit):
            main([*words, "--help"])
        assert "--publish" in capsys.readouterr().out, words

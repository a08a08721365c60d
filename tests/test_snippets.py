"""Every code block of README.md and the docs pages runs, and shows what it prints.

A Python block runs in its page's namespace (a page's blocks run in order, in one fresh process
per group of pages); its ``# -> ...`` lines are the output it must print, line for line. A shell
block's ``reinmax`` commands are parsed, not run (training runs take hours): each must name a real
subcommand whose options its parser accepts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
# Pages whose blocks need their own process: Keras reads its backend once, at import.
OWN_PROCESS = {"docs/keras.md": {"KERAS_BACKEND": "tensorflow"}}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)

RUNNER = r"""
import contextlib, io, json, sys
import torch  # before tensorflow, in one process

results = []
for page, blocks in json.loads(sys.argv[1]).items():
    namespace = {"__name__": "__snippet__"}
    for number, code in enumerate(blocks):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"{page} block {number}", "exec"), namespace)
            error = None
        except BaseException as exc:  # reported, not raised: the test names the block
            error = f"{type(exc).__name__}: {exc}"
        results.append([page, number, out.getvalue(), error])
print(json.dumps(results))
"""


def _blocks(page: str, language: str) -> list[str]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return [body for lang, body in FENCE.findall(text) if lang == language]


def _expected(code: str) -> list[str] | None:
    shown = [line[len("# -> ") :] for line in code.splitlines() if line.startswith("# -> ")]
    return shown or None


def _run(pages: list[str], env: dict[str, str]) -> list[list]:
    blocks = {page: _blocks(page, "python") for page in pages}
    blocks = {page: codes for page, codes in blocks.items() if codes}
    if not blocks:
        return []
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(blocks)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


GROUPS = [
    ("pages", [p for p in PAGES if p not in OWN_PROCESS], {}),
    *((page, [page], env) for page, env in OWN_PROCESS.items()),
]


@pytest.mark.parametrize(("name", "pages", "env"), GROUPS, ids=[g[0] for g in GROUPS])
def test_python_blocks_run_and_print_what_they_show(name, pages, env):
    failures = []
    for page, number, output, error in _run(pages, env):
        code = _blocks(page, "python")[number]
        if error is not None:
            failures.append(f"{page} block {number}: {error}")
            continue
        expected = _expected(code)
        if expected is not None and output.splitlines() != expected:
            failures.append(f"{page} block {number}: printed {output!r}, shows {expected!r}")
    assert not failures, "\n".join(failures)


def _commands(page: str) -> list[list[str]]:
    """The ``reinmax`` command lines of a page's shell blocks, as argument lists."""
    import shlex

    commands = []
    for body in _blocks(page, "bash") + _blocks(page, "sh") + _blocks(page, "shell"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip().removeprefix("$ ")
            line = re.sub(r"\$\{?\w+\}?", "0", line)  # a shell variable: any value parses
            words = [w for w in (shlex.split(line) if line else []) if w not in ("&", ";", "&&")]
            for prefix in (["reinmax"], [".venv/bin/reinmax"], ["-m", "reinmax.cli"]):
                for i in range(len(words)):
                    if words[i : i + len(prefix)] == prefix:
                        commands.append(words[i + len(prefix) :])
                        break
                else:
                    continue
                break
    return commands


class _Parsed(Exception):
    """Raised instead of running a command, once its arguments parse."""


@pytest.mark.parametrize("page", PAGES)
def test_shell_commands_name_real_subcommands_with_valid_options(page, monkeypatch):
    import argparse

    from reinmax import cli

    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    for argv in _commands(page):
        argv = [a for a in argv if a not in ("--resume",)] + []
        with pytest.raises((_Parsed, SystemExit)) as outcome:
            cli.main(argv)
        if outcome.type is SystemExit:
            pytest.fail(f"{page}: `reinmax {' '.join(argv)}` does not parse")

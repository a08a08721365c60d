"""What every long-running command shares: progress, atomic result files and checkpoints.

Nothing here imports a framework. Progress goes to stderr: a live bar (tqdm) when stderr is a
terminal, otherwise one short line when a loop finishes and at most one a minute while it runs,
so that a log file stays readable. :func:`quiet` silences it for a block.

Files are written atomically (to a temporary file beside the target, then renamed over it), so
a killed run never leaves half a file. A checkpoint carries a format version and a SHA-256 of
its contents; one that is truncated, corrupted or foreign raises :class:`CheckpointError` naming
the file and saying what to do, and is never read into a silent result.

Every JSON results file goes through :func:`write_json`, which records :func:`provenance` (the
library version and commit, the frameworks, the machine, the time and the command) in it. The
shipped results under ``docs/results/`` are never overwritten by accident: writing there needs
the command's ``--publish`` flag (:func:`add_publish_option`), otherwise :class:`PublishError`.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
import io
import json
import math
import os
import pickle
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "PublishError",
    "ResultFileError",
    "add_publish_option",
    "add_quiet_option",
    "atomic_write_bytes",
    "check_destination",
    "command",
    "config_from_args",
    "config_parser",
    "finite_float",
    "is_quiet",
    "load_checkpoint",
    "markdown_table",
    "non_negative_float",
    "non_negative_int",
    "output_path",
    "positive_float",
    "positive_int",
    "progress",
    "provenance",
    "publishing",
    "quiet",
    "read_json",
    "save_checkpoint",
    "status",
    "write_json",
]

T = TypeVar("T")

_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("reinmax_quiet", default=False)
_PUBLISH: contextvars.ContextVar[bool] = contextvars.ContextVar("reinmax_publish", default=False)
_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "reinmax_command", default=None
)
PLAIN_INTERVAL = 60.0
"""Seconds between two progress lines of one loop when stderr is not a terminal."""


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`progress` and :func:`status` print nothing (when ``enabled``)."""
    token = _QUIET.set(enabled or _QUIET.get())
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    """Whether progress output is silenced here (:func:`quiet`)."""
    return _QUIET.get()


def status(message: str) -> None:
    """One line of progress on stderr, unless :func:`quiet`."""
    if not is_quiet():
        print(message, file=sys.stderr, flush=True)


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", initial: int = 0
) -> Iterator[T]:
    """Iterate, reporting progress on stderr.

    A tqdm bar when stderr is a terminal (and tqdm is installed); otherwise a line
    ``desc: done/total, elapsed`` at most once a minute and one when the loop ends. Nothing
    under :func:`quiet`. ``initial`` is the count already done before this loop (a resumed
    run), as tqdm's; the rate counts this loop's items only.
    """
    if is_quiet():
        yield from iterable
        return
    if _is_terminal(sys.stderr):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            yield from tqdm(
                iterable, total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True
            )
            return
    yield from _plain_progress(iterable, total, desc, initial)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def _plain_progress(
    iterable: Iterable[T], total: int | None, desc: str, initial: int = 0
) -> Iterator[T]:
    start = last = time.perf_counter()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= PLAIN_INTERVAL:
            last = now
            status(_plain_line(desc, done, total, now - start, finished=False, initial=initial))
    seconds = time.perf_counter() - start
    status(_plain_line(desc, done, total, seconds, finished=True, initial=initial))


def _plain_line(
    desc: str, done: int, total: int | None, seconds: float, *, finished: bool, initial: int = 0
) -> str:
    """``done`` items in ``seconds`` by this loop, after ``initial`` done before it."""
    count = f"{initial + done}/{total}" if total is not None else f"{initial + done}"
    rate = f", {done / seconds:.3g}/s" if seconds > 0 and done else ""
    word = "done" if finished else "at"
    label = f"{desc}: " if desc else ""
    return f"{label}{word} {count} in {_duration(seconds)}{rate}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = math.floor(seconds / 60)
    return f"{minutes} min {seconds - 60 * minutes:.0f} s"


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """Give a command the ``--quiet`` flag that :func:`command` honours."""
    parser.add_argument(
        "--quiet", action="store_true", help="no progress on stderr: only results and errors"
    )


def _number(kind: type, text: str, ok: Callable[[Any], bool], expected: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate, a temperature)."""
    return _number(float, text, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(float, text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    return _number(float, text, math.isfinite, "a finite number")


def config_parser(
    prog: str, description: str, defaults: Any, helps: Mapping[str, str] | None = None
) -> argparse.ArgumentParser:
    """A command's parser with ``--quiet`` (:func:`command`) and ``--name`` for each field of
    the dataclass instance ``defaults`` whose type is annotated with its argparse type
    (:data:`PositiveInt`, ..., or a tuple of one: one or more values), with that field's default
    and the help in ``helps``; :func:`config_from_args` builds the dataclass back.

    Raises:
        ValueError: a key of ``helps`` is not a field declared as an option (a typo would
            otherwise drop its help silently).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_quiet_option(parser)
    helps = dict(helps or {})
    hints = typing.get_type_hints(type(defaults), include_extras=True)
    for field in dataclasses.fields(defaults):
        hint = hints[field.name]
        many = typing.get_origin(hint) is tuple
        hint = typing.get_args(hint)[0] if many else hint
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        default = getattr(defaults, field.name)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=hint.__metadata__[0],
            nargs="+" if many else None,
            default=list(default) if many else default,
            help=helps.pop(field.name, None),
        )
    if helps:
        raise ValueError(f"helps names fields that are not options: {', '.join(sorted(helps))}")
    return parser


def config_from_args(
    parser: argparse.ArgumentParser, cls: Callable[..., T], args: argparse.Namespace, **given: Any
) -> T:
    """The dataclass ``cls`` built from the command line: each field from the argument of the
    same name (a list becomes a tuple), those in ``given`` as given; a ``ValueError`` of its
    checks is a usage error (exit 2 with the message)."""
    values = dict(given)
    for field in dataclasses.fields(cast(Any, cls)):  # a dataclass, as documented
        if field.name not in values and hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except ValueError as error:
        parser.error(str(error))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


PositiveInt = typing.Annotated[int, positive_int]
"""A configuration field that :func:`config_parser` declares as an integer >= 1."""
NonNegativeInt = typing.Annotated[int, non_negative_int]
"""A configuration field that :func:`config_parser` declares as an integer >= 0."""
PositiveFloat = typing.Annotated[float, positive_float]
"""A configuration field that :func:`config_parser` declares as a finite number > 0."""
NonNegativeFloat = typing.Annotated[float, non_negative_float]
"""A configuration field that :func:`config_parser` declares as a finite number >= 0."""


def command(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command's ``main(argv) -> int``.

    ``--quiet`` in ``argv`` silences progress for the whole command (its parser declares the flag
    with :func:`add_quiet_option`), ``--publish`` lets it write under ``docs/results/``
    (:func:`add_publish_option`), and an untrustworthy checkpoint or result file, or a refused
    destination, ends the command with one line on stderr naming the file, and exit status 2,
    instead of a traceback. The files it writes record ``prog`` and ``argv`` as their command
    (:func:`provenance`).
    """

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            token = _COMMAND.set(" ".join([prog, *map(shlex.quote, argv)]))
            publish = _PUBLISH.set("--publish" in argv)
            try:
                with quiet("--quiet" in argv):
                    try:
                        return int(main(argv) or 0)
                    except (CheckpointError, ResultFileError, PublishError) as error:
                        print(f"{prog}: {error}", file=sys.stderr)
                        return 2
            finally:
                _PUBLISH.reset(publish)
                _COMMAND.reset(token)

        return run

    return decorate


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the ``header`` cells, a rule, then one line per row of cells."""
    lines = ["| " + " | ".join(str(cell) for cell in line) + " |" for line in (header, *rows)]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


class ResultFileError(ValueError):
    """A result file that cannot be read back (truncated, not JSON, or of another task)."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted: truncated, corrupted, foreign or of another version."""


class PublishError(ValueError):
    """A write into ``docs/results/`` (the shipped results) without ``--publish``."""


SHIPPED_RESULTS = ("docs", "results")
"""The folder of the shipped results (any ``docs/results/`` on the path): written only when
publishing (:func:`publishing`, a command's ``--publish``)."""


@contextlib.contextmanager
def publishing(enabled: bool = True) -> Iterator[None]:
    """Within the block, files may be written under ``docs/results/`` (when ``enabled``)."""
    token = _PUBLISH.set(enabled)
    try:
        yield
    finally:
        _PUBLISH.reset(token)


def check_destination(path: str | os.PathLike[str]) -> Path:
    """``path``, unless it lies under ``docs/results/`` and this is not :func:`publishing`.

    Raises:
        PublishError: ``path`` is under ``docs/results/`` (the shipped results) and the
            command was not given ``--publish``.
    """
    path = Path(path)
    parts = path.resolve().parts
    n = len(SHIPPED_RESULTS)
    shipped = any(parts[i : i + n] == SHIPPED_RESULTS for i in range(len(parts) - n + 1))
    if shipped and not _PUBLISH.get():
        raise PublishError(
            f"{path} is under docs/results/, the shipped results: refusing to overwrite them; "
            "write under results/ (the default), or pass --publish to update the shipped files"
        )
    return path


def add_publish_option(parser: argparse.ArgumentParser) -> None:
    """Give a command that writes results the ``--publish`` flag that :func:`command` honours."""
    parser.add_argument(
        "--publish",
        action="store_true",
        help="allow writing under docs/results/ (the shipped results; refused otherwise)",
    )


def output_path(text: str) -> Path:
    """argparse type of a results file or folder: refused at once (before any work) when under
    ``docs/results/`` without ``--publish`` (:func:`check_destination`)."""
    try:
        return check_destination(text)
    except PublishError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_FRAMEWORKS = {
    "torch": ("torch",),
    "jax": ("jax",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
    "keras": ("keras",),
    "numpy": ("numpy",),
}
"""Each framework a result may depend on, and the distributions that install it."""


def _installed_version(distributions: Sequence[str]) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _run(*command: str, cwd: Path | None = None) -> str | None:
    """A command's stdout, or None if it cannot run or fails."""
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


@functools.lru_cache(maxsize=1)
def _source() -> tuple[str | None, bool | None]:
    """The commit of this library's checkout and whether its tracked files differ from it;
    (None, None) when it does not run from a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    top = _run("git", "rev-parse", "--show-toplevel", cwd=root)
    if top is None or Path(top).resolve() != root:
        return None, None
    commit = _run("git", "rev-parse", "HEAD", cwd=root)
    changes = _run("git", "status", "--porcelain", "--untracked-files=no", cwd=root)
    return commit, None if changes is None else bool(changes)


@functools.lru_cache(maxsize=1)
def _static_provenance() -> dict[str, Any]:
    try:
        version: str | None = importlib.metadata.version("reinmax")
    except importlib.metadata.PackageNotFoundError:
        version = None
    commit, dirty = _source()
    frameworks = {}
    for name, distributions in _FRAMEWORKS.items():
        found = _installed_version(distributions)
        if found is not None:
            frameworks[name] = found
    gpu = None
    if shutil.which("nvidia-smi"):
        names = _run("nvidia-smi", "--query-gpu=name", "--format=csv,noheader")
        gpu = names.splitlines()[0].strip() if names else None
    return {
        "reinmax": version,
        "commit": commit,
        "dirty": dirty,
        "python": platform.python_version(),
        "frameworks": frameworks,
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "threads": None,
            "gpu": gpu,
            "platform": platform.platform(),
        },
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _threads() -> int | None:
    """The CPU threads of this process's frameworks: torch's if it is loaded, else
    ``OMP_NUM_THREADS``; None when neither says."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else None


def provenance() -> dict[str, Any]:
    """Where a result comes from: what every results file records (:func:`write_json`).

    Nothing is imported to find it (framework versions come from the installed distributions).

    Returns:
        ``{"reinmax": version, "commit": sha or None, "dirty": bool or None, "python": "3.x.y",
        "frameworks": {name: version} (the installed ones of torch, jax, tensorflow, keras and
        numpy), "machine": {"cpu": model name, "cores": n, "threads": CPU threads in use,
        "gpu": name or None, "platform": ...}, "time": ISO-8601 UTC, "command": the command
        line}``. ``commit`` and ``dirty`` are None outside a git checkout; ``command`` is that of
        the running :func:`command` (else this process's ``sys.argv``).

    Examples:
        >>> record = provenance()
        >>> sorted(record)
        ['command', 'commit', 'dirty', 'frameworks', 'machine', 'python', 'reinmax', 'time']
        >>> record["time"].endswith("+00:00")
        True
    """
    static = _static_provenance()
    machine = dict(static["machine"], threads=_threads())
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command_line = _COMMAND.get() or " ".join(shlex.quote(a) for a in sys.argv)
    return {
        **static,
        "frameworks": dict(static["frameworks"]),
        "machine": machine,
        "time": now,
        "command": command_line,
    }


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON atomically: to a temporary file beside ``path``, then rename over it.

    The one writer of every results file: a dict gets ``"provenance"``, :func:`provenance` now
    (replacing any it had). A path under ``docs/results/`` needs :func:`publishing`.

    Raises:
        PublishError: ``path`` is under ``docs/results/`` without ``--publish``.
    """
    path = check_destination(path)
    if isinstance(obj, dict):
        obj = {**obj, "provenance": provenance()}
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True)
    atomic_write_bytes(path, text.encode())
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON result file; :class:`ResultFileError` names the file if it is not valid."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultFileError(
            f"{path} is not a valid JSON result file ({error}); delete it or write the results "
            "elsewhere"
        ) from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating the parent folder if needed.

    Raises:
        PublishError: ``path`` is under ``docs/results/`` without ``--publish``.
    """
    path = check_destination(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; results are meant to be read like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    for attr in ("tolist", "item"):
        if hasattr(obj, attr):
            return getattr(obj, attr)()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# A checkpoint is MAGIC, then lines for the format version, the kind (which command wrote it) and
# the SHA-256 of the payload in hex, then the payload: a pickle of plain data (dicts, lists,
# numbers, strings and NumPy arrays).
_MAGIC = b"reinmax-checkpoint\n"
CHECKPOINT_VERSION = 1
"""The checkpoint format this version of the library writes and reads."""


def save_checkpoint(path: str | os.PathLike[str], state: Any, kind: str) -> Path:
    """Save ``state`` (plain data and NumPy arrays) atomically, with a version and a checksum.

    ``kind`` names what wrote it (``"vae"``, ``"poly"``, ...), so that a checkpoint of one
    command is never read by another.
    """
    path = Path(path)
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    header = f"{CHECKPOINT_VERSION}\n{kind}\n".encode() + _digest(payload) + b"\n"
    atomic_write_bytes(path, _MAGIC + header + payload)
    return path


def load_checkpoint(path: str | os.PathLike[str], kind: str) -> Any | None:
    """The state saved at ``path`` by :func:`save_checkpoint` with ``kind``, or None if no file.

    Raises:
        CheckpointError: the file is empty, truncated, corrupted (its checksum does not match),
            not a checkpoint of this library, of another kind or of another format version. The
            message names the file and says what to do.
    """
    path = Path(path)
    if not path.exists():
        return None
    data = path.read_bytes()

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {path} {what}; delete it (or move it away) to start afresh, or run "
            "without --resume"
        )

    if not data.startswith(_MAGIC):
        raise refuse("is empty" if not data else "is not a reinmax checkpoint")
    version, found, digest, payload = (data[len(_MAGIC) :].split(b"\n", 3) + [b""] * 3)[:4]
    if version != str(CHECKPOINT_VERSION).encode():
        shown = version.decode(errors="replace")[:20]
        raise refuse(f"has format version {shown!r}, this library reads {CHECKPOINT_VERSION}")
    if digest != _digest(payload):
        raise refuse("is truncated or corrupted (its checksum does not match its contents)")
    if found != kind.encode():
        raise refuse(f"was written by {found.decode(errors='replace')!r}, not {kind!r}")
    try:
        return _PlainUnpickler(io.BytesIO(payload)).load()
    except Exception as error:
        raise refuse(f"cannot be read ({type(error).__name__}: {error})") from None


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).hexdigest().encode()


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only: a checkpoint never runs other code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("builtins", "complex"),
            ("builtins", "set"),
            ("builtins", "frozenset"),
            ("builtins", "slice"),
            ("collections", "OrderedDict"),
            ("numpy", "dtype"),
            ("numpy", "ndarray"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

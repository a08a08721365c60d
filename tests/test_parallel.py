"""Data-parallel training (reinmax.tasks.parallel): every engine matches one process on the same
global batch, checkpoints move between worker counts, and bad requests are refused by name.

The multi-worker runs are subprocesses: JAX's host devices and TensorFlow's logical devices are
fixed when the framework starts, and a torch process group is one process per rank.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reinmax.tasks import parallel, poly, vae
from reinmax.tasks.parallel import jax as parallel_jax
from reinmax.tasks.vae import training

ENGINES = tuple(parallel.ENGINES)
LAUNCHED = tuple(b for b in ENGINES if parallel.engine_module(b).PROCESS_PER_WORKER)
"""The engines whose workers are processes started by a launcher (torchrun)."""

# What each engine's subprocess computes, on one worker and on two: four VAE training steps
# (Gumbel-Rao, whose noise has draws, categories and rows) from the same weights and batches, a
# checkpoint after two of them moved to the other worker count, and the polynomial problem
# with REINFORCE (whose leave-one-out baseline sums over every worker's samples). With torch
# each rank runs it (rank 0 writes); the one-worker runs use the engine's single(), as one
# process does.
# Commands of the VAE task run first ("{rank}" in one is the rank), their exit statuses kept.
# Each process group of a torch rank gets its own port: a rank that leaves a group early could
# otherwise join the next one through the store of the last.
_SCRIPT = """
import json, os, pickle, sys
import numpy as np
import reinmax.conformance
reinmax.conformance.gate = lambda backend, estimators: None
from reinmax.runtime import load_checkpoint, save_checkpoint
from reinmax.tasks import parallel, poly, vae

backend, workers, out, commands = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
ports = os.environ.get("PORTS", "").split()
rank = os.environ.get("RANK", "0")
codes = []

def next_group():
    if ports:
        os.environ["MASTER_PORT"] = ports.pop()

for command in commands:
    next_group()
    codes.append(vae.main([a.replace("{rank}", rank) for a in json.loads(command)]))
next_group()
two, one = parallel.start(backend, workers), parallel.single(backend)
spec = vae.ModelSpec(3, 2, "gumbel_rao", 1.0, 1e-3, "adam", gumbel_rao_k=2)
batches = np.random.default_rng(1).random((4, 20, vae.PIXELS), dtype=np.float32)

def checkpointed(state):
    path = f"{out}.{two.rank}.ckpt"
    save_checkpoint(path, state, "vae")
    return load_checkpoint(path, "vae")

def train(trainer, steps):
    return [trainer.train_step(batches[t], t) for t in steps]

def trainer(engine):
    return vae.make_trainer(backend, spec, vae.initial_parameters(3, 2, 0), 0, engine)

# Each trainer trains four steps, checkpointing after two; then it loads the other's
# checkpoint and trains the last two steps again (the same trainer: nothing recompiles).
runs, trainers, mids = {"codes": codes}, {}, {}
for name, engine in (("one", one), ("two", two)):
    trainers[name] = trainer(engine)
    losses = train(trainers[name], range(2))
    mids[name] = checkpointed(trainers[name].get_state())
    losses += train(trainers[name], range(2, 4))
    runs[name] = {"losses": losses, "end": trainers[name].get_state()}
for name, other in (("one", "two"), ("two", "one")):
    trainers[name].set_state(mids[other])
    losses = train(trainers[name], range(2, 4))
    runs[f"{name}_from_{other}"] = {"losses": losses, "end": trainers[name].get_state()}
config = poly.PolyConfig(
    methods=("reinforce_baseline",), powers=(2.0,), steps=4, seeds=2, seed=5, variables=8,
    samples=4, log_every=2, dtype="float64",
)
for name, engine in (("one", one), ("two", two)):
    out_poly = poly.train(backend, "reinforce_baseline", config, poly.seeds_of(config), engine)
    runs[f"poly_{name}"] = out_poly["expected_loss"]
if two.writer:
    with open(out, "wb") as f:
        pickle.dump(runs, f)
two.close()
"""


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (all held open together while they are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _launch(arguments: list[str], ranks: int) -> list[subprocess.Popen]:
    """Start ``_SCRIPT`` with ``arguments``: one process, or ``ranks`` torch ranks as
    ``torchrun`` starts them (with a port for each process group)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "XLA_FLAGS")}
    env["OMP_NUM_THREADS"] = "1"
    ports = " ".join(str(port) for port in _free_ports(len(arguments) - 2))
    processes = []
    for rank in range(ranks):
        if ranks > 1:
            env |= {"RANK": str(rank), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(rank)}
            env |= {"LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1", "PORTS": ports}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", _SCRIPT, *arguments],
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def _finish(processes: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    done = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def _vae_argv(backend: str, data_dir: Path, json_path: Path, *extra: str) -> list[str]:
    return [
        "--backend", backend, "--estimator", "reinmax", "--config", "3x2", "--lr", "1e-3",
        "--tau", "1.0", "--optimizer", "adam", "--epochs", "2", "--batch-size", "20",
        "--max-batches", "2", "--eval-samples", "2", "--analysis-images", "0",
        "--data-dir", str(data_dir), "--json", str(json_path), "--quiet", *extra,
    ]  # fmt: skip


def _numbers(path: Path) -> list[float]:
    """The numbers of a results file that training decides (not the timings)."""
    result = json.loads(path.read_text())
    history = [h for r in result["runs"] for h in r["epochs"]]
    numbers = [h[k] for h in history for k in ("train_neg_elbo", "test_neg_elbo")]
    return numbers + [r[k] for r in result["runs"] for k in ("test_neg_elbo_2", "test_iwae_2")]


def _arrays(tree) -> list[np.ndarray]:
    """Every array of a trainer state, in a fixed order."""
    if isinstance(tree, dict):
        return [a for key in sorted(tree, key=str) for a in _arrays(tree[key])]
    if isinstance(tree, list | tuple):
        return [a for item in tree for a in _arrays(item)]
    return [np.asarray(tree)] if isinstance(tree, np.ndarray) else []


def _same_state(actual, desired) -> None:
    """Parameters and optimizer state equal within float rounding: every array to 1e-5 of its
    norm. (Not every element to 1e-6: the gradients are summed in another order, and where a
    gradient's entry is itself at rounding level, Adam's normalized step lr · m/√v can move that
    one weight by a fraction of lr = 1e-3.)"""
    for a, d in zip(_arrays(actual), _arrays(desired), strict=True):
        assert a.shape == d.shape
        assert np.linalg.norm(a - d) <= 1e-5 * np.linalg.norm(d), np.abs(a - d).max()


def _stopped_vae_run(argv: list[str]) -> None:
    """Run the VAE command in this process, killed after its first checkpoint (epoch 1)."""
    real = training.Session.save

    def save_then_stop(self):
        real(self)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.Session, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            vae.main(argv)


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """Every engine's subprocess, run at once (the imports and compilations overlap), with the
    command-line runs of the process-per-worker engines in this process meanwhile.

    Where each worker is a process (torch), the ranks first resume, through the command line, a
    checkpoint of one process (killed after epoch 1), then start a run with a seed of their own
    (refused).
    """
    import reinmax.conformance

    root = tmp_path_factory.mktemp("parallel")
    available = [b for b in ENGINES if importlib.util.find_spec(b) is not None]
    paths = {
        b: {"whole": root / b / "whole.json", "crossed": root / b / "crossed.json"}
        for b in LAUNCHED
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reinmax.conformance, "gate", lambda b, e: None, raising=False)
        started = {}
        for backend in available:
            commands = []
            if backend in LAUNCHED:
                crossed = paths[backend]["crossed"]
                _stopped_vae_run(_vae_argv(backend, data_dir, crossed))
                commands = [
                    _vae_argv(backend, data_dir, crossed, "--resume"),
                    _vae_argv(backend, data_dir, root / backend / "seeds.json", "--seed", "{rank}"),
                ]
            workers = [1, 2] if backend in LAUNCHED else [2, 1]
            arguments = [backend, str(workers[0]), str(root / backend / "engine.pkl")]
            arguments += [json.dumps(command) for command in commands]
            started[backend] = _launch(arguments, workers[1])
        for backend in set(LAUNCHED) & set(available):
            assert vae.main(_vae_argv(backend, data_dir, paths[backend]["whole"])) == 0
        done = {name: _finish(processes) for name, processes in started.items()}
    return {"root": root, "paths": paths, "done": done}


def _engine(runs, backend: str) -> dict:
    if backend not in runs["done"]:
        pytest.skip(f"{backend} is not installed")
    for process in runs["done"][backend]:
        assert process.returncode == 0, process.stderr[-3000:]
    with open(runs["root"] / backend / "engine.pkl", "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("backend", ENGINES)
def test_vae_on_two_workers_matches_one_process(runs, backend):
    """The same global batches on two workers: the same losses (hence the same samples) and,
    after four steps, the same parameters and optimizer state, float rounding apart."""
    result = _engine(runs, backend)
    np.testing.assert_allclose(result["two"]["losses"], result["one"]["losses"], rtol=1e-6)
    _same_state(result["two"]["end"], result["one"]["end"])
    # The steps moved the weights: agreement is not that of untouched parameters.
    assert np.ptp(result["one"]["losses"]) > 1e-3


@pytest.mark.parametrize("backend", ENGINES)
def test_vae_checkpoints_move_between_worker_counts(runs, backend):
    """A checkpoint of two workers resumes in one, and one of one worker on two, each to where
    one worker gets uninterrupted."""
    result = _engine(runs, backend)
    for moved in ("one_from_two", "two_from_one"):
        expected = result["one"]["losses"][2:]
        np.testing.assert_allclose(result[moved]["losses"], expected, rtol=1e-6, err_msg=moved)
        _same_state(result[moved]["end"], result["one"]["end"])


@pytest.mark.parametrize("backend", ENGINES)
def test_poly_on_two_workers_matches_one_process(runs, backend):
    """Two workers share every step's samples: the same curves as one, in float64."""
    result = _engine(runs, backend)
    np.testing.assert_allclose(result["poly_two"], result["poly_one"], rtol=1e-12)


def test_engines_draw_the_same_noise(runs):
    """One worker of every engine: the same losses from the same noise (1e-5, relative)."""
    losses = {b: _engine(runs, b)["one"]["losses"] for b in ENGINES if b in runs["done"]}
    first = next(iter(losses.values()))
    for backend, values in losses.items():
        np.testing.assert_allclose(values, first, rtol=1e-5, err_msg=backend)


@pytest.mark.parametrize("backend", LAUNCHED)
def test_ranks_resume_one_process_checkpoint_through_the_command(runs, backend):
    """The ranks (``torchrun``'s) resume the checkpoint of one process killed after epoch 1, to
    the numbers of an uninterrupted run; rank 0 alone reports."""
    ranks = _engine(runs, backend)
    assert ranks["codes"][0] == 0
    crossed, whole = runs["paths"][backend]["crossed"], runs["paths"][backend]["whole"]
    result = json.loads(crossed.read_text())
    assert result["complete"] and result["workers"] == 2
    np.testing.assert_allclose(_numbers(crossed), _numbers(whole), rtol=1e-6)
    rank0, rank1 = runs["done"][backend]
    assert "| reinmax |" in rank0.stdout and rank1.stdout == ""


@pytest.mark.parametrize("backend", LAUNCHED)
def test_ranks_with_different_seeds_are_refused(runs, backend):
    assert _engine(runs, backend)["codes"][1] == 2
    for process in runs["done"][backend]:
        assert "--seed differs across ranks (rank 0: 0, rank 1: 1)" in process.stderr
    assert not (runs["root"] / backend / "seeds.json").exists()


def _usage_error(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_bad_requests_are_named_before_any_work(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    json_path = str(tmp_path / "vae.json")
    base = ["--data-dir", str(data_dir), "--json", json_path, "--estimator", "reinmax"]
    err = _usage_error(vae.main, [*base, "--backend", "torch", "--workers", "2"], capsys)
    assert "torchrun --nproc-per-node 2 -m reinmax.cli task" in err
    err = _usage_error(vae.main, [*base, "--backend", "jax", "--workers", "0"], capsys)
    assert "--workers must be an integer >= 1" in err
    err = _usage_error(vae.main, [*base, "--backend", "jax", "--workers", "3"], capsys)
    assert "--batch-size is 100, which does not divide among 3 workers" in err
    # 60 images in batches of 16: the last has 12, which 8 workers cannot share.
    argv = [*base, "--backend", "tensorflow", "--workers", "8", "--batch-size", "16"]
    err = _usage_error(vae.main, argv, capsys)
    assert "the last batch of an epoch is 12, which does not divide among 8 workers" in err
    for seed in ("-1", str(2**64), "x"):
        err = _usage_error(vae.main, [*base, "--seed", seed], capsys)
        assert "--seed: must be a non-negative integer below 2**64" in err
    err = _usage_error(vae.main, [*base, "--seed", str(2**64 - 1), "--seeds", "2"], capsys)
    assert "passes 2**64" in err
    err = _usage_error(poly.main, ["--backend", "jax", "--workers", "3"], capsys)
    assert "--samples is 64, which does not divide among 3 workers" in err
    err = _usage_error(poly.main, ["--seed", str(2**64)], capsys)
    assert "--seed: must be a non-negative integer below 2**64" in err
    assert not Path(json_path).exists()


def test_torchrun_starts_processes_for_torch_only(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for backend in ("jax", "tensorflow"):
        err = _usage_error(vae.main, ["--backend", backend, "--estimator", "reinmax"], capsys)
        assert f"--backend {backend} runs in one process: pass --workers N" in err


_STARTED_DEVICES = {
    "jax": lambda jax: len(jax.devices("cpu")),
    "tensorflow": lambda tf: len(tf.config.list_logical_devices("CPU")),
}
"""How many CPU devices each one-process engine's framework has, starting it if it has not."""


@pytest.mark.parametrize("backend, started_devices", _STARTED_DEVICES.items())
def test_a_started_framework_is_not_given_devices_behind_its_back(
    backend, started_devices, monkeypatch, capsys
):
    """Once JAX or TensorFlow has started with one device, --workers 2 is refused by name
    rather than run on one device."""
    framework = pytest.importorskip(backend)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    started = started_devices(framework)
    if started >= 2:
        pytest.skip(f"{backend} already has {started} devices here")
    with pytest.raises(parallel.ParallelError, match="had already started in this process"):
        parallel.start(backend, 2)
    assert vae.main(["--backend", backend, "--workers", "2", "--estimator", "reinmax"]) == 2
    assert "run the command in a fresh process" in capsys.readouterr().err


def test_host_device_flags_keep_the_others_and_never_lower_a_count():
    flag = parallel_jax.HOST_DEVICE_FLAG
    assert parallel_jax.host_device_flags("", 2) == f"{flag}=2"
    assert parallel_jax.host_device_flags(f"--a=1 {flag}=1", 4) == f"--a=1 {flag}=4"
    assert parallel_jax.host_device_flags(f"{flag}=8 --b", 4) == f"{flag}=8 --b"

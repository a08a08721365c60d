"""The categorical-VAE task: loss formula, cross-backend agreement, resume, outputs, analysis."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import reinmax
from reinmax.backends import numpy as rnp
from reinmax.core import REGISTRY
from reinmax.noise import estimator_noise
from reinmax.tasks import vae
from reinmax.tasks.common import estimator_names
from reinmax.tasks.vae import cli, config, evaluation, training
from reinmax.tasks.vae.data import write_idx

BACKENDS = tuple(vae.TRAINERS)


@pytest.fixture
def no_gate(monkeypatch):
    """The conformance gate is another task's work; here it always passes."""
    import reinmax.conformance

    monkeypatch.setattr(
        reinmax.conformance, "gate", lambda backend, estimators: None, raising=False
    )


def _trainer_module(backend):
    """Skip unless ``backend``'s trainer can be imported (its framework and libraries)."""
    pytest.importorskip(vae.TRAINERS[backend])


def test_loss_matches_a_hand_computation():
    # Two pixels, one latent variable of two categories: every term by hand.
    images = np.array([[0.0, 0.25]])
    z = np.array([[2.0, -1.0]])
    soft = np.array([[[0.8, 0.2]]])
    sigmoid = 1 / (1 + np.exp(-z))
    bce = -(images * np.log(sigmoid) + (1 - images) * np.log(1 - sigmoid)).sum()
    kl = 0.8 * math.log(0.8) + 0.2 * math.log(0.2) + math.log(2)
    assert vae.reconstruction_nll(images, z, xp=np)[0] == pytest.approx(bce, rel=1e-12)
    assert vae.kl_to_uniform(soft, xp=np)[0] == pytest.approx(kl, rel=1e-12)
    assert vae.negative_elbo(images, z, soft, xp=np)[0] == pytest.approx(bce + kl, rel=1e-12)


def test_loss_is_finite_for_extreme_logits_and_zero_probabilities():
    images = np.array([[1.0, 0.0]])
    z = np.array([[800.0, -800.0]])
    soft = np.array([[[1.0, 0.0, 0.0]]])
    assert vae.reconstruction_nll(images, z, xp=np)[0] == pytest.approx(0.0, abs=1e-12)
    # q = one-hot: KL to uniform is log C.
    assert vae.kl_to_uniform(soft, xp=np)[0] == pytest.approx(math.log(3), rel=1e-12)


def _numpy_loss(trainer, images, noise):
    """The batch −ELBO by the NumPy formula, from the trainer's encoder and decoder."""
    logits = trainer.encode(images).astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if noise.ndim == logits.ndim:  # Gumbel noise, one per category: argmax of θ + G
        index = np.argmax(logits - np.log(-np.log(noise.astype(np.float64))), axis=-1)
    else:  # Gumbel-Rao: its first slice decides the sample
        index = np.argmax(logits - np.log(-np.log(noise[0].astype(np.float64))), axis=-1)
    decoded = trainer.decode(np.eye(logits.shape[-1], dtype=np.float32)[index])
    return vae.negative_elbo(images, decoded.astype(np.float64), probs, xp=np).mean()


@pytest.mark.parametrize(
    ("estimator", "optimizer", "steps"),
    # RAdam's adaptive branch starts at step 6 (ρ_t > 5): seven losses see it.
    [("gumbel_softmax", "adam", 3), ("gumbel_rao", "radam", 7)],
)
def test_backends_agree_from_the_same_weights_and_noise(estimator, optimizer, steps):
    """Same host weights and portable noise drawn in each backend: every backend's first loss
    is the NumPy formula's on the noise drawn in NumPy (1e-6), and the first steps' losses agree
    across backends to 1e-5 (relative)."""
    for name in BACKENDS:
        _trainer_module(name)
    spec = vae.ModelSpec(4, 3, estimator, 0.7, 1e-3, optimizer, gumbel_rao_k=2)
    params = vae.initial_parameters(4, 3, seed=0)
    rng = np.random.default_rng(2)
    batches = [rng.random((20, vae.PIXELS), dtype=np.float32) for _ in range(steps)]
    first = vae.train_seed(7, 0, 0, spec.latents)
    noise = estimator_noise(
        vae.task_estimator(estimator, spec), (20, 3, 4), first, np.float64, xp=np
    )
    losses = {}
    for name in BACKENDS:
        trainer = vae.make_trainer(name, spec, params, seed=7)
        expected = _numpy_loss(trainer, batches[0], noise)
        losses[name] = np.array([trainer.train_step(x, t) for t, x in enumerate(batches)])
        assert losses[name][0] == pytest.approx(expected, rel=1e-6), name
    for name in ("jax", "tensorflow"):
        np.testing.assert_allclose(losses[name], losses["torch"], rtol=1e-5, err_msg=name)
    # The optimizer moved the weights: the losses are not all the same.
    assert np.ptp(losses["torch"]) > 1e-3


@pytest.mark.parametrize("estimator", ["reinmax", "gumbel_softmax", "gumbel_rao"])
def test_training_noise_of_a_slice_is_that_of_the_whole_batch(estimator):
    """A worker's slice of the batch, keyed by its first image, samples what the whole batch
    samples there; another step or seed samples afresh."""
    spec = vae.ModelSpec(4, 3, estimator, 1.0, 1e-3, "adam", gumbel_rao_k=3)
    chosen = vae.task_estimator(estimator, spec)
    logits = np.random.default_rng(5).normal(size=(8, 3, 4))

    def sample(rng, part=slice(None)):
        return rnp.estimate(chosen, logits[part], rng=rng)[0]

    whole = sample(vae.train_seed(11, 4, 0, 3))
    halves = [sample(vae.train_seed(11, 4, first, 3), slice(first, first + 4)) for first in (0, 4)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)
    for other in (vae.train_seed(11, 5, 0, 3), vae.train_seed(12, 4, 0, 3)):
        assert not np.array_equal(sample(other), whole)


def test_evaluation_draws_depend_on_the_global_image_index_only():
    whole = evaluation.latent_uniforms(3, vae.Stream.TEST, 0, 10, 4, 5)
    assert whole.shape == (5, 10, 4)
    np.testing.assert_array_equal(evaluation.latent_uniforms(3, 1, 6, 4, 4, 5), whole[:, 6:])
    # Fewer draws are the first draws of more.
    np.testing.assert_array_equal(evaluation.latent_uniforms(3, 1, 0, 10, 4, 2), whole[:2])
    assert not np.array_equal(evaluation.latent_uniforms(3, 2, 0, 10, 4, 5), whole)


def test_initial_parameters_have_the_paper_architecture():
    shapes = [k.shape for k, _ in vae.initial_parameters(8, 4, seed=0)]
    assert shapes == [(784, 512), (512, 256), (256, 32), (32, 256), (256, 512), (512, 784)]
    a, b = vae.initial_parameters(8, 4, seed=0), vae.initial_parameters(8, 4, seed=1)
    assert not np.array_equal(a[0][0], b[0][0])


def test_hyperparameter_table_and_config_parsing():
    assert vae.HYPERPARAMETERS["8x4", "reinmax"] == vae.Hyperparameters(5e-4, 1.3, "adam")
    assert vae.HYPERPARAMETERS["64x8", "gumbel_rao"] == vae.Hyperparameters(7e-4, 2.0, "adam")
    assert vae.HYPERPARAMETERS["10x30", "straight_through"].lr == 7e-3
    assert len(vae.HYPERPARAMETERS) == 30
    assert vae.parse_config("10x30") == (10, 30)
    for bad in ("8", "8x", "0x4", "1x4", "axb"):
        with pytest.raises(ValueError, match="config"):
            vae.parse_config(bad)


def _mlp_decoder(rng, categories, latents):
    w1 = rng.normal(size=(categories * latents, 16)) / 2
    w2 = rng.normal(size=(16, vae.PIXELS)) / 4

    def decode(z):
        return np.maximum(np.asarray(z, np.float64).reshape(len(z), -1) @ w1, 0) @ w2

    return decode


def test_exact_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    categories, latents = 3, 2
    decode = _mlp_decoder(rng, categories, latents)
    images = rng.random((2, vae.PIXELS))
    logits = rng.normal(size=(2, latents, categories))
    exact = vae.exact_reconstruction_gradient(images, logits, decode)
    step = 1e-5
    numeric = np.zeros_like(logits)
    for index in np.ndindex(logits.shape[1:]):
        bump = np.zeros_like(logits)
        bump[(slice(None), *index)] = step
        up = vae.expected_reconstruction(images, logits + bump, decode)
        down = vae.expected_reconstruction(images, logits - bump, decode)
        numeric[(slice(None), *index)] = (up - down) / (2 * step)
    np.testing.assert_allclose(exact, numeric, rtol=1e-6, atol=1e-6)


def test_gradient_statistics_see_an_unbiased_estimator_as_unbiased():
    """REINFORCE draws are unbiased for the exact gradient: the bias sits at the noise floor."""
    rng = np.random.default_rng(4)
    categories, latents, draws = 3, 2, 4096
    decode = _mlp_decoder(rng, categories, latents)
    images = rng.random((2, vae.PIXELS))
    logits = rng.normal(size=(2, latents, categories))
    exact = vae.exact_reconstruction_gradient(images, logits, decode)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    index = (np.cumsum(probs, -1)[:, None] < rng.random((2, draws, latents, 1))).sum(-1)
    z = np.eye(categories)[index]  # [N, S, L, C]
    recon = vae.reconstruction_nll(
        images[:, None], decode(z.reshape(-1, latents, categories)).reshape(2, draws, -1), xp=np
    )
    # The exact mean as the baseline: it does not depend on the draw, so it adds no bias.
    baseline = vae.expected_reconstruction(images, logits, decode)
    reinforce = (recon - baseline[:, None])[..., None, None] * (z - probs[:, None])
    stats = vae.gradient_statistics(reinforce, exact)
    assert stats["relative_bias"] < 3 * stats["bias_noise_floor"]
    assert stats["cosine"] > 0.99
    biased = vae.gradient_statistics(reinforce + exact[:, None], exact)
    assert biased["relative_bias"] == pytest.approx(1.0, abs=3 * stats["bias_noise_floor"])


def _run(tmp_path, data_dir, *extra):
    args = [
        "--backend", "torch", "--estimator", "reinmax", "gumbel_softmax", "--config", "3x2",
        "--lr", "1e-3", "--tau", "1.0", "--optimizer", "adam", "--epochs", "2",
        "--batch-size", "20", "--max-batches", "2", "--eval-samples", "4",
        "--analysis-images", "2", "--analysis-draws", "16", "--data-dir", str(data_dir),
        "--json", str(tmp_path / "vae.json"), *extra,
    ]  # fmt: skip
    assert vae.main(args) == 0
    return json.loads((tmp_path / "vae.json").read_text())


def analysis_of(run, moment):
    """The relative std of the run's own estimator in its analysis at ``moment``."""
    field = "gradient_analysis_start" if moment == "start" else "gradient_analysis"
    return run[field]["estimators"][run["estimator"]]["relative_std"]


def test_cli_writes_results_and_plots(tmp_path, data_dir, no_gate):
    _trainer_module("torch")
    result = _run(tmp_path, data_dir)
    assert result["complete"] and result["backend"] == "torch"
    assert [(r["estimator"], r["config"], r["seed"]) for r in result["runs"]] == [
        ("reinmax", "3x2", 0),
        ("gumbel_softmax", "3x2", 0),
    ]
    run = result["runs"][0]
    assert [h["epoch"] for h in run["epochs"]] == [1, 2]
    for field in ("train_neg_elbo", "test_neg_elbo", "test_neg_elbo_4", "test_iwae_4"):
        assert math.isfinite(run[field]) and run[field] > 0
    assert run["test_iwae_4"] <= run["test_neg_elbo_4"] + 1e-9
    assert run["train_neg_elbo"] == run["epochs"][-1]["train_neg_elbo"]
    # The analysis runs at the initial parameters and at the trained ones.
    for name in ("gradient_analysis_start", "gradient_analysis"):
        analysis = run[name]
        assert analysis["images"] == 2 and analysis["draws"] == 16
        assert set(analysis["estimators"]) == set(estimator_names())
        for stats in analysis["estimators"].values():
            assert -1 <= stats["cosine"] <= 1 and stats["relative_std"] > 0
    assert run["gradient_analysis_start"] != run["gradient_analysis"]
    cell = result["summary"]["3x2"]["reinmax"]
    assert cell["seeds"] == 1
    assert cell["relative_std_start"] == analysis_of(run, "start")
    assert cell["relative_std_end"] == analysis_of(run, "end")
    assert "| reinmax |" in vae.format_gradient_table(result["summary"])
    # Gumbel-Rao's K, the research code's 100 unless given, is recorded with what it ran.
    assert result["options"]["gumbel_rao_k"] == 100 and result["workers"] == 1
    assert [r["estimator_options"] for r in result["runs"]] == [{}, {}]
    assert analysis["estimators"]["gumbel_rao"]["options"] == {"k": 100}
    for name in ("curves", "reconstructions", "prior_samples", "gradients"):
        assert (tmp_path / f"vae_{name}.png").stat().st_size > 1000


def test_resume_after_a_kill_gives_the_uninterrupted_results(
    tmp_path, data_dir, no_gate, monkeypatch
):
    _trainer_module("torch")
    whole = _run(tmp_path / "whole", data_dir)

    saves = []
    real_save = training.save_checkpoint

    def save_then_die(path, state, kind):
        real_save(path, state, kind)
        saves.append(path)
        # Saves: reinmax epoch 1, epoch 2, its completion, gumbel_softmax epoch 1: then die,
        # so the resume both skips a finished run and continues one halfway through.
        if len(saves) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", data_dir)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    partial = json.loads((tmp_path / "killed" / "vae.json").read_text())
    assert not partial["complete"]
    resumed = _run(tmp_path / "killed", data_dir, "--resume")

    def numbers(result):
        return [{k: v for k, v in r.items() if k != "seconds_per_epoch"} | {"epochs": [
            {k: v for k, v in h.items() if k != "train_seconds"} for h in r["epochs"]]}
            for r in result["runs"]]  # fmt: skip

    assert numbers(resumed) == numbers(whole)


def test_resume_refuses_a_checkpoint_with_other_options(tmp_path, data_dir, no_gate, capsys):
    _trainer_module("torch")
    _run(tmp_path, data_dir)
    capsys.readouterr()
    with pytest.raises(AssertionError):
        _run(tmp_path, data_dir, "--resume", "--epochs", "3")
    err = capsys.readouterr().err
    assert "was written with other options (epochs)" in err and "vae.ckpt" in err


def test_gumbel_rao_draws_the_research_codes_k_by_default():
    assert "default 100" in " ".join(cli.build_parser().format_help().split())
    args, specs = cli.parse_args(["--estimator", "gumbel_rao"])
    assert args.gumbel_rao_k == 100 and specs["8x4", "gumbel_rao"].gumbel_rao_k == 100
    _, specs = cli.parse_args(["--estimator", "gumbel_rao", "--gumbel-rao-k", "3"])
    assert vae.estimator_options("gumbel_rao", specs["8x4", "gumbel_rao"]) == {"k": 3}


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        vae.main(["--estimator", "nope", "--json", str(tmp_path / "x.json")])
    assert "--estimator" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vae.main(["--config", "8by4", "--json", str(tmp_path / "x.json")])
    assert "--config" in capsys.readouterr().err
    # An untuned configuration without its hyper-parameters: a usage error naming them.
    with pytest.raises(SystemExit) as exit_info:
        vae.main(["--config", "3x3", "--json", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'3x3' has no tuned hyper-parameters" in err and "--lr, --tau, --optimizer" in err
    with pytest.raises(SystemExit) as exit_info:
        vae.main(["--config", "4x3", "--tau", "1", "--json", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    assert "pass --lr, --optimizer" in capsys.readouterr().err


@pytest.fixture
def registered_estimator():
    """An estimator registered at run time (straight-through under another name)."""
    reinmax.register_estimator("my_straight_through", REGISTRY["straight_through"]())
    yield "my_straight_through"
    reinmax.unregister_estimator("my_straight_through")


def test_cli_accepts_an_estimator_registered_at_run_time(registered_estimator, capsys):
    # No tuned hyper-parameters: the command names the options to pass.
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--estimator", registered_estimator])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"estimator '{registered_estimator}' has no tuned hyper-parameters" in err
    assert "--lr, --tau, --optimizer" in err
    given = ["--lr", "1e-3", "--tau", "1.2", "--optimizer", "radam"]
    args, specs = cli.parse_args(["--estimator", registered_estimator, "reinmax", *given])
    assert args.estimator == [registered_estimator, "reinmax"]
    assert specs["8x4", registered_estimator] == vae.ModelSpec(
        8, 4, registered_estimator, 1.2, 1e-3, "radam"
    )
    args, _ = cli.parse_args(["--estimator", "all", *given])
    assert args.estimator == list(estimator_names())
    assert registered_estimator in args.estimator
    # It is built with the task's options (none of which it takes).
    spec = specs["8x4", registered_estimator]
    assert vae.task_estimator(registered_estimator, spec).name == "straight_through"
    assert vae.estimator_options(registered_estimator, spec) == {}
    # The gradient analysis runs it at --tau, else in the middle of its registered τ range.
    assert config.analysis_tau("8x4", registered_estimator, 0.7) == 0.7
    assert config.analysis_tau("8x4", registered_estimator) == 1.0
    assert config.analysis_tau("8x4", "reinmax") == 1.3


def test_the_task_calls_the_conformance_gate(tmp_path, data_dir, monkeypatch):
    import reinmax.conformance

    calls = []

    def failing_gate(backend, estimators):
        calls.append((backend, estimators))
        raise RuntimeError("conformance failed")

    monkeypatch.setattr(reinmax.conformance, "gate", failing_gate, raising=False)
    with pytest.raises(RuntimeError, match="conformance"):
        _run(tmp_path, data_dir)
    assert calls == [("torch", ["reinmax", "gumbel_softmax"])]
    assert not (tmp_path / "vae.json").exists()


def test_gradient_analysis_refuses_large_configurations():
    trainer = types.SimpleNamespace(encode=lambda images: np.zeros((len(images), 8, 4), np.float32))
    with pytest.raises(ValueError, match="C\\*\\*L"):
        vae.gradient_analysis(
            trainer, np.zeros((1, vae.PIXELS), np.float32), {"reinmax": 1.0}, 4, 0
        )


def test_evaluation_does_not_depend_on_how_it_is_chunked(monkeypatch):
    _trainer_module("torch")
    spec = vae.ModelSpec(4, 3, "reinmax", 1.3, 1e-3, "adam")
    trainer = vae.make_trainer("torch", spec, vae.initial_parameters(4, 3, 0), 0)
    images = np.random.default_rng(1).random((250, vae.PIXELS)).astype(np.float32)
    whole = evaluation.evaluate(trainer, images, 7, 0, 1)
    monkeypatch.setattr(evaluation, "DECODE_LIMIT", 150)  # one or two draws per chunk
    chunked = evaluation.evaluate(trainer, images, 7, 0, 1)
    assert chunked["neg_elbo"] == pytest.approx(whole["neg_elbo"], rel=1e-12)
    assert chunked["iwae"] == pytest.approx(whole["iwae"], rel=1e-12)
    # Other blocks of images draw the same latents; only the float32 encoder's rounding, which
    # depends on its batch, may move the numbers.
    monkeypatch.setattr(evaluation, "EVAL_BLOCK", 60)
    blocked = evaluation.evaluate(trainer, images, 7, 0, 1)
    assert blocked["neg_elbo"] == pytest.approx(whole["neg_elbo"], rel=1e-9)
    assert blocked["iwae"] == pytest.approx(whole["iwae"], rel=1e-9)
    # The bound is an upper bound on −log p(x) below the mean −ELBO (Jensen).
    assert whole["iwae"] <= whole["neg_elbo"]


_PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
assert done.returncode == 0, done.stderr[-2000:]
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_evaluation_memory_does_not_grow_with_the_test_set_times_the_draws(tmp_path):
    """On the full Fashion-MNIST layout (60,000/10,000 images), 16 draws per test image peak
    about where one does: the draws and the test images are streamed, never held at once."""
    _trainer_module("torch")
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (60_000, 28, 28)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10_000, 28, 28)))
    env_cache = {"REINMAX_CACHE_DIR": str(tmp_path / "cache")}
    peaks = {}
    for samples in (1, 16):
        command = [
            sys.executable, "-c", _PEAK, sys.executable, "-m", "reinmax.cli", "task", "vae",
            "--backend", "torch", "--estimator", "straight_through", "--epochs", "1",
            "--max-batches", "2", "--eval-samples", str(samples), "--analysis-images", "0",
            "--data-dir", str(tmp_path), "--json", str(tmp_path / f"vae{samples}.json"), "--quiet",
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, **env_cache}
        )
        assert done.returncode == 0, done.stderr[-3000:]
        peaks[samples] = int(done.stdout.split()[-1]) * 1024  # kilobytes on Linux
    # Holding every draw at once would add 15 × 10,000 × 784 float64s (940 MB) and more.
    assert peaks[16] - peaks[1] < 150e6, peaks
    assert peaks[16] < 3e9, peaks


@pytest.mark.parametrize("variant", ["zgr", "reinmax_rao", "reinmax_cv"])
def test_reinmax_variants_take_reinmax_tuned_setting(variant):
    for shape in vae.CONFIGS:
        spec, reinmax = vae.model_spec(shape, variant), vae.model_spec(shape, "reinmax")
        assert (spec.lr, spec.tau, spec.optimizer) == (reinmax.lr, reinmax.tau, reinmax.optimizer)
    assert vae.model_spec("8x4", variant, lr=1e-2).lr == 1e-2


def test_the_initial_model_is_rebuilt_only_to_be_analysed(tmp_path, data_dir, no_gate, monkeypatch):
    from reinmax.tasks.vae import training

    built = []
    real = training.make_trainer
    monkeypatch.setattr(
        training, "make_trainer", lambda *args: built.append(args[3]) or real(*args)
    )
    result = _run(tmp_path, data_dir, "--analysis-images", "0")
    assert built == [0, 0]  # one trainer per run (two estimators), none for an analysis
    assert all(r["gradient_analysis_start"] is None for r in result["runs"])
    built.clear()
    _run(tmp_path / "analysed", data_dir)
    assert built == [0, 0, 0, 0]  # and the initial model of each run, to analyse it

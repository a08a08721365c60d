"""The Keras 3 layer under each Keras backend, each in its own process (Keras picks its backend
once, from KERAS_BACKEND, when it is first imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

_SCRIPT = r"""
import json, multiprocessing, os, pickle, sys, tempfile
import numpy as np
import keras
from reinmax.keras import CategoricalSampler

keras.utils.set_random_seed(0)
inputs = keras.Input((6,))
logits = keras.layers.Reshape((3, 4))(keras.layers.Dense(12, name="encoder")(inputs))
hard = CategoricalSampler("reinmax", tau=1.3, seed=7, name="sampler")(logits)
outputs = keras.layers.Dense(1, name="head")(keras.layers.Flatten()(hard))
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
rng = np.random.default_rng(0)
x = rng.normal(size=(250, 6)).astype("float32")   # a last batch of 26: another batch size
y = (x[:, :1] > 0).astype("float32")
before = model.get_layer("encoder").get_weights()[0].copy()
loss = model.fit(x, y, epochs=4, batch_size=32, verbose=0).history["loss"]
moved = float(np.abs(model.get_layer("encoder").get_weights()[0] - before).max())


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(8)
        self.sampler = CategoricalSampler("gumbel_rao", tau=0.5, k=4, seed=3, return_soft=True)

    def call(self, x):
        hard, soft = self.sampler(keras.ops.reshape(self.dense(x), (-1, 2, 4)))
        return keras.ops.sum(hard * soft, axis=(1, 2))[:, None]


sub = Subclassed()
sub.compile(optimizer="adam", loss="mse")
sub_loss = sub.fit(x, y, epochs=1, batch_size=50, verbose=0).history["loss"]
fixed = np.log(np.tile([0.1, 0.2, 0.3, 0.4], (8, 1))).astype("float32")
layer = CategoricalSampler("reinmax", tau=1.3, seed=7)
draw = lambda lay: np.argmax(keras.ops.convert_to_numpy(lay(fixed, training=True)), -1).tolist()
samples = [draw(layer) for _ in range(2)]
mode = [np.argmax(keras.ops.convert_to_numpy(layer(fixed)), -1).tolist() for _ in range(2)]
draws_after_mode = int(keras.ops.convert_to_numpy(layer.seed_generator.state)[1])
sampler_at_inference = CategoricalSampler("reinmax", seed=7, sample_at_inference=True)
at_inference = [np.argmax(keras.ops.convert_to_numpy(sampler_at_inference(fixed)), -1).tolist()
                for _ in range(2)]
path = os.path.join(tempfile.mkdtemp(), "model.keras")
model.save(path)
loaded = keras.models.load_model(path)
same = np.array_equal(
    keras.ops.convert_to_numpy(loaded(x[:8])), keras.ops.convert_to_numpy(model(x[:8]))
)
predicted = [model.predict(x[:8], verbose=0).tolist() for _ in range(2)]


# tau: a relaxed Gumbel-Softmax sample of zero logits is near uniform at tau = 1000 (mse 1/16
# against zeros, K = 4) and near one-hot at tau = 0.001 (mse 1/4): the loss tells which tau the
# compiled train step used. The learning rate is 0, so nothing else changes.
def relaxed(tau, **kwargs):
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(12, kernel_initializer="zeros")(inputs)
    sampler = CategoricalSampler("gumbel_softmax", tau, hard=False, seed=1, **kwargs)
    net = keras.Model(inputs, sampler(keras.layers.Reshape((3, 4))(dense)))
    jit = keras.backend.backend() != "torch"  # torch.compile: 50 s here, checked by hand
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit)
    return net, sampler


def fit(net, epochs=1, **kwargs):
    zeros = np.zeros((64, 3, 4), "float32")
    return net.fit(x[:64], zeros, epochs=epochs, batch_size=32, verbose=0, **kwargs).history["loss"]


class Anneal(keras.callbacks.Callback):
    def __init__(self, sampler, taus):
        super().__init__()
        self.sampler, self.taus = sampler, taus

    def on_epoch_begin(self, epoch, logs=None):
        self.sampler.tau = self.taus[epoch]


net, sampler = relaxed(1000.0)
tau_losses = fit(net, 2, callbacks=[Anneal(sampler, [1000.0, 1e-3])])
sampler.tau = 1000.0
tau_losses += fit(net)
tau_config = sampler.get_config()["tau"]
schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [1000.0, 1e-3])
net, scheduled = relaxed(schedule)
schedule_losses = fit(net, 2)
schedule_config = scheduled.get_config()["tau"]
schedule_step = scheduled.step
path = os.path.join(tempfile.mkdtemp(), "scheduled.keras")
net.save(path)
schedule_reloaded = [layer.step for layer in keras.models.load_model(path).layers
                     if isinstance(layer, CategoricalSampler)]
try:
    scheduled.tau = 0.5
    schedule_refused = None
except TypeError as error:
    schedule_refused = str(error)
variable = keras.Variable(1000.0, trainable=False)
given = CategoricalSampler("gumbel_softmax", variable, hard=False, seed=1)
spread = lambda lay=given: float(np.max(keras.ops.convert_to_numpy(lay(fixed, training=True))))
variable_spread = [spread()]
variable.assign(1e-3)
variable_spread.append(spread())
given.tau = 1000.0
variable_spread.append(spread())
variable_spread.append(spread(plain := CategoricalSampler(
    "gumbel_softmax", lambda step: keras.ops.where(step < 1, 1000.0, 1e-3), hard=False, seed=1
)))
variable_spread.append(spread(plain))
temperature = CategoricalSampler(temperature=0.7).get_config()["tau"]
refused = {}
for key, make in {
    "hard": lambda: CategoricalSampler("reinmax", hard=False),
    "both": lambda: CategoricalSampler(tau=1.0, temperature=2.0),
}.items():
    try:
        make()
    except (TypeError, ValueError) as error:
        refused[key] = f"{type(error).__name__}: {error}"

# pickle, from_config and a spawned worker: each copy goes on with the noise the layer would draw
copy = pickle.loads(pickle.dumps(layer))
rebuilt = CategoricalSampler.from_config(layer.get_config())
folder = tempfile.mkdtemp()
with open(os.path.join(folder, "keras_worker.py"), "w") as file:
    file.write("import numpy as np, keras\n"
               "def draw(layer, logits):\n"
               "    return np.argmax(keras.ops.convert_to_numpy(layer(logits, training=True)), -1)"
               ".tolist()\n")
sys.path.insert(0, folder)
import keras_worker
with multiprocessing.get_context("spawn").Pool(1) as pool:
    in_worker = pool.apply(keras_worker.draw, (layer, fixed))
copies = {"pickled": draw(copy), "worker": in_worker, "layer": draw(layer)}
rebuilt_config = rebuilt.get_config() == layer.get_config()

print(json.dumps({
    "loss": loss, "moved": moved, "sub_loss": sub_loss, "samples": samples, "mode": mode,
    "draws_after_mode": draws_after_mode, "at_inference": at_inference, "predicted": predicted,
    "reloaded_same": bool(same),
    "config": layer.get_config(), "tau_losses": tau_losses, "tau_config": tau_config,
    "schedule_losses": schedule_losses, "schedule_config": schedule_config,
    "schedule_step": schedule_step, "schedule_reloaded": schedule_reloaded,
    "schedule_refused": schedule_refused, "variable_spread": variable_spread,
    "variable_value": float(keras.ops.convert_to_numpy(variable)), "temperature": temperature,
    "refused": refused,    "copies": copies, "rebuilt_config": rebuilt_config,
}))
"""


@pytest.fixture(scope="module")
def runs():
    pytest.importorskip("keras")
    found = {}
    for backend in ("tensorflow", "jax", "torch"):
        pytest.importorskip(backend)
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "KERAS_BACKEND": backend},
        )
        assert done.returncode == 0, f"{backend}: {done.stderr[-3000:]}"
        found[backend] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_fit_decreases_the_loss_and_reaches_the_layers_before(runs):
    for backend, run in runs.items():
        assert run["loss"][-1] < 0.5 * run["loss"][0], backend
        assert run["moved"] > 1e-3, backend
        assert all(np.isfinite(run["sub_loss"])), backend


def test_the_same_seed_draws_the_same_samples_on_every_keras_backend(runs):
    samples = {backend: run["samples"] for backend, run in runs.items()}
    first = next(iter(samples.values()))
    assert first[0] != first[1]  # a fresh draw per call
    assert all(s == first for s in samples.values()), samples


def test_save_and_load_keep_weights_config_and_noise_state(runs):
    for backend, run in runs.items():
        assert run["reloaded_same"], backend
        assert run["config"]["estimator"] == "reinmax" and run["config"]["seed"] == 7
        assert run["config"]["tau"] == 1.3 and run["rebuilt_config"], backend


def test_inference_gives_the_mode_and_draws_no_noise_unless_asked(runs):
    for backend, run in runs.items():
        assert run["mode"] == [[3] * 8] * 2, backend  # argmax of [0.1, 0.2, 0.3, 0.4]
        assert run["draws_after_mode"] == 2, backend  # only the two training calls drew
        assert run["predicted"][0] == run["predicted"][1], backend
        # sample_at_inference samples, with the noise a training call of that seed draws
        assert run["at_inference"] == run["samples"], backend


def test_a_tau_assigned_after_build_is_the_one_compiled_fit_uses(runs):
    # Loss 1/16: tau = 1000 (a near-uniform relaxed sample); 1/4: tau = 0.001 (near one-hot).
    for backend, run in runs.items():
        assigned = run["tau_losses"]  # in on_epoch_begin (1000, then 0.001), then between fits
        assert np.allclose(assigned, [1 / 16, 1 / 4, 1 / 16], atol=2e-3), (backend, assigned)
        assert run["tau_config"] == 1000.0, backend
        # a keras.Variable given as tau: assigning it (or layer.tau) is what the layer reads
        spread = run["variable_spread"]
        assert spread[0] < 0.3 and spread[1] > 0.99 and spread[2] < 0.3, (backend, spread)
        # a plain callable of the step (1000 at step 0, then 0.001), called eagerly
        assert spread[3] < 0.3 and spread[4] > 0.99, (backend, spread)
        assert run["variable_value"] == 1000.0, backend
        assert run["temperature"] == 0.7, backend


def test_a_schedule_follows_the_layers_training_step_and_is_saved(runs):
    for backend, run in runs.items():
        # PiecewiseConstantDecay([1], [1000, 0.001]): steps 0 and 1 (epoch 1), then 2 and 3
        assert np.allclose(run["schedule_losses"], [1 / 16, 1 / 4], atol=2e-3), backend
        assert run["schedule_step"] == 4 and run["schedule_reloaded"] == [4], backend
        assert run["schedule_config"]["class_name"] == "PiecewiseConstantDecay", backend
        assert run["schedule_config"]["config"]["values"] == [1000.0, 0.001], backend
        assert "not settable" in run["schedule_refused"], backend


def test_pickled_and_worker_copies_go_on_with_the_layers_noise(runs):
    for backend, run in runs.items():
        copies = run["copies"]
        assert copies["pickled"] == copies["worker"] == copies["layer"], (backend, copies)


def test_options_are_checked_as_the_functions_check_them(runs):
    for backend, run in runs.items():
        assert run["refused"]["hard"].startswith("ValueError: reinmax always returns"), backend
        assert run["refused"]["both"] == (
            "TypeError: pass tau or its alias temperature, not both"
        ), backend


def test_bad_arguments_are_named():
    keras = pytest.importorskip("keras")
    from reinmax import REGISTRY
    from reinmax.keras import CategoricalSampler

    with pytest.raises(ValueError, match="estimator must be one of"):
        CategoricalSampler("nope")
    with pytest.raises(ValueError, match="tau must be a number > 0"):
        CategoricalSampler(tau=0)
    with pytest.raises(ValueError, match="tau must be a number > 0"):
        CategoricalSampler(tau=float("nan"))
    with pytest.raises(TypeError, match=r"tau must be a number > 0, a keras\.Variable or a"):
        CategoricalSampler(tau="0.5")
    with pytest.raises(ValueError, match=r"non-trainable keras\.Variable"):
        CategoricalSampler(tau=keras.Variable(1.0))
    with pytest.raises(ValueError, match="scalar floating-point"):
        CategoricalSampler(tau=keras.Variable([1.0, 2.0], trainable=False))
    with pytest.raises(TypeError, match="unexpected option"):
        CategoricalSampler("reinmax", k=4)
    layer = CategoricalSampler()
    with pytest.raises(TypeError, match="tau takes a number after construction"):
        layer.tau = lambda step: 1.0
    with pytest.raises(ValueError, match="tau must be a number > 0"):
        layer.tau = -1.0
    # tau=None is the estimator's registered default: 1.3 for ReinMax, 1.0 for ST.
    assert layer.tau == REGISTRY["reinmax"].default_tau == 1.3
    assert CategoricalSampler("straight_through").tau == 1.0
    with pytest.raises(ValueError, match="k must be a positive integer"):
        CategoricalSampler("gumbel_rao", k=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        CategoricalSampler(seed=-1)
    assert keras.saving.get_registered_object("reinmax>CategoricalSampler") is CategoricalSampler

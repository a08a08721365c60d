"""The Keras 3 layer under each Keras backend, each in its own process (Keras picks its backend
once, from KERAS_BACKEND, when it is first imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

_SCRIPT = """
import json, os, tempfile
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
samples = [np.argmax(keras.ops.convert_to_numpy(layer(fixed)), -1).tolist() for _ in range(2)]
path = os.path.join(tempfile.mkdtemp(), "model.keras")
model.save(path)
loaded = keras.models.load_model(path)
same = np.array_equal(
    keras.ops.convert_to_numpy(loaded(x[:8])), keras.ops.convert_to_numpy(model(x[:8]))
)
print(json.dumps({"loss": loss, "moved": moved, "sub_loss": sub_loss, "samples": samples,
                  "reloaded_same": bool(same), "config": layer.get_config()}))
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


def test_bad_arguments_are_named():
    keras = pytest.importorskip("keras")
    from reinmax.keras import CategoricalSampler

    with pytest.raises(ValueError, match="estimator must be one of"):
        CategoricalSampler("nope")
    with pytest.raises(ValueError, match="tau must be a number > 0"):
        CategoricalSampler(tau=0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        CategoricalSampler("gumbel_rao", k=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        CategoricalSampler(seed=-1)
    assert keras.saving.get_registered_object("reinmax>CategoricalSampler") is CategoricalSampler

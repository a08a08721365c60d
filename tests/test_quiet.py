"""Quiet: the library's own code paths raise no warning under torch.compile, jax.jit and
tf.function (each framework in a fresh process, every warning recorded)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_PROGRAMS = {
    "torch": """
        import torch, reinmax
        x = torch.randn(4, 5, requires_grad=True)
        for name in NAMES:
            f = lambda t: getattr(reinmax, name)(t, 0.7, rng=3)[0].sum()
            torch.compile(f, fullgraph=True)(x).backward()
    """,
    "jax": """
        import jax, jax.numpy as jnp, reinmax
        x = jnp.zeros((4, 5))
        for name in NAMES:
            jax.jit(jax.grad(lambda t: getattr(reinmax, name)(t, 0.7, rng=3)[0].sum()))(x)
            jax.jit(lambda t, k: getattr(reinmax, name)(t, 0.7, rng=k)[0])(x, jax.random.key(0))
    """,
    "tensorflow": """
        import tensorflow as tf, reinmax
        x = tf.Variable(tf.zeros((4, 5)))
        for name in NAMES:
            def step(name=name):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(getattr(reinmax, name)(x, 0.7, rng=3)[0])
                return tape.gradient(loss, x)
            tf.function(step)()
            tf.function(step, jit_compile=True)()
    """,
}

_RECORD = """
import json, sys, warnings
NAMES = ("reinmax", "gumbel_rao")  # a per-row and a per-category sampler, portable noise
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
{program}
print(json.dumps([[w.category.__name__, w.filename, str(w.message)[:300]] for w in caught]))
"""


def _is_framework_internal(category: str, filename: str) -> bool:
    # Deprecation notices that PyTorch and TensorFlow raise about their own internals while
    # tracing any function (torch.jit.script_method, Function instantiation): not ours to fix.
    return category == "DeprecationWarning" and any(
        part in filename for part in ("/torch/", "/tensorflow/", "/keras/")
    )


@pytest.mark.parametrize("framework", sorted(_PROGRAMS))
def test_no_warnings_from_the_library_under_its_compiler(framework):
    pytest.importorskip(framework)
    program = textwrap.indent(textwrap.dedent(_PROGRAMS[framework]), "    ")
    done = subprocess.run(
        [sys.executable, "-c", _RECORD.format(program=program)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    caught = json.loads(done.stdout.splitlines()[-1])
    ours = [w for w in caught if not _is_framework_internal(w[0], w[1])]
    assert not ours, ours
    assert "AutoGraph could not transform" not in done.stderr

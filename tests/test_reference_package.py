"""Drop-in compatibility with the reference package ``reinmax`` 0.1.0 (Liu et al. 2023).

CI installs it beside the repository with
``pip install --no-deps --target .reference/reinmax-0.1.0 reinmax==0.1.0``. It has this library's
import name, so its module file is loaded under another name. The reference samples with
``torch.multinomial`` and this library by inverse CDF, so each check runs the reference first,
reads its sample, and gives this library the uniform that draws the same sample.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

REFERENCE = Path(__file__).resolve().parents[1] / ".reference" / "reinmax-0.1.0" / "reinmax"


@pytest.fixture(scope="module")
def reference():
    path = REFERENCE / "reinmax.py"
    if not path.is_file():
        pytest.skip(
            f"reference package not found at {path}; install it with `pip install --no-deps "
            "--target .reference/reinmax-0.1.0 reinmax==0.1.0`"
        )
    spec = importlib.util.spec_from_file_location("reinmax_reference_0_1_0", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def uniform_for(sample: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The uniform per row whose inverse-CDF draw is ``sample``'s category: mid-interval."""
    probs = torch.softmax(logits.detach(), dim=-1)
    c = torch.cumsum(probs, dim=-1)
    index = sample.argmax(dim=-1, keepdim=True)
    upper = c.gather(-1, index)
    lower = torch.where(index > 0, c.gather(-1, (index - 1).clamp(min=0)), torch.zeros_like(upper))
    return (0.5 * (lower + upper) / c[..., -1:]).squeeze(-1)


@pytest.mark.parametrize("tau", [1.0, 1.3, 2.0])
@pytest.mark.parametrize("shape", [(16, 7), (3, 4, 5)], ids=str)
def test_same_sample_same_gradients(reference, shape, tau):
    from reinmax import reinmax

    generator = torch.Generator().manual_seed(int(10 * tau) + len(shape))
    logits = 2.0 * torch.randn(shape, dtype=torch.float64, generator=generator)
    g, g_p = torch.randn((2, *shape), dtype=torch.float64, generator=generator)

    theirs = logits.clone().requires_grad_(True)
    torch.manual_seed(0)
    ref_hard, ref_soft = reference.reinmax(theirs, tau)
    ((ref_hard * g).sum() + (ref_soft * g_p).sum()).backward()

    ours = logits.clone().requires_grad_(True)
    hard, soft = reinmax(ours, tau, noise=uniform_for(ref_hard, logits))
    ((hard * g).sum() + (soft * g_p).sum()).backward()

    torch.testing.assert_close(hard, ref_hard, rtol=0, atol=0)
    torch.testing.assert_close(soft, ref_soft, rtol=1e-15, atol=1e-15)
    # The reference subtracts the row mean (a no-op in exact arithmetic): only rounding differs.
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=1e-13)


def test_global_generator_call_is_a_drop_in(reference):
    """``y_hard, y_soft = reinmax(logits, tau)`` with the global generator, as in the reference."""
    from reinmax import reinmax

    row = torch.tensor([0.0, 1.0, -1.0, 0.5], dtype=torch.float64)
    logits = row.repeat(2000, 1).requires_grad_(True)
    torch.manual_seed(1)
    y_hard, y_soft = reinmax(logits, 1.3)
    ref_hard, ref_soft = reference.reinmax(logits, 1.3)
    for ours, theirs in ((y_hard, ref_hard), (y_soft, ref_soft)):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert torch.all((y_hard == 0) | (y_hard == 1)) and torch.all(y_hard.sum(-1) == 1)
    # Both draw from softmax(logits): their frequencies agree within sampling error.
    ours_freq = y_hard.mean(0).detach().numpy()
    theirs_freq = ref_hard.mean(0).detach().numpy()
    pi = torch.softmax(logits[0], -1).detach().numpy()
    stderr = np.sqrt(pi * (1 - pi) / logits.shape[0])
    assert np.all(np.abs(ours_freq - pi) < 5 * stderr)
    assert np.all(np.abs(theirs_freq - pi) < 5 * stderr)
    y_hard.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_the_reference_signature_and_torch_keywords_drop_in(reference):
    """``reinmax(logits, tau, hard=True)`` as the reference takes it, and ``dim=`` as torch users
    write it; ``hard=False`` (meaningless for ReinMax) and ``dim`` with ``axis``: named errors."""
    from reinmax import reinmax

    logits = torch.randn(5, 4, 3, dtype=torch.float64)
    noise = torch.rand(5, 3, dtype=torch.float64)
    hard, soft = reinmax(logits, 1.3, hard=True, dim=1, noise=noise)
    same, _ = reinmax(logits, 1.3, axis=1, noise=noise)
    assert torch.equal(hard, same) and torch.allclose(
        soft.sum(1), torch.ones(5, 3, dtype=soft.dtype)
    )
    ref_hard, _ = reference.reinmax(logits, 1.3, hard=True)
    assert ref_hard.shape == hard.shape
    with pytest.raises(ValueError, match="hard must be True"):
        reinmax(logits, 1.3, hard=False)
    with pytest.raises(TypeError, match="pass axis or its alias dim, not both"):
        reinmax(logits, 1.3, dim=1, axis=1)

"""distrax's OneHotCategorical whose samples carry an estimator's gradient (JAX).

distrax is optional (``pip install 'reinmax[distrax]'``): ``reinmax.backends.jax`` imports this
module, and with it distrax, the first time ``reinmax.backends.jax.OneHotCategorical`` is used.
The sampling is :class:`reinmax.distributions.OneHotSampler`'s, on the JAX backend. distrax's
TensorFlow Probability imports TensorFlow where it is installed (seconds, once).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from reinmax.backends import _torch_before_tensorflow
from reinmax.backends.jax import BACKEND
from reinmax.distributions import OneHotSampler

# distrax's TensorFlow Probability imports TensorFlow where it is installed, and importing torch
# after TensorFlow crashes some builds: torch, where installed, goes first.
if "tensorflow" not in sys.modules:
    _torch_before_tensorflow()


def _import_distrax() -> Any:
    """distrax, imported without TensorFlow Probability's TensorFlow-only parts.

    Where TensorFlow is already imported, TensorFlow Probability loads its Keras layers at once,
    which need the tf-keras package (not installed with tensorflow-cpu); distrax uses only its
    JAX substrate. TensorFlow is out of ``sys.modules`` for that import only, then restored.
    """
    tensorflow = sys.modules.pop("tensorflow", None)
    try:
        import distrax
    finally:
        if tensorflow is not None:
            sys.modules["tensorflow"] = tensorflow
    return distrax


if TYPE_CHECKING:
    import distrax
else:
    distrax = _import_distrax()

__all__ = ["OneHotCategorical"]


class OneHotCategorical(distrax.OneHotCategorical):
    """``distrax.OneHotCategorical`` whose ``sample`` has an estimator's gradient.

    ``sample`` and ``sample_and_log_prob`` return exact one-hot samples whose gradient is the
    estimator's rule (``reinmax.reinmax`` and the other estimator functions;
    ``docs/distributions.md``); ``log_prob``, ``prob``, ``entropy``, ``mode``, ``cdf`` and
    ``kl_divergence`` are distrax's own (inherited). Indexing keeps the estimator. Under
    ``jax.jit`` it works inside the function, and as an argument (a pytree) too.

    Args:
        logits: event log-probabilities (unnormalized), or None.
        probs: event probabilities, or None: pass exactly one of the two.
        dtype: the samples' dtype, a floating-point one (a sample with a gradient is a float);
            None for the parameters' dtype. distrax's own default is ``int``.
        estimator: a registered estimator's name (``"reinmax"``, ``"straight_through"``,
            ``"gumbel_softmax"``, ``"gumbel_rao"``, ...) or an ``reinmax.Estimator``.
        tau: the temperature of the estimator's backward rule (a number > 0, or an array that
            broadcasts to the batch shape); None for the estimator function's own default.
        **options: the estimator's options (``k`` for Gumbel-Rao, ``gap`` for Gapped ST, ...),
            checked here.

    Raises:
        ValueError: an unknown estimator, a bad option value or temperature, an option that
            would sample from another distribution (``unimix``, ``hard=False``), or an integer
            ``dtype``.
        TypeError: an option the estimator does not take.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from reinmax.backends.jax import OneHotCategorical
        >>> def loss(logits, key):
        ...     dist = OneHotCategorical(logits, estimator="gumbel_rao", tau=0.5, k=10)
        ...     z, log_p = dist.sample_and_log_prob(seed=key, sample_shape=2)
        ...     return jnp.sum(z * jnp.arange(3.0))
        >>> jax.jit(jax.grad(loss))(jnp.zeros((4, 3)), jax.random.key(0)).shape
        (4, 3)
    """

    def __init__(
        self,
        logits: jax.Array | None = None,
        probs: jax.Array | None = None,
        dtype: Any = None,
        *,
        estimator: Any = "reinmax",
        tau: Any = None,
        **options: Any,
    ) -> None:
        if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"dtype must be a floating-point dtype (a sample with a gradient is a float), or "
                f"None for the parameters' dtype; got {dtype}"
            )
        sampler = OneHotSampler.create(estimator, tau, options)
        super().__init__(logits=logits, probs=probs, dtype=jnp.float32 if dtype is None else dtype)
        if dtype is None:
            self._dtype = (self._probs if self._logits is None else self._logits).dtype
        self._sampler = sampler

    @property
    def estimator(self) -> Any:
        """The estimator's name (or Estimator).

        Example:
            >>> import jax.numpy as jnp
            >>> from reinmax.backends.jax import OneHotCategorical
            >>> OneHotCategorical(jnp.zeros(3), estimator="zgr").estimator
            'zgr'
        """
        return self._sampler.estimator

    @property
    def tau(self) -> Any:
        """The temperature (None: the estimator function's own default).

        Example:
            >>> import jax.numpy as jnp
            >>> from reinmax.backends.jax import OneHotCategorical
            >>> OneHotCategorical(jnp.zeros(3), tau=1.3).tau
            1.3
        """
        return self._sampler.tau

    @property
    def options(self) -> dict[str, Any]:
        """The estimator's options (a copy).

        Example:
            >>> import jax.numpy as jnp
            >>> from reinmax.backends.jax import OneHotCategorical
            >>> OneHotCategorical(jnp.zeros(3), estimator="gumbel_rao", k=4).options
            {'k': 4}
        """
        return dict(self._sampler.options)

    def sample(self, *, seed: Any, sample_shape: Any = (), noise: Any = None) -> jax.Array:
        """An exact one-hot sample of shape ``sample_shape + batch_shape + event_shape`` whose
        gradient is the estimator's rule.

        It is the estimator function's sample of the logits broadcast to that shape, with the
        same gradient (from ``probs``, the logits are ``log(probs)``, ``-inf`` where a
        probability is 0, with a gradient of 0 rather than NaN there).

        Args:
            seed: a JAX PRNG key (JAX's own generator), or an int seed or a ``reinmax.Seed``
                (portable noise: the same samples in every framework). distrax's own turns an
                int into ``jax.random.PRNGKey(seed)``; here an int is portable noise. None
                only with ``noise``.
            sample_shape: the leading axes of the sample (an int or a tuple).
            noise: explicit uniforms in the estimator's layout for logits of the sample's shape
                (``reinmax.core.noise_layout``), instead of ``seed``.

        Returns:
            The sample, in the distribution's ``dtype``.

        Example:
            >>> import jax.numpy as jnp
            >>> from reinmax.backends.jax import OneHotCategorical
            >>> dist = OneHotCategorical(probs=jnp.array([0.2, 0.8, 0.0]), tau=1.3)
            >>> print(dist.sample(seed=7, sample_shape=3))
            [[0. 1. 0.]
             [0. 1. 0.]
             [1. 0. 0.]]
        """
        parameter = {"probs": self._probs} if self._logits is None else {"logits": self._logits}
        hard = self._sampler.rsample(BACKEND, sample_shape, rng=seed, noise=noise, **parameter)
        return hard if hard.dtype == self._dtype else hard.astype(self._dtype)

    def sample_and_log_prob(
        self, *, seed: Any, sample_shape: Any = (), noise: Any = None
    ) -> tuple[jax.Array, jax.Array]:
        """:meth:`sample` and its ``log_prob``, whose gradient reaches the logits both through
        the log-probability and through the sample.

        Args:
            seed: as :meth:`sample`'s.
            sample_shape: as :meth:`sample`'s.
            noise: as :meth:`sample`'s.

        Returns:
            ``(sample, log_prob)``.

        Example:
            >>> import jax.numpy as jnp
            >>> from reinmax.backends.jax import OneHotCategorical
            >>> z, log_p = OneHotCategorical(jnp.zeros((2, 4))).sample_and_log_prob(seed=0)
            >>> print(z.shape, jnp.round(log_p, 4))
            (2, 4) [-1.3863 -1.3863]
        """
        sample = self.sample(seed=seed, sample_shape=sample_shape, noise=noise)
        return sample, self.log_prob(sample)

    def _sample_n(self, key: Any, n: int) -> jax.Array:
        # distrax's wrappers (Independent, Transformed, ...) sample through sample(), and any
        # other caller of _sample_n gets the same estimator's sample.
        return self.sample(seed=key, sample_shape=(n,))

    def __getitem__(self, index: Any) -> OneHotCategorical:
        """The distribution of the batch entries ``index``, estimator, ``tau`` and options kept.

        Example:
            >>> import jax.numpy as jnp
            >>> from reinmax.backends.jax import OneHotCategorical
            >>> dist = OneHotCategorical(jnp.zeros((5, 3)), estimator="gumbel_rao", k=4)
            >>> dist[1:3].batch_shape, dist[1:3].options
            ((2,), {'k': 4})
        """
        indexed = super().__getitem__(index)
        new = type(self).__new__(type(self))
        new.__dict__.update(indexed.__dict__)
        new._sampler = self._sampler.indexed(index, self.batch_shape, BACKEND)
        return new

"""One-hot categorical distributions whose samples carry an estimator's gradient, defined once.

Each framework has its own distribution class, with that framework's interface:
``reinmax.backends.torch.OneHotCategorical`` (a ``torch.distributions.OneHotCategorical`` with
``rsample``) and ``reinmax.backends.jax.OneHotCategorical`` (a ``distrax.OneHotCategorical``
whose ``sample`` is differentiable). They are thin adapters over :class:`OneHotSampler`, which
holds what is the same in all of them: the estimator and its options (checked when the
distribution is built), the temperature, and the sample itself, the exact one-hot
``D ~ Cat(softmax(logits))`` of shape ``sample_shape + batch_shape + event_shape`` whose gradient
is the estimator's rule. This module imports no framework: the adapter hands it its backend
(:class:`reinmax.api.Backend`). See ``docs/distributions.md``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from reinmax.api import Backend, Functions, resolve_estimator
from reinmax.core import Estimator, is_bool

__all__ = ["OneHotSampler", "as_sample_shape", "log_of_probs"]

Array = Any
Namespace = Any

# The estimator functions bound to each backend, made on first use. A plain dict: torch.compile
# traces a lookup in it.
_FUNCTIONS: dict[Backend, Functions] = {}


def _functions(backend: Backend) -> Functions:
    functions = _FUNCTIONS.get(backend)
    if functions is None:
        functions = _FUNCTIONS[backend] = Functions(backend)
    return functions


def as_sample_shape(sample_shape: object) -> tuple[int, ...]:
    """``sample_shape`` (an int, or a sequence of ints such as a ``torch.Size``) as a tuple.

    Args:
        sample_shape: the leading axes of a sample: ``()``, ``4``, ``(4, 2)``, ...

    Returns:
        The axes as a tuple of Python ints.

    Raises:
        TypeError: ``sample_shape`` is neither an integer nor a sequence of integers.
        ValueError: an axis is negative.

    Example:
        >>> from reinmax.distributions import as_sample_shape
        >>> as_sample_shape(3), as_sample_shape([2, 5]), as_sample_shape(())
        ((3,), (2, 5), ())
    """
    axes = (sample_shape,) if not isinstance(sample_shape, Sequence) else tuple(sample_shape)
    shape = []
    for axis in axes:
        try:
            size = None if is_bool(axis) else operator.index(axis)
        except TypeError:
            size = None
        if size is None:
            raise TypeError(
                f"sample_shape must be an integer or a sequence of integers, got {sample_shape!r}"
            )
        if size < 0:
            raise ValueError(f"sample_shape must have no negative axis, got {sample_shape!r}")
        shape.append(size)
    return tuple(shape)


def log_of_probs(probs: Array, *, xp: Namespace) -> Array:
    """``log(probs)``, exactly ``-inf`` where a probability is 0, with a gradient of 0 there.

    A category of probability 0 stays impossible: the estimators never sample a logit of
    ``-inf`` and give it a gradient of exactly 0 (the ``log`` of a probability clipped to a
    small positive number would make it merely unlikely).

    Args:
        probs: probabilities, the category axis last.
        xp: the array namespace of ``probs``.

    Returns:
        Logits of ``probs``' shape and dtype.

    Example:
        >>> import numpy as np
        >>> from reinmax.distributions import log_of_probs
        >>> log_of_probs(np.array([0.5, 0.5, 0.0]), xp=np)
        array([-0.69314718, -0.69314718,        -inf])
    """
    positive = probs > 0
    # The inner where keeps log's derivative finite where the outer one discards it.
    safe = xp.where(positive, probs, xp.ones_like(probs))
    return xp.where(positive, xp.log(safe), xp.full_like(probs, -math.inf))


class OneHotSampler(NamedTuple):
    """The framework-neutral definition of a one-hot categorical's sample with a gradient.

    Build one with :meth:`create`, which checks the estimator, its options and the
    temperature. A framework's distribution class holds one and calls :meth:`rsample` with its
    parameters. A NamedTuple, so that JAX sees a distribution that holds one as a pytree: a
    temperature given as an array is a leaf, the rest static.

    Attributes:
        estimator: a registered estimator's name (``"reinmax"``, ``"gumbel_rao"``, ...) or an
            :class:`~reinmax.core.Estimator`.
        tau: the temperature (a number > 0 or an array that broadcasts to the batch shape), or
            None for the estimator function's own default.
        options: the estimator's options (``k`` for Gumbel-Rao, ``gap`` for GST, ...).

    Example:
        >>> import numpy as np
        >>> from reinmax.backends import numpy as rnp
        >>> from reinmax.distributions import OneHotSampler
        >>> sampler = OneHotSampler.create("gumbel_rao", tau=0.5, options={"k": 10})
        >>> sampler.rsample(rnp.BACKEND, (2,), logits=np.zeros((3, 4)), rng=0).shape
        (2, 3, 4)
    """

    estimator: str | Estimator
    tau: Any
    options: dict[str, Any]

    @classmethod
    def create(
        cls,
        estimator: str | Estimator = "reinmax",
        tau: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> OneHotSampler:
        """A checked sampler: the estimator and its options as the library's resolver takes
        them (:func:`reinmax.api.resolve_estimator`), and a temperature.

        Args:
            estimator: a registered estimator's name or an :class:`~reinmax.core.Estimator`.
            tau: None (the estimator function's own default), a number > 0, or an array of
                temperatures that broadcasts to the batch shape (checked when sampling).
            options: the estimator's options.

        Returns:
            The sampler.

        Raises:
            ValueError: an unknown estimator, a bad option value, a temperature that is not a
                finite number > 0, or an option that would sample from another distribution
                (``unimix``, ``gumbel_softmax``'s ``hard=False``).
            TypeError: an option the estimator does not take, or a temperature that is neither
                a number nor an array.

        Example:
            >>> from reinmax.distributions import OneHotSampler
            >>> OneHotSampler.create("reinmax", tau=1.3)
            OneHotSampler(estimator='reinmax', tau=1.3, options={})
            >>> OneHotSampler.create("gumbel_rao", options={"k": 0})
            Traceback (most recent call last):
            ...
            ValueError: k must be a positive integer (the number of conditional draws), got 0
        """
        options = dict(options or {})
        resolve_estimator(estimator, options)
        if options.get("unimix", 0.0) != 0.0:
            raise ValueError(
                "a distribution takes no unimix: mixing changes the distribution sampled, which "
                "log_prob and entropy would not describe; build it from the mixed probabilities "
                f"(1 − ε)·softmax(logits) + ε/n instead (got unimix={options['unimix']!r})"
            )
        if not options.get("hard", True):
            raise ValueError(
                "a one-hot distribution's sample is one-hot: hard=False (the relaxed sample) is "
                "not in its support; use a relaxed distribution (RelaxedOneHotCategorical) for it"
            )
        _check_tau(tau)
        return cls(estimator, tau, options)

    def rsample(
        self,
        backend: Backend,
        sample_shape: object = (),
        *,
        logits: Array | None = None,
        probs: Array | None = None,
        rng: Any = None,
        noise: Array | None = None,
    ) -> Array:
        """The exact one-hot sample of shape ``sample_shape + logits.shape``, with the
        estimator's gradient.

        The parameters (``logits`` or ``probs``, the category axis last) are broadcast to
        ``sample_shape + batch_shape + event_shape`` and handed to the estimator function of
        ``backend`` with the temperature (none where it is None), ``rng``, ``noise`` and the
        options, so that the sample and its gradient are exactly the function's on those
        logits.

        Args:
            backend: the framework's backend (``reinmax.backends.torch.BACKEND``, ...).
            sample_shape: the leading axes of the sample (:func:`as_sample_shape`).
            logits: the logits (unnormalized log-probabilities): pass these or ``probs``.
            probs: probabilities, whose logits are :func:`log_of_probs`.
            rng: as the estimator functions take it: the framework's generator (a
                ``torch.Generator``, a JAX key, ...), an int seed or a :class:`reinmax.Seed`
                (portable noise), or None.
            noise: explicit uniforms in the estimator's layout for logits of the sample's
                shape (``reinmax.core.noise_layout``), instead of ``rng``.

        Returns:
            The one-hot sample, in the parameters' dtype.

        Raises:
            ValueError: both or neither of ``logits`` and ``probs``, or what the estimator
                function raises (a bad ``noise``, a bad ``tau`` array, ...).

        Example:
            >>> import numpy as np
            >>> from reinmax.backends import numpy as rnp
            >>> from reinmax.distributions import OneHotSampler
            >>> sampler = OneHotSampler.create("reinmax", tau=1.3)
            >>> sampler.rsample(rnp.BACKEND, probs=np.array([0.0, 1.0, 0.0]), rng=7)
            array([0., 1., 0.])
        """
        if (logits is None) == (probs is None):
            raise ValueError("pass either logits or probs, not both and not neither")
        xp = backend.xp
        if logits is None:
            logits = log_of_probs(probs, xp=xp)
        sample_shape = as_sample_shape(sample_shape)
        if sample_shape:
            logits = xp.broadcast_to(logits, (*sample_shape, *backend.shape(logits)))
        keywords: dict[str, Any] = {"rng": rng, "noise": noise}
        if self.tau is not None:
            keywords["tau"] = self.tau
        functions = _functions(backend)
        if isinstance(self.estimator, Estimator):
            estimator = resolve_estimator(self.estimator, self.options)
            return functions.estimate(estimator, logits, **keywords)[0]
        function = getattr(functions, self.estimator)
        return function(logits, **keywords, **self.options)[0]

    def indexed(self, index: Any, batch_shape: tuple[int, ...], backend: Backend) -> OneHotSampler:
        """The sampler of the distribution indexed by ``index`` along its batch axes: a
        temperature array is indexed with it (numbers stay as they are).

        Args:
            index: an index of the batch axes (an int, a slice, a tuple of them, ...).
            batch_shape: the distribution's batch shape before indexing.
            backend: the backend of the temperature array.

        Returns:
            The sampler for the indexed distribution.

        Example:
            >>> import numpy as np
            >>> from reinmax.backends import numpy as rnp
            >>> from reinmax.distributions import OneHotSampler
            >>> sampler = OneHotSampler.create("reinmax", tau=np.array([1.1, 1.3, 1.5]))
            >>> sampler.indexed(slice(1, None), (3,), rnp.BACKEND).tau
            array([1.3, 1.5])
        """
        if getattr(self.tau, "shape", None) is None:
            return self
        return self._replace(tau=backend.xp.broadcast_to(self.tau, batch_shape)[index])


def _check_tau(tau: object) -> None:
    """A number is checked here; an array (a temperature per row) when sampling."""
    if tau is None:
        return
    if isinstance(tau, numbers.Real) and not is_bool(tau):
        # Comparisons only: under torch.compile a temperature may be a symbolic float.
        if not 0 < cast(float, tau) < math.inf:
            raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
        return
    if is_bool(tau) or getattr(tau, "shape", None) is None:
        raise TypeError(
            "tau must be None (the estimator's default), a number > 0 or an array of "
            f"temperatures, got {type(tau).__name__}"
        )

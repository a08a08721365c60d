"""The library's own errors.

Bad arguments raise the built-in ``TypeError`` and ``ValueError``, naming the argument and what
was expected. What the library does not support raises :class:`UnsupportedError`, a
``NotImplementedError``, with a message that says why and what to do instead; docs/SPEC.md and
the README's "Not supported" section list every case.
"""

from __future__ import annotations

__all__ = ["UnsupportedError"]


class UnsupportedError(NotImplementedError):
    """An operation the library does not support, such as a gradient it cannot give.

    Raised instead of returning a silently wrong or missing number: for example a temperature
    that requires a gradient on an estimator where τ enters only the backward rule, or a
    compiler or transform (TorchScript) the estimators cannot run under.

    Examples:
        >>> from reinmax.errors import UnsupportedError
        >>> issubclass(UnsupportedError, NotImplementedError)
        True
    """

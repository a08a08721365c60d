"""The cases of one shape, built the same way in every framework.

A case is a function ``fn(x, *inputs) -> outputs`` of the logits and of its inputs (a PRNG key,
explicit noise, a portable-noise stream: arguments, never constants, so that no compiler folds
the noise away), and whether its backward pass is timed. The framework's module turns it into a
step, eager or compiled (:meth:`.framework.Framework.step`). Three groups:

- every estimator :class:`Config` (a registered estimator with its options) once per way of
  getting its noise (:data:`RNGS`): the framework's own generator (the case named as the
  configuration), explicit uniforms drawn beforehand (``[noise]``), and the portable generator
  of :mod:`reinmax.noise` (``[seed]``, ``rng=Seed(0, stream, 0)``): forward plus backward;
- the baselines the framework runs (``softmax``, and PyTorch's own), forward plus backward;
- with ``noise`` among the names, the noise alone (:func:`noise_cases`): each distinct noise
  layout of the configurations drawn by the portable generator (``portable_uniform[L]``) and by
  the framework's own (``native_uniform[L]``), and one softmax forward pass
  (``softmax_forward``), the bar the portable generator is held to.

Noise larger than ``max_noise_bytes`` is not drawn: its cases raise :class:`Skipped` when run.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, NamedTuple

from reinmax.backends import load_module
from reinmax.core import REGISTRY, Estimator, noise_layout
from reinmax.noise import Seed, estimator_noise
from reinmax.tasks.bench.framework import Fn, Framework, Step
from reinmax.tasks.bench.records import SOFTMAX_PASS, TAU, draw_name, step_name

__all__ = [
    "NOISE",
    "RNGS",
    "Case",
    "Config",
    "OptionSpec",
    "Skipped",
    "build",
    "configs",
    "layout_label",
    "noise_cases",
    "parse_option",
]

RNGS = ("native", "noise", "seed")
"""How an estimator step gets its noise: the framework's generator, explicit, portable."""
NOISE = "noise"
"""The name (among ``--estimators``) of the group that times drawing the noise alone."""
_BYTES = 4  # float32


class Skipped(Exception):
    """A case that was not run (its noise over the limit)."""


class OptionSpec(NamedTuple):
    """Values of an option: for ``estimator`` only, or for every estimator that has ``option``
    (``estimator`` None)."""

    estimator: str | None
    option: str
    values: tuple[Any, ...]


def _value(text: str) -> Any:
    """A Python literal (``10``, ``0.5``, ``True``), else the text itself (``p``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_option(text: str) -> OptionSpec:
    """``[ESTIMATOR.]NAME=VALUE[,VALUE...]`` as an :class:`OptionSpec` (``ValueError`` if not)."""
    target, sep, values = text.partition("=")
    estimator, dot, option = target.rpartition(".")
    if not sep or not option.isidentifier() or (dot and not estimator.isidentifier()):
        raise ValueError(f"an option looks like k=1,10,100 or gumbel_rao.k=10, got {text!r}")
    parsed = tuple(_value(v.strip()) for v in values.split(","))
    return OptionSpec(estimator or None, option, parsed)


class Config(NamedTuple):
    """A registered estimator with chosen options; ``label`` names it (the estimator's name,
    followed by the options that differ from the registered defaults: ``gumbel_rao(k=10)``)."""

    name: str
    options: tuple[tuple[str, Any], ...]
    label: str

    def estimator(self) -> Estimator:
        return REGISTRY[self.name](**dict(self.options))


def _values(specs: Sequence[OptionSpec], name: str, option: Any) -> tuple[Any, ...]:
    """The values of ``option`` for estimator ``name``: the last spec that applies wins."""
    for spec in reversed(specs):
        if spec.option == option.name and spec.estimator in (None, name):
            return spec.values
    return (option.default,)


def configs(names: Sequence[str], specs: Sequence[OptionSpec] = ()) -> list[Config]:
    """Every registered estimator of ``names`` at every combination of its options' values
    (``specs``, else the registered default); ``ValueError``/``TypeError`` for a bad value."""
    out = []
    for name in names:
        registration = REGISTRY.get(name)
        if registration is None:
            continue
        choices = [[(o.name, v) for v in _values(specs, name, o)] for o in registration.options]
        for chosen in itertools.product(*choices):
            registration(**dict(chosen))
            changed = [f"{k}={v}" for k, v in chosen if v != registration.defaults[k]]
            label = f"{name}({','.join(changed)})" if changed else name
            out.append(Config(name, chosen, label))
    return out


def layout_label(estimator: Estimator, shape: tuple[int, ...]) -> str:
    """The uniforms per row of ``estimator``'s noise: ``1/row``, ``n/row``, ``(K+1)n/row``."""
    if not estimator.per_category:
        return "1/row"
    draws = math.prod(noise_layout(estimator, shape)) // math.prod(shape)
    return "n/row" if draws == 1 else f"{draws}n/row"


class Case(NamedTuple):
    """``fn(x, *inputs)``; ``backward``: whether the gradient is timed too; ``skip``: why it
    is not run (None: it is)."""

    fn: Fn
    inputs: tuple
    backward: bool = True
    skip: str | None = None


class _Shape(NamedTuple):
    """What every case of one shape in one framework is built from."""

    backend: ModuleType  # reinmax.backends.<name>: its estimator functions and BACKEND
    x: Any
    native: tuple  # the inputs of the framework's generator: () or (key,)
    stream: Any  # the portable stream, an int32 array
    max_noise_bytes: float

    def too_big(self, estimator: Estimator) -> str | None:
        size = _BYTES * math.prod(noise_layout(estimator, tuple(self.x.shape)))
        if size <= self.max_noise_bytes:
            return None
        limit = self.max_noise_bytes / 2**30
        return f"noise of {size / 2**30:.3g} GiB over --max-noise-gib {limit:.3g}"

    def native_uniform(self, rng: tuple, layout: tuple[int, ...], like: Any) -> Any:
        """Uniforms of ``layout`` from the framework's generator (``rng``: ``()`` or a key)."""
        return self.backend.BACKEND.uniform(rng[0] if rng else None, layout, like.dtype, like)

    def portable_uniform(self, estimator: Estimator, stream: Any, like: Any) -> Any:
        """``estimator``'s portable noise for logits ``like``, as the estimators draw it."""
        backend = self.backend.BACKEND
        return estimator_noise(
            estimator,
            tuple(like.shape),
            Seed(0, stream, 0),
            like.dtype,
            xp=backend.xp,
            device=backend.device(like),
        )


def _estimator_cases(at: _Shape, config: Config, rngs: Sequence[str]) -> Iterator[tuple]:
    """``(name, case)`` of ``config`` for each of ``rngs``."""
    fn = getattr(at.backend, config.name)
    options = dict(config.options)
    estimator = config.estimator()
    skip = at.too_big(estimator)
    layout = noise_layout(estimator, tuple(at.x.shape))

    def native(t: Any, *rng: Any) -> tuple:
        return fn(t, TAU, rng=rng[0] if rng else None, **options)

    def explicit(t: Any, u: Any) -> tuple:
        return fn(t, TAU, noise=u, **options)

    def portable(t: Any, stream: Any) -> tuple:
        return fn(t, TAU, rng=Seed(0, stream, 0), **options)

    ways: dict[str, tuple[Callable[..., tuple], Callable[[], tuple]]] = {
        "native": (native, lambda: at.native),
        "noise": (explicit, lambda: (at.native_uniform(at.native, layout, at.x),)),
        "seed": (portable, lambda: (at.stream,)),
    }
    for rng in rngs:
        call, inputs = ways[rng]
        yield step_name(config.label, rng), Case(call, () if skip else inputs(), skip=skip)


def noise_cases(at: _Shape, configs: Sequence[Config], softmax: Fn) -> Iterator[tuple]:
    """``(name, case)`` of drawing each distinct noise layout of ``configs`` with the portable
    generator and with the framework's, and of one softmax forward pass: forward only."""
    shape = tuple(at.x.shape)
    layouts: dict[str, Estimator] = {}
    for config in configs:
        estimator = config.estimator()
        layouts.setdefault(layout_label(estimator, shape), estimator)
    for label, estimator in layouts.items():
        layout = noise_layout(estimator, shape)

        def portable(t: Any, stream: Any, estimator: Estimator = estimator) -> tuple:
            return (at.portable_uniform(estimator, stream, t),)

        def native(t: Any, *rng: Any, layout: tuple = layout) -> tuple:
            return (at.native_uniform(rng, layout, t),)

        skip = at.too_big(estimator)
        yield draw_name("portable", label), Case(portable, (at.stream,), False, skip)
        yield draw_name("native", label), Case(native, at.native, False, skip)
    yield SOFTMAX_PASS, Case(softmax, (), False)


# ---------------------------------------------------------------------------------------------
# Building every step of one shape
# ---------------------------------------------------------------------------------------------


class Plan(NamedTuple):
    """What every group of cases is run with."""

    names: Sequence[str]
    configs: Sequence[Config]
    rngs: Sequence[str]
    modes: Sequence[str]
    min_time: float
    max_repeats: int
    device: str
    reference: Any | None
    max_noise_bytes: float


def _skipped(reason: str) -> Step:
    def step() -> None:
        raise Skipped(reason)

    return step


def _cases(at: _Shape, framework: Framework, plan: Plan) -> dict[str, Case]:
    """Every case of ``plan`` at one shape: estimators, baselines, then the noise group."""
    cases: dict[str, Case] = {}
    for config in plan.configs:
        cases.update(_estimator_cases(at, config, plan.rngs))
    baselines = framework.baselines(plan.reference)
    cases.update((name, Case(fn, ())) for name, fn in baselines.items() if name in plan.names)
    if NOISE in plan.names:
        cases.update(noise_cases(at, plan.configs, baselines["softmax"]))
    return cases


def build(
    framework: Framework, backend: str, shape: tuple[int, ...], plan: Plan
) -> dict[tuple[str, str], Step]:
    """One step per ``(name, mode)`` of ``plan`` at ``shape`` in ``framework``, whose backend
    module (``reinmax.backends.<backend>``) runs the estimators and draws the noise."""
    x, w = framework.arrays(shape, plan.device)
    module = load_module(backend)
    xp, device = module.BACKEND.xp, module.BACKEND.device(x)
    native = framework.native_rng()
    stream = xp.asarray(0, dtype=xp.int32, device=device)
    at = _Shape(module, x, () if native is None else (native,), stream, plan.max_noise_bytes)
    steps = {}
    for name, case in _cases(at, framework, plan).items():
        for mode in plan.modes:
            if case.skip is not None:
                steps[(name, mode)] = _skipped(case.skip)
                continue
            w_or_none = w if case.backward else None
            steps[(name, mode)] = framework.step(
                case.fn, x, w_or_none, case.inputs, mode == "compiled"
            )
    return steps

"""ListOps data: reading, evaluating, describing, generating and encoding expressions.

ListOps (Nangia & Bowman, NAACL-SRW 2018) expressions are prefix formulas over the digits 0-9 with
the operators ``[MIN``, ``[MAX``, ``[MED`` (median) and ``[SM`` (sum modulo 10), each closed by
``]``, e.g. ``[MAX 2 [MIN 4 7 ] 0 ]`` has value 4. The distributed files also carry parentheses
that record the binary bracketing the original generator emitted; tree learners drop them, and
this module keeps that bracketing as the *gold tree* of an :class:`Example`.

Everything here is pure Python/NumPy so that every framework's task code can share it.

Facts measured on the real 1,000-example validation split, which this module relies on:

* ``[MED`` of an even number of arguments is the floor of the mean of the two middle values
  (``int(numpy.median(args))``); it reproduces all 1,000 labels, while the lower median (861),
  upper median (800) and round-half-even (941) do not.
* The bracketing is always left-branching per operator: ``[OP a1 ... ak ]`` is bracketed as
  ``( ( ... ( ( [OP a1 ) a2 ) ... ak ) ] )`` with each argument bracketed recursively
  (:func:`listops_tree`).
* All 1,000 expressions are distinct and short ones are rare (3 of the 400 possible two-digit,
  single-operator expressions), as in a uniform draw from a de-duplicated pool; the generator
  emulates that (``GeneratorConfig.pool_size``).

Run ``python -m reinmax.tasks.listops.data`` to compare the real and generated distributions.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from reinmax.runtime import (
    add_publish_option,
    check_destination,
    command,
    non_negative_int,
    positive_int,
    write_json,
)

__all__ = [
    "CLOSE",
    "DIGITS",
    "OPERATORS",
    "PAD_TOKEN",
    "Example",
    "GeneratorConfig",
    "Tree",
    "Vocabulary",
    "default_valid_path",
    "describe",
    "encode_batch",
    "evaluate",
    "format_tree",
    "generate",
    "listops_tree",
    "read_tsv",
    "splits",
    "stats_main",
]

DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
CLOSE = "]"
PAD_TOKEN = "<pad>"
_OPEN_GROUP, _CLOSE_GROUP = "(", ")"

VALID_ENV_VAR = "REINMAX_LISTOPS_VALID"

# A binary tree over token positions: a leaf is the index of a token in ``Example.tokens``, an
# inner node is a pair. format_tree also accepts wider tuples, for n-ary trees a model may induce.
Tree: TypeAlias = int | tuple["Tree", ...]


def _median_floor(args: Sequence[int]) -> int:
    # The convention of the real data (see the module docstring): floor of the mean of the two
    # middle values for an even count.
    ordered = sorted(args)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) // 2


_APPLY: dict[str, Callable[[Sequence[int]], int]] = {
    "[MIN": min,
    "[MAX": max,
    "[MED": _median_floor,
    "[SM": lambda args: sum(args) % 10,
}


@dataclass(frozen=True)
class Example:
    """One ListOps expression.

    Attributes:
        label: the value of the expression, 0-9.
        tokens: the expression's tokens without parentheses, e.g. ``("[MIN", "3", "8", "]")``.
        tree: the gold binary bracketing over positions in ``tokens`` (see :data:`Tree`).
    """

    label: int
    tokens: tuple[str, ...]
    tree: Tree

    @property
    def text(self) -> str:
        """The expression as one space-separated string: the identity used to compare examples."""
        return " ".join(self.tokens)


def evaluate(tokens: Sequence[str]) -> int:
    """Return the value (0-9) of a ListOps expression.

    Args:
        tokens: the expression's tokens; parentheses, if present, are ignored.

    Raises:
        ValueError: the tokens do not form exactly one well-formed expression.
    """
    # Each open operator keeps the values of its arguments seen so far.
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for position, token in enumerate(tokens):
        if token in (_OPEN_GROUP, _CLOSE_GROUP):
            continue
        if result is not None:
            raise ValueError(
                f"token {token!r} at position {position} follows a complete expression"
            )
        if token in _APPLY:
            stack.append((token, []))
            continue
        if token == CLOSE:
            if not stack:
                raise ValueError(f"{CLOSE!r} at position {position} closes no operator")
            operator, args = stack.pop()
            if not args:
                raise ValueError(f"{operator} closed at position {position} has no arguments")
            value = _APPLY[operator](args)
        elif token in DIGITS:
            value = int(token)
        else:
            raise ValueError(
                f"unknown token {token!r} at position {position}; expected a digit 0-9, "
                f"one of {', '.join(OPERATORS)}, or {CLOSE!r}"
            )
        if stack:
            stack[-1][1].append(value)
        else:
            result = value
    if stack:
        raise ValueError(f"{len(stack)} operator(s) not closed by {CLOSE!r}")
    if result is None:
        raise ValueError("empty expression")
    return result


def listops_tree(tokens: Sequence[str]) -> Tree:
    """Return the left-branching bracketing the ListOps generator gives an expression.

    ``[OP a1 ... ak ]`` becomes ``((((OP, a1), a2), ..., ak), ])`` over token positions, with
    every argument bracketed the same way; this is the gold tree of every real example.

    Args:
        tokens: a well-formed expression without parentheses.
    """
    # Each open operator holds the left-folded tree of what it has absorbed so far.
    stack: list[Tree] = []
    for position, token in enumerate(tokens):
        if token in _APPLY:
            stack.append(position)
            continue
        node: Tree = position
        if token == CLOSE:
            node = (stack.pop(), position)
        if not stack:
            return node
        stack[-1] = (stack[-1], node)
    raise ValueError(f"expression {' '.join(tokens)!r} is not closed")


def format_tree(tree: Tree, tokens: Sequence[str]) -> str:
    """Render a tree over ``tokens`` in the files' bracket notation, e.g. ``( ( [SM 1 ) ] )``.

    For an example read from a file this reproduces the expression column exactly.
    """
    if isinstance(tree, int):
        return tokens[tree]
    return " ".join((_OPEN_GROUP, *(format_tree(child, tokens) for child in tree), _CLOSE_GROUP))


def _parse_bracketed(raw_tokens: Sequence[str]) -> tuple[tuple[str, ...], Tree]:
    """Split a parenthesised expression into its tokens and its binary tree."""
    tokens: list[str] = []
    # One list of finished children per open parenthesis, plus the top level.
    groups: list[list[Tree]] = [[]]
    for position, token in enumerate(raw_tokens):
        if token == _OPEN_GROUP:
            groups.append([])
        elif token == _CLOSE_GROUP:
            if len(groups) == 1:
                raise ValueError(f"')' at position {position} has no matching '('")
            children = groups.pop()
            if len(children) != 2:
                raise ValueError(
                    f"the group closed at position {position} has {len(children)} children; "
                    "expected exactly 2 (a binary bracketing)"
                )
            groups[-1].append((children[0], children[1]))
        else:
            groups[-1].append(len(tokens))
            tokens.append(token)
    if len(groups) > 1:
        raise ValueError(f"{len(groups) - 1} '(' not closed")
    if len(groups[0]) != 1:
        raise ValueError(f"expected one bracketed tree, found {len(groups[0])} top-level items")
    return tuple(tokens), groups[0][0]


def default_valid_path() -> Path:
    """Locate the real validation split.

    ``$REINMAX_LISTOPS_VALID`` wins if set; otherwise the copy shipped with this package
    (``reinmax/tasks/data/listops/valid.tsv``; its source and licence are in the ``README.md``
    beside it).
    """
    override = os.environ.get(VALID_ENV_VAR)
    if override:
        return Path(override)
    return Path(str(resources.files("reinmax.tasks").joinpath("data/listops/valid.tsv")))


def read_tsv(path: str | os.PathLike[str] | None = None) -> list[Example]:
    """Read a ListOps file of ``LABEL<TAB>EXPRESSION`` lines.

    Args:
        path: the file; ``None`` reads :func:`default_valid_path`.

    Raises:
        FileNotFoundError: the file does not exist; the message names it.
        ValueError: the file is empty, is not UTF-8 text, or a line is malformed; the message
            names the file, the line number and what was expected.
    """
    source = Path(path) if path is not None else default_valid_path()
    if not source.is_file():
        raise FileNotFoundError(f"ListOps file {source} does not exist (expected a TSV file)")
    examples = []
    # Decoded line by line, so that a binary or mis-encoded file is reported at its line.
    for number, raw in enumerate(source.read_bytes().splitlines(), start=1):
        try:
            examples.append(_parse_line(raw.decode("utf-8")))
        except UnicodeDecodeError:
            raise ValueError(
                f"{source}:{number}: not UTF-8 text (expected LABEL<TAB>EXPRESSION)"
            ) from None
        except ValueError as error:
            raise ValueError(f"{source}:{number}: {error}") from None
    if not examples:
        raise ValueError(f"{source}: no examples (expected LABEL<TAB>EXPRESSION lines)")
    return examples


def _parse_line(line: str) -> Example:
    fields = line.split("\t")
    if len(fields) != 2:
        raise ValueError(f"expected LABEL<TAB>EXPRESSION, got {len(fields)} tab-separated fields")
    label_text, expression = fields
    if label_text not in DIGITS:
        raise ValueError(f"expected the label to be a digit 0-9, got {label_text!r}")
    tokens, tree = _parse_bracketed(expression.split())
    # Evaluating checks the expression is well formed; whether it matches the label is left to
    # the caller, so that the reader stays a parser.
    evaluate(tokens)
    return Example(label=int(label_text), tokens=tokens, tree=tree)


def _operator_shape(tokens: Sequence[str]) -> tuple[int, list[int]]:
    """Return the operator nesting depth and the argument count of each operator."""
    depth = 0
    open_counts: list[int] = []
    finished: list[int] = []
    for token in tokens:
        if token in _APPLY:
            if open_counts:
                open_counts[-1] += 1
            open_counts.append(0)
            depth = max(depth, len(open_counts))
        elif token == CLOSE:
            finished.append(open_counts.pop())
        elif open_counts:
            open_counts[-1] += 1
    return depth, finished


def _summary(values: Sequence[int]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    p10, p25, p75, p90 = np.percentile(array, [10, 25, 75, 90]).tolist()
    return {
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "p10": p10,
        "p25": p25,
        "p75": p75,
        "p90": p90,
        "min": int(array.min()),
        "max": int(array.max()),
        "histogram": dict(sorted(Counter(int(v) for v in values).items())),
    }


def describe(examples: Sequence[Example]) -> dict[str, Any]:
    """Summarise a non-empty set of examples.

    Returns a JSON-serialisable dict with ``n``; ``length`` (tokens without parentheses),
    ``depth`` (operator nesting depth) and ``args_per_operator``, each with ``mean``, ``median``,
    ``p10``/``p25``/``p75``/``p90``, ``min``, ``max`` and a ``histogram`` {value: count};
    ``operators`` {operator: count}; and ``labels`` with its ``histogram``, ``majority`` class
    and ``majority_share``.
    """
    if not examples:
        raise ValueError("describe needs at least one example")
    depths = []
    arg_counts: list[int] = []
    for example in examples:
        depth, counts = _operator_shape(example.tokens)
        depths.append(depth)
        arg_counts.extend(counts)
    operators = Counter(t for example in examples for t in example.tokens if t in _APPLY)
    labels = Counter(example.label for example in examples)
    majority, majority_count = max(sorted(labels.items()), key=lambda item: item[1])
    return {
        "n": len(examples),
        "length": _summary([len(example.tokens) for example in examples]),
        "depth": _summary(depths),
        "args_per_operator": _summary(arg_counts),
        "operators": {operator: operators[operator] for operator in OPERATORS},
        "labels": {
            "histogram": {label: labels[label] for label in range(10)},
            "majority": majority,
            "majority_share": majority_count / len(examples),
        },
    }


@dataclass(frozen=True)
class GeneratorConfig:
    """How :func:`generate` draws expressions.

    The root is an operator at depth 1. An operator draws its symbol uniformly from
    ``operators`` and its argument count uniformly from ``min_args..max_args``; each argument is
    a nested operator with probability ``nest_prob`` while the depth is below ``max_depth``, and
    otherwise a uniform digit. The defaults reproduce the real validation split's length and
    depth distributions (see :func:`stats_main`).

    Attributes:
        max_depth: the deepest operator nesting (the real split's maximum is 19).
        min_args: fewest arguments per operator.
        max_args: most arguments per operator.
        nest_prob: probability that an argument is itself an operator.
        max_length: reject expressions with more tokens than this (parentheses not counted);
            ``None`` keeps all.
        pool_size: emulate drawing uniformly from the distinct expressions of a pool of this many
            samples, which thins out short, frequent expressions as in the real data; ``None``
            samples the branching process as is.
        operators: the operator symbols to draw from.
    """

    max_depth: int = 19
    min_args: int = 2
    max_args: int = 5
    nest_prob: float = 0.25
    max_length: int | None = None
    pool_size: int | None = 200_000
    operators: tuple[str, ...] = OPERATORS

    def __post_init__(self) -> None:
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {self.max_depth}")
        if not 1 <= self.min_args <= self.max_args:
            raise ValueError(
                f"need 1 <= min_args <= max_args, got {self.min_args} and {self.max_args}"
            )
        if not 0.0 <= self.nest_prob < 1.0:
            raise ValueError(f"nest_prob must be in [0, 1), got {self.nest_prob}")
        if self.max_length is not None and self.max_length < self.min_args + 2:
            raise ValueError(
                f"max_length {self.max_length} is below the shortest expression "
                f"({self.min_args + 2} tokens)"
            )
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"pool_size must be positive, got {self.pool_size}")
        unknown = set(self.operators) - set(OPERATORS)
        if not self.operators or unknown:
            raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {unknown}")


def _sample_operator(
    rng: np.random.Generator, config: GeneratorConfig, depth: int, tokens: list[str]
) -> tuple[int, float]:
    """Append one random operator expression to ``tokens``.

    Returns its value and the log-probability of the choices that produced it.
    """
    # Uniform choices index by a float draw: Generator.integers is far slower per scalar call.
    operator = config.operators[int(rng.random() * len(config.operators))]
    n_counts = config.max_args - config.min_args + 1
    n_args = config.min_args + int(rng.random() * n_counts)
    log_prob = -math.log(len(config.operators)) - math.log(n_counts)
    can_nest = depth < config.max_depth
    tokens.append(operator)
    args = []
    for _ in range(n_args):
        if can_nest and rng.random() < config.nest_prob:
            value, sub_log_prob = _sample_operator(rng, config, depth + 1, tokens)
            log_prob += math.log(config.nest_prob) + sub_log_prob
        else:
            value = int(rng.random() * len(DIGITS))
            tokens.append(DIGITS[value])
            log_prob += math.log((1.0 - config.nest_prob if can_nest else 1.0) / len(DIGITS))
        args.append(value)
    tokens.append(CLOSE)
    return _APPLY[operator](args), log_prob


def _pool_acceptance(log_prob: float, pool_size: int) -> float:
    """Acceptance probability that turns the sampler into a draw from a de-duplicated pool.

    In ``N`` draws an expression of probability ``q`` appears (at least once) with probability
    ``1 - (1 - q)^N``; a uniform pick among the distinct ones has that weight. Relative to the
    proposal ``q`` this is ``(1 - (1 - q)^N) / (N q)`` after scaling to at most 1.
    """
    q = math.exp(log_prob)
    if q == 0.0:
        return 1.0
    return -math.expm1(pool_size * math.log1p(-q)) / (pool_size * q)


def generate(
    n: int,
    *,
    seed: int,
    config: GeneratorConfig | None = None,
    exclude: Iterable[str] = (),
) -> list[Example]:
    """Draw ``n`` distinct random expressions with labels and left-branching gold trees.

    Args:
        n: how many examples.
        seed: the same seed (and config and exclude) gives the same examples.
        config: the distribution; ``None`` uses the defaults fitted to the real data.
        exclude: expression strings (:attr:`Example.text`) that must not be generated, e.g. the
            validation split.

    Raises:
        RuntimeError: the config cannot produce enough new distinct expressions.
    """
    config = config or GeneratorConfig()
    rng = np.random.Generator(np.random.Philox(seed))
    seen = set(exclude)
    examples: list[Example] = []
    # Distinctness is by rejection, so a config with few possible expressions could spin forever.
    max_misses = 100_000
    misses = 0
    while len(examples) < n:
        tokens: list[str] = []
        value, log_prob = _sample_operator(rng, config, 1, tokens)
        text = " ".join(tokens)
        accepted = (
            (config.max_length is None or len(tokens) <= config.max_length)
            and (
                config.pool_size is None
                or rng.random() < _pool_acceptance(log_prob, config.pool_size)
            )
            and text not in seen
        )
        if not accepted:
            misses += 1
            if misses > max_misses:
                raise RuntimeError(
                    f"no new distinct expression in {max_misses} draws after {len(examples)} "
                    f"examples; {config} is too restrictive for n={n}"
                )
            continue
        misses = 0
        # The value computed while sampling is checked against the independent evaluator.
        label = evaluate(tokens)
        if label != value:
            raise RuntimeError(f"generator value {value} disagrees with evaluate ({label}): {text}")
        seen.add(text)
        examples.append(Example(label=label, tokens=tuple(tokens), tree=listops_tree(tokens)))
    return examples


def splits(
    seed: int,
    n_train: int,
    n_test: int,
    config: GeneratorConfig | None = None,
    *,
    exclude: Sequence[Example] | None = None,
) -> tuple[list[Example], list[Example]]:
    """Generate reproducible train and test sets.

    No expression occurs twice across train, test and ``exclude``. The train set depends only on
    ``seed``, ``n_train``, ``config`` and ``exclude``, not on ``n_test``.

    Args:
        seed: random seed.
        n_train: train set size.
        n_test: test set size.
        config: the distribution; ``None`` uses the defaults fitted to the real data.
        exclude: examples both sets must avoid; ``None`` reads the real validation split
            (:func:`default_valid_path`).
    """
    held_out = read_tsv() if exclude is None else exclude
    examples = generate(
        n_train + n_test, seed=seed, config=config, exclude={example.text for example in held_out}
    )
    return examples[:n_train], examples[n_train:]


class Vocabulary:
    """Token ↔ id mapping with the padding token at id 0."""

    pad_id = 0

    def __init__(self, tokens: Iterable[str] = (*DIGITS, *OPERATORS, CLOSE)) -> None:
        """Assign ids 1, 2, ... to ``tokens`` in order; id 0 is :data:`PAD_TOKEN`."""
        self.tokens: tuple[str, ...] = (PAD_TOKEN, *tokens)
        self._ids = {token: index for index, token in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            raise ValueError(f"duplicate or reserved tokens in {self.tokens[1:]}")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Map tokens to ids; raises ``ValueError`` on a token outside the vocabulary."""
        try:
            return [self._ids[token] for token in tokens]
        except KeyError as error:
            raise ValueError(f"token {error.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> tuple[str, ...]:
        """Map ids back to tokens, skipping padding."""
        return tuple(self.tokens[int(i)] for i in ids if int(i) != self.pad_id)


def encode_batch(
    examples: Sequence[Example], vocab: Vocabulary, *, pad_to: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode examples as a right-padded batch.

    Args:
        examples: the batch.
        vocab: the token ids.
        pad_to: pad to this fixed length (for frameworks that want static shapes); ``None`` pads
            to the longest example.

    Returns:
        ``(ids, lengths, labels)``: int32 arrays of shapes ``[B, T]``, ``[B]`` and ``[B]``; ids
        past an example's length are ``vocab.pad_id``.
    """
    lengths = np.array([len(example.tokens) for example in examples], dtype=np.int32)
    longest = int(lengths.max(initial=0))
    width = longest if pad_to is None else pad_to
    if width < longest:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest example ({longest} tokens)")
    ids = np.full((len(examples), width), vocab.pad_id, dtype=np.int32)
    for row, example in enumerate(examples):
        ids[row, : len(example.tokens)] = vocab.encode(example.tokens)
    labels = np.array([example.label for example in examples], dtype=np.int32)
    return ids, lengths, labels


_TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("length", "mean"),
    ("length", "p10"),
    ("length", "p25"),
    ("length", "median"),
    ("length", "p75"),
    ("length", "p90"),
    ("length", "max"),
    ("depth", "mean"),
    ("depth", "p25"),
    ("depth", "median"),
    ("depth", "p75"),
    ("depth", "p90"),
    ("depth", "max"),
    ("args_per_operator", "mean"),
)


def _comparison_table(real: dict[str, Any], generated: dict[str, Any]) -> str:
    lines = [f"{'statistic':<26}{'real':>10}{'generated':>12}{'ratio':>8}"]
    rows = [
        (f"{group} {key}", real[group][key], generated[group][key]) for group, key in _TABLE_ROWS
    ]
    rows += [
        ("depth-1 share", _share(real["depth"], 1), _share(generated["depth"], 1)),
        (
            "majority label share",
            real["labels"]["majority_share"],
            generated["labels"]["majority_share"],
        ),
    ]
    for name, real_value, generated_value in rows:
        ratio = generated_value / real_value if real_value else math.nan
        lines.append(f"{name:<26}{real_value:>10.3f}{generated_value:>12.3f}{ratio:>8.3f}")
    return "\n".join(lines)


def _share(summary: dict[str, Any], value: int) -> float:
    histogram = summary["histogram"]
    return histogram.get(value, 0) / sum(histogram.values())


@command("listops-stats")
def stats_main(argv: list[str] | None = None) -> int:
    """Print real-vs-generated ListOps statistics; ``--json PATH`` also writes them as JSON.

    Returns the process exit status: 0 on success, 1 if the validation file is missing.
    """
    parser = argparse.ArgumentParser(
        prog="listops-stats", description="Compare the real ListOps split with generated data."
    )
    parser.add_argument(
        "--valid",
        type=Path,
        default=None,
        help="real file (default: the split shipped with the package)",
    )
    parser.add_argument(
        "--n", type=positive_int, default=10_000, help="generated examples (default 10000)"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="generator seed (default 0)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the statistics here")
    add_publish_option(parser)
    args = parser.parse_args(argv)
    if args.json is not None:
        check_destination(args.json)

    try:
        real_examples = read_tsv(args.valid)
    except FileNotFoundError as error:
        print(f"listops-stats: {error}", file=sys.stderr)
        return 1
    config = GeneratorConfig()
    real = describe(real_examples)
    generated = describe(generate(args.n, seed=args.seed, config=config))
    print(f"real: {real['n']} examples; generated: {generated['n']} (seed {args.seed})")
    print(_comparison_table(real, generated))
    if args.json is not None:
        report = {"config": asdict(config), "seed": args.seed, "real": real, "generated": generated}
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(stats_main())

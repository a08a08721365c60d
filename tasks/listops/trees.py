"""Induced trees: the tree a sequence of merges builds, its bracketing F1 against a gold tree,
and the reading back of a bracketed tree."""

from __future__ import annotations

from collections.abc import Sequence

from reinmax.tasks.listops.data import Tree

__all__ = ["induced_tree", "parse_bracketed", "parse_f1"]


def induced_tree(merges: Sequence[int], length: int) -> Tree:
    """The binary tree built by merging position ``merges[t]`` with its right neighbour at step t.

    Only the first ``length − 1`` merges are used (later steps of a padded batch merge nothing).
    """
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    nodes: list[Tree] = list(range(length))
    for step in range(length - 1):
        k = int(merges[step])
        if not 0 <= k < len(nodes) - 1:
            raise ValueError(f"merge {k} at step {step} is outside 0..{len(nodes) - 2}")
        nodes[k : k + 2] = [(nodes[k], nodes[k + 1])]
    return nodes[0]


def _spans(tree: Tree, into: set[tuple[int, int]]) -> tuple[int, int]:
    """Add the span of every internal node to ``into``; returns the root's span.

    Iterative: an induced tree over a long real expression can be a chain hundreds of nodes
    deep, past Python's recursion limit.
    """
    if isinstance(tree, int):
        return tree, tree + 1
    span_of: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Tree, bool]] = [(tree, False)]
    while stack:
        node, children_done = stack.pop()
        if isinstance(node, int):
            span_of[id(node)] = (node, node + 1)
        elif children_done:
            span = (span_of[id(node[0])][0], span_of[id(node[-1])][1])
            span_of[id(node)] = span
            into.add(span)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in node)
    return span_of[id(tree)]


def parse_f1(predicted: Tree, gold: Tree) -> float:
    """Unlabelled bracketing F1 of two trees over the same tokens, without the whole-sentence span.

    Returns 1.0 when neither tree has a non-trivial span (a two-token expression).
    """
    ours: set[tuple[int, int]] = set()
    theirs: set[tuple[int, int]] = set()
    whole = _spans(predicted, ours)
    if _spans(gold, theirs) != whole:
        raise ValueError("the trees cover different tokens")
    ours.discard(whole)
    theirs.discard(whole)
    if not ours and not theirs:
        return 1.0
    overlap = len(ours & theirs)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(ours), overlap / len(theirs)
    return 2 * precision * recall / (precision + recall)


def parse_bracketed(text: str, tokens: Sequence[str]) -> Tree:
    """The tree of a ``format_tree`` string (parentheses around every inner node) over
    ``tokens``; raises ``ValueError`` when a token of ``text`` is not the next of ``tokens``."""
    stack: list[list[Tree]] = [[]]
    position = 0
    for token in text.split():
        if token == "(":
            stack.append([])
        elif token == ")":
            children = stack.pop()
            stack[-1].append(tuple(children))
        else:
            if tokens[position] != token:
                raise ValueError(f"token {token!r} does not match {tokens[position]!r}")
            stack[-1].append(position)
            position += 1
    return stack[0][0]

"""Tests for the ListOps data layer: reader, evaluator, statistics, generator and encoding."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import reinmax.tasks
from reinmax.tasks.listops.data import (
    CLOSE,
    DIGITS,
    OPERATORS,
    Example,
    GeneratorConfig,
    Vocabulary,
    default_valid_path,
    describe,
    encode_batch,
    evaluate,
    format_tree,
    generate,
    listops_tree,
    read_tsv,
    splits,
    stats_main,
)

# Relative tolerance on the mean length and mean depth of generated vs real data. Seeds move the
# generated means by about ±4% at n=4000; sampling the branching process without the pool
# emulation misses by over 20%, which test_tolerance_rejects_naive_generator pins down.
MEAN_TOLERANCE = 0.10
REAL_SPLIT_SHA256 = "f9e96e70990dfd863e7652fb94c454b3ca9d08a10bf0a775a780ba485452725b"
N_GENERATED = 4000


def _example(expression: str) -> Example:
    tokens = tuple(expression.split())
    return Example(label=evaluate(tokens), tokens=tokens, tree=listops_tree(tokens))


@pytest.fixture(scope="module")
def real_path() -> Path:
    return default_valid_path()


@pytest.fixture(scope="module")
def real(real_path: Path) -> list[Example]:
    return read_tsv(real_path)


@pytest.fixture(scope="module")
def generated() -> list[Example]:
    return generate(N_GENERATED, seed=0)


def test_reader_on_real_file(real: list[Example]) -> None:
    assert len(real) == 1000
    assert {example.label for example in real} == set(range(10))
    allowed = {*DIGITS, *OPERATORS, CLOSE}
    assert all(set(example.tokens) <= allowed for example in real)
    assert len({example.text for example in real}) == 1000


def test_real_trees_round_trip_and_are_left_branching(real_path: Path, real: list[Example]) -> None:
    expressions = [line.rstrip("\n").split("\t")[1] for line in real_path.open(encoding="utf-8")]
    for example, expression in zip(real, expressions, strict=True):
        assert format_tree(example.tree, example.tokens) == expression
        assert listops_tree(example.tokens) == example.tree


def test_evaluator_reproduces_every_real_label(real: list[Example]) -> None:
    wrong = [example.text for example in real if evaluate(example.tokens) != example.label]
    assert wrong == []


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("[MIN 3 8 1 ]", 1),
        ("[MAX 3 8 1 ]", 8),
        ("[SM 7 8 9 ]", 4),
        ("[MED 9 1 5 ]", 5),
        # Even counts: floor of the mean of the two middle values, as in the real data.
        ("[MED 2 5 ]", 3),
        ("[MED 1 2 8 9 ]", 5),
        ("[MAX 2 [MIN 4 7 ] 0 ]", 4),
        ("( ( ( [SM 1 ) 2 ) ] )", 3),
        ("7", 7),
    ],
)
def test_evaluate_operators(expression: str, value: int) -> None:
    assert evaluate(expression.split()) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("[MIN 1 2", "not closed"),
        ("[MIN ]", "has no arguments"),
        ("1 2", "follows a complete expression"),
        ("]", "closes no operator"),
        ("[MIN 1 x ]", "unknown token 'x'"),
        ("", "empty expression"),
    ],
)
def test_evaluate_rejects_malformed(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(expression.split())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("3 ( [MIN 3 ) ]", r"LABEL<TAB>EXPRESSION, got 1 tab-separated fields"),
        ("x\t( ( [MIN 3 ) ] )", r"label to be a digit 0-9, got 'x'"),
        ("3\t( ( [MIN 3 ) ]", r"1 '\(' not closed"),
        ("3\t( [MIN 3 ) ] )", r"'\)' at position 5 has no matching '\('"),
        ("3\t( ( [MIN 3 4 ) ] )", r"has 3 children; expected exactly 2"),
        ("3\t( ( ( [MIN 3 ) ) ] )", r"has 1 children; expected exactly 2"),
        ("3\t( ( [MIN 3 ) 4 )", r"operator\(s\) not closed"),
        ("3\t( ( [MIX 3 ) ] )", r"unknown token '\[MIX'"),
    ],
)
def test_reader_reports_file_line_and_expectation(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(f"4\t( ( [MAX 4 ) ] )\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:2: .*{expected}"):
        read_tsv(path)


def test_the_real_split_ships_with_the_package() -> None:
    path = default_valid_path()
    assert path.is_relative_to(Path(reinmax.tasks.__file__).parent)
    data = path.read_bytes()
    assert data.count(b"\n") == 1000
    assert hashlib.sha256(data).hexdigest() == REAL_SPLIT_SHA256
    readme = (path.parent / "README.md").read_text(encoding="utf-8")
    assert REAL_SPLIT_SHA256 in readme and "Licence" in readme and "Nangia" in readme


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", r"bad.tsv: no examples"),
        (b"4\t( ( [MAX 4 ) ] )\n\xff\xfe\x00binary\n", r"bad.tsv:2: not UTF-8 text"),
        (b"\x00\x01\x02\n", r"bad.tsv:1: expected LABEL<TAB>EXPRESSION"),
    ],
)
def test_reader_rejects_empty_and_binary_files(tmp_path: Path, content: bytes, expected: str):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=expected):
        read_tsv(path)


def test_reader_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.tsv does not exist"):
        read_tsv(tmp_path / "missing.tsv")


def test_reader_honours_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiny.tsv"
    path.write_text("3\t( ( ( [SM 1 ) 2 ) ] )\n", encoding="utf-8")
    monkeypatch.setenv("REINMAX_LISTOPS_VALID", str(path))
    assert default_valid_path() == path
    assert read_tsv() == [Example(label=3, tokens=("[SM", "1", "2", "]"), tree=(((0, 1), 2), 3))]


def test_describe_counts() -> None:
    examples = [
        _example("[MAX 2 [MIN 4 7 ] 0 ]"),
        _example("[SM 1 2 ]"),
        _example("[SM 1 1 1 ]"),
    ]
    stats = describe(examples)
    assert stats["n"] == 3
    assert stats["length"]["histogram"] == {4: 1, 5: 1, 8: 1}
    assert stats["length"]["max"] == 8
    assert stats["depth"]["histogram"] == {1: 2, 2: 1}
    assert stats["args_per_operator"]["histogram"] == {2: 2, 3: 2}
    assert stats["args_per_operator"]["mean"] == pytest.approx(2.5)
    assert stats["operators"] == {"[MIN": 1, "[MAX": 1, "[MED": 0, "[SM": 2}
    assert stats["labels"]["majority"] == 3
    assert stats["labels"]["majority_share"] == pytest.approx(2 / 3)
    json.dumps(stats)


def test_generate_is_reproducible() -> None:
    first = generate(200, seed=7)
    assert first == generate(200, seed=7)
    assert first != generate(200, seed=8)
    # A longer draw extends a shorter one with the same seed.
    assert generate(300, seed=7)[:200] == first


def test_generated_examples_are_correct_and_distinct(generated: list[Example]) -> None:
    assert len({example.text for example in generated}) == len(generated)
    for example in generated:
        assert example.label == evaluate(example.tokens)
        assert example.tree == listops_tree(example.tokens)
    depth = describe(generated)["depth"]
    assert depth["min"] == 1 and depth["max"] <= GeneratorConfig().max_depth


def test_generator_respects_config() -> None:
    config = GeneratorConfig(max_depth=2, min_args=3, max_args=3, max_length=12, operators=("[SM",))
    stats = describe(generate(300, seed=1, config=config))
    assert stats["depth"]["max"] <= 2
    assert set(stats["args_per_operator"]["histogram"]) == {3}
    assert stats["length"]["max"] <= 12
    assert stats["operators"]["[SM"] == sum(stats["operators"].values())


def test_generator_fails_loudly_when_config_is_exhausted() -> None:
    # Only 4 operators x 100 digit pairs exist at this size.
    config = GeneratorConfig(max_depth=1, max_args=2, max_length=4, pool_size=None)
    with pytest.raises(RuntimeError, match="too restrictive"):
        generate(401, seed=0, config=config)


def _relative_error(generated_value: float, real_value: float) -> float:
    return abs(generated_value - real_value) / real_value


def test_generated_distribution_matches_real(real: list[Example], generated: list[Example]) -> None:
    real_stats, generated_stats = describe(real), describe(generated)
    for group in ("length", "depth"):
        error = _relative_error(generated_stats[group]["mean"], real_stats[group]["mean"])
        assert error < MEAN_TOLERANCE, (group, generated_stats[group], real_stats[group])
    assert abs(generated_stats["length"]["median"] - real_stats["length"]["median"]) <= 2
    assert generated_stats["depth"]["median"] == real_stats["depth"]["median"]
    assert generated_stats["depth"]["max"] == real_stats["depth"]["max"]
    args_error = _relative_error(
        generated_stats["args_per_operator"]["mean"], real_stats["args_per_operator"]["mean"]
    )
    assert args_error < 0.03


def test_tolerance_rejects_naive_generator(real: list[Example]) -> None:
    naive = describe(generate(N_GENERATED, seed=0, config=GeneratorConfig(pool_size=None)))
    error = _relative_error(naive["length"]["mean"], describe(real)["length"]["mean"])
    assert error > MEAN_TOLERANCE


def test_vocabulary_round_trip() -> None:
    vocab = Vocabulary()
    assert vocab.pad_id == 0
    assert len(vocab) == 1 + len(DIGITS) + len(OPERATORS) + 1
    tokens = ("[MED", "3", "9", "]")
    ids = vocab.encode(tokens)
    assert 0 not in ids
    assert vocab.decode([*ids, 0, 0]) == tokens
    with pytest.raises(ValueError, match="'\\(' is not in the vocabulary"):
        vocab.encode(["("])


def test_encode_batch_pads_to_longest_or_fixed_length() -> None:
    vocab = Vocabulary()
    batch = [
        _example("[MAX 2 [MIN 4 7 ] 0 ]"),
        _example("[SM 1 2 ]"),
    ]
    ids, lengths, labels = encode_batch(batch, vocab)
    assert ids.shape == (2, 8)
    assert ids.dtype == lengths.dtype == labels.dtype == np.int32
    assert lengths.tolist() == [8, 4]
    assert labels.tolist() == [4, 3]
    assert (ids[1, 4:] == vocab.pad_id).all()
    assert (ids[:, :4] != vocab.pad_id).all()
    assert vocab.decode(ids[1]) == batch[1].tokens

    fixed, _, _ = encode_batch(batch, vocab, pad_to=16)
    assert fixed.shape == (2, 16)
    np.testing.assert_array_equal(fixed[:, :8], ids)
    with pytest.raises(ValueError, match="shorter than the longest"):
        encode_batch(batch, vocab, pad_to=7)


def test_splits_avoid_explicit_exclusions() -> None:
    blocked = generate(50, seed=3)
    train, test = splits(3, 100, 50, exclude=blocked)
    texts = {example.text for example in blocked}
    assert len(train) == 100 and len(test) == 50
    assert not texts & {example.text for example in train + test}


def test_splits_are_reproducible_and_disjoint_from_real(real: list[Example]) -> None:
    train, test = splits(0, 2000, 500)
    assert (train, test) == splits(0, 2000, 500)
    assert splits(0, 2000, 100)[0] == train
    real_texts = {example.text for example in real}
    train_texts = {example.text for example in train}
    test_texts = {example.text for example in test}
    assert len(train_texts) == 2000 and len(test_texts) == 500
    assert not train_texts & real_texts
    assert not test_texts & (real_texts | train_texts)


def test_stats_main_prints_table_and_writes_json(
    real_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stats.json"
    assert stats_main(["--valid", str(real_path), "--n", "500", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "length mean" in printed and "depth mean" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["real"]["n"] == 1000 and report["generated"]["n"] == 500
    assert report["config"]["pool_size"] == GeneratorConfig().pool_size


def test_stats_main_reports_missing_file(tmp_path: Path) -> None:
    assert stats_main(["--valid", str(tmp_path / "absent.tsv"), "--n", "10"]) == 1

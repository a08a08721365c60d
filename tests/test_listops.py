"""Tests for the ListOps Gumbel Tree-LSTM task in every backend (tasks/listops/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reinmax import register_estimator, unregister_estimator
from reinmax.core import REGISTRY
from reinmax.noise import Seed
from reinmax.tasks import listops
from reinmax.tasks.common import choose_estimators, import_framework, noise_seed
from reinmax.tasks.listops import (
    TRAINERS,
    Batch,
    Data,
    TrainConfig,
    build_trainer,
    evaluate_examples,
    induced_tree,
    init_weights,
    merge_nodes,
    parse_f1,
    train,
)
from reinmax.tasks.listops.data import (
    Example,
    GeneratorConfig,
    Vocabulary,
    default_valid_path,
    encode_batch,
    evaluate,
    generate,
    listops_tree,
    read_tsv,
)
from reinmax.tasks.listops.model import TRAIN_NOISE, merge_seed

BACKENDS = tuple(TRAINERS)

# float32 models on the same weights and noise: measured differences are below 3e-7 in the loss
# and 2e-6 (relative to each tensor's largest entry) in the gradients; the bounds leave room.
LOSS_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4

TINY = {"word_dim": 8, "hidden_dim": 8, "clf_hidden_dim": 8}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    pytest.importorskip(request.param)
    import_framework(request.param)
    return request.param


@pytest.fixture(scope="module")
def real_path() -> Path:
    return default_valid_path()


@pytest.fixture(autouse=True)
def no_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    # The conformance gate is tested with the conformance suite; these tests are about the task.
    monkeypatch.setattr(listops, "require_conformance", lambda backend, estimators: None)


def _example(text: str) -> Example:
    tokens = tuple(text.split())
    return Example(label=evaluate(tokens), tokens=tokens, tree=listops_tree(tokens))


def test_merge_step_composes_the_chosen_pair_and_shifts_the_rest() -> None:
    # The merge every framework runs, here on NumPy arrays (it is written with operators).
    h = np.array([[[1.0], [2.0], [3.0], [4.0]]])
    c = 10 * h
    new_h = np.array([[[12.0], [23.0], [34.0]]])
    new_c = 10 * new_h
    choice = np.array([[0.0, 1.0, 0.0]])
    merged_h, merged_c = merge_nodes(choice, np.cumsum(choice, -1), (h, c), (new_h, new_c))
    assert merged_h[0, :, 0].tolist() == [1.0, 23.0, 4.0]
    assert merged_c[0, :, 0].tolist() == [10.0, 230.0, 40.0]
    # A finished row (no choice) keeps its nodes.
    none = np.zeros((1, 3))
    kept_h, _ = merge_nodes(none, none, (h, c), (new_h, new_c))
    assert kept_h[0, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_induced_tree_and_parse_f1() -> None:
    assert induced_tree([1, 0, 0], 4) == ((0, (1, 2)), 3)
    assert induced_tree([0, 0, 0], 4) == (((0, 1), 2), 3)
    with pytest.raises(ValueError, match="outside"):
        induced_tree([3, 0, 0], 4)
    gold = (((0, 1), 2), 3)
    assert parse_f1(gold, gold) == 1.0
    # Spans {(1,3)} vs {(0,2),(0,3)}: no overlap.
    assert parse_f1(((0, (1, 2)), 3), gold) == pytest.approx(0.5)
    assert parse_f1((0, ((1, 2), 3)), gold) == 0.0


@pytest.mark.parametrize("estimator", ["reinmax", "gumbel_rao", "gumbel_softmax"])
def test_sampled_merges_never_choose_padding(estimator: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip(TRAINERS["torch"])

    vocab = Vocabulary()
    examples = generate(12, seed=5, config=GeneratorConfig(max_length=14))
    ids, lengths, _ = encode_batch(examples, vocab, pad_to=16)
    config = TrainConfig(estimator=estimator, **TINY)
    model_config = config.model_config(len(vocab))
    weights = init_weights(model_config, 0)
    weights["query"] *= 300  # sharp scores: the sampler must still respect the mask
    trainer = build_trainer("torch", model_config, weights, config)
    for step in range(5):
        _, merges = trainer.model(
            torch.from_numpy(ids).long(), torch.from_numpy(lengths).long(), trainer.sampler(step, 0)
        )
        for row, length in enumerate(lengths):
            for t in range(length - 1):
                assert 0 <= merges[row, t] < length - 1 - t
            induced_tree(merges[row].tolist(), int(length))


def test_greedy_parse_of_known_sequences(backend: str) -> None:
    # With a zero query every candidate scores the same, so the greedy argmax (first index)
    # always merges the two leftmost nodes: the left-branching tree, which is the gold tree of
    # a single-operator expression.
    vocab = Vocabulary()
    examples = [_example(text) for text in ("[MIN 3 8 ]", "[SM 1 2 3 4 5 ]", "[MAX 9 0 1 ]")]
    config = TrainConfig(estimator="reinmax", **TINY)
    weights = init_weights(config.model_config(len(vocab)), 0)
    weights["query"][:] = 0.0
    trainer = build_trainer(backend, config.model_config(len(vocab)), weights, config)
    result = evaluate_examples(trainer, examples, vocab)
    assert result["merges"] == [[0] * (len(e.tokens) - 1) for e in examples]
    assert result["parse_f1"] == 1.0
    ids, lengths, _ = encode_batch(examples, vocab, pad_to=16)
    logits, merges = trainer.predict(ids, lengths)
    assert logits.shape == (3, 10)
    assert merges.shape == (3, 15)


# How many programs a trainer has compiled for its loss and gradients (torch compiles none).
COMPILED = {
    "torch": lambda trainer: 1,
    "jax": lambda trainer: trainer._gradients._cache_size(),
    "tensorflow": lambda trainer: trainer._graph(
        "gradients", 6, 16
    ).experimental_get_tracing_count(),
}


@pytest.mark.parametrize("estimator", ["reinmax", "gumbel_rao"])
def test_backends_agree_on_loss_gradients_and_training_steps(estimator: str) -> None:
    # The same weights and the same merge noise (drawn in the step by the portable generator)
    # give the same loss and gradients in every backend, and RAdam steps move the weights
    # alike. The noise's step and row are traced: every step runs the same compiled program.
    for name in BACKENDS:
        pytest.importorskip(name)
        import_framework(name)
    vocab = Vocabulary()
    examples = generate(6, seed=3, config=GeneratorConfig(max_length=14))
    ids, lengths, labels = encode_batch(examples, vocab, pad_to=16)
    config = TrainConfig(estimator=estimator, gumbel_rao_k=2, **TINY)
    model_config = config.model_config(len(vocab))
    weights = init_weights(model_config, 1)
    weights["query"] *= 100  # the scores, hence the samples and the rule, matter
    results = {}
    for name in BACKENDS:
        trainer = build_trainer(name, model_config, weights, config, seed=2)
        loss, gradients = trainer.loss_and_gradients(Batch(ids, lengths, labels, step=3))
        steps = [trainer.train_step(Batch(ids, lengths, labels, step)) for step in (3, 4)]
        moved = {key: value - weights[key] for key, value in trainer.weights().items()}
        results[name] = (loss, gradients, steps, moved, COMPILED[name](trainer))
    reference, *others = BACKENDS
    loss, gradients, steps, moved, _ = results[reference]
    assert np.isfinite(loss)
    assert np.abs(gradients["query"]).max() > 0
    assert steps[0][0] == pytest.approx(loss, rel=1e-6)
    for name in others:
        other_loss, other_gradients, other_steps, other_moved, compiled = results[name]
        assert compiled == 1, name
        assert abs(other_loss - loss) < LOSS_TOLERANCE, name
        np.testing.assert_allclose(other_steps, steps, atol=LOSS_TOLERANCE)
        for key in gradients:
            for ours, theirs in ((gradients, other_gradients), (moved, other_moved)):
                scale = max(np.abs(ours[key]).max(), 1e-8)
                error = np.abs(theirs[key] - ours[key]).max() / scale
                assert error < GRADIENT_TOLERANCE, (name, key, error)


def test_state_round_trip(backend: str) -> None:
    vocab = Vocabulary()
    config = TrainConfig(estimator="straight_through", **TINY)
    model_config = config.model_config(len(vocab))
    trainer = build_trainer(backend, model_config, init_weights(model_config, 0), config)
    other = build_trainer(backend, model_config, init_weights(model_config, 1), config)
    trainer.learning_rate = 1e-2
    other.load_state(trainer.state())
    for key, value in trainer.weights().items():
        np.testing.assert_array_equal(other.weights()[key], value)
    assert other.learning_rate == pytest.approx(1e-2)


def _tiny_data(real_path: Path) -> Data:
    config = GeneratorConfig(max_length=10)
    valid = [e for e in read_tsv(real_path) if len(e.tokens) <= 16][:20]
    train_set = generate(40, seed=1, config=config, exclude={e.text for e in valid})
    test_set = generate(16, seed=2, config=config, exclude={e.text for e in train_set + valid})
    return Data(train_set, test_set, valid)


def test_resume_equals_uninterrupted_run(tmp_path: Path, real_path: Path) -> None:
    pytest.importorskip(TRAINERS["torch"])
    data = _tiny_data(real_path)
    config = TrainConfig(estimator="reinmax", epochs=3, batch_size=8, patience=1, **TINY)
    whole = train("torch", config, 0, data, checkpoint=tmp_path / "whole.pkl")
    first = train(
        "torch",
        TrainConfig(**{**config.__dict__, "epochs": 2}),
        0,
        data,
        checkpoint=tmp_path / "part.pkl",
    )
    resumed = train("torch", config, 0, data, checkpoint=tmp_path / "part.pkl", resume=True)
    assert len(first["history"]) == 2
    strip = ("seconds", "train_seconds")
    drop = lambda history: [{k: v for k, v in e.items() if k not in strip} for e in history]  # noqa: E731
    assert drop(resumed["history"]) == drop(whole["history"])
    assert resumed["trees"] == whole["trees"]
    with pytest.raises(ValueError, match="hidden_dim"):
        bigger = TrainConfig(**{**config.__dict__, "hidden_dim": 9})
        train("torch", bigger, 0, data, checkpoint=tmp_path / "part.pkl", resume=True)


def test_command_writes_json_plots_and_scores_real_split(tmp_path: Path, real_path: Path) -> None:
    pytest.importorskip(TRAINERS["torch"])
    from reinmax.tasks.listops import evaluation

    valid = tmp_path / "valid.tsv"
    lines = real_path.read_text(encoding="utf-8").splitlines()
    valid.write_text("\n".join([line for line in lines if len(line) < 120][:25]) + "\n")
    json_path = tmp_path / "torch.json"
    argv = [
        "--backend", "torch", "--estimator", "reinmax", "gumbel_softmax", "--epochs", "2",
        "--n-train", "48", "--n-test", "16", "--max-train-length", "10", "--word-dim", "8",
        "--hidden-dim", "8", "--clf-hidden-dim", "8", "--valid", str(valid),
        "--json", str(json_path),
    ]  # fmt: skip
    assert listops.main(argv) == 0
    result = json.loads(json_path.read_text())
    assert [run["estimator"] for run in result["runs"]] == ["reinmax", "gumbel_softmax"]
    for run in result["runs"]:
        assert [entry["epoch"] for entry in run["history"]] == [1, 2]
        for entry in run["history"]:
            for split in ("test", "valid"):
                assert 0.0 <= entry[split]["accuracy"] <= 1.0
            assert np.isfinite(entry["train_loss"])
        assert run["trees"]
    assert 0.0 < result["majority_baseline"] < 1.0
    for name in ("accuracy.png", "table.md", "torch-trees-reinmax.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "majority class" in (tmp_path / "table.md").read_text()

    # The checkpoint scores real lines: the short ones, and in a second file one of more than 64
    # tokens (padded widths past 64 grow by a quarter). The whole split would take minutes.
    checkpoint = tmp_path / "checkpoints" / "torch-reinmax-seed0.pkl"
    longer = tmp_path / "longer.tsv"
    index = next(i for i, e in enumerate(read_tsv(real_path)) if 64 < len(e.tokens) <= 80)
    longer.write_text(lines[index] + "\n")
    scores = tmp_path / "scores.json"
    argv = [str(checkpoint), "--data", str(valid), str(longer), "--json", str(scores)]
    assert evaluation.main(argv) == 0
    files = json.loads(scores.read_text())["files"]
    assert [(scored["n"], len(scored["predictions"])) for scored in files] == [(25, 25), (1, 1)]
    assert all(0.0 <= scored["accuracy"] <= 1.0 for scored in files)
    assert evaluation.main([str(tmp_path / "missing.pkl")]) == 1


def test_parse_f1_handles_trees_deeper_than_the_recursion_limit() -> None:
    """Real validation expressions reach 911 tokens; an induced chain over them is that deep."""
    length = 3000
    left_chain = induced_tree([0] * (length - 1), length)
    right_chain = induced_tree(list(range(length - 2, -1, -1)), length)
    assert parse_f1(left_chain, left_chain) == 1.0
    assert parse_f1(left_chain, right_chain) == 0.0
    small = induced_tree([1, 0, 0], 4)  # ((0, (1, 2)), 3)
    assert parse_f1(small, induced_tree([0, 0, 0], 4)) == pytest.approx(0.5)


def test_merge_noise_is_merge_step_major_over_the_global_batch() -> None:
    # Merge step t of example b of the step's global batch is row t * batch_size + b of the
    # step's training stream: what a data-parallel shard passes its first example's index for.
    assert merge_seed(7, 5, 3, 2, 16) == noise_seed(7, TRAIN_NOISE, 5, 2 * 16 + 3)
    assert merge_seed(7, 5, 3, 2, 16) == Seed(7, TRAIN_NOISE + 16 * 5, 35)


@pytest.mark.parametrize(
    "name",
    ["straight_through", "gumbel_softmax", "gumbel_rao", "gapped_straight_through", "reinmax"],
)
def test_a_shard_of_the_batch_draws_what_one_process_draws(name: str) -> None:
    # Two shards of a batch, each passing the index of its first example (and padded to the
    # batch's width), draw the merges one process draws: their mean loss and gradients are the
    # batch's. Both shards starting at row 0 (one noise for both) is not.
    pytest.importorskip(TRAINERS["torch"])
    vocab = Vocabulary()
    examples = generate(6, seed=4, config=GeneratorConfig(max_length=14))
    ids, lengths, labels = encode_batch(examples, vocab, pad_to=16)
    config = TrainConfig(estimator=name, gumbel_rao_k=2, batch_size=8, **TINY)
    model_config = config.model_config(len(vocab))
    weights = init_weights(model_config, 1)
    weights["query"] *= 100  # the scores, hence the samples, matter
    trainer = build_trainer("torch", model_config, weights, config, seed=5)
    whole_loss, whole = trainer.loss_and_gradients(Batch(ids, lengths, labels, step=2))
    halves = [
        trainer.loss_and_gradients(Batch(ids[part], lengths[part], labels[part], 2, part.start))
        for part in (slice(0, 2), slice(2, 6))
    ]
    assert whole_loss == pytest.approx((2 * halves[0][0] + 4 * halves[1][0]) / 6, rel=1e-5)
    for key, value in whole.items():
        mean = (2 * halves[0][1][key] + 4 * halves[1][1][key]) / 6
        np.testing.assert_allclose(mean, value, rtol=1e-4, atol=1e-6 * np.abs(value).max())
    wrong = trainer.loss_and_gradients(Batch(ids[2:], lengths[2:], labels[2:], step=2))[0]
    assert wrong != pytest.approx(halves[1][0], rel=1e-5)
    with pytest.raises(ValueError, match="does not fit the global batch of 8"):
        trainer.loss_and_gradients(Batch(ids, lengths, labels, step=2, row=3))


def test_an_estimator_registered_at_run_time_is_a_choice() -> None:
    register_estimator("listops_test_st", REGISTRY["straight_through"].build)
    try:
        config = TrainConfig(estimator="listops_test_st", **TINY)
        assert config.temperature == 1.0
        assert not config.build_estimator().per_category
        args = listops._parser().parse_args(["--estimator", "all"])
        assert "listops_test_st" in choose_estimators(listops._parser(), args.estimator)
    finally:
        unregister_estimator("listops_test_st")
    with pytest.raises(ValueError, match="estimator must be one of"):
        TrainConfig(estimator="listops_test_st")


def test_the_accuracy_table_reports_the_sample_std_over_seeds():
    """Accuracies 0.30, 0.40 and 0.20: mean 30.0, sample std 10.0 (the population std would be
    8.2); one seed is shown alone."""
    from reinmax.tasks.listops import accuracy_table

    def run(estimator, accuracy):
        return {"backend": "torch", "estimator": estimator, "final": {"valid_accuracy": accuracy}}

    runs = [run("reinmax", a) for a in (0.30, 0.40, 0.20)] + [run("straight_through", 0.25)]
    table = accuracy_table([{"runs": runs}], 0.119)
    assert "| reinmax | 30.0 ± 10.0 (n=3) |" in table
    assert "| straight_through | 25.0 |" in table
    assert "| majority class | 11.9 |" in table

"""Two-tower training: known answers on block data, log-Q math, batches, seeds, cold users, MLflow epochs."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.models.two_tower import TwoTowerRecommender
from training.config import load_config
from training.two_tower import epoch_logger, sampled_softmax_loss, two_tower_model
from training.two_tower_batches import histories, holdout, item_probabilities, log_expected_counts, loss_weights

BLOCKS, PER_BLOCK = 4, 12


def blocks(withheld: int = 2) -> tuple[sp.csr_matrix, np.ndarray]:
    """Users like every item of their own block except `withheld` of them (different per user).

    Returns the matrix and (n_users, withheld) the withheld items, which must come back first.
    """
    n = BLOCKS * PER_BLOCK
    users = np.arange(n)
    block = users // PER_BLOCK
    held = np.stack([block * PER_BLOCK + (users + k) % PER_BLOCK for k in range(withheld)], axis=1)
    dense = (block[:, None] == (np.arange(n) // PER_BLOCK)[None, :]).astype(np.float32)
    dense[users[:, None], held] = 0.0
    return sp.csr_matrix(dense), held


def config(**two_tower):
    base = {"dim": 16, "epochs": 25, "batch_size": 64, "learning_rate": 0.03, "temperature": 0.2,
            "valid_fraction": 0.0, "user_id": False, "history_dropout": 0.2}
    return load_config(overrides={"threads": 1, "two_tower": {**base, **two_tower}}, environ={})


@pytest.fixture(scope="module")
def trained():
    matrix, held = blocks()
    return two_tower_model(config()).fit(matrix), matrix, held


def test_withheld_block_items_come_back_first(trained):
    model, matrix, held = trained
    ids, scores = model.recommend(np.arange(matrix.shape[0]), matrix, N=2)
    assert ids.shape == (matrix.shape[0], 2)
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(held, axis=1))


def test_a_user_unseen_in_training_gets_their_block_from_a_few_events(trained):
    model, matrix, _ = trained
    history = sp.csr_matrix((np.ones(3, np.float32), ([0, 0, 0], [24, 27, 30])), shape=(1, matrix.shape[1]))
    ids, _ = model.recommend(matrix.shape[0] + 5, history, N=5, recalculate_user=True)
    assert set(ids) <= set(range(24, 36)) - {24, 27, 30}


def test_same_seed_same_model_other_seed_other_model():
    matrix, _ = blocks()
    cfg = config(epochs=3, valid_fraction=0.2, refit=True, user_id=True)
    first, second = (two_tower_model(cfg).fit(matrix).export() for _ in range(2))
    for name in ("items", "users", "history", "user_ids"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    other = two_tower_model(cfg.model_copy(update={"seed": 1})).fit(matrix).export()
    assert not np.array_equal(first.items, other.items)


def test_early_stopping_logs_every_epoch_and_refits_for_the_best_count():
    matrix, _ = blocks()
    seen: list[dict[str, float]] = []
    model = two_tower_model(config(epochs=6, valid_fraction=0.25, patience=2), on_epoch=seen.append).fit(matrix)
    log = model.training_log
    phases = [e["phase"] for e in log["epochs"]]
    assert phases.count("refit") == log["best_epoch"] == sum(p == "refit" for p in phases)
    assert all("valid_recall@20" in e for e in log["epochs"] if e["phase"] == "early-stopping")
    assert len(seen) == len(log["epochs"]) and all(r["loss"] > 0 and r["examples_per_s"] > 0 for r in seen)
    assert model.report()["two_tower.best_epoch"] == log["best_epoch"]


def test_epochs_are_logged_to_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("tt")).info.run_id
    matrix, _ = blocks()
    model = two_tower_model(config(epochs=4, valid_fraction=0.25, patience=1),
                            on_epoch=epoch_logger(uri, run_id)).fit(matrix)
    n_epochs = len(model.training_log["epochs"])  # early stopping, then the refit: steps run on across both
    assert [m.step for m in client.get_metric_history(run_id, "two_tower.loss")] == list(range(1, n_epochs + 1))
    recall = client.get_metric_history(run_id, "two_tower.valid_recall_at_20")
    assert len(recall) == n_epochs - model.training_log["best_epoch"] > 0


def test_log_q_loss_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    batch, extra, dim, n_items, temperature, strength = 5, 3, 4, 9, 0.5, 0.7
    users, candidates = rng.normal(size=(batch, dim)), rng.normal(size=(batch + extra, dim))
    items = np.array([1, 4, 1, 7, 2, 4, 8, 0])  # item 1 twice in the batch; 4 also among the extras
    p = rng.dirichlet(np.ones(n_items))
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    log_q = log_expected_counts(items, p, batch, extra)
    np.testing.assert_allclose(log_q, np.log(batch * p[items] + extra / n_items), rtol=1e-6)
    expected = 0.0
    for b in range(batch):
        logits = [users[b] @ candidates[j] / temperature - strength * log_q[j]
                  for j in range(batch + extra) if j == b or items[j] != items[b]]
        positive = users[b] @ candidates[b] / temperature - strength * log_q[b]
        expected += weights[b] * (np.log(np.sum(np.exp(logits))) - positive)
    expected /= weights.sum()
    got = sampled_softmax_loss(*(torch.tensor(x) for x in (users, candidates, items, log_q, weights)),
                               temperature, strength)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_log_q_is_the_expected_number_of_appearances():
    rng = np.random.default_rng(1)
    p, batch, extra, trials = np.array([0.5, 0.3, 0.15, 0.05]), 6, 2, 20000
    counts = np.zeros(4)
    for _ in range(trials):
        drawn = np.concatenate([rng.choice(4, batch, p=p), rng.integers(0, 4, extra)])
        counts += np.bincount(drawn, minlength=4)
    np.testing.assert_allclose(counts / trials, np.exp(log_expected_counts(np.arange(4), p, batch, extra)),
                               rtol=0.03)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.9), st.integers(1, 10))
def test_histories_exclude_the_target_and_sum_to_one(seed, dropout, max_len):
    rng = np.random.default_rng(seed)
    matrix = sp.random(12, 15, density=0.4, format="csr", random_state=seed % 1000, dtype=np.float32)
    users = rng.integers(0, 12, 20)
    targets = np.array([rng.choice(matrix[u].indices) if matrix[u].nnz else 0 for u in users])
    items, weights, owner = histories(matrix, users, targets, rng, dropout, max_len, exclude_target=1.0)
    assert not np.any(items == targets[owner])
    for b in np.unique(owner):
        assert set(items[owner == b]) <= set(matrix[users[b]].indices)
        assert weights[owner == b].sum() == pytest.approx(1.0, rel=1e-5)


def test_histories_keep_everything_without_dropout_or_exclusion():
    matrix, _ = blocks()
    users, targets = np.array([0, 13]), np.array([2, 14])
    items, _, owner = histories(matrix, users, targets, np.random.default_rng(0), 0.0, 1000, exclude_target=0.0)
    assert set(items[owner == 0]) == set(matrix[0].indices) and set(items[owner == 1]) == set(matrix[13].indices)


def test_holdout_partitions_and_leaves_every_user_an_item():
    matrix = sp.random(200, 50, density=0.1, format="csr", random_state=3, dtype=np.float32)
    matrix.data[:] = 1.0
    train, valid = holdout(matrix, 0.3, np.random.default_rng(0))
    assert (train + valid != matrix).nnz == 0 and train.multiply(valid).nnz == 0
    assert np.all(np.diff(train.indptr)[np.diff(matrix.indptr) > 0] > 0)
    assert valid.nnz / matrix.nnz == pytest.approx(0.3, abs=0.05)


def test_loss_weights_follow_the_event_weights():
    weights = loss_weights(np.array([1.0, 4.0, 16.0]), 0.5)
    np.testing.assert_allclose(weights / weights[0], [1.0, 2.0, 4.0])
    assert weights.mean() == pytest.approx(1.0)
    assert item_probabilities(sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]]))).tolist() == pytest.approx(
        [1 / 3, 2 / 3, 0.0])


def test_saved_trained_model_recommends_the_same(trained, tmp_path):
    model, matrix, _ = trained
    model.save(tmp_path / "m")
    loaded = TwoTowerRecommender.load(tmp_path / "m")
    rows = np.arange(matrix.shape[0])
    np.testing.assert_array_equal(loaded.recommend(rows, matrix, N=5)[0], model.recommend(rows, matrix, N=5)[0])
    assert loaded.training_log["epochs"][-1]["epoch"] == model.training_log["epochs"][-1]["epoch"]

"""The two-tower loop under `torchrun --nproc_per_node 2` (DDP, gloo, CPU): same weights on both ranks, and
held-out quality within noise of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from feed.metrics import evaluate
from feed.models.two_tower import TwoTowerRecommender
from tests.conftest import free_port

SETS = ["threads=1", "two_tower.dim=16", "two_tower.epochs=12", "two_tower.patience=3", "two_tower.batch_size=128",
        "two_tower.learning_rate=0.01", "two_tower.temperature=0.2", "two_tower.user_id=false"]


def clustered(n_users: int = 600, n_items: int = 300, clusters: int = 16, per_user: int = 16,
              seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, test): users pick 60 % of their items from their own cluster; 3 items per user held out."""
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, clusters, n_items)
    rows, cols = [], []
    for user in range(n_users):
        own = np.flatnonzero(item_cluster == user % clusters)
        picks = np.where(rng.random(per_user) < 0.6, rng.choice(own, per_user), rng.integers(0, n_items, per_user))
        picks = np.unique(picks)
        rows += [user] * len(picks)
        cols += picks.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    keys = rng.random(matrix.nnz)
    ranks = np.argsort(np.argsort(np.repeat(np.arange(n_users), np.diff(matrix.indptr)) + keys))
    test = (ranks - np.repeat(matrix.indptr[:-1], np.diff(matrix.indptr))) < 3  # each user's first 3 by key
    return _keep(matrix, ~test), _keep(matrix, test)


def _keep(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    coo = matrix.tocoo()
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape)


def train(folder: Path, matrix_path: Path, processes: int) -> Path:
    """Run training.two_tower_run with torchrun (2 processes) or plainly (1); returns its output folder."""
    out = folder / f"p{processes}"
    args = ["-m", "training.two_tower_run", str(matrix_path), str(out)] + [a for s in SETS for a in ("--set", s)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if processes > 1:
        torchrun = Path(sys.executable).with_name("torchrun")
        command = [str(torchrun), "--nproc_per_node", str(processes), "--master_port", str(free_port()), *args]
    else:
        command = [sys.executable, *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_processes_match_one_within_noise(tmp_path):
    matrix, test = clustered()
    sp.save_npz(tmp_path / "train.npz", matrix)
    recalls = {}
    for processes in (1, 2):
        out = train(tmp_path, tmp_path / "train.npz", processes)
        model = TwoTowerRecommender.load(out / "model")
        recalls[processes] = evaluate(model, matrix, test, (20,))["recall@20"]
        log = json.loads((out / "log.json").read_text())
        assert log["processes"] == processes
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
        assert all(r == ranks[0] for r in ranks), "ranks diverged: DDP did not keep the weights in sync"
    assert recalls[1] > 0.3  # popularity gets ~0.08 here, the model ~0.5: it learned the clusters
    assert abs(recalls[2] - recalls[1]) < 0.05, recalls

"""Training the two-tower model: in-batch sampled softmax with log-Q correction, early stopping on validation
recall, seeded, and unchanged under `torchrun` (DDP, gloo on CPU).

Each step takes `batch_size` (user, item) pairs; the batch's items (plus optional uniform negatives) are every
row's candidates, the logits are cosine / temperature − logq · log E[count of the item among the candidates],
and an example counts (its summed event weight) ** weight_power. With N processes each takes 1/N of every batch
(its own in-batch negatives) and DDP averages the gradients, so the optimizer steps are the same as with one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from feed.metrics import hit_matrix, ranking_metrics, relevant_counts
from feed.models.base import top_n
from feed.models.two_tower import (ItemFeatures, TwoTowerParams, TwoTowerRecommender, TwoTowerVectors, fold_in,
                                   network_vectors)
from training import ddp
from training.config import TrainConfig, TwoTowerConfig
from training.two_tower_batches import (Pairs, histories, holdout, item_probabilities, log_expected_counts,
                                        loss_weights)

EpochCallback = Callable[[dict[str, float]], None]
VALID_K = 20


def two_tower_model(config: TrainConfig, features: ItemFeatures | None = None,
                    on_epoch: EpochCallback | None = None) -> TwoTowerRecommender:
    """An unfitted two-tower model with its trainer, from the training config."""
    tt = config.two_tower
    params = TwoTowerParams(dim=tt.dim, user_id=tt.user_id, normalize=tt.normalize, repeat=tt.repeat)
    return TwoTowerRecommender(params, features, TwoTowerTrainer(tt, config.seed, config.threads, on_epoch))


def sampled_softmax_loss(users: Any, candidates: Any, candidate_items: Any, log_q: Any, weights: Any,
                         temperature: float, logq: float) -> Any:
    """Weighted mean cross-entropy of each row's positive (column b for row b) against every candidate.

    `users` (batch, dim), `candidates` (n_candidates ≥ batch, dim): the first `batch` candidates are the rows'
    positives. Other columns holding the same item as a row's positive are masked (accidental hits).
    """
    import torch
    import torch.nn.functional as F

    batch = users.shape[0]
    logits = users @ candidates.T / temperature - logq * log_q.unsqueeze(0)  # (batch, n_candidates)
    same = candidate_items.unsqueeze(0) == candidate_items[:batch].unsqueeze(1)
    same[torch.arange(batch), torch.arange(batch)] = False
    logits = logits.masked_fill(same, float("-inf"))
    losses = F.cross_entropy(logits, torch.arange(batch), reduction="none")  # (batch,)
    return (losses * weights).sum() / weights.sum()


class TwoTowerTrainer:
    """Fits a TwoTowerRecommender in place: hold out, train with early stopping, optionally refit on all."""

    def __init__(self, config: TwoTowerConfig, seed: int = 0, threads: int = 0,
                 on_epoch: EpochCallback | None = None) -> None:
        self.config, self.seed, self.threads, self.on_epoch = config, seed, threads, on_epoch
        self.phase_one: tuple[sp.csr_matrix, sp.csr_matrix, TwoTowerVectors] | None = None

    def train(self, model: TwoTowerRecommender, user_items: sp.csr_matrix, show_progress: bool) -> None:
        """Early-stop on a hold-out of each user's items, then (refit) retrain on everything that long."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        where, cfg = ddp.world(), self.config
        rng = np.random.default_rng(self.seed)
        log: dict[str, Any] = {"epochs": []}
        self.phase_one = None
        if cfg.valid_fraction > 0:
            train, valid = holdout(user_items, cfg.valid_fraction, rng)
            best_epoch = self._run(model, train, valid, cfg.epochs, where, show_progress, log)
            log.update(best_epoch=best_epoch, best_valid_recall=max(e["valid_recall@20"] for e in log["epochs"]))
            # the early-stopped network's vectors and its hold-out: the blend chooses its weight on them
            self.phase_one = (train, valid, network_vectors(model._network(), model.features))
        if cfg.valid_fraction == 0 or cfg.refit:
            epochs = cfg.epochs if cfg.valid_fraction == 0 else log["best_epoch"]
            self._run(model, user_items, None, epochs, where, show_progress, log)
        model.finalize(user_items)
        model.training_log = {**log, "processes": where.size}

    def _run(self, model: TwoTowerRecommender, train: sp.csr_matrix, valid: sp.csr_matrix | None, epochs: int,
             where: ddp.World, show_progress: bool, log: dict[str, Any]) -> int:
        """Train a fresh network for up to `epochs`; with `valid`, keep the best epoch's weights and return it."""
        import torch
        from rich.progress import Progress

        torch.manual_seed(self.seed)
        net = model.build(*train.shape)
        step = Step(ddp.wrap(net, where), train, self.config, self.seed, where)
        judge = Validation(train, valid, self.config, self.seed, where) if valid is not None else None
        best, best_epoch, best_state, waited = -1.0, epochs, None, 0
        with Progress(disable=not (show_progress and where.main), transient=True) as bars:
            task = bars.add_task("two-tower", total=epochs)
            for epoch in range(1, epochs + 1):
                record = {"epoch": float(epoch), "step": float(len(log["epochs"]) + 1),  # step: over both phases
                          "phase": "early-stopping" if judge else "refit", **step.epoch(epoch)}
                if judge is not None:
                    record["valid_recall@20"] = judge.recall(model)
                self._report(record, log, where)
                bars.update(task, advance=1, description=_describe(record))
                if judge is None:
                    continue
                if record["valid_recall@20"] > best + 1e-5:
                    best, best_epoch, waited = record["valid_recall@20"], epoch, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.config.patience:
                        break
        if best_state is not None:
            net.load_state_dict(best_state)
        return best_epoch

    def _report(self, record: dict[str, Any], log: dict[str, Any], where: ddp.World) -> None:
        """Keep the epoch's numbers and hand them to the callback (MLflow) on the main process."""
        log["epochs"].append(record)
        if self.on_epoch is not None and where.main:
            self.on_epoch({k: v for k, v in record.items() if isinstance(v, float)})


def _describe(record: dict[str, Any]) -> str:
    """The progress bar's text for an epoch."""
    valid = f" valid recall@20 {record['valid_recall@20']:.4f}" if "valid_recall@20" in record else ""
    return f"two-tower {record['phase']} epoch {int(record['epoch'])} loss {record['loss']:.4f}{valid}"


class Step:
    """One process's share of every batch: histories, candidates, loss, backward, optimizer steps."""

    def __init__(self, net: Any, train: sp.csr_matrix, config: TwoTowerConfig, seed: int, where: ddp.World) -> None:
        import torch

        self.net, self.train, self.config, self.seed, self.where = net, train, config, seed, where
        self.pairs = Pairs.of(train)
        self.weights = loss_weights(self.pairs.values, config.weight_power)  # (n_pairs,) aligned with pairs
        self.probabilities = item_probabilities(train)
        inner = getattr(net, "module", net)
        sparse = [inner.features.weight, inner.users.weight]
        self.optimizers = [torch.optim.SparseAdam(sparse, lr=config.learning_rate),
                           torch.optim.Adam(inner.history.parameters(), lr=config.learning_rate * 0.1)]

    def epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the shuffled pairs; returns the mean loss, seconds and examples per second."""
        rng = np.random.default_rng([self.seed, epoch, self.where.rank])
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))  # the same on every rank
        start, total, steps = time.perf_counter(), 0.0, 0
        self.net.train()
        size = self.config.batch_size
        for lo in range(0, len(order) - self.where.size + 1, size):
            chosen = order[lo:lo + size][self.where.rank::self.where.size]  # this process's share
            total += self._step(chosen, rng)
            steps += 1
        seconds = time.perf_counter() - start
        sums = ddp.all_sum([total, float(steps)], self.where)
        return {"loss": sums[0] / max(sums[1], 1.0), "seconds": seconds,
                "examples_per_s": len(order) / max(seconds, 1e-9)}

    def _step(self, chosen: np.ndarray, rng: np.random.Generator) -> float:
        """Forward, loss, backward and update for the pairs `chosen`; returns the loss."""
        import torch

        cfg, pairs = self.config, self.pairs
        users, targets = pairs.users[chosen], pairs.items[chosen]
        items, weights, owner = histories(self.train, users, targets, rng, cfg.history_dropout, cfg.history_max,
                                          cfg.exclude_target)
        extra = rng.integers(0, self.train.shape[1], cfg.uniform_negatives)
        candidates = np.concatenate([targets, extra])
        log_q = log_expected_counts(candidates, self.probabilities, len(chosen) * self.where.size,
                                    cfg.uniform_negatives)
        keep_id = (rng.random(len(users)) >= cfg.user_id_dropout).astype(np.float32)
        history = (torch.from_numpy(items), torch.from_numpy(weights), torch.from_numpy(owner))
        user_v, item_v = self.net(torch.from_numpy(users), torch.from_numpy(keep_id), history,
                                  torch.from_numpy(candidates))
        loss = sampled_softmax_loss(user_v, item_v, torch.from_numpy(candidates), torch.from_numpy(log_q),
                                    torch.from_numpy(self.weights[chosen]), cfg.temperature, cfg.logq)
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return float(loss.detach())


class Validation:
    """Recall@20 of held-out items for a seeded sample of users, training items masked; split over processes."""

    def __init__(self, train: sp.csr_matrix, valid: sp.csr_matrix, config: TwoTowerConfig, seed: int,
                 where: ddp.World) -> None:
        users = np.flatnonzero((relevant_counts(valid) > 0) & (np.diff(train.indptr) > 0))
        if len(users) > config.valid_users:
            users = np.sort(np.random.default_rng(seed).choice(users, config.valid_users, replace=False))
        self.users = users[where.rank::where.size]  # (this process's users,)
        self.train, self.valid, self.where = train, valid, where

    def recall(self, model: TwoTowerRecommender) -> float:
        """Mean Recall@20 over the sampled users (all processes together)."""
        vectors = network_vectors(model._network(), model.features)
        total = 0.0
        for lo in range(0, len(self.users), 1024):
            rows = self.users[lo:lo + 1024]
            scores = fold_in(vectors, self.train[rows], rows) @ vectors.items.T  # (batch, n_items)
            ids, _ = top_n(scores, VALID_K, self.train[rows])
            test = self.valid[rows]
            total += float(ranking_metrics(hit_matrix(ids, test), relevant_counts(test), (VALID_K,))
                           [f"recall@{VALID_K}"].sum())
        sums = ddp.all_sum([total, float(len(self.users))], self.where)
        return sums[0] / max(sums[1], 1.0)


def epoch_logger(tracking_uri: str, run_id: str, prefix: str = "two_tower.") -> EpochCallback:
    """A callback logging every epoch's numbers to an MLflow run; the step counts epochs across both phases."""
    import mlflow
    from mlflow.entities import Metric

    from training.tracking import mlflow_name

    client = mlflow.MlflowClient(tracking_uri)

    def log(record: dict[str, float]) -> None:
        step, ts = int(record["step"]), int(time.time() * 1000)
        metrics = [Metric(mlflow_name(prefix + k), float(v), ts, step) for k, v in record.items() if k != "step"]
        client.log_batch(run_id, metrics=metrics)

    return log

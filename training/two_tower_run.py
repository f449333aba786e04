"""Train a two-tower model on a saved matrix, in one process or under `torchrun` (DDP, gloo).

    torchrun --nproc_per_node 2 -m training.two_tower_run MATRIX.npz OUT [--set two_tower.dim=32 ...]

MATRIX.npz is a scipy sparse (n_users, n_items) matrix (`scipy.sparse.save_npz`). The main process writes the
model to OUT/model (model.pt + manifest.json) and the training log to OUT/log.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from training import ddp
from training.config import dotted, load_config
from training.two_tower import two_tower_model


def run(matrix_path: Path, out: Path, sets: dict[str, object]) -> dict[str, object]:
    """Train on the matrix; on the main process save the model and log; returns the training log."""
    config = load_config(overrides=dotted(sets), environ={})
    matrix = sp.load_npz(matrix_path).tocsr()
    model = two_tower_model(config).fit(matrix)
    where = ddp.world()
    items = model.export().items  # every process holds the same weights after DDP's averaged steps
    (out / f"rank{where.rank}.json").parent.mkdir(parents=True, exist_ok=True)
    (out / f"rank{where.rank}.json").write_text(json.dumps({"items_sum": float(np.abs(items).sum()),
                                                            "items_first": items[0].tolist()}))
    if where.main:
        model.save(out / "model")
        (out / "log.json").write_text(json.dumps(model.training_log, indent=2))
    ddp.finish(where)
    return model.training_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("matrix", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    import yaml

    sets = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.sets)}
    run(args.matrix, args.out, sets)


if __name__ == "__main__":
    main()

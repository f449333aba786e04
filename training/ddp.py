"""Distributed data parallel on CPU (gloo): the same training loop under `torchrun --nproc_per_node N`.

Outside torchrun every helper is a no-op for one process, so the loop never branches on how it was started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 prints, logs and writes."""
        return self.rank == 0


def world() -> World:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR …), or a world of one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def wrap(net: Any, where: World) -> Any:
    """The network wrapped in DistributedDataParallel (gradients averaged across processes), or as is."""
    if where.size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net)


def all_sum(values: list[float], where: World) -> list[float]:
    """Element-wise sums of the values over every process (the values themselves in a world of one)."""
    if where.size == 1:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def finish(where: World) -> None:
    """Leave the process group torchrun started us in."""
    import torch.distributed as dist

    if where.size > 1 and dist.is_initialized():
        dist.destroy_process_group()

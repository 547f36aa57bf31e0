"""Process-group set-up for torchrun: one process per GPU (or CPU worker).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (and
MASTER_ADDR/MASTER_PORT); with WORLD_SIZE > 1 :func:`setup` joins the group
(NCCL on CUDA, gloo on CPU). Without those variables everything is one plain
process and no launcher is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0               # global rank of this process
    world_size: int = 1         # number of processes
    local_rank: int = 0         # rank on this machine (selects the GPU)
    local_world_size: int = 1   # processes on this machine (shares the CPU cores)
    device: str = "cpu"         # this process's device
    owns_group: bool = False    # setup() created the process group (teardown destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def setup(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world if world > 1 else 1)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
        if world > 1 or device == "cuda":
            device = f"cuda:{local_rank}" if world > 1 else "cuda:0"
        torch.cuda.set_device(torch.device(device))
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo",
                                rank=rank, world_size=world)
        owns = True
    return DistInfo(rank, world, local_rank, local_world, device, owns)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def mean_across(info: DistInfo, value: float) -> float:
    """Mean of a float over all ranks (the value itself in one process)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64,
                     device=info.device if info.device.startswith("cuda") else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()

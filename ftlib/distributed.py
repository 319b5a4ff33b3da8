"""Wiring for more than one process: `torchrun` / `accelerate launch` start the processes, we only connect them.

Both launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_distributed` reads them.
The training loop itself needs no change: it normalises the loss by the global count of trained tokens, so N
processes with batch b reach the same loss as one process with batch N*b.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group if launched by torchrun/accelerate; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def wrap_model(model, device: torch.device, fsdp: bool = False):
    """DDP (replicate the model) or FSDP2 (shard it: for models that do not fit one GPU)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        return fully_shard(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard_sampler(dataset, shuffle: bool, seed: int) -> DistributedSampler | None:
    """Each process sees its own slice of every epoch; None when running as a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=True)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

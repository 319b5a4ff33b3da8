"""Wiring for more than one process: `torchrun` / `accelerate launch` start the processes, we only connect them.

Both launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_distributed` reads them.
The training loop itself needs no change: it normalises the loss by the global count of trained tokens, so N
processes with batch b reach the same loss as one process with batch N*b.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group if launched by torchrun/accelerate; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:  # a plain `python -m`: no process group
        # (under `torchrun --nproc_per_node 1` we still join one, so the launcher path runs as it will at N)
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not is_distributed():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def wrap_model(model, device: torch.device, fsdp: bool = False):
    """DDP (replicate the model) or FSDP2 (shard it: for models that do not fit one GPU)."""
    if not is_distributed():
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():  # each decoder layer is one unit: gathered just before it runs
            if type(module).__name__.endswith("DecoderLayer"):
                fully_shard(module)
        return fully_shard(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def is_distributed() -> bool:
    """True inside a process group (torchrun, accelerate, or ``init_distributed`` under a launcher)."""
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) for a plain single process."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def rank() -> int:
    return rank_world()[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over processes (float64; on the GPU for NCCL); the values themselves when alone."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_reduce_min(value: int) -> int:
    if not is_distributed():
        return value
    t = torch.tensor([value], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


class RankSlice:
    """Each process takes its block of rows from every *global* batch of a loader.

    All processes build the same loader (same seed, global batch = per-process batch x world size), so together
    they see exactly the batches a single process would: N processes then reproduce a one-process run."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):  # generator, sampler, batch_sampler: the training loop reseeds them per epoch
        return getattr(self.loader, name)

    def __iter__(self):
        for batch in self.loader:
            rows = next(v for v in batch.values() if hasattr(v, "shape")).shape[0]
            if rows % self.world:
                raise ValueError(f"a batch of {rows} rows cannot be split over {self.world} processes; "
                                 "use a batch size and dataset size divisible by the number of processes")
            per = rows // self.world
            yield {k: v[self.rank * per:(self.rank + 1) * per] if hasattr(v, "shape") else v
                   for k, v in batch.items()}

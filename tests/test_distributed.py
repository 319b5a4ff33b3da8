"""Two CPU processes (gloo) reach the same losses as one process with the same global batch."""
import json
import os
import socket
from unittest import mock

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from ftlib.distributed import cleanup, init_distributed, shard_sampler, wrap_model
from ftlib.testing import tiny_llama
from ftlib.train import TrainConfig, train

VOCAB = 64


def _samples():
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(16):
        n = 8 + i % 5  # unequal trained-token counts: per-process means would differ from the global mean
        ids = torch.randint(3, VOCAB, (12,), generator=g)
        labels = ids.clone()
        labels[: 12 - n] = -100
        rows.append({"input_ids": ids, "attention_mask": torch.ones(12, dtype=torch.long), "labels": labels})
    return rows


def _collate(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _run(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _, _, device = init_distributed()
    data = _samples()
    sampler = shard_sampler(data, shuffle=False, seed=0)
    loader = DataLoader(data, batch_size=4 // world, sampler=sampler, shuffle=False, collate_fn=_collate)
    model = wrap_model(tiny_llama(vocab_size=VOCAB, seed=0, max_positions=64).train(), device)
    result = train(model, loader, TrainConfig(output_dir=f"{out}/r{world}", max_steps=4, learning_rate=3e-3,
                                              progress=False))
    if rank == 0:
        with open(f"{out}/losses{world}.json", "w") as f:
            json.dump([r["loss"] for r in result.history], f)
    cleanup()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_processes_match_one(tmp_path):
    with mock.patch.dict(os.environ):
        _run(0, 1, _free_port(), tmp_path)  # one process, batch 4
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)  # two processes, batch 2 each
    one = json.loads((tmp_path / "losses1.json").read_text())
    two = json.loads((tmp_path / "losses2.json").read_text())
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, abs=1e-5)
    assert one[-1] < one[0]

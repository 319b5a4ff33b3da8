"""Two CPU processes (gloo) reach the same losses as one process with the same global batch: DDP and FSDP2.

FSDP2 also checks the sharded save/load paths: checkpoints gathered from the shards equal the one-process
checkpoint, a sharded run resumes exactly, and ``save_finetuned`` writes a directory ``from_pretrained`` loads."""
import json
import os
import shutil
import socket
from unittest import mock

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from ftlib.checkpoint import is_sharded, latest_checkpoint, load_weights, save_finetuned
from ftlib.distributed import RankSlice, cleanup, init_distributed, wrap_model
from ftlib.models import load_tokenizer
from ftlib.tiny import tiny_llama
from ftlib.train import TrainConfig, train

pytestmark = pytest.mark.slow  # the unit-slow job of `make test` (subprocesses, real models, minutes)

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


def _run(rank, world, port, out, fsdp=False, tag=None, steps=4, resume=False, schedule="cosine", save_every=0):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _, _, device = init_distributed()
    tag = tag or str(world)
    # every process iterates the same global batches of 4 and trains on its block of rows (as the CLI does)
    loader = DataLoader(_samples(), batch_size=4, shuffle=False, collate_fn=_collate)
    loader = RankSlice(loader, rank, world) if world > 1 else loader
    model = wrap_model(tiny_llama(vocab_size=VOCAB, seed=0, max_positions=64).train(), device, fsdp=fsdp)
    assert is_sharded(model) == (fsdp and world > 1)
    config = TrainConfig(output_dir=f"{out}/run-{tag}", max_steps=steps, learning_rate=3e-3, schedule=schedule,
                         progress=False, bf16=False,  # fp32: N processes must equal one to float rounding
                         resume_force=resume, save_every=save_every)
    result = train(model, loader, config)
    if fsdp:
        save_finetuned(model, load_tokenizer("instruct"), f"{out}/final-{tag}")
    if rank == 0:
        with open(f"{out}/losses-{tag}.json", "w") as f:
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
    one = json.loads((tmp_path / "losses-1.json").read_text())
    two = json.loads((tmp_path / "losses-2.json").read_text())
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, abs=1e-5)
    assert one[-1] < one[0]


def _losses(path, tag):
    return json.loads((path / f"losses-{tag}.json").read_text())


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_fsdp_two_processes_match_one_and_save_and_resume(tmp_path):
    with mock.patch.dict(os.environ):
        # the reference: one process, batch 4; a constant learning rate, so that a 2-step run is the start of it
        _run(0, 1, _free_port(), tmp_path, tag="one", schedule="constant")
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path), True, "fsdp", 4, False, "constant", 2), nprocs=2, join=True)
    assert _losses(tmp_path, "fsdp") == pytest.approx(_losses(tmp_path, "one"), abs=1e-5)
    # the checkpoint gathered from the two shards holds the one-process weights
    ref, got = tiny_llama(vocab_size=VOCAB, seed=1), tiny_llama(vocab_size=VOCAB, seed=2)
    load_weights(latest_checkpoint(tmp_path / "run-one"), ref)
    load_weights(latest_checkpoint(tmp_path / "run-fsdp"), got)
    # the saved model directory is a plain Hugging Face model with those weights
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "final-fsdp")
    fresh = tiny_llama(vocab_size=VOCAB, seed=0).state_dict()
    for name, want in ref.state_dict().items():
        assert not torch.allclose(want, fresh[name]) or "norm" in name, f"{name} was not trained"
        torch.testing.assert_close(got.state_dict()[name], want, atol=1e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(plain.state_dict()[name], want, atol=1e-5, rtol=1e-4, msg=name)
    # a sharded run stopped after 2 steps resumes (sharded) into the same last 2 losses: what such a run leaves is
    # the checkpoint the run above wrote at step 2 (copied: a third pair of processes would test nothing more)
    shutil.copytree(tmp_path / "run-fsdp" / "checkpoint-2", tmp_path / "run-cut" / "checkpoint-2")
    (tmp_path / "run-cut" / "latest").write_text("checkpoint-2")
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path), True, "cut", 4, True, "constant"), nprocs=2, join=True)
    assert _losses(tmp_path, "cut") == pytest.approx(_losses(tmp_path, "one")[2:], abs=1e-5)

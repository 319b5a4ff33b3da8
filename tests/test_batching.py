"""Batches: padding masked by position, length grouping, and packing that equals running samples one by one."""
import datasets
import pytest
import torch
import torch.nn.functional as F

from ftlib.batching import (
    LengthGroupedBatchSampler,
    PackingCollator,
    PaddingCollator,
    RandomBatchSampler,
    make_dataloader,
    pack_groups,
)
from ftlib.course.stats import batch_widths, compare_strategies, real_token_fraction
from ftlib.samples import IGNORE_INDEX, tokenise_dataset
from ftlib.tiny import tiny_llama_for

datasets.disable_progress_bars()
PAD = 2  # SmolLM2: pad == eos == 2

RECORDS = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Blue."},
    {"instruction": "Find the verb.", "input": "John walks to school.", "output": "walks"},
    {"instruction": "Write a haiku about tea.", "input": "", "output": "Steam curls from the cup\nquiet leaves unfold"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
]


@pytest.fixture(scope="module")
def samples(tokenizer):
    out, _ = tokenise_dataset(datasets.Dataset.from_list(RECORDS), tokenizer)
    return out


def test_dynamic_padding_exact():
    a = {"input_ids": [5, 6, 2], "labels": [-100, 6, 2]}
    b = {"input_ids": [7, 8, 9, 10, 2], "labels": [-100, -100, 9, 10, 2]}
    batch = PaddingCollator(PAD)([a, b])
    assert batch["input_ids"].tolist() == [[5, 6, 2, 2, 2], [7, 8, 9, 10, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 2, -100, -100], [-100, -100, 9, 10, 2]]  # EOS kept, pads masked
    fixed = PaddingCollator(PAD, pad_to=8)([a])
    assert fixed["input_ids"].shape == (1, 8) and fixed["labels"][0, 3:].eq(IGNORE_INDEX).all()
    assert PaddingCollator(PAD, pad_to_multiple_of=4)([a])["input_ids"].shape == (1, 4)
    with pytest.raises(ValueError, match="max_length=4"):
        PaddingCollator(PAD, pad_to=4)([b])


def test_packing_row_exact():
    a = {"input_ids": [5, 6, 2], "labels": [5, 6, 2]}
    b = {"input_ids": [7, 8], "labels": [-100, 8]}
    batch = PackingCollator(PAD, max_length=8, attention="position_ids")([[a, b], [b]])
    assert batch["input_ids"].tolist() == [[5, 6, 2, 7, 8], [7, 8, 2, 2, 2]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    # each sample's first label is masked: it would be predicted from the previous sample's last token
    assert batch["labels"].tolist() == [[-100, 6, 2, -100, 8], [-100, 8, -100, -100, -100]]
    assert batch["use_cache"] is False and "attention_mask" not in batch
    mask = PackingCollator(PAD, max_length=8)([[a, b]])["attention_mask"]
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]


def per_token_losses(model, batch):
    """Cross-entropy of every trained token (HF shift), in row order."""
    with torch.no_grad():
        logits = model(**batch).logits
    labels = batch["labels"][:, 1:]
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return losses[labels != IGNORE_INDEX]


@pytest.mark.parametrize("attention", ["mask", "position_ids"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_row_equals_samples_one_by_one(tokenizer, samples, attention, impl):
    model = tiny_llama_for(tokenizer, attn_implementation=impl)
    rows = [dict(input_ids=s["input_ids"], labels=s["labels"]) for s in samples]
    alone = torch.cat([per_token_losses(model, PaddingCollator(PAD)([r])) for r in rows])
    packed = PackingCollator(PAD, max_length=1024, attention=attention)
    batch = packed([rows[:3], rows[3:]])  # two rows of different lengths: the second is padded
    assert torch.allclose(per_token_losses(model, batch), alone, atol=1e-5)
    with torch.no_grad():  # and the model's own (mean) loss agrees
        assert abs(model(**batch).loss.item() - alone.mean().item()) < 1e-5


def test_position_ids_alone_leak_when_cache_is_on(tokenizer, samples):
    """Why packed batches carry use_cache=False: transformers 5.23 skips packed-sequence detection with a cache."""
    model = tiny_llama_for(tokenizer)
    rows = [dict(input_ids=s["input_ids"], labels=s["labels"]) for s in samples]
    alone = torch.cat([per_token_losses(model, PaddingCollator(PAD)([r])) for r in rows[:2]])
    batch = PackingCollator(PAD, max_length=1024, attention="position_ids")([rows[:2]])
    del batch["use_cache"]
    assert not torch.allclose(per_token_losses(model, batch), alone, atol=1e-3)


def test_pack_groups_fit_and_cover():
    lengths = [700, 300, 20, 1000, 512, 512, 5, 999, 1]
    groups = pack_groups(lengths, 1024)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in g) <= 1024 for g in groups)
    assert len(groups) == 4 and groups == pack_groups(lengths, 1024)
    with pytest.raises(ValueError, match="max_length=512"):
        pack_groups([600], 512)


def test_length_grouped_sampler():
    lengths = list(torch.randint(1, 500, (200,), generator=torch.Generator().manual_seed(0)))
    lengths = [int(n) for n in lengths]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=3, mega_batch_mult=5)
    epoch1 = list(sampler)
    sampler.set_epoch(1)
    epoch2 = list(sampler)
    assert sorted(i for b in epoch1 for i in b) == list(range(200)) and len(epoch1) == len(sampler) == 25
    assert epoch1 != epoch2 and epoch1 == list(LengthGroupedBatchSampler(lengths, 8, seed=3, mega_batch_mult=5))
    assert max(lengths) in [lengths[i] for i in epoch1[0]]  # longest batch first
    grouped = real_token_fraction(lengths, "dynamic", 8)
    assert grouped > real_token_fraction(lengths, "dynamic", 8, group_by_length=False) and grouped > 0.9


@pytest.mark.parametrize("strategy", ["pad", "dynamic", "packed"])
def test_make_dataloader_covers_every_sample_and_runs(tokenizer, samples, strategy):
    model = tiny_llama_for(tokenizer)
    loader = make_dataloader(samples, strategy, batch_size=2, max_length=64, shuffle=True, seed=0,
                             pad_token_id=tokenizer.pad_token_id)
    batches = list(loader)
    trained = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
    # packing masks each sample's first label; here those are prompt tokens, already -100
    assert trained == sum(sum(t != IGNORE_INDEX for t in s["labels"]) for s in samples)
    widths = [(b["input_ids"].shape[0], b["input_ids"].shape[1]) for b in batches]
    assert sorted(widths) == sorted(batch_widths(samples["length"], strategy, 2, 64))  # stats match reality
    with torch.no_grad():
        assert torch.isfinite(model(**batches[0]).loss)


def _epoch(loader, epoch):
    loader.batch_sampler.set_epoch(epoch)
    return [b["input_ids"] for b in loader]


@pytest.mark.parametrize("strategy", ["pad", "dynamic", "packed"])
def test_epoch_order_depends_only_on_seed_and_epoch(strategy):
    """The resume contract: after set_epoch(e) a loader yields epoch e's batches, whatever it yielded before."""
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 100, (int(n),), generator=g).tolist() for n in torch.randint(3, 20, (40,), generator=g)]
    data = {"input_ids": ids, "labels": ids}

    def fresh():
        return make_dataloader(data, strategy, batch_size=2, max_length=32, seed=7, pad_token_id=PAD)

    used = fresh()
    for epoch in (0, 0, 1, 3):  # iterate some epochs, one of them twice
        _epoch(used, epoch)
    after, alone = _epoch(used, 2), _epoch(fresh(), 2)
    assert len(after) == len(alone) and all(torch.equal(a, b) for a, b in zip(after, alone))
    zero, one = _epoch(fresh(), 0), _epoch(fresh(), 1)
    assert len(zero) == len(one) and not all(torch.equal(a, b) for a, b in zip(zero, one))
    still = make_dataloader(data, strategy, batch_size=2, max_length=32, shuffle=False, pad_token_id=PAD)
    assert all(torch.equal(a, b) for a, b in zip(_epoch(still, 0), _epoch(still, 1)))  # no shuffle: one order


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_random_batches_match_torchs_shuffling_dataloader(epoch):
    """pad/packed batches are those of DataLoader(shuffle=True) reseeded each epoch, as before set_epoch existed."""
    from torch.utils.data import DataLoader

    torchs = DataLoader(range(23), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5 + epoch))
    sampler = RandomBatchSampler(23, 4, seed=5)
    sampler.set_epoch(epoch)
    assert list(sampler) == [b.tolist() for b in torchs] and len(sampler) == len(torchs) == 6


def test_make_dataloader_rejects_overlong_and_unknown(samples):
    with pytest.raises(ValueError, match="max_length=8"):
        make_dataloader(samples, "dynamic", 2, max_length=8)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_dataloader(samples, "bucket", 2, max_length=64)


def test_compare_strategies_orders_waste():
    fractions = compare_strategies([100, 200, 50, 400, 120, 80, 300, 60], batch_size=2, max_length=512)
    assert fractions["pad-to-512"] == pytest.approx(1310 / (8 * 512))
    assert fractions["packed"] > fractions["dynamic+grouped"] >= fractions["dynamic"] > fractions["pad-to-512"]


def test_length_statistics():
    from ftlib.course.stats import length_stats, overlong_counts, trained_fraction

    s = length_stats([10, 20, 30, 40, 1000])
    assert (s["count"], s["mean"], s["median"], s["max"]) == (5, 220.0, 30.0, 1000)
    assert overlong_counts([10, 300, 600, 1100], (256, 512, 1024)) == {256: 3, 512: 2, 1024: 1}
    assert trained_fraction([[-100, 5, 2], [-100, -100, -100, 7]]) == pytest.approx(3 / 7)

"""Batches of tokenised samples, ready for ``model(**batch)``: pad-to-N, dynamic padding, and packing.

Every batch is a dict of ``torch.long`` tensors with ``input_ids`` and ``labels`` (Hugging Face convention: not
shifted, -100 where nothing is trained — the model shifts) plus:

* ``"pad"`` / ``"dynamic"``: ``attention_mask`` (1 = real token). Padding goes on the right and is masked in the
  labels **by position**: the pad id may equal the EOS id (SmolLM2), so "label == pad id" must never mean padding.
* ``"packed"``: several samples share one row. ``position_ids`` restart at 0 for every sample, the first label of
  every sample is -100 (otherwise it would be "predicted" from the previous sample's last token), and attention
  stays inside each sample, by one of two routes (``attention=``):

  - ``"mask"`` (default): an explicit 4D additive mask ``(batch, 1, L, L)``, 0 where a token may attend and the
    dtype's minimum elsewhere — block-diagonal causal. Works with the ``eager`` and ``sdpa`` attention of
    transformers 5.23. It must be a float mask: eager *adds* the mask, so a boolean one is silently wrong.
  - ``"position_ids"``: no attention mask; transformers infers the sample boundaries from the position ids
    (sdpa/eager via ``masking_utils.find_packed_sequence_indices``, flash-attention via its varlen path). In
    transformers 5.23 that detection is skipped whenever a KV cache exists, and ``use_cache`` defaults to True
    even in training, so these batches also carry ``use_cache=False``; without it the samples see each other.

Epochs, and why a resumed run sees the same batches: every loader ``make_dataloader`` builds takes its batches
from an :class:`EpochBatchSampler`, whose batches are a pure function of ``(seed, epoch)``. ``set_epoch(epoch)``
picks the epoch; iterating changes nothing, so iterating twice without ``set_epoch`` gives the same batches
twice. The training loop calls ``set_epoch`` before every epoch, the one a resumed run starts in included (as
with torch's ``DistributedSampler``); a loop of your own must do the same to get a new shuffle each epoch.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ftlib.schema import IGNORE_INDEX

Strategy = Literal["pad", "dynamic", "packed"]


def _check_fits(length: int, max_length: int | None) -> None:
    if max_length is not None and length > max_length:
        raise ValueError(f"a sample has {length} tokens, more than max_length={max_length}; tokenise with "
                         "max_length (overlong='drop' or 'truncate') instead of cutting samples here")


class PaddingCollator:
    """Right-pads samples to the longest in the batch (dynamic) or to ``pad_to`` tokens (the article's pad-to-N)."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None, pad_to_multiple_of: int | None = None):
        self.pad_token_id, self.pad_to, self.multiple = pad_token_id, pad_to, pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        for n in lengths:
            _check_fits(n, self.pad_to)
        width = self.pad_to or max(lengths)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, (f, n) in enumerate(zip(features, lengths)):
            ids[row, :n] = torch.tensor(f["input_ids"])
            labels[row, :n] = torch.tensor(f["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def block_causal_mask(segments: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(batch, 1, L, L)`` additive mask from per-token sample ids ``(batch, L)``: causal within a sample only."""
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


class PackingCollator:
    """Packs each *group* of samples into one row (see the module docstring for the attention routes)."""

    def __init__(self, pad_token_id: int, max_length: int, attention: Literal["mask", "position_ids"] = "mask",
                 mask_dtype: torch.dtype = torch.float32):
        if attention not in ("mask", "position_ids"):
            raise ValueError("attention must be 'mask' (explicit 4D mask) or 'position_ids'")
        self.pad_token_id, self.max_length, self.attention, self.mask_dtype = (
            pad_token_id, max_length, attention, mask_dtype)

    def __call__(self, groups: Sequence[Sequence[dict]]) -> dict[str, torch.Tensor]:
        rows = []
        for group in groups:
            ids, labels, positions, segments = [], [], [], []
            for k, f in enumerate(group):
                n = len(f["input_ids"])
                ids += f["input_ids"]
                labels += [IGNORE_INDEX] + list(f["labels"][1:])
                positions += range(n)
                segments += [k] * n
            _check_fits(len(ids), self.max_length)
            rows.append((ids, labels, positions, segments))
        width = max(len(r[0]) for r in rows)
        out = {key: torch.full((len(rows), width), fill, dtype=torch.long)
               for key, fill in (("input_ids", self.pad_token_id), ("labels", IGNORE_INDEX),
                                 ("position_ids", 0), ("segments", -1))}
        for row, (ids, labels, positions, segments) in enumerate(rows):
            n = len(ids)
            out["input_ids"][row, :n] = torch.tensor(ids)
            out["labels"][row, :n] = torch.tensor(labels)
            out["position_ids"][row, :n] = torch.tensor(positions)
            out["position_ids"][row, n:] = torch.arange(width - n)  # the padding is one more (ignored) sample
            out["segments"][row, :n] = torch.tensor(segments)
        segments = out.pop("segments")
        if self.attention == "mask":
            out["attention_mask"] = block_causal_mask(segments, self.mask_dtype)
        else:
            out["use_cache"] = False
        return out


def pack_groups(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Best-fit-decreasing bins of sample indices, each totalling at most ``max_length`` tokens (deterministic)."""
    for n in lengths:
        _check_fits(n, max_length)
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (space left, bin number)
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        k = bisect.bisect_left(free, (lengths[i], -1))
        if k == len(free):
            bins.append([i])
            space, b = max_length - lengths[i], len(bins) - 1
        else:
            space, b = free.pop(k)
            bins[b].append(i)
            space -= lengths[i]
        bisect.insort(free, (space, b))
    return bins


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices that depend only on ``(seed, epoch)``: the contract that makes resuming exact.

    There is no hidden epoch counter: a run resumed in its third epoch calls ``set_epoch(2)`` and gets the third
    epoch's batches, although this process never iterated the first two. Subclasses build an epoch's batches in
    ``__iter__`` from :meth:`generator` only.
    """

    def __init__(self, seed: int = 0):
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        """A fresh generator for the current epoch (``seed + epoch``, the convention of earlier ftlib runs)."""
        return torch.Generator().manual_seed(self.seed + self.epoch)


class RandomBatchSampler(EpochBatchSampler):
    """Batches of ``batch_size`` indices, shuffled each epoch (``shuffle``) or in order; the last may be short.

    The order equals torch's ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed + epoch))``,
    which ftlib used before samplers had ``set_epoch``, so earlier runs keep their batches.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0):
        super().__init__(seed)
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = self.generator()
            torch.empty((), dtype=torch.int64).random_(generator=g)  # the worker seed that DataLoader draws first
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for start in range(0, self.n, self.batch_size):
            yield order[start:start + self.batch_size]


class LengthGroupedBatchSampler(EpochBatchSampler):
    """Batches of similar length: shuffle, cut into mega-batches, sort each by length, cut into batches.

    Less padding than random batches while keeping the order random; the batch holding the longest sample comes
    first, so an out-of-memory error shows up on step one. Each epoch has its own shuffle (see ``set_epoch``).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 mega_batch_mult: int = 50):
        super().__init__(seed)
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.mega = batch_size * mega_batch_mult

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = self.generator()
        order = torch.randperm(len(self.lengths), generator=g).tolist() if self.shuffle else list(
            range(len(self.lengths)))
        batches = []
        for start in range(0, len(order), self.mega):
            mega = sorted(order[start:start + self.mega], key=lambda i: -self.lengths[i])
            batches += [mega[k:k + self.batch_size] for k in range(0, len(mega), self.batch_size)]
        if self.shuffle:
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            rest = [batches[b] for b in torch.randperm(len(batches), generator=g).tolist() if b != longest]
            batches = [batches[longest]] + rest
        yield from batches


class _Rows(Dataset):
    """Plain-list view of a tokenised dataset (only the columns batches need) or of packed groups of it."""

    def __init__(self, ids: list, labels: list, groups: list[list[int]] | None = None):
        self.ids, self.labels, self.groups = ids, labels, groups

    def __len__(self) -> int:
        return len(self.groups) if self.groups is not None else len(self.ids)

    def _sample(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}

    def __getitem__(self, i: int):
        return [self._sample(j) for j in self.groups[i]] if self.groups is not None else self._sample(i)


def make_dataloader(tokenised, strategy: Strategy, batch_size: int, max_length: int | None = None, *,
                    shuffle: bool = True, seed: int = 0, pad_token_id: int = 0, group_by_length: bool = True,
                    attention: Literal["mask", "position_ids"] = "mask",
                    mask_dtype: torch.dtype = torch.float32) -> DataLoader:
    """A ``DataLoader`` over a tokenised dataset (``input_ids``/``labels`` columns) with one batching strategy.

    ``"pad"``: every row ``max_length`` long (the article's way); ``"dynamic"``: padded to the batch's longest
    sample, length-grouped batches if ``group_by_length``; ``"packed"``: ``batch_size`` rows of up to ``max_length``
    tokens, each holding several whole samples. Samples longer than ``max_length`` raise (tokenise with a limit).
    Its ``batch_sampler`` is an :class:`EpochBatchSampler`: call ``loader.batch_sampler.set_epoch(e)`` before
    epoch ``e`` (``ftlib.train`` does).
    """
    columns = tokenised if isinstance(tokenised, dict) else tokenised.select_columns(["input_ids", "labels"])[:]
    ids, labels = list(columns["input_ids"]), list(columns["labels"])
    lengths = [len(x) for x in ids]
    if strategy == "pad":
        if max_length is None:
            raise ValueError("strategy 'pad' needs max_length (the fixed row length)")
        rows, collate = _Rows(ids, labels), PaddingCollator(pad_token_id, pad_to=max_length)
        sampler: EpochBatchSampler = RandomBatchSampler(len(rows), batch_size, shuffle, seed)
    elif strategy == "dynamic":
        for n in lengths:
            _check_fits(n, max_length)
        rows, collate = _Rows(ids, labels), PaddingCollator(pad_token_id)
        sampler = (LengthGroupedBatchSampler(lengths, batch_size, shuffle, seed) if group_by_length
                   else RandomBatchSampler(len(rows), batch_size, shuffle, seed))
    elif strategy == "packed":
        if max_length is None:
            raise ValueError("strategy 'packed' needs max_length (the row length samples are packed into)")
        rows = _Rows(ids, labels, pack_groups(lengths, max_length))
        collate = PackingCollator(pad_token_id, max_length, attention, mask_dtype)
        sampler = RandomBatchSampler(len(rows), batch_size, shuffle, seed)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose 'pad', 'dynamic' or 'packed'")
    # a generator of its own: otherwise every iter(loader) draws a worker seed from the global RNG
    return DataLoader(rows, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator().manual_seed(seed))

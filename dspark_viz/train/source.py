"""Training data as the loop sees it: sources, their seeded order, anchors, the draft vocabulary.

Scope: the ``Source`` protocol (cheap ``tokens(i)``, full ``item(i)`` with taps and final
states) and its three kinds — a target cache (``CacheSource``), several of them in order
(``ConcatSource``) and online regeneration, where the target runs when an item is used
(``OnlineSource``); the infinite epoch-permuted stream (``DataOrder``) and the per-(seed, step,
sample) anchor generator (``anchor_gen``), so the data a step sees depends on nothing else; and
the frequency-ranked restricted draft vocabulary of a source (``build_draft_vocab``).
Not here: anchor geometry (``anchors.py``), the target pass (``data.cache``).
"""
from __future__ import annotations

import bisect
from typing import Protocol

import torch

from dspark_viz.data.cache import compute_item
from dspark_viz.data.corpus import draft_vocab_from_counts
from dspark_viz.data.regenerate import loss_mask_of
from dspark_viz.train.config import TrainError

SEED_MOD = 1 << 64  # torch generators take seeds below 2⁶⁴; derived seeds are reduced (unchanged below it)


class Source(Protocol):
    def __len__(self) -> int: ...

    def tokens(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [T], loss_mask [T]) — cheap, no target pass."""

    def item(self, i: int):
        """A ``CacheItem`` with taps and final hidden states."""


class CacheSource:
    """A ``data.cache.TargetCache`` as a source."""

    def __init__(self, cache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def tokens(self, i):
        return self.cache.tokens(i)

    def item(self, i):
        return self.cache[i]


class OnlineSource:
    """Regenerated samples; the target computes taps and final states when an item is used."""

    def __init__(self, samples: list[dict], target, layer_ids: tuple[int, ...], max_len: int) -> None:
        self.target, self.layer_ids = target, tuple(layer_ids)
        for i, s in enumerate(samples):  # ids outside the vocabulary would fail mid-run
            if not all(isinstance(t, int) and 0 <= t < target.vocab_size for t in s["input_ids"]):
                raise TrainError(f"sample {str(s.get('id', i))[:60]!r} holds token ids outside the "
                                 f"target vocabulary of {target.vocab_size}")
        self.rows = [(str(s["id"]), torch.tensor(s["input_ids"][:max_len]),
                      torch.tensor(loss_mask_of(s)[:max_len]).bool()) for s in samples]

    def __len__(self) -> int:
        return len(self.rows)

    def tokens(self, i):
        return self.rows[i][1], self.rows[i][2]

    def item(self, i):
        sid, ids, m = self.rows[i]
        with torch.inference_mode():
            it = compute_item(self.target, sid, ids.tolist(), m.tolist(), self.layer_ids)
        it.taps, it.last = it.taps.clone().float(), it.last.clone().float()
        return it


class ConcatSource:
    """Several sources (e.g. caches written in parallel) seen as one, in order."""

    def __init__(self, sources: list) -> None:
        self.sources = list(sources)
        self.offsets = []
        n = 0
        for s in self.sources:
            self.offsets.append(n)
            n += len(s)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def _loc(self, i: int):
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.sources[k], i - self.offsets[k]

    def tokens(self, i):
        s, j = self._loc(i)
        return s.tokens(j)

    def item(self, i):
        s, j = self._loc(i)
        return s.item(j)


class DataOrder:
    """Epoch permutations, cached; position p of the infinite stream → dataset index."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self._perm = n, seed, {}

    def __call__(self, p: int) -> int:
        epoch, r = divmod(p, self.n)
        if epoch not in self._perm:
            g = torch.Generator().manual_seed((self.seed * 7919 + epoch) % SEED_MOD)
            self._perm = {epoch: torch.randperm(self.n, generator=g)}
        return int(self._perm[epoch][r])


def anchor_gen(seed: int, step: int, i: int) -> torch.Generator:
    """The generator of the anchors of the i-th sequence of global step ``step``."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 100_003 + i) % SEED_MOD)


def build_draft_vocab(source: Source, size: int, target) -> list[int]:
    """The ``size`` most frequent target ids over the loss regions of ``source`` (the tokens
    the drafter must predict), plus the target's end tokens; deterministic (ties by id)."""
    lists = []
    for i in range(len(source)):
        ids, m = source.tokens(i)
        lists.append(ids[m.bool()].tolist())
    return draft_vocab_from_counts(lists, size, target.vocab_size, always=tuple(target.eos_ids))

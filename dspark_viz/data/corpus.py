"""Target-scored corpus samples: prompt texts tokenised as training samples (no generation).

Scope: turn prompt records (``prompts.read_jsonl`` — e.g. the built-in offline sources) into
samples in the regenerated-sample layout (``id``, ``input_ids``, ``loss_spans``, ``source``)
so that ``prepare cache`` can score them with one target pass each. The whole raw text is the
loss region (from its second token: the first has no context); the TV term then teaches the
drafter the *target's* distribution at every position of real text, which costs one forward
per sample instead of autoregressive generation (≈ 37 vs ≈ 4 tokens/s on the 2-core CPU of
bench/results_toolchain.md). Long texts are cut into windows of ``max_tokens``.
Also: ``draft_vocab_from_counts`` — a deterministic frequency-ranked restricted draft vocabulary.
Not here: the target pass (``cache.py``).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from dspark_viz.data.sources import Prompt
from dspark_viz.io import atomic_path


def corpus_samples(prompts: Sequence[Prompt], encode, *, max_tokens: int = 512,
                   min_tokens: int = 8) -> list[dict]:
    """prompts → samples; ``encode(text) -> ids`` (the target tokenizer, special tokens added).

    A text longer than ``max_tokens`` becomes several windows (``id#k``), each starting with
    the first token of the encoding (BOS for Gemma) so every window looks like a document
    start; windows shorter than ``min_tokens`` are dropped.
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be ≥ 2, got {max_tokens}")
    out = []
    for p in prompts:
        ids = [int(i) for i in encode(p.raw_text())]
        if not ids:
            continue
        head, body = ids[:1], ids[1:]
        step = max_tokens - 1
        for k, s in enumerate(range(0, max(1, len(body)), step)):
            win = head + body[s: s + step]
            if len(win) < min_tokens:
                continue
            out.append({"id": p.id if k == 0 else f"{p.id}#{k}", "source": p.source,
                        "input_ids": win, "loss_spans": [[1, len(win)]]})
    return out


def write_samples(path: str | os.PathLike, samples: Iterable[dict]) -> int:
    """Write samples as JSONL atomically; returns the number of records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_path(path) as tmp, tmp.open("w") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")
            n += 1
    return n


def draft_vocab_from_counts(token_lists: Iterable[Sequence[int]], size: int, vocab_size: int,
                            always: Sequence[int] = ()) -> list[int]:
    """The ``size`` most frequent ids (ties: smaller id first) plus ``always`` (EOS, newline…),
    sorted. Deterministic; if the data hold fewer distinct ids, the smallest unused ids fill up."""
    if not 0 < size <= vocab_size:
        raise ValueError(f"draft vocabulary size must be in [1, {vocab_size}], got {size}")
    keep = {int(i) for i in always if 0 <= int(i) < vocab_size}
    if len(keep) > size:
        raise ValueError(f"{len(keep)} always-kept ids do not fit a draft vocabulary of {size}")
    cnt: Counter = Counter()
    for ids in token_lists:
        cnt.update(int(i) for i in ids)
    ranked = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))
    for t, _ in ranked:
        if len(keep) >= size:
            break
        keep.add(t)
    t = 0
    while len(keep) < size:
        keep.add(t)
        t += 1
    return sorted(keep)

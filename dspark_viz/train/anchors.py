"""Anchor sampling and packed training blocks with their attention mask (pure tensor code).

Scope: choose anchor positions in a training sequence, build the γ-token blocks that sit on
them — input [x_a, mask × (γ−1)] at positions a..a+γ−1, labels x_{a+k+1} for slot k, Markov
previous tokens (x_a for slot 0, the true x_{a+k} for slot k), validity — and pack several
sequences' blocks into one padded batch with the boolean block mask the backbone takes.
This mirrors inference exactly (``DSparkDrafter.propose``): a block sees the target context
of positions < a only (the anchor's own hidden state is not visible; at inference the anchor
is the freshly sampled token), and attends bidirectionally within itself.
Not here: the model forward (``forward.py``), losses (``losses.py``).

Shapes: T sequence length, n anchors, γ block size, B packed sequences, C = max T,
Q = n·γ packed block positions, L·H tapped features.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def anchor_candidates(loss_mask: torch.Tensor) -> torch.Tensor:
    """loss_mask [T] bool → positions a ≥ 1 where x_a and x_{a+1} are both in the loss region."""
    m = loss_mask.bool()
    if m.numel() < 3:
        return torch.zeros(0, dtype=torch.long)
    ok = m[1:-1] & m[2:]  # a = 1..T−2
    return torch.nonzero(ok).flatten() + 1


def sample_anchors(loss_mask: torch.Tensor, n: int, gen: torch.Generator,
                   among: torch.Tensor | None = None) -> torch.Tensor:
    """Up to ``n`` distinct anchors, uniformly without replacement, sorted ascending. [≤ n]

    ``among``: draw from these positions (e.g. :func:`walk_anchors`) instead of every candidate."""
    cand = anchor_candidates(loss_mask) if among is None else among
    if cand.numel() <= n:
        return cand
    pick = torch.randperm(cand.numel(), generator=gen)[:n]
    return cand[pick].sort().values


def walk_anchors(cand: torch.Tensor, match: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The anchors fixed-γ greedy decoding would start its rounds at. [m]

    cand [n] sorted candidate anchors (the first is where the answer's first round starts);
    match / valid [n, γ] teacher-forced T = 0 matches of each candidate's drafts and their
    validity. From a, a round accepts the leading matches j and commits j + 1 tokens (the
    correction, or the bonus after γ), so the next round starts at a + j + 1; the walk stops
    when that leaves the candidates. Rounds start right after a rejection far more often than
    uniform anchors do — the positions a confidence head is calibrated and used on.
    """
    lead = (match.bool() & valid.bool()).long().cumprod(-1).sum(-1)  # [n] leading matches
    where = {int(a): i for i, a in enumerate(cand.tolist())}
    out: list[int] = []
    a = int(cand[0]) if cand.numel() else None
    while a is not None and a in where:
        out.append(a)
        a = a + int(lead[where[a]]) + 1
    return torch.tensor(out, dtype=torch.long)


def block_targets(ids: torch.Tensor, loss_mask: torch.Tensor, anchors: torch.Tensor, gamma: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids/loss_mask [T], anchors [n] → labels, prev [n, γ] (long) and valid [n, γ] (bool).

    Slot k predicts x_{a+k+1}; it is valid while every label up to it lies inside the
    sequence and the loss region (a block never resumes after leaving an answer span).
    """
    T = ids.shape[0]
    k = torch.arange(gamma)
    lab_pos = anchors[:, None] + k[None, :] + 1  # [n, γ]
    inside = lab_pos < T
    safe = lab_pos.clamp(max=T - 1)
    valid = (inside & loss_mask.bool()[safe]).long().cumprod(-1).bool()
    labels = torch.where(valid, ids[safe], torch.zeros_like(safe))
    prev = ids[(lab_pos - 1).clamp(max=T - 1)]  # x_{a+k}: slot 0 → the anchor
    return labels, torch.where(valid, prev, torch.zeros_like(prev)), valid


def position_keys(anchors: torch.Tensor, gamma: int) -> torch.Tensor:
    """Token positions a..a+γ−1 of each block [n, γ] (also the target position whose final
    hidden state gives p_t for the slot: slot k's target distribution is the target's
    next-token distribution at position a+k)."""
    return anchors[:, None] + torch.arange(gamma)[None, :]


@dataclass
class Packed:
    """B sequences' blocks packed for one forward. Padding blocks have valid = False."""

    ctx_taps: torch.Tensor  # [B, C, L·H] target features (zeros past each length)
    ctx_pos: torch.Tensor  # [B, C]
    ctx_last: torch.Tensor  # [B, C, H] target final hidden states (for p_t)
    block_ids: torch.Tensor  # [B, Q] [x_a, mask × (γ−1)] per block
    block_pos: torch.Tensor  # [B, Q]
    mask: torch.Tensor  # [B, 1, Q, C+Q] bool, True = attend
    labels: torch.Tensor  # [B, n, γ]
    prev: torch.Tensor  # [B, n, γ]
    valid: torch.Tensor  # [B, n, γ] bool
    tpos: torch.Tensor  # [B, n, γ] position of the target distribution for each slot
    gamma: int
    ctx_lse: torch.Tensor | None = None  # [B, C] full-vocabulary log-sum-exp (None: not cached)

    @property
    def num_blocks(self) -> int:
        return int(self.valid[..., 0].sum())


def block_mask(anchors: torch.Tensor, C: int, gamma: int) -> torch.Tensor:
    """anchors [B, n] (0 for padding blocks) → mask [B, 1, n·γ, C+n·γ] bool.

    Query j·γ+k sees context c < a_j and the keys of its own block j (bidirectional).
    """
    B, n = anchors.shape
    ctx = torch.arange(C)[None, None, :] < anchors[:, :, None]  # [B, n, C]
    ctx = ctx.repeat_interleave(gamma, dim=1)  # [B, Q, C]
    blk = torch.arange(n).repeat_interleave(gamma)  # [Q]
    own = (blk[:, None] == blk[None, :]).expand(B, -1, -1)  # [B, Q, Q]
    return torch.cat([ctx, own], dim=-1).unsqueeze(1)


def pack(items, anchors_list: list[torch.Tensor], *, gamma: int, mask_token_id: int) -> Packed:
    """items: objects with ``ids`` [T], ``loss_mask`` [T], ``taps`` [T, L·H], ``last`` [T, H]
    (and ``lse`` [T] or None — kept only when every item has it);
    anchors_list: per item its anchors [n_i]. Sequences are right-padded to C = max T and
    blocks to n = max n_i (at least 1)."""
    B = len(items)
    C = max(int(it.ids.shape[0]) for it in items)
    n = max(1, max(int(a.numel()) for a in anchors_list))
    LH, H = items[0].taps.shape[-1], items[0].last.shape[-1]
    taps = items[0].taps.new_zeros(B, C, LH)
    last = items[0].last.new_zeros(B, C, H)
    has_lse = all(getattr(it, "lse", None) is not None for it in items)
    lse = torch.zeros(B, C) if has_lse else None
    anchors = torch.zeros(B, n, dtype=torch.long)
    labels = torch.zeros(B, n, gamma, dtype=torch.long)
    prev = torch.zeros(B, n, gamma, dtype=torch.long)
    valid = torch.zeros(B, n, gamma, dtype=torch.bool)
    tpos = torch.zeros(B, n, gamma, dtype=torch.long)
    block_ids = torch.full((B, n, gamma), mask_token_id, dtype=torch.long)
    for b, (it, a) in enumerate(zip(items, anchors_list)):
        T, m = int(it.ids.shape[0]), int(a.numel())
        taps[b, :T] = it.taps
        last[b, :T] = it.last
        if lse is not None:
            lse[b, :T] = it.lse.float()
        if m == 0:
            continue
        anchors[b, :m] = a
        lb, pv, vd = block_targets(it.ids, it.loss_mask, a, gamma)
        labels[b, :m], prev[b, :m], valid[b, :m] = lb, pv, vd
        tpos[b, :m] = position_keys(a, gamma).clamp(max=T - 1)
        block_ids[b, :m, 0] = it.ids[a]
    pos = anchors[:, :, None] + torch.arange(gamma)[None, None, :]  # [B, n, γ]
    return Packed(ctx_taps=taps, ctx_pos=torch.arange(C).expand(B, -1).contiguous(), ctx_last=last,
                  block_ids=block_ids.view(B, n * gamma), block_pos=pos.view(B, n * gamma),
                  mask=block_mask(anchors, C, gamma), labels=labels, prev=prev, valid=valid,
                  tpos=tpos, gamma=gamma, ctx_lse=lse)

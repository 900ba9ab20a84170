"""The sequential stage: Markov heads that add a prefix-dependent bias to the base logits.

Scope: the three variants of DESIGN.md §2 / paper §3.1, each usable one step at a time
(inference, left to right with the *sampled* previous token) and teacher-forced over whole
blocks (training, with the true previous token):

- ``vanilla``: first-order low-rank transition B(x_{k−1}, ·) = W1[x_{k−1}] W2;
- ``gated``:   B = (σ(Wg [h_k; W1[x_{k−1}]]) ⊙ W1[x_{k−1}]) W2, a context-dependent gate;
- ``rnn``:     eq. 6 — z = [s_{k−1}; W1[x_{k−1}]; h_k], s_k = σ(g)⊙s_{k−1} + (1−σ(g))⊙tanh(c),
               B = W2ᵀ tanh(o), with (g, c, o) from one linear map of z.

Token ids here are in the drafter's vocabulary space (see ``DSparkDrafter.to_draft_index``).
Shapes: B batch, Q positions, H hidden, r rank, V (draft) vocabulary.
"""
from __future__ import annotations

import torch
from torch import nn


class MarkovHead(nn.Module):
    def __init__(self, kind: str, vocab: int, hidden: int, rank: int,
                 in_vocab: int | None = None) -> None:
        """``vocab``: outputs of W2 (the draft vocabulary); ``in_vocab``: rows of W1 (defaults to
        ``vocab``; a restricted draft vocabulary adds one out-of-vocabulary row)."""
        super().__init__()
        if kind not in ("vanilla", "gated", "rnn"):
            raise ValueError(f"unknown Markov head {kind!r}")
        self.kind, self.rank = kind, rank
        self.w1 = nn.Embedding(in_vocab or vocab, rank)  # the "Markov embedding" lookup W1
        self.w2 = nn.Linear(rank, vocab, bias=False)  # the logit projection W2
        nn.init.normal_(self.w1.weight, std=1.0)
        nn.init.normal_(self.w2.weight, std=0.02 / rank ** 0.5)
        if kind == "gated":
            self.gate = nn.Linear(hidden + rank, rank)
        elif kind == "rnn":
            self.cell = nn.Linear(2 * rank + hidden, 3 * rank)

    def prev_embed(self, prev: torch.Tensor) -> torch.Tensor:
        """prev [...] token ids → W1[prev] [..., r]."""
        return self.w1(prev)

    def init_state(self, batch: int, device, dtype) -> torch.Tensor | None:
        return torch.zeros(batch, self.rank, device=device, dtype=dtype) if self.kind == "rnn" else None

    def project(self, u: torch.Tensor, cand: torch.Tensor | None = None) -> torch.Tensor:
        """u [B, r] → bias [B, V] (W2 u), or only at candidate ids cand [B, K] → [B, K]."""
        if cand is None:
            return self.w2(u).float()
        return torch.einsum("bkr,br->bk", self.w2.weight[cand], u).float()

    def step(self, prev: torch.Tensor, h: torch.Tensor, state: torch.Tensor | None,
             cand: torch.Tensor | None = None):
        """One position. prev [B], h [B, H], state [B, r] | None, cand [B, K] | None →
        (bias [B, V] or [B, K] at the candidates, state)."""
        e = self.w1(prev)  # [B, r]
        if self.kind == "vanilla":
            return self.project(e, cand), state
        if self.kind == "gated":
            g = torch.sigmoid(self.gate(torch.cat([h, e], dim=-1)))
            return self.project(g * e, cand), state
        z = torch.cat([state, e, h], dim=-1)
        g, c, o = self.cell(z).chunk(3, dim=-1)
        gs = torch.sigmoid(g)
        state = gs * state + (1.0 - gs) * torch.tanh(c)
        return self.project(torch.tanh(o), cand), state

    def features(self, prev: torch.Tensor, h: torch.Tensor, block: int) -> torch.Tensor:
        """Teacher-forced pre-projection features for packed blocks.

        prev [B, Q] true previous tokens, h [B, Q, H], Q a multiple of ``block`` (blocks laid
        end to end) → u [B, Q, r] with bias = W2(u). Training applies W2 only where needed.
        """
        e = self.w1(prev)  # [B, Q, r]
        if self.kind == "vanilla":
            return e
        if self.kind == "gated":
            return torch.sigmoid(self.gate(torch.cat([h, e], dim=-1))) * e
        B, Q, _ = e.shape
        eb, hb = e.view(B, Q // block, block, -1), h.view(B, Q // block, block, -1)
        s = e.new_zeros(B, Q // block, self.rank)
        outs = []
        for k in range(block):  # the recurrence runs inside each block, s0 = 0
            g, c, o = self.cell(torch.cat([s, eb[:, :, k], hb[:, :, k]], dim=-1)).chunk(3, -1)
            gs = torch.sigmoid(g)
            s = gs * s + (1.0 - gs) * torch.tanh(c)
            outs.append(torch.tanh(o))
        return torch.stack(outs, dim=2).view(B, Q, self.rank)


class ConfidenceHead(nn.Module):
    """c_k = σ(wᵀ[h_k; W1[x_{k−1}]]) — P(x_k survives | prefix survived). Returns logits."""

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden + rank, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, 1.0)

    def forward(self, h: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        """h [..., H], e [..., r] | None → confidence logit [...] (apply σ for c_k)."""
        x = torch.cat([h, e], dim=-1) if e is not None else h
        return self.proj(x).squeeze(-1).float()

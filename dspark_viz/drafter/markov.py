"""The sequential stage: Markov heads that add a prefix-dependent bias to the base logits.

Scope: one small class per kind of head and THE registry of kinds (``MARKOV_HEADS``, name →
class, and ``build_markov_head``), plus the confidence head. Every head works one step at a time
(inference, left to right with the *sampled* previous token) and teacher-forced over whole blocks
(training, with the true previous token):

- ``vanilla``: first-order low-rank transition B(x_{k−1}, ·) = W1[x_{k−1}] W2;
- ``gated``:   B = (σ(Wg [h_k; W1[x_{k−1}]]) ⊙ W1[x_{k−1}]) W2, a context-dependent gate;
- ``rnn``:     z = [s_{k−1}; W1[x_{k−1}]; h_k], s_k = σ(g)⊙s_{k−1} + (1−σ(g))⊙tanh(c),
               B = W2ᵀ tanh(o), with (g, c, o) from one linear map of z.

"none" (no head) is the absence of a head: ``build_markov_head("none", …)`` returns None. The
names users pick live in ``config.MARKOV_TYPES`` (the ground floor validates a ``DrafterConfig``,
read from any checkpoint, without importing torch modules); this module refuses to import unless
its registry covers exactly those names, so the two cannot drift apart. Adding a head is one
class here plus its name in ``MARKOV_TYPES``.

Token ids here are in the drafter's vocabulary space (see ``DSparkDrafter.to_draft_index``).
Shapes: B batch, Q positions, H hidden, r rank, V (draft) vocabulary.
"""
from __future__ import annotations

import torch
from torch import nn

from dspark_viz.config import MARKOV_TYPES


class MarkovHead(nn.Module):
    """Common part of every head: W1 (the "Markov embedding" of the previous token) and W2 (the
    rank-r projection to logits). Subclasses define ``latent`` (one step) and ``features``
    (teacher-forced blocks); ``deepspec_names`` maps their own submodules to DeepSpec's names."""

    kind = ""
    deepspec_names: dict[str, str] = {}

    def __init__(self, vocab: int, hidden: int, rank: int, in_vocab: int | None = None) -> None:
        """``vocab``: outputs of W2 (the draft vocabulary); ``in_vocab``: rows of W1 (defaults to
        ``vocab``; a restricted draft vocabulary adds one out-of-vocabulary row)."""
        super().__init__()
        self.rank = rank
        self.w1 = nn.Embedding(in_vocab or vocab, rank)
        self.w2 = nn.Linear(rank, vocab, bias=False)
        nn.init.normal_(self.w1.weight, std=1.0)
        nn.init.normal_(self.w2.weight, std=0.02 / rank ** 0.5)

    def prev_embed(self, prev: torch.Tensor) -> torch.Tensor:
        """prev [...] token ids → W1[prev] [..., r]."""
        return self.w1(prev)

    def init_state(self, batch: int, device, dtype) -> torch.Tensor | None:
        """The recurrent state at the start of a block (None: the head has none)."""
        return None

    def project(self, u: torch.Tensor, cand: torch.Tensor | None = None) -> torch.Tensor:
        """u [B, r] → bias [B, V] (W2 u, computed in the model dtype, returned as fp32), or only
        at candidate ids cand [B, K] → [B, K]."""
        if cand is None:
            return self.w2(u).float()
        return torch.einsum("bkr,br->bk", self.w2.weight[cand], u).float()

    def latent(self, e: torch.Tensor, h: torch.Tensor, state):
        """One position: e = W1[prev] [B, r], h [B, H], state → (u [B, r], state)."""
        raise NotImplementedError

    def step(self, prev: torch.Tensor, h: torch.Tensor, state: torch.Tensor | None,
             cand: torch.Tensor | None = None):
        """One position. prev [B], h [B, H], state [B, r] | None, cand [B, K] | None →
        (bias [B, V] or [B, K] at the candidates, state)."""
        u, state = self.latent(self.w1(prev), h, state)
        return self.project(u, cand), state

    def features(self, prev: torch.Tensor, h: torch.Tensor, block: int) -> torch.Tensor:
        """Teacher-forced pre-projection features for packed blocks.

        prev [B, Q] true previous tokens, h [B, Q, H], Q a multiple of ``block`` (blocks laid
        end to end) → u [B, Q, r] with bias = W2(u). Training applies W2 only where needed.
        """
        raise NotImplementedError


class VanillaMarkov(MarkovHead):
    """B = W2 W1[x_{k−1}]: the bigram transition, blind to the context."""

    kind = "vanilla"

    def latent(self, e, h, state):
        return e, state

    def features(self, prev, h, block):
        return self.w1(prev)


class GatedMarkov(MarkovHead):
    """B = W2 (σ(Wg [h_k; e]) ⊙ e): the context decides how much of the bigram to apply."""

    kind = "gated"
    deepspec_names = {"gate": "gate_proj"}

    def __init__(self, vocab: int, hidden: int, rank: int, in_vocab: int | None = None) -> None:
        super().__init__(vocab, hidden, rank, in_vocab)
        self.gate = nn.Linear(hidden + rank, rank)

    def latent(self, e, h, state):
        return torch.sigmoid(self.gate(torch.cat([h, e], dim=-1))) * e, state

    def features(self, prev, h, block):
        return self.latent(self.w1(prev), h, None)[0]


class RnnMarkov(MarkovHead):
    """A gated recurrence over the block's sampled prefix (state s, reset at each block)."""

    kind = "rnn"
    deepspec_names = {"cell": "joint_proj"}

    def __init__(self, vocab: int, hidden: int, rank: int, in_vocab: int | None = None) -> None:
        super().__init__(vocab, hidden, rank, in_vocab)
        self.cell = nn.Linear(2 * rank + hidden, 3 * rank)

    def init_state(self, batch, device, dtype):
        return torch.zeros(batch, self.rank, device=device, dtype=dtype)

    def latent(self, e, h, state):
        g, c, o = self.cell(torch.cat([state, e, h], dim=-1)).chunk(3, dim=-1)
        gs = torch.sigmoid(g)
        return torch.tanh(o), gs * state + (1.0 - gs) * torch.tanh(c)

    def features(self, prev, h, block):
        e = self.w1(prev)  # [B, Q, r]
        B, Q, _ = e.shape
        eb, hb = e.view(B, Q // block, block, -1), h.view(B, Q // block, block, -1)
        s = e.new_zeros(B, Q // block, self.rank)
        outs = []
        for k in range(block):  # the recurrence runs inside each block, s0 = 0
            u, s = self.latent(eb[:, :, k], hb[:, :, k], s)
            outs.append(u)
        return torch.stack(outs, dim=2).view(B, Q, self.rank)


MARKOV_HEADS: dict[str, type[MarkovHead]] = {c.kind: c for c in (VanillaMarkov, GatedMarkov, RnnMarkov)}
NO_HEAD = "none"

if set(MARKOV_HEADS) | {NO_HEAD} != set(MARKOV_TYPES):  # pragma: no cover - a developer's slip
    raise ImportError(f"Markov head registry {sorted(MARKOV_HEADS)} + 'none' does not match "
                      f"config.MARKOV_TYPES {list(MARKOV_TYPES)}")


def build_markov_head(kind: str, vocab: int, hidden: int, rank: int,
                      in_vocab: int | None = None) -> MarkovHead | None:
    """The head registered as ``kind`` (None for "none"); ValueError for an unknown kind."""
    if kind == NO_HEAD:
        return None
    if kind not in MARKOV_HEADS:
        raise ValueError(f"unknown Markov head {kind!r} ({', '.join(MARKOV_TYPES)})")
    return MARKOV_HEADS[kind](vocab, hidden, rank, in_vocab)


class ConfidenceHead(nn.Module):
    """c_k = σ(wᵀ[h_k; W1[x_{k−1}]]) — P(x_k survives | prefix survived). Returns logits."""

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden + rank, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, 1.0)

    def forward(self, h: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        """h [..., H], e [..., r] | None → confidence logit [...] (apply σ for c_k)."""
        x = torch.cat([h, e.to(h.dtype)], dim=-1) if e is not None else h
        return self.proj(x).squeeze(-1).float()

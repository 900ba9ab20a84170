"""Pure sampling helpers: logits → the exact distribution a token is drawn from, and the draw.

Scope: temperature, top-k and top-p warping applied identically to target and draft (so the
verification ratio compares the distributions that were really used), greedy as a one-hot
distribution at T = 0, and draws from an explicit ``torch.Generator``. No model code.
"""
from __future__ import annotations

import torch


def warp(logits: torch.Tensor, *, temperature: float, top_k: int = 0,
         top_p: float = 1.0) -> torch.Tensor:
    """logits [..., V] → probabilities [..., V] (float32) of the decoding distribution.

    T = 0 gives the one-hot of the argmax (first index on ties). Top-k keeps the k largest,
    top-p the smallest prefix of the sorted distribution whose mass reaches p (at least one
    token); both renormalise.
    """
    z = logits.float()
    if temperature == 0.0:
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).float()
    z = z / temperature
    if top_k and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    p = torch.softmax(z, dim=-1)
    if top_p < 1.0:
        sp, idx = torch.sort(p, dim=-1, descending=True)
        before = torch.cumsum(sp, dim=-1) - sp  # mass strictly before each sorted token
        keep_sorted = before < top_p
        keep_sorted[..., 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
        p = torch.where(keep, p, torch.zeros_like(p))
        p = p / p.sum(-1, keepdim=True)
    return p


def draw(probs: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """probs [B, V] → token ids [B]. One-hot rows return their index without a draw."""
    onehot = probs.max(-1).values >= 1.0
    if bool(onehot.all()):
        return probs.argmax(-1)
    out = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(probs.device)
    return torch.where(onehot, probs.argmax(-1), out)


def uniform(gen: torch.Generator | None) -> float:
    """One U(0, 1) draw from ``gen`` (CPU generator)."""
    return float(torch.rand((), generator=gen))

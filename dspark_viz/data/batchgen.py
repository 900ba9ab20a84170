"""Batched generation on the target's own model, seeded per prompt (regeneration's inner loop).

Scope: ``generate_batch`` answers a batch of token-id prompts with the loaded target
(``targets.Target``): left padding, one prefill pass that keeps only the last position's logits,
then one token per step for every row with a KV cache; finished rows leave the batch when a
quarter of it has finished (``DynamicCache.batch_select_indices``), so they stop costing
compute. Each row draws from its own ``torch.Generator`` seeded from (base seed, prompt id)
(``prompt_seed``), one uniform per generated token, and samples from ``sampling.warp``'s
distribution (temperature, top-k, top-p) by inverse CDF over the tokens in descending order of
probability — so a prompt's answer does not depend on the batch it lands in, on the number of
writers, or on whether the run was interrupted (up to floating-point ties between batched and
single-row passes; at T = 0 it is the argmax, no draw). ``nucleus_order`` finds the kept tokens
from a top-``k`` candidate set when their mass already reaches ``top_p`` (the common case) and
sorts the whole vocabulary only for the rows where it does not. Not here: prompt files, shards,
resume (``shards.py``).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from dspark_viz.sampling import uniform, warp

COMPACT_FRACTION = 0.25  # drop finished rows once this share of the batch has finished
CANDIDATES = 512  # top-k candidate set of the fast top-p path


def prompt_seed(base_seed: int, prompt_id: str) -> int:
    """A 63-bit seed from (base seed, prompt id): the same for a prompt in any batch or run."""
    h = hashlib.sha256(f"{int(base_seed)}:{prompt_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") & (2 ** 63 - 1)


def nucleus_order(z: torch.Tensor, *, temperature: float, top_k: int = 0, top_p: float = 1.0,
                  candidates: int = CANDIDATES) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, V] → (token ids [B, K], probabilities [B, K]): ``warp``'s distribution in
    descending order of probability, zero beyond the kept tokens (K ≤ V; rows sum to 1).

    Fast and exact (up to ties) in two cases: top-k with k ≤ ``candidates`` (the kept set lies
    in the top k), and top-p alone when every row's top-``candidates`` already reach mass
    ``top_p`` before their last candidate (``warp`` keeps a prefix of them). Otherwise the whole
    vocabulary goes through ``warp`` and one sort.
    """
    V = z.shape[-1]
    zt = z.float() / temperature
    small_k = 0 < top_k <= min(candidates, V)
    if small_k or (top_k == 0 and top_p < 1.0):
        vals, idx = torch.topk(zt, top_k if small_k else min(candidates, V), dim=-1)  # [B, k]
        lse = torch.logsumexp(vals if small_k else zt, dim=-1, keepdim=True)
        p = torch.exp(vals - lse)
        before = torch.cumsum(p, dim=-1) - p  # mass strictly before each candidate
        keep = before < top_p if top_p < 1.0 else torch.ones_like(p, dtype=torch.bool)
        keep[:, 0] = True
        if small_k or idx.shape[-1] == V or not bool(keep[:, -1].any()):
            p = torch.where(keep, p, torch.zeros_like(p))
            return idx, p / p.sum(-1, keepdim=True)
    full = warp(z, temperature=temperature, top_k=top_k, top_p=top_p)  # [B, V]
    sp, sidx = torch.sort(full, dim=-1, descending=True, stable=True)
    return sidx, sp


def pick(z: torch.Tensor, gens: Sequence[torch.Generator | None], *, temperature: float,
         top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits [B, V] → next ids [B]: argmax at T = 0, else one uniform per row from its own
    generator, inverse CDF over ``nucleus_order``."""
    if temperature == 0.0:
        return z.argmax(-1)
    ids, p = nucleus_order(z, temperature=temperature, top_k=top_k, top_p=top_p)
    u = torch.tensor([uniform(g) for g in gens], dtype=torch.float64)  # [B]
    c = torch.cumsum(p.double(), dim=-1)  # [B, K]
    j = (c < (u * c[:, -1]).unsqueeze(-1)).sum(-1).clamp(max=p.shape[-1] - 1)  # [B]
    return ids.gather(-1, j.unsqueeze(-1)).squeeze(-1)


def _cut_at_eos(gen: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(gen):
        if t in eos:
            return gen[: i + 1], True
    return gen, False


@torch.inference_mode()
def generate_batch(target, prompts: Sequence[Sequence[int]], seeds: Sequence[int], *,
                   max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                   top_p: float = 1.0, pad_id: int | None = None
                   ) -> list[tuple[list[int], bool]]:
    """Per prompt (ids) → (generated ids, ending with the EOS id if it finished; finished).

    ``seeds[i]`` seeds row i's generator (``prompt_seed``); unused at T = 0.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        return []
    model, dev = target.model, target.device
    eos = set(target.eos_ids)
    pad = int(pad_id if pad_id is not None else target.eos_ids[0])
    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L), pad, dtype=torch.long)
    att = torch.zeros((B, L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        att[i, L - len(p):] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    gens = [torch.Generator().manual_seed(int(s)) if temperature > 0 else None for s in seeds]
    cache = target.new_cache()
    kw = {target._cache_kw: cache}
    ids, att, pos = ids.to(dev), att.to(dev), pos.to(dev)
    out = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True,
                logits_to_keep=1, **kw)
    rows = list(range(B))  # batch row → prompt index
    done = [False] * B
    gen: list[list[int]] = [[] for _ in range(B)]
    last = pos[:, -1]
    soft = target.softcap if target.softcap and not getattr(
        model.config, "final_logit_softcapping", None) else None
    for step in range(max_new_tokens):
        z = out.logits[:, -1].float()
        if soft:
            z = torch.tanh(z / soft) * soft
        nxt = pick(z, [gens[r] for r in rows], temperature=temperature, top_k=top_k, top_p=top_p)
        for j, t in enumerate(nxt.tolist()):
            r = rows[j]
            gen[r].append(int(t))
            if t in eos:
                done[r] = True
        if step == max_new_tokens - 1 or all(done[r] for r in rows):
            break
        n_done = sum(done[r] for r in rows)
        if n_done and n_done >= COMPACT_FRACTION * len(rows):
            keep = [j for j, r in enumerate(rows) if not done[r]]
            sel = torch.tensor(keep, dtype=torch.long, device=dev)
            cache.batch_select_indices(sel)
            att, last, nxt = att[sel], last[sel], nxt[sel]
            rows = [rows[j] for j in keep]
        att = torch.cat([att, att.new_ones((len(rows), 1))], dim=-1)
        last = last + 1
        out = model(input_ids=nxt.view(-1, 1).to(dev), attention_mask=att,
                    position_ids=last.view(-1, 1), use_cache=True, **kw)
    return [_cut_at_eos(g, eos) for g in gen]

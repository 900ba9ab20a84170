"""Lossless verification of one drafted block — a pure function over probabilities.

Scope: exact speculative rejection sampling (Leviathan et al. / Chen et al.): accept x_k with
probability min(1, p_t(x_k) / p_d(x_k)); at the first rejection sample the correction from the
residual norm(max(p_t − p_d, 0)); when all ℓ are accepted sample the bonus from p_t at ℓ + 1.
At T = 0 both distributions are one-hot and this is "accept while the draft equals the target
argmax" (no uniform is drawn). Also ``commit``: cut the committed tokens at the first EOS.
No model code; the caller passes the decoding distributions (after identical warping).

Shapes: ℓ verified positions, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dspark_viz.sampling import draw, uniform


@dataclass
class PositionCheck:
    token: int
    p_t: float
    p_d: float
    ratio: float
    uniform: float | None
    accepted: bool


@dataclass
class VerifyResult:
    n_accepted: int
    appended: int  # correction (after a rejection) or bonus (all ℓ accepted)
    kind: str  # "correction" | "bonus"
    checks: list[PositionCheck]  # ℓ entries; after the first rejection: accepted=False, uniform=None
    residual_fallback: bool = False  # residual mass was zero (numerically) → sampled from p_t


def verify_block(*, draft: torch.Tensor, q: torch.Tensor, p: torch.Tensor, greedy: bool,
                 gen: torch.Generator | None) -> VerifyResult:
    """draft [ℓ] tokens, q [ℓ, V] draft distributions, p [ℓ + 1, V] target distributions."""
    ell = int(draft.shape[0])
    if q.shape[0] != ell or p.shape[0] != ell + 1:
        raise ValueError(f"verify_block: draft {tuple(draft.shape)}, q {tuple(q.shape)}, p {tuple(p.shape)} disagree")
    checks: list[PositionCheck] = []
    n = 0
    rejected = False
    appended, kind, fallback = -1, "bonus", False
    for k in range(ell):
        x = int(draft[k])
        pt, pd = float(p[k, x]), float(q[k, x])
        ratio = 1.0 if pd <= 0.0 and pt > 0.0 else (min(1.0, pt / pd) if pd > 0 else 0.0)
        if rejected:
            checks.append(PositionCheck(x, pt, pd, ratio, None, False))
            continue
        if greedy:
            u, ok = None, x == int(p[k].argmax())
        else:
            u = uniform(gen)
            ok = u < ratio
        checks.append(PositionCheck(x, pt, pd, ratio, u, ok))
        if ok:
            n += 1
            continue
        rejected = True
        if greedy:
            appended = int(p[k].argmax())
        else:
            res = torch.clamp(p[k] - q[k], min=0.0)
            mass = float(res.sum())
            if mass <= 1e-12:  # p ≤ q everywhere numerically: fall back to the target itself
                fallback, res = True, p[k]
            else:
                res = res / mass
            appended = int(draw(res.unsqueeze(0), gen)[0])
        kind = "correction"
    if not rejected:
        appended = int(p[ell].argmax()) if greedy else int(draw(p[ell].unsqueeze(0), gen)[0])
    return VerifyResult(n_accepted=n, appended=appended, kind=kind, checks=checks,
                        residual_fallback=fallback)


def commit(accepted: list[int], appended: int, eos_ids: tuple[int, ...],
           stop_at_eos: bool = True) -> tuple[list[int], bool]:
    """Tokens a round adds: accepted drafts then the target token, cut after the first EOS.

    Returns (tokens, hit_eos). τ of the round is ``len(tokens)``.
    """
    out = list(accepted) + [appended]
    if stop_at_eos:
        for i, t in enumerate(out):
            if t in eos_ids:
                return out[: i + 1], True
    return out, False

"""Training losses: CE + TV + confidence BCE with position weights, computed in row chunks.

Scope: the training objective (paper eq. 9–12),
    L = α_ce·L_ce + α_tv·L_tv + α_conf·L_conf,   w_k = exp(−(k−1)/γ_w),
with L_tv = Σ_k w_k ‖p_d,k − p_t,k‖₁ and the confidence label (detached) chosen by ``conf_label``:
- ``tv``:     c*_k = 1 − ½‖p_d,k − p_t,k‖₁, the paper's eq. 8 — the acceptance probability when
              drafting and verifying by sampling at T = 1;
- ``greedy``: c*_k = 1[argmax p_d,k = argmax p_t,k], the acceptance at T = 0 (greedy drafting and
              verification), for a confidence head that serves greedy decoding.
Two normalisations ("variants"):
- ``paper``:    γ_w = γ (block size); each term is the per-block sum over k, averaged over blocks;
- ``deepspec``: γ_w = 4; each term is the w-weighted mean over valid slots.
The LM head over V (262 144 for Gemma) dominates the cost, so logits exist only for the valid
slots, a chunk of rows at a time: ``chunked_head_terms`` runs forward + backward per chunk
into detached copies of the slot hidden states (and Markov features), returning their
gradients, so peak memory is one chunk's [rows, V] and never all of them. Target logits are
computed once per distinct target position in a chunk (overlapping blocks share them).
With a restricted draft vocabulary (``DrafterConfig.draft_vocab_size``) both the draft and the
target logits use only the Vd head rows; the target's full-vocabulary normaliser comes from
the cache (``lse``), so V never appears in a training step.
Not here: the model forward (``forward.py``).

Shapes: N valid slots, V vocabulary, H hidden, r Markov rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

VARIANTS = ("paper", "deepspec")
CONF_LABELS = ("tv", "greedy")


@dataclass(frozen=True)
class LossConfig:
    variant: str = "deepspec"
    alpha_ce: float = 0.1
    alpha_tv: float = 0.9
    alpha_conf: float = 1.0
    gamma_w: float | None = None  # None: the variant's default (paper γ, deepspec 4)
    conf_label: str = "tv"  # the confidence head's label: "tv" (T = 1) or "greedy" (T = 0)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"loss variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.conf_label not in CONF_LABELS:
            raise ValueError(f"confidence label must be one of {CONF_LABELS}, got {self.conf_label!r}")
        if min(self.alpha_ce, self.alpha_tv, self.alpha_conf) < 0:
            raise ValueError("loss weights α must be ≥ 0")
        if self.gamma_w is not None and self.gamma_w <= 0:
            raise ValueError(f"gamma_w must be > 0, got {self.gamma_w}")

    def decay(self, gamma: int) -> float:
        if self.gamma_w is not None:
            return float(self.gamma_w)
        return float(gamma) if self.variant == "paper" else 4.0


def position_weights(gamma: int, gamma_w: float) -> torch.Tensor:
    """w_k = exp(−(k−1)/γ_w) for k = 1..γ → [γ]."""
    return torch.exp(-torch.arange(gamma, dtype=torch.float32) / gamma_w)


def denominator(valid: torch.Tensor, weights: torch.Tensor, variant: str) -> torch.Tensor:
    """valid [..., γ] → the normaliser of every term (a float scalar tensor): Σ w over valid
    slots (deepspec) or the number of blocks with a valid first slot (paper)."""
    if variant == "paper":
        return valid[..., 0].float().sum()
    return (valid.float() * weights).sum()


@dataclass
class HeadTerms:
    """Per-row results of the chunked head pass (all detached) and the input gradients."""

    ce: torch.Tensor  # [N] −log p_d(label)
    l1: torch.Tensor  # [N] ‖p_d − p_t‖₁
    grad_h: torch.Tensor | None  # [N, H]
    grad_u: torch.Tensor | None  # [N, r]
    match: torch.Tensor | None = None  # [N] 1.0 where argmax p_d = argmax p_t (T = 0 acceptance)

    @property
    def accept(self) -> torch.Tensor:
        """Analytic acceptance per row, 1 − ½‖p_d − p_t‖₁ ∈ [0, 1]."""
        return (1.0 - 0.5 * self.l1).clamp(0.0, 1.0)

    def label(self, kind: str) -> torch.Tensor:
        """The confidence label per row [N]: ``tv`` (``accept``) or ``greedy`` (``match``)."""
        if kind == "tv":
            return self.accept
        if kind == "greedy":
            return self.match
        raise ValueError(f"confidence label must be one of {CONF_LABELS}, got {kind!r}")


def _target_probs(t_head, t_last: torch.Tensor, t_key: torch.Tensor, restricted: bool,
                  t_lse: torch.Tensor | None, full_lse) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows' target p_t [m, V'] (one head product per distinct key) and, with a restricted
    vocabulary R, the target mass outside R [m] (else None)."""
    keys, inv = torch.unique(t_key, return_inverse=True)
    first = torch.full((keys.numel(),), -1, dtype=torch.long, device=inv.device)
    first.scatter_reduce_(0, inv, torch.arange(inv.numel(), device=inv.device),
                          reduce="amax", include_self=True)
    tz = t_head(t_last[first])  # [u, V']
    if not restricted:
        return torch.softmax(tz, dim=-1)[inv], None  # [m, V]
    lse = t_lse[first].float() if t_lse is not None else full_lse(t_last[first])
    pt = torch.exp(tz - lse[:, None])[inv]  # [m, Vd] full-vocabulary p_t on R
    return pt, (1.0 - pt.sum(-1)).clamp(min=0.0)  # [m] target mass outside R


def chunked_head_terms(*, h: torch.Tensor, u: torch.Tensor | None, w2: torch.nn.Module | None,
                       head: Callable[[torch.Tensor], torch.Tensor], t_last: torch.Tensor,
                       t_key: torch.Tensor, labels: torch.Tensor, coef_ce: torch.Tensor,
                       coef_tv: torch.Tensor, chunk_rows: int = 128,
                       backward: bool = True, restricted: bool = False,
                       t_lse: torch.Tensor | None = None,
                       full_lse: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       t_head: Callable[[torch.Tensor], torch.Tensor] | None = None) -> HeadTerms:
    """CE and L1 for N rows, chunk by chunk, with their gradients w.r.t. h (and u).

    h [N, H] slot hidden states; u [N, r] Markov features (bias = w2(u)) or None;
    head: [m, H] → [m, V'] float logits through the target's frozen LM head (V' = V, or the
    Vd draft-vocabulary rows when ``restricted``); t_last [N, H] the target's final hidden
    state for each row and t_key [N] an id of its position (rows with the same key share one
    target-logit computation); labels [N] (draft indices when restricted; Vd = out of the
    draft vocabulary: no CE term); coef_ce / coef_tv [N] the per-row loss coefficients
    (α·w_k/den). The chunk loss Σ coef_ce·ce + coef_tv·l1 is back-propagated into detached
    copies of h/u (and into w2's weight directly).

    Restricted draft vocabulary R (|R| = Vd): the drafter puts all its mass on R, the target
    p_t(v) = exp(z_v − lse) is its full-vocabulary distribution read on R, and
        ‖p_d − p_t‖₁ = Σ_{v∈R} |p_d(v) − p_t(v)| + (1 − Σ_{v∈R} p_t(v)),
    the second term being the target mass outside R (which the drafter can never propose).
    ``match`` (greedy acceptance): the draft argmax equals the target argmax. With R, the target's
    argmax over R is its full-vocabulary argmax when it holds at least the mass outside R, or when
    it is the row's label (data regenerated greedily by the target); otherwise the row counts as
    a rejection — a conservative label, exact on greedy-regenerated data.
    ``t_lse`` [N] is the cached full-vocabulary log-sum-exp per row; without it
    ``full_lse(t_last rows) → [m]`` computes it (the full head — slow, for old caches).
    ``t_head``: the head for the target rows (default ``head``) — e.g. an exact fp32 head for
    p_t while ``head`` runs the drafter's rows in bf16.
    """
    t_head = t_head or head
    N = h.shape[0]
    hd = h.detach().requires_grad_(backward)
    ud = u.detach().requires_grad_(backward) if u is not None else None
    ce_all, l1_all = h.new_zeros(N, dtype=torch.float32), h.new_zeros(N, dtype=torch.float32)
    match_all = h.new_zeros(N, dtype=torch.float32)
    need_tv = bool((coef_tv != 0).any()) or not backward
    if restricted and t_lse is None and full_lse is None:
        raise ValueError("a restricted draft vocabulary needs t_lse or full_lse")
    for s in range(0, N, max(1, chunk_rows)):
        sl = slice(s, min(N, s + chunk_rows))
        with torch.set_grad_enabled(backward):
            z = head(hd[sl])  # [m, V']
            if ud is not None:
                z = z + w2(ud[sl]).float()
            logp = F.log_softmax(z, dim=-1)
            lab = labels[sl]
            inv_ok = lab < z.shape[-1]  # False: label outside the draft vocabulary
            ce = -logp.gather(-1, lab.clamp(max=z.shape[-1] - 1)[:, None]).squeeze(-1) * inv_ok
            with torch.no_grad():
                pt, out_mass = _target_probs(t_head, t_last[sl], t_key[sl], restricted,
                                             t_lse[sl] if t_lse is not None else None, full_lse)
            l1 = (logp.exp() - pt).abs().sum(-1)
            if out_mass is not None:
                l1 = l1 + out_mass
            with torch.no_grad():
                pt_max, t_arg = pt.max(-1)  # [m]
                hit = z.detach().argmax(-1) == t_arg
                if out_mass is not None:
                    hit &= (pt_max >= out_mass) | (t_arg == lab)
                match_all[sl] = hit.float()
            if backward:
                loss = (coef_ce[sl] * ce).sum() + ((coef_tv[sl] * l1).sum() if need_tv else 0.0)
                loss.backward()
        ce_all[sl], l1_all[sl] = ce.detach().float(), l1.detach().float()
        del z, logp, pt
    return HeadTerms(ce=ce_all, l1=l1_all, grad_h=hd.grad if backward else None,
                     grad_u=ud.grad if (backward and ud is not None) else None, match=match_all)


def confidence_terms(conf_logit: torch.Tensor, accept: torch.Tensor, coef: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """conf_logit [N] (with graph), accept [N] soft labels c*, coef [N] → (loss, bce [N] detached)."""
    bce = F.binary_cross_entropy_with_logits(conf_logit.float(), accept.detach(), reduction="none")
    return (coef * bce).sum(), bce.detach()


def prob_tau(accept: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """accept, valid [..., γ] → probabilistic τ per block = 1 + Σ_k Π_{i≤k} α_i (the +1 is the
    target's own token, the project's τ convention); invalid slots count as rejections."""
    return 1.0 + (accept * valid.float()).cumprod(-1).sum(-1)


"""The packed block forward of training: drafter outputs, losses, gradients and metric sums.

Scope: ``block_losses`` runs the drafter over a packed batch of anchor blocks (``anchors.pack``)
against the frozen target, computes the chunked LM-head losses (``losses.py``) normalised by a
given denominator, back-propagates them into the drafter, and adds the step's metric sums to a
``StepSums``; ``metrics_from`` turns (all-reduced) sums into the logged metrics; ``bf16_head``
is the drafter-side LM head in bf16. bf16 autocast on GPU, fp32 on CPU. With a restricted draft
vocabulary the logits use the Vd frozen head rows only, labels and Markov/confidence previous
tokens are draft indices (out-of-vocabulary labels get no CE term), and the TV term is taken
against the target's full distribution through the cached log-sum-exp.
Not here: anchors (``anchors.py``), the optimizer step (``trainer.py``).

Shapes: B sequences per micro-batch, C context, n anchors, γ block, Q = n·γ, N valid slots,
H hidden, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dspark_viz.drafter.model import DSparkDrafter
from dspark_viz.train.anchors import Packed
from dspark_viz.train.losses import (HeadTerms, LossConfig, chunked_head_terms, confidence_terms,
                                     prob_tau)


@dataclass
class StepSums:
    """Sums over a step's valid slots/blocks (all-reduced across ranks before logging)."""

    gamma: int
    t: dict = field(default_factory=dict)

    def add(self, key: str, v) -> None:
        v = v.detach().double().cpu() if torch.is_tensor(v) else torch.tensor(float(v), dtype=torch.float64)
        self.t[key] = self.t.get(key, 0) + v

    def vector(self) -> tuple[list[str], torch.Tensor]:
        keys = sorted(self.t)
        return keys, torch.cat([self.t[k].reshape(-1) for k in keys]) if keys else torch.zeros(0)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)


def bf16_head(drafter: DSparkDrafter, target):
    """h [m, H] → draft logits [m, Vd] (or [m, V]) with the frozen head rows in bf16 (float32
    out, soft-cap applied). Cached on the drafter, keyed by the head weight and vocabulary."""
    w_full = target.model.get_output_embeddings().weight
    key = (id(w_full), int(drafter.draft_vocab.sum()), drafter.cfg.restricted)
    cached = getattr(drafter, "_bf16_head_cache", None)
    if cached is None or cached[0] != key:
        w = w_full.detach()[drafter.draft_vocab.to(w_full.device)] if drafter.cfg.restricted \
            else w_full.detach()
        cached = (key, w.to(torch.bfloat16).contiguous())
        drafter._bf16_head_cache = cached

    def head(h: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.linear(h.to(torch.bfloat16), cached[1]).float()
        if target.softcap:
            z = torch.tanh(z / target.softcap) * target.softcap
        return z
    return head


def _drafter_outputs(drafter: DSparkDrafter, target, batch: Packed, *, grad: bool, conf_grad: bool):
    """(h [B, Q, H], Markov features u [B, Q, r] or None, confidence logits [B, Q] or None)."""
    dev = target.device
    B, n, g = batch.valid.shape
    with torch.set_grad_enabled(grad), _autocast(dev):
        feats = drafter.context_features(batch.ctx_taps.to(dev))  # [B, C, H]
        ctx_kv = drafter.layer_kv(feats, batch.ctx_pos.to(dev))
        with torch.no_grad():
            x = target.embed(batch.block_ids.to(dev))  # [B, Q, H] frozen shared embedding
        h = drafter.backbone(x, batch.block_pos.to(dev), ctx_kv, batch.mask.to(dev))  # [B, Q, H]
        prev = drafter.to_draft_index(batch.prev.view(B, n * g).to(dev))  # draft indices
        u = drafter.markov.features(prev, h, g) if drafter.markov is not None else None
        conf = None
        if drafter.confidence is not None:
            e = drafter.markov.prev_embed(prev) if drafter.markov is not None else None
            with torch.set_grad_enabled(conf_grad):
                conf = drafter.confidence(h, e)  # [B, Q]
    return h, u, conf


@dataclass(frozen=True)
class _Rows:
    """The valid slots of a batch as rows: index, position weight, slot outputs, labels."""

    rows: torch.Tensor  # [N] flat slot index
    w: torch.Tensor  # [N] position weight w_k
    h: torch.Tensor  # [N, H]
    u: torch.Tensor | None  # [N, r]
    labels: torch.Tensor  # [N] draft indices (Vd = out of vocabulary)


def _head_terms(drafter: DSparkDrafter, target, batch: Packed, r: _Rows, *, loss: LossConfig,
                inv_den: torch.Tensor, chunk_rows: int, backward: bool,
                head_bf16: bool) -> HeadTerms:
    """CE, L1, greedy match and gradients into h/u for the rows (``losses.chunked_head_terms``)."""
    dev = target.device
    B, n, g = batch.valid.shape
    b_of = r.rows // (n * g)
    tpos = batch.tpos.view(-1).to(dev)[r.rows]
    t_last = batch.ctx_last.to(dev)[b_of, tpos]  # [N, H]
    restricted = drafter.cfg.restricted
    t_lse = batch.ctx_lse.to(dev)[b_of, tpos] if (restricted and batch.ctx_lse is not None) else None
    exact = (lambda z: drafter.draft_logits(target, z))  # [m, Vd] (or [m, V])
    head = bf16_head(drafter, target) if head_bf16 else exact
    full_lse = (lambda z: torch.logsumexp(target.logits(z.to(target.dtype)).float(), -1))
    return chunked_head_terms(h=r.h, u=r.u, w2=drafter.markov.w2 if r.u is not None else None,
                              head=head, t_last=t_last, t_key=b_of * batch.ctx_last.shape[1] + tpos,
                              labels=r.labels, coef_ce=loss.alpha_ce * r.w * inv_den,
                              coef_tv=loss.alpha_tv * r.w * inv_den, chunk_rows=chunk_rows,
                              backward=backward, restricted=restricted,
                              t_lse=t_lse, full_lse=full_lse, t_head=exact)


def _backprop(r: _Rows, terms: HeadTerms, conf_rows, lab_c, *, loss: LossConfig,
              inv_den: torch.Tensor, only_conf: bool) -> None:
    """One backward of the surrogate Σ out·grad (head terms) + the confidence loss."""
    surrogate = torch.zeros((), device=r.h.device)
    if not only_conf:
        outs, grads = [r.h], [terms.grad_h]
        if r.u is not None and terms.grad_u is not None:
            outs.append(r.u)
            grads.append(terms.grad_u)
        surrogate = sum((o.float() * gr.float()).sum() for o, gr in zip(outs, grads))
    if conf_rows is not None and loss.alpha_conf > 0:
        closs, _ = confidence_terms(conf_rows, lab_c, loss.alpha_conf * r.w * inv_den)
        surrogate = surrogate + closs
    if surrogate.requires_grad:
        surrogate.backward()


def _add_sums(sums: StepSums, drafter: DSparkDrafter, batch: Packed, r: _Rows, terms: HeadTerms,
              conf_rows, lab_c, loss: LossConfig) -> torch.Tensor:
    """Add the metric numerators and denominators; return the greedy match [B, n, γ]."""
    w, dev = r.w, r.w.device
    B, n, g = batch.valid.shape
    sums.add("w_sum", w.sum())
    sums.add("blocks", batch.valid[..., 0].sum())
    sums.add("ce_num", (w * terms.ce).sum())  # OOV labels contribute no CE (ce = 0)
    restricted = drafter.cfg.restricted
    oov = (r.labels >= (drafter.cfg.draft_vocab_size if restricted else 1 << 62)).float()
    sums.add("oov_num", (w * oov).sum())
    sums.add("tv_num", (w * terms.l1).sum())
    if conf_rows is not None:
        c = torch.sigmoid(conf_rows.detach().float())
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            conf_rows.detach().float(), lab_c, reduction="none")
        sums.add("conf_num", (w * bce).sum())
        sums.add("conf_abs_num", (w * (c - lab_c).abs()).sum())
        sums.add("conf_bias_num", (w * (c - lab_c)).sum())
    vd = batch.valid.to(dev)
    for name, per_row in (("acc", terms.accept), ("greedy", terms.match)):
        a3 = torch.zeros(B * n * g, device=dev)
        a3[r.rows] = per_row
        a3 = a3.view(B, n, g)
        sums.add(f"{name}_pos_num", (a3 * vd).sum((0, 1)))
        sums.add(f"{name}_tau_num", (prob_tau(a3, vd) * vd[..., 0]).sum())
    sums.add("acc_pos_den", vd.float().sum((0, 1)))
    if loss.variant == "paper":  # per-block sums / blocks — what the optimised loss reports
        sums.add("den_paper", batch.valid[..., 0].sum())
    return a3  # the last of the loop: greedy


def block_losses(drafter: DSparkDrafter, target, batch: Packed, *, loss: LossConfig,
                 weights: torch.Tensor, den: torch.Tensor, chunk_rows: int, sums: StepSums,
                 backward: bool = True, head_bf16: bool = False,
                 only_conf: bool = False) -> torch.Tensor:
    """Forward the packed blocks, compute the losses (normalised by ``den``), back-propagate
    into the drafter's parameters when ``backward``, and add the metric sums to ``sums``.
    ``head_bf16``: the drafter's head products (forward and backward into h) in bf16; the
    target's p_t stays exact (float32 head rows). ``only_conf``: only the confidence loss is
    back-propagated, into the confidence head alone (backbone and Markov head run without a graph).
    Returns the greedy (T = 0) match per slot [B, n, γ], 0 where not valid."""
    dev = target.device
    B, n, g = batch.valid.shape
    h, u, conf = _drafter_outputs(drafter, target, batch, grad=backward and not only_conf,
                                  conf_grad=backward)
    rows = batch.valid.view(-1).to(dev).nonzero().flatten()  # [N]
    if rows.numel() == 0:
        return torch.zeros(B, n, g, device=dev)
    k_of = torch.arange(g, device=dev).repeat(B * n)[rows]  # slot index per row
    r = _Rows(rows=rows, w=weights.to(dev)[k_of], h=h.reshape(B * n * g, -1)[rows],
              u=u.reshape(B * n * g, -1)[rows] if u is not None else None,
              labels=drafter.to_draft_index(batch.labels.view(-1).to(dev)[rows]))
    inv_den = 1.0 / den.to(dev).float()
    terms = _head_terms(drafter, target, batch, r, loss=loss, inv_den=inv_den,
                        chunk_rows=chunk_rows, backward=backward and not only_conf,
                        head_bf16=head_bf16)
    lab_c = terms.label(loss.conf_label)  # [N] the confidence head's label
    conf_rows = conf.reshape(-1)[rows] if conf is not None else None
    if backward:
        _backprop(r, terms, conf_rows, lab_c, loss=loss, inv_den=inv_den, only_conf=only_conf)
    return _add_sums(sums, drafter, batch, r, terms, conf_rows, lab_c, loss)


def metrics_from(keys: list[str], vec: torch.Tensor, gamma: int, loss: LossConfig) -> dict:
    """Turn all-reduced sums into the logged metrics (definitions in the notes)."""
    d, i = {}, 0
    for k in keys:
        size = gamma if "_pos_" in k else 1
        d[k] = vec[i: i + size]
        i += size
    w = float(d.get("w_sum", torch.zeros(1))[0])
    blocks = float(d.get("blocks", torch.zeros(1))[0])
    out: dict = {}
    if w <= 0 or blocks <= 0:
        return out
    norm = blocks if loss.variant == "paper" else w
    out["ce"] = float(d["ce_num"][0]) / norm
    if "oov_num" in d:  # w-weighted share of labels outside the draft vocabulary
        out["oov_rate"] = float(d["oov_num"][0]) / w
    out["tv"] = float(d["tv_num"][0]) / norm
    total = loss.alpha_ce * out["ce"] + loss.alpha_tv * out["tv"]
    if "conf_num" in d:
        out["conf"] = float(d["conf_num"][0]) / norm
        total += loss.alpha_conf * out["conf"]
        out["conf_abs_err"] = float(d["conf_abs_num"][0]) / w
        out["conf_bias"] = float(d["conf_bias_num"][0]) / w
    out["loss"] = total
    out.update(_position_metrics(d, blocks))
    out["blocks"] = int(blocks)
    return out


def _position_metrics(d: dict, blocks: float) -> dict:
    out = {}
    pos = (d["acc_pos_num"] / d["acc_pos_den"].clamp(min=1)).tolist()
    for k, a in enumerate(pos, 1):
        out[f"accept@{k}"] = a
    out["tau_prob"] = float(d["acc_tau_num"][0]) / blocks
    if "greedy_pos_num" in d:  # T = 0: the draft argmax equals the target argmax
        gpos = (d["greedy_pos_num"] / d["acc_pos_den"].clamp(min=1)).tolist()
        for k, a in enumerate(gpos, 1):
            out[f"greedy@{k}"] = a
        out["tau_greedy"] = float(d["greedy_tau_num"][0]) / blocks
    return out

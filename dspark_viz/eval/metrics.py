"""Acceptance metrics computed from traces — pure, exact, each with its definition.

Scope: turn recorded ``Trace`` objects (never models) into the numbers the evaluator reports:
τ (with the +1 target token), acceptance rate, per-position cumulative survival and
conditional acceptance (the paper's Figure 2), tokens per target forward pass, wall-clock
tokens/s, macro averages over datasets, and the offline static-threshold sweep (Figure 5).
Not here: running decoders (``benchmark``), calibration (``calibration``), figures.

EOS handling (the same rule as DeepSpec's evaluator): when an *accepted draft* token is EOS
(trace: ``eos`` and no target token appended), the answer ends there; the verified positions
after it are **censored** — counted neither as accepted nor as verified, in any metric — and
that round's τ is its accepted count (no +1, since no target token is appended). An EOS that
is the target's own token (correction or bonus) is an ordinary round. The core trace summary
counts censored positions as verified-and-rejected, so its acceptance rate can differ from ours
in rounds that end on a drafted EOS; ours is the one that measures the drafter.

Shapes: γ block size, k draft position 1..γ (1-based everywhere in reports).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from dspark_viz.decoding.policy import RequestView, Threshold
from dspark_viz.decoding.trace import Round, Trace

DEFINITIONS: dict[str, str] = {
    "tau": "τ = mean tokens committed per verification round = accepted draft tokens + 1 target "
           "token (correction or bonus), pooled over all rounds of the dataset; a round that ends "
           "on an accepted drafted EOS commits no target token (τ = accepted there)",
    "acceptance_rate": "accepted draft tokens / verified draft tokens (positions after an accepted "
                       "drafted EOS are censored: excluded from both counts)",
    "cumulative_survival": "position k: #rounds with ≥ k drafts accepted / #rounds that verified "
                           "≥ k (uncensored) positions — prefix survival a_k",
    "conditional_acceptance": "position k: #rounds with ≥ k drafts accepted / #rounds that accepted "
                              "the first k−1 and verified position k — the paper's Figure 2",
    "tokens_per_forward": "new tokens (the first, sampled from the prefill logits, included) / "
                          "target forward passes (the prefill included); plain decoding gives 1.0",
    "tokens_per_s": "new tokens / wall-clock seconds of the whole decode (prefill included), "
                    "measured around the batch in this run",
    "speedup": "tokens/s of the drafter / tokens/s of plain target decoding, same prompts, same "
               "temperature, same run",
    "macro": "unweighted mean over datasets of each per-dataset number",
    "sweep": "offline static threshold on c_k (the verified prefix stops at the first c_k < t, "
             "exactly the Threshold policy) replayed on rounds recorded under fixed ℓ = γ: "
             "truncating a block at ℓ never changes acceptance before ℓ, so accepted = "
             "min(accepted at γ, ℓ_t) is exact per round; per step = per verification round",
}


@dataclass(frozen=True)
class RoundView:
    """The counts of one round that every metric needs."""

    ell: int  # positions sent to verification
    ell_eff: int  # verified and not censored by an accepted drafted EOS
    accepted: int  # accepted draft tokens
    tau: int  # committed tokens
    draft_eos: bool  # the round ended on an accepted drafted EOS


def view_round(r: Round) -> RoundView:
    draft_eos = bool(r.eos and r.appended_kind == "none")
    ell = len(r.verify)
    return RoundView(ell=ell, ell_eff=r.n_accepted if draft_eos else ell, accepted=r.n_accepted,
                     tau=r.tau, draft_eos=draft_eos)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def position_stats(rounds: Iterable[Round], gamma: int) -> dict:
    """Per-position counts and rates over ``rounds`` (lists of length γ, position k at k−1)."""
    verified = [0] * gamma  # rounds that verified ≥ k uncensored positions
    reached = [0] * gamma  # ... and accepted the first k−1
    survived = [0] * gamma  # rounds that accepted ≥ k
    for r in rounds:
        v = view_round(r)
        for k in range(1, min(v.ell_eff, gamma) + 1):
            verified[k - 1] += 1
            if v.accepted >= k - 1:
                reached[k - 1] += 1
            if v.accepted >= k:
                survived[k - 1] += 1
    return {
        "verified": verified, "reached": reached, "accepted": survived,
        "cumulative_survival": [_ratio(s, n) for s, n in zip(survived, verified)],
        "conditional_acceptance": [_ratio(s, n) for s, n in zip(survived, reached)],
    }


def summarize(traces: Sequence[Trace], wall_s: float | None = None) -> dict:
    """All per-dataset metrics of a list of traces (one per prompt) as a JSON-ready dict.

    ``wall_s``: wall-clock seconds measured around the decode by the caller; when None the
    traces' own ``summary.wall_s`` are summed (exact only for requests decoded one at a time).
    """
    rounds = [r for t in traces for r in t.rounds]
    views = [view_round(r) for r in rounds]
    gamma = max((t.meta.gamma for t in traces if t.meta.mode != "ar"), default=0)
    new_tokens = sum(t.summary.new_tokens for t in traces)
    forwards = sum(1 + len(t.rounds) for t in traces)
    verified = sum(v.ell_eff for v in views)
    accepted = sum(v.accepted for v in views)
    wall = float(wall_s) if wall_s is not None else sum(t.summary.wall_s for t in traces)
    speculative = any(t.meta.mode != "ar" for t in traces)
    out = {
        "prompts": len(traces),
        "rounds": len(rounds),
        "new_tokens": new_tokens,
        "target_forwards": forwards,
        "drafted": sum(len(r.draft) for r in rounds),
        "verified": verified,
        "censored": sum(v.ell - v.ell_eff for v in views),
        "accepted": accepted,
        "eos_rounds": sum(v.draft_eos for v in views),
        "tau": _ratio(sum(v.tau for v in views), len(views)),
        "acceptance_rate": _ratio(accepted, verified) if speculative else None,
        "tokens_per_forward": _ratio(new_tokens, forwards),
        "wall_s": wall,
        "tokens_per_s": _ratio(new_tokens, wall),
        "stop_reasons": _count(t.summary.stop_reason for t in traces),
    }
    if speculative:
        ps = position_stats(rounds, gamma)
        out["cumulative_survival"] = ps["cumulative_survival"]
        out["conditional_acceptance"] = ps["conditional_acceptance"]
        out["position_counts"] = {"verified": ps["verified"], "reached": ps["reached"],
                                  "accepted": ps["accepted"]}
    else:
        out["cumulative_survival"] = out["conditional_acceptance"] = None
    return out


def _count(items: Iterable[str]) -> dict[str, int]:
    d: dict[str, int] = {}
    for x in items:
        d[x] = d.get(x, 0) + 1
    return d


MACRO_SCALARS = ("tau", "acceptance_rate", "tokens_per_forward", "tokens_per_s", "speedup")


def macro_average(per_dataset: dict[str, dict]) -> dict:
    """Unweighted mean over datasets of the scalar metrics and the per-position curves.

    A dataset whose value is None (e.g. no verified position k) is left out of that mean.
    """
    out: dict = {"datasets": sorted(per_dataset)}
    for key in MACRO_SCALARS:
        vals = [d[key] for d in per_dataset.values() if d.get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals else None
    for key in ("cumulative_survival", "conditional_acceptance"):
        curves = [d[key] for d in per_dataset.values() if d.get(key)]
        if not curves:
            out[key] = None
            continue
        n = max(len(c) for c in curves)
        col = [[c[i] for c in curves if i < len(c) and c[i] is not None] for i in range(n)]
        out[key] = [sum(v) / len(v) if v else None for v in col]
    return out


def threshold_sweep(traces: Sequence[Trace], thresholds: Sequence[float]) -> list[dict] | None:
    """Figure 5 from recorded rounds: per static threshold t on c_k, per verification step.

    Uses the confidences the policy saw (calibrated when the run was). Returns None when the
    rounds carry no confidences (plain decoding or a drafter without a confidence head).
    """
    rounds = [r for t in traces for r in t.rounds if r.draft]
    if not rounds or any(d.conf_cal is None and d.conf_raw is None for r in rounds for d in r.draft):
        return None
    out = []
    for t in thresholds:
        pol = Threshold(float(t), "c")
        ver = acc = tau = 0
        for r in rounds:
            v = view_round(r)
            conf = [d.conf_cal if d.conf_cal is not None else d.conf_raw for d in r.draft]
            ell_t = pol.decide([RequestView(np.asarray(conf, dtype=np.float64), v.ell)])[0].ell
            a = min(v.accepted, ell_t)
            ver += min(ell_t, v.ell_eff)
            acc += a
            tau += a if (v.draft_eos and ell_t >= v.accepted) else a + 1
        n = len(rounds)
        out.append({"threshold": float(t), "steps": n, "verified_per_step": ver / n,
                    "accepted_per_step": acc / n, "rejected_per_step": (ver - acc) / n,
                    "acceptance_rate": _ratio(acc, ver), "tau": tau / n})
    return out


__all__ = ["DEFINITIONS", "RoundView", "view_round", "position_stats", "summarize",
           "macro_average", "threshold_sweep"]

"""The speculative-decoding engine: sessions that prefill, step round by round, and run.

Scope: orchestration only — the target and drafter compute, ``sampling``/``verify`` decide,
a policy picks ℓ, and every internal is written into a ``Round`` of the trace. One round:
draft γ tokens after the anchor (parallel pass + Markov loop + confidences), let the policy
choose ℓ from the confidences of all active requests (the live one plus any simulated
background load), verify [x0, x1..xℓ] in one target pass that also yields the hidden states
fed back to the drafter, commit accepted + 1 target token, roll both caches back.

Modes: "dspark", "dflash" (Markov head off: the parallel-only drafter), "ar" (plain target
decoding, one token per target pass — the baseline). What-ifs: ``markov_off`` and
``force_ell``. ``step_batch`` runs several sessions in lock step under one policy decision
(target passes stay per request; the decision is joint, as a serving engine's would be).
The capacity curve SPS(B) travels one way: inside the policy (``policy.capacity``); the trace
keeps its name and a sample of it (``TraceMeta.capacity_curve``) so it can be drawn on replay.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from dspark_viz.config import ConfigError, DecodeConfig
from dspark_viz.decoding.decision import Decision, RequestView
from dspark_viz.decoding.policy import Fixed
from dspark_viz.decoding.scheduler import sample_sps
from dspark_viz.decoding.trace import (MAX_CURVE_POINTS, SCHEMA_VERSION, BiasEntry, CurveSample,
                                       DraftPos, Round, Schedule, Summary, Timings, TokenProb,
                                       Trace, TraceMeta, VerifyPos)
from dspark_viz.decoding.verify import commit, verify_block
from dspark_viz.drafter.model import ContextCache, DSparkDrafter, Proposal, check_compatible
from dspark_viz.sampling import draw, warp


class Background(Protocol):
    """Simulated other requests sharing the verify batch (see ``dspark_viz.load``)."""

    def views(self) -> list[RequestView]: ...

    def advance(self, decisions: Sequence[Decision]) -> None: ...


@dataclass
class _Pending:
    proposal: Proposal | None
    view: RequestView
    conf_raw: np.ndarray | None  # [γ]
    conf_cal: np.ndarray | None  # [γ]
    t_start: float


class NonFiniteError(ConfigError):
    """A setting or a model output that is not a finite number (T = ∞, NaN logits): decoding stops
    before anything is recorded; one-line message."""


def _require_finite(what: str, *tensors) -> None:
    """NonFiniteError naming ``what`` when any of ``tensors`` (None skipped) holds NaN or +∞
    (−∞ logits are a model's way of ruling a token out, and stay allowed)."""
    for t in tensors:
        if t is not None and bool((torch.isnan(t) | torch.isposinf(t)).any()):
            raise NonFiniteError(f"{what} produced NaN or +∞ outputs: its weights or inputs are "
                                 "broken; decoding stopped before recording them")


def calibrate_conf(conf_logit: np.ndarray, temps: list[float] | None) -> np.ndarray:
    """STS: c_k = σ(logit_k / T_k); positions past the fitted ones reuse the last T."""
    if not temps:
        return 1.0 / (1.0 + np.exp(-conf_logit))
    t = np.array([temps[min(k, len(temps) - 1)] for k in range(len(conf_logit))])
    return 1.0 / (1.0 + np.exp(-conf_logit / t))


def confidence_problem(policy, drafter, cfg: DecodeConfig) -> str | None:
    """Why ``policy`` cannot run with ``drafter`` under ``cfg`` (it needs confidences the drafter
    has no head for), or None. The one check: the engine raises it, the app falls back on it."""
    if cfg.mode == "ar" or cfg.force_ell is not None or drafter is None:
        return None
    if getattr(policy, "needs_confidence", True) and getattr(drafter, "confidence", None) is None:
        return f"policy {policy.name} needs a drafter with a confidence head"
    return None


def curve_problem(policy) -> str | None:
    """Why ``policy`` cannot decide in the engine (it needs a capacity curve and holds none)."""
    if getattr(policy, "needs_curve", False) and getattr(policy, "capacity", None) is None:
        return (f"policy {policy.name} needs a capacity curve: build it with one "
                "(dspark_viz.load.policy_spec.policy_from_spec, or parse_policy(spec, γ, curve=…))")
    return None


def _curve_name(policy) -> str:
    return str(getattr(getattr(policy, "capacity", None), "name", "") or "")


def _topk(logits: torch.Tensor, k: int) -> list[list[TokenProb]]:
    """logits [n, V] → per row the top-k (token, logit, prob at T = 1)."""
    probs = torch.softmax(logits.float(), -1)
    v, i = torch.topk(logits.float(), min(k, logits.shape[-1]), dim=-1)  # K may be < k
    pv = torch.gather(probs, -1, i)
    return [[TokenProb(int(t), float(l), float(p)) for t, l, p in zip(ti, li, pi)]
            for ti, li, pi in zip(i.tolist(), v.tolist(), pv.tolist())]


class SpecSession:
    """One request decoded speculatively (or plainly), recording a ``Trace``."""

    def __init__(self, target, drafter: DSparkDrafter | None = None,
                 cfg: DecodeConfig = DecodeConfig(), *, policy=None,
                 background: Background | None = None, request_id: int = 0,
                 drafter_name: str = "") -> None:
        if cfg.mode != "ar" and drafter is None:
            raise ConfigError(f"mode {cfg.mode!r} needs a drafter (use mode 'ar' for plain decoding)")
        if drafter is not None:
            check_compatible(drafter.cfg, target)
        for name in ("temperature", "top_p"):
            if not math.isfinite(getattr(cfg, name)):
                raise NonFiniteError(f"{name} must be a finite number, got {getattr(cfg, name)}")
        self.target, self.drafter, self.cfg = target, drafter, cfg
        self.policy = policy if policy is not None else Fixed(cfg.gamma)
        problem = confidence_problem(self.policy, drafter, cfg) or curve_problem(self.policy)
        if problem:
            raise ConfigError(problem)
        self.background = background
        self.request_id = request_id
        self.drafter_name = drafter_name or ("none" if drafter is None else "drafter")
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.layer_ids = drafter.cfg.target_layer_ids if (drafter is not None and cfg.mode != "ar") else ()
        self.rounds: list[Round] = []
        self.prompt_ids: list[int] = []
        self.generated: list[int] = []
        self.done = False
        self.stop_reason = ""
        self._vocab_ids: set[int] = set()
        self._t0 = 0.0
        self._wall = 0.0
        self.prompt = ""
        self._curve_sample: CurveSample | None = None

    # ------------------------------------------------------------------ prefill
    @property
    def use_markov(self) -> bool:
        return self.cfg.mode == "dspark" and not self.cfg.markov_off

    def prefill(self, prompt: str | Sequence[int]) -> int:
        """Run the prompt through the target; sample the first token (the first anchor)."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ConfigError("prompt is empty")
            self.prompt = prompt
            ids = self.target.encode(prompt)
        else:
            ids = [int(i) for i in prompt]
            self.prompt = ""
        if not ids:
            raise ConfigError("prompt is empty")
        need = len(ids) + self.cfg.max_new_tokens + self.cfg.gamma + 1
        if need > self.target.max_context:
            raise ConfigError(
                f"prompt of {len(ids)} tokens + max_new_tokens {self.cfg.max_new_tokens} + γ "
                f"exceeds the target context of {self.target.max_context} tokens")
        if max(ids) >= self.target.vocab_size or min(ids) < 0:
            raise ConfigError("prompt token ids outside the target vocabulary")
        self._t0 = time.perf_counter()
        self.prompt_ids = ids
        self.cache = self.target.new_cache()
        x = torch.tensor([ids], device=self.target.device)
        out = self.target.forward(x, self.cache, self.layer_ids)
        _require_finite(f"target {self.target.name}", out.logits[0, -1])
        p = warp(out.logits[0, -1:], temperature=self.cfg.temperature, top_k=self.cfg.top_k,
                 top_p=self.cfg.top_p)
        first = int(draw(p, self.gen)[0])
        self.ctx = ContextCache()
        if self.layer_ids:
            self.drafter.extend_context(self.ctx, out.taps)
        self.generated = [first]
        self._vocab_ids.update(ids + [first])
        self.anchor_pos = len(ids)
        if self.cfg.stop_at_eos and first in self.target.eos_ids:
            self._finish("eos")
        elif self.cfg.max_new_tokens <= 1:
            self._finish("max_new_tokens")
        self._wall = time.perf_counter() - self._t0
        return first

    def _finish(self, reason: str) -> None:
        self.done, self.stop_reason = True, reason

    @property
    def anchor(self) -> int:
        return self.generated[-1]

    @property
    def remaining(self) -> int:
        return self.cfg.max_new_tokens - len(self.generated)

    # ------------------------------------------------------------------ phase 1: draft
    def draft(self) -> _Pending:
        if self.done:
            raise RuntimeError("session is finished")
        t_start = time.perf_counter()
        cap = min(self.cfg.gamma, self.remaining - 1)
        if self.cfg.mode == "ar":
            return _Pending(None, RequestView(np.zeros(0), 0), None, None, t_start)
        a = torch.tensor([self.anchor], device=self.target.device)
        prop = self.drafter.propose(self.target, self.ctx, a, gamma=self.cfg.gamma,
                                    temperature=self.cfg.temperature, top_k=self.cfg.top_k,
                                    top_p=self.cfg.top_p, gen=self.gen, use_markov=self.use_markov,
                                    candidates=self.cfg.draft_candidates)
        _require_finite(f"drafter {self.drafter_name}", prop.q, prop.base_logits, prop.conf_logit)
        raw = cal = None
        if prop.conf_logit is not None:
            lg = prop.conf_logit[0].double().cpu().numpy()
            raw = calibrate_conf(lg, None)
            temps = self.drafter.calibration if self.cfg.calibrated else None
            cal = calibrate_conf(lg, temps)
        conf = cal if cal is not None else np.ones(self.cfg.gamma)
        return _Pending(prop, RequestView(conf, cap), raw, cal, t_start)

    # ------------------------------------------------------------------ phase 2: verify
    def finish(self, pend: _Pending, decision: Decision, *, load: int = 1,
               schedule_ms: float = 0.0) -> Round:
        cfg, T = self.cfg, self.target
        prop = pend.proposal
        ell = decision.ell if cfg.force_ell is None else min(cfg.force_ell, pend.view.max_ell)
        ell = max(0, min(ell, pend.view.max_ell))
        drafts = prop.tokens[0].tolist() if prop is not None else []
        t_v = time.perf_counter()
        x = torch.tensor([[self.anchor] + drafts[:ell]], device=T.device)
        out = T.forward(x, self.cache, self.layer_ids)
        _require_finite(f"target {T.name}", out.logits[0])
        p = warp(out.logits[0], temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        q = prop.q[0, :ell] if prop is not None else p.new_zeros(0, p.shape[-1])
        res = verify_block(draft=torch.tensor(drafts[:ell], dtype=torch.long), q=q.cpu(),
                           p=p.cpu(), greedy=cfg.greedy, gen=self.gen)
        accepted = drafts[: res.n_accepted]
        committed, hit_eos = commit(accepted, res.appended, T.eos_ids, cfg.stop_at_eos)
        n_acc_committed = min(res.n_accepted, len(committed))
        for c in res.checks[n_acc_committed:]:  # drafts after an accepted EOS are not kept
            c.accepted = False
        # roll back: keep anchor + accepted drafts in the target cache; feed them to the drafter
        keep = self.anchor_pos + 1 + res.n_accepted
        T.crop(self.cache, keep)
        if self.layer_ids:
            self.drafter.extend_context(self.ctx, out.taps[:, : res.n_accepted + 1])
        verify_ms = (time.perf_counter() - t_v) * 1e3
        rnd = self._record(pend, decision, ell, drafts, out.logits[0], res, committed,
                           n_acc_committed, hit_eos, load, schedule_ms, verify_ms)
        self.rounds.append(rnd)
        self.generated.extend(committed)
        self.anchor_pos = keep
        if hit_eos:
            self._finish("eos")
        elif self.remaining <= 0:
            self._finish("max_new_tokens")
        self._wall = time.perf_counter() - self._t0
        return rnd

    def step(self) -> Round:
        """One round for this request (with any simulated background requests)."""
        return step_batch([self], self.policy, background=self.background)[0]

    def run(self, prompt: str | Sequence[int] | None = None, *, progress=None) -> Trace:
        if prompt is not None:
            self.prefill(prompt)
        while not self.done:
            self.step()
            if progress is not None:
                progress(self)
        return self.trace()

    # ------------------------------------------------------------------ trace
    def _record(self, pend, decision, ell, drafts, logits, res, committed, n_acc, hit_eos,
                load, schedule_ms, verify_ms) -> Round:
        """The ``Round`` of one finished step: drafts, schedule, verification, commit, timings."""
        prop = pend.proposal
        draft_pos = self._draft_positions(pend, drafts) if prop is not None else []
        tgt_top = _topk(logits, self.cfg.record_topk)
        verify = [VerifyPos(k=k + 1, token=c.token, p_t=c.p_t, p_d=c.p_d, ratio=c.ratio,
                            uniform=c.uniform, accepted=c.accepted, target_topk=tgt_top[k])
                  for k, c in enumerate(res.checks)]
        appended_in = len(committed) > res.n_accepted
        kind = ("target" if self.cfg.mode == "ar" else res.kind) if appended_in else "none"
        total_ms = (time.perf_counter() - pend.t_start) * 1e3
        rnd = Round(index=len(self.rounds), request=self.request_id, anchor=self.anchor,
                    anchor_pos=self.anchor_pos, draft=draft_pos,
                    schedule=self._schedule(decision, ell, load, prop is not None), verify=verify,
                    n_accepted=n_acc, appended=res.appended if appended_in else None,
                    appended_kind=kind, appended_topk=tgt_top[min(res.n_accepted, len(tgt_top) - 1)],
                    committed=committed, dropped=drafts[ell:], eos=hit_eos,
                    timings=Timings(draft_ms=prop.draft_ms if prop else 0.0,
                                    markov_ms=prop.markov_ms if prop else 0.0,
                                    schedule_ms=schedule_ms, verify_ms=verify_ms,
                                    total_ms=total_ms))
        self._note_vocab(rnd, drafts)
        return rnd

    def _schedule(self, decision: Decision, ell: int, load: int, drafted: bool) -> Schedule:
        forced = self.cfg.force_ell is not None
        return Schedule(policy=f"forced({self.cfg.force_ell})" if forced else self.policy.name,
                        lossless=bool(getattr(self.policy, "lossless", True)), load=load,
                        ell=ell, gamma=self.cfg.gamma if drafted else 0,
                        stop="forced" if forced else decision.stop, forced=forced,
                        capacity=_curve_name(self.policy), path=list(decision.path))

    def _draft_positions(self, pend: _Pending, drafts: list[int]) -> list[DraftPos]:
        """The γ draft positions: parallel-stage and corrected top-k, Markov biases, confidences."""
        prop, k_rec = pend.proposal, self.cfg.record_topk
        # the trace is built on the CPU whatever the device (small tensors, one copy each)
        base = prop.base_logits[0].float().cpu()  # [γ, Vd] over draft indices
        ids = prop.base_ids.cpu() if prop.base_ids is not None else torch.arange(base.shape[-1])
        bias = prop.bias[0].float().cpu() if prop.bias is not None else None  # [γ, K]
        if prop.cand is not None:  # sequential stage ran over candidates [γ, K]
            cand = prop.cand[0].cpu()
            cbase = torch.gather(base, -1, cand)
        else:
            cand = torch.arange(base.shape[-1]).expand(base.shape[0], -1)
            cbase = base
        cand = ids[cand]  # [γ, K] target ids
        markov_on = bias is not None and self.use_markov
        corrected = cbase + bias if markov_on else cbase  # [γ, K]
        base_top = [[TokenProb(int(ids[t.token]), t.logit, t.prob) for t in row]
                    for row in _topk(base, k_rec)]
        corr_top = [[TokenProb(int(cand[r, t.token]), t.logit, t.prob) for t in row]
                    for r, row in enumerate(_topk(corrected, k_rec))]
        boosted, suppressed = _bias_entries(bias, cbase, cand, k_rec) if markov_on else ([], [])
        raw, cal = pend.conf_raw, pend.conf_cal
        a_raw = np.cumprod(raw) if raw is not None else None
        a_cal = np.cumprod(cal) if cal is not None else None

        def opt(x, k):
            return None if x is None else float(x[k])
        return [DraftPos(k=k + 1, base_topk=base_top[k], boosted=boosted[k] if boosted else [],
                         suppressed=suppressed[k] if suppressed else [],
                         corrected_topk=corr_top[k], token=drafts[k],
                         p_d=float(prop.q[0, k, drafts[k]]), conf_raw=opt(raw, k),
                         conf_cal=opt(cal, k), a_raw=opt(a_raw, k), a_cal=opt(a_cal, k))
                for k in range(len(drafts))]

    def _note_vocab(self, rnd: Round, drafts: list[int]) -> None:
        """Remember every token id the round mentions (the trace's vocab covers them all)."""
        ids = self._vocab_ids
        ids.update(drafts)
        ids.update(rnd.committed)
        for d in rnd.draft:
            ids.update(t.token for t in d.base_topk + d.corrected_topk)
            ids.update(b.token for b in d.boosted + d.suppressed)
        for v in rnd.verify:
            ids.update(t.token for t in v.target_topk)
        ids.update(t.token for t in rnd.appended_topk)

    def _capacity_curve(self, load: int) -> CurveSample | None:
        """The policy's curve bound to ``load``, sampled at every B the rounds' figures draw:
        B ≤ 1.5·(R·(1 + γ) + 1) + 1 with R the largest load of any round (capped)."""
        curve = getattr(self.policy, "capacity", None)
        if curve is None:
            return None
        r_max = max([load] + [r.schedule.load for r in self.rounds if r.schedule is not None])
        b_max = min(MAX_CURVE_POINTS, int(1.5 * (r_max * (1 + self.cfg.gamma) + 1)) + 2)
        c = self._curve_sample
        if c is None or c.load != load or len(c.sps) != b_max:
            c = CurveSample(name=_curve_name(self.policy), load=load,
                            sps=sample_sps(curve, load, b_max))
            self._curve_sample = c
        return CurveSample(c.name, c.load, list(c.sps))

    def _summary(self) -> Summary:
        rounds = self.rounds
        drafted = sum(len(r.draft) for r in rounds)
        verified = sum(len(r.verify) for r in rounds)
        accepted = sum(r.n_accepted for r in rounds)
        new = len(self.generated)
        forwards = 1 + len(rounds)
        wall = max(self._wall, 1e-9)
        return Summary(rounds=len(rounds), new_tokens=new, drafted=drafted, verified=verified,
                       accepted=accepted,
                       tau_mean=float(np.mean([r.tau for r in rounds])) if rounds else 0.0,
                       acceptance_rate=accepted / verified if verified else 0.0,
                       target_forwards=forwards, tokens_per_forward=new / forwards,
                       wall_s=wall, tokens_per_s=new / wall,
                       stop_reason=self.stop_reason or "running")

    def trace(self) -> Trace:
        cfg, d = self.cfg, self.drafter
        load = 1 + (len(self.background.views()) if self.background else 0)
        meta = TraceMeta(target=self.target.name, drafter=self.drafter_name, mode=cfg.mode,
                         gamma=cfg.gamma, temperature=cfg.temperature, top_k=cfg.top_k,
                         top_p=cfg.top_p, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens,
                         policy=self.policy.name, prompt=self.prompt, prompt_ids=self.prompt_ids,
                         first_token=self.generated[0] if self.generated else 0,
                         device=str(self.target.device),
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         markov_off=cfg.markov_off, force_ell=cfg.force_ell,
                         calibrated=bool(cfg.calibrated and d is not None and d.calibration),
                         load=load, capacity=_curve_name(self.policy),
                         conf_label=(getattr(d, "conf_label", "")
                                     if getattr(d, "confidence", None) is not None else ""),
                         calibration_temperature=(getattr(d, "calibration_temperature", None)
                                                  if d is not None else None),
                         capacity_curve=self._capacity_curve(load),
                         vocab_size=int(self.target.vocab_size))
        tok = self.target.tokenizer
        vocab = {str(i): tok.token_text(i) for i in sorted(self._vocab_ids)}
        return Trace(version=SCHEMA_VERSION, meta=meta, rounds=list(self.rounds),
                     summary=self._summary(), vocab=vocab, text=tok.decode(self.generated))


def _bias_entries(bias, cbase, cand, k_rec: int):
    """Per position the k largest Markov biases among the candidates (boosted) and the k most
    negative among the parallel stage's top 50 (suppressed). bias, cbase, cand: [γ, K]."""
    bv, bi = torch.topk(bias, min(k_rec, bias.shape[-1]), dim=-1)
    top50 = torch.topk(cbase, min(50, cbase.shape[-1]), dim=-1).indices
    cb = torch.gather(bias, -1, top50)
    sv, si = torch.topk(-cb, min(k_rec, cb.shape[-1]), dim=-1)
    boosted = [[BiasEntry(int(cand[r, t]), float(b)) for t, b in zip(ti, vi)]
               for r, (ti, vi) in enumerate(zip(bi.tolist(), bv.tolist()))]
    suppressed = [[BiasEntry(int(cand[r, top50[r, j]]), float(-v)) for j, v in zip(sj, vj)]
                  for r, (sj, vj) in enumerate(zip(si.tolist(), sv.tolist()))]
    return boosted, suppressed


def step_batch(sessions: Sequence[SpecSession], policy, *,
               background: Background | None = None) -> list[Round]:
    """One round for every unfinished session, with one joint policy decision.

    The policy sees the live requests' confidences first, then the background's; each live
    session verifies its own ℓ. Returns the rounds in session order.
    """
    live = [s for s in sessions if not s.done]
    pend = [s.draft() for s in live]
    views = [p.view for p in pend]
    bg = background.views() if background is not None else []
    t = time.perf_counter()
    if all(s.cfg.mode == "ar" for s in live) and not bg:
        decisions = [Decision(ell=0, stop="plain decoding") for _ in live]
    else:
        decisions = list(policy.decide(views + bg))
    sched_ms = (time.perf_counter() - t) * 1e3
    if background is not None:
        background.advance(decisions[len(live):])
    load = len(views) + len(bg)
    return [s.finish(p, d, load=load, schedule_ms=sched_ms)
            for s, p, d in zip(live, pend, decisions)]


def run_batch(sessions: Sequence[SpecSession], prompts: Sequence[str | Sequence[int]],
              policy) -> list[Trace]:
    """Prefill and run several requests in lock step until all finish; one trace each."""
    if len(sessions) != len(prompts):
        raise ValueError("one prompt per session")
    for s, pr in zip(sessions, prompts):
        s.prefill(pr)
    while not all(s.done for s in sessions):
        step_batch(sessions, policy)
    return [s.trace() for s in sessions]


def plain_decode(target, prompt: str | Sequence[int], cfg: DecodeConfig) -> list[int]:
    """Reference plain decoding (no drafter); returns the generated ids."""
    s = SpecSession(target, None, DecodeConfig(**{**cfg.__dict__, "mode": "ar"}))
    s.prefill(prompt)
    while not s.done:
        s.step()
    return s.generated


__all__ = ["SpecSession", "step_batch", "run_batch", "plain_decode", "calibrate_conf",
           "confidence_problem", "curve_problem", "NonFiniteError"]

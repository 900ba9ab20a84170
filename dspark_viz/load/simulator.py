"""Multi-request load simulator: R concurrent requests replaying recorded rounds.

Scope: ``TracePool`` (the rounds of real traces reduced to what a scheduler and the
accounting need: the confidence vector c_{1..γ} and the realized accepted count), the
lock-step simulation of R requests under one policy and a capacity curve (``simulate``,
``sweep``), and ``SimulatedBackground`` — the engine's ``Background`` protocol, so a live
``SpecSession`` decodes as one of R requests. No model code.

Replay model. Truncating a block at ℓ never changes acceptance before ℓ, so a round that
verified ℓ_rec tokens and accepted n tells, for any ℓ: accepted(ℓ) = min(n, ℓ) — exactly,
whenever n < ℓ_rec or ℓ ≤ ℓ_rec. Rounds with n = ℓ_rec < γ are censored (acceptance past
ℓ_rec unknown) and are kept only as far as they are exact: their ``max_ell`` is ℓ_rec.
Record traces with ``fixed(γ)`` to keep every round whole. Each simulated request walks one
trace's rounds in order from a random start and moves to a random other trace at the end (a
new request joining the batch). Simplification: the next recorded round does not depend on
how many tokens the simulated ℓ committed.

Accounting per step: B = Σ_r (1 + ℓ_r) verify tokens, step time 1/SPS(B) from the capacity
curve bound to R; committed tokens per request τ = min(n, ℓ) + 1 (τ counts the target token).
Throughput = Σ τ / Σ time (tok/s); per-user speed = throughput / R (tok/s/user); verify
budget = mean ℓ per request per step. Scheduler CPU time is measured but not charged.

Caps: R ≤ ``MAX_LOAD`` concurrent requests and ≤ ``MAX_STEPS`` steps per simulation (the work is
R × steps rounds in Python); larger values are a ``SimError``.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from dspark_viz.decoding.decision import Decision, RequestView
from dspark_viz.decoding.trace import Trace, TraceError
from dspark_viz.errors import UserError


MAX_LOAD = 4096  # concurrent requests R of one simulation (and of a live background)
MAX_STEPS = 100_000  # engine steps of one simulation
_SEED_MOD = 1 << 64  # torch generators take seeds below 2⁶⁴


class SimError(UserError):
    """The simulation cannot run as asked (empty pool, bad R); one-line message."""


# ----------------------------------------------------------------------------- the pool
@dataclass(frozen=True)
class PoolRound:
    conf: np.ndarray  # [γ] confidences the scheduler sees (calibrated when recorded)
    accepted: int  # realized accepted draft tokens (exact up to max_ell)
    max_ell: int  # longest ℓ for which min(accepted, ℓ) is exact (γ unless censored)


@dataclass
class TracePool:
    """Recorded rounds grouped by source trace (each group is one request's round sequence)."""

    sequences: list[list[PoolRound]]
    gamma: int
    sources: list[str] = field(default_factory=list)
    dropped: int = 0  # rounds without a full draft, confidences, or any verified token

    def __post_init__(self) -> None:
        self.sequences = [s for s in self.sequences if s]
        if not self.sequences:
            raise SimError("trace pool is empty: no round with a drafted block and confidences")

    @property
    def n_rounds(self) -> int:
        return sum(len(s) for s in self.sequences)

    @property
    def censored(self) -> int:
        return sum(r.max_ell < self.gamma for s in self.sequences for r in s)

    def acceptance_at(self, ell: int) -> float:
        """Mean min(n, ℓ) over the rounds exact at ℓ (expected accepted drafts at fixed ℓ)."""
        v = [min(r.accepted, ell) for s in self.sequences for r in s if r.max_ell >= ell]
        return float(np.mean(v)) if v else float("nan")

    @classmethod
    def from_traces(cls, traces: Iterable[Trace | str | os.PathLike], *,
                    calibrated: bool = True) -> "TracePool":
        seqs, srcs, gamma, dropped = [], [], None, 0
        for t in traces:
            src = ""
            if not isinstance(t, Trace):
                src = str(t)
                t = Trace.load(t)
            g = t.meta.gamma
            if gamma is None:
                gamma = g
            elif g != gamma:
                raise SimError(f"trace pool mixes γ={gamma} and γ={g}; use traces of one γ")
            seq = []
            for r in t.rounds:
                if len(r.draft) != g:
                    dropped += 1
                    continue
                key = "conf_cal" if calibrated else "conf_raw"
                conf = [getattr(d, key) if getattr(d, key) is not None else d.conf_raw
                        for d in r.draft]
                if any(c is None for c in conf):
                    dropped += 1
                    continue
                ell = len(r.verify)
                n = r.n_accepted
                max_ell = g if n < ell or ell == g else ell
                if max_ell == 0:  # verified nothing: says nothing about acceptance
                    dropped += 1
                    continue
                seq.append(PoolRound(np.asarray(conf, dtype=np.float64), n, max_ell))
            seqs.append(seq)
            srcs.append(src or t.meta.prompt[:40])
        if gamma is None:
            raise SimError("trace pool needs at least one trace")
        return cls(seqs, gamma, srcs, dropped)

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], **kw) -> "TracePool":
        """Trace JSON files, or directories of them."""
        files: list[Path] = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                files += sorted(p.glob("*.json"))
            elif p.is_file():
                files.append(p)
            else:
                raise TraceError(f"trace path {str(p)!r} does not exist")
        if not files:
            raise SimError("no trace files found")
        return cls.from_traces(files, **kw)


# ----------------------------------------------------------------------------- replay state
class _Replay:
    """R cursors over the pool; each yields the view of its current round."""

    def __init__(self, pool: TracePool, R: int, gen: torch.Generator) -> None:
        self.pool, self.gen = pool, gen
        self.seq = torch.randint(len(pool.sequences), (R,), generator=gen).tolist()
        self.pos = [int(torch.randint(len(pool.sequences[s]), (1,), generator=gen))
                    for s in self.seq]
        self._views: list[RequestView] | None = None

    def current(self, i: int) -> PoolRound:
        return self.pool.sequences[self.seq[i]][self.pos[i]]

    def views(self) -> list[RequestView]:
        if self._views is None:
            self._views = [RequestView(rd.conf, rd.max_ell)
                           for rd in (self.current(i) for i in range(len(self.seq)))]
        return self._views

    def advance(self, ells: Sequence[int]) -> tuple[int, int]:
        """Commit min(n, ℓ) + 1 per request; return (tokens committed, accepted drafts)."""
        tok = acc = 0
        n_seq = len(self.pool.sequences)
        for i, ell in enumerate(ells):
            rd = self.current(i)
            a = min(rd.accepted, int(ell))
            acc += a
            tok += a + 1
            self.pos[i] += 1
            if self.pos[i] >= len(self.pool.sequences[self.seq[i]]):  # request done: a new one joins
                self.seq[i] = int(torch.randint(n_seq, (1,), generator=self.gen))
                self.pos[i] = 0
        self._views = None
        return tok, acc


# ----------------------------------------------------------------------------- simulation
@dataclass
class SimResult:
    policy: str
    lossless: bool
    capacity: str
    R: int
    steps: int
    throughput: float  # committed tokens per second, all requests (tok/s)
    per_user: float  # tokens per second per request (tok/s/user)
    budget: float  # mean ℓ per request per step (verified draft tokens)
    batch: float  # mean verify batch B per step (tokens)
    tau: float  # mean committed tokens per request per step (accepted + 1)
    acceptance_rate: float  # accepted draft tokens / verified draft tokens
    step_ms: float  # mean modelled step time (ms)
    sched_us: float  # mean scheduler CPU time per step (µs), not charged to the step time
    budget_trace: list[float] = field(default_factory=list)  # mean ℓ per step

    def to_dict(self) -> dict:
        return asdict(self)


def simulate(pool: TracePool, policy, capacity, R: int, steps: int,
             gen: torch.Generator | None = None, *, keep_trace: bool = False) -> SimResult:
    """R requests in lock step for ``steps`` engine steps under ``policy`` and ``capacity``.

    ``capacity`` is the simulated hardware: it times every step and the policy decides on it
    (passed to ``decide``, overriding any curve the policy holds).
    """
    if not (1 <= R <= MAX_LOAD and 1 <= steps <= MAX_STEPS):
        raise SimError(f"simulate needs 1 ≤ R ≤ {MAX_LOAD} and 1 ≤ steps ≤ {MAX_STEPS}, "
                       f"got R={R}, steps={steps}")
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    cap = capacity.for_load(R) if hasattr(capacity, "for_load") else capacity
    if hasattr(policy, "reset"):
        policy.reset()
    rep = _Replay(pool, R, gen)
    tot_tok = tot_acc = tot_ver = 0
    tot_time = sum_B = sched = 0.0
    btrace = []
    for _ in range(steps):
        views = rep.views()
        t0 = time.perf_counter()
        dec = policy.decide(views, cap)
        sched += time.perf_counter() - t0
        ells = [d.ell for d in dec]
        B = R + sum(ells)
        tot_time += 1.0 / cap.sps(B)
        sum_B += B
        tot_ver += B - R
        if keep_trace:
            btrace.append((B - R) / R)
        tok, acc = rep.advance(ells)
        tot_tok += tok
        tot_acc += acc
    thr = tot_tok / tot_time
    return SimResult(policy=policy.name, lossless=bool(getattr(policy, "lossless", True)),
                     capacity=getattr(capacity, "name", str(capacity)), R=R, steps=steps,
                     throughput=thr, per_user=thr / R, budget=tot_ver / (steps * R),
                     batch=sum_B / steps, tau=tot_tok / (steps * R),
                     acceptance_rate=tot_acc / tot_ver if tot_ver else 0.0,
                     step_ms=tot_time / steps * 1e3, sched_us=sched / steps * 1e6,
                     budget_trace=btrace)


def sweep(pool: TracePool, policies: Sequence, capacity, loads: Sequence[int], steps: int,
          seed: int = 0, progress=None) -> list[SimResult]:
    """Every policy at every R (same seed per R, so policies replay the same rounds)."""
    out = []
    for R in loads:
        for pol in policies:
            out.append(simulate(pool, pol, capacity, int(R), steps,
                                torch.Generator().manual_seed((seed + int(R)) % _SEED_MOD)))
            if progress is not None:
                progress(out[-1])
    return out


def frontier(results: Sequence[SimResult]) -> dict[str, list[tuple[float, float, int]]]:
    """Per policy: (per-user tok/s, throughput tok/s, R) sorted by per-user speed."""
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(r.policy, []).append((r.per_user, r.throughput, r.R))
    return {k: sorted(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- live integration
class SimulatedBackground:
    """The other R − 1 requests of a live session, replayed from a trace pool.

    Implements the engine's ``Background`` protocol: ``views()`` are their current rounds'
    confidences (stable until ``advance``), ``advance(decisions)`` commits their rounds with
    the ℓ the joint decision gave them. Totals are kept for display. The capacity curve is the
    live policy's (the background only supplies requests).
    """

    def __init__(self, pool: TracePool, n_others: int, *, seed: int = 0) -> None:
        if not 0 <= n_others < MAX_LOAD:
            raise SimError(f"n_others must be in [0, {MAX_LOAD - 1}], got {n_others}")
        self.pool, self.n_others = pool, int(n_others)
        self.gen = torch.Generator().manual_seed(seed % _SEED_MOD)
        self._rep = _Replay(pool, self.n_others, self.gen) if n_others else None
        self.steps = self.tokens = self.accepted = self.verified = 0
        self.sim_time_s = 0.0
        self.last_ells: list[int] = []

    def views(self) -> list[RequestView]:
        return self._rep.views() if self._rep is not None else []

    def advance(self, decisions: Sequence[Decision]) -> None:
        if len(decisions) != self.n_others:
            raise SimError(f"background got {len(decisions)} decisions for {self.n_others} requests")
        ells = [d.ell for d in decisions]
        self.last_ells = ells
        self.steps += 1
        if self._rep is not None:
            tok, acc = self._rep.advance(ells)
            self.tokens += tok
            self.accepted += acc
            self.verified += sum(ells)

    @property
    def mean_budget(self) -> float:
        return self.verified / (self.steps * self.n_others) if self.steps and self.n_others else 0.0


__all__ = ["TracePool", "PoolRound", "SimResult", "SimError", "simulate", "sweep", "frontier",
           "SimulatedBackground", "MAX_LOAD", "MAX_STEPS"]

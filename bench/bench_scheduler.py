"""Benchmark: scheduler cost per step, and a load sweep of the policies under a capacity preset.

1. Cost of one ``decide`` at R requests × γ positions (median over repeats, this CPU), for
   Algorithm 1 with and without building the trace explanation, the async variant and the
   retrospective search.
2. With a capacity preset (default H200-like ``h200-qwen3-8b``) and a trace pool, throughput,
   per-user speed and verify budget of Algorithm 1, async, fixed(γ) and MTP-1 (fixed(1)) at
   R ∈ {1, 8, 32, 128, 256}, in one run; rows where the scheduler is below a fixed baseline
   are flagged.

Traces: ``--traces`` (files/dirs recorded with fixed(γ), ideally from a trained drafter);
without it, traces are recorded here from a tiny random target and an untrained drafter
(low acceptance — mechanics only), which the output says.

    python bench/bench_scheduler.py [--traces DIR] [--capacity h200-qwen3-8b] [--steps 200]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.decision import RequestView
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.decoding.policy import Fixed
from dspark_viz.decoding.scheduler import AsyncDelayed, HardwareAware, Retrospective
from dspark_viz.drafter.registry import untrained_drafter
from dspark_viz.load.capacity import resolve_capacity
from dspark_viz.load.simulator import TracePool, sweep
from dspark_viz.targets import tiny_target


def cost(R: int, gamma: int, cap, reps: int) -> None:
    rng = np.random.default_rng(0)
    views = [RequestView(rng.uniform(0.3, 1.0, gamma), gamma) for _ in range(R)]
    print(f"## scheduler cost per step (R={R}, γ={gamma}, capacity {cap.name}, median of {reps})")
    for pol in (HardwareAware(record_path=False), HardwareAware(record_path=True),
                AsyncDelayed(record_path=False), Retrospective(record_path=False)):
        for _ in range(10):
            pol.decide(views, cap)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            d = pol.decide(views, cap)
            ts.append((time.perf_counter() - t0) * 1e3)
        print(f"  {pol.name:<24} explanation={'yes' if pol.record_path else 'no ':<4} "
              f"{statistics.median(ts):7.3f} ms/step   (mean ℓ {np.mean([x.ell for x in d]):.2f})")


def record_tiny(n: int, gamma: int) -> list:
    t = tiny_target(family="qwen3", vocab_size=320, seed=0)
    d = untrained_drafter(t)
    return [SpecSession(t, d, DecodeConfig(gamma=gamma, temperature=1.0, max_new_tokens=64,
                                           seed=i), policy=Fixed(gamma)).run(f"prompt {i}: ")
            for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", nargs="*", default=None)
    ap.add_argument("--capacity", default="h200-qwen3-8b")
    ap.add_argument("--context-len", type=int, default=2048)
    ap.add_argument("--gamma", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--loads", default="1,8,32,128,256")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cap = resolve_capacity(a.capacity, context_len=a.context_len)
    cost(256, a.gamma, cap, a.reps)

    if a.traces:
        pool, src = TracePool.from_paths(a.traces), f"traces {a.traces}"
    else:
        pool = TracePool.from_traces(record_tiny(6, a.gamma))
        src = "tiny random target + UNTRAINED drafter (low acceptance; mechanics only)"
    print(f"\n## load sweep: capacity {cap.name} (context {cap.context_len}), pool {pool.n_rounds} "
          f"rounds, γ={pool.gamma}, {src}")
    print(f"   expected accepted drafts at fixed ℓ=γ: {pool.acceptance_at(pool.gamma):.2f}; "
          f"at ℓ=1: {pool.acceptance_at(1):.2f}")
    pols = [HardwareAware(record_path=False), AsyncDelayed(record_path=False),
            Fixed(pool.gamma), Fixed(1)]
    loads = [int(x) for x in a.loads.split(",")]
    res = sweep(pool, pols, cap, loads, a.steps, seed=0)
    print(f"| R | policy | throughput tok/s | per-user tok/s | budget ℓ | τ |")
    print("|---|---|---|---|---|---|")
    for r in res:
        print(f"| {r.R} | {r.policy} | {r.throughput:.0f} | {r.per_user:.1f} | {r.budget:.2f} | "
              f"{r.tau:.2f} |")
    print("(τ = accepted draft tokens + 1 target token per request per step; budget = mean ℓ "
          "verified draft tokens per request per step; times from the capacity model)")
    for R in loads:
        row = {r.policy: r for r in res if r.R == R}
        best_fixed = max(row[p.name].throughput for p in pols[2:])
        for s in ("hardware", "async"):
            if row[s].throughput < best_fixed * (1 - 1e-9):
                print(f"NOTE: at R={R} {s} ({row[s].throughput:.0f} tok/s) is below the best fixed "
                      f"baseline ({best_fixed:.0f} tok/s)")


if __name__ == "__main__":
    main()

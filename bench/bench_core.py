"""Benchmark (issue 2): time breakdown of one DSpark round and plain AR speed on this machine.

Measures, on the embedded Gemma 3 270M with the default drafter at γ = 7 (T = 0): the drafter's
parallel pass, the Markov loop, verification and trace recording per round, the Markov loop's
share of the round, and plain target decoding tokens/s — side by side in one run.

    python bench/bench_core.py [--rounds 12] [--threads N] [--drafter default|random|PATH]
                               [--out bench/results_core.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.targets import load_target

PROMPT = "def quicksort(items):\n    \"\"\"Sort a list of numbers.\"\"\"\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--drafter", default="default")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    target = load_target("embedded")
    drafter, label = resolve_drafter(a.drafter, target)
    cfg = DecodeConfig(gamma=7, max_new_tokens=10_000, temperature=0.0)
    s = SpecSession(target, drafter, cfg, drafter_name=label)
    s.prefill(PROMPT)
    s.step()  # warm-up
    rows = []
    for _ in range(a.rounds):
        t = time.perf_counter()
        r = s.step()
        wall = (time.perf_counter() - t) * 1e3
        rows.append(dict(draft=r.timings.draft_ms, markov=r.timings.markov_ms,
                         verify=r.timings.verify_ms, total=wall))
    med = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
    other = med["total"] - med["draft"] - med["markov"] - med["verify"]
    ar = SpecSession(target, None, DecodeConfig(mode="ar", max_new_tokens=33))
    ar.prefill(PROMPT)
    t = time.perf_counter()
    while not ar.done:
        ar.step()
    ar_tps = 32 / (time.perf_counter() - t)
    res = dict(device=str(target.device), torch=torch.__version__, threads=torch.get_num_threads(),
               cpu=platform.processor() or platform.machine(), drafter=label, gamma=7,
               median_ms=dict(draft_pass=med["draft"], markov_loop=med["markov"],
                              verify=med["verify"], recording_and_other=other,
                              round_total=med["total"]),
               markov_share=med["markov"] / med["total"], ar_tokens_per_s=ar_tps,
               rounds=a.rounds, load_average=list(__import__("os").getloadavg()))
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

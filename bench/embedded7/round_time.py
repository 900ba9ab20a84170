"""Session 7 (issue 6, S7.4): mean per-round timings of SpecSession (drafting, Markov loop, verify,
total) for plain and DSpark decoding, T = 0, 64 tokens, the first eval prompt of each domain, one
thread, the hardware policy on session 6's 1-thread curve. Run from the repository root:
    OMP_NUM_THREADS=1 python bench/embedded7/round_time.py
"""
import torch
torch.set_num_threads(1)
from dspark_viz.targets import load_target
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.decoding.policy import parse_policy
from dspark_viz.config import DecodeConfig
from dspark_viz.eval.prompts import builtin_sets
T = load_target("embedded")
D, _ = resolve_drafter("default", T, kind="dspark")
prompts = [v[0] for v in builtin_sets().values()]
pol = parse_policy("hardware:bench/embedded6/cpu_curve_step_1t.json", 7)
for mode in ["ar", "dspark"]:
    tot = {}
    for i, p in enumerate(prompts):
        s = SpecSession(T, D if mode != "ar" else None, DecodeConfig(gamma=7, temperature=0.0, max_new_tokens=64, seed=0, mode=mode), policy=pol)
        tr = s.run(p)
        for r in s.rounds:
            t = r.timings
            for k in ("draft_ms", "markov_ms", "schedule_ms", "verify_ms", "total_ms"):
                tot[k] = tot.get(k, 0) + getattr(t, k)
        tot["rounds"] = tot.get("rounds", 0) + len(s.rounds)
        tot["tokens"] = tot.get("tokens", 0) + len(s.generated)
        tot["wall"] = tot.get("wall", 0) + s._wall
    n = tot["rounds"]
    print(mode, {k: round(v / n, 2) for k, v in tot.items() if k.endswith("ms")}, "rounds", n, "tokens", tot["tokens"], "wall", round(tot["wall"], 2), "tok/s", round(tot["tokens"] / tot["wall"], 2))

"""Session 7 (issue 6, S7.4): torch-profiler table (self CPU time by op and input shape) of 15
speculative rounds (ar or dspark, first argument) on the first code eval prompt after 3 warm-up
rounds, one thread. Run from the repository root:
    OMP_NUM_THREADS=1 python bench/embedded7/round_profile.py dspark
"""
import sys, torch
torch.set_num_threads(1)
from dspark_viz.targets import load_target
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.decoding.policy import parse_policy
from dspark_viz.config import DecodeConfig
from dspark_viz.eval.prompts import builtin_sets
T = load_target("embedded")
D, _ = resolve_drafter("default", T, kind="dspark")
p = list(builtin_sets().values())[0][0]
mode = sys.argv[1]
pol = parse_policy("hardware:bench/embedded6/cpu_curve_step_1t.json", 7)
s = SpecSession(T, D if mode != "ar" else None, DecodeConfig(gamma=7, temperature=0.0, max_new_tokens=200, seed=0, mode=mode), policy=pol)
s.prefill(p)
for _ in range(3): s.step()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for _ in range(15):
        s.step()
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30))

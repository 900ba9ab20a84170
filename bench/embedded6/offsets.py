"""Issue 4: where the shipped confidence head over-predicts — mean c₁ against the observed
first-draft acceptance of saved T = 0 calibration rounds, by position in the answer, by absolute
position (prompt + answer), and by prompt source.

    python bench/embedded6/offsets.py PROMPTS.jsonl[,…] TRACE_DIR [TRACE_DIR …]

PROMPTS: the calibration prompt files (for each trace's source, matched on the request text).
"""
import json
import sys
from pathlib import Path

import numpy as np

from dspark_viz.decoding.trace import Trace

src = {}
for f in sys.argv[1].split(","):
    for line in open(f, encoding="utf-8"):
        o = json.loads(line)
        src[o["turns"][0].strip()] = o["source"]
rows = []  # (answer position, absolute position, c1, accepted ≥ 1, source)
for d in sys.argv[2:]:
    for f in sorted(Path(d).rglob("*.json")):
        tr = Trace.load(f)
        s, P = src.get(tr.meta.prompt.strip(), "?"), len(tr.meta.prompt_ids)
        for r in tr.rounds:
            if r.draft and r.draft[0].conf_raw is not None:
                rows.append((r.anchor_pos - P, r.anchor_pos, r.draft[0].conf_raw,
                             float(r.n_accepted >= 1), s))
ans = np.array([r[0] for r in rows])
ab = np.array([r[1] for r in rows])
c1 = np.array([r[2] for r in rows])
y = np.array([r[3] for r in rows])
so = np.array([r[4] for r in rows])


def line(name, m):
    print(f"{name:<28} {m.sum():>6} {c1[m].mean():>7.3f} {y[m].mean():>7.3f} {y[m].mean() - c1[m].mean():>+7.3f}")


print(f"{len(rows)} rounds")
print(f"{'group':<28} {'rounds':>6} {'mean c1':>7} {'obs':>7} {'gap':>7}")
for lo, hi in [(0, 32), (32, 64), (64, 96), (96, 128), (128, 170)]:
    line(f"answer position {lo}–{hi}", (ans >= lo) & (ans < hi))
for lo, hi in [(0, 128), (128, 256), (256, 384), (384, 10_000)]:
    line(f"absolute position {lo}–{hi}", (ab >= lo) & (ab < hi))
for lo, hi in [(0, 128), (128, 170)]:
    for alo, ahi in [(0, 384), (384, 10_000)]:
        line(f"answer {lo}–{hi}, abs {alo}–{ahi}", (ans >= lo) & (ans < hi) & (ab >= alo) & (ab < ahi))
for s in sorted(set(so)):
    line(f"source {s}", so == s)

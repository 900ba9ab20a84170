"""Issue 4 diagnostic: is the confidence head's k = 1 over-prediction in decoding a shift in *which
positions become round anchors*?

    python bench/embedded5/anchor_shift.py TRACES_DIR [--n 40] [--out anchor_shift.json]

For each saved calibration trace (``calibrate --save-traces``; T = 0, fixed γ), the decoded text
(prompt + answer) is run once through the target with the drafter's taps; then *every* answer
position a is drafted teacher-forced (context = target taps of positions < a, exactly as in
decoding), and its raw c_1..c_γ and the greedy matches against the true continuation are kept.
The positions where the trace started a round are flagged. Printed: mean c_k vs observed
conditional acceptance at round anchors and at all positions — the head is trained on the
latter (uniform anchors), calibrated and used on the former.
"""
from __future__ import annotations

import argparse
import glob
import json

import numpy as np
import torch

from dspark_viz.drafter.model import ContextCache, DSparkDrafter
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.targets import load_target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("traces")
    ap.add_argument("--drafter", default="default")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--out", default=None)
    ap.add_argument("--bf16-taps", action="store_true", help="round the taps to bf16 (as the training cache stores them)")
    ap.add_argument("--samples", action="store_true",
                    help="TRACES is a regenerated-samples JSONL (input_ids, loss_spans): no round flags")
    a = ap.parse_args()
    torch.set_num_threads(1)
    t = load_target("embedded")
    if a.drafter == "default":
        d, _ = resolve_drafter("default", t)
    else:
        d = DSparkDrafter.from_pretrained(a.drafter, target=t)
    d = d.float().eval()
    if a.samples:
        files = [json.loads(line) for line in open(a.traces)][: a.n]
    else:
        files = sorted(glob.glob(f"{a.traces}/**/*.json", recursive=True))[: a.n]
    rows = []  # (is_round, conf logits [γ], match [γ] (−1 past the end))
    g = 7
    for f in files:
        if a.samples:
            s, e = f["loss_spans"][0]
            ids, P, anchors = f["input_ids"][:e], f["input_ids"][:s], set()
        else:
            tr = json.load(open(f))
            g = tr["meta"]["gamma"]
            P = tr["meta"]["prompt_ids"]
            gen = [tr["meta"]["first_token"]] + [c for r in tr["rounds"] for c in r["committed"]]
            ids = P + gen
            anchors = {r["anchor_pos"] for r in tr["rounds"]}
        with torch.inference_mode():
            out = t.forward(torch.tensor([ids]), t.new_cache(), d.cfg.target_layer_ids)
            full = ContextCache()
            taps = out.taps.bfloat16().float() if a.bf16_taps else out.taps
            d.extend_context(full, taps)
            for pos in range(len(P), len(ids) - 1):
                ctx = ContextCache(list(full.kv), full.length)
                d.crop_context(ctx, pos)  # views of the full cache, positions < pos
                p = d.propose(t, ctx, torch.tensor([ids[pos]]), gamma=g, temperature=0.0,
                              candidates=256)
                truth = ids[pos + 1: pos + 1 + g]
                dr = p.tokens[0].tolist()
                m = [int(dr[k] == truth[k]) if k < len(truth) else -1 for k in range(g)]
                rows.append((pos in anchors, p.conf_logit[0].double().tolist(), m))
    temps = d.calibration or [1.0] * g
    R = np.array([r[0] for r in rows])
    Z = np.array([r[1] for r in rows])
    M = np.array([r[2] for r in rows])
    res = {"files": len(files), "positions": int(len(R)), "round_anchors": int(R.sum()), "k": []}
    print(f"{len(files)} traces, {len(R)} positions, {R.sum()} round anchors")
    for k in range(g):
        c = 1 / (1 + np.exp(-Z[:, k] / temps[k]))
        # conditional: rows whose first k drafts all matched (k = 0: all rows) and slot k exists
        ok = (M[:, k] >= 0) & (np.all(M[:, :k] == 1, axis=1) if k else True)
        line = {"k": k + 1}
        for name, sel in (("rounds", ok & R), ("all", ok)):
            line[name] = {"n": int(sel.sum()), "mean_c": float(c[sel].mean()),
                          "observed": float(M[sel, k].mean())}
        res["k"].append(line)
        print(f"k={k+1}: rounds n={line['rounds']['n']:5d} c {line['rounds']['mean_c']:.3f} obs "
              f"{line['rounds']['observed']:.3f} | all n={line['all']['n']:5d} c {line['all']['mean_c']:.3f} "
              f"obs {line['all']['observed']:.3f}")
    c1 = 1 / (1 + np.exp(-Z[:, 0] / temps[0]))
    sel = M[:, 0] >= 0
    for lo in np.arange(0, 1, 0.1):
        b = sel & (c1 >= lo) & (c1 < lo + 0.1)
        if b.sum():
            print(f"  k=1 bin {lo:.1f}: n={b.sum():5d} c {c1[b].mean():.3f} obs {M[b, 0].mean():.3f}")
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()

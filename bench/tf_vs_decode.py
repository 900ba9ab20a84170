"""Engine check (issue 6): T = 0 drafting teacher-forced from the same anchors vs live decoding.

    python bench/tf_vs_decode.py DRAFTER_DIR --samples runs/emb2/regen-val.jsonl [--n 4]

For the first N regenerated samples (the target's own greedy continuations, so live decoding
from the prompt writes the same text): every 3rd anchor of the first 60 answer positions is
drafted at T = 0 from a context cache holding the target's taps of positions < anchor
(exactly what training sees), and the number of leading drafts equal to the true
continuation is averaged; then the prompt is decoded live with γ = 7 and the mean accepted
drafts per round is printed beside it. Equal numbers mean the engine feeds the drafter what
training does.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.drafter.model import ContextCache, DSparkDrafter
from dspark_viz.targets import load_target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("drafter")
    ap.add_argument("--samples", required=True)
    ap.add_argument("--n", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t = load_target("embedded")
    d = DSparkDrafter.from_pretrained(a.drafter, target=t).float().eval()
    g = 7
    rows = [json.loads(line) for line in open(a.samples)][: a.n]
    for r in rows:
        ids = r["input_ids"]
        s, e = r["loss_spans"][0]
        out = t.forward(torch.tensor([ids]), None, d.cfg.target_layer_ids)
        hits = []
        with torch.inference_mode():
            for anchor in range(s, min(e - g - 1, s + 60), 3):
                cache = ContextCache()
                d.extend_context(cache, out.taps[:, :anchor])
                p = d.propose(t, cache, torch.tensor([ids[anchor]]), gamma=g, temperature=0.0,
                              candidates=256)
                drafts, truth = p.tokens[0].tolist(), ids[anchor + 1: anchor + 1 + g]
                n = 0
                while n < g and drafts[n] == truth[n]:
                    n += 1
                hits.append(n)
        tr = SpecSession(t, d, DecodeConfig(gamma=g, max_new_tokens=60)).run(ids[:s])
        print(f"{r['id']}: teacher-forced accepted/round {np.mean(hits):.2f} · "
              f"decoding accepted/round {np.mean([x.n_accepted for x in tr.rounds]):.2f}")


if __name__ == "__main__":
    main()

"""Held-out training metrics of the embedded drafters on a target cache (no decoding).

    python bench/heldout_embedded.py --cache runs/emb/cache-val \
        dspark_viz/assets/drafters/gemma3-270m-dspark dspark_viz/assets/drafters/gemma3-270m-dflash

For each drafter: ``trainer.evaluate`` on fixed anchors (seed 12345, 16 per sequence) of every
sequence of the cache — the analytic acceptance accept@k = mean (1 − ½‖p_d,k − p_t,k‖₁) per
block position (the restricted-vocabulary distance counts the target mass outside the draft
vocabulary), tau_prob = 1 + Σ_k Π_{i≤k} accept_i per block (the +1 target token), the CE and
TV terms and the share of labels outside the draft vocabulary. Teacher-forced on corpus text
(not the target's own generations), so it is an upper-level diagnostic, not τ of decoding.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("drafters", nargs="+", type=Path)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--target", default="embedded")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from dspark_viz.data.cache import TargetCache
    from dspark_viz.drafter.model import DSparkDrafter
    from dspark_viz.targets import load_target
    from dspark_viz.train.trainer import CacheSource, evaluate
    target = load_target(a.target)
    src = CacheSource(TargetCache(a.cache))
    out = {}
    for d in a.drafters:
        dr = DSparkDrafter.from_pretrained(d, target=target)
        m = evaluate(dr, target, src, max_samples=len(src), chunk_rows=1024)
        out[str(d)] = m
        acc = " ".join(f"{m[f'accept@{k}']:.3f}" for k in range(1, dr.cfg.block_size + 1))
        print(f"{d.name:<24} blocks {m['blocks']:>5}  tau_prob {m['tau_prob']:.3f}  tv {m['tv']:.3f}  "
              f"ce {m['ce']:.3f}  oov {m.get('oov_rate', 0):.3%}  accept@1..γ {acc}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

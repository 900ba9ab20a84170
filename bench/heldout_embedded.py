"""Teacher-forced acceptance of drafters on a target cache (no decoding).

    python bench/heldout_embedded.py --cache CACHE_DIR \\
        dspark_viz/assets/drafters/gemma3-270m-dspark dspark_viz/assets/drafters/gemma3-270m-dflash

For each drafter: ``trainer.evaluate`` on fixed anchors (16 per sequence, seeded) of every
sequence of the cache. accept@k = mean (1 − ½‖p_d,k − p_t,k‖₁) per block position (the analytic
T = 1 acceptance; the target mass outside a restricted draft vocabulary counts as rejected),
greedy@k = the share of blocks whose k-th draft is the target's argmax (T = 0), τ_prob and
τ_greedy = 1 + Σ_k Π_{i≤k} of those (the +1 target token), the CE and TV terms, and the share of
labels outside the draft vocabulary. Teacher forcing scores every anchor, not only the ones where
decoding starts a round, so this is a diagnostic beside decoding's τ, not τ itself.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dspark_viz.data.cache import TargetCache
from dspark_viz.drafter.model import DSparkDrafter
from dspark_viz.io import write_json_atomic
from dspark_viz.targets import load_target
from dspark_viz.train.source import CacheSource
from dspark_viz.train.trainer import evaluate


def _row(name: str, m: dict, gamma: int) -> str:
    acc = " ".join(f"{m[f'accept@{k}']:.3f}" for k in range(1, gamma + 1))
    line = (f"{name} blocks {m['blocks']:>5}  tau_prob {m['tau_prob']:.3f}  tv {m['tv']:.3f}  "
            f"ce {m['ce']:.3f}  oov {m.get('oov_rate', 0):.3%}  accept@1..γ {acc}")
    if "tau_greedy" in m:
        gr = " ".join(f"{m[f'greedy@{k}']:.3f}" for k in range(1, gamma + 1))
        line += f"\n  tau_greedy {m['tau_greedy']:.3f}  greedy@1..γ {gr}"
    return line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("drafters", nargs="+", type=Path)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--target", default="embedded")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    target = load_target(a.target)
    src = CacheSource(TargetCache(a.cache))
    out = {}
    for d in a.drafters:
        dr = DSparkDrafter.from_pretrained(d, target=target)
        m = evaluate(dr, target, src, max_samples=len(src), chunk_rows=1024)
        out[str(d)] = m
        print(_row(str(d), m, dr.cfg.block_size))
    if a.json:
        write_json_atomic(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

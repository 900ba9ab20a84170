"""Held-out ECE after STS over many prompt splits of one set of calibration traces.

``dspark-viz calibrate`` reports one split (``--seed``). A prompt's rounds are correlated, so
which prompts land in the held-out part moves the per-position ECE by more than its binomial
floor. This refits STS on each of ``--splits`` seeded splits (``--holdout`` of the prompts held
out, exactly as ``calibrate`` splits) and prints, per position: the seed-0 split (equal to
``calibrate``'s report), the median and the 10–90 % range over the splits, and the seed-0 floor;
then how many splits have every position ≤ 2 % and the median of each split's worst position.

    python bench/embedded_splits.py TRACES_DIR [TRACES_DIR …] --holdout 0.4 --splits 40 --json OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dspark_viz.decoding.trace import Trace
from dspark_viz.eval import calibration as C
from dspark_viz.io import write_json_atomic


def _concat(parts: list[C.CalibrationData], gamma: int) -> C.CalibrationData:
    def pad(x, v):
        return np.pad(x, ((0, 0), (0, gamma - x.shape[1])), constant_values=v)
    return C.CalibrationData(np.concatenate([pad(p.logits, 0.0) for p in parts]),
                             np.concatenate([pad(p.survived, 0.0) for p in parts]),
                             np.concatenate([pad(p.observed, False) for p in parts]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", type=Path, nargs="+", help="trace files or directories, in `calibrate --traces` order")
    ap.add_argument("--holdout", type=float, default=0.4)
    ap.add_argument("--splits", type=int, default=40)
    ap.add_argument("--bins", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    files = [f for p in a.traces for f in (sorted(p.rglob("*.json")) if p.is_dir() else [p])]
    pairs = [C.collect_pairs([Trace.load(f)]) for f in files]  # one CalibrationData per prompt
    g = max(p.gamma for p in pairs)
    rows = []
    for s in range(a.splits):
        fit_idx, ho_idx = C.split_rounds(len(pairs), a.holdout, s)
        fit = C.fit_sts(_concat([pairs[i] for i in fit_idx], g), n_bins=a.bins)
        rep = C.position_report(_concat([pairs[i] for i in ho_idx], g), fit.temperatures, a.bins)
        rows.append({"seed": s, "ece": [r["ece"] for r in rep], "floor": [r["ece_floor"] for r in rep],
                     "temperatures": list(fit.temperatures)})
    e = np.array([r["ece"] for r in rows])  # [splits, γ]
    print(f"{len(pairs)} prompts, {sum(len(p) for p in pairs)} rounds; {a.splits} splits, "
          f"{a.holdout:.0%} of the prompts held out each")
    print(f"{'k':>2} {'seed 0':>7} {'median':>7} {'10–90 %':>13} {'floor':>6}")
    for k in range(g):
        lo, hi = np.percentile(e[:, k], [10, 90])
        print(f"{k + 1:>2} {e[0, k]:>7.1%} {np.median(e[:, k]):>7.1%} {lo:>6.1%}–{hi:<6.1%} "
              f"{rows[0]['floor'][k]:>6.1%}")
    ok = (e <= 0.02).all(axis=1)
    print(f"splits with every position ≤ 2 %: {ok.sum()}/{a.splits}; worst position per split, "
          f"median {np.median(e.max(axis=1)):.1%}")
    if a.json:
        write_json_atomic(a.json, {"holdout": a.holdout, "bins": a.bins, "splits": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

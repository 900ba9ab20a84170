"""Held-out ECE of STS over many prompt splits of one set of calibration traces (issue 4).

`calibrate` reports one split (--seed); with ~60 held-out prompts, which prompts land in the
held-out part moves the per-position ECE by more than the binomial floor, because a prompt's
rounds are correlated. This refits STS on each of --splits random splits (same --holdout) and
prints, per position, the held-out ECE after STS: the seed-0 split, the median and the 10–90 %
range, with the floor (ece_floor) of the seed-0 split.

    python bench/embedded4/splits.py runs/emb4/cal-conf-traces --holdout 0.4 --splits 40
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dspark_viz.decoding.trace import Trace
from dspark_viz.eval import calibration as C


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("traces", type=Path, nargs="+")
    ap.add_argument("--holdout", type=float, default=0.4)
    ap.add_argument("--splits", type=int, default=40)
    ap.add_argument("--bins", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    files = [f for p in a.traces for f in (sorted(p.rglob("*.json")) if p.is_dir() else [p])]
    traces = [Trace.load(f) for f in files]
    pairs = [C.collect_pairs([t]) for t in traces]  # one CalibrationData per prompt
    g = max(p.gamma for p in pairs)

    def cat(idx):
        parts = [pairs[i] for i in idx]
        pad = lambda x, v: np.pad(x, ((0, 0), (0, g - x.shape[1])), constant_values=v)
        return C.CalibrationData(np.concatenate([pad(p.logits, 0.0) for p in parts]),
                                 np.concatenate([pad(p.survived, 0.0) for p in parts]),
                                 np.concatenate([pad(p.observed, False) for p in parts]))

    rows = []
    for s in range(a.splits):
        fit_idx, ho_idx = C.split_rounds(len(traces), a.holdout, s)
        fit = C.fit_sts(cat(fit_idx), n_bins=a.bins)
        rep = C.position_report(cat(ho_idx), fit.temperatures, a.bins)
        rows.append({"seed": s, "ece": [r["ece"] for r in rep], "floor": [r["ece_floor"] for r in rep],
                     "temperatures": fit.temperatures})
    e = np.array([r["ece"] for r in rows])  # [splits, γ]
    print(f"{len(traces)} prompts, {sum(len(p) for p in pairs)} rounds; {a.splits} splits, "
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
        a.json.write_text(json.dumps({"holdout": a.holdout, "bins": a.bins, "splits": rows}, indent=1))


if __name__ == "__main__":
    main()

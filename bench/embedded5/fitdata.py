"""Session 5 (issue 4): confidence-head data from the STS *fitting* prompts' own decodes.

    python bench/embedded5/fitdata.py TRACES_DIR OUT.jsonl [--holdout 0.4 --seed 0]

The calibration traces (``calibrate --save-traces``, T = 0) hold the target's greedy answer to each
calibration prompt (160 tokens). This writes, for the prompts ``calibrate --traces TRACES_DIR
--holdout H --seed S`` *fits* STS on (the same file order and split), the samples
``{"id", "input_ids": prompt + answer, "loss_spans": [[len(prompt), len]]}`` that ``prepare
cache`` takes. The held-out prompts — the ones the ECE is reported on — are never written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dspark_viz.eval.calibration import split_rounds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("traces", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--holdout", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    files = sorted(a.traces.rglob("*.json"))  # the order `calibrate --traces` reads them in
    fit, held = split_rounds(len(files), a.holdout, a.seed)
    with open(a.out, "w") as f:
        for i in fit:
            tr = json.loads(files[i].read_text())
            p = tr["meta"]["prompt_ids"]
            gen = [tr["meta"]["first_token"]] + [c for r in tr["rounds"] for c in r["committed"]]
            f.write(json.dumps({"id": f"calfit-{i:04d}", "source": "calibration-fit",
                                "input_ids": p + gen, "loss_spans": [[len(p), len(p) + len(gen)]]})
                    + "\n")
    print(f"{len(fit)} fitting prompts written to {a.out}; {len(held)} held-out prompts left out")


if __name__ == "__main__":
    main()

"""Issue 4 diagnostic: the confidence head's k = 1 bias per prompt source, from saved calibration
traces (``calibrate --save-traces``) and the prompt files they were decoded from, in order.

    python bench/embedded5/by_source.py runs/emb4/cal-conf2-traces/part1 runs/emb4/calset1.jsonl \
        runs/emb4/cal-conf2-traces/part2 runs/emb4/calset2.jsonl

Prints, per source: rounds, their share, mean raw c_1, the observed first-draft acceptance and
the gap. A linear head on [h_k; e] cannot see the source, so its net bias on a prompt set is the
round-weighted mix of these gaps — which is why the head's training requests were re-mixed to the
calibration set's shares (``mix.py``).
"""
from __future__ import annotations

import collections
import glob
import json
import sys


def main(args: list[str]) -> None:
    if len(args) % 2 or not args:
        sys.exit("usage: by_source.py TRACES_DIR PROMPTS.jsonl [TRACES_DIR PROMPTS.jsonl ...]")
    stats = collections.defaultdict(lambda: [0, 0.0, 0])
    for tdir, pfile in zip(args[::2], args[1::2]):
        rows = [json.loads(line) for line in open(pfile)]
        files = sorted(glob.glob(f"{tdir}/*.json"))
        if len(rows) != len(files):
            sys.exit(f"{tdir}: {len(files)} traces for {len(rows)} prompts in {pfile}")
        for r, f in zip(rows, files):
            for rd in json.load(open(f))["rounds"]:
                if rd["draft"] and rd["verify"]:
                    s = stats[r.get("source", "?")]
                    s[0] += 1
                    s[1] += rd["draft"][0]["conf_raw"]
                    s[2] += int(rd["verify"][0]["accepted"])
    total = sum(s[0] for s in stats.values())
    print(f"{'source':14s} {'rounds':>7s} {'share':>6s} {'mean c1':>8s} {'observed':>8s} {'gap':>7s}")
    for k, (n, c, a) in sorted(stats.items(), key=lambda kv: -kv[1][0]):
        print(f"{k:14s} {n:7d} {n / total:6.1%} {c / n:8.3f} {a / n:8.3f} {a / n - c / n:+7.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

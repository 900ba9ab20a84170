"""Session 5 (issue 4): the confidence head's training requests re-mixed by source to match the
calibration prompts' mix of *rounds*.

The stage-4 head was trained on 557 regenerated requests (stdlib 236, pydoc 71, arithmetic 250);
the calibration set (val.jsonl + calib-b.jsonl, 156 prompts) decodes 43 % of its rounds on stdlib,
37 % on pydoc, 18 % on arithmetic, 2 % on instructions. Per source the head is off by about
±3 points at k = 1 (stdlib/pydoc over-predicted, arithmetic under-predicted: a linear head on
[h_k; e] cannot tell the sources apart), so the mix sets its net bias on the calibration rounds.
This writes the same requests split by source: std.jsonl (all 236), py.jsonl (all 71, cached
once and given to `train` three times), ar.jsonl (110 of 250, seed 5). Run from runs/emb5/.
"""
import json
import random

rows = []
for f in ["../emb4/regen-a1.jsonl", "../emb4/regen-a2.jsonl", "../emb4/regen-c1.jsonl",
          "../emb4/regen-c2.jsonl"]:
    rows += [json.loads(line) for line in open(f)]
by: dict[str, list] = {}
for r in rows:
    by.setdefault(r["source"], []).append(r)
print({k: len(v) for k, v in by.items()})
ar = by["arithmetic"][:]
random.Random(5).shuffle(ar)
for name, sel in (("std.jsonl", by["stdlib"]), ("py.jsonl", by["pydoc"]), ("ar.jsonl", ar[:110])):
    with open(name, "w") as f:
        for r in sel:
            f.write(json.dumps(r) + "\n")
    print(name, len(sel))

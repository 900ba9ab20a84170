"""Session 6 (issue 4): a second, disjoint set of held-out calibration prompts, drawn like
runs/emb4/calset.jsonl (same sources, turn form, no raw ``text``): the fresh pydoc
and instruction pools are all but spent (17 and 0 left), so it takes every fresh pydoc paragraph and
twice calset's stdlib and arithmetic counts (116 and 70, calset's 58 : 35 ratio), none of whose ids or first-turn requests occurs in any JSONL file
under runs/ (every prompt, regeneration and calibration set of sessions 1–5).

    python bench/embedded6/make_calset3.py runs/ runs/emb9/calset3   # writes calset3_{1,2}.jsonl

Session 7 drew a third set the same way with another seed and mix (pydoc and instructions spent):

    python bench/embedded6/make_calset3.py runs/ runs/emb10/calset4 --seed 71 \
        --mix stdlib=130,pydoc=0,arithmetic=80,instructions=0
"""
import argparse
import json
import random
from collections import Counter
from pathlib import Path

from dspark_viz.data import sources as S

ap = argparse.ArgumentParser()
ap.add_argument("root", type=Path)
ap.add_argument("out")
ap.add_argument("--seed", type=int, default=61)
ap.add_argument("--mix", default="stdlib=116,pydoc=58,arithmetic=70,instructions=5")
a = ap.parse_args()
root, out, seed = a.root, a.out, a.seed
seen_ids, seen_req = set(), set()
for f in root.rglob("*.jsonl"):
    for line in open(f, encoding="utf-8"):
        try:
            o = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(o, dict):
            if "id" in o:
                seen_ids.add(str(o["id"]))
            if o.get("turns"):
                seen_req.add(str(o["turns"][0]).strip())
print(f"{len(seen_ids)} ids, {len(seen_req)} requests seen")
pools = {"stdlib": S.stdlib_code(100_000, seed), "pydoc": S.pydoc_prose(100_000, seed),
         "arithmetic": S.arithmetic(2000, seed), "instructions": S.instructions(None, seed)}
mix = {k: int(v) for k, v in (kv.split("=") for kv in a.mix.split(","))}
rows = []
for src, ps in pools.items():
    fresh = [p for p in ps if p.id not in seen_ids and p.turns[0].strip() not in seen_req]
    print(src, len(ps), "fresh", len(fresh))
    random.Random(seed).shuffle(fresh)
    for p in fresh[:mix.get(src, 0)]:
        d = p.to_dict()
        d.pop("text", None)
        rows.append(d)
random.Random(seed + 1).shuffle(rows)
half = len(rows) // 2
for i, part in enumerate((rows[:half], rows[half:]), 1):
    with open(f"{out}_{i}.jsonl", "w", encoding="utf-8") as f:
        for d in part:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
print(len(rows), Counter(d["source"] for d in rows))

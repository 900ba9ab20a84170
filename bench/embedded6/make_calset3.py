"""Session 6 (issue 4): a second, disjoint set of held-out calibration prompts, drawn like
runs/emb4/calset.jsonl (same sources, turn form, no raw ``text``): the fresh pydoc
and instruction pools are all but spent (17 and 0 left), so it takes every fresh pydoc paragraph and
twice calset's stdlib and arithmetic counts (116 and 70, calset's 58 : 35 ratio), none of whose ids or first-turn requests occurs in any JSONL file
under runs/ (every prompt, regeneration and calibration set of sessions 1–5).

    python bench/embedded6/make_calset3.py runs/ runs/emb9/calset3   # writes calset3_{1,2}.jsonl
"""
import json
import random
import sys
from collections import Counter
from pathlib import Path

from dspark_viz.data import sources as S

root, out = Path(sys.argv[1]), sys.argv[2]
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
pools = {"stdlib": S.stdlib_code(100_000, 61), "pydoc": S.pydoc_prose(100_000, 61),
         "arithmetic": S.arithmetic(2000, 61), "instructions": S.instructions(None, 61)}
mix = {"stdlib": 116, "pydoc": 58, "arithmetic": 70, "instructions": 5}
rows = []
for src, ps in pools.items():
    fresh = [p for p in ps if p.id not in seen_ids and p.turns[0].strip() not in seen_req]
    print(src, len(ps), "fresh", len(fresh))
    random.Random(61).shuffle(fresh)
    for p in fresh[:mix[src]]:
        d = p.to_dict()
        d.pop("text", None)
        rows.append(d)
random.Random(62).shuffle(rows)
half = len(rows) // 2
for i, part in enumerate((rows[:half], rows[half:]), 1):
    with open(f"{out}_{i}.jsonl", "w", encoding="utf-8") as f:
        for d in part:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
print(len(rows), Counter(d["source"] for d in rows))

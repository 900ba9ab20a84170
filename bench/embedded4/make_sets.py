"""Session 4: fresh stdlib / pydoc / arithmetic / instructions prompts (seed 23) in the form the
calibration decodes (turns only, no raw `text`), none in any earlier set (ids and exact requests):
conf-a.jsonl trains the confidence head, calib-b.jsonl joins runs/emb/prompts/val.jsonl as held-out
calibration prompts. calib-b follows val.jsonl's mix as far as the fresh pools go (pydoc: 72 fresh, instructions: none)."""
import json, random
seen_ids, seen_req = set(), set()
for f in ["../emb/prompts/train.jsonl", "../emb/prompts/val.jsonl", "../emb/prompts/calib.jsonl",
          "../emb3/conf-prompts.jsonl", "../emb3/conf2-prompts.jsonl"]:
    for l in open(f):
        o = json.loads(l); seen_ids.add(o["id"]); seen_req.add(o["turns"][0].strip())
by = {}
for l in open("fresh/train.jsonl"):
    o = json.loads(l)
    if o["id"] in seen_ids or o["turns"][0].strip() in seen_req:
        continue
    o.pop("text", None)
    by.setdefault(o["source"], []).append(o)
print({k: len(v) for k, v in by.items()})
rng = random.Random(23)
for v in by.values():
    rng.shuffle(v)
mix_b = {"stdlib": 36, "pydoc": 36, "arithmetic": 22}   # val.jsonl's mix as far as the fresh pools go
mix_a = {"stdlib": 150, "pydoc": 36, "arithmetic": 100}
def take(mix):
    out = []
    for s, c in mix.items():
        out += by[s][:c]; by[s] = by[s][c:]
    return out
b = take(mix_b)
a = take(mix_a)
for name, rows in (("calib-b.jsonl", b), ("conf-a.jsonl", a)):
    with open(name, "w") as f:
        for o in rows:
            f.write(json.dumps(o) + "\n")
    print(name, len(rows), {s: sum(o["source"] == s for o in rows) for s in mix_a})

"""Build runs/emb3/conf2-prompts.jsonl, the confidence-head data of session 3 (run from runs/emb3/).

The 293 fresh stdlib / pydoc / arithmetic prompts of `prepare prompts ... --n 150 --seed 11`
(conf-prompts.jsonl: those not in runs/emb/prompts/{train,val,calib}.jsonl nor near an eval
prompt) without their raw `text`, so regeneration sees the request itself, plus builtin:tasks
seed 7 requests that are not in stage 3's set (160 of 330).
"""
import json

from dspark_viz.data.sources import tasks

s3 = set(json.loads(l)["id"] for f in ("prompts-tasks/train.jsonl", "prompts-tasks/val.jsonl") for l in open(f))
rows = []
for line in open("conf-prompts.jsonl"):
    o = json.loads(line)
    o.pop("text", None)
    rows.append(o)
new = [p for p in tasks(330, seed=7) if p.id not in s3]
rows += [p.to_dict() for p in new[:300]]
with open("conf2-prompts.jsonl", "w") as f:
    for o in rows:
        f.write(json.dumps(o) + "\n")
print(len(rows))

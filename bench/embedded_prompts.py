"""The prompt files of the embedded drafters' recipe (dspark_viz/assets/drafters/RECIPE.md).

Every step of the recipe that is not a ``dspark-viz`` command is one subcommand here. None of
them loads a model; all are deterministic (seeded ``random.Random``, file order):

- ``halves SRC A B --seed S [--drop-source P]``: shuffle the lines of SRC and write every
  other line to A and to B (two writers decode or cache in parallel); ``--drop-source`` leaves
  out the records whose ``source`` starts with P first.
- ``fresh SRC OUT --seen F…``: the records of SRC whose id and first-turn request occur in no
  seen file and that are not near a held-out eval prompt (``sources.near_duplicate``).
- ``conf3 CONF_PROMPTS TASKS_DIR OUT``: stage 3's confidence-head requests — CONF_PROMPTS in turn
  form (raw ``text`` dropped) plus the ``builtin:tasks`` seed-7 requests not in stage 3's set.
- ``sets4 FRESH --seen F… --calib-b OUT --conf-a OUT``: stage 4's two fresh sets, drawn per
  source from FRESH (turn form): 94 calibration prompts, then 286 confidence-head requests.
- ``calset ROOT OUT [--seed S] [--mix src=n,…]``: a fresh calibration set in turn form, none of
  whose ids or requests occurs in any JSONL file under ROOT; written as OUT_1.jsonl, OUT_2.jsonl.

    python bench/embedded_prompts.py halves runs/recipe/s1/corpus/train.jsonl A.jsonl B.jsonl --seed 0
    python bench/embedded_prompts.py calset runs/recipe runs/recipe/s6/calset4 --seed 71 \\
        --mix stdlib=130,pydoc=0,arithmetic=80,instructions=0
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

from dspark_viz.data import sources as S
from dspark_viz.eval.prompts import builtin_sets
from dspark_viz.io import write_text_atomic

CALIB_B_MIX = {"stdlib": 36, "pydoc": 36, "arithmetic": 22}   # stage 4: the val split's mix, as far
CONF_A_MIX = {"stdlib": 150, "pydoc": 36, "arithmetic": 100}  # as the fresh pools go
CALSET_MIX = "stdlib=116,pydoc=58,arithmetic=70,instructions=5"  # stage 5's draw (seed 61)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def _write_rows(path: Path, rows: list[dict], *, ascii_only: bool = True) -> None:
    _write(path, "".join(json.dumps(o, ensure_ascii=ascii_only) + "\n" for o in rows))


def _request(o: dict) -> str | None:
    turns = o.get("turns")
    return str(turns[0]).strip() if turns else None


def _seen(files: list[Path]) -> tuple[set[str], set[str]]:
    """Ids and first-turn requests of every JSON record in ``files`` (other lines skipped)."""
    ids, reqs = set(), set()
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                o = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(o, dict):
                if "id" in o:
                    ids.add(str(o["id"]))
                if _request(o):
                    reqs.add(_request(o))
    return ids, reqs


def halves(a) -> None:
    lines = a.src.read_text(encoding="utf-8").splitlines()
    if a.drop_source:
        lines = [l for l in lines if not json.loads(l).get("source", "").startswith(a.drop_source)]
    random.Random(a.seed).shuffle(lines)
    for out, part in ((a.a, lines[0::2]), (a.b, lines[1::2])):
        _write(out, "\n".join(part) + "\n")
    print(f"{len(lines)} lines → {len(lines[0::2])} + {len(lines[1::2])}")


def fresh(a) -> None:
    ids, reqs = _seen(a.seen)
    held_out = [t for ts in builtin_sets().values() for t in ts]
    rows = [o for o in _rows(a.src) if str(o["id"]) not in ids and _request(o) not in reqs
            and not S.near_duplicate(_request(o) or "", held_out)]
    _write_rows(a.out, rows)
    print(len(rows), dict(Counter(o["source"] for o in rows)))


def conf3(a) -> None:
    stage3 = {o["id"] for f in ("train.jsonl", "val.jsonl") for o in _rows(a.tasks_dir / f)}
    rows = [{k: v for k, v in o.items() if k != "text"} for o in _rows(a.conf_prompts)]
    rows += [p.to_dict() for p in S.tasks(330, seed=7) if p.id not in stage3][:300]
    _write_rows(a.out, rows)
    print(len(rows))


def sets4(a) -> None:
    ids, reqs = _seen(a.seen)
    by: dict[str, list[dict]] = {}
    for o in _rows(a.fresh):
        if o["id"] in ids or _request(o) in reqs:
            continue
        o.pop("text", None)
        by.setdefault(o["source"], []).append(o)
    print({k: len(v) for k, v in by.items()})
    rng = random.Random(23)
    for v in by.values():
        rng.shuffle(v)
    for out, mix in ((a.calib_b, CALIB_B_MIX), (a.conf_a, CONF_A_MIX)):  # calib-b draws first
        rows = []
        for s, c in mix.items():
            rows += by[s][:c]
            by[s] = by[s][c:]
        _write_rows(out, rows)
        print(out.name, len(rows), dict(Counter(o["source"] for o in rows)))


def calset(a) -> None:
    ids, reqs = _seen(sorted(a.root.rglob("*.jsonl")))
    print(f"{len(ids)} ids, {len(reqs)} requests seen")
    pools = {"stdlib": S.stdlib_code(100_000, a.seed), "pydoc": S.pydoc_prose(100_000, a.seed),
             "arithmetic": S.arithmetic(2000, a.seed), "instructions": S.instructions(None, a.seed)}
    mix = {k: int(v) for k, v in (kv.split("=") for kv in a.mix.split(","))}
    rows = []
    for src, ps in pools.items():
        new = [p for p in ps if p.id not in ids and p.turns[0].strip() not in reqs]
        print(src, len(ps), "fresh", len(new))
        random.Random(a.seed).shuffle(new)
        rows += [{k: v for k, v in p.to_dict().items() if k != "text"} for p in new[:mix.get(src, 0)]]
    random.Random(a.seed + 1).shuffle(rows)
    half = len(rows) // 2
    for i, part in enumerate((rows[:half], rows[half:]), 1):
        _write_rows(Path(f"{a.out}_{i}.jsonl"), part, ascii_only=False)
    print(len(rows), dict(Counter(d["source"] for d in rows)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("halves", help="shuffle lines and split them in two")
    h.add_argument("src", type=Path)
    h.add_argument("a", type=Path)
    h.add_argument("b", type=Path)
    h.add_argument("--seed", type=int, required=True)
    h.add_argument("--drop-source", default=None, help="leave out records whose source starts so")
    f = sub.add_parser("fresh", help="records seen in no file and not near an eval prompt")
    f.add_argument("src", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--seen", type=Path, nargs="+", required=True)
    c = sub.add_parser("conf3", help="stage 3's confidence-head requests")
    c.add_argument("conf_prompts", type=Path)
    c.add_argument("tasks_dir", type=Path, help="stage 3's `prepare prompts` output (builtin:tasks)")
    c.add_argument("out", type=Path)
    s = sub.add_parser("sets4", help="stage 4's calibration and confidence-head sets")
    s.add_argument("fresh", type=Path)
    s.add_argument("--seen", type=Path, nargs="+", required=True)
    s.add_argument("--calib-b", type=Path, required=True)
    s.add_argument("--conf-a", type=Path, required=True)
    k = sub.add_parser("calset", help="a fresh calibration set in two halves")
    k.add_argument("root", type=Path, help="every JSONL under it counts as seen")
    k.add_argument("out", help="prefix: writes OUT_1.jsonl and OUT_2.jsonl")
    k.add_argument("--seed", type=int, default=61)
    k.add_argument("--mix", default=CALSET_MIX)
    a = ap.parse_args(argv)
    {"halves": halves, "fresh": fresh, "conf3": conf3, "sets4": sets4, "calset": calset}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())

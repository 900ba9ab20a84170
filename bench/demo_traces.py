"""Record the demo traces the explorer ships (``dspark_viz/assets/traces/``).

Scope: decode a code, a math and a prose prompt with the embedded target (Gemma 3 270M) and the
shipped DSpark drafter, exactly as the app's Start would (``app.new_live``), under the fixed
policy (96 new tokens) and the hardware-aware one at R = 64 on the default capacity curve (48:
those rounds carry all 64 requests' admission path), and write each trace
gzip-compressed next to an ``index.json`` (file → title) that the app's replay menu lists.
Rerun when the drafter changes:

    OMP_NUM_THREADS=1 python bench/demo_traces.py [--max-new-tokens 96] [--out dspark_viz/assets/traces]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app as appmod  # noqa: E402
from dspark_viz.io import atomic_path, write_json_atomic  # noqa: E402
from dspark_viz.viz.app_state import extend_live  # noqa: E402

PROMPTS = {"code": appmod.EXAMPLES[0][0], "math": appmod.EXAMPLES[1][0], "prose": appmod.EXAMPLES[2][0]}
RUNS = (("fixed", 1), ("hardware", 64))  # (policy, R)
HW_MAX_NEW_TOKENS = 48  # an R = 64 round records all 64 requests' admission path: shorter runs, ≤ 2 MB in all
MAX_TOTAL_BYTES = 2 * 2 ** 20


def record(pool, prompt: str, policy: str, load: int, max_new_tokens: int):
    ex = appmod.new_live(pool, prompt=prompt, target_spec="embedded", drafter_spec="default",
                         gamma=7, temperature=0.0, seed=0, max_tokens=max_new_tokens, policy=policy,
                         load=load, capacity=appmod.NO_CURVE, calibration=True, markov_off=False,
                         force_ell="off", compare=False)
    while extend_live(ex):
        pass
    return ex.main.trace


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--out", type=Path, default=ROOT / "dspark_viz" / "assets" / "traces")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    pool = appmod.ModelPool(target_spec="embedded")
    index, total = {}, 0
    for kind, prompt in PROMPTS.items():
        for policy, load in RUNS:
            t0 = time.perf_counter()
            tr = record(pool, prompt, policy, load,
                        a.max_new_tokens if load == 1 else min(a.max_new_tokens, HW_MAX_NEW_TOKENS))
            name = f"{kind}-{policy}-R{load}.json.gz"
            data = gzip.compress(json.dumps(tr.to_dict(), ensure_ascii=False).encode("utf-8"), 9,
                                 mtime=0)
            with atomic_path(a.out / name) as tmp:
                Path(tmp).write_bytes(data)
            total += len(data)
            sm = tr.summary
            index[name] = (f"{kind} · {policy} · R = {load} · {sm.rounds} rounds · "
                           f"τ {sm.tau_mean:.2f} · {sm.tokens_per_forward:.2f} tok/pass")
            print(f"{name}: {len(data) / 1024:.0f} KiB, {index[name]} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    write_json_atomic(a.out / "index.json", index, indent=1, ensure_ascii=False)
    print(f"total {total / 2**20:.2f} MB (limit {MAX_TOTAL_BYTES / 2**20:.0f} MB)")
    return 0 if total <= MAX_TOTAL_BYTES else 1


if __name__ == "__main__":
    raise SystemExit(main())

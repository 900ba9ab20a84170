"""Print the eval JSONs of bench/embedded3 as markdown tables (τ per domain and macro, speedup).

    python bench/embedded3/summarize.py bench/embedded3/eval_fixed.json [more.json ...]
"""
from __future__ import annotations

import json
import sys


def f(x, spec=".2f") -> str:
    return "–" if x is None else format(x, spec)


def main(paths: list[str]) -> None:
    for p in paths:
        d = json.load(open(p))
        print(f"\n{p} — γ = {d['settings']['gamma']}, {d['settings']['samples']} prompts/domain, "
              f"{d['settings']['max_new_tokens']} new tokens, policy {d['settings']['policy']}")
        print("| T | drafter | code τ | math τ | prose τ | macro τ | accept rate | cond. accept k=1..4 | tok/s | speedup |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in d["results"]:
            ds = r["datasets"]
            mac = r.get("macro", {})
            cond = mac.get("conditional_acceptance") or []
            print(f"| {r['temperature']:g} | {r['drafter']} | " + " | ".join(
                f(ds[k].get('tau')) for k in ("code", "math", "prose")) +
                f" | **{f(mac.get('tau'))}** | {f(mac.get('acceptance_rate'), '.3f')} | "
                + "/".join(f(c) for c in cond[:4]) +
                f" | {f(mac.get('tokens_per_s'), '.1f')} | {f(mac.get('speedup'))}× |")


if __name__ == "__main__":
    main(sys.argv[1:])

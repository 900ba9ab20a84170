"""``dspark-viz trace``: decode one prompt, print a per-round summary, write the trace.

Scope: argument parsing and printing over ``SpecSession``. Nothing else.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dspark_viz.cli.common import CLIError, add_decode_args, decode_config, load_pair, outputs
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.load.policy_spec import policy_from_spec


def _cmd_trace(a: argparse.Namespace) -> int:
    if not a.prompt or not a.prompt.strip():
        raise CLIError("--prompt is empty")
    policy = policy_from_spec(a.policy, a.gamma) if a.policy else None  # before any model loads
    target, drafter, label = load_pair(a)
    cfg = decode_config(a, drafter)
    s = SpecSession(target, drafter, cfg, policy=policy, drafter_name=label)
    tr = s.run(a.prompt)
    print(f"target: {tr.meta.target}   drafter: {label}   mode: {cfg.mode}   γ={cfg.gamma}   "
          f"T={cfg.temperature:g}   policy: {tr.meta.policy}")
    note = drafter.confidence_note(cfg.temperature) if drafter is not None else None
    if note:
        print(f"note: {note}")
    print("-" * 72)
    print(a.prompt + tr.text)
    print("-" * 72)
    print(f"{'round':>5} {'drafted':>7} {'verified':>8} {'accepted':>8} {'τ':>3}  committed")
    for r in tr.rounds:
        txt = "".join(tr.token_text(t) for t in r.committed).replace("\n", "⏎")
        print(f"{r.index:>5} {len(r.draft):>7} {len(r.verify):>8} {r.n_accepted:>8} {r.tau:>3}  {txt!r}")
    sm = tr.summary
    print("-" * 72)
    print(f"rounds {sm.rounds}  new tokens {sm.new_tokens}  mean τ {sm.tau_mean:.2f}  "
          f"acceptance rate {sm.acceptance_rate:.1%}  tokens/target pass {sm.tokens_per_forward:.2f}  "
          f"{sm.tokens_per_s:.1f} tok/s  stop: {sm.stop_reason}")
    print(f"({tr.meta.tau_convention}; acceptance rate = accepted / verified draft tokens)")
    if a.out:
        tr.save(a.out)
        print(f"trace written to {a.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("trace", help="decode one prompt and write its trace",
                       description="Decode one prompt speculatively, print a per-round summary "
                                   "and write the trace (JSON).")
    p.add_argument("--prompt", required=True)
    add_decode_args(p)
    p.add_argument("--out", type=Path, default=None, help="write the trace JSON here")
    outputs(p, files=("out",))
    p.set_defaults(func=_cmd_trace)

"""``dspark-viz profile`` and ``dspark-viz simulate``: capacity curves and load sweeps.

Scope: argument parsing and printing over ``dspark_viz.load.capacity`` and
``dspark_viz.load.simulator``; figures come from ``dspark_viz.viz.load_figures``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dspark_viz.cli.common import GAMMA, SEED, CLIError, bounds, count, outputs
from dspark_viz.decoding.policy import sweep_specs
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.io import write_json_atomic
from dspark_viz.load.capacity import (DEFAULT_CAPACITY, DEFAULT_CONTEXT, get_curve, preset_names,
                                      profile_target, resolve_capacity)
from dspark_viz.load.policy_spec import policy_from_spec
from dspark_viz.load.simulator import MAX_LOAD, MAX_STEPS, TracePool, sweep
from dspark_viz.targets import load_target
from dspark_viz.viz.load_figures import frontier_figure, load_sweep_figure


MAX_BATCH = 1 << 16  # a profiled batch size B (tokens in one forward)


def _ints(s: str, flag: str, hi: int) -> list[int]:
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"{flag}: expected comma-separated integers, got {s[:60]!r}") from None
    if not v or min(v) < 1 or max(v) > hi:
        raise CLIError(f"{flag}: expected integers in [1, {hi}], got {s[:60]!r}")
    return v


def _profile(a: argparse.Namespace):
    """Measure SPS(B) on this device (the target alone, or whole steps with --drafter)."""
    bs = _ints(a.batch_sizes, "--batch-sizes", MAX_BATCH)
    if a.drafter == "none":
        raise CLIError("--drafter none: profile the target alone by leaving --drafter out")
    target = load_target(a.target, device=a.device)
    drafter, dname = None, ""
    if a.drafter:
        drafter, dname = resolve_drafter(a.drafter, target)
        if drafter is None:
            raise CLIError("--drafter none: profile the target alone by leaving --drafter out")

    def prog(i, n, B, ms):
        print(f"  [{i}/{n}] B={B:<5d} {ms:9.2f} ms/step  {1e3 / ms:9.1f} SPS", flush=True)

    what = f" + drafting γ = {a.gamma} tokens" if drafter is not None else ""
    print(f"profiling {target.name}{what} on {target.device}: context {a.context_len} "
          f"tokens, median of {a.repeats} passes")
    curve = profile_target(target, bs, context_len=a.context_len, repeats=a.repeats,
                           progress=prog, drafter=drafter, gamma=a.gamma, drafter_name=dname)
    if drafter is not None:
        print(f"  drafting: {curve.meta['draft_ms']:.2f} ms per step (included above)")
    return curve


def _cmd_profile(a: argparse.Namespace) -> int:
    if a.list_presets:
        print("\n".join(preset_names()))
        return 0
    if a.out is None and not a.preset:
        raise CLIError("--out is required to save a profile")
    curve = get_curve(a.preset, context_len=a.context_len) if a.preset else _profile(a)
    for B in (1, 4, 16, 64, 256, 1024):
        print(f"SPS({B}) = {curve.sps(B):.2f}")
    if a.out:
        curve.to_json(a.out)
        print(f"capacity curve written to {a.out}")
    return 0


def _cmd_simulate(a: argparse.Namespace) -> int:
    specs = [s.strip() for s in a.policies.split(",") if s.strip()]
    if not specs:
        raise CLIError("--policies is empty")
    loads = _ints(a.loads, "--loads", MAX_LOAD)
    pool = TracePool.from_paths(a.traces, calibrated=not a.no_calibration)
    cap = resolve_capacity(a.capacity, context_len=a.context_len)
    policies = [policy_from_spec(s, pool.gamma, capacity=cap, record_path=False,
                                 context_len=a.context_len) for s in specs]
    print(f"pool: {pool.n_rounds} rounds from {len(pool.sequences)} traces (γ={pool.gamma}; "
          f"{pool.censored} censored, {pool.dropped} dropped)   capacity: {cap.name}")
    res = sweep(pool, policies, cap, loads, a.steps, seed=a.seed)
    print(f"{'R':>5} {'policy':<24} {'tok/s':>11} {'tok/s/user':>11} {'budget ℓ':>9} "
          f"{'τ':>6} {'acc.rate':>8} {'step ms':>8}")
    for r in res:
        print(f"{r.R:>5} {r.policy:<24} {r.throughput:>11.1f} {r.per_user:>11.2f} "
              f"{r.budget:>9.2f} {r.tau:>6.2f} {r.acceptance_rate:>8.1%} {r.step_ms:>8.2f}")
    print("(τ = accepted draft tokens + 1 target token per request per step; budget = mean ℓ; "
          "acc.rate = accepted / verified draft tokens; times from the capacity model)")
    if a.json:
        write_json_atomic(a.json, {"capacity": cap.to_dict(), "steps": a.steps, "seed": a.seed,
                                   "pool_rounds": pool.n_rounds,
                                   "results": [r.to_dict() for r in res]}, indent=1)
        print(f"results written to {a.json}")
    if a.figures:
        a.figures.mkdir(parents=True, exist_ok=True)
        load_sweep_figure(res).write_html(a.figures / "load_sweep.html", include_plotlyjs=True)
        frontier_figure(res).write_html(a.figures / "frontier.html", include_plotlyjs=True)
        print(f"figures written to {a.figures}/load_sweep.html, frontier.html")
    return 0


def register(sub) -> None:
    p = sub.add_parser("profile", help="measure SPS(B) of the target, or write a preset curve",
                       description="Time one target forward of B tokens on this device for each "
                                   "B and save the capacity curve SPS(B) as JSON.")
    p.add_argument("--target", default="embedded")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    p.add_argument("--context-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--drafter", default=None,
                   help="also time drafting γ tokens with this drafter ('default', a checkpoint) "
                        "and profile whole speculative steps: drafting + verify of B tokens")
    p.add_argument("--gamma", type=int, default=7, help="block size drafted per step (--drafter)")
    p.add_argument("--preset", default=None, help="write this roofline/jagged preset instead")
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    bounds(p, context_len=count(1, 1 << 20), repeats=count(1, 1000), gamma=GAMMA)
    outputs(p, files=("out",))
    p.set_defaults(func=_cmd_profile)

    s = sub.add_parser("simulate", help="replay recorded rounds for R concurrent requests",
                       description="Sweep the load R: per policy, aggregate throughput, per-user "
                                   "speed and verify budget under a capacity curve.")
    s.add_argument("--traces", nargs="+", required=True, help="trace JSON files or directories")
    s.add_argument("--capacity", default=DEFAULT_CAPACITY, help="preset name or curve JSON")
    s.add_argument("--context-len", type=int, default=DEFAULT_CONTEXT,
                   help="context per request for presets (KV-read term)")
    s.add_argument("--policies", default=",".join(sweep_specs()),
                   help="comma-separated policy specs (a curve policy runs on --capacity)")
    s.add_argument("--loads", default="1,8,32,128,256",
                   help=f"comma-separated concurrent requests R (each 1–{MAX_LOAD})")
    s.add_argument("--steps", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-calibration", action="store_true", help="use raw confidences")
    s.add_argument("--json", type=Path, default=None)
    s.add_argument("--figures", type=Path, default=None, help="directory for plotly HTML figures")
    bounds(s, context_len=count(0, 1 << 24), steps=count(1, MAX_STEPS), seed=SEED)
    outputs(s, files=("json",), dirs=("figures",))
    s.set_defaults(func=_cmd_simulate)

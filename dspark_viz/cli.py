"""The ``dspark-viz`` command line: ``trace`` here, other subcommands registered by their modules.

Scope: argument parsing, turning library errors into one-line messages with a non-zero exit,
printing. Each subsystem module listed in ``COMMAND_MODULES`` that exists exposes
``register(subparsers)``; the handler it sets (``func``) receives the parsed namespace.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from dspark_viz.config import GAMMA_MAX, ConfigError, DecodeConfig

COMMAND_MODULES = (
    "dspark_viz.data.commands",
    "dspark_viz.train.commands",
    "dspark_viz.eval.commands",
    "dspark_viz.load.commands",
    "dspark_viz.viz.commands",
)


class CLIError(Exception):
    """Printed as ``dspark-viz: error: <message>`` with exit status 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input (reported in one line, never a traceback)."""
    from dspark_viz.decoding.trace import TraceError
    from dspark_viz.drafter.model import DrafterError
    from dspark_viz.load.capacity import CapacityError
    from dspark_viz.load.simulator import SimError
    from dspark_viz.targets import TargetError
    return (CLIError, ConfigError, TargetError, DrafterError, TraceError, CapacityError, SimError,
            FileNotFoundError)


def add_decode_args(p: argparse.ArgumentParser) -> None:
    """The decoding options shared by ``trace``, ``eval`` and the app launcher."""
    p.add_argument("--target", default="embedded",
                   help="HF id, local checkpoint directory, or 'embedded' (Gemma 3 270M, default)")
    p.add_argument("--drafter", default="default",
                   help="drafter checkpoint directory, 'default' (the shipped drafter for the "
                        "embedded target, else an untrained one), 'random' (untrained), or 'none'")
    p.add_argument("--gamma", type=int, default=7, help=f"block size γ (1–{GAMMA_MAX})")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--mode", choices=("dspark", "dflash", "ar"), default=None,
                   help="default: dspark with a drafter, ar with --drafter none")
    p.add_argument("--markov-off", action="store_true", help="what-if: Markov head off at inference")
    p.add_argument("--force-ell", type=int, default=None, help="what-if: force verification length ℓ")
    p.add_argument("--policy", default=None,
                   help="verification-length policy: fixed:N, threshold:T, threshold-a:T, or a "
                        "scheduler policy (default fixed:γ)")
    p.add_argument("--no-calibration", action="store_true", help="ignore the drafter's STS calibration")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")


def decode_config(a: argparse.Namespace, drafter) -> DecodeConfig:
    mode = a.mode or ("ar" if drafter is None else "dspark")
    if mode != "ar" and drafter is None:
        raise CLIError(f"--mode {mode} needs a drafter (got --drafter none)")
    return DecodeConfig(gamma=a.gamma, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                        max_new_tokens=a.max_new_tokens, seed=a.seed, mode=mode,
                        markov_off=a.markov_off, force_ell=a.force_ell,
                        calibrated=not a.no_calibration)


def load_pair(a: argparse.Namespace):
    """(target, drafter | None, drafter label) from --target/--drafter, validating early."""
    from dspark_viz.drafter.registry import resolve_drafter
    from dspark_viz.targets import load_target
    if not 1 <= a.gamma <= GAMMA_MAX:
        raise CLIError(f"--gamma must be in [1, {GAMMA_MAX}], got {a.gamma}")
    if a.temperature < 0:
        raise CLIError(f"--temperature must be ≥ 0, got {a.temperature}")
    target = load_target(a.target, device=a.device)
    drafter, label = resolve_drafter(a.drafter, target)
    return target, drafter, label


def _cmd_trace(a: argparse.Namespace) -> int:
    from dspark_viz.decoding.engine import SpecSession
    from dspark_viz.decoding.policy import parse_policy
    if not a.prompt or not a.prompt.strip():
        raise CLIError("--prompt is empty")
    target, drafter, label = load_pair(a)
    cfg = decode_config(a, drafter)
    policy = parse_policy(a.policy, cfg.gamma) if a.policy else None
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dspark-viz", description=(
        "DSpark speculative decoding with every internal visible."))
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("trace", help="decode one prompt and write its trace",
                       description="Decode one prompt speculatively, print a per-round summary "
                                   "and write the trace (JSON).")
    p.add_argument("--prompt", required=True)
    add_decode_args(p)
    p.add_argument("--out", type=Path, default=None, help="write the trace JSON here")
    p.set_defaults(func=_cmd_trace)
    for mod in COMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        m.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return int(a.func(a) or 0)
    except user_errors() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"dspark-viz: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dspark-viz: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""What every ``dspark-viz`` subcommand shares: the CLI error, the decoding options, loading a pair.

Scope: ``CLIError`` (a ``UserError`` for bad arguments), ``add_decode_args`` / ``decode_config``
(the decoding options of ``trace``, ``eval`` and the app launcher, turned into a ``DecodeConfig``),
``load_pair`` (target and drafter from ``--target`` / ``--drafter``) and ``parse_layer_ids``.
Not here: any subcommand's handler.
"""
from __future__ import annotations

import argparse

from dspark_viz.config import GAMMA_MAX, DecodeConfig
from dspark_viz.decoding.policy import policy_help
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.errors import UserError
from dspark_viz.targets import load_target


class CLIError(UserError):
    """Printed as ``dspark-viz: error: <message>`` with exit status 2."""


def parse_layer_ids(s: str | None) -> tuple[int, ...] | None:
    """``"1,5,9"`` → ``(1, 5, 9)``; ``None`` stays ``None``."""
    if s is None:
        return None
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise CLIError(f"--layer-ids must be comma-separated integers, got {s!r}") from None


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
    p.add_argument("--policy", default=None, help=policy_help())
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
    if not 1 <= a.gamma <= GAMMA_MAX:
        raise CLIError(f"--gamma must be in [1, {GAMMA_MAX}], got {a.gamma}")
    if a.temperature < 0:
        raise CLIError(f"--temperature must be ≥ 0, got {a.temperature}")
    target = load_target(a.target, device=a.device)
    drafter, label = resolve_drafter(a.drafter, target)
    return target, drafter, label

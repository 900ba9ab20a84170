"""What every ``dspark-viz`` subcommand shares: the CLI error, option checks, the decoding options,
loading a pair.

Scope: ``CLIError`` (a ``UserError`` for bad arguments); the checks ``dspark_viz.cli.main`` runs on
every command before its handler starts any work (``check_args``): numeric options within the
``Bound`` each command attached to them (``bounds``; non-finite numbers never pass), ``--device``
usable on this machine (``check_device``), output files and directories that can be written
(``outputs``); ``add_decode_args`` / ``decode_config`` (the decoding options of ``trace``, ``eval``
and the app launcher, turned into a ``DecodeConfig``), ``load_pair`` (target and drafter from
``--target`` / ``--drafter``), ``parse_layer_ids`` and ``check_sample_ids`` (token ids of input
samples inside the target's vocabulary, before anything is written). Not here: any subcommand's
handler.

Documented ranges: seeds 0 … 2⁶³−1; temperatures 0 (greedy) or 0.001 … 100; top-p in (0, 1];
γ 1 … ``GAMMA_MAX``; token counts ≥ 1 and ≤ ``MAX_TOKENS``; the rest per option in each command.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from dspark_viz.config import GAMMA_MAX, DecodeConfig
from dspark_viz.decoding.policy import policy_help
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.errors import UserError
from dspark_viz.targets import load_target


class CLIError(UserError):
    """Printed as ``dspark-viz: error: <message>`` with exit status 2."""


SEED_MAX = 2**63 - 1
TEMPERATURE_MIN, TEMPERATURE_MAX = 1e-3, 100.0  # besides 0 (greedy)
MAX_TOKENS = 1 << 20  # any per-request token count (max new tokens, max length, …)
MAX_COUNT = 1 << 40  # any other count (steps, samples, bytes per shard, …)


@dataclass(frozen=True)
class Bound:
    """The accepted range of one numeric option: ``lo ≤ v ≤ hi`` (``<`` where open); ``zero``:
    0 is accepted besides the range. Non-finite numbers never pass; ``None`` (unset) always."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    zero: bool = False

    def describe(self) -> str:
        lo = "−∞" if self.lo is None else _num(self.lo)
        hi = "∞" if self.hi is None else _num(self.hi)
        rng = f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        return f"0 or in {rng}" if self.zero else f"in {rng}"

    def ok(self, v) -> bool:
        try:
            if not math.isfinite(v):
                return False
        except OverflowError:  # an int too large for a float
            return False
        if self.zero and v == 0:
            return True
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def check(self, flag: str, v) -> None:
        """CLIError naming ``flag`` unless ``v`` is None or in range."""
        if v is not None and not self.ok(v):
            raise CLIError(f"{flag} must be {self.describe()}, got {v:.6g}" if isinstance(v, float)
                           else f"{flag} must be {self.describe()}, got {str(v)[:40]}")


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def count(lo: int = 1, hi: int = MAX_COUNT) -> Bound:
    """An integer count in [lo, hi]."""
    return Bound(lo, hi)


SEED = Bound(0, SEED_MAX)
TEMPERATURE = Bound(TEMPERATURE_MIN, TEMPERATURE_MAX, zero=True)
TOP_P = Bound(0.0, 1.0, lo_open=True)
TOP_K = count(0, 1 << 31)
GAMMA = count(1, GAMMA_MAX)
TOKENS = count(1, MAX_TOKENS)
FRACTION = Bound(0.0, 1.0, hi_open=True)  # [0, 1)
POSITIVE = Bound(0.0, 1e12, lo_open=True)  # seconds, minutes, rates


def bounds(p: argparse.ArgumentParser, **rules: Bound) -> None:
    """Attach ranges to options of the (sub)command parser ``p`` (dest → Bound); ``check_args``
    enforces them before the handler runs."""
    have = dict(p.get_default("_bounds") or {})
    have.update(rules)
    p.set_defaults(_bounds=have)


def outputs(p: argparse.ArgumentParser, *, files: tuple[str, ...] = (),
            dirs: tuple[str, ...] = ()) -> None:
    """Declare the options of ``p`` that name an output file / directory (dests)."""
    p.set_defaults(_out_files=tuple(files), _out_dirs=tuple(dirs))


def flag_of(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_device(spec: str | None, flag: str = "--device") -> None:
    """``spec`` names a device this machine has (cpu, cuda, cuda:N, mps); CLIError else."""
    if spec is None:
        return
    try:
        dev = torch.device(str(spec))
    except (RuntimeError, ValueError):
        raise CLIError(f"{flag} {str(spec)[:40]!r} is not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"{flag} {spec}: CUDA is not available on this machine (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CLIError(f"{flag} {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(f"{flag} {spec}: MPS is not available on this machine (use cpu)")
    elif dev.type != "cpu":
        raise CLIError(f"{flag} {spec}: only cpu, cuda[:N] and mps are supported")


def _writable_problem(path: Path, want_dir: bool) -> str | None:
    if want_dir and path.exists() and not path.is_dir():
        return "exists and is not a directory"
    if not want_dir and path.is_dir():
        return "is a directory (give a file name)"
    for up in path.parents:  # the nearest existing ancestor must be a directory
        if up.exists():
            return None if up.is_dir() else f"cannot be created: {up} is not a directory"
    return None


def check_args(a: argparse.Namespace) -> None:
    """Everything about the arguments that can be checked without work: bounded numbers, the
    device, output paths. Raises CLIError (one line) at the first problem."""
    for dest, b in (getattr(a, "_bounds", None) or {}).items():
        b.check(flag_of(dest), getattr(a, dest, None))
    if hasattr(a, "device"):
        check_device(a.device)
    for dest, want_dir in [(d, False) for d in getattr(a, "_out_files", ())] + \
            [(d, True) for d in getattr(a, "_out_dirs", ())]:
        v = getattr(a, dest, None)
        if v is None:
            continue
        problem = _writable_problem(Path(v), want_dir)
        if problem:
            raise CLIError(f"{flag_of(dest) if dest != 'dst' else 'DST'} {v} {problem}")


def check_sample_ids(samples: list[dict], vocab_size: int, where: str) -> None:
    """Every sample's token ids in [0, vocab_size) (before a cache or a run is written)."""
    for i, s in enumerate(samples):
        ids = s["input_ids"]
        hi = max(ids)
        if hi >= vocab_size or min(ids) < 0:
            bad = hi if hi >= vocab_size else min(ids)
            raise CLIError(f"{where}: sample {str(s.get('id', i))[:60]!r} holds token id {str(bad)[:40]}, "
                           f"outside the target vocabulary of {vocab_size}")


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
                   help="a shipped drafter name: 'default' (the shipped drafter for the embedded "
                        "target, else an untrained one), 'random' (untrained) or 'none'; a local "
                        "directory (our checkpoint, or a DeepSpec-format one, loaded as is); or a "
                        "Hugging Face hub id such as deepseek-ai/dspark_qwen3_8b_block7")
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
    bounds(p, gamma=GAMMA, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P, seed=SEED,
           max_new_tokens=TOKENS, force_ell=count(0, GAMMA_MAX))


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
    GAMMA.check("--gamma", a.gamma)
    TEMPERATURE.check("--temperature", a.temperature)
    target = load_target(a.target, device=a.device)
    drafter, label = resolve_drafter(a.drafter, target)
    return target, drafter, label

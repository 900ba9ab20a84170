"""Which drafter to use: shipped checkpoints, untrained drafters, user paths.

Scope: map a user's ``--drafter`` value to a loaded ``DSparkDrafter`` (or None) plus a label
for traces and screens. ``default`` is the drafter shipped for the embedded Gemma 3 270M when
it is present in ``dspark_viz/assets/drafters``; otherwise an untrained drafter, labelled so.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dspark_viz.drafter.model import DSparkDrafter, config_for_target
from dspark_viz.targets import EMBEDDED_NAME

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "drafters"
SHIPPED = {EMBEDDED_NAME: {"dspark": ASSETS / "gemma3-270m-dspark",
                           "dflash": ASSETS / "gemma3-270m-dflash"}}


def shipped_drafter_path(target_name: str, kind: str = "dspark") -> Path | None:
    p = SHIPPED.get(target_name, {}).get(kind)
    return p if p is not None and (p / "model.safetensors").exists() else None


def untrained_drafter(target, *, seed: int = 0, markov_type: str = "vanilla") -> DSparkDrafter:
    """A randomly initialised drafter sized for ``target`` (global RNG state is untouched)."""
    preset = "tiny" if target.hidden_size <= 128 else "embedded"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = DSparkDrafter(config_for_target(target, preset=preset, markov_type=markov_type))
    return d.to(device=target.device, dtype=target.dtype).eval()


def resolve_drafter(spec: str, target, kind: str = "dspark") -> tuple[DSparkDrafter | None, str]:
    if spec == "none":
        return None, "none"
    if spec == "random":
        return untrained_drafter(target), "untrained (random)"
    if spec == "default":
        p = shipped_drafter_path(target.name, kind)
        if p is None:
            return untrained_drafter(target), "untrained (random; no shipped drafter for this target)"
        return DSparkDrafter.from_pretrained(p, target=target), f"shipped:{p.name}"
    return DSparkDrafter.from_pretrained(spec, target=target), str(spec)

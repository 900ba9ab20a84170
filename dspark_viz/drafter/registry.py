"""Which drafter to use: shipped checkpoints, untrained drafters, user paths, hub ids.

Scope: map a user's ``--drafter`` value to a loaded ``DSparkDrafter`` (or None) plus a label
for traces and screens. ``default`` is the drafter shipped for the embedded Gemma 3 270M when
it is present in ``dspark_viz/assets/drafters``; otherwise an untrained drafter, labelled so. A
directory is loaded in our format, or in DeepSpec's when its ``config.json`` names a DeepSpec
drafter class (label ``deepspec:<spec>``; its Markov stage runs over the whole vocabulary,
``markov_candidates`` 0, unless the caller sets that attribute). A Hugging Face hub id that is not
a local directory is fetched with ``huggingface_hub`` — from the local cache only when the hub is
offline (``HF_HUB_OFFLINE``), failing at once with one line when it is not there. No lock is taken
here (a caller that serialises model loads holds its own only for this short failure).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from dspark_viz.drafter.deepspec import deepspec_class, load_deepspec
from dspark_viz.drafter.model import DrafterError, DSparkDrafter, config_for_target
from dspark_viz.errors import one_line
from dspark_viz.targets import EMBEDDED_NAME

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "drafters"
SHIPPED = {EMBEDDED_NAME: {"dspark": ASSETS / "gemma3-270m-dspark",
                           "dflash": ASSETS / "gemma3-270m-dflash"}}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FILES = ["config.json", "model.safetensors", "calibration.json"]


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


def hub_offline() -> bool:
    """True when Hugging Face hub access is switched off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


def drafter_dir(spec: str) -> Path:
    """The local directory of ``spec``: the path itself, or the hub snapshot of a hub id."""
    p = Path(spec).expanduser()
    if p.exists() or not HUB_ID.match(spec):
        return p
    from huggingface_hub import snapshot_download
    offline = hub_offline()
    try:
        return Path(snapshot_download(spec, allow_patterns=HUB_FILES, local_files_only=offline))
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one line for the user
        if offline:
            raise DrafterError(f"drafter {spec!r} is neither a local directory nor in the hub cache, and the "
                               f"hub is offline (HF_HUB_OFFLINE): download it first (hf download {spec})") from None
        raise DrafterError(f"drafter {spec!r} is not a local directory and could not be fetched from the "
                           f"hub: {one_line(e)}") from None


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
    path = drafter_dir(spec)
    if deepspec_class(path):
        return load_deepspec(path, target), f"deepspec:{spec}"
    return DSparkDrafter.from_pretrained(path, target=target), str(spec)

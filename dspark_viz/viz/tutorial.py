"""What the tutorial notebooks decode with: presets, targets, drafters, prompts, sessions.

Scope: ``get_preset`` (the notebooks' parameters, chosen by ``$DSPARK_VIZ_NB_PRESET``:
``embedded`` by default, ``tiny``, ``ci``), ``load_tutorial_target``, ``tutorial_drafters``
(the shipped drafters of the embedded target — labelled untrained when there is none — or
tiny drafters trained once by the toolchain and cached on disk), ``tutorial_prompts`` and
``live_session`` (a prefilled ``SpecSession``). The tiny drafters are trained by running the
toolchain commands (``dspark-viz prepare …``, ``dspark-viz train``) as a child process, the
way a reader runs them: the CLI sits on the floor above this package, which never imports it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from dspark_viz.config import NOTEBOOK_PRESETS, ConfigError, DecodeConfig, NotebookPreset
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.drafter.model import DSparkDrafter
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.eval.prompts import builtin_sets
from dspark_viz.io import write_text_atomic
from dspark_viz.targets import cache_dir, load_target

ENV_PRESET = "DSPARK_VIZ_NB_PRESET"


def get_preset(name: str | None = None, **overrides) -> NotebookPreset:
    """The preset named ``name`` (default: ``$DSPARK_VIZ_NB_PRESET``, else ``embedded``)."""
    key = (name or os.environ.get(ENV_PRESET) or "embedded").strip().lower()
    if key not in NOTEBOOK_PRESETS:
        raise ConfigError(f"unknown notebook preset {key!r} (choose from {', '.join(NOTEBOOK_PRESETS)})")
    return replace(NOTEBOOK_PRESETS[key], **overrides) if overrides else NOTEBOOK_PRESETS[key]


def load_tutorial_target(preset: NotebookPreset, device=None):
    """The preset's target: ``tiny:FAMILY`` (in-process random model) or a ``load_target`` spec."""
    return load_target(preset.target, device=device)


def tutorial_dir(target, preset: NotebookPreset) -> Path:
    """Where the tiny tutorial drafters live: ``$DSPARK_VIZ_TUTORIAL_DIR`` or the cache dir."""
    root = os.environ.get("DSPARK_VIZ_TUTORIAL_DIR")
    safe = target.name.replace("/", "_").replace(":", "_")
    base = Path(root) if root else cache_dir() / "tutorial"
    return base / f"{safe}-steps{preset.tiny_train_steps}-n{preset.regen_prompts}"


def run_toolchain(args: Sequence) -> str:
    """Run ``dspark-viz ARGS`` in a child process (``python -m dspark_viz.cli``) with this
    process's torch thread count; its output.

    Raises RuntimeError with the command's error line(s) when it fails.
    """
    args = [str(a) for a in args]
    # the child uses as many threads as this process (the notebooks set one: torch's default
    # threads on a small shared CPU are slower, not faster)
    env = os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-m", "dspark_viz.cli", *args], capture_output=True,
                          text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"dspark-viz {' '.join(args[:2])} failed: "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def train_tiny_drafters(target_spec: str, out: Path, *, steps: int, n_prompts: int,
                        max_new_tokens: int, kinds: Sequence[str] = ("dspark", "dflash"),
                        log=print) -> dict[str, Path]:
    """The toolchain on a tiny target (prompts → regenerate → cache → train), resumable.

    Each stage is skipped when its output exists, so a second call reuses the drafters.
    Returns kind → drafter directory.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "prompts" / "train.jsonl").exists():
        log(run_toolchain(["prepare", "prompts", "--source", "builtin:instructions", "--source",
                           "builtin:arithmetic", "--n", n_prompts, "--val-fraction", "0.1",
                           "--out", out / "prompts"]).strip())
    if not (out / "regen.done").exists():  # regenerate itself resumes a partial file
        log(run_toolchain(["prepare", "regenerate", "--prompts", out / "prompts" / "train.jsonl",
                           "--out", out / "regen.jsonl", "--target", target_spec,
                           "--max-new-tokens", max_new_tokens, "--temperature", "1.0",
                           "--batch-size", "16", "--no-progress"]).strip())
        write_text_atomic(out / "regen.done", "ok")
    if not (out / "cache" / "manifest.json").exists():  # the cache resumes completed shards
        log(run_toolchain(["prepare", "cache", "--samples", out / "regen.jsonl", "--out",
                           out / "cache", "--target", target_spec, "--no-progress"]).strip())
    paths = {}
    for kind in kinds:
        run = out / f"run-{kind}"
        if not (run / "drafter" / "model.safetensors").exists():
            log(run_toolchain(["train", "--cache", out / "cache", "--target", target_spec,
                               "--out", run, "--method", kind, "--steps", steps, "--log-every",
                               max(1, steps // 10), "--ckpt-every", steps, "--keep-ckpts", "1",
                               "--no-progress"]).strip())
        paths[kind] = run / "drafter"
    return paths


def tutorial_drafters(target, preset: NotebookPreset, kinds: Sequence[str] = ("dspark", "dflash"),
                      log=print) -> dict[str, tuple[object, str]]:
    """kind → (drafter, label) for the preset's target.

    Tiny targets: drafters trained once by ``train_tiny_drafters`` (cached under
    ``$DSPARK_VIZ_CACHE/tutorial``). Other targets: the shipped drafter of that kind when one
    is installed, else an untrained one — the label says so.
    """
    out = {}
    if preset.is_tiny:
        d = tutorial_dir(target, preset)
        paths = train_tiny_drafters(preset.target, d, steps=preset.tiny_train_steps,
                                    n_prompts=preset.regen_prompts,
                                    max_new_tokens=preset.regen_tokens, kinds=kinds, log=log)
        for kind, p in paths.items():
            out[kind] = (DSparkDrafter.from_pretrained(p, target=target),
                         f"{kind} (tiny, trained {preset.tiny_train_steps} steps)")
        return out
    for kind in kinds:
        drafter, label = resolve_drafter("default", target, kind=kind)
        if kind == "dflash" and drafter is not None and drafter.markov is not None:
            label += " (run with the Markov head off)"
        out[kind] = (drafter, label)
    return out


def tutorial_prompts(preset: NotebookPreset) -> dict[str, list[str]]:
    """The evaluator's built-in prompt sets, ``prompts_per_set`` each."""
    return {k: v[: preset.prompts_per_set] for k, v in builtin_sets().items()}


def live_session(target, drafter, prompt, *, label: str = "", policy=None, background=None,
                 **cfg) -> SpecSession:
    """A prefilled ``SpecSession`` (keyword ``cfg`` goes to ``DecodeConfig``; a curve policy
    carries its own capacity curve)."""
    s = SpecSession(target, drafter, DecodeConfig(**cfg), policy=policy, background=background,
                    drafter_name=label)
    s.prefill(prompt)
    return s


__all__ = ["ENV_PRESET", "get_preset", "load_tutorial_target", "tutorial_dir", "run_toolchain",
           "train_tiny_drafters", "tutorial_drafters", "tutorial_prompts", "live_session"]

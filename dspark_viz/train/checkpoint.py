"""Training checkpoints: save, find the newest complete one, resume from it; no pickles.

Scope: ``<out>/checkpoints/step-NNNNNNNN/`` holds the drafter in HF layout
(``DSparkDrafter.save_pretrained``), ``optimizer.safetensors`` (the AdamW moment tensors, keyed
``param::state``) and ``trainer_state.json`` (step, train config, the optimizer's scalar state,
the last logged metrics). ``trainer_state.json`` is written last and atomically: a step
directory without it is incomplete (a run killed mid-save), is never resumed and is removed at
the next save. ``check_resumable`` refuses to continue a run under other settings. Not here:
the loop (``trainer.py``), the metrics file (``metrics_log.py``).
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dspark_viz.drafter.model import DSparkDrafter
from dspark_viz.io import atomic_path, read_json_capped, write_json_atomic
from dspark_viz.train.config import TrainConfig, TrainError

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
MAX_STATE_BYTES = 64 << 20
# settings a resumed run must share with the run it continues (the data and objective they define)
RESUME_KEYS = ("batch_size", "num_anchors", "seed", "method", "block_size", "loss_variant",
               "conf_label", "train_only", "conf_anchors")


def _optimizer_tensors(opt: torch.optim.Optimizer, names: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {}
    for p, st in opt.state.items():
        n = names[p]
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"{n}::{k}"] = v.detach().contiguous().cpu()
            else:
                meta[f"{n}::{k}"] = float(v)
    return tensors, meta


def _finite(metrics: dict) -> dict:
    """The metrics as strict JSON (a diverged run's NaN/∞ become null)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in metrics.items()}


def _complete(ck: Path) -> list[Path]:
    return [p for p in sorted(ck.glob("step-*")) if (p / STATE_FILE).is_file()] if ck.is_dir() else []


def _prune(ck: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints (all when keep ≤ 0); drop incomplete ones."""
    done = _complete(ck)
    old = set(done[:-keep]) if keep > 0 else set()
    for p in sorted(ck.glob("step-*")):
        if p in old or p not in done:
            shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(out: Path, step: int, drafter: DSparkDrafter, opt, cfg: TrainConfig,
                    metrics: dict, keep: int) -> Path:
    """Write checkpoints/step-N (its state file last, atomically) and prune old ones."""
    ck = out / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"step-{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    drafter.save_pretrained(final, extra={"step": str(step)})
    tensors, meta = _optimizer_tensors(opt, {p: n for n, p in drafter.named_parameters()})
    with atomic_path(final / OPTIMIZER_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    state = {"step": step, "train_config": cfg.to_dict(), "optimizer_scalars": meta,
             "metrics": _finite(metrics), "time": time.time()}
    write_json_atomic(final / STATE_FILE, state, indent=1)
    _prune(ck, keep)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under ``out``, or None."""
    done = _complete(out / "checkpoints")
    return done[-1] if done else None


def read_state(path: Path) -> dict:
    """A checkpoint's ``trainer_state.json``."""
    state = read_json_capped(path / STATE_FILE, MAX_STATE_BYTES, what="checkpoint state",
                             error=TrainError)
    if not isinstance(state, dict) or "step" not in state or "train_config" not in state:
        raise TrainError(f"{path / STATE_FILE} is not a trainer state (no step / train_config)")
    return state


def check_resumable(path: Path, cfg: TrainConfig, out: Path) -> None:
    """Refuse to continue the run in ``path`` with settings that change its data or objective."""
    old = TrainConfig.from_dict(read_state(path)["train_config"])
    for k in RESUME_KEYS:
        if getattr(old, k) != getattr(cfg, k):
            raise TrainError(f"{out} holds a run with {k}={getattr(old, k)} (now {getattr(cfg, k)}); "
                             f"resume with the same settings or use a new --out")


def load_checkpoint(path: Path, drafter: DSparkDrafter, opt) -> int:
    """Load the drafter's weights and the optimizer state from ``path``; returns its step."""
    state = read_state(path)
    loaded = DSparkDrafter.from_pretrained(path)
    if loaded.cfg != drafter.cfg:
        raise TrainError(f"checkpoint {path} holds a drafter with another architecture; use a new --out")
    drafter.load_state_dict(loaded.state_dict())
    names = {n: p for n, p in drafter.named_parameters()}
    tens = load_file(str(path / OPTIMIZER_FILE))
    for key, v in tens.items():
        n, k = key.split("::")
        opt.state[names[n]][k] = v.to(names[n].device)
    for key, v in state["optimizer_scalars"].items():
        n, k = key.split("::")
        opt.state[names[n]][k] = torch.tensor(v)
    return int(state["step"])

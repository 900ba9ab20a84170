"""Training checkpoints: save, find the newest readable one, resume from it; no pickles.

Scope: ``<out>/checkpoints/step-NNNNNNNN/`` holds the drafter in HF layout
(``DSparkDrafter.save_pretrained``), ``optimizer.safetensors`` (the AdamW moment tensors, keyed
``param::state``) and ``trainer_state.json`` (step, train config, the optimizer's scalar state,
the last logged metrics). A step directory is written under a temporary name and renamed into
place whole (``io.atomic_dir``); one without ``trainer_state.json`` (an older layout killed
mid-save) is incomplete, is never resumed and is removed. ``resume`` loads the newest complete
checkpoint; when its files cannot be read (truncated, corrupt: ``CorruptCheckpoint``) it warns in
one line and falls back to the previous one. ``check_resumable`` refuses to continue a run under
other settings. ``clean_run_dir`` removes what a killed run left (temporaries of our own name
pattern, incomplete step directories) at start. Not here: the loop (``trainer.py``), the metrics
file (``metrics_log.py``).
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dspark_viz.config import ConfigError
from dspark_viz.drafter.model import DrafterError, DSparkDrafter
from dspark_viz.errors import one_line
from dspark_viz.io import atomic_dir, atomic_path, read_json_capped, remove_stale_temps, write_json_atomic
from dspark_viz.train.config import TrainConfig, TrainError

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
MAX_STATE_BYTES = 64 << 20
# settings a resumed run must share with the run it continues (the data and objective they define)
RESUME_KEYS = ("batch_size", "num_anchors", "seed", "method", "block_size", "loss_variant",
               "conf_label", "train_only", "conf_anchors")
DRAFTER_DIR = "drafter"


class CorruptCheckpoint(TrainError):
    """A checkpoint whose files cannot be read (truncated, corrupt, inconsistent); one line."""


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


def _step_of(p: Path) -> int | None:
    try:
        return int(p.name.removeprefix("step-"))
    except ValueError:
        return None


def _complete(ck: Path) -> list[Path]:
    """Complete step directories, oldest first."""
    if not ck.is_dir():
        return []
    done = [p for p in ck.glob("step-*") if _step_of(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(done, key=_step_of)


def _prune(ck: Path, keep: int, newest: int) -> None:
    """Keep the newest ``keep`` complete checkpoints up to step ``newest`` (all when keep ≤ 0); drop
    incomplete ones and any past ``newest`` (an abandoned future: the run fell back before them)."""
    done = [p for p in _complete(ck) if _step_of(p) <= newest]
    old = set(done[:-keep]) if keep > 0 else set()
    for p in sorted(ck.glob("step-*")):
        if p in old or p not in done:
            shutil.rmtree(p, ignore_errors=True)


def clean_run_dir(out: Path) -> list[Path]:
    """Remove what a killed run left in the run directory ``out``: temporaries named like
    ``io.atomic_path`` / ``atomic_dir`` ones (in ``out``, ``out/drafter``, ``out/checkpoints`` and
    each step directory) and step directories without their state file. Returns what went."""
    gone = remove_stale_temps(out) + remove_stale_temps(out / DRAFTER_DIR)
    ck = out / "checkpoints"
    gone += remove_stale_temps(ck)
    for p in sorted(ck.glob("step-*")) if ck.is_dir() else []:
        if not p.is_dir() or p.is_symlink():
            continue
        gone += remove_stale_temps(p)
        if not (p / STATE_FILE).is_file():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def save_checkpoint(out: Path, step: int, drafter: DSparkDrafter, opt, cfg: TrainConfig,
                    metrics: dict, keep: int) -> Path:
    """Write checkpoints/step-N whole (a temporary directory renamed into place) and prune."""
    ck = out / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        drafter.save_pretrained(tmp, extra={"step": str(step)})
        tensors, meta = _optimizer_tensors(opt, {p: n for n, p in drafter.named_parameters()})
        with atomic_path(tmp / OPTIMIZER_FILE) as f:
            save_file(tensors, str(f), metadata={"format": "pt"})
        state = {"step": step, "train_config": cfg.to_dict(), "optimizer_scalars": meta,
                 "metrics": _finite(metrics), "time": time.time()}
        write_json_atomic(tmp / STATE_FILE, state, indent=1)
    _prune(ck, keep, step)
    return final


def save_drafter(out: Path, drafter: DSparkDrafter, extra: dict) -> Path:
    """The trained drafter as ``out/drafter``, written whole (no stale file of an older one kept)."""
    with atomic_dir(out / DRAFTER_DIR) as tmp:
        drafter.save_pretrained(tmp, extra=extra)
    return out / DRAFTER_DIR


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under ``out``, or None."""
    done = _complete(out / "checkpoints")
    return done[-1] if done else None


def read_state(path: Path) -> dict:
    """A checkpoint's ``trainer_state.json`` (CorruptCheckpoint when it cannot be read)."""
    state = read_json_capped(path / STATE_FILE, MAX_STATE_BYTES, what="checkpoint state",
                             error=CorruptCheckpoint)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) \
            or not isinstance(state.get("train_config"), dict) \
            or not isinstance(state.get("optimizer_scalars", {}), dict):
        raise CorruptCheckpoint(f"{path / STATE_FILE} is not a trainer state (no step / train_config)")
    return state


def _config_of(path: Path, state: dict) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["train_config"])
    except (ConfigError, TypeError, ValueError) as e:
        raise CorruptCheckpoint(f"{path / STATE_FILE}: unreadable train_config ({one_line(e)})") from None


def check_resumable(path: Path, cfg: TrainConfig, out: Path, state: dict | None = None) -> None:
    """Refuse to continue the run in ``path`` with settings that change its data or objective."""
    old = _config_of(path, state if state is not None else read_state(path))
    for k in RESUME_KEYS:
        if getattr(old, k) != getattr(cfg, k):
            raise TrainError(f"{out} holds a run with {k}={getattr(old, k)} (now {getattr(cfg, k)}); "
                             f"resume with the same settings or use a new --out")


def _read_checkpoint(path: Path, drafter: DSparkDrafter, state: dict) -> tuple[dict, dict]:
    """(drafter state dict, optimizer state per (param name, key)) read and checked against
    ``drafter``, changing nothing; CorruptCheckpoint when a file cannot be read."""
    try:
        loaded = DSparkDrafter.from_pretrained(path)
    except DrafterError as e:
        raise CorruptCheckpoint(f"checkpoint {path.name}: {one_line(e)}") from None
    if loaded.cfg != drafter.cfg:
        raise TrainError(f"checkpoint {path} holds a drafter with another architecture; use a new --out")
    params = dict(drafter.named_parameters())
    try:
        tens = load_file(str(path / OPTIMIZER_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptCheckpoint(f"checkpoint {path.name}: {OPTIMIZER_FILE} is not readable "
                                f"({one_line(e)})") from None
    opt_state: dict = {}
    for key, v in list(tens.items()) + list(state.get("optimizer_scalars", {}).items()):
        n, _, k = key.partition("::")
        if n not in params or not k:
            raise CorruptCheckpoint(f"checkpoint {path.name}: optimizer state for unknown parameter {n[:60]!r}")
        if torch.is_tensor(v):
            if v.shape != params[n].shape:
                raise CorruptCheckpoint(f"checkpoint {path.name}: optimizer {key[:60]} has shape "
                                        f"{tuple(v.shape)}, not {tuple(params[n].shape)}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CorruptCheckpoint(f"checkpoint {path.name}: optimizer scalar {key[:60]} is not a number")
        opt_state[(n, k)] = v
    return loaded.state_dict(), opt_state


def load_checkpoint(path: Path, drafter: DSparkDrafter, opt) -> int:
    """Load the drafter's weights and the optimizer state from ``path``; returns its step.
    Everything is read and checked first: a CorruptCheckpoint leaves ``drafter`` and ``opt`` as
    they were."""
    state = read_state(path)
    sd, opt_state = _read_checkpoint(path, drafter, state)
    drafter.load_state_dict(sd)
    params = dict(drafter.named_parameters())
    opt.state.clear()
    for (n, k), v in opt_state.items():
        p = params[n]
        opt.state[p][k] = v.to(p.device) if torch.is_tensor(v) else torch.tensor(float(v))
    return int(state["step"])


def resume(out: Path, cfg: TrainConfig, drafter: DSparkDrafter, opt, warn=print) -> int:
    """Load the newest readable complete checkpoint under ``out`` and return its step (0: none).

    A checkpoint whose files cannot be read is skipped with a one-line ``warn`` and the previous
    one is tried; settings that differ from the run's are a TrainError (no fallback); when every
    checkpoint is unreadable, a TrainError.
    """
    done = _complete(out / "checkpoints")
    bad = []
    for ck in reversed(done):
        try:
            state = read_state(ck)
            check_resumable(ck, cfg, out, state)
            step = load_checkpoint(ck, drafter, opt)
        except CorruptCheckpoint as e:
            bad.append(ck.name)
            warn(f"warning: {one_line(e)}; falling back to the previous checkpoint")
            continue
        if bad:
            warn(f"warning: resuming from {ck.name} (skipped unreadable {', '.join(bad)})")
        return step
    if bad:
        raise TrainError(f"no checkpoint under {out / 'checkpoints'} can be read ({', '.join(bad)}); "
                         "remove them to start the run over")
    return 0

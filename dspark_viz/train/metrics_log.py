"""The training metrics file: ``<out>/metrics.jsonl`` (one JSON object per logged step).

Scope: ``MetricsLog`` appends a record per logged step (rank 0 only) and mirrors the numbers to
TensorBoard when it is installed; on resume it drops the lines past the resumed step (they will
be computed again), rewriting the file atomically. Not here: what is logged (``forward.py``,
``trainer.py``); reading the file for figures (``viz.training_figures``).
"""
from __future__ import annotations

import json
from pathlib import Path

from dspark_viz.io import write_text_atomic

METRICS_FILE = "metrics.jsonl"


def _lines_up_to(path: Path, step: int) -> list[str]:
    """The records of steps ≤ ``step``; a line that is not one (torn by a kill, not UTF-8, not
    JSON, not an object with an integer step) is dropped."""
    keep = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            line = raw.decode("utf-8")
            rec = json.loads(line)  # NaN allowed: a diverged run logs it
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            continue
        s = rec.get("step", 0) if isinstance(rec, dict) else None
        if isinstance(s, int) and not isinstance(s, bool) and s <= step:
            keep.append(line.rstrip("\r"))
    return keep


class MetricsLog:
    def __init__(self, out: Path, resume_step: int, enabled: bool) -> None:
        self.path, self.enabled, self.tb = out / METRICS_FILE, enabled, None
        if not enabled:
            return
        if self.path.exists():  # drop lines past the resumed step (they will be recomputed)
            write_text_atomic(self.path, "".join(x + "\n" for x in _lines_up_to(self.path, resume_step)))
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard not installed
            self.tb = None

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k.replace("@", "/"), v, rec["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

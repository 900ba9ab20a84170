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
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            pass
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

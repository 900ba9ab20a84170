"""Export a trained drafter for shipping: our layout in bf16 (or fp32), or DeepSpec's layout.

Scope: ``export`` loads one of our drafter directories (``DSparkDrafter.from_pretrained``), casts
its floating-point weights (the integer draft vocabulary stays int64), writes ``config.json`` +
``model.safetensors`` (+ its ``calibration.json`` if present) to DST and checks that the written
copy loads back with the same configuration. ``export_deepspec`` writes a full-vocabulary drafter
(ours, or an imported DeepSpec one) in DeepSpec's layout for ``target`` — what DeepSpec's
``eval.py`` and the serving engines load — and checks that it imports back with the same
weights. ``python -m dspark_viz.train.export SRC DST [--dtype bf16]`` and ``dspark-viz export``
(``dspark_viz/cli/export.py``) call these. Safetensors only; nothing is pickled.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dspark_viz.drafter.deepspec import load_deepspec, save_deepspec
from dspark_viz.drafter.model import DrafterError, DSparkDrafter
from dspark_viz.errors import one_line

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export(src: str | Path, dst: str | Path, dtype: str = "bf16", extra: dict | None = None) -> Path:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    d = DSparkDrafter.from_pretrained(src)
    d = d.to(DTYPES[dtype])
    out = d.save_pretrained(dst, extra={"exported_from": str(src), "dtype": dtype} | (extra or {}))
    back = DSparkDrafter.from_pretrained(out)
    if back.cfg != d.cfg:
        raise RuntimeError(f"{out}: the exported drafter does not load back with the same config")
    return out


def export_deepspec(drafter: DSparkDrafter, target, dst: str | Path) -> Path:
    """Write ``drafter`` in DeepSpec's layout and check it imports back to the same bf16 weights."""
    out = save_deepspec(drafter, target, dst)
    back = load_deepspec(out, target, device="cpu", dtype=torch.float32)
    mine = drafter.state_dict()
    for k, v in back.state_dict().items():
        if not torch.equal(v, mine[k].detach().to("cpu", torch.bfloat16).float()):
            raise DrafterError(f"{out}: {k} does not import back unchanged")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--dtype", default="bf16", choices=tuple(DTYPES))
    a = p.parse_args(argv)
    try:
        out = export(a.src, a.dst, a.dtype)
    except (ValueError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"exported {a.src} → {out} ({a.dtype}, {size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

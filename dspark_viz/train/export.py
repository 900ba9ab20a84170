"""Export a trained drafter for shipping: cast to bf16 (or keep fp32) in Hugging Face layout.

Scope: ``python -m dspark_viz.train.export SRC DST [--dtype bf16]`` loads a drafter directory
(``DSparkDrafter.from_pretrained``), casts its floating-point weights (the integer draft
vocabulary stays int64), writes ``config.json`` + ``model.safetensors`` (+ its
``calibration.json`` if present) to DST and checks that the written copy loads back with the
same configuration. Safetensors only; nothing is pickled.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export(src: str | Path, dst: str | Path, dtype: str = "bf16", extra: dict | None = None) -> Path:
    from dspark_viz.drafter.model import DSparkDrafter
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    d = DSparkDrafter.from_pretrained(src)
    d = d.to(DTYPES[dtype])
    out = d.save_pretrained(dst, extra={"exported_from": str(src), "dtype": dtype} | (extra or {}))
    back = DSparkDrafter.from_pretrained(out)
    if back.cfg != d.cfg:
        raise RuntimeError(f"{out}: the exported drafter does not load back with the same config")
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
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"exported {a.src} → {out} ({a.dtype}, {size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

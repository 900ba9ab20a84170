"""``dspark-viz export``: write a drafter in our layout (cast) or in DeepSpec's layout.

Scope: argument parsing and printing over ``dspark_viz.train.export``. ``--format deepspec``
needs ``--target`` (its embed_tokens / lm_head are stored in the file); a restricted-vocabulary
drafter is refused before any model is loaded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dspark_viz.cli.common import CLIError, outputs
from dspark_viz.drafter.deepspec import EXPORT_FAMILIES, deepspec_class
from dspark_viz.drafter.model import read_drafter_config
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.targets import load_target
from dspark_viz.train.export import DTYPES, export, export_deepspec

FORMATS = ("dspark-viz", "deepspec")


def _early_problem(src: str) -> str | None:
    """What makes one of our checkpoints unexportable to DeepSpec, read from its config alone."""
    p = Path(src).expanduser()
    if not p.is_dir() or deepspec_class(p):
        return None
    cfg = read_drafter_config(p)
    if cfg.restricted:
        return (f"{src} has a restricted draft vocabulary ({cfg.draft_vocab_size} of {cfg.vocab_size} "
                "ids); DeepSpec's format stores full-vocabulary heads only")
    if cfg.family not in EXPORT_FAMILIES:
        return f"{src} is a {cfg.family} drafter; DeepSpec's format holds Qwen3 and Gemma 4 drafters"
    return None


def _cmd_export(a: argparse.Namespace) -> int:
    if a.format == "dspark-viz":
        out = export(a.src, a.dst, a.dtype)
        print(f"exported {a.src} → {out} ({a.dtype})")
        return 0
    if not a.target:
        raise CLIError("--format deepspec needs --target (its embed_tokens and lm_head go into the file)")
    problem = _early_problem(a.src)
    if problem:
        raise CLIError(f"cannot export in DeepSpec's format: {problem}")
    target = load_target(a.target, device=a.device)
    drafter, _ = resolve_drafter(a.src, target)
    if drafter is None:
        raise CLIError("nothing to export (--drafter none)")
    out = export_deepspec(drafter, target, a.dst)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"exported {a.src} → {out} (DeepSpec layout for {target.name}, bf16, {size / 2**20:.1f} MiB)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="write a drafter in our layout or in DeepSpec's",
                       description="Write the drafter SRC to DST: in our layout cast to --dtype, or "
                                   "(--format deepspec) in DeepSpec's layout for --target, which "
                                   "DeepSpec's eval.py and the serving engines load.")
    p.add_argument("src", help="drafter directory (ours or DeepSpec's) or hub id")
    p.add_argument("dst", type=Path)
    p.add_argument("--format", choices=FORMATS, default="dspark-viz")
    p.add_argument("--target", default=None, help="the target the drafter serves (--format deepspec)")
    p.add_argument("--dtype", default="bf16", choices=tuple(DTYPES), help="our layout only")
    p.add_argument("--device", default="cpu")
    outputs(p, dirs=("dst",))
    p.set_defaults(func=_cmd_export)

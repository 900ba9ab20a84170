"""The ``dspark-viz`` command line: one module per subcommand group, each with ``register(sub)``.

Scope: building the parser from ``COMMAND_MODULES`` and running the chosen handler, turning a
``UserError`` into ``dspark-viz: error: <one line>`` with exit status 2 — after ``common.check_args``
has checked the options every command declares (ranges, device, output paths), before any work;
``run_cli`` runs a command in
this process and returns its output (the notebooks' toolchain cells). The CLI package sits on the
top floor: it may import every library layer; no library module imports it.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from typing import Sequence

from dspark_viz.cli.common import check_args
from dspark_viz.errors import UserError, one_line

COMMAND_MODULES = (
    "dspark_viz.cli.trace",
    "dspark_viz.cli.data",
    "dspark_viz.cli.train",
    "dspark_viz.cli.eval",
    "dspark_viz.cli.load",
    "dspark_viz.cli.viz",
    "dspark_viz.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dspark-viz", description=(
        "DSpark speculative decoding with every internal visible."))
    sub = ap.add_subparsers(dest="command", required=True)
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        check_args(a)
        return int(a.func(a) or 0)
    except UserError as e:
        print(f"dspark-viz: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dspark-viz: interrupted", file=sys.stderr)
        return 130


def run_cli(args: Sequence, *, quiet: bool = True) -> str:
    """Run ``dspark-viz ARGS`` in this process (the notebooks' toolchain cells); return what
    it printed, or raise RuntimeError with its error line when it fails."""
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    out = buf.getvalue()
    if rc != 0:
        raise RuntimeError(f"dspark-viz {' '.join(map(str, args[:2]))} failed: "
                           f"{err.getvalue().strip() or out.strip()}")
    if not quiet:
        print(out, end="")
    return out

"""The ``dspark-viz`` command line: one module per subcommand group, each with ``register(sub)``.

Scope: building the parser from ``COMMAND_MODULES`` and running the chosen handler, turning a
``UserError`` into ``dspark-viz: error: <one line>`` with exit status 2. The CLI package sits on the
top floor: it may import every library layer; no library module imports it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from dspark_viz.errors import UserError, one_line

COMMAND_MODULES = (
    "dspark_viz.cli.trace",
    "dspark_viz.cli.data",
    "dspark_viz.cli.train",
    "dspark_viz.cli.eval",
    "dspark_viz.cli.load",
    "dspark_viz.cli.viz",
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
        return int(a.func(a) or 0)
    except UserError as e:
        print(f"dspark-viz: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dspark-viz: interrupted", file=sys.stderr)
        return 130


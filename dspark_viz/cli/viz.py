"""``dspark-viz app``: launch the Gradio explorer (the Blocks built by the repository's app.py).

Scope: argument parsing and loading ``app.py`` from the source tree (the app is a thin layer
that lives next to the package, so ``python app.py`` and ``dspark-viz app`` serve the same
Blocks). Nothing else.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from dspark_viz.cli.common import Bound, CLIError, bounds, count

APP_PATH = Path(__file__).resolve().parents[2] / "app.py"


def load_app_module():
    """Import the repository's ``app.py`` as a module (one-line error if it is missing)."""
    if not APP_PATH.is_file():
        raise CLIError(f"app.py not found next to the package ({APP_PATH}); run from a source checkout")
    spec = importlib.util.spec_from_file_location("dspark_viz_app", APP_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cmd_app(a: argparse.Namespace) -> int:
    mod = load_app_module()
    argv = ["--target", a.target, "--drafter", a.drafter, "--host", a.host, "--port", str(a.port)]
    if a.device:
        argv += ["--device", a.device]
    if a.no_preload:
        argv.append("--no-preload")
    if a.allow_models:
        argv += ["--allow-models", *a.allow_models]
    if a.max_upload_mb is not None:
        argv += ["--max-upload-mb", repr(a.max_upload_mb)]
    if a.model_cache is not None:
        argv += ["--model-cache", str(a.model_cache)]
    return int(mod.main(argv) or 0)


def register(sub) -> None:
    p = sub.add_parser("app", help="launch the Gradio explorer",
                       description="Launch the DSpark explorer (Gradio) on the given host/port; "
                                   "works offline on the embedded default target.")
    p.add_argument("--target", default="embedded")
    p.add_argument("--drafter", default="default")
    p.add_argument("--device", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--no-preload", action="store_true", help="load models on the first Start")
    p.add_argument("--allow-models", nargs="+", default=[], metavar="PATH_OR_ID",
                   help="more targets/drafters the page may offer (see README, Security model)")
    p.add_argument("--max-upload-mb", type=float, default=None, help="largest trace upload in MB (default 5)")
    p.add_argument("--model-cache", type=int, default=None, help="loaded models kept (default 3)")
    bounds(p, port=count(1, 65535), model_cache=count(1, 64), max_upload_mb=Bound(0.0, 4096.0, lo_open=True))
    p.set_defaults(func=_cmd_app)

"""The DSpark explorer: a Gradio app that animates speculative decoding round by round.

Thin layer over ``dspark_viz``: settings (a collapsible sidebar) → ``SpecSession`` lanes (DSpark,
and in comparison mode the DFlash ablation and plain decoding), a per-user ``Explorer`` in
``gr.State`` (also kept server-side under a browser session id, so a reload finds it), one top
bar (Start/Back/Step/Play, the round box, the tour, the status line), and the panels of
``dspark_viz.viz.panels`` (one registry: ``LAYOUT`` places them, the render and the export
iterate it). A recorded trace — an upload, or a shipped demo trace — replays with no model. The file reads top to bottom: what the
server offers, shared models, building a run, rendering, the handlers (module level, each
taking the shared ``ModelPool`` first, each wrapped once by ``handler``), the layout, the wiring.

The app is a trust boundary (README, "Security model"): it serves only the targets and drafters
its operator named at launch (menus, checked again on the server), policies of the registry
and named capacity presets only, traces up to an upload limit; models load outside the lock that
serialises model calls, into a bounded LRU cache; every handler reports a bad input in the
page's one-line status.

    python app.py [--target embedded] [--drafter default] [--allow-models PATH_OR_ID ...]
                  [--max-upload-mb 5] [--model-cache 3] [--port 7860] [--host 127.0.0.1]
"""
from __future__ import annotations

import argparse
import gzip
import html
import json
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

import dspark_viz  # noqa: E402
from dspark_viz.config import EMBEDDED_ALIASES, GAMMA_MAX, DecodeConfig  # noqa: E402
from dspark_viz.decoding.engine import SpecSession, confidence_problem  # noqa: E402
from dspark_viz.decoding.policy import (POLICY_REGISTRY, Fixed, parse_policy, policy_entry,  # noqa: E402
                                        policy_menu, sweep_specs)
from dspark_viz.decoding.trace import Trace  # noqa: E402
from dspark_viz.drafter.registry import SHIPPED, resolve_drafter, shipped_drafter_path  # noqa: E402
from dspark_viz.errors import UserError, one_line  # noqa: E402
from dspark_viz.load import capacity as _capacity  # noqa: E402
from dspark_viz.load import simulator as _simulator  # noqa: E402
from dspark_viz.targets import load_target  # noqa: E402
from dspark_viz.viz import figures as F  # noqa: E402
from dspark_viz.viz import load_figures as _load_figures  # noqa: E402
from dspark_viz.viz import text_view as TV  # noqa: E402
from dspark_viz.viz import tokens as T  # noqa: E402
from dspark_viz.viz.app_state import TOUR, Explorer, Lane, extend_live, tour_markdown  # noqa: E402
from dspark_viz.viz.panels import LAYOUT, PANELS, view_of  # noqa: E402

LOG = logging.getLogger("dspark_viz.app")
MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 256
MAX_TEMPERATURE = 2.0
MAX_LOAD = 256
MAX_SEED = 2 ** 63 - 1
MAX_POLICY_CHARS = 40
MAX_UPLOAD_MB = 5.0  # default upload limit (``--max-upload-mb``)
MODEL_CACHE_SIZE = 3  # default number of loaded models kept (``--model-cache``), launch models aside
STATE_TTL_S = 3600  # a session's state (and its exports) lives this long after its last event
EXPORT_PREFIXES = ("dsv-figures-", "dsv-export-")  # temporary export folders (one per session)
TICK_S = 0.5
EXAMPLES = [
    ["def fibonacci(n):\n    "],
    ["Question: A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar "
     "bill. How much change does he get?\nAnswer:"],
    ["The old lighthouse keeper climbed the stairs one last time, and"],
]
POLICIES = policy_menu()
NO_CURVE = f"default ({_capacity.DEFAULT_CAPACITY})"
DEVICE_CURVE = "this device (profiled)"
CURVES = [NO_CURVE, DEVICE_CURVE] + _capacity.preset_names()
LIVE = "live model"
DEMO = "shipped demo trace"
REPLAY = "replay a trace file"
SOURCES = [LIVE, DEMO, REPLAY]
TRACES_DIR = Path(dspark_viz.__file__).resolve().parent / "assets" / "traces"  # package data
MAX_SHIPPED_BYTES = 64 * 2 ** 20  # a shipped trace, decompressed (they are ≈ 2–6 MB)
MAX_SESSIONS = 64  # runs kept server-side for a page reload (least recently used out first)
DEMO_UNDER_LOAD = dict(policy="hardware", load=64, capacity=NO_CURVE)  # the preset button
FORCE_ELL = ["off"] + [str(i) for i in range(GAMMA_MAX + 1)]
# the inputs of Start, in the order of ``on_start``'s parameters after the state
SETTINGS = ("source", "prompt", "target_spec", "drafter_spec", "trace_file", "gamma",
            "temperature", "seed", "max_tokens", "policy", "load", "capacity", "calibration",
            "markov_off", "force_ell", "compare", "big", "demo_trace")
CSS = T.CSS + TV.CSS + """
.dsv-status{padding:6px 10px;border-radius:6px;background:#eef3f8;color:#102a43}
.dsv-error{padding:8px 10px;border-radius:6px;background:#ffebee;color:#b71c1c;font-weight:600}
.dsv-warn{padding:4px 8px;border-radius:6px;background:#fff8e1;color:#5d4037}
.dsv-lane h4{margin:4px 0}
body.dsv-present{--dsv-tok-size:26px}
body.dsv-present .dsv-metrics,body.dsv-present .dsv-status,body.dsv-present .prose{font-size:22px!important}
.gradio-container{overflow:clip!important}
#dsv-bar{position:sticky;top:0;z-index:20;background:var(--background-fill-primary,#fff);padding:4px 0;
 border-bottom:1px solid #e0e0e0}
#dsv-bar button{min-width:64px}
#dsv-round input{width:90px}
#dsv-bar .row{align-items:center}
#dsv-bar button{max-height:44px}
.dsv-headline{font-size:15px;padding:4px 6px;background:#e8f5e9;border-radius:6px;margin-bottom:4px;color:#1b5e20}
.dsv-noisy{color:#616161;font-size:.9em}
.dsv-terms{font-size:13px;color:#37474f}
.dsv-terms ul{margin:2px 0 0 0;padding-left:18px}
.dsv-lanes-row{display:flex;gap:10px;align-items:flex-start}
.dsv-lane-col{flex:1 1 0;min-width:0}
body.dsv-present #dsv-title,body.dsv-present #dsv-legend{display:none}
#dsv-text,#dsv-draft,#dsv-conf,#dsv-sched,#dsv-verify,#dsv-tau,#dsv-pos,#dsv-metrics,#dsv-lanes{scroll-margin-top:var(--dsv-bar-h,250px)}
body.dsv-present{--dsv-text-max:300px}
body.dsv-present .dsv-status{font-size:18px!important}
body.dsv-present .dsv-warn{font-size:14px;padding:2px 6px}
body.dsv-present .dsv-lane h4{font-size:16px}
#dsv-bar button{white-space:nowrap}
/* presentation mode on a screen narrower than a projector's 1920 px: confidence and scheduler side
   by side under text and draft block, which then has the width its cells need (Gradio prefixes
   the selectors inside @media with its container, hence :where(body.dsv-present *)) */
@media (max-width:1699px){
 .dsv-row-0:where(body.dsv-present *){flex-wrap:wrap!important}
 .dsv-row-0:where(body.dsv-present *)>.dsv-col-confidence{flex:1 1 100%!important;
  flex-direction:row!important;flex-wrap:wrap!important}
 .dsv-row-0:where(body.dsv-present *)>.dsv-col-confidence>*{flex:1 1 40%!important;min-width:0!important}
 .dsv-row-0:where(body.dsv-present *)>.dsv-col-confidence>#dsv-terms{flex-basis:100%!important}
}"""
# keyboard shortcuts for a clicker: → Step, ← Back, space Play/Pause (never inside an input)
KEYS_JS = """<script>
document.addEventListener('keydown', function (e) {
  var t = e.target, tag = (t && t.tagName || '').toLowerCase();
  if (tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) return;
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  var id = {ArrowRight: 'dsv-step', ArrowLeft: 'dsv-back', ' ': 'dsv-play'}[e.key];
  if (!id) return;
  var el = document.getElementById(id);
  if (!el) return;
  var b = el.tagName === 'BUTTON' ? el : el.querySelector('button');
  if (b) { e.preventDefault(); b.click(); }
});
</script>"""
# presentation mode: the body class (CSS), then a resize once the sidebar has moved, so every
# plot redraws at its new column width (plotly follows window resizes, not container ones)
TOGGLE_PRESENT_JS = ("(on) => { document.body.classList.toggle('dsv-present', !!on); "
                     "[400, 1200].forEach((ms) => setTimeout(() => window.dispatchEvent(new Event('resize')), ms)); "
                     "return on; }")


class ModelLoadError(UserError):
    """A model on the server's list could not be loaded (one line; the log has the traceback)."""


# ----------------------------------------------------------------------------- what is offered
def _unique(items) -> list:
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def _choice(value, allowed, what: str) -> str:
    """``value`` when it is one of ``allowed``; else a one-line refusal that repeats nothing of
    it (a crafted request learns nothing about the server's files)."""
    if not isinstance(value, str) or value not in allowed:
        raise UserError(f"{what}: not one of the choices this server offers")
    return value


def _number(x, what: str, lo: float, hi: float, *, integer: bool = False) -> float | int:
    """A finite number in [lo, hi] (an integer with ``integer``), else a one-line refusal."""
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{what} must be a number") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise UserError(f"{what} must be in [{lo:g}, {hi:g}]")
    if integer:
        if v != int(v):
            raise UserError(f"{what} must be a whole number")
        return int(v)
    return v


def check_policy(spec) -> str:
    """A policy spec of the registry ('fixed', 'fixed:3', 'threshold:0.6', 'hardware', …).

    The curve of a curve policy comes from the capacity menu, never from the spec: a spec such
    as 'hardware:/some/file' is refused without looking at the path.
    """
    spec = spec.strip() if isinstance(spec, str) else ""
    if spec in POLICIES:
        return spec
    name, _, arg = spec.partition(":")
    try:
        e = policy_entry(name)
    except UserError:
        raise UserError(f"policy: not a registry policy (known: {', '.join(POLICY_REGISTRY)})") from None
    if arg and not e.arg:
        raise UserError(f"policy {e.name}: the app takes its capacity curve from the 'capacity "
                        "curve' menu, not from the policy spec")
    if len(spec) > MAX_POLICY_CHARS:
        raise UserError(f"policy: longer than {MAX_POLICY_CHARS} characters")
    return spec


# ----------------------------------------------------------------------------- shared models
class ModelCache:
    """Loaded models by key: at most ``size``, least recently used out first; pinned ones extra.

    ``get(key, load)`` returns the cached model or calls ``load()`` holding only that key's own
    gate, never the model lock nor another key's gate: a slow or unreachable hub id holds up only
    the users who asked for that same model. A failed load caches nothing. A session that holds
    a model keeps it alive after eviction (the cache only forgets it).
    """

    def __init__(self, size: int = MODEL_CACHE_SIZE) -> None:
        self.size = max(1, int(size))
        self._lock = threading.Lock()  # guards the dictionaries only (held for microseconds)
        self._items: OrderedDict = OrderedDict()
        self._pinned: dict = {}
        self._gates: dict = {}  # key → lock of its load (keys come from the fixed menus: bounded)

    def pin(self, key, value) -> None:
        with self._lock:
            self._pinned[key] = value

    def peek(self, key):
        with self._lock:
            return self._pinned.get(key, self._items.get(key))

    def keys(self) -> list:
        with self._lock:
            return list(self._items)

    def _cached(self, key):
        with self._lock:
            if key in self._pinned:
                return True, self._pinned[key]
            if key in self._items:
                self._items.move_to_end(key)
                return True, self._items[key]
            return False, self._gates.setdefault(key, threading.Lock())

    def get(self, key, load):
        hit, got = self._cached(key)
        if hit:
            return got
        with got:  # this key's gate: one load per key at a time
            hit, value = self._cached(key)
            if hit:
                return value
            value = load()
            with self._lock:
                self._items[key] = value
                self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return value


def _loading(what: str, value: str, fn):
    """Run a model load; a failure of any kind (a bad config, an allocation, a network error) is
    one line naming the menu entry (UserErrors keep their own line), the traceback goes to the log."""
    try:
        return fn()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 — third-party loaders fail in every type there is
        LOG.warning("loading %s %r failed", what, value, exc_info=True)
        raise ModelLoadError(f"{what} {value!r} could not be loaded: {type(e).__name__}: "
                             f"{one_line(e)[:200]}") from None


class ModelPool:
    """What this server offers (fixed at launch) and the models it has loaded (shared).

    Targets: the launch target, the embedded default and every ``allow`` entry. Drafters:
    ``default`` (the launch drafter with the launch target; the shipped one, else an untrained
    one, with another target), ``random``, ``none``, the shipped drafters and every ``allow``
    entry. Nothing else is ever resolved: a value outside the menus is refused before any path
    or hub id is looked at.
    """

    def __init__(self, target=None, drafter=None, drafter_label: str | None = None,
                 device: str | None = None, *, target_spec: str | None = None,
                 allow: tuple[str, ...] | list[str] = (), cache_size: int = MODEL_CACHE_SIZE,
                 max_upload_mb: float = MAX_UPLOAD_MB) -> None:
        self.lock = threading.Lock()  # every model call (prefill, step, profile) holds it; loads do not
        self.device = device
        self.cache = ModelCache(cache_size)
        self.curves: dict[str, object] = {}
        self.pools: dict[tuple, tuple] = {}
        self._pool_gates: dict[tuple, threading.Lock] = {}
        self._gates_lock = threading.Lock()
        self.max_upload_bytes = int(float(max_upload_mb) * 2 ** 20)
        allow = [a.strip() for a in allow if a and a.strip()]
        launch = _embedded(target_spec or (target.name if target is not None else "embedded"))
        self.default_target = launch
        self.target_menu: list[str] = _unique([launch, "embedded", *allow])
        self._shipped = {f"shipped:{p.name}": p for kinds in SHIPPED.values() for p in kinds.values()
                         if (p / "model.safetensors").exists()}
        self.drafter_menu: list[str] = _unique(["default", "random", "none", *self._shipped, *allow])
        if target is not None:
            self.cache.pin(("target", launch), target)
            if drafter is not None:
                self.cache.pin(("drafter", launch, "default", "dspark"),
                               (drafter, drafter_label or "untrained (random, supplied by the caller)"))

    # -------------------------------------------------------------- the menus, checked
    def target_choice(self, spec) -> str:
        spec = self.default_target if spec in (None, "") else spec
        return _choice(_embedded(spec) if isinstance(spec, str) else spec,
                       self.target_menu, "target")

    def drafter_choice(self, spec) -> str:
        return _choice("default" if spec in (None, "") else spec, self.drafter_menu, "drafter")

    # -------------------------------------------------------------- loading (no model lock)
    def target(self, spec):
        spec = self.target_choice(spec)
        return self.cache.get(("target", spec), lambda: _loading(
            "target", spec, lambda: load_target(spec, device=self.device)))

    def drafter(self, target_spec, spec, kind: str = "dspark"):
        """(drafter or None, label). ``kind="dflash"``: the shipped DFlash drafter of the target
        for ``default``, else None (the caller reuses the DSpark one with its Markov head off)."""
        t_spec, spec = self.target_choice(target_spec), self.drafter_choice(spec)
        target = self.target(t_spec)
        if kind == "dflash" and (spec != "default" or shipped_drafter_path(target.name, kind) is None):
            return None
        return self.cache.get(("drafter", t_spec, spec, kind), lambda: _loading(
            "drafter", spec, lambda: self._resolve_drafter(spec, target, kind)))

    def _resolve_drafter(self, spec: str, target, kind: str):
        if spec in self._shipped:
            drafter, _ = resolve_drafter(str(self._shipped[spec]), target, kind=kind)
            return drafter, spec  # the label names the entry, not the server's install path
        return resolve_drafter(spec, target, kind=kind)

    # -------------------------------------------------------------- model calls (model lock)
    def background_pool(self, target_spec: str, drafter_spec: str, gamma: int):
        """A trace pool for simulated load: fixed(γ) rounds on the example prompts (once)."""
        key = (self.target_choice(target_spec), self.drafter_choice(drafter_spec), int(gamma))
        with self._gates_lock:
            gate = self._pool_gates.setdefault(key, threading.Lock())
        with gate:
            if key not in self.pools:
                target = self.target(key[0])
                drafter, label = self.drafter(key[0], key[1])
                if drafter is None:
                    raise UserError("simulated load needs a drafter: pick one other than 'none'")
                cfg = DecodeConfig(gamma=key[2], max_new_tokens=24)
                with self.lock:
                    traces = [SpecSession(target, drafter, cfg, policy=Fixed(key[2]),
                                          drafter_name=label).run(p[0]) for p in EXAMPLES]
                tp = _simulator.TracePool.from_traces(traces)
                self.pools[key] = (tp, f"{tp.n_rounds} rounds recorded with fixed(γ) on the "
                                       f"{len(traces)} example prompts ({label})")
        return self.pools[key]

    def device_curve(self, target_spec: str):
        spec = self.target_choice(target_spec)
        if spec not in self.curves:
            target = self.target(spec)
            with self.lock:
                if spec not in self.curves:
                    self.curves[spec] = _capacity.profile_target(
                        target, [1, 2, 4, 8, 16, 32, 64], context_len=64, repeats=1,
                        name=f"profiled:{target.name}")
        return self.curves[spec]


def _embedded(spec: str) -> str:
    """Every spelling of the embedded default is the menu's 'embedded'."""
    return "embedded" if spec in EMBEDDED_ALIASES else spec


# ----------------------------------------------------------------------------- building a run
def _forced_ell(force_ell) -> int | None:
    v = _choice("off" if force_ell in (None, "") else str(force_ell), FORCE_ELL, "forced ℓ")
    return None if v == "off" else int(v)


def _check_settings(prompt, gamma, temperature, seed, max_tokens, load) -> dict:
    """The app's own bounds (``DecodeConfig`` checks the decoding settings themselves); the
    settings as numbers."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("the prompt is empty: type something or pick an example")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    return dict(gamma=_number(gamma, "γ", 1, GAMMA_MAX, integer=True),
                temperature=_number(temperature, "temperature", 0.0, MAX_TEMPERATURE),
                seed=_number(seed, "seed", 0, MAX_SEED, integer=True),
                max_new_tokens=_number(max_tokens, "max new tokens", 1, MAX_NEW_TOKENS, integer=True),
                load=_number(load, "concurrency R", 1, MAX_LOAD, integer=True))


def _capacity_curve(pool: ModelPool, name, target_spec: str):
    """The capacity menu's curve: None (the default preset), this device's profile, or a preset
    by name (never a path)."""
    name = _choice(name or NO_CURVE, CURVES, "capacity curve")
    if name == NO_CURVE:
        return None
    if name == DEVICE_CURVE:
        return pool.device_curve(target_spec)
    return _capacity.get_curve(name)


def _background(pool: ModelPool, load: int, target_spec: str, drafter_spec: str, gamma: int,
                seed: int, notes: list[str]):
    """The other R − 1 requests, replayed from recorded rounds (``load.simulator``)."""
    if load <= 1:
        return None
    tp, note = pool.background_pool(target_spec, drafter_spec, gamma)
    notes.append(f"R = {load}: the other {load - 1} requests replay {note}")
    return _simulator.SimulatedBackground(tp, load - 1, seed=seed)


def _policy_for(spec: str, cfg: DecodeConfig, drafter, curve, notes: list[str],
                lane: str = "DSpark"):
    """The policy of a lane (a curve policy on ``curve``, else the default preset); fixed(γ),
    with a note naming the lane, where it needs confidences this lane's drafter has no head for."""
    curve = curve if curve is not None else _capacity.get_curve(_capacity.DEFAULT_CAPACITY)
    p = parse_policy(check_policy(spec), cfg.gamma, curve)
    problem = confidence_problem(p, drafter, cfg)
    if problem:
        notes.append(f"{lane} lane: {problem}; its drafter has none → this lane runs fixed(γ = {cfg.gamma})")
        return Fixed(cfg.gamma)
    return p


def _comparison_lanes(pool: ModelPool, target, target_spec: str, drafter_spec: str, drafter,
                      label: str, cfg: DecodeConfig, policy: str, curve, notes: list[str]):
    """The DFlash ablation (its own drafter, else this one with the Markov head off) and plain."""
    got = pool.drafter(target_spec, drafter_spec, "dflash")
    if got is None or got[0] is None:
        dd, dl = drafter, f"{label} with the Markov head off (no separate DFlash drafter)"
    else:
        dd, dl = got
    dcfg = replace(cfg, mode="dflash")
    return [("dflash", f"DFlash ablation · {dl}",
             SpecSession(target, dd, dcfg, policy=_policy_for(policy, dcfg, dd, curve, notes, "DFlash"),
                         drafter_name=dl)),
            ("plain", "plain target decoding (1 token per target pass)",
             SpecSession(target, None, replace(cfg, mode="ar"), drafter_name="none"))]


def new_live(pool: ModelPool, *, prompt, target_spec, drafter_spec, gamma, temperature, seed,
             max_tokens, policy, load, capacity, calibration, markov_off, force_ell, compare,
             **_) -> Explorer:
    """A live run: everything checked against the menus and bounds first, models loaded outside
    the model lock, prefill under it."""
    s = _check_settings(prompt, gamma, temperature, seed, max_tokens, load)
    target_spec, drafter_spec = pool.target_choice(target_spec), pool.drafter_choice(drafter_spec)
    policy = check_policy(policy)
    cfg = DecodeConfig(gamma=s["gamma"], temperature=s["temperature"], seed=s["seed"],
                       max_new_tokens=s["max_new_tokens"], markov_off=bool(markov_off),
                       force_ell=_forced_ell(force_ell), calibrated=bool(calibration))
    load, notes = s["load"], []
    _choice(capacity or NO_CURVE, CURVES, "capacity curve")
    if drafter_spec == "none":
        raise UserError("drafter 'none' gives plain decoding only: pick a drafter")
    target = pool.target(target_spec)
    drafter, label = pool.drafter(target_spec, drafter_spec)
    curve = _capacity_curve(pool, capacity, target_spec)
    note = drafter.confidence_note(cfg.temperature) if hasattr(drafter, "confidence_note") else None
    if note:
        notes.append(note)
    bg = _background(pool, load, target_spec, drafter_spec, cfg.gamma, cfg.seed, notes)
    lanes = [("dspark", f"DSpark · drafter: {label}",
              SpecSession(target, drafter, cfg,
                          policy=_policy_for(policy, cfg, drafter, curve, notes), background=bg,
                          drafter_name=label))]
    if compare:
        lanes += _comparison_lanes(pool, target, target_spec, drafter_spec, drafter, label, cfg,
                                   policy, curve, notes)
    with pool.lock:
        for _, _, sess in lanes:
            sess.prefill(prompt)
    return Explorer(lanes=[Lane(n, l, s.trace(), s) for n, l, s in lanes], source="live", notes=notes,
                    settings=dict(target=target.name, drafter=label, target_spec=target_spec,
                                  drafter_spec=drafter_spec, policy=policy, load=load,
                                  untrained="untrained" in label))


def new_replay(pool: ModelPool, path) -> Explorer:
    """A replay of an uploaded trace: the size checked here too (whatever Gradio's limit), then
    ``Trace.load``, whose every refusal is one line naming the file by its name only."""
    if not path:
        raise UserError("replay: choose a trace file (.json) first")
    name = Path(str(path)).name[:80]
    try:
        size = os.path.getsize(path)
    except (OSError, TypeError, ValueError):
        raise UserError(f"replay: the uploaded file {name} could not be read") from None
    if size > pool.max_upload_bytes:
        raise UserError(f"replay: {name} has {size / 2**20:.3g} MB; this server accepts traces up to "
                        f"{pool.max_upload_bytes / 2**20:.3g} MB (--max-upload-mb)")
    try:
        tr = Trace.load(path)
    except UserError as e:
        raise UserError(one_line(e).replace(str(path), name)) from None
    label = f"replay of {name} · drafter: {_clip(tr.meta.drafter)}"
    return Explorer(lanes=[Lane("replay", label, tr, None)], source="replay",
                    settings=_trace_settings(tr))


def shipped_traces(root: Path = TRACES_DIR) -> dict[str, str]:
    """Shipped demo traces: file name → title, from the package's ``index.json`` (empty when
    the package ships none). Only these names are ever replayed from the package."""
    try:
        index = json.loads((root / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in index.items()
            if isinstance(k, str) and "/" not in k and (root / k).is_file()} if isinstance(index, dict) else {}


SHIPPED_TRACES = shipped_traces()
DEMO_MENU = [f"{name} — {title}" for name, title in SHIPPED_TRACES.items()]


def load_shipped(name: str, root: Path = TRACES_DIR) -> Trace:
    """A shipped trace by its menu entry (gzip JSON from the package, never a typed path)."""
    entry = _choice(name, DEMO_MENU, "demo trace")
    fname = entry.split(" — ", 1)[0]
    try:
        with gzip.open(root / fname, "rb") as f:
            data = f.read(MAX_SHIPPED_BYTES + 1)
    except (OSError, EOFError) as e:
        raise UserError(f"demo trace {fname} could not be read: {one_line(e)}") from None
    if len(data) > MAX_SHIPPED_BYTES:
        raise UserError(f"demo trace {fname}: larger than {MAX_SHIPPED_BYTES >> 20} MB decompressed")
    try:
        return Trace.from_dict(json.loads(data.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"demo trace {fname}: not a trace ({one_line(e)[:120]})") from None


def new_shipped(name) -> Explorer:
    """A replay of a shipped demo trace: no model needed."""
    tr = load_shipped(name)
    label = f"demo trace {str(name).split(' — ', 1)[0]} · drafter: {_clip(tr.meta.drafter)}"
    return Explorer(lanes=[Lane("replay", label, tr, None)], source="replay",
                    settings=_trace_settings(tr))


def _trace_settings(tr: Trace) -> dict:
    m = tr.meta
    return dict(target=m.target, drafter=m.drafter, policy=m.policy, load=m.load,
                untrained="untrained" in m.drafter, trace_meta=m)


# ----------------------------------------------------------------------------- rendering
def _clip(s, n: int = 120) -> str:
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def status_html(ex: Explorer | None, error: str | None = None) -> str:
    if error:
        return f'<div class="dsv-error">⚠ {html.escape(_clip(error, 400))}</div>'
    if ex is None:
        return '<div class="dsv-status">Choose settings and press <b>Start</b> (or load a trace to replay).</div>'
    st = ex.settings
    warn = ""
    if st.get("untrained"):
        warn = ('<div class="dsv-warn">⚠ The drafter is <b>untrained</b> (random weights): its '
                "drafts are mostly rejected. This shows the mechanics, not DSpark's speed.</div>")
    notes = "".join(f'<div class="dsv-warn">{html.escape(_clip(n, 400))}</div>' for n in ex.notes)
    return (f'<div class="dsv-status">{html.escape(ex.source)} · target <b>{html.escape(_clip(st.get("target")))}</b>'
            f' · drafter <b>{html.escape(_clip(st.get("drafter")))}</b> · policy {html.escape(_clip(st.get("policy")))}'
            f' · R = {st.get("load")} · {position_text(ex)}</div>{warn}{notes}')


def position_text(ex: Explorer) -> str:
    """Where the cursor is, numbered as every panel numbers rounds (1 = the first round)."""
    n = ex.total_rounds
    if ex.cursor == 0:
        return ("after prefill · " + (f"{n} rounds recorded" if n else "no round yet")
                + " · press Step (→)")
    return f"round {ex.cursor} of {n}" + (" · finished" if ex.at_end else "")


def _empty(panel) -> object:
    return F.message_figure("", "press Start") if panel.kind == "plot" else ""


def render(ex: Explorer | None, error: str | None = None):
    """The values of the view's outputs: status, legend, every panel of ``PANELS``, the scrubber."""
    if ex is None:
        return (status_html(None, error), T.legend_html(), *[_empty(p) for p in PANELS],
                gr.update(value=0))
    view = view_of(ex)
    return (status_html(ex, error), T.legend_html(), *[p.render(view) for p in PANELS],
            gr.update(value=ex.cursor))


def figures_of(ex: Explorer) -> dict:
    """Export file stem → figure, for every plot panel at the cursor (normal size)."""
    view = view_of(ex, big=False)
    return {p.export_name: p.render(view) for p in PANELS if p.kind == "plot"}


# ----------------------------------------------------------------------------- handlers
class Refused:
    """An input Gradio itself refused (outside a slider's range, not a menu choice): passed on
    to the handler, which reports it in the page's status line like any other bad input."""

    def __init__(self, what: str) -> None:
        self.what = what


def refusing(component, what: str):
    """Let ``component``'s own refusals reach the handler instead of Gradio's error toast: as
    ``Refused``, or for a menu (``gr.Dropdown``) as the string itself — the handler checks every
    value against its own list (``_choice``), which also knows each entry's aliases."""
    original = component.preprocess
    menu = isinstance(component, gr.Dropdown)

    def preprocess(payload):
        try:
            return original(payload)
        except Exception:  # noqa: BLE001 — gradio.Error and the component's own ValueErrors
            return payload if menu and isinstance(payload, str) else Refused(what)
    component.preprocess = preprocess
    return component


def handler(on_error):
    """Wrap a handler once: a ``UserError`` (or a ``Refused`` input) becomes ``on_error(inputs,
    message)``, the page's one-line status; any other exception is logged with its traceback and
    shown as one line too, so nothing reaches Gradio's generic error."""
    def wrap(fn):
        def run(*args, **kw):
            try:
                bad = next((a for a in args if isinstance(a, Refused)), None)
                if bad is not None:
                    raise UserError(f"{bad.what}: not accepted (out of range or not one of the choices)")
                return fn(*args, **kw)
            except UserError as e:
                msg = one_line(e)
            except Exception as e:  # noqa: BLE001 — a bug: the log keeps the traceback
                LOG.exception("handler %s failed", getattr(fn, "__name__", fn))
                msg = f"internal error ({type(e).__name__}); the server log has the details"
            return on_error(args, msg)
        run.__name__ = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "handler"))
        return run
    return wrap


def _state_of(args) -> Explorer | None:
    return args[0] if args and isinstance(args[0], Explorer) else None


def _view_error(args, msg: str):
    ex = _state_of(args)
    try:
        return (ex,) + tuple(render(ex, error=msg))
    except Exception:  # noqa: BLE001 — the old state does not render either: show none
        LOG.exception("rendering the previous state failed")
        return (ex,) + tuple(render(None, error=msg))


def guarded(fn):
    """``fn(ex, *args) → ex`` as a handler returning the state and every output of ``render``;
    an error keeps the previous state and shows one line in the status."""
    def view(*args):
        ex2 = fn(*args)
        return (ex2,) + tuple(render(ex2))
    view.__name__ = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "view"))
    return handler(_view_error)(view)


def _status_beside(fn, note: Callable[[Explorer], str] | None = None):
    """``fn(ex, ...) → value`` as a handler returning (value, status); ``note(ex)``, when given,
    adds one line to the status after ``fn`` ran; an error keeps the output as it was
    (``gr.update()``) and shows one line in the status."""
    def ok(*args):
        value = fn(*args)
        ex = _state_of(args)
        extra = (f'<div class="dsv-status">{html.escape(note(ex))}</div>'
                 if note is not None and ex is not None else "")
        return value, status_html(ex) + extra
    ok.__name__ = getattr(fn, "__name__", getattr(getattr(fn, "func", None), "__name__", "handler"))
    return handler(lambda args, msg: (gr.update(), status_html(_state_of(args), msg)))(ok)


def _need(ex: Explorer | None, big=None) -> Explorer:
    """The state, or a one-line "press Start first"; ``big`` sets presentation mode."""
    if ex is None:
        raise UserError("press Start first")
    if big is not None:
        ex.big = bool(big)
    return ex


def _extend(pool: ModelPool, ex: Explorer) -> bool:
    with pool.lock:
        return extend_live(ex)


def on_start(pool: ModelPool, ex, source, prompt, target_spec, drafter_spec, trace_file, gamma,
             temperature, seed, max_tokens, policy, load, capacity, calibration, markov_off,
             force_ell, compare, big, demo_trace=None) -> Explorer:
    src = _choice(source or LIVE, SOURCES, "source")
    if src == DEMO:
        new = new_shipped(demo_trace)
    elif src == REPLAY:
        new = new_replay(pool, trace_file)
    else:
        new = new_live(pool, prompt=prompt, target_spec=target_spec, drafter_spec=drafter_spec,
                       gamma=gamma, temperature=temperature, seed=seed, max_tokens=max_tokens,
                       policy=policy, load=load, capacity=capacity, calibration=calibration,
                       markov_off=markov_off, force_ell=force_ell, compare=compare)
    new.big = bool(big)
    if ex is not None:
        drop_exports(ex)
    return new


def on_step(pool: ModelPool, ex, big) -> Explorer:
    ex = _need(ex, big)
    ex.forward(1, partial(_extend, pool))
    return ex


def on_back(ex, big) -> Explorer:
    return _need(ex, big).back(1)


def on_seek(ex, i, big) -> Explorer:
    ex = _need(ex, big)
    if i is None or i == "":  # the box cleared while typing: nothing to seek yet
        return ex
    return ex.seek(_number(i, "round", 0, max(0, ex.total_rounds), integer=True))


def on_presentation(ex, big):
    if ex is not None:
        ex.big = bool(big)
    return ex


def on_history(ex, history, big):
    if ex is not None:
        ex.history, ex.big = bool(history), bool(big)
    return ex


def demo_under_load():
    """The preset button: hardware-aware policy, R = 64, the default capacity curve."""
    return (gr.update(value=DEMO_UNDER_LOAD["policy"]), gr.update(value=DEMO_UNDER_LOAD["load"]),
            gr.update(value=DEMO_UNDER_LOAD["capacity"]))


@handler(lambda args, msg: (gr.update(),) * 7)
def sidebar_of(ex):
    """After Start: a replay shows the trace's own settings in the sidebar (live: unchanged)."""
    m = ex.settings.get("trace_meta") if isinstance(ex, Explorer) else None
    if m is None:
        return (gr.update(),) * 7
    try:
        policy = gr.update(value=check_policy(m.policy))
    except UserError:
        policy = gr.update()  # a spelling the live menu does not take (e.g. a curve file)
    fit = lambda v, lo, hi: gr.update(value=v) if lo <= v <= hi else gr.update()  # noqa: E731
    return (gr.update(value=m.prompt[:MAX_PROMPT_CHARS]), fit(m.gamma, 1, GAMMA_MAX),
            fit(m.temperature, 0.0, MAX_TEMPERATURE), gr.update(value=m.seed),
            fit(m.max_new_tokens, 1, MAX_NEW_TOKENS), policy, fit(m.load, 1, MAX_LOAD))


class Sessions:
    """Runs by a random session id the browser keeps (``gr.BrowserState``), so a page reload
    finds its run again; at most ``size``, least recently used out first, each for ``ttl_s``."""

    def __init__(self, size: int = MAX_SESSIONS, ttl_s: float = STATE_TTL_S) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._lock = threading.Lock()
        self._items: OrderedDict = OrderedDict()

    def put(self, sid, ex) -> str:
        sid = sid if isinstance(sid, str) and 16 <= len(sid) <= 64 else secrets.token_urlsafe(24)
        with self._lock:
            self._items[sid] = (time.monotonic(), ex)
            self._items.move_to_end(sid)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return sid

    def get(self, sid):
        with self._lock:
            got = self._items.get(sid) if isinstance(sid, str) else None
            if got is None or time.monotonic() - got[0] > self.ttl_s:
                self._items.pop(sid, None) if isinstance(sid, str) else None
                return None
            self._items[sid] = (time.monotonic(), got[1])
            self._items.move_to_end(sid)
            return got[1]


def on_tick(pool: ModelPool, ex, speed, big):
    if ex is None or not ex.playing:
        return ex
    ex.big = bool(big)
    n = ex.tick_rounds(_number(speed, "speed", 0.0, 1000.0), TICK_S)
    if ex.source == "live" and ex.cursor >= ex.total_rounds:
        n = min(n, 1)  # new rounds are computed at the model's pace
    ex.forward(n, partial(_extend, pool))
    if ex.at_end:
        ex.playing = False
    return ex


def _play_button(on: bool):
    return gr.update(value="⏸ Pause" if on else "▶ Play")


def _timer_error(args, msg):
    return _state_of(args), gr.Timer(active=False), _play_button(False)


@handler(_timer_error)
def on_play(ex):
    if ex is None:
        return ex, gr.Timer(active=False), _play_button(False)
    ex.playing = not ex.playing and not ex.at_end
    ex.carry = 0.0
    return ex, gr.Timer(active=ex.playing), _play_button(ex.playing)


@handler(lambda args, msg: (gr.Timer(active=False), _play_button(False)))
def timer_state(ex):
    on = bool(ex is not None and ex.playing)
    return gr.Timer(active=on), _play_button(on)


SCHEDULER_STEP = next(i for i, (t, _) in enumerate(TOUR) if t == "Scheduler")
# the panel each tour step is about (DOM id); the step scrolls it into view under the top bar
TOUR_PANELS = {"Welcome": "dsv-text", "Text": "dsv-text", "Draft block": "dsv-draft",
               "Confidence": "dsv-conf", "Scheduler": "dsv-sched", "Verification": "dsv-verify",
               "Metrics": "dsv-metrics"}
TOUR_SCROLL_JS = ("(md) => { const ids = %s; const m = /Tour (\\d+)\\//.exec(md || '');"
                  " const el = m && document.getElementById(ids[Number(m[1]) - 1] || '');"
                  " if (el) el.scrollIntoView({block: 'nearest'}); return []; }"
                  % json.dumps([TOUR_PANELS.get(t, "") for t, _ in TOUR]))


@handler(lambda args, msg: (-1, "", gr.update(), gr.update(), gr.update()))
def on_tour(step, delta):
    """The next or previous tour step; the scheduler step selects 'demo under load'."""
    step = max(-1, min(int(step) + int(delta), len(TOUR) - 1))
    text = tour_markdown(step)
    if step == SCHEDULER_STEP:
        return (step, text + " *The **demo under load** preset is now selected (hardware-aware, "
                "R = 64): press **Start**, then Step.*", *demo_under_load())
    return step, text, gr.update(), gr.update(), gr.update()


# ------------------------------------------------------------------ exports (one folder a session)
def drop_exports(ex) -> None:
    """Delete the session's export folder (its previous export, or everything when it ends)."""
    d = getattr(ex, "export_dir", None)
    if d:
        shutil.rmtree(d, ignore_errors=True)
        ex.export_dir = None


def _export_dir(ex: Explorer, prefix: str) -> Path:
    """A fresh folder for this export; the session's previous one is deleted (Gradio serves
    its own copy of every file it returned)."""
    drop_exports(ex)
    ex.export_dir = tempfile.mkdtemp(prefix=prefix)
    return Path(ex.export_dir)


def remove_stale_exports(max_age_s: float = STATE_TTL_S, root: str | os.PathLike | None = None) -> int:
    """Delete this user's export folders (``EXPORT_PREFIXES``) older than ``max_age_s`` in the
    temporary directory: those of sessions that ended with the server. Returns how many."""
    root, now, n = Path(root or tempfile.gettempdir()), time.time(), 0
    for p in root.iterdir():
        try:
            st = p.lstat()
            if not (p.name.startswith(EXPORT_PREFIXES) and p.is_dir() and not p.is_symlink()
                    and st.st_uid == os.getuid() and now - st.st_mtime > max_age_s):
                continue
        except OSError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


def finish_run(pool: ModelPool, ex: Explorer) -> int:
    """Compute the rounds a live run has not yet (every lane to its end: EOS or its
    ``max_new_tokens``) the way Step does — one round at a time under the model lock, so other
    sessions interleave — without moving the cursor. Bounded: every round commits at least one
    token, so no lane needs more rounds than its ``max_new_tokens``. Returns the rounds added."""
    bound = max([getattr(getattr(l.session, "cfg", None), "max_new_tokens", MAX_NEW_TOKENS)
                 for l in ex.lanes if l.live] or [0])
    before = ex.total_rounds
    for _ in range(min(int(bound), MAX_NEW_TOKENS) + 1):
        if not ex.extendable or not _extend(pool, ex):
            break
    return ex.total_rounds - before


def on_export_trace(ex, pool: ModelPool | None = None):
    """The whole run as JSON, one file per lane: a live run's remaining rounds are computed first
    (``finish_run``; without a ``pool``, the rounds so far)."""
    ex = _need(ex)
    if pool is not None:
        finish_run(pool, ex)
    d = _export_dir(ex, "dsv-export-")
    try:
        return [str(lane.trace.save(d / f"trace-{lane.name}.json")) for lane in ex.lanes]
    except BaseException:
        drop_exports(ex)
        raise


def export_note(ex: Explorer) -> str:
    """The status line's word on an exported trace: how many rounds of which lane, and whether
    that is the whole run."""
    counts = ", ".join(f"{l.name} {len(l.trace.rounds)} rounds" for l in ex.lanes)
    whole = "the whole run" if not ex.extendable else "the rounds so far (the run is not finished)"
    return f"exported {counts} — {whole}"


def on_export_figures(ex):
    """A zip of every plot panel as HTML (one shared plotly.min.js) and PNG, plus the text."""
    import plotly.offline
    ex = _need(ex)
    zpath = _export_dir(ex, "dsv-figures-") / f"dspark-round-{ex.cursor}.zip"
    notes = []
    try:
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("plotly.min.js", plotly.offline.get_plotlyjs())
            z.writestr("text.html", T.page_html(ex.main.trace, ex.upto(ex.main)))
            for name, fig in figures_of(ex).items():
                z.writestr(f"{name}.html", fig.to_html(include_plotlyjs="directory", full_html=True))
                try:
                    z.writestr(f"{name}.png", fig.to_image(format="png", width=1000, scale=1))
                except Exception as e:  # noqa: BLE001 — PNG needs kaleido + Chromium
                    notes.append(f"{name}.png: {one_line(e)}")
            if notes:
                z.writestr("PNG-NOT-WRITTEN.txt", "\n".join(notes) + "\nUse the camera icon above each plot.\n")
    except BaseException:
        drop_exports(ex)
        raise
    return [str(zpath)]


# ------------------------------------------------------------------ the load view
def _load_view_pool(pool: ModelPool, ex: Explorer | None, gamma: int):
    """(trace pool, where it comes from): the replayed trace, or startup rounds of the models."""
    if ex is not None and ex.source == "replay":
        if not any(r.draft for r in ex.main.trace.rounds):
            raise UserError("load view: the replayed trace has no drafted round to replay under load")
        return _simulator.TracePool.from_traces([ex.main.trace]), "the replayed trace"
    spec = ex.settings.get("target_spec") if ex is not None else None
    dspec = ex.settings.get("drafter_spec") if ex is not None else "default"
    return pool.background_pool(spec or pool.default_target, dspec or "default", gamma)


def on_load_view(pool: ModelPool, ex, gamma, capacity, load, big):
    """Throughput, per-user speed and budget against R for each policy, the current R ringed."""
    gamma = _number(gamma, "γ", 1, GAMMA_MAX, integer=True)
    load = _number(load, "concurrency R", 1, MAX_LOAD, integer=True)
    _choice(capacity or NO_CURVE, CURVES, "capacity curve")
    tp, src = _load_view_pool(pool, ex, gamma)
    curve = _capacity_curve(pool, capacity, pool.default_target) or \
        _capacity.get_curve(_capacity.DEFAULT_CAPACITY)
    loads = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, load})
    pols = [parse_policy(p, tp.gamma, curve, record_path=False) for p in sweep_specs()]
    res = _simulator.sweep(tp, pols, curve, loads, steps=40)
    fig = _load_figures.load_sweep_figure(res, title=f"Under load — {curve.name}; pool: {src}")
    cur = [r for r in res if r.R == load]
    for row, key in ((1, "throughput"), (2, "per_user"), (3, "budget")):
        fig.add_scatter(x=[r.R for r in cur], y=[getattr(r, key) for r in cur], mode="markers",
                        marker={"symbol": "circle-open", "size": 16, "color": "#000"},
                        name=f"current R = {load}", showlegend=row == 1, row=row, col=1)
    fig.update_layout(font={"size": 20 if big else 13})
    return fig


# ----------------------------------------------------------------------------- layout
def _policy_spellings() -> str:
    """What the policy box accepts, from the registry: 'fixed[:N] · … · retrospective (lossy)'
    (curve policies take their curve from the capacity menu)."""
    return " · ".join(e.name + (f"[:{e.arg}]" if e.arg else "") + ("" if e.lossless else " (lossy)")
                      for e in POLICY_REGISTRY.values())


def _policy_list() -> str:
    return "\n".join(f"- **{e.name}**" + (f" (also {', '.join(e.aliases)})" if e.aliases else "")
                     + f": {e.help}" for e in POLICY_REGISTRY.values())


def _settings_column(pool: ModelPool) -> dict:
    """The sidebar: source, prompt, models, decoding and scheduling settings."""
    c: dict = {}
    c["source"] = refusing(gr.Radio(SOURCES, value=LIVE, label="source", elem_id="dsv-source"), "source")
    c["demo_trace"] = refusing(gr.Dropdown(
        DEMO_MENU, value=next((e for e in DEMO_MENU if "hardware" in e), DEMO_MENU[0] if DEMO_MENU else None),
        label="shipped demo trace",
        elem_id="dsv-demo-trace", allow_custom_value=False,
        info="recorded with the embedded model and the shipped drafter: replays with no model"),
        "demo trace")
    c["prompt"] = gr.Textbox(EXAMPLES[0][0], lines=3, label="prompt", elem_id="dsv-prompt",
                             max_length=MAX_PROMPT_CHARS)
    gr.Examples(EXAMPLES, inputs=[c["prompt"]], label="examples (code, math, prose)")
    c["preset"] = gr.Button("demo under load (hardware-aware, R = 64)", size="sm",
                            elem_id="dsv-preset")
    with gr.Accordion("models and replay", open=False):
        c["target_spec"] = refusing(gr.Dropdown(
            pool.target_menu, value=pool.default_target, label="target", elem_id="dsv-target",
            allow_custom_value=False,
            info="the targets this server offers ('embedded' = Gemma 3 270M; more with --allow-models)"),
            "target")
        c["drafter_spec"] = refusing(gr.Dropdown(
            pool.drafter_menu, value="default", label="drafter", elem_id="dsv-drafter",
            allow_custom_value=False,
            info="'default' (shipped, else untrained), 'random', 'none', shipped ones, --allow-models"),
            "drafter")
        c["trace_file"] = refusing(gr.File(
            label=f"trace to replay (.json, ≤ {pool.max_upload_bytes / 2**20:.3g} MB)",
            file_types=[".json"], type="filepath"), "trace file")
    with gr.Row():
        c["gamma"] = refusing(gr.Slider(1, GAMMA_MAX, 7, step=1, label="γ (block size)"), "γ")
        c["max_tokens"] = refusing(gr.Slider(1, MAX_NEW_TOKENS, 48, step=1, label="max new tokens"),
                                   "max new tokens")
    with gr.Row():
        c["temperature"] = refusing(gr.Number(0.0, label=f"temperature (0 = greedy, ≤ {MAX_TEMPERATURE:g})"),
                                    "temperature")
        c["seed"] = refusing(gr.Number(0, label="seed", precision=0), "seed")
    c["policy"] = refusing(gr.Dropdown(POLICIES, value="fixed", label="scheduler policy",
                                       elem_id="dsv-policy", allow_custom_value=True,
                                       info=_policy_spellings()), "policy")
    with gr.Accordion("what the policies do", open=False):
        gr.Markdown(_policy_list())
    c["load"] = refusing(gr.Slider(1, MAX_LOAD, 1, step=1, label="concurrency R (simulated load)",
                                   elem_id="dsv-load"), "concurrency R")
    c["capacity"] = refusing(gr.Dropdown(CURVES, value=NO_CURVE, label="capacity curve SPS(B)",
                                         allow_custom_value=False), "capacity curve")
    c["calibration"] = gr.Checkbox(True, label="calibration (STS)")
    c["markov_off"] = gr.Checkbox(False, label="what-if: Markov head off")
    c["compare"] = gr.Checkbox(False, label="compare: DSpark · DFlash · plain")
    c["force_ell"] = refusing(gr.Dropdown(FORCE_ELL, value="off", allow_custom_value=False,
                                          label="what-if: force verification length ℓ"), "forced ℓ")
    c["history"] = gr.Checkbox(False, label="text: full draft history inline", elem_id="dsv-history")
    c["speed"] = refusing(gr.Slider(0.5, 120, 2, step=0.5, label="Play speed (rounds/s)"), "speed")
    return c


def _top_bar() -> dict:
    """One bar at the top of the page: Start, Back, Step, Play, the round, the tour, the
    presentation switch — and the status line (errors included) under it. It stays on screen."""
    c: dict = {}
    with gr.Column(elem_id="dsv-bar"):
        with gr.Row(equal_height=False):
            c["start"] = gr.Button("Start", variant="primary", elem_id="dsv-start", min_width=96, scale=0)
            c["back"] = gr.Button("◀ Back", elem_id="dsv-back", min_width=96, scale=0)
            c["step"] = gr.Button("Step ▶", variant="primary", elem_id="dsv-step", min_width=96, scale=0)
            c["play"] = gr.Button("▶ Play", elem_id="dsv-play", min_width=96, scale=0)
            c["scrub"] = refusing(gr.Number(0, label="round (Enter, ↑↓)", precision=0, minimum=0,
                                            elem_id="dsv-round", min_width=120, scale=0,
                                            container=False), "round")
            c["tour_prev"] = gr.Button("tour ◀", size="sm", min_width=60, scale=0)
            c["tour_next"] = gr.Button("guided tour ▶", size="sm", min_width=90, scale=0,
                                       elem_id="dsv-tour")
            c["big"] = gr.Checkbox(False, label="presentation mode", elem_id="dsv-big", min_width=120,
                                   scale=0, container=False)
        c["status"] = gr.HTML(status_html(None), elem_id="dsv-status")
        c["tour"] = gr.Markdown("", elem_id="dsv-tour-text")
    return c


def _panel_components() -> list:
    """One Gradio component per entry of ``PANELS`` (in its order), placed by ``LAYOUT``."""
    by_name, made = {p.name: p for p in PANELS}, {}
    for k, row in enumerate(LAYOUT):
        with gr.Row(equal_height=False, elem_classes=[f"dsv-row-{k}"]):
            for scale, names in row:
                # named by its first panel: the CSS selects a column by what it holds, not its place
                with gr.Column(scale=scale, min_width=320, elem_classes=[f"dsv-col-{names[0]}"]):
                    for n in names:
                        p = by_name[n]
                        made[n] = (gr.HTML("", elem_id=p.elem_id or None) if p.kind == "html" else
                                   gr.Plot(label=p.label, elem_id=p.elem_id or None))
    return [made[p.name] for p in PANELS]


def _view_column() -> dict:
    """The main column: the legend, the panels, the load view, the export."""
    c: dict = {"legend": gr.HTML(T.legend_html(), elem_id="dsv-legend")}
    c["panels"] = _panel_components()
    with gr.Accordion("load view: throughput, per-user speed, budget vs R", open=False):
        c["load_btn"] = gr.Button("compute the load sweep for these settings")
        c["p_load"] = gr.Plot(label="load view")
    with gr.Accordion("export", open=False):
        with gr.Row():
            c["ex_trace"] = gr.Button("trace(s) as JSON")
            c["ex_figs"] = gr.Button("figures as HTML + PNG (zip)")
        c["files"] = gr.File(label="download", file_count="multiple")
    return c


def _remember(sessions: Sessions):
    @handler(lambda args, msg: gr.update())
    def remember(ex, sid):
        """Keep the run under the browser's session id (a new random one the first time)."""
        return sessions.put(sid, ex) if isinstance(ex, Explorer) else gr.update()
    return remember


def _restore(sessions: Sessions):
    """Page load: the run this browser had (after a reload), else the empty view."""
    def restore(sid):
        return sessions.get(sid)
    return guarded(restore)


# ----------------------------------------------------------------------------- wiring
def _wire(ui: SimpleNamespace, pool: ModelPool, sessions: Sessions) -> None:
    """Events → handlers; the outputs of every view handler are state + ``render``'s values."""
    outs = [ui.state, ui.status, ui.legend, *ui.panels, ui.scrub]
    settings = [getattr(ui, n) for n in SETTINGS]
    timer_outs = [ui.timer, ui.play]
    sidebar = [ui.prompt, ui.gamma, ui.temperature, ui.seed, ui.max_tokens, ui.policy, ui.load]
    started = ui.start.click(guarded(partial(on_start, pool)), [ui.state] + settings, outs,
                             api_name="start")
    started.then(timer_state, [ui.state], timer_outs, api_name="timer_state_after_start")
    started.then(_remember(sessions), [ui.state, ui.sid], [ui.sid], api_name=False)
    started.then(sidebar_of, [ui.state], sidebar, api_name=False)
    ui.step.click(guarded(partial(on_step, pool)), [ui.state, ui.big], outs, api_name="step")
    ui.back.click(guarded(on_back), [ui.state, ui.big], outs, api_name="back")
    seek = guarded(on_seek)
    ui.scrub.submit(seek, [ui.state, ui.scrub, ui.big], outs, api_name="seek")
    ui.scrub.input(seek, [ui.state, ui.scrub, ui.big], outs, api_name=False, trigger_mode="always_last")
    ui.play.click(on_play, [ui.state], [ui.state] + timer_outs, api_name="play")
    ui.timer.tick(guarded(partial(on_tick, pool)), [ui.state, ui.speed, ui.big], outs,
                  api_name="tick", concurrency_limit=None).then(
        timer_state, [ui.state], timer_outs, api_name="timer_state_after_tick")
    ui.big.change(guarded(on_presentation), [ui.state, ui.big], outs, api_name="presentation")
    ui.big.change(None, [ui.big], None, js=TOGGLE_PRESENT_JS, api_name=False)
    ui.big.change(lambda on: gr.Sidebar(open=not on), [ui.big], [ui.sidebar], api_name=False)
    ui.history.change(guarded(on_history), [ui.state, ui.history, ui.big], outs, api_name="history")
    preset_outs = [ui.policy, ui.load, ui.capacity]
    ui.preset.click(demo_under_load, None, preset_outs, api_name="demo_under_load")
    for btn, delta, name in ((ui.tour_next, 1, "tour_next"), (ui.tour_prev, -1, "tour_prev")):
        btn.click(partial(on_tour, delta=delta), [ui.tour_step], [ui.tour_step, ui.tour, *preset_outs],
                  api_name=name).then(None, [ui.tour], None, js=TOUR_SCROLL_JS, api_name=False)
    ui.ex_trace.click(_status_beside(partial(on_export_trace, pool=pool), export_note), [ui.state],
                      [ui.files, ui.status],
                      api_name="export_trace")
    ui.ex_figs.click(_status_beside(on_export_figures), [ui.state], [ui.files, ui.status],
                     api_name="export_figures")
    ui.load_btn.click(_status_beside(partial(on_load_view, pool)),
                      [ui.state, ui.gamma, ui.capacity, ui.load, ui.big], [ui.p_load, ui.status],
                      api_name="load_view")


def build_app(target=None, drafter=None, *, drafter_label: str | None = None,
              device: str | None = None, title: str = "DSpark explorer",
              target_spec: str | None = None, allow_models: tuple[str, ...] | list[str] = (),
              model_cache: int = MODEL_CACHE_SIZE, max_upload_mb: float = MAX_UPLOAD_MB) -> gr.Blocks:
    """The Blocks; ``target``/``drafter`` preload models (tests pass tiny ones), offered as the
    menu entry ``target_spec`` (default: the target's name) and drafter ``default``;
    ``allow_models`` adds entries to both model menus; ``model_cache`` bounds the loaded models
    kept; ``max_upload_mb`` bounds an uploaded trace (checked by ``launch`` and the handler)."""
    pool = ModelPool(target, drafter, drafter_label, device, target_spec=target_spec,
                     allow=tuple(allow_models), cache_size=model_cache, max_upload_mb=max_upload_mb)
    sessions = Sessions()
    with gr.Blocks(title=title, analytics_enabled=False, fill_width=True,
                   delete_cache=(STATE_TTL_S, STATE_TTL_S)) as demo:
        ui = SimpleNamespace(state=gr.State(None, time_to_live=STATE_TTL_S,
                                            delete_callback=drop_exports),
                             tour_step=gr.State(-1),
                             sid=gr.BrowserState("", storage_key="dsv-session"))
        with gr.Sidebar(label="settings", open=True, width=360, elem_id="dsv-sidebar") as ui.sidebar:
            ui.__dict__.update(_settings_column(pool))
        gr.Markdown("## DSpark explorer — speculative decoding, one round at a time", elem_id="dsv-title")
        ui.__dict__.update(_top_bar())
        ui.__dict__.update(_view_column())
        ui.timer = gr.Timer(TICK_S, active=False)
        _wire(ui, pool, sessions)
        demo.load(_restore(sessions), [ui.sid], [ui.state, ui.status, ui.legend, *ui.panels, ui.scrub],
                  api_name=False)
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.dsv_pool = pool  # for tests and benchmarks
    demo.dsv_sessions = sessions
    return demo


def _theme():
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(demo: gr.Blocks, **kw):
    """Launch with the app's CSS, an offline theme (no web fonts) and the upload limit of the
    app's pool (``max_file_size``); export folders left by an earlier run are removed first."""
    pool = getattr(demo, "dsv_pool", None)
    kw.setdefault("max_file_size", pool.max_upload_bytes if pool else int(MAX_UPLOAD_MB * 2 ** 20))
    remove_stale_exports()
    kw.setdefault("css", CSS)
    kw.setdefault("head", KEYS_JS)
    kw.setdefault("theme", _theme())
    kw.setdefault("footer_links", ["api"])
    return demo.launch(**kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="app.py", description="The DSpark explorer (Gradio).")
    ap.add_argument("--target", default="embedded")
    ap.add_argument("--drafter", default="default")
    ap.add_argument("--device", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--no-preload", action="store_true", help="load models on the first Start")
    ap.add_argument("--allow-models", nargs="+", default=[], metavar="PATH_OR_ID",
                    help="more targets/drafters the page may offer (local paths or hub ids); "
                         "nothing else is ever loaded")
    ap.add_argument("--max-upload-mb", type=_positive(float), default=MAX_UPLOAD_MB,
                    help=f"largest trace upload in MB (default {MAX_UPLOAD_MB:g})")
    ap.add_argument("--model-cache", type=_positive(int), default=MODEL_CACHE_SIZE,
                    help=f"loaded models kept besides the launch ones (default {MODEL_CACHE_SIZE})")
    a = ap.parse_args(argv)
    target = drafter = label = None
    if not a.no_preload:
        t0 = time.perf_counter()
        print(f"app.py: loading target {a.target!r}"
              + (" — the first launch converts the embedded Gemma 3 270M once (a few minutes); "
                 "later launches take seconds" if a.target in EMBEDDED_ALIASES else "") + " …", flush=True)
        try:
            target = load_target(a.target, device=a.device)
            print(f"app.py: target ready ({time.perf_counter() - t0:.1f} s); loading drafter "
                  f"{a.drafter!r} …", flush=True)
            drafter, label = resolve_drafter(a.drafter, target)
        except UserError as e:
            print(f"app.py: {one_line(e)}")
            return 2
        print(f"models loaded in {time.perf_counter() - t0:.1f} s: {target.name} + {label}")
    demo = build_app(target, drafter, drafter_label=label, device=a.device, target_spec=a.target,
                     allow_models=a.allow_models, model_cache=a.model_cache, max_upload_mb=a.max_upload_mb)
    print(f"app.py: starting the page server on {a.host}:{a.port} …", flush=True)
    _, url, _ = launch(demo, server_name=a.host, server_port=a.port, prevent_thread_lock=True)
    print(f"app.py: the explorer is ready at {url} (Ctrl+C stops it)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


def _positive(kind):
    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v
    return parse


if __name__ == "__main__":
    raise SystemExit(main())

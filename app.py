"""The DSpark explorer: a Gradio app that animates speculative decoding round by round.

Thin layer over ``dspark_viz``: settings → ``SpecSession`` lanes (DSpark, and in comparison
mode the DFlash ablation and plain decoding), a per-user ``Explorer`` in ``gr.State``, and the
panels of ``dspark_viz.viz.panels`` (one registry: the layout, the render and the export all
iterate it). Models load once per process and are shared; model calls run under one lock; the
queue bounds concurrency; every handler has an ``api_name``. A recorded trace replays with no
model. The file reads top to bottom: shared models, building a run, rendering, the handlers
(module level, each taking the shared ``ModelPool`` first), the layout, the wiring.

    python app.py [--target embedded] [--drafter default] [--port 7860] [--host 127.0.0.1]
"""
from __future__ import annotations

import argparse
import html
import os
import tempfile
import threading
import time
import zipfile
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from dspark_viz.config import GAMMA_MAX, DecodeConfig  # noqa: E402
from dspark_viz.decoding.engine import SpecSession, confidence_problem  # noqa: E402
from dspark_viz.decoding.policy import POLICY_REGISTRY, Fixed, policy_menu, sweep_specs  # noqa: E402
from dspark_viz.decoding.trace import Trace  # noqa: E402
from dspark_viz.drafter.registry import resolve_drafter, shipped_drafter_path  # noqa: E402
from dspark_viz.errors import UserError, one_line  # noqa: E402
from dspark_viz.load import capacity as _capacity  # noqa: E402
from dspark_viz.load import simulator as _simulator  # noqa: E402
from dspark_viz.load.policy_spec import policy_from_spec  # noqa: E402
from dspark_viz.targets import load_target  # noqa: E402
from dspark_viz.viz import figures as F  # noqa: E402
from dspark_viz.viz import load_figures as _load_figures  # noqa: E402
from dspark_viz.viz import tokens as T  # noqa: E402
from dspark_viz.viz.app_state import TOUR, Explorer, Lane, extend_live, tour_markdown  # noqa: E402
from dspark_viz.viz.panels import PANELS, view_of  # noqa: E402

MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 256
MAX_TEMPERATURE = 2.0
MAX_LOAD = 256
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
REPLAY = "replay a trace file"
# the inputs of Start, in the order of ``on_start``'s parameters after the state
SETTINGS = ("source", "prompt", "target_spec", "drafter_spec", "trace_file", "gamma",
            "temperature", "seed", "max_tokens", "policy", "load", "capacity", "calibration",
            "markov_off", "force_ell", "compare", "big")
CSS = T.CSS + """
.dsv-status{padding:6px 10px;border-radius:6px;background:#eef3f8;color:#102a43}
.dsv-error{padding:8px 10px;border-radius:6px;background:#ffebee;color:#b71c1c;font-weight:600}
.dsv-warn{padding:4px 8px;border-radius:6px;background:#fff8e1;color:#5d4037}
.dsv-lane h4{margin:4px 0}
body.dsv-present{--dsv-tok-size:26px}
body.dsv-present .dsv-metrics,body.dsv-present .dsv-status,body.dsv-present .prose{font-size:22px!important}
"""
TOGGLE_PRESENT_JS = "(on) => { document.body.classList.toggle('dsv-present', !!on); return on; }"


# ----------------------------------------------------------------------------- shared models
class ModelPool:
    """Targets, drafters and profiled capacity curves loaded once per process (shared)."""

    def __init__(self, target=None, drafter=None, drafter_label: str | None = None,
                 device: str | None = None) -> None:
        self.lock = threading.Lock()  # every model call (load, step, profile) holds it
        self.device = device
        self.targets: dict[str, object] = {}
        self.drafters: dict[tuple[str, str, str], tuple[object, str]] = {}
        self.curves: dict[str, object] = {}
        self.pools: dict[tuple, tuple] = {}
        self.default_target = "embedded"
        if target is not None:
            self.default_target = target.name
            self.targets[target.name] = target
            if drafter is not None:
                self.drafters[(target.name, "default", "dspark")] = (
                    drafter, drafter_label or "untrained (random, supplied by the caller)")

    def target(self, spec: str):
        spec = (spec or self.default_target).strip()
        if spec not in self.targets:
            self.targets[spec] = load_target(spec, device=self.device)
        return self.targets[spec]

    def drafter(self, target_spec: str, spec: str, kind: str = "dspark"):
        key = (target_spec, (spec or "default").strip(), kind)
        if key not in self.drafters:
            if kind == "dflash" and (target_spec, key[1], "dspark") in self.drafters and \
                    shipped_drafter_path(self.target(target_spec).name, kind) is None:
                return None  # no separate DFlash drafter: the caller reuses the DSpark one
            self.drafters[key] = resolve_drafter(key[1], self.target(target_spec), kind=kind)
        return self.drafters[key]

    def background_pool(self, target_spec: str, drafter_spec: str, gamma: int):
        """A trace pool for simulated load: fixed(γ) rounds on the example prompts (once)."""
        key = (target_spec, drafter_spec, gamma)
        if key not in self.pools:
            with self.lock:
                target = self.target(target_spec)
                drafter, label = self.drafter(target_spec, drafter_spec)
                traces = [SpecSession(target, drafter, DecodeConfig(gamma=gamma, max_new_tokens=24),
                                      policy=Fixed(gamma), drafter_name=label).run(p[0])
                          for p in EXAMPLES]
            tp = _simulator.TracePool.from_traces(traces)
            self.pools[key] = (tp, f"{tp.n_rounds} rounds recorded at startup with fixed(γ) on the "
                                   f"{len(traces)} example prompts ({label})")
        return self.pools[key]

    def device_curve(self, target_spec: str):
        if target_spec not in self.curves:
            self.curves[target_spec] = _capacity.profile_target(
                self.target(target_spec), [1, 2, 4, 8, 16, 32, 64], context_len=64, repeats=1,
                name=f"profiled:{self.target(target_spec).name}")
        return self.curves[target_spec]


# ----------------------------------------------------------------------------- building a run
def _forced_ell(force_ell) -> int | None:
    return None if force_ell in (None, "", "off") else int(force_ell)


def _check_settings(prompt, temperature, seed, max_tokens, load) -> None:
    """The app's own bounds; ``DecodeConfig`` checks the decoding settings themselves."""
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty: type something or pick an example")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if float(temperature) > MAX_TEMPERATURE:
        raise UserError(f"temperature must be ≤ {MAX_TEMPERATURE:g} here, got {temperature}")
    if int(seed) < 0:
        raise UserError(f"seed must be ≥ 0, got {seed}")
    if int(max_tokens) > MAX_NEW_TOKENS:
        raise UserError(f"max new tokens must be ≤ {MAX_NEW_TOKENS}, got {max_tokens}")
    if not 1 <= int(load) <= MAX_LOAD:
        raise UserError(f"concurrency R must be in [1, {MAX_LOAD}], got {load}")


def _capacity_curve(pool: ModelPool, name: str, target_spec: str):
    if not name or name == NO_CURVE:
        return None
    if name == DEVICE_CURVE:
        return pool.device_curve(target_spec)
    return _capacity.resolve_capacity(name)


def _background(pool: ModelPool, load: int, target_spec: str, drafter_spec: str, gamma: int,
                seed: int, notes: list[str]):
    """The other R − 1 requests, replayed from recorded rounds (``load.simulator``)."""
    if load <= 1:
        return None
    tp, note = pool.background_pool(target_spec, drafter_spec, gamma)
    notes.append(f"R = {load}: the other {load - 1} requests replay {note}")
    return _simulator.SimulatedBackground(tp, load - 1, seed=seed)


def _policy_for(spec: str, cfg: DecodeConfig, drafter, curve, notes: list[str]):
    """The policy of a lane (a curve policy on ``curve``, else the default curve); fixed(γ),
    with a note, where it needs confidences this lane's drafter has no head for."""
    p = policy_from_spec(spec or "fixed", cfg.gamma, capacity=curve)
    problem = confidence_problem(p, drafter, cfg)
    if problem:
        notes.append(f"{problem}; this drafter has none → fixed(γ)")
        return Fixed(cfg.gamma)
    return p


def _comparison_lanes(pool: ModelPool, target, target_spec: str, drafter_spec: str, drafter,
                      label: str, cfg: DecodeConfig, policy: str, curve, notes: list[str]):
    """The DFlash ablation (its own drafter, else this one with the Markov head off) and plain."""
    with pool.lock:
        got = pool.drafter(target_spec, drafter_spec, "dflash")
    if got is None or got[0] is None:
        dd, dl = drafter, f"{label} with the Markov head off (no separate DFlash drafter)"
    else:
        dd, dl = got
    dcfg = replace(cfg, mode="dflash")
    return [("dflash", f"DFlash ablation · {dl}",
             SpecSession(target, dd, dcfg, policy=_policy_for(policy, dcfg, dd, curve, notes),
                         drafter_name=dl)),
            ("plain", "plain target decoding (1 token per target pass)",
             SpecSession(target, None, replace(cfg, mode="ar"), drafter_name="none"))]


def new_live(pool: ModelPool, *, prompt, target_spec, drafter_spec, gamma, temperature, seed,
             max_tokens, policy, load, capacity, calibration, markov_off, force_ell, compare,
             **_) -> Explorer:
    _check_settings(prompt, temperature, seed, max_tokens, load)
    cfg = DecodeConfig(gamma=int(gamma), temperature=float(temperature), seed=int(seed),
                       max_new_tokens=int(max_tokens), markov_off=bool(markov_off),
                       force_ell=_forced_ell(force_ell), calibrated=bool(calibration))
    load, notes = int(load), []
    target_spec = (target_spec or pool.default_target).strip()
    with pool.lock:
        target = pool.target(target_spec)
        drafter, label = pool.drafter(target_spec, drafter_spec)
        curve = _capacity_curve(pool, capacity, target_spec)
    if drafter is None:
        raise UserError("drafter 'none' gives plain decoding only: pick a drafter")
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


def new_replay(path) -> Explorer:
    if not path:
        raise UserError("replay: choose a trace file (.json) first")
    tr = Trace.load(path)
    label = f"replay of {Path(path).name} · drafter: {tr.meta.drafter}"
    return Explorer(lanes=[Lane("replay", label, tr, None)], source="replay",
                    settings=dict(target=tr.meta.target, drafter=tr.meta.drafter,
                                  policy=tr.meta.policy, load=tr.meta.load,
                                  untrained="untrained" in tr.meta.drafter))


# ----------------------------------------------------------------------------- rendering
def status_html(ex: Explorer | None, error: str | None = None) -> str:
    if error:
        return f'<div class="dsv-error">⚠ {html.escape(error)}</div>'
    if ex is None:
        return '<div class="dsv-status">Choose settings and press <b>Start</b> (or load a trace to replay).</div>'
    st = ex.settings
    warn = ""
    if st.get("untrained"):
        warn = ('<div class="dsv-warn">⚠ The drafter is <b>untrained</b> (random weights): its '
                "drafts are mostly rejected. This shows the mechanics, not DSpark's speed.</div>")
    notes = "".join(f'<div class="dsv-warn">{html.escape(n)}</div>' for n in ex.notes)
    end = " · finished" if ex.at_end else ""
    return (f'<div class="dsv-status">{html.escape(ex.source)} · target <b>{html.escape(str(st.get("target")))}</b>'
            f' · drafter <b>{html.escape(str(st.get("drafter")))}</b> · policy {html.escape(str(st.get("policy")))}'
            f' · R = {st.get("load")} · round {ex.cursor}/{ex.total_rounds}{end}</div>{warn}{notes}')


def _empty(panel) -> object:
    return F.message_figure("", "press Start") if panel.kind == "plot" else ""


def render(ex: Explorer | None, error: str | None = None):
    """The values of the view's outputs: status, legend, every panel of ``PANELS``, the scrubber."""
    if ex is None:
        return (status_html(None, error), T.legend_html(), *[_empty(p) for p in PANELS],
                gr.update(maximum=1, value=0))
    view = view_of(ex)
    return (status_html(ex, error), T.legend_html(), *[p.render(view) for p in PANELS],
            gr.update(maximum=max(1, ex.total_rounds), value=ex.cursor))


def figures_of(ex: Explorer) -> dict:
    """Export file stem → figure, for every plot panel at the cursor (normal size)."""
    view = view_of(ex, big=False)
    return {p.export_name: p.render(view) for p in PANELS if p.kind == "plot"}


# ----------------------------------------------------------------------------- handlers
def guarded(fn):
    """``fn(ex, *args) → ex`` as a handler returning the state and every output of ``render``;
    a ``UserError`` keeps the previous state and shows its first line."""
    def run(ex, *args):
        try:
            ex2 = fn(ex, *args)
            return (ex2,) + tuple(render(ex2))
        except UserError as e:
            return (ex,) + tuple(render(ex, error=one_line(e)))
    return run


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
             force_ell, compare, big) -> Explorer:
    if source == REPLAY:
        new = new_replay(trace_file)
    else:
        new = new_live(pool, prompt=prompt, target_spec=target_spec, drafter_spec=drafter_spec,
                       gamma=gamma, temperature=temperature, seed=seed, max_tokens=max_tokens,
                       policy=policy, load=load, capacity=capacity, calibration=calibration,
                       markov_off=markov_off, force_ell=force_ell, compare=compare)
    new.big = bool(big)
    return new


def on_step(pool: ModelPool, ex, big) -> Explorer:
    ex = _need(ex, big)
    ex.forward(1, partial(_extend, pool))
    return ex


def on_back(ex, big) -> Explorer:
    return _need(ex, big).back(1)


def on_seek(ex, i, big) -> Explorer:
    return _need(ex, big).seek(int(i))


def on_presentation(ex, big):
    if ex is not None:
        ex.big = bool(big)
    return ex


def on_tick(pool: ModelPool, ex, speed, big):
    if ex is None or not ex.playing:
        return ex
    ex.big = bool(big)
    n = ex.tick_rounds(speed, TICK_S)
    if ex.source == "live" and ex.cursor >= ex.total_rounds:
        n = min(n, 1)  # new rounds are computed at the model's pace
    ex.forward(n, partial(_extend, pool))
    if ex.at_end:
        ex.playing = False
    return ex


def _play_button(on: bool):
    return gr.update(value="⏸ Pause" if on else "▶ Play")


def on_play(ex):
    if ex is None:
        return ex, gr.Timer(active=False), _play_button(False)
    ex.playing = not ex.playing and not ex.at_end
    ex.carry = 0.0
    return ex, gr.Timer(active=ex.playing), _play_button(ex.playing)


def timer_state(ex):
    on = bool(ex is not None and ex.playing)
    return gr.Timer(active=on), _play_button(on)


def on_tour(step, delta):
    step = max(-1, min(int(step) + int(delta), len(TOUR) - 1))
    return step, tour_markdown(step)


def on_export_trace(ex):
    ex = _need(ex)
    d = Path(tempfile.mkdtemp(prefix="dsv-export-"))
    return [str(lane.trace.save(d / f"trace-{lane.name}.json")) for lane in ex.lanes]


def on_export_figures(ex):
    """A zip of every plot panel as HTML (one shared plotly.min.js) and PNG, plus the text."""
    import plotly.offline
    ex = _need(ex)
    zpath = Path(tempfile.mkdtemp(prefix="dsv-figures-")) / f"dspark-round-{ex.cursor}.zip"
    notes = []
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
    return [str(zpath)]


def _load_view_pool(pool: ModelPool, ex: Explorer | None, gamma: int):
    """(trace pool, where it comes from): the replayed trace, or startup rounds of the models."""
    if ex is not None and ex.source == "replay":
        return _simulator.TracePool.from_traces([ex.main.trace]), "the replayed trace"
    spec = ex.settings.get("target_spec") if ex is not None else None
    dspec = ex.settings.get("drafter_spec") if ex is not None else "default"
    return pool.background_pool(spec or pool.default_target, dspec or "default", gamma)


def on_load_view(pool: ModelPool, ex, gamma, capacity, load, big):
    """Throughput, per-user speed and budget against R for each policy, the current R ringed."""
    gamma, load = int(gamma), int(load)
    tp, src = _load_view_pool(pool, ex, gamma)
    with pool.lock:
        curve = _capacity_curve(pool, capacity, pool.default_target) or \
            _capacity.get_curve(_capacity.DEFAULT_CAPACITY)
    loads = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, load})
    pols = [policy_from_spec(p, tp.gamma, capacity=curve, record_path=False) for p in sweep_specs()]
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
    """What the policy box accepts, from the registry: 'fixed[:N] · … · retrospective (lossy)'."""
    return " · ".join(e.name + (f"[:{e.arg}]" if e.arg else "") + ("" if e.lossless else " (lossy)")
                      for e in POLICY_REGISTRY.values())


def _policy_list() -> str:
    return "\n".join(f"- **{e.name}**" + (f" (also {', '.join(e.aliases)})" if e.aliases else "")
                     + f": {e.help}" for e in POLICY_REGISTRY.values())


def _settings_column(pool: ModelPool) -> dict:
    """The left column: source, prompt, models, decoding and scheduling settings, Start."""
    c: dict = {}
    c["source"] = gr.Radio(["live model", REPLAY], value="live model", label="source")
    c["prompt"] = gr.Textbox(EXAMPLES[0][0], lines=4, label="prompt", elem_id="dsv-prompt")
    gr.Examples(EXAMPLES, inputs=[c["prompt"]], label="examples (code, math, prose)")
    with gr.Accordion("models and replay", open=False):
        c["target_spec"] = gr.Textbox(pool.default_target, label="target",
                                      info="'embedded' (Gemma 3 270M), a HF id or a local checkpoint path")
        c["drafter_spec"] = gr.Textbox("default", label="drafter",
                                       info="'default', 'random' or a drafter checkpoint path")
        c["trace_file"] = gr.File(label="trace to replay (.json)", file_types=[".json"],
                                  type="filepath")
    with gr.Row():
        c["gamma"] = gr.Slider(1, GAMMA_MAX, 7, step=1, label="γ (block size)")
        c["max_tokens"] = gr.Slider(1, MAX_NEW_TOKENS, 48, step=1, label="max new tokens")
    with gr.Row():
        c["temperature"] = gr.Number(0.0, label=f"temperature (0 = greedy, ≤ {MAX_TEMPERATURE:g})")
        c["seed"] = gr.Number(0, label="seed", precision=0)
    c["policy"] = gr.Dropdown(POLICIES, value="fixed", label="scheduler policy",
                              allow_custom_value=True, info=_policy_spellings())
    with gr.Accordion("what the policies do", open=False):
        gr.Markdown(_policy_list())
    with gr.Row():
        c["load"] = gr.Slider(1, MAX_LOAD, 1, step=1, label="concurrency R (simulated load)")
        c["capacity"] = gr.Dropdown([NO_CURVE, DEVICE_CURVE] + _capacity.preset_names(),
                                    value=NO_CURVE, label="capacity curve SPS(B)")
    c["calibration"] = gr.Checkbox(True, label="calibration (STS)")
    c["markov_off"] = gr.Checkbox(False, label="what-if: Markov head off")
    c["compare"] = gr.Checkbox(False, label="compare: DSpark · DFlash · plain")
    c["force_ell"] = gr.Dropdown(["off"] + [str(i) for i in range(GAMMA_MAX + 1)], value="off",
                                 label="what-if: force verification length ℓ")
    c["start"] = gr.Button("Start", variant="primary", elem_id="dsv-start")
    return c


def _panel_groups(panels) -> list[list]:
    """Panels in layout order: HTML alone, a wide plot alone in a row, other plots in pairs."""
    out, row = [], []
    for p in panels:
        if p.kind == "plot" and not p.wide:
            row.append(p)
            if len(row) == 2:
                out.append(row)
                row = []
            continue
        if row:
            out.append(row)
            row = []
        out.append([p])
    return out + ([row] if row else [])


def _panel_components() -> list:
    """One Gradio component per entry of ``PANELS`` (in its order), laid out in rows."""
    made = {}
    for group in _panel_groups(PANELS):
        if group[0].kind == "html":
            made[group[0].name] = gr.HTML("", elem_id=group[0].elem_id or None)
            continue
        with gr.Row():
            for p in group:
                made[p.name] = gr.Plot(label=p.label, elem_id=p.elem_id or None)
    return [made[p.name] for p in PANELS]


def _view_column() -> dict:
    """The right column: status, playback controls, the tour, the panels, load view, export."""
    c: dict = {"status": gr.HTML(status_html(None), elem_id="dsv-status")}
    with gr.Row():
        c["back"] = gr.Button("◀ Back", elem_id="dsv-back", min_width=80)
        c["step"] = gr.Button("Step ▶", variant="primary", elem_id="dsv-step", min_width=80)
        c["play"] = gr.Button("▶ Play", elem_id="dsv-play", min_width=80)
        c["speed"] = gr.Slider(0.5, 120, 2, step=0.5, label="speed (rounds/s)", min_width=160)
        c["big"] = gr.Checkbox(False, label="presentation mode", elem_id="dsv-big")
    c["scrub"] = gr.Slider(0, 1, 0, step=1, label="round", elem_id="dsv-scrub")
    with gr.Row():
        c["tour_prev"] = gr.Button("tour ◀", size="sm", min_width=60)
        c["tour_next"] = gr.Button("guided tour ▶", size="sm", min_width=60, elem_id="dsv-tour")
    c["tour"] = gr.Markdown("")
    c["legend"] = gr.HTML(T.legend_html())
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


# ----------------------------------------------------------------------------- wiring
def _wire(ui: SimpleNamespace, pool: ModelPool) -> None:
    """Events → handlers; the outputs of every view handler are state + ``render``'s values."""
    outs = [ui.state, ui.status, ui.legend, *ui.panels, ui.scrub]
    settings = [getattr(ui, n) for n in SETTINGS]
    timer_outs = [ui.timer, ui.play]
    ui.start.click(guarded(partial(on_start, pool)), [ui.state] + settings, outs,
                   api_name="start").then(timer_state, [ui.state], timer_outs,
                                          api_name="timer_state_after_start")
    ui.step.click(guarded(partial(on_step, pool)), [ui.state, ui.big], outs, api_name="step")
    ui.back.click(guarded(on_back), [ui.state, ui.big], outs, api_name="back")
    ui.scrub.release(guarded(on_seek), [ui.state, ui.scrub, ui.big], outs, api_name="seek")
    ui.play.click(on_play, [ui.state], [ui.state] + timer_outs, api_name="play")
    ui.timer.tick(guarded(partial(on_tick, pool)), [ui.state, ui.speed, ui.big], outs,
                  api_name="tick", concurrency_limit=None).then(
        timer_state, [ui.state], timer_outs, api_name="timer_state_after_tick")
    ui.big.change(guarded(on_presentation), [ui.state, ui.big], outs, api_name="presentation")
    ui.big.change(None, [ui.big], None, js=TOGGLE_PRESENT_JS, api_name=False)
    ui.tour_next.click(partial(on_tour, delta=1), [ui.tour_step], [ui.tour_step, ui.tour],
                       api_name="tour_next")
    ui.tour_prev.click(partial(on_tour, delta=-1), [ui.tour_step], [ui.tour_step, ui.tour],
                       api_name="tour_prev")
    ui.ex_trace.click(on_export_trace, [ui.state], [ui.files], api_name="export_trace")
    ui.ex_figs.click(on_export_figures, [ui.state], [ui.files],
                     api_name="export_figures")
    ui.load_btn.click(partial(on_load_view, pool), [ui.state, ui.gamma, ui.capacity, ui.load, ui.big],
                      [ui.p_load], api_name="load_view")


def build_app(target=None, drafter=None, *, drafter_label: str | None = None,
              device: str | None = None, title: str = "DSpark explorer") -> gr.Blocks:
    """The Blocks; ``target``/``drafter`` preload models (tests pass tiny ones)."""
    pool = ModelPool(target, drafter, drafter_label, device)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        ui = SimpleNamespace(state=gr.State(None, time_to_live=3600), tour_step=gr.State(-1))
        gr.Markdown("## DSpark explorer — speculative decoding, one round at a time")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                ui.__dict__.update(_settings_column(pool))
            with gr.Column(scale=3):
                ui.__dict__.update(_view_column())
        ui.timer = gr.Timer(TICK_S, active=False)
        _wire(ui, pool)
    demo.queue(default_concurrency_limit=4, max_size=64)
    demo.dsv_pool = pool  # for tests and benchmarks
    return demo


def _theme():
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(demo: gr.Blocks, **kw):
    """Launch with the app's CSS and an offline theme (no web fonts)."""
    kw.setdefault("css", CSS)
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
    a = ap.parse_args(argv)
    target = drafter = label = None
    if not a.no_preload:
        t0 = time.perf_counter()
        target = load_target(a.target, device=a.device)
        drafter, label = resolve_drafter(a.drafter, target)
        print(f"models loaded in {time.perf_counter() - t0:.1f} s: {target.name} + {label}")
    demo = build_app(target, drafter, drafter_label=label, device=a.device)
    launch(demo, server_name=a.host, server_port=a.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

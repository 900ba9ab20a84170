"""The DSpark explorer: a Gradio app that animates speculative decoding round by round.

Thin layer over ``dspark_viz``: settings → ``SpecSession`` lanes (DSpark, and in comparison
mode the DFlash ablation and plain decoding), a per-user ``Explorer`` in ``gr.State``, and
panels rendered by ``dspark_viz.viz`` (figures, tokens, load and eval figures). Models load
once per process and are shared; model calls run under one lock; the queue bounds
concurrency; every handler has an ``api_name``. A recorded trace replays with no model.

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
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from dspark_viz.config import GAMMA_MAX, ConfigError, DecodeConfig  # noqa: E402
from dspark_viz.errors import UserError, one_line  # noqa: E402
from dspark_viz.decoding.engine import SpecSession  # noqa: E402
from dspark_viz.decoding.policy import Fixed, parse_policy  # noqa: E402
from dspark_viz.decoding.trace import Trace  # noqa: E402
from dspark_viz.viz import figures as F  # noqa: E402
from dspark_viz.viz import tokens as T  # noqa: E402
from dspark_viz.viz.app_state import Explorer, Lane, extend_live, tour_markdown, TOUR  # noqa: E402

from dspark_viz.load import capacity as _capacity  # noqa: E402
from dspark_viz.load import simulator as _simulator  # noqa: E402
from dspark_viz.viz import load_figures as _load_figures  # noqa: E402

MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 256
MAX_LOAD = 256
TICK_S = 0.5
EXAMPLES = [
    ["def fibonacci(n):\n    "],
    ["Question: A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar "
     "bill. How much change does he get?\nAnswer:"],
    ["The old lighthouse keeper climbed the stairs one last time, and"],
]
POLICIES = ["fixed", "fixed:1", "threshold:0.5", "threshold-a:0.3", "hardware", "async",
            "retrospective"]
NO_CURVE = "default (h200-qwen3-8b)"
DEVICE_CURVE = "this device (profiled)"
CSS = T.CSS + """
.dsv-status{padding:6px 10px;border-radius:6px;background:#eef3f8;color:#102a43}
.dsv-error{padding:8px 10px;border-radius:6px;background:#ffebee;color:#b71c1c;font-weight:600}
.dsv-warn{padding:4px 8px;border-radius:6px;background:#fff8e1;color:#5d4037}
.dsv-lane h4{margin:4px 0}
body.dsv-present{--dsv-tok-size:26px}
body.dsv-present .dsv-metrics,body.dsv-present .dsv-status,body.dsv-present .prose{font-size:22px!important}
"""
TOGGLE_PRESENT_JS = "(on) => { document.body.classList.toggle('dsv-present', !!on); return on; }"


def _user_errors() -> tuple[type[BaseException], ...]:
    return (UserError, ValueError)


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
            from dspark_viz.targets import load_target
            self.targets[spec] = load_target(spec, device=self.device)
        return self.targets[spec]

    def drafter(self, target_spec: str, spec: str, kind: str = "dspark"):
        key = (target_spec, (spec or "default").strip(), kind)
        if key not in self.drafters:
            if kind == "dflash" and (target_spec, key[1], "dspark") in self.drafters and \
                    self._shipped(target_spec, kind) is None:
                return None  # no separate DFlash drafter: the caller reuses the DSpark one
            from dspark_viz.drafter.registry import resolve_drafter
            self.drafters[key] = resolve_drafter(key[1], self.target(target_spec), kind=kind)
        return self.drafters[key]

    def _shipped(self, target_spec: str, kind: str):
        from dspark_viz.drafter.registry import shipped_drafter_path
        return shipped_drafter_path(self.target(target_spec).name, kind)

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
def _check_settings(prompt, gamma, temperature, seed, max_tokens, load, force_ell) -> None:
    if not prompt or not prompt.strip():
        raise UserError("the prompt is empty: type something or pick an example")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if not 1 <= int(gamma) <= GAMMA_MAX:
        raise UserError(f"γ must be in [1, {GAMMA_MAX}], got {gamma}")
    if not 0 <= float(temperature) <= 2:
        raise UserError(f"temperature must be in [0, 2], got {temperature}")
    if int(seed) < 0:
        raise UserError(f"seed must be ≥ 0, got {seed}")
    if not 1 <= int(max_tokens) <= MAX_NEW_TOKENS:
        raise UserError(f"max new tokens must be in [1, {MAX_NEW_TOKENS}], got {max_tokens}")
    if not 1 <= int(load) <= MAX_LOAD:
        raise UserError(f"concurrency R must be in [1, {MAX_LOAD}], got {load}")
    if force_ell not in (None, "", "off") and not 0 <= int(force_ell) <= int(gamma):
        raise UserError(f"forced ℓ must be in [0, γ={gamma}], got {force_ell}")


def _capacity_curve(pool: ModelPool, name: str, target_spec: str, notes: list[str]):
    if not name or name == NO_CURVE:
        return None
    if name == DEVICE_CURVE:
        return pool.device_curve(target_spec)
    return _capacity.resolve_capacity(name)


def _background(pool: "ModelPool", load: int, target_spec: str, drafter_spec: str, gamma: int,
                curve, seed: int, notes: list[str]):
    """The other R − 1 requests, replayed from recorded rounds (``load.simulator``)."""
    if load <= 1:
        return None
    tp, note = pool.background_pool(target_spec, drafter_spec, gamma)
    notes.append(f"R = {load}: the other {load - 1} requests replay {note}")
    return _simulator.SimulatedBackground(tp, load - 1, capacity=curve, seed=seed)


def new_live(pool: ModelPool, *, prompt, target_spec, drafter_spec, gamma, temperature, seed,
             max_tokens, policy, load, capacity, calibration, markov_off, force_ell, compare,
             **_) -> Explorer:
    _check_settings(prompt, gamma, temperature, seed, max_tokens, load, force_ell)
    gamma, load = int(gamma), int(load)
    fe = None if force_ell in (None, "", "off") else int(force_ell)
    notes: list[str] = []
    target_spec = (target_spec or pool.default_target).strip()
    with pool.lock:
        target = pool.target(target_spec)
        drafter, label = pool.drafter(target_spec, drafter_spec)
        curve = _capacity_curve(pool, capacity, target_spec, notes)
    if drafter is None:
        raise UserError("drafter 'none' gives plain decoding only: pick a drafter")
    note = drafter.confidence_note(float(temperature)) if hasattr(drafter, "confidence_note") else None
    if note:
        notes.append(note)

    def cfg(mode: str) -> DecodeConfig:
        return DecodeConfig(gamma=gamma, temperature=float(temperature), seed=int(seed),
                            max_new_tokens=int(max_tokens), mode=mode, markov_off=bool(markov_off),
                            force_ell=fe, calibrated=bool(calibration))

    def pol(d):
        p = parse_policy(policy or "fixed", gamma)
        if d is not None and d.confidence is None and not isinstance(p, Fixed) and fe is None:
            notes.append(f"{policy} needs a confidence head; this drafter has none → fixed(γ)")
            return Fixed(gamma)
        return p

    lanes = []
    s = SpecSession(target, drafter, cfg("dspark"), policy=pol(drafter), capacity=curve,
                    background=_background(pool, load, target_spec, drafter_spec, gamma, curve,
                                           int(seed), notes), drafter_name=label)
    lanes.append(("dspark", f"DSpark · drafter: {label}", s))
    if compare:
        with pool.lock:
            got = pool.drafter(target_spec, drafter_spec, "dflash")
        if got is None or got[0] is None:
            dd, dl = drafter, f"{label} with the Markov head off (no separate DFlash drafter)"
        else:
            dd, dl = got
        lanes.append(("dflash", f"DFlash ablation · {dl}",
                      SpecSession(target, dd, cfg("dflash"), policy=pol(dd), capacity=curve,
                                  drafter_name=dl)))
        lanes.append(("plain", "plain target decoding (1 token per target pass)",
                      SpecSession(target, None, cfg("ar"), drafter_name="none")))
    with pool.lock:
        for _, _, sess in lanes:
            sess.prefill(prompt)
    ex = Explorer(lanes=[Lane(n, l, s.trace(), s) for n, l, s in lanes], source="live", notes=notes,
                  settings=dict(target=target.name, drafter=label, target_spec=target_spec,
                                drafter_spec=drafter_spec, policy=policy, load=load,
                                capacity=getattr(curve, "name", "") if curve is not None else "",
                                untrained="untrained" in label))
    return ex


def new_replay(path) -> Explorer:
    if not path:
        raise UserError("replay: choose a trace file (.json) first")
    tr = Trace.load(path)
    label = f"replay of {Path(path).name} · drafter: {tr.meta.drafter}"
    return Explorer(lanes=[Lane("replay", label, tr, None)], source="replay",
                    settings=dict(target=tr.meta.target, drafter=tr.meta.drafter,
                                  policy=tr.meta.policy, load=tr.meta.load, capacity=tr.meta.capacity,
                                  untrained="untrained" in tr.meta.drafter))


# ----------------------------------------------------------------------------- rendering
def _sps_for(ex: Explorer, pool: ModelPool | None):
    """SPS(B) callable for the scheduler panel (bound to the round's load), or None."""
    name = ex.settings.get("capacity") or ""
    try:
        if name.startswith("profiled:") and pool is not None:
            curve = next((c for c in pool.curves.values() if c.name == name), None)
        else:
            curve = _capacity.resolve_capacity(name or "h200-qwen3-8b")
    except Exception:  # noqa: BLE001 — a replayed trace may name a curve we do not have
        return None
    if curve is None:
        return None
    load = max(1, int(ex.settings.get("load") or 1))
    return curve.for_load(load).sps if hasattr(curve, "for_load") else curve.sps


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


def render(ex: Explorer | None, pool: ModelPool | None = None, error: str | None = None):
    """All panel values for the current cursor (the order of ``PANELS``)."""
    if ex is None:
        empty = F.message_figure("", "press Start")
        return (status_html(None, error), T.legend_html(), "", "", empty, empty, empty, empty,
                empty, empty, "", "", gr.update(maximum=1, value=0))
    big, i = ex.big, ex.cursor - 1
    main = ex.main
    tr, upto = main.trace, ex.upto(main)
    text = f'<div class="dsv-lane"><h4>{html.escape(main.label)}</h4>{T.tokens_html(tr, upto)}</div>'
    others = "".join(f'<div class="dsv-lane"><h4>{html.escape(l.label)}</h4>'
                     f"{T.tokens_html(l.trace, ex.upto(l))}</div>" for l in ex.lanes[1:])
    metrics = F.metrics_html([(l.name, l.trace, ex.upto(l)) for l in ex.lanes], big=big)
    ri = min(i, upto - 1)
    return (status_html(ex, error), T.legend_html(), text, F.round_summary_html(tr, ri) if ri >= 0 else "",
            F.draft_block_figure(tr, ri, big=big), F.confidence_figure(tr, ri, big=big),
            F.admission_figure(tr, ri, big=big, sps=_sps_for(ex, pool)),
            F.verify_figure(tr, ri, big=big), F.tau_figure(tr, upto, big=big),
            F.position_figure(tr, upto, big=big), metrics, others,
            gr.update(maximum=max(1, ex.total_rounds), value=ex.cursor))


def figures_of(ex: Explorer, pool=None) -> dict:
    i = ex.cursor - 1
    tr, upto = ex.main.trace, ex.upto(ex.main)
    return {"draft_block": F.draft_block_figure(tr, i), "confidence": F.confidence_figure(tr, i),
            "scheduler": F.admission_figure(tr, i, sps=_sps_for(ex, pool)),
            "verification": F.verify_figure(tr, i), "tau": F.tau_figure(tr, upto)}


# ----------------------------------------------------------------------------- the app
def build_app(target=None, drafter=None, *, drafter_label: str | None = None,
              device: str | None = None, title: str = "DSpark explorer") -> gr.Blocks:
    """The Blocks; ``target``/``drafter`` preload models (tests pass tiny ones)."""
    pool = ModelPool(target, drafter, drafter_label, device)
    curves = [NO_CURVE, DEVICE_CURVE] + _capacity.preset_names()

    def guarded(fn):
        def run(ex, *args):
            try:
                ex2 = fn(ex, *args)
                return (ex2,) + tuple(render(ex2, pool))
            except _user_errors() as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                return (ex,) + tuple(render(ex, pool, error=msg))
        return run

    def on_start(ex, source, prompt, target_spec, drafter_spec, trace_file, gamma, temperature,
                 seed, max_tokens, policy, load, capacity, calibration, markov_off, force_ell,
                 compare, big):
        if source == "replay a trace file":
            new = new_replay(trace_file)
        else:
            new = new_live(pool, prompt=prompt, target_spec=target_spec, drafter_spec=drafter_spec,
                           gamma=gamma, temperature=temperature, seed=seed, max_tokens=max_tokens,
                           policy=policy, load=load, capacity=capacity, calibration=calibration,
                           markov_off=markov_off, force_ell=force_ell, compare=compare)
        new.big = bool(big)
        return new

    def _need(ex):
        if ex is None:
            raise UserError("press Start first")
        return ex

    def extend(ex):
        with pool.lock:
            return extend_live(ex)

    def on_step(ex, big):
        ex = _need(ex)
        ex.big = bool(big)
        ex.forward(1, extend)
        return ex

    def on_back(ex, big):
        ex = _need(ex)
        ex.big = bool(big)
        return ex.back(1)

    def on_seek(ex, i, big):
        ex = _need(ex)
        ex.big = bool(big)
        return ex.seek(int(i))

    def on_tick(ex, speed, big):
        if ex is None or not ex.playing:
            return ex
        ex.big = bool(big)
        n = ex.tick_rounds(speed, TICK_S)
        if ex.source == "live" and ex.cursor >= ex.total_rounds:
            n = min(n, 1)  # new rounds are computed at the model's pace
        ex.forward(n, extend)
        if ex.at_end:
            ex.playing = False
        return ex

    def on_play(ex):
        if ex is None:
            return ex, gr.Timer(active=False), gr.update(value="▶ Play")
        ex.playing = not ex.playing and not ex.at_end
        ex.carry = 0.0
        return ex, gr.Timer(active=ex.playing), gr.update(value="⏸ Pause" if ex.playing else "▶ Play")

    def timer_state(ex):
        on = bool(ex is not None and ex.playing)
        return gr.Timer(active=on), gr.update(value="⏸ Pause" if on else "▶ Play")

    def on_export_trace(ex):
        ex = _need(ex)
        d = Path(tempfile.mkdtemp(prefix="dsv-export-"))
        paths = []
        for lane in ex.lanes:
            paths.append(str(lane.trace.save(d / f"trace-{lane.name}.json")))
        return paths

    def on_export_figures(ex):
        ex = _need(ex)
        d = Path(tempfile.mkdtemp(prefix="dsv-figures-"))
        zpath = d / f"dspark-round-{ex.cursor}.zip"
        import plotly.offline
        notes = []
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("plotly.min.js", plotly.offline.get_plotlyjs())
            z.writestr("text.html", T.page_html(ex.main.trace, ex.upto(ex.main)))
            for name, fig in figures_of(ex, pool).items():
                z.writestr(f"{name}.html", fig.to_html(include_plotlyjs="directory", full_html=True))
                try:
                    z.writestr(f"{name}.png", fig.to_image(format="png", width=1000, scale=1))
                except Exception as e:  # noqa: BLE001 — PNG needs kaleido + Chromium
                    notes.append(f"{name}.png: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            if notes:
                z.writestr("PNG-NOT-WRITTEN.txt", "\n".join(notes) + "\nUse the camera icon above each plot.\n")
        return [str(zpath)]

    def on_tour(step, delta):
        step = max(-1, min(int(step) + int(delta), len(TOUR) - 1))
        return step, tour_markdown(step)

    def on_load_view(ex, gamma, capacity, load, big):
        gamma, load = int(gamma), int(load)
        if ex is not None and ex.source == "replay":
            tp = _simulator.TracePool.from_traces([ex.main.trace])
            src = "the replayed trace"
        else:
            spec = ex.settings.get("target_spec") if ex is not None else None
            dspec = ex.settings.get("drafter_spec") if ex is not None else "default"
            tp, src = pool.background_pool(spec or pool.default_target, dspec or "default", gamma)
        with pool.lock:
            curve = _capacity_curve(pool, capacity, pool.default_target, []) if capacity != NO_CURVE \
                else _capacity.get_curve("h200-qwen3-8b")
        g = tp.gamma
        pols = [Fixed(1), Fixed(g), parse_policy("threshold:0.5", g), parse_policy("hardware", g),
                parse_policy("async", g)]
        loads = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, load})
        res = _simulator.sweep(tp, pols, curve, loads, steps=40)
        fig = _load_figures.load_sweep_figure(res, title=f"Under load — {curve.name}; pool: {src}")
        cur = [r for r in res if r.R == load]
        for row, key in ((1, "throughput"), (2, "per_user"), (3, "budget")):
            fig.add_scatter(x=[r.R for r in cur], y=[getattr(r, key) for r in cur], mode="markers",
                            marker={"symbol": "circle-open", "size": 16, "color": "#000"},
                            name=f"current R = {load}", showlegend=row == 1, row=row, col=1)
        fig.update_layout(font={"size": 20 if big else 13})
        return fig

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        state = gr.State(None, time_to_live=3600)
        tour_step = gr.State(-1)
        gr.Markdown("## DSpark explorer — speculative decoding, one round at a time")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                source = gr.Radio(["live model", "replay a trace file"], value="live model",
                                  label="source")
                prompt = gr.Textbox(EXAMPLES[0][0], lines=4, label="prompt", elem_id="dsv-prompt")
                gr.Examples(EXAMPLES, inputs=[prompt], label="examples (code, math, prose)")
                with gr.Accordion("models and replay", open=False):
                    target_spec = gr.Textbox(pool.default_target, label="target",
                                             info="'embedded' (Gemma 3 270M), a HF id or a local checkpoint path")
                    drafter_spec = gr.Textbox("default", label="drafter",
                                              info="'default', 'random' or a drafter checkpoint path")
                    trace_file = gr.File(label="trace to replay (.json)", file_types=[".json"],
                                         type="filepath")
                with gr.Row():
                    gamma = gr.Slider(1, GAMMA_MAX, 7, step=1, label="γ (block size)")
                    max_tokens = gr.Slider(1, MAX_NEW_TOKENS, 48, step=1, label="max new tokens")
                with gr.Row():
                    temperature = gr.Number(0.0, label="temperature (0 = greedy, ≤ 2)")
                    seed = gr.Number(0, label="seed", precision=0)
                policy = gr.Dropdown(POLICIES, value="fixed", label="scheduler policy",
                                     allow_custom_value=True,
                                     info="fixed = ℓ = γ; fixed:N; threshold:T; hardware = Algorithm 1; async = §5.2; "
                                          "retrospective = lossy (Appendix A)")
                with gr.Row():
                    load = gr.Slider(1, MAX_LOAD, 1, step=1, label="concurrency R (simulated load)")
                    capacity = gr.Dropdown(curves, value=NO_CURVE, label="capacity curve SPS(B)")
                calibration = gr.Checkbox(True, label="calibration (STS)")
                markov_off = gr.Checkbox(False, label="what-if: Markov head off")
                compare = gr.Checkbox(False, label="compare: DSpark · DFlash · plain")
                force_ell = gr.Dropdown(["off"] + [str(i) for i in range(GAMMA_MAX + 1)], value="off",
                                        label="what-if: force verification length ℓ")
                start = gr.Button("Start", variant="primary", elem_id="dsv-start")
            with gr.Column(scale=3):
                status = gr.HTML(status_html(None), elem_id="dsv-status")
                with gr.Row():
                    back = gr.Button("◀ Back", elem_id="dsv-back", min_width=80)
                    step = gr.Button("Step ▶", variant="primary", elem_id="dsv-step", min_width=80)
                    play = gr.Button("▶ Play", elem_id="dsv-play", min_width=80)
                    speed = gr.Slider(0.5, 120, 2, step=0.5, label="speed (rounds/s)", min_width=160)
                    big = gr.Checkbox(False, label="presentation mode", elem_id="dsv-big")
                scrub = gr.Slider(0, 1, 0, step=1, label="round", elem_id="dsv-scrub")
                with gr.Row():
                    tour_prev = gr.Button("tour ◀", size="sm", min_width=60)
                    tour_next = gr.Button("guided tour ▶", size="sm", min_width=60, elem_id="dsv-tour")
                tour = gr.Markdown("")
                legend = gr.HTML(T.legend_html())
                text = gr.HTML("", elem_id="dsv-text")
                summary = gr.HTML("", elem_id="dsv-summary")
                with gr.Row():
                    p_draft = gr.Plot(label="draft block", elem_id="dsv-draft")
                with gr.Row():
                    p_conf = gr.Plot(label="confidence", elem_id="dsv-conf")
                    p_sched = gr.Plot(label="scheduler", elem_id="dsv-sched")
                with gr.Row():
                    p_verify = gr.Plot(label="verification", elem_id="dsv-verify")
                    p_tau = gr.Plot(label="τ per round", elem_id="dsv-tau")
                with gr.Row():
                    p_pos = gr.Plot(label="per-position acceptance", elem_id="dsv-pos")
                metrics = gr.HTML("", elem_id="dsv-metrics")
                lanes = gr.HTML("", elem_id="dsv-lanes")
                with gr.Accordion("load view: throughput, per-user speed, budget vs R", open=False):
                    load_btn = gr.Button("compute the load sweep for these settings")
                    p_load = gr.Plot(label="load view")
                with gr.Accordion("export", open=False):
                    with gr.Row():
                        ex_trace = gr.Button("trace(s) as JSON")
                        ex_figs = gr.Button("figures as HTML + PNG (zip)")
                    files = gr.File(label="download", file_count="multiple")
        timer = gr.Timer(TICK_S, active=False)

        panels = [status, legend, text, summary, p_draft, p_conf, p_sched, p_verify, p_tau, p_pos,
                  metrics, lanes, scrub]
        outs = [state] + panels
        settings = [source, prompt, target_spec, drafter_spec, trace_file, gamma, temperature, seed,
                    max_tokens, policy, load, capacity, calibration, markov_off, force_ell, compare, big]
        start.click(guarded(on_start), [state] + settings, outs, api_name="start").then(
            timer_state, [state], [timer, play], api_name="timer_state_after_start")
        step.click(guarded(on_step), [state, big], outs, api_name="step")
        back.click(guarded(on_back), [state, big], outs, api_name="back")
        scrub.release(guarded(on_seek), [state, scrub, big], outs, api_name="seek")
        play.click(on_play, [state], [state, timer, play], api_name="play")
        timer.tick(guarded(on_tick), [state, speed, big], outs, api_name="tick",
                   concurrency_limit=None).then(timer_state, [state], [timer, play],
                                                api_name="timer_state_after_tick")
        big.change(guarded(lambda ex, b: (setattr(ex, "big", bool(b)) or ex) if ex else ex),
                   [state, big], outs, api_name="presentation")
        big.change(None, [big], None, js=TOGGLE_PRESENT_JS, api_name=False)
        tour_next.click(lambda t: on_tour(t, 1), [tour_step], [tour_step, tour], api_name="tour_next")
        tour_prev.click(lambda t: on_tour(t, -1), [tour_step], [tour_step, tour], api_name="tour_prev")
        ex_trace.click(on_export_trace, [state], [files], api_name="export_trace")
        ex_figs.click(on_export_figures, [state], [files], api_name="export_figures")
        load_btn.click(on_load_view, [state, gamma, capacity, load, big], [p_load], api_name="load_view")
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
        from dspark_viz.drafter.registry import resolve_drafter
        from dspark_viz.targets import load_target
        t0 = time.perf_counter()
        target = load_target(a.target, device=a.device)
        drafter, label = resolve_drafter(a.drafter, target)
        print(f"models loaded in {time.perf_counter() - t0:.1f} s: {target.name} + {label}")
    demo = build_app(target, drafter, drafter_label=label, device=a.device)
    launch(demo, server_name=a.host, server_port=a.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

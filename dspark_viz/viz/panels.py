"""The panels of a decoding view: one registry for the app and the notebook stepper.

Scope: ``PANELS``, the ordered list of ``Panel(name, label, render, ...)`` that the app's
layout, the app's render, the figure export and the notebook ``RoundStepper`` all iterate,
and ``View``, what a panel renders from: the lanes at the current cursor (the first lane
drives the per-round figures), presentation mode and the capacity curve SPS(B) the trace's
policy decided on (``trace_sps``).
Adding a panel is one render function (a figure or HTML builder of ``viz.figures`` /
``viz.tokens``) plus one line in ``PANELS``. Pure: no Gradio, no ipywidgets, no model.
"""
from __future__ import annotations

import dataclasses
import html
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dspark_viz.config import ConfigError
from dspark_viz.decoding.trace import Trace
from dspark_viz.errors import UserError
from dspark_viz.eval.calibration import _logit, default_grid
from dspark_viz.load.capacity import get_curve, preset_names
from dspark_viz.viz import figures as F
from dspark_viz.viz import text_view as TV
from dspark_viz.viz import tokens as T
from dspark_viz.viz.app_state import Explorer


@dataclass(frozen=True)
class LaneView:
    """One lane at the cursor: its name, its label on screen, its trace, the rounds shown."""

    name: str
    label: str
    trace: Trace
    upto: int


@dataclass(frozen=True)
class View:
    """What the panels show: lanes at the cursor (``lanes[0]`` drives the round figures)."""

    lanes: tuple[LaneView, ...]
    big: bool = False  # presentation mode (larger fonts)
    sps: Callable[[int], float | None] | None = None  # SPS(B) for the scheduler panel, or None
    history: bool = False  # text panel: every round's drafts inline (else the clean output)

    @property
    def main(self) -> LaneView:
        return self.lanes[0]

    @property
    def trace(self) -> Trace:
        return self.main.trace

    @property
    def i(self) -> int:
        """Index of the round shown in the main lane (−1: none yet, just after prefill)."""
        return self.main.upto - 1


def trace_sps(trace: Trace) -> Callable[[int], float | None] | None:
    """SPS(B) of the curve the trace's policy decided on, or None (a policy without a curve).

    Version-2 traces carry the curve (``meta.capacity_curve``); for a version-1 trace the curve
    is found by its recorded name among the named presets, bound to the trace's load (None when
    it is not one: a trace never makes the server read a file it names).
    """
    sample = trace.meta.capacity_curve
    if sample is not None:
        return sample.sps_at
    name = trace.meta.capacity.strip().lower()
    if name not in preset_names():  # e.g. a profiled curve of another machine, or a path
        return None
    try:
        return get_curve(name).for_load(max(1, trace.meta.load)).sps
    except UserError:
        return None


def view_of(ex: Explorer, *, big: bool | None = None, sps=None) -> View:
    """The ``View`` of an ``Explorer`` at its cursor (``big`` defaults to ``ex.big``; ``sps``
    to the capacity curve recorded in the main lane's trace)."""
    return View(tuple(LaneView(l.name, l.label, l.trace, ex.upto(l)) for l in ex.lanes),
                big=ex.big if big is None else bool(big),
                sps=sps if sps is not None else trace_sps(ex.main.trace),
                history=bool(getattr(ex, "history", False)))


@dataclass(frozen=True)
class Panel:
    """One panel: ``render(view)`` gives a plotly figure (kind "plot") or an HTML string.

    ``name`` is the key notebooks choose panels by; ``label`` its caption in the app;
    ``elem_id`` its DOM id in the app (tests and CSS select by it); ``wide`` gives a plot a
    whole row in the app (other plots pair up side by side); ``file`` is the stem of its
    exported file (plots only; default ``name``).
    """

    name: str
    label: str
    render: Callable[[View], object]
    kind: str = "plot"  # "plot" | "html"
    elem_id: str = ""
    wide: bool = False
    file: str = ""

    @property
    def export_name(self) -> str:
        return self.file or self.name


MAX_SHOWN_ROUNDS = 1000  # rounds the text and τ panels draw (the latest): never what a trace says


def _window(trace: Trace, upto: int) -> tuple[Trace, int, int]:
    """(trace to draw, rounds of it to show, rounds left out): the whole trace, or one holding
    only the last ``MAX_SHOWN_ROUNDS`` rounds shown (numbered as in the trace), its text
    starting from the anchor before them."""
    upto = max(0, min(upto, len(trace.rounds)))
    skip = upto - MAX_SHOWN_ROUNDS
    if skip <= 0:
        return trace, upto, 0
    meta = dataclasses.replace(trace.meta, prompt="", first_token=trace.rounds[skip].anchor)
    return dataclasses.replace(trace, meta=meta, rounds=trace.rounds[skip:upto]), MAX_SHOWN_ROUNDS, skip


def _lane_html(lane: LaneView, history: bool = False) -> str:
    """One lane's text: the clean output and the current round's discarded drafts (default), or
    with ``history`` every round's drafts inline (``viz.tokens``)."""
    trace, upto, skip = _window(lane.trace, lane.upto)
    note = (f'<div class="dsv-warn">… {skip} earlier rounds not shown (the text shows the last '
            f"{MAX_SHOWN_ROUNDS})</div>" if skip else "")
    body = T.tokens_html(trace, upto) if history else TV.clean_html(trace, upto)
    return f'<div class="dsv-lane"><h4>{html.escape(lane.label)}</h4>{note}{body}</div>'


def _other_lanes(v: View) -> str:
    """The comparison lanes side by side, one column each."""
    if len(v.lanes) < 2:
        return ""
    cols = "".join(f'<div class="dsv-lane-col">{_lane_html(l, v.history)}</div>' for l in v.lanes[1:])
    return f'<div class="dsv-lanes-row">{cols}</div>'


def _summary(v: View) -> str:
    return F.round_summary_html(v.trace, v.i) if v.i >= 0 else \
        "<div>after prefill: press Step or Play</div>"


def _headline(v: View) -> str:
    """The numbers a talk leads with: tokens per target pass per lane (exact, machine-independent),
    wall-clock speedup beside it (noisy: a shared CPU's timings swing between runs)."""
    stats = {l.name: F.run_stats(l.trace, l.upto) for l in v.lanes}
    plain = stats.get("plain")
    items = []
    for name, s in stats.items():
        tpp = s["tokens_per_forward"]
        item = f"<b>{html.escape(name)}</b>: <b>{tpp:.2f}</b> tokens / target pass" if tpp == tpp \
            else f"<b>{html.escape(name)}</b>: – tokens / target pass"
        if plain and name != "plain" and plain["tokens_per_s"] and s["tokens_per_s"] == s["tokens_per_s"]:
            item += (f' <span class="dsv-noisy">(wall clock {s["tokens_per_s"] / plain["tokens_per_s"]:.2f}× '
                     "vs plain — noisy on a shared CPU)</span>")
        items.append(item)
    return '<div class="dsv-headline">' + " · ".join(items) + "</div>"


def _metrics(v: View) -> str:
    return _headline(v) + F.metrics_html([(l.name, l.trace, l.upto) for l in v.lanes], big=v.big)


SCHEDULER_TERMS = (
    ("R", "concurrent requests sharing one verify step (simulated load)"),
    ("(r, j)", "candidate j (draft position) of request r; admitted by descending a"),
    ("a", "prefix survival a_j = c_1·…·c_j: the chance drafts 1..j all survive"),
    ("B", "tokens in the verify batch: R anchors + every admitted draft"),
    ("SPS(B)", "engine steps per second at batch B (the capacity curve)"),
    ("τ*", "expected accepted tokens per request: 1 + Σ of the admitted a"),
    ("Θ", "expected throughput τ*·SPS(B); admission stops at its first non-improvement"),
)


def _scheduler_terms(v: View) -> str:
    """The scheduler panel's vocabulary, and which policies react to R at all."""
    pol = ""
    if v.i >= 0 and v.trace.rounds[v.i].schedule is not None:
        s = v.trace.rounds[v.i].schedule
        pol = (f"<b>{html.escape(s.policy)}</b> at R = {s.load}: "
               + ("a fixed ℓ — only the hardware-aware and async policies react to R; try "
                  "'demo under load'. " if not s.path else ""))
    terms = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(d)}</li>" for k, d in SCHEDULER_TERMS)
    return (f'<details class="dsv-terms"><summary>{pol}Θ = τ*·SPS(B) — what R, (r, j), a, B, SPS, '
            f"τ* and Θ mean</summary><ul>{terms}</ul></details>")


# presentation mode: plot heights (px) that put text, draft block, confidence and scheduler on
# one 1920×1080 screen (the figures' own big heights are for a page that scrolls)
PRESENT_HEIGHTS = {"draft": 790, "confidence": 375, "admission": 375}
PRESENT_FONTS = {"confidence": 15, "admission": 14}  # the narrow right column: no overlapping titles


def _sized(name: str, fig_of: Callable[[View], object]) -> Callable[[View], object]:
    def render(v: View):
        fig = fig_of(v)
        h = PRESENT_HEIGHTS.get(name)
        if v.big and h and hasattr(fig, "update_layout"):
            b = fig.layout.margin.b if fig.layout.margin and fig.layout.margin.b is not None else 100
            fig.update_layout(height=h, margin={"b": min(b, 110)})
            if name in PRESENT_FONTS:
                fig.update_layout(font={"size": PRESENT_FONTS[name]},
                                  title={"font": {"size": PRESENT_FONTS[name] + 3}})
                if fig.layout.legend.entrywidth:  # fixed-width entries follow the smaller font
                    fig.update_layout(legend={"entrywidth": F.legend_entry_px(PRESENT_FONTS[name])})
        return fig
    return render


PINNED_T = 0.9 * float(default_grid()[-1])  # an STS temperature at the top of the fit grid


def implied_temperature(raw: float, cal: float) -> float | None:
    """The STS temperature T that maps ``raw`` to ``cal`` (cal = sigmoid(logit(raw) / T)), or
    None where raw is too close to ½ to tell; inf where cal is ½ to float precision."""
    if abs(raw - 0.5) < 5e-3 or not (0.0 < raw < 1.0 and 0.0 < cal < 1.0):
        return None
    z_raw, z_cal = (float(z) for z in _logit(np.array([raw, cal])))
    return math.inf if abs(z_cal) < 1e-9 else z_raw / z_cal


def pinned_positions(trace: Trace, i: int) -> list[int]:
    """Draft positions k of round ``i`` whose calibrated c_k is held at ≈ 0.50 by STS: the fit
    gave them a temperature at the grid's top (sigmoid(logit/T) → ½ as T grows), read back from
    the recorded raw and calibrated values (a replayed trace carries no drafter)."""
    if not 0 <= i < len(trace.rounds):
        return []
    return [d.k for d in trace.rounds[i].draft if d.conf_cal is not None and d.conf_raw is not None
            and (implied_temperature(d.conf_raw, d.conf_cal) or 0.0) >= PINNED_T]


def _confidence(v: View):
    ks = pinned_positions(v.trace, v.i)
    note = ""
    if ks:
        # two lines at most: the plot keeps its height in the projector layout
        note = f"{', '.join(f'c_{k}' for k in ks)} ≈ 0.50, pinned: STS temperature at the grid's top (T ≈ 200)"
    return F.confidence_figure(v.trace, v.i, big=v.big, note=note)


PANELS: tuple[Panel, ...] = (
    Panel("text", "text", lambda v: _lane_html(v.main, v.history), "html", "dsv-text"),
    Panel("summary", "round summary", _summary, "html", "dsv-summary"),
    Panel("draft", "draft block", _sized("draft", lambda v: F.draft_block_figure(v.trace, v.i, big=v.big)),
          elem_id="dsv-draft", wide=True, file="draft_block"),
    Panel("confidence", "confidence",
          _sized("confidence", _confidence),
          elem_id="dsv-conf"),
    Panel("admission", "scheduler",
          _sized("admission", lambda v: F.admission_figure(v.trace, v.i, big=v.big, sps=v.sps)),
          elem_id="dsv-sched", file="scheduler"),
    Panel("verify", "verification", lambda v: F.verify_figure(v.trace, v.i, big=v.big),
          elem_id="dsv-verify", file="verification"),
    Panel("tau", "τ per round", lambda v: F.tau_figure(*_window(v.trace, v.main.upto)[:2], big=v.big),
          elem_id="dsv-tau"),
    Panel("position", "per-position acceptance",
          lambda v: F.position_figure(v.trace, v.main.upto, big=v.big), elem_id="dsv-pos",
          wide=True),
    Panel("metrics", "metrics", _metrics, "html", "dsv-metrics"),
    Panel("lanes", "other lanes", _other_lanes, "html", "dsv-lanes"),
    Panel("terms", "scheduler terms", _scheduler_terms, "html", "dsv-terms"),
)
PANEL_NAMES: tuple[str, ...] = tuple(p.name for p in PANELS)

# The app's floor plan: rows of columns (column scale, panel names stacked in it). The first row
# is the projector screen (text | draft block | confidence over scheduler); every panel once.
LAYOUT: tuple[tuple[tuple[int, tuple[str, ...]], ...], ...] = (
    ((2, ("text", "summary")), (4, ("draft",)), (3, ("confidence", "admission", "terms"))),
    ((1, ("lanes",)),),  # comparison mode: the DFlash and plain lanes, side by side
    ((1, ("metrics",)),),
    ((1, ("verify",)), (1, ("tau",))),
    ((1, ("position",)),),
)


def panels_named(names) -> tuple[Panel, ...]:
    """The panels called ``names``, in the order given (ConfigError on an unknown name)."""
    from_name = {p.name: p for p in PANELS}
    bad = [n for n in names if n not in from_name]
    if bad:
        raise ConfigError(f"unknown panels {bad} (choose from {PANEL_NAMES})")
    return tuple(from_name[n] for n in names)


__all__ = ["LaneView", "View", "trace_sps", "view_of", "Panel", "PANELS", "PANEL_NAMES", "LAYOUT",
           "SCHEDULER_TERMS", "panels_named"]

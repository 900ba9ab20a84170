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

import html
from dataclasses import dataclass
from typing import Callable

from dspark_viz.config import ConfigError
from dspark_viz.decoding.trace import Trace
from dspark_viz.errors import UserError
from dspark_viz.load.capacity import resolve_capacity
from dspark_viz.viz import figures as F
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
    is found by its recorded name, bound to the trace's load (None when it is not known here).
    """
    sample = trace.meta.capacity_curve
    if sample is not None:
        return sample.sps_at
    if not trace.meta.capacity:
        return None
    try:
        return resolve_capacity(trace.meta.capacity).for_load(max(1, trace.meta.load)).sps
    except UserError:  # e.g. a profiled curve of another machine
        return None


def view_of(ex: Explorer, *, big: bool | None = None, sps=None) -> View:
    """The ``View`` of an ``Explorer`` at its cursor (``big`` defaults to ``ex.big``; ``sps``
    to the capacity curve recorded in the main lane's trace)."""
    return View(tuple(LaneView(l.name, l.label, l.trace, ex.upto(l)) for l in ex.lanes),
                big=ex.big if big is None else bool(big),
                sps=sps if sps is not None else trace_sps(ex.main.trace))


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


def _lane_html(lane: LaneView) -> str:
    return (f'<div class="dsv-lane"><h4>{html.escape(lane.label)}</h4>'
            f"{T.tokens_html(lane.trace, lane.upto)}</div>")


def _summary(v: View) -> str:
    return F.round_summary_html(v.trace, v.i) if v.i >= 0 else \
        "<div>after prefill: press Step or Play</div>"


def _metrics(v: View) -> str:
    return F.metrics_html([(l.name, l.trace, l.upto) for l in v.lanes], big=v.big)


PANELS: tuple[Panel, ...] = (
    Panel("text", "text", lambda v: _lane_html(v.main), "html", "dsv-text"),
    Panel("summary", "round summary", _summary, "html", "dsv-summary"),
    Panel("draft", "draft block", lambda v: F.draft_block_figure(v.trace, v.i, big=v.big),
          elem_id="dsv-draft", wide=True, file="draft_block"),
    Panel("confidence", "confidence", lambda v: F.confidence_figure(v.trace, v.i, big=v.big),
          elem_id="dsv-conf"),
    Panel("admission", "scheduler",
          lambda v: F.admission_figure(v.trace, v.i, big=v.big, sps=v.sps),
          elem_id="dsv-sched", file="scheduler"),
    Panel("verify", "verification", lambda v: F.verify_figure(v.trace, v.i, big=v.big),
          elem_id="dsv-verify", file="verification"),
    Panel("tau", "τ per round", lambda v: F.tau_figure(v.trace, v.main.upto, big=v.big),
          elem_id="dsv-tau"),
    Panel("position", "per-position acceptance",
          lambda v: F.position_figure(v.trace, v.main.upto, big=v.big), elem_id="dsv-pos",
          wide=True),
    Panel("metrics", "metrics", _metrics, "html", "dsv-metrics"),
    Panel("lanes", "other lanes", lambda v: "".join(_lane_html(l) for l in v.lanes[1:]), "html",
          "dsv-lanes"),
)
PANEL_NAMES: tuple[str, ...] = tuple(p.name for p in PANELS)


def panels_named(names) -> tuple[Panel, ...]:
    """The panels called ``names``, in the order given (ConfigError on an unknown name)."""
    from_name = {p.name: p for p in PANELS}
    bad = [n for n in names if n not in from_name]
    if bad:
        raise ConfigError(f"unknown panels {bad} (choose from {PANEL_NAMES})")
    return tuple(from_name[n] for n in names)


__all__ = ["LaneView", "View", "trace_sps", "view_of", "Panel", "PANELS", "PANEL_NAMES", "panels_named"]

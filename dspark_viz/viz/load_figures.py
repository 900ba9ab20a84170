"""Plotly figures for load: capacity curves, admission paths, load sweeps, the frontier.

Scope: pure builders (data in, ``plotly.graph_objects.Figure`` out; no I/O, no models) used by
the CLI, the app and the notebooks. Shapes follow the paper: Figure 8 (throughput and verify
budget vs concurrency) and Figure 7 (throughput vs per-user speed).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TAU_NOTE = "τ = accepted draft tokens + 1 target token per request per step"


def capacity_figure(curves: Sequence, *, b_max: int = 512, loads: Sequence[int] = (1,),
                    title: str = "Capacity curve SPS(B)") -> go.Figure:
    """SPS(B) for B = 1..b_max, one line per curve and load R (roofline curves rebind R)."""
    B = np.arange(1, int(b_max) + 1)
    fig = go.Figure()
    for c in curves:
        rebinds = getattr(c, "roofline", None) is not None
        for R in (loads if rebinds else (None,)):
            cc = c.for_load(R) if R is not None else c
            name = c.name + (f" · R={R}" if R is not None and len(loads) > 1 else "")
            fig.add_trace(go.Scatter(x=B, y=cc.sps_many(B), mode="lines", name=name,
                                     line_shape="hv" if c.kind == "jagged" else "linear"))
        if getattr(c, "batch", ()):
            fig.add_trace(go.Scatter(x=list(c.batch), y=[1e3 / t for t in c.step_ms],
                                     mode="markers", name=f"{c.name} (measured)"))
    fig.update_layout(title=title, xaxis_title="B (tokens in the verify batch)",
                      yaxis_title="SPS (engine steps / s)", template="plotly_white")
    return fig


def admission_path_figure(path: Sequence, *, theta0: float | None = None,
                          title: str = "Admission path: Θ = τ*·SPS(B) vs B") -> go.Figure:
    """Θ along the greedy admission path; admitted candidates filled, refused ones hollow."""
    fig = go.Figure()
    if not path:
        fig.update_layout(title=title + " (no candidates)", template="plotly_white")
        return fig
    B = [s.B for s in path]
    th = [s.theta for s in path]
    adm = [s.admitted for s in path]
    if theta0 is not None:
        fig.add_hline(y=theta0, line_dash="dot", annotation_text="Θ with nothing admitted")
    fig.add_trace(go.Scatter(x=B, y=th, mode="lines", name="Θ", line=dict(color="#888")))
    txt = [f"r={s.r} j={s.j}<br>a={s.a:.3f}<br>τ*={s.tau:.2f}" for s in path]
    for flag, name, sym in ((True, "admitted", "circle"), (False, "not admitted", "circle-open")):
        idx = [i for i, a in enumerate(adm) if a == flag]
        if idx:
            fig.add_trace(go.Scatter(x=[B[i] for i in idx], y=[th[i] for i in idx], mode="markers",
                                     name=name, marker=dict(symbol=sym, size=8),
                                     text=[txt[i] for i in idx], hoverinfo="text+x+y"))
    fig.update_layout(title=title, xaxis_title="B (verify tokens)",
                      yaxis_title="Θ (expected tokens / s)", template="plotly_white")
    return fig


def _by_policy(results: Sequence) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(r.policy, []).append(r)
    return {k: sorted(v, key=lambda r: r.R) for k, v in out.items()}


def load_sweep_figure(results: Sequence, *, title: str = "Under load") -> go.Figure:
    """Three panels vs concurrency R: throughput, per-user speed, mean verify budget; every row
    has the same log x-axis with its tick labels (markers added on any row sit where it reads)."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("aggregate throughput (tok/s)",
                                        "per-user speed (tok/s/user)",
                                        "verify budget (mean ℓ per request)"))
    for i, (pol, rs) in enumerate(_by_policy(results).items()):
        R = [r.R for r in rs]
        color = _COLORS[i % len(_COLORS)]
        for row, key in ((1, "throughput"), (2, "per_user"), (3, "budget")):
            fig.add_trace(go.Scatter(x=R, y=[getattr(r, key) for r in rs], mode="lines+markers",
                                     name=pol, legendgroup=pol, showlegend=row == 1,
                                     **_style(i, color)), row=row, col=1)
    ticks = sorted({r.R for r in results})
    for row in (1, 2, 3):  # every row: the same log axis, labelled (shared x ticks alone hide them)
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(t) for t in ticks],
                         showticklabels=True, title_text="concurrent requests R", row=row, col=1)
    fig.update_layout(title=f"{title}  ({TAU_NOTE})", template="plotly_white", height=900)
    return fig


def frontier_figure(results: Sequence, *,
                    title: str = "Throughput–interactivity frontier") -> go.Figure:
    """Aggregate throughput vs per-user speed, one line per policy, points labelled by R."""
    fig = go.Figure()
    for i, (pol, rs) in enumerate(_by_policy(results).items()):
        fig.add_trace(go.Scatter(x=[r.per_user for r in rs], y=[r.throughput for r in rs],
                                 mode="lines+markers+text", name=pol,
                                 text=[f"R={r.R}" for r in rs], textposition="top center",
                                 **_style(i, _COLORS[i % len(_COLORS)])))
    fig.update_layout(title=title, xaxis_title="per-user speed (tok/s/user)",
                      yaxis_title="aggregate throughput (tok/s)", template="plotly_white")
    return fig


_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
_DASH = ("solid", "dash", "dot", "dashdot", "longdash", "solid", "dash")
_SYMBOL = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star")


def _style(i: int, color: str) -> dict:
    """Line and marker of the i-th policy: colour, dash, symbol and a width that shrinks with
    i, so a policy whose numbers equal an earlier one's is drawn inside it, not hidden."""
    return {"line": dict(color=color, dash=_DASH[i % len(_DASH)], width=max(1.5, 4.5 - 0.8 * i)),
            "marker": dict(symbol=_SYMBOL[i % len(_SYMBOL)], size=max(6, 12 - 1.5 * i), color=color)}

__all__ = ["capacity_figure", "admission_path_figure", "load_sweep_figure", "frontier_figure"]

"""What the Markov head does in recorded DSpark rounds, per draft position (notebook 2).

Scope: ``markov_stats`` (how often B_k changed the top-1 candidate, its largest boost and
strongest suppression, from traces), ``markov_figure`` and ``first_markov_round``. Pure.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dspark_viz.decoding.trace import Trace
from dspark_viz.viz.figures import NOTEBOOK_TEMPLATE as _TEMPLATE
from dspark_viz.viz.figures import markov_changed


def markov_stats(traces: Sequence[Trace]) -> dict:
    """Per draft position k over recorded DSpark rounds: how often the Markov head changed the
    top-1 candidate, the mean largest boost and the mean strongest suppression it applied."""
    rounds = [r for t in traces for r in t.rounds if r.draft]
    g = max((len(r.draft) for r in rounds), default=0)
    changed, boost, supp, n = np.zeros(g), np.zeros(g), np.zeros(g), np.zeros(g)
    for r in rounds:
        ch = markov_changed(r)
        for k, d in enumerate(r.draft):
            if not (d.boosted or d.suppressed):
                continue
            n[k] += 1
            changed[k] += ch[k]
            boost[k] += max((b.bias for b in d.boosted), default=0.0)
            supp[k] += min((b.bias for b in d.suppressed), default=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"k": list(range(1, g + 1)), "n": n.astype(int).tolist(),
                "changed": (changed / n).tolist(), "boost": (boost / n).tolist(),
                "suppress": (supp / n).tolist()}


def markov_figure(stats: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        "how often B_k changed the top-1 candidate", "Markov bias B_k (mean over rounds)"))
    k = stats["k"]
    fig.add_bar(x=k, y=stats["changed"], name="top-1 changed", marker_color="#6a1b9a",
                customdata=stats["n"], hovertemplate="k=%{x}: %{y:.1%} of %{customdata} rounds"
                                                     "<extra></extra>", row=1, col=1)
    fig.add_scatter(x=k, y=stats["boost"], mode="lines+markers", name="largest boost ▲",
                    line=dict(color="#2e7d32"), row=1, col=2)
    fig.add_scatter(x=k, y=stats["suppress"], mode="lines+markers",
                    name="strongest suppression ▼ (among the base top-50)",
                    line=dict(color="#c62828"), row=1, col=2)
    fig.update_yaxes(tickformat=".0%", title_text="rounds", row=1, col=1)
    fig.update_yaxes(title_text="bias (logit units)", row=1, col=2)
    fig.update_xaxes(title_text="draft position k", dtick=1)
    fig.update_layout(template=_TEMPLATE, height=400, legend=dict(orientation="h", y=-0.2),
                      title=dict(text="What the Markov head does, per position", x=0.01))
    return fig


def first_markov_round(trace: Trace) -> int:
    """Index of the first round where the Markov head changed a top-1 candidate (else 0)."""
    for r in trace.rounds:
        if any(markov_changed(r)):
            return r.index
    return 0


__all__ = ["markov_stats", "markov_figure", "first_markov_round"]

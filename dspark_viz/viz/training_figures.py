"""Training curves of the trainer's ``metrics.jsonl`` (notebook 6). Pure.

Scope: ``read_metrics`` (one JSON object per logged step) and ``training_curves_figure``
(loss, accept@k and τ_prob against the step, one colour per run).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dspark_viz.viz.figures import BOTTOM_LEGEND, PALETTE
from dspark_viz.viz.figures import NOTEBOOK_TEMPLATE as _TEMPLATE


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The trainer's ``metrics.jsonl`` (one JSON object per logged step)."""
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def training_curves_figure(runs: dict[str, Sequence[dict]]) -> go.Figure:
    """Loss, accept@k (k = 1, 3, 7) and τ_prob against the step, one colour per run."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        "loss (each method's own objective)", "accept@k = 1 − ½‖p_d − p_t‖₁",
        "τ_prob = 1 + Σₖ Πᵢ₌₁..ₖ accept@i"))
    for i, (name, hist) in enumerate(runs.items()):
        c = PALETTE[i % len(PALETTE)]
        steps = [h["step"] for h in hist]
        fig.add_scatter(x=steps, y=[h["loss"] for h in hist], name=name, legendgroup=name,
                        line=dict(color=c), row=1, col=1)
        for k, dash in ((1, "solid"), (3, "dash"), (7, "dot")):
            key = f"accept@{k}"
            if hist and key in hist[-1]:
                fig.add_scatter(x=steps, y=[h.get(key) for h in hist], name=f"{name} k={k}",
                                legendgroup=name, line=dict(color=c, dash=dash), row=1, col=2)
        fig.add_scatter(x=steps, y=[h.get("tau_prob") for h in hist], name=name,
                        legendgroup=name, showlegend=False, line=dict(color=c), row=1, col=3)
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(template=_TEMPLATE, height=440, legend=BOTTOM_LEGEND, margin=dict(b=110),
                      title=dict(text="Training curves (metrics.jsonl)", x=0.01))
    return fig


__all__ = ["read_metrics", "training_curves_figure"]

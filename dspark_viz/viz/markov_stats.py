"""What the Markov head does in recorded DSpark rounds, per draft position (notebook 2).

Scope: ``markov_stats`` (how often B_k changed the top-1 candidate, its largest boost and
strongest suppression, from traces), ``markov_figure`` and ``first_markov_round`` (pure), and
``teacher_forced`` / ``teacher_forced_figure``: per-position acceptance of drafters on every
position of recorded answers (the trainer's ``evaluate`` on the target's own text — hundreds
of blocks from the few answers a notebook can afford to decode).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dspark_viz.decoding.trace import Trace
from dspark_viz.train.source import OnlineSource
from dspark_viz.train.trainer import evaluate
from dspark_viz.viz.figures import BOTTOM_LEGEND, PALETTE, markov_changed
from dspark_viz.viz.figures import NOTEBOOK_TEMPLATE as _TEMPLATE


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
    fig.update_layout(template=_TEMPLATE, height=440, legend=BOTTOM_LEGEND, margin=dict(b=110),
                      title=dict(text="What the Markov head does, per position", x=0.01))
    return fig


def first_markov_round(trace: Trace) -> int:
    """Index of the first round where the Markov head changed a top-1 candidate (else 0)."""
    for r in trace.rounds:
        if any(markov_changed(r)):
            return r.index
    return 0


def teacher_forced(target, drafters: dict, traces: Sequence[Trace]) -> dict:
    """Teacher-forced acceptance per block position of each drafter (name → drafter) on the
    answers recorded in ``traces`` (prompt + output ids; decode them at T = 0 to score the
    target's own greedy text).

    Every answer position is an anchor: the drafter drafts γ tokens after the true prefix and
    ``greedy@k`` is the share of blocks whose k-th draft equals the target's argmax there — the
    T = 0 acceptance of position k given that the drafts before it were right, i.e. decoding's
    conditional acceptance measured on every position instead of only where rounds start.
    ``accept@k`` = 1 − ½‖p_d − p_t‖₁ is the T = 1 analogue. Returns name → metrics (``blocks``,
    ``greedy``, ``accept`` lists, ``tau_greedy``, ``tau_prob``).
    """
    samples = []
    for i, t in enumerate(traces):
        ids, out = list(t.meta.prompt_ids), t.output_ids()
        if len(out) >= 2:
            samples.append({"id": str(i), "input_ids": ids + out,
                            "loss_spans": [(len(ids), len(ids) + len(out))]})
    res = {}
    for name, d in drafters.items():
        src = OnlineSource(samples, target, tuple(d.cfg.target_layer_ids), 1 << 16)
        m = evaluate(d, target, src, num_anchors=1 << 16, max_samples=len(src))
        g = d.cfg.block_size
        res[name] = {"blocks": m.get("blocks", 0), "tau_greedy": m.get("tau_greedy"),
                     "tau_prob": m.get("tau_prob"),
                     "greedy": [m.get(f"greedy@{k}") for k in range(1, g + 1)],
                     "accept": [m.get(f"accept@{k}") for k in range(1, g + 1)]}
    return res


def teacher_forced_figure(res: dict, key: str = "greedy") -> go.Figure:
    """``teacher_forced`` results: acceptance per position, one line per drafter."""
    fig = go.Figure()
    for i, (name, m) in enumerate(res.items()):
        ys = m[key]
        fig.add_scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
                        name=f"{name} ({m['blocks']} blocks)", line=dict(color=PALETTE[i % len(PALETTE)]),
                        hovertemplate=f"{name}<br>k=%{{x}}: %{{y:.3f}}<extra></extra>")
    what = ("greedy@k: k-th draft = the target's argmax, the drafts before it right (T = 0)"
            if key == "greedy" else "accept@k = 1 − ½‖p_d − p_t‖₁ (the expected T = 1 acceptance)")
    fig.update_xaxes(title_text="draft position k", dtick=1)
    fig.update_yaxes(title_text=key + "@k", rangemode="tozero")
    fig.update_layout(template=_TEMPLATE, height=420, legend=BOTTOM_LEGEND, margin=dict(b=110),
                      title=dict(text=f"Teacher-forced acceptance per position<br><sup>{what}</sup>",
                                 x=0.01))
    return fig


__all__ = ["markov_stats", "markov_figure", "first_markov_round", "teacher_forced",
           "teacher_forced_figure"]

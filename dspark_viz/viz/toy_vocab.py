"""Toy-vocabulary experiments of notebooks 1 and 2, decoded by the core ``verify_block``.

Scope: speculative rejection sampling on a few-word vocabulary (``rejection_pieces``: the exact
quantities, ``sample_first_token``: Monte-Carlo through ``verify_block``, ``rejection_figure``,
``rejection_demo``: sliders for p_t / p_d) and the multi-modal collision of parallel drafting
(``collision_experiment``, ``collision_figure``). No decoding logic of its own: acceptance,
residual sampling and commits are the library's. ipywidgets is imported by ``rejection_demo``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dspark_viz.config import ConfigError
from dspark_viz.decoding.trace import TAU_CONVENTION
from dspark_viz.decoding.verify import commit, verify_block
from dspark_viz.viz.figures import NOTEBOOK_TEMPLATE as _TEMPLATE


# ----------------------------------------------------------------------------- rejection sampling
def rejection_pieces(p_t: Sequence[float], p_d: Sequence[float]) -> dict:
    """Exact quantities of one speculative position (vectors over a toy vocabulary).

    accept_prob[x] = min(1, p_t/p_d); overlap = min(p_t, p_d) (mass accepted as drafted);
    residual = norm(max(p_t − p_d, 0)) (where a rejection resamples); P(accept) = Σ overlap.
    Output = overlap + (1 − Σ overlap)·residual, which equals p_t.
    """
    pt, pd = _norm(p_t), _norm(p_d)
    overlap = np.minimum(pt, pd)
    acc = float(overlap.sum())
    res = np.maximum(pt - pd, 0.0)
    residual = res / res.sum() if res.sum() > 1e-12 else pt.copy()
    ratio = np.where(pd > 0, np.minimum(1.0, pt / np.where(pd > 0, pd, 1.0)), 1.0)
    return {"p_t": pt, "p_d": pd, "overlap": overlap, "accept_prob": ratio,
            "p_accept": acc, "residual": residual, "output": overlap + (1 - acc) * residual}


def _norm(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    s = p.sum()
    if not s > 0:
        raise ConfigError("a distribution needs some positive mass")
    return p / s


def sample_first_token(p_t: Sequence[float], p_d: Sequence[float], n: int,
                       gen: torch.Generator, *, ell: int = 1) -> dict:
    """Run the core ``verify_block`` n times on a toy vocabulary; count what it commits.

    Every trial drafts x_1..x_ℓ independently from p_d, verifies them against p_t (the same
    p_t at every position, for simplicity) and records the first committed token, whether it
    was the accepted draft, a correction or the bonus, and τ (accepted + 1).
    """
    pt = torch.tensor(_norm(p_t), dtype=torch.float32)
    pd = torch.tensor(_norm(p_d), dtype=torch.float32)
    q = pd.expand(ell, -1).contiguous()
    p = pt.expand(ell + 1, -1).contiguous()
    V = len(pt)
    first = np.zeros(V)
    kinds = {"accepted draft": 0, "correction (residual)": 0, "bonus (+1 token)": 0}
    taus = []
    drafts = torch.multinomial(pd, int(n) * ell, replacement=True, generator=gen).view(-1, ell)
    for x in drafts:  # [ℓ] i.i.d. from p_d (drawn in one call: the per-draw cost dominated)
        res = verify_block(draft=x, q=q, p=p, greedy=False, gen=gen)
        toks, _ = commit(x[: res.n_accepted].tolist(), res.appended, ())
        first[toks[0]] += 1
        taus.append(len(toks))
        if res.n_accepted >= 1:
            kinds["accepted draft"] += 1
        elif res.kind == "correction":
            kinds["correction (residual)"] += 1
        else:
            kinds["bonus (+1 token)"] += 1
    return {"freq": first / max(1, n), "n": int(n), "first_kind": kinds,
            "tau": float(np.mean(taus)) if taus else float("nan")}


def rejection_figure(p_t, p_d, labels: Sequence[str], empirical: dict | None = None) -> go.Figure:
    """Left: p_d, p_t, the accepted overlap and the residual. Right: output vs p_t (± 3σ)."""
    pc = rejection_pieces(p_t, p_d)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        f"one draft position: P(accept) = Σ min(p_t, p_d) = {pc['p_accept']:.2f}",
        "what gets committed vs the target p_t"))
    x = list(labels)
    fig.add_bar(x=x, y=pc["p_d"], name="p_d (drafter)", marker_color="#00897b", row=1, col=1)
    fig.add_bar(x=x, y=pc["p_t"], name="p_t (target)", marker_color="#6a1b9a", row=1, col=1)
    fig.add_bar(x=x, y=pc["overlap"], name="min(p_t, p_d): accepted as drafted",
                marker_color="#2e7d32", row=1, col=1)
    fig.add_bar(x=x, y=pc["residual"], name="residual norm(max(p_t − p_d, 0))",
                marker_color="#ef6c00", marker_pattern_shape="/", row=1, col=1)
    fig.add_bar(x=x, y=pc["p_t"], name="p_t (target)", marker_color="#6a1b9a", showlegend=False,
                row=1, col=2, opacity=0.55)
    if empirical is not None:
        f, n = empirical["freq"], max(1, empirical["n"])
        err = 3 * np.sqrt(pc["p_t"] * (1 - pc["p_t"]) / n)
        fig.add_scatter(x=x, y=f, mode="markers", name=f"speculative output ({n:,} draws, ±3σ)",
                        marker=dict(color="#212121", size=12, symbol="diamond"),
                        error_y=dict(type="data", array=err, color="#212121"), row=1, col=2)
    ticks = dict(range=[0, 1.1], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    fig.update_yaxes(title_text="probability", row=1, col=1, **ticks)
    fig.update_yaxes(row=1, col=2, **ticks)
    fig.update_layout(barmode="group", template=_TEMPLATE, height=450, margin=dict(t=95, b=40),
                      legend=dict(orientation="h", y=-0.15, x=0),
                      title=dict(text="Speculative rejection sampling is lossless", x=0.01))
    return fig


def rejection_demo(labels: Sequence[str] = ("A", "B", "C", "D"),
                   p_t: Sequence[float] = (0.5, 0.3, 0.15, 0.05),
                   p_d: Sequence[float] = (0.25, 0.25, 0.25, 0.25), *, samples: int = 20000,
                   seed: int = 0):
    """Sliders for p_t and p_d (normalised), a Sample button, the figure. Returns the widget."""
    import ipywidgets as W
    from IPython.display import display
    gen = torch.Generator().manual_seed(seed)

    def sliders(vals, color):
        return [W.FloatSlider(value=float(v), min=0.0, max=1.0, step=0.01, description=f"{lab}",
                              continuous_update=False, readout_format=".2f",
                              style={"handle_color": color}, layout=W.Layout(width="260px"))
                for lab, v in zip(labels, vals)]

    st, sd = sliders(p_t, "#6a1b9a"), sliders(p_d, "#00897b")
    button = W.Button(description=f"Sample {samples:,}×", icon="dice", button_style="info")
    out = W.Output()
    info = W.HTML()
    state = {"emp": None}

    def redraw(*_):
        pt, pd = [s.value for s in st], [s.value for s in sd]
        if sum(pt) <= 0 or sum(pd) <= 0:
            info.value = "<span style='color:#c62828'>each distribution needs some mass</span>"
            return
        pc = rejection_pieces(pt, pd)
        info.value = (f"P(accept x₁) = {pc['p_accept']:.3f}; on rejection the target token is "
                      f"drawn from the residual. Output = overlap + (1 − P(accept))·residual = p_t.")
        with out:
            out.clear_output(wait=True)
            display(rejection_figure(pt, pd, labels, state["emp"]))

    def sample(_=None):
        state["emp"] = sample_first_token([s.value for s in st], [s.value for s in sd], samples, gen)
        redraw()

    def changed(_):
        state["emp"] = None
        redraw()

    for s in st + sd:
        s.observe(changed, names="value")
    button.on_click(sample)
    sample()
    box = W.VBox([W.HBox([W.VBox([W.HTML("<b>target p_t</b> (normalised)")] + st),
                          W.VBox([W.HTML("<b>drafter p_d</b> (normalised)")] + sd),
                          W.VBox([button, info], layout=W.Layout(width="360px"))]), out])
    box.add_class("dsv-rejection")
    return box


# ----------------------------------------------------------------------------- collision
COLLISION = {"first": ("of", "no"), "second": ("course", "problem")}


def collision_experiment(n: int, gen: torch.Generator) -> dict:
    """The multi-modal collision on a 4-word vocabulary, decoded with the core ``verify_block``.

    Target: "of course" or "no problem", ½ each (so p_t(x2 | x1) is one-hot). A parallel
    drafter only knows the marginals: x1 and x2 independent, ½/½ each. A drafter with a
    first-order Markov head conditions x2 on the sampled x1. Both draft blocks of γ = 2 are
    verified; returns the draft joint distributions and the mean τ (accepted + 1).
    """
    V = 4  # 0 of, 1 no, 2 course, 3 problem
    p1 = torch.tensor([0.5, 0.5, 0.0, 0.0])
    nxt = {0: torch.tensor([0.0, 0.0, 1.0, 0.0]), 1: torch.tensor([0.0, 0.0, 0.0, 1.0])}
    marg2 = torch.tensor([0.0, 0.0, 0.5, 0.5])
    out = {}
    for name in ("parallel", "markov"):
        joint = np.zeros((2, 2))
        taus, acc2 = [], []
        first = torch.multinomial(p1, int(n), replacement=True, generator=gen).tolist()
        second = torch.multinomial(marg2, int(n), replacement=True, generator=gen).tolist()
        for x1, x2 in zip(first, second):
            q2 = marg2 if name == "parallel" else nxt[x1]
            if name == "markov":  # q2 is one-hot on the coherent continuation
                x2 = int(q2.argmax())
            joint[x1, x2 - 2] += 1
            p_t = torch.stack([p1, nxt[x1], torch.full((V,), 1.0 / V)])  # bonus: anything
            res = verify_block(draft=torch.tensor([x1, x2]), q=torch.stack([p1, q2]), p=p_t,
                               greedy=False, gen=gen)
            taus.append(res.n_accepted + 1)
            acc2.append(res.n_accepted >= 2)
        out[name] = {"joint": joint / n, "tau": float(np.mean(taus)),
                     "p_accept_2": float(np.mean(acc2))}
    out["target_joint"] = np.array([[0.5, 0.0], [0.0, 0.5]])
    return out


def collision_figure(res: dict) -> go.Figure:
    words = [f"{a} {b}" for a in COLLISION["first"] for b in COLLISION["second"]]
    fig = go.Figure()
    for key, name, color in (("target_joint", "target", "#6a1b9a"),
                             ("parallel", "parallel drafter (independent positions)", "#ef6c00"),
                             ("markov", "with the Markov head (x₂ sees x₁)", "#1565c0")):
        j = res[key] if key == "target_joint" else res[key]["joint"]
        label = name if key == "target_joint" else f"{name}: τ = {res[key]['tau']:.2f}"
        fig.add_bar(x=words, y=j.ravel(), name=label, marker_color=color,
                    text=[f"{v:.2f}" for v in j.ravel()], textposition="outside")
    fig.update_layout(barmode="group", template=_TEMPLATE, height=420,
                      title=dict(text="Multi-modal collision: P(draft block) for γ = 2<br><sup>"
                                      + TAU_CONVENTION + "</sup>", x=0.01),
                      yaxis=dict(title="probability", range=[0, 0.65]),
                      legend=dict(orientation="h", y=-0.15), margin=dict(t=80))
    return fig


__all__ = ["rejection_pieces", "sample_first_token", "rejection_figure", "rejection_demo",
           "COLLISION", "collision_experiment", "collision_figure"]

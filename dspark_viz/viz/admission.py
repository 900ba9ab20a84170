"""Algorithm 1 one candidate at a time, and the Appendix A counterexample (notebooks 4 and 5).

Scope: ``AdmissionStepper`` (a slider over the sorted candidates (r, j) of the scheduler's
admission path: Θ along the path, where Algorithm 1 stops, the global arg-max, the lengths
ℓ_r), ``pool_views`` (request views drawn from a recorded ``TracePool``), ``cliff_capacity``
(a one-request curve on which the early stop changes real decisions), and the Appendix A
scenario run with a real policy and the core ``verify_block`` (``appendix_a_capacity``,
``appendix_a_trials``, ``appendix_a_figure``). The admission logic is the scheduler's.
ipywidgets and IPython are imported when a widget is built.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dspark_viz.decoding import scheduler as S
from dspark_viz.decoding.policy import RequestView
from dspark_viz.decoding.verify import verify_block
from dspark_viz.load.capacity import CapacityCurve
from dspark_viz.viz.figures import BOTTOM_LEGEND, PALETTE
from dspark_viz.viz.figures import NOTEBOOK_TEMPLATE as _TEMPLATE


# ----------------------------------------------------------------------------- notebook 4
class AdmissionStepper:
    """Algorithm 1 one candidate at a time: slider over the sorted candidates (r, j).

    Shows Θ = τ*·SPS(B) along the path, which candidates Algorithm 1 admits (it stops at the
    first non-improvement), the global arg-max a search without early stop would take, and the
    per-request lengths ℓ_r after the candidates admitted so far. The path panel zooms to a
    window of ``window`` candidates that follows the slider (the whole path stays one
    double-click away), and Play moves in steps that cross the shown path in about
    ``play_frames`` frames, so both stay usable at any R.
    """

    def __init__(self, views, capacity, *, max_show: int = 60, window: int = 40,
                 play_frames: int = 40) -> None:
        import ipywidgets as W
        self.views, self.capacity = list(views), capacity
        self.path = S.admission_path(self.views, capacity)
        self.stop = S.early_stop_count(self.path)
        self.best = S.global_best_count(self.path)
        self.n_show = min(self.path.n, max(self.stop + 3, self.best + 3, min(max_show, self.path.n)))
        self.window = max(4, int(window))
        self.slider = W.IntSlider(value=self.stop, min=0, max=self.n_show,
                                  description="admitted", continuous_update=True,
                                  layout=W.Layout(width="520px"))
        self.play = W.Play(value=0, min=0, max=self.n_show, interval=700, description="Play",
                           step=max(1, math.ceil(self.n_show / max(1, play_frames))))
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.info = W.HTML()
        self.out = W.Output()
        self.slider.observe(lambda _: self.render(), names="value")
        self.widget = W.VBox([W.HBox([self.play, self.slider]), self.info, self.out])
        self.render()

    def shown_range(self, i: int) -> tuple[int, int]:
        """(first, last) path index drawn in the zoomed panel at slider value ``i`` (0 = the
        starting point): a window of ``window`` candidates around ``i``."""
        m = self.n_show
        if m + 1 <= self.window:
            return 0, m
        lo = min(max(0, i - (2 * self.window) // 3), m + 1 - self.window)
        return lo, lo + self.window - 1

    def figure(self, i: int) -> go.Figure:
        p = self.path
        m = self.n_show
        B = [p.R] + p.B[:m].tolist()
        th = [p.theta0] + p.theta[:m].tolist()
        lab = ["nothing admitted"] + [f"(r={r}, j={j}) a={a:.3g}" for r, j, a in
                                      zip(p.r[:m], p.j[:m], p.a[:m])]
        lo, hi = self.shown_range(i)
        zoom = "" if (lo, hi) == (0, m) else f" (candidates {lo}–{hi} of {m}; double-click: all)"
        fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                            subplot_titles=("Θ = τ*·SPS(B) along the admission path" + zoom,
                                            f"ℓ_r after {i} admitted"))
        fig.add_scatter(x=B, y=th, mode="lines", line=dict(color="#b0bec5"), showlegend=False,
                        hoverinfo="skip", row=1, col=1)
        cols = ["#2e7d32" if (0 < k <= self.stop) else ("#9e9e9e" if k == 0 else "#c62828")
                for k in range(m + 1)]
        fig.add_scatter(x=B, y=th, mode="markers", text=lab, name="candidates",
                        marker=dict(color=cols, size=8), showlegend=False,
                        hovertemplate="%{text}<br>B=%{x} Θ=%{y:.6g}<extra></extra>", row=1, col=1)
        fig.add_scatter(x=[B[i]], y=[th[i]], mode="markers", name="current candidate",
                        marker=dict(size=18, symbol="circle-open", color="#212121",
                                    line=dict(width=3)), row=1, col=1)
        fig.add_scatter(x=[B[self.stop]], y=[th[self.stop]], mode="markers",
                        name=f"Algorithm 1 stops here ({self.stop} admitted, green)",
                        marker=dict(size=15, symbol="x", color="#2e7d32"), row=1, col=1)
        if self.best <= m:
            fig.add_scatter(x=[B[self.best]], y=[th[self.best]], mode="markers",
                            name=f"global max of Θ ({self.best}: a search without early stop)",
                            marker=dict(size=15, symbol="star", color="#c62828"), row=1, col=1)
        xs, ys = B[lo: hi + 1], th[lo: hi + 1]
        pad = max(0.3, 0.03 * (xs[-1] - xs[0]))
        span = (max(ys) - min(ys)) or max(abs(ys[0]), 1e-9) * 1e-3
        fig.update_xaxes(range=[xs[0] - pad, xs[-1] + pad],
                         dtick=1 if xs[-1] - xs[0] <= 12 else None, row=1, col=1)
        fig.update_yaxes(range=[min(ys) - 0.08 * span, max(ys) + 0.08 * span], row=1, col=1)
        ell = S.lengths_from(p, i)
        fig.add_bar(x=[f"r{r}" for r in range(p.R)], y=ell, marker_color="#1565c0",
                    showlegend=False, row=1, col=2)
        fig.update_xaxes(title_text="B = verify tokens in the batch", row=1, col=1)
        fig.update_yaxes(title_text="Θ (expected tokens / s)", row=1, col=1)
        fig.update_yaxes(title_text="ℓ_r (draft tokens verified)", dtick=1, row=1, col=2)
        fig.update_layout(template=_TEMPLATE, height=460, legend=BOTTOM_LEGEND,
                          margin=dict(b=110),
                          title=dict(text=f"Algorithm 1 on R = {p.R} request{'s' if p.R > 1 else ''} — "
                                          f"{getattr(self.capacity, 'name', 'capacity')}", x=0.01))
        return fig

    def message(self, i: int) -> str:
        """The line under the slider: candidate i, its Θ and ΔΘ against the previous point."""
        p = self.path
        if i == 0:
            return (f"start: ℓ_r = 0 for all, B = R = {p.R}, τ* = R, Θ₀ = R·SPS(R) = "
                    f"{p.theta0:.6g}")
        prev = p.theta0 if i == 1 else p.theta[i - 2]
        delta = p.theta[i - 1] - prev
        better = delta > 0
        return (f"candidate {i}: (r={p.r[i - 1]}, j={p.j[i - 1]}) with a = {p.a[i - 1]:.3g} → "
                f"B = {p.B[i - 1]}, τ* = {p.tau[i - 1]:.4f}, Θ = {p.theta[i - 1]:.6g}, "
                f"ΔΘ = {delta:+.3g} " + ("(improves)" if better else "(<b>no improvement</b>)")
                + (" — <b>Algorithm 1 admits it</b>" if i <= self.stop else
                   " — beyond the early stop: not admitted"))

    def render(self) -> None:
        from IPython import get_ipython
        from IPython.display import display
        i = int(self.slider.value)
        self.info.value = f"<div style='font-size:14px'>{self.message(i)}</div>"
        if get_ipython() is None:  # plain Python (tests, scripts): nothing to display into
            return
        with self.out:
            self.out.clear_output(wait=True)
            display(self.figure(i))

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def pool_views(pool, R: int, seed: int = 0):
    """R request views (confidences + budget) drawn from a ``TracePool`` (for the demos)."""
    rng = np.random.default_rng(seed)
    rounds = [r for s in pool.sequences for r in s]
    idx = rng.integers(len(rounds), size=R)
    return [RequestView(rounds[i].conf, rounds[i].max_ell) for i in idx]


# ----------------------------------------------------------------------------- notebook 5
def appendix_a_capacity():
    """SPS(1..3) = 1.0, 0.5, 0.45 steps/s (the paper's Appendix A)."""
    sps = {1: 1.0, 2: 0.5, 3: 0.45}
    return CapacityCurve(name="appendix-a", kind="table", batch=tuple(sps),
                         step_ms=tuple(1e3 / v for v in sps.values()))


def cliff_capacity(b_max: int = 16, first: float = 0.75, slope: float = 0.01):
    """A one-request curve with a cliff at the first draft token: SPS(1) = 1 step/s, SPS(2) =
    ``first``, then ``slope`` less per extra token (a step that leaves its cheapest kernel or
    CUDA-graph bucket once it verifies anything, and is nearly flat after).

    Admitting x₁ pays only if a₁ > 1/``first`` − 1 (1/3 by default); a search without early
    stop also admits blocks whose a₁ is below that when enough survival follows — the rounds
    where the early stop matters (notebook 5).
    """
    sps = [1.0] + [first * (1.0 - slope * (b - 2)) for b in range(2, int(b_max) + 1)]
    return CapacityCurve(name=f"cliff-{first:g}", kind="table", batch=tuple(range(1, int(b_max) + 1)),
                         step_ms=tuple(1e3 / v for v in sps))


def appendix_a_trials(policy, n: int, gen: torch.Generator, *, p_t=(0.7, 0.3), p_d=(0.5, 0.5),
                      c1: float = 0.8, c2_if_a: float = 0.9, c2_if_b: float = 0.0) -> dict:
    """One request, γ = 2, vocabulary {A, B}: the Appendix A scenario with a real policy.

    Each trial drafts x1, x2 ~ p_d; the confidence of position 2 depends on the drafted x1
    (c2 = ``c2_if_a`` if x1 = A else ``c2_if_b``), as a Markov confidence head's does; the
    policy picks ℓ from (c1, c2) and the capacity curve; the core ``verify_block`` verifies.
    Returns the frequency of each first output token, of each ℓ, and per x1.
    """
    cap = appendix_a_capacity()
    p = torch.tensor([list(p_t)] * 3, dtype=torch.float32)
    q = torch.tensor([list(p_d)] * 2, dtype=torch.float32)
    first = np.zeros(2)
    ells = np.zeros(3)
    ell_by_x1 = np.zeros((2, 3))
    if hasattr(policy, "reset"):
        policy.reset()
    drafts = torch.multinomial(q[0], int(n) * 2, replacement=True, generator=gen).view(-1, 2)
    for x in drafts:  # x1, x2 ~ p_d
        conf = np.array([c1, c2_if_a if int(x[0]) == 0 else c2_if_b])
        ell = policy.decide([RequestView(conf, 2)], cap)[0].ell
        res = verify_block(draft=x[:ell], q=q[:ell], p=p[: ell + 1], greedy=False, gen=gen)
        y = int(x[0]) if res.n_accepted >= 1 else res.appended
        first[y] += 1
        ells[ell] += 1
        ell_by_x1[int(x[0]), ell] += 1
    return {"policy": policy.name, "lossless": bool(getattr(policy, "lossless", True)),
            "n": int(n), "p_first": (first / n).tolist(), "ell": (ells / n).tolist(),
            "ell_by_x1": (ell_by_x1 / ell_by_x1.sum(1, keepdims=True).clip(min=1)).tolist()}


def appendix_a_figure(results: Sequence[dict], p_t=(0.7, 0.3)) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        f"P(first output token = A) — dashed: target p_t(A) = {p_t[0]}",
        "P(x₁ verified, ℓ ≥ 1 | drafted x₁) — must not depend on x₁"))
    for i, r in enumerate(results):
        n = r["n"]
        err = 3 * math.sqrt(p_t[0] * (1 - p_t[0]) / n)
        col = "#c62828" if not r["lossless"] else PALETTE[i % len(PALETTE)]
        fig.add_bar(x=[r["policy"]], y=[r["p_first"][0]], marker_color=col, showlegend=False,
                    error_y=dict(type="data", array=[err]), text=[f"{r['p_first'][0]:.3f}"],
                    textposition="inside", insidetextanchor="middle",
                    textfont=dict(color="white", size=15), row=1, col=1)
        admitted = [1.0 - r["ell_by_x1"][x][0] for x in (0, 1)]
        fig.add_bar(x=["x₁ = A", "x₁ = B"], y=admitted, name=r["policy"], marker_color=col,
                    text=[f"{v:.2f}" for v in admitted], textposition="outside", row=1, col=2)
    fig.add_hline(y=p_t[0], line_dash="dash", line_color="#6a1b9a", row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(range=[0, 1.12], row=1, col=2)
    fig.update_layout(template=_TEMPLATE, height=460, barmode="group",
                      legend=BOTTOM_LEGEND, margin=dict(b=110),
                      title=dict(text=f"Appendix A simulated ({results[0]['n']:,} trials each; "
                                      "error bars ±3σ around the observed frequency)", x=0.01))
    return fig


__all__ = ["AdmissionStepper", "pool_views", "appendix_a_capacity", "cliff_capacity",
           "appendix_a_trials", "appendix_a_figure"]

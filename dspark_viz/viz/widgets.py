"""Notebook helpers: presets, the step-through widget, tutorial demos and their figures.

Scope: what the tutorial notebooks (``notebooks/``) need beyond the library's own figures —
- ``get_preset``: the notebooks' parameters (model, sample counts), chosen by the
  ``DSPARK_VIZ_NB_PRESET`` environment variable (``embedded`` by default, ``tiny``, ``ci``);
- ``load_tutorial_target`` / ``tutorial_drafters``: the target and the DSpark / DFlash drafters
  of a preset (the shipped drafters for the embedded target — labelled untrained when there is
  none — or tiny drafters trained once with the toolchain CLI and cached on disk);
- ``RoundStepper``: Play / slider / Step / Back over the real rounds of one or more decoding
  lanes (the app's ``Explorer`` state machine, rendering ``viz.figures`` and ``viz.tokens``);
- small, pure tutorial computations and figures that exist nowhere else: rejection sampling on
  a toy vocabulary (through the core ``verify_block``), the multi-modal collision of parallel
  drafting, Markov-head statistics of recorded traces, Algorithm 1 admitted one candidate at a
  time (``AdmissionStepper``), the Appendix A counterexample, and training curves.
Not here: decoding, scheduling, calibration or metric logic (all called from the library).
ipywidgets is imported lazily, so the pure parts work without it.
"""
from __future__ import annotations

import contextlib
import html
import io
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dspark_viz.config import NOTEBOOK_PRESETS, ConfigError, NotebookPreset
from dspark_viz.decoding.trace import TAU_CONVENTION, Trace

ENV_PRESET = "DSPARK_VIZ_NB_PRESET"
PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00897b", "#5d4037")
_TEMPLATE = "plotly_white"


# ----------------------------------------------------------------------------- presets


def get_preset(name: str | None = None, **overrides) -> NotebookPreset:
    """The preset named ``name`` (default: ``$DSPARK_VIZ_NB_PRESET``, else ``embedded``)."""
    key = (name or os.environ.get(ENV_PRESET) or "embedded").strip().lower()
    if key not in NOTEBOOK_PRESETS:
        raise ConfigError(f"unknown notebook preset {key!r} (choose from {', '.join(NOTEBOOK_PRESETS)})")
    return replace(NOTEBOOK_PRESETS[key], **overrides) if overrides else NOTEBOOK_PRESETS[key]


def load_tutorial_target(preset: NotebookPreset, device=None):
    """The preset's target: ``tiny:FAMILY`` (in-process random model) or a ``load_target`` spec."""
    from dspark_viz.targets import load_target
    return load_target(preset.target, device=device)


def tutorial_dir(target, preset: NotebookPreset) -> Path:
    """Where the tiny tutorial drafters live: ``$DSPARK_VIZ_TUTORIAL_DIR`` or the cache dir."""
    from dspark_viz.targets import cache_dir
    root = os.environ.get("DSPARK_VIZ_TUTORIAL_DIR")
    safe = target.name.replace("/", "_").replace(":", "_")
    base = Path(root) if root else cache_dir() / "tutorial"
    return base / f"{safe}-steps{preset.tiny_train_steps}-n{preset.regen_prompts}"


def run_cli(args: Sequence[str], *, quiet: bool = True) -> str:
    """Run ``dspark-viz ARGS`` in this process; return its printed output (raise on failure)."""
    from dspark_viz.cli import main
    buf = io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    out = buf.getvalue()
    if rc != 0:
        raise RuntimeError(f"dspark-viz {' '.join(map(str, args[:2]))} failed: "
                           f"{err.getvalue().strip() or out.strip()}")
    if not quiet:
        print(out, end="")
    return out


def train_tiny_drafters(target_spec: str, out: Path, *, steps: int, n_prompts: int,
                        max_new_tokens: int, kinds: Sequence[str] = ("dspark", "dflash"),
                        log=print) -> dict[str, Path]:
    """The toolchain on a tiny target (prompts → regenerate → cache → train), resumable.

    Each stage is skipped when its output exists, so a second call reuses the drafters.
    Returns kind → drafter directory.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "prompts" / "train.jsonl").exists():
        log(run_cli(["prepare", "prompts", "--source", "builtin:instructions", "--source",
                     "builtin:arithmetic", "--n", n_prompts, "--val-fraction", "0.1", "--out",
                     out / "prompts"]).strip())
    if not (out / "regen.done").exists():  # regenerate itself resumes a partial file
        log(run_cli(["prepare", "regenerate", "--prompts", out / "prompts" / "train.jsonl",
                     "--out", out / "regen.jsonl", "--target", target_spec, "--max-new-tokens",
                     max_new_tokens, "--temperature", "1.0", "--batch-size", "16",
                     "--no-progress"]).strip())
        (out / "regen.done").write_text("ok")
    if not (out / "cache" / "manifest.json").exists():  # the cache resumes completed shards
        log(run_cli(["prepare", "cache", "--samples", out / "regen.jsonl", "--out", out / "cache",
                     "--target", target_spec, "--no-progress"]).strip())
    paths = {}
    for kind in kinds:
        run = out / f"run-{kind}"
        if not (run / "drafter" / "model.safetensors").exists():
            log(run_cli(["train", "--cache", out / "cache", "--target", target_spec, "--out", run,
                         "--method", kind, "--steps", steps, "--log-every", max(1, steps // 10),
                         "--ckpt-every", steps, "--keep-ckpts", "1", "--no-progress"]).strip())
        paths[kind] = run / "drafter"
    return paths


def tutorial_drafters(target, preset: NotebookPreset, kinds: Sequence[str] = ("dspark", "dflash"),
                      log=print) -> dict[str, tuple[object, str]]:
    """kind → (drafter, label) for the preset's target.

    Tiny targets: drafters trained once by ``train_tiny_drafters`` (cached under
    ``$DSPARK_VIZ_CACHE/tutorial``). Other targets: the shipped drafter of that kind when one
    is installed, else an untrained one — the label says so.
    """
    from dspark_viz.drafter.model import DSparkDrafter
    from dspark_viz.drafter.registry import resolve_drafter
    out = {}
    if preset.is_tiny:
        d = tutorial_dir(target, preset)
        paths = train_tiny_drafters(preset.target, d, steps=preset.tiny_train_steps,
                                    n_prompts=preset.regen_prompts,
                                    max_new_tokens=preset.regen_tokens, kinds=kinds, log=log)
        for kind, p in paths.items():
            out[kind] = (DSparkDrafter.from_pretrained(p, target=target),
                         f"{kind} (tiny, trained {preset.tiny_train_steps} steps)")
        return out
    for kind in kinds:
        drafter, label = resolve_drafter("default", target, kind=kind)
        if kind == "dflash" and drafter is not None and drafter.markov is not None:
            label += " (run with the Markov head off)"
        out[kind] = (drafter, label)
    return out


def tutorial_prompts(preset: NotebookPreset) -> dict[str, list[str]]:
    """The evaluator's built-in prompt sets, ``prompts_per_set`` each."""
    from dspark_viz.eval.prompts import builtin_sets
    return {k: v[: preset.prompts_per_set] for k, v in builtin_sets().items()}


# ----------------------------------------------------------------------------- step-through
PANELS = ("summary", "text", "draft", "confidence", "admission", "verify", "tau", "position",
          "metrics")


def _lane_of(name: str, src):
    from dspark_viz.viz.app_state import Lane
    if isinstance(src, Trace):
        return Lane(name, name, src, None)
    if not getattr(src, "prompt_ids", None):
        raise ConfigError(f"lane {name!r}: prefill the session before stepping it")
    return Lane(name, getattr(src, "drafter_name", name) or name, src.trace(), src)


class RoundStepper:
    """Play / round slider / Step / Back over the real rounds of decoding lanes.

    ``lanes``: name → a prefilled ``SpecSession`` (Step runs new rounds on it) or a recorded
    ``Trace``. The first lane drives the per-round figures; every lane's text is shown, and the
    metrics table compares them (a lane named ``plain`` gives the speedup column). ``panels``
    chooses among ``PANELS``; ``sps`` (a capacity curve) adds SPS(B) to the admission panel.
    ``prefetch`` rounds are computed up front so Play has something to play.
    """

    def __init__(self, lanes: dict, *, panels: Sequence[str] = ("summary", "text", "draft",
                                                                   "verify"),
                 sps=None, prefetch: int = 0, interval_ms: int = 900, title: str = "") -> None:
        import ipywidgets as W
        from dspark_viz.viz.app_state import Explorer
        bad = [p for p in panels if p not in PANELS]
        if bad or not lanes:
            raise ConfigError(f"unknown panels {bad} (choose from {PANELS})" if bad else
                              "RoundStepper needs at least one lane")
        self.panels = tuple(panels)
        self.sps = sps
        self.title = title
        self.explorer = Explorer([_lane_of(n, s) for n, s in lanes.items()])
        self._render_count = 0
        if prefetch:
            self._extend_to(prefetch)
        n = self.explorer.total_rounds
        self.play = W.Play(value=0, min=0, max=n, step=1, interval=interval_ms,
                           description="Play", layout=W.Layout(width="auto"))
        self.slider = W.IntSlider(value=0, min=0, max=n, description="rounds",
                                  continuous_update=False, layout=W.Layout(width="420px"))
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.step_button = W.Button(description="Step", icon="step-forward",
                                    tooltip="run / show one more round", button_style="primary",
                                    layout=W.Layout(width="90px"))
        self.back_button = W.Button(description="Back", icon="step-backward",
                                    layout=W.Layout(width="90px"))
        self.status = W.HTML()
        self.status.add_class("dsv-status")
        self.summary = W.HTML()
        self.text = W.HTML()
        self.out = W.Output()
        self.step_button.on_click(lambda _: self.step())
        self.back_button.on_click(lambda _: self.back())
        self.slider.observe(self._on_slider, names="value")
        head = [W.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.widget = W.VBox(head + [W.HBox([self.play, self.back_button, self.step_button,
                                             self.slider, self.status]),
                                     self.summary, self.text, self.out],
                             layout=W.Layout(width="100%"))
        self.widget.add_class("dsv-stepper")
        self.render()

    # ------------------------------------------------------------------ state
    @property
    def cursor(self) -> int:
        return self.explorer.cursor

    @property
    def lanes(self):
        return self.explorer.lanes

    def _extend_to(self, n: int) -> None:
        from dspark_viz.viz.app_state import extend_live
        while self.explorer.total_rounds < n and self.explorer.extendable:
            if not extend_live(self.explorer):
                break

    def step(self) -> int:
        """One round forward (computing it on the live sessions when needed)."""
        from dspark_viz.viz.app_state import extend_live
        moved = self.explorer.forward(1, extend_live)
        self._sync()
        return moved

    def back(self) -> None:
        self.explorer.back(1)
        self._sync()

    def seek(self, i: int) -> None:
        self.explorer.seek(i)
        self._sync()

    def _sync(self) -> None:
        n = self.explorer.total_rounds
        self.play.max = n
        self.slider.max = n
        if self.slider.value != self.explorer.cursor:
            self.slider.value = self.explorer.cursor  # triggers render
        else:
            self.render()

    def _on_slider(self, change) -> None:
        self.explorer.seek(int(change["new"]))
        self.render()

    # ------------------------------------------------------------------ rendering
    def figures(self) -> list[go.Figure]:
        """The figures of the current cursor position (pure; also used by the tests)."""
        from dspark_viz.viz import figures as F
        lane = self.explorer.main
        tr, i = lane.trace, self.explorer.upto(lane) - 1
        upto = self.explorer.upto(lane)
        figs = []
        for p in self.panels:
            if p == "draft":
                figs.append(F.draft_block_figure(tr, i))
            elif p == "confidence":
                figs.append(F.confidence_figure(tr, i))
            elif p == "admission":
                figs.append(F.admission_figure(tr, i, sps=self.sps.sps if self.sps is not None
                                               else None))
            elif p == "verify":
                figs.append(F.verify_figure(tr, i))
            elif p == "tau":
                figs.append(F.tau_figure(tr, upto))
            elif p == "position":
                figs.append(F.position_figure(tr, upto))
        return figs

    def text_html(self) -> str:
        from dspark_viz.viz import figures as F
        from dspark_viz.viz.tokens import CSS, legend_html, tokens_html
        parts = []
        if "text" in self.panels:
            parts.append(f"<style>{CSS}</style>{legend_html()}")
            for lane in self.lanes:
                parts.append(f"<div style='margin-top:4px'><b>{html.escape(lane.name)}</b> "
                             f"<span style='color:#616161'>({html.escape(lane.label)})</span></div>"
                             + tokens_html(lane.trace, self.explorer.upto(lane)))
        if "metrics" in self.panels:
            parts.append(F.metrics_html([(l.name, l.trace, self.explorer.upto(l))
                                         for l in self.lanes]))
        return "".join(parts)

    def render(self) -> None:
        from IPython.display import display
        from dspark_viz.viz import figures as F
        ex = self.explorer
        lane = ex.main
        more = " · Step computes the next one" if ex.extendable else " · finished"
        self.status.value = (f"<span style='color:#424242'>showing {ex.cursor} of "
                             f"{ex.total_rounds} rounds{more}</span>")
        self.summary.value = (F.round_summary_html(lane.trace, ex.upto(lane) - 1)
                              if "summary" in self.panels and ex.cursor > 0 else
                              ("<div>after prefill: press Step or Play</div>"
                               if "summary" in self.panels else ""))
        self.text.value = self.text_html()
        self._render_count += 1
        from IPython import get_ipython
        if get_ipython() is None:  # plain Python (tests, scripts): nothing to display into
            return
        with self.out:
            self.out.clear_output(wait=True)
            for fig in self.figures():
                display(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def live_session(target, drafter, prompt, *, label: str = "", policy=None, capacity=None,
                 background=None, **cfg):
    """A prefilled ``SpecSession`` (keyword ``cfg`` goes to ``DecodeConfig``)."""
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    s = SpecSession(target, drafter, DecodeConfig(**cfg), policy=policy, capacity=capacity,
                    background=background, drafter_name=label)
    s.prefill(prompt)
    return s


# ----------------------------------------------------------------------------- notebook 1
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
    from dspark_viz.decoding.verify import commit, verify_block
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


# ----------------------------------------------------------------------------- notebook 2
COLLISION = {"first": ("of", "no"), "second": ("course", "problem")}


def collision_experiment(n: int, gen: torch.Generator) -> dict:
    """The multi-modal collision on a 4-word vocabulary, decoded with the core ``verify_block``.

    Target: "of course" or "no problem", ½ each (so p_t(x2 | x1) is one-hot). A parallel
    drafter only knows the marginals: x1 and x2 independent, ½/½ each. A drafter with a
    first-order Markov head conditions x2 on the sampled x1. Both draft blocks of γ = 2 are
    verified; returns the draft joint distributions and the mean τ (accepted + 1).
    """
    from dspark_viz.decoding.verify import verify_block
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


def markov_stats(traces: Sequence[Trace]) -> dict:
    """Per draft position k over recorded DSpark rounds: how often the Markov head changed the
    top-1 candidate, the mean largest boost and the mean strongest suppression it applied."""
    from dspark_viz.viz.figures import markov_changed
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
    from dspark_viz.viz.figures import markov_changed
    for r in trace.rounds:
        if any(markov_changed(r)):
            return r.index
    return 0


# ----------------------------------------------------------------------------- notebook 4
class AdmissionStepper:
    """Algorithm 1 one candidate at a time: slider over the sorted candidates (r, j).

    Shows Θ = τ*·SPS(B) along the path, which candidates Algorithm 1 admits (it stops at the
    first non-improvement), the global arg-max a search without early stop would take, and the
    per-request lengths ℓ_r after the candidates admitted so far.
    """

    def __init__(self, views, capacity, *, max_show: int = 60) -> None:
        import ipywidgets as W
        from dspark_viz.decoding import scheduler as S
        self.views, self.capacity = list(views), capacity
        self.path = S.admission_path(self.views, capacity)
        self.stop = S.early_stop_count(self.path)
        self.best = S.global_best_count(self.path)
        self.S = S
        self.n_show = min(self.path.n, max(self.stop + 3, min(max_show, self.path.n)))
        self.slider = W.IntSlider(value=self.stop, min=0, max=self.n_show,
                                  description="admitted", continuous_update=True,
                                  layout=W.Layout(width="520px"))
        self.play = W.Play(value=0, min=0, max=self.n_show, interval=700, description="Play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.info = W.HTML()
        self.out = W.Output()
        self.slider.observe(lambda _: self.render(), names="value")
        self.widget = W.VBox([W.HBox([self.play, self.slider]), self.info, self.out])
        self.render()

    def figure(self, i: int) -> go.Figure:
        p = self.path
        m = self.n_show
        B = [p.R] + p.B[:m].tolist()
        th = [p.theta0] + p.theta[:m].tolist()
        lab = ["nothing admitted"] + [f"(r={r}, j={j}) a={a:.3f}" for r, j, a in
                                      zip(p.r[:m], p.j[:m], p.a[:m])]
        fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                            subplot_titles=("Θ = τ*·SPS(B) along the admission path",
                                            f"ℓ_r after {i} admitted"))
        fig.add_scatter(x=B, y=th, mode="lines", line=dict(color="#b0bec5"), showlegend=False,
                        hoverinfo="skip", row=1, col=1)
        cols = ["#2e7d32" if (0 < k <= self.stop) else ("#9e9e9e" if k == 0 else "#c62828")
                for k in range(m + 1)]
        fig.add_scatter(x=B, y=th, mode="markers", text=lab, name="candidates",
                        marker=dict(color=cols, size=8), showlegend=False,
                        hovertemplate="%{text}<br>B=%{x} Θ=%{y:.4g}<extra></extra>", row=1, col=1)
        fig.add_scatter(x=[B[i]], y=[th[i]], mode="markers", name="current candidate",
                        marker=dict(size=18, symbol="circle-open", color="#212121",
                                    line=dict(width=3)), row=1, col=1)
        fig.add_scatter(x=[B[self.stop]], y=[th[self.stop]], mode="markers",
                        name="Algorithm 1 stops here (green: admitted)",
                        marker=dict(size=15, symbol="x", color="#2e7d32"), row=1, col=1)
        if self.best <= m:
            fig.add_scatter(x=[B[self.best]], y=[th[self.best]], mode="markers",
                            name="global max of Θ (a search without early stop)",
                            marker=dict(size=15, symbol="star", color="#c62828"), row=1, col=1)
        pad = max(0.3, 0.03 * (B[-1] - B[0]))
        fig.update_xaxes(range=[B[0] - pad, B[-1] + pad], dtick=1 if B[-1] - B[0] <= 12 else None,
                         row=1, col=1)
        ell = self.S.lengths_from(p, i)
        fig.add_bar(x=[f"r{r}" for r in range(p.R)], y=ell, marker_color="#1565c0",
                    showlegend=False, row=1, col=2)
        fig.update_xaxes(title_text="B = verify tokens in the batch", row=1, col=1)
        fig.update_yaxes(title_text="Θ (expected tokens / s)", row=1, col=1)
        fig.update_yaxes(title_text="ℓ_r (draft tokens verified)", dtick=1, row=1, col=2)
        fig.update_layout(template=_TEMPLATE, height=420, legend=dict(orientation="h", y=-0.2),
                          title=dict(text=f"Algorithm 1 on R = {p.R} request{'s' if p.R > 1 else ''} — "
                                          f"{getattr(self.capacity, 'name', 'capacity')}", x=0.01))
        return fig

    def render(self) -> None:
        from IPython.display import display
        i = int(self.slider.value)
        p = self.path
        if i == 0:
            msg = (f"start: ℓ_r = 0 for all, B = R = {p.R}, τ* = R, Θ₀ = R·SPS(R) = "
                   f"{p.theta0:.4g}")
        else:
            prev = p.theta0 if i == 1 else p.theta[i - 2]
            better = p.theta[i - 1] > prev
            msg = (f"candidate {i}: (r={p.r[i - 1]}, j={p.j[i - 1]}) with a = {p.a[i - 1]:.3f} → "
                   f"B = {p.B[i - 1]}, τ* = {p.tau[i - 1]:.3f}, Θ = {p.theta[i - 1]:.4g} "
                   + ("> " if better else "≤ ") + f"{prev:.4g} "
                   + ("(improves)" if better else "(<b>no improvement</b>)")
                   + (" — <b>Algorithm 1 admits it</b>" if i <= self.stop else
                      " — beyond the early stop: not admitted"))
        self.info.value = f"<div style='font-size:14px'>{msg}</div>"
        with self.out:
            self.out.clear_output(wait=True)
            display(self.figure(i))

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def pool_views(pool, R: int, seed: int = 0):
    """R request views (confidences + budget) drawn from a ``TracePool`` (for the demos)."""
    from dspark_viz.decoding.policy import RequestView
    rng = np.random.default_rng(seed)
    rounds = [r for s in pool.sequences for r in s]
    idx = rng.integers(len(rounds), size=R)
    return [RequestView(rounds[i].conf, rounds[i].max_ell) for i in idx]


# ----------------------------------------------------------------------------- notebook 5
def appendix_a_capacity():
    """SPS(1..3) = 1.0, 0.5, 0.45 steps/s (the paper's Appendix A)."""
    from dspark_viz.load.capacity import CapacityCurve
    sps = {1: 1.0, 2: 0.5, 3: 0.45}
    return CapacityCurve(name="appendix-a", kind="table", batch=tuple(sps),
                         step_ms=tuple(1e3 / v for v in sps.values()))


def appendix_a_trials(policy, n: int, gen: torch.Generator, *, p_t=(0.7, 0.3), p_d=(0.5, 0.5),
                      c1: float = 0.8, c2_if_a: float = 0.9, c2_if_b: float = 0.0) -> dict:
    """One request, γ = 2, vocabulary {A, B}: the Appendix A scenario with a real policy.

    Each trial drafts x1, x2 ~ p_d; the confidence of position 2 depends on the drafted x1
    (c2 = ``c2_if_a`` if x1 = A else ``c2_if_b``), as a Markov confidence head's does; the
    policy picks ℓ from (c1, c2) and the capacity curve; the core ``verify_block`` verifies.
    Returns the frequency of each first output token, of each ℓ, and per x1.
    """
    from dspark_viz.decoding.policy import RequestView
    from dspark_viz.decoding.verify import verify_block
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
    fig.update_layout(template=_TEMPLATE, height=420, barmode="group",
                      legend=dict(orientation="h", y=-0.2),
                      title=dict(text=f"Appendix A simulated ({results[0]['n']:,} trials each; "
                                      "error bars ±3σ around the observed frequency)", x=0.01))
    return fig


# ----------------------------------------------------------------------------- notebook 6
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
    fig.update_layout(template=_TEMPLATE, height=400, legend=dict(orientation="h", y=-0.22),
                      title=dict(text="Training curves (metrics.jsonl)", x=0.01))
    return fig


__all__ = ["NotebookPreset", "NOTEBOOK_PRESETS", "get_preset", "load_tutorial_target", "tutorial_drafters",
           "train_tiny_drafters", "tutorial_prompts", "run_cli", "RoundStepper", "PANELS",
           "live_session", "rejection_pieces", "sample_first_token", "rejection_figure",
           "rejection_demo", "collision_experiment", "collision_figure", "markov_stats",
           "markov_figure", "first_markov_round", "AdmissionStepper", "pool_views",
           "appendix_a_capacity", "appendix_a_trials", "appendix_a_figure", "read_metrics",
           "training_curves_figure"]

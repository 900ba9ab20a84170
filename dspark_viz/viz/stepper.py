"""The notebooks' step-through widget over real decoding rounds (``RoundStepper``).

Scope: Play / round slider / Step / Back over one or more lanes — prefilled ``SpecSession``s
(Step computes new rounds) or recorded ``Trace``s — on the app's ``Explorer`` state machine,
showing the panels of ``viz.panels`` chosen by name (HTML panels in one block, figures below).
ipywidgets and IPython are imported when a widget is built, so the module imports without them.
"""
from __future__ import annotations

import html
from typing import Sequence

import plotly.graph_objects as go

from dspark_viz.config import ConfigError
from dspark_viz.decoding.trace import Trace
from dspark_viz.viz.app_state import Explorer, Lane, extend_live
from dspark_viz.viz.panels import PANEL_NAMES, View, panels_named, view_of
from dspark_viz.viz.tokens import CSS, legend_html

PANELS = PANEL_NAMES  # the names ``RoundStepper(panels=...)`` chooses from


def _lane_of(name: str, src) -> Lane:
    if isinstance(src, Trace):
        return Lane(name, name, src, None)
    if not getattr(src, "prompt_ids", None):
        raise ConfigError(f"lane {name!r}: prefill the session before stepping it")
    return Lane(name, getattr(src, "drafter_name", name) or name, src.trace(), src)


def first_differing_round(traces: Sequence[Trace], start: int = 0) -> int:
    """Index of the first round (from ``start``) where the lanes verified different ℓ, or
    accepted different counts; ``start`` when they never differ. Round i is shown at cursor
    i + 1 (``RoundStepper.seek``)."""
    n = min(len(t.rounds) for t in traces) if traces else 0
    for i in range(start, n):
        rs = [t.rounds[i] for t in traces]
        if len({(len(r.verify), r.n_accepted) for r in rs}) > 1:
            return i
    return start


class RoundStepper:
    """Play / round slider / Step / Back over the real rounds of decoding lanes.

    ``lanes``: name → a prefilled ``SpecSession`` (Step runs new rounds on it) or a recorded
    ``Trace``. The first lane drives the per-round figures; ``text`` shows it, ``lanes`` the
    others, and ``metrics`` compares them all (a lane named ``plain`` gives the speedup
    column). ``panels`` chooses among ``PANELS`` (shown in the order given); ``sps`` (a
    capacity curve) draws SPS(B) in the admission panel when the trace carries no curve.
    ``prefetch`` rounds are computed up front so Play has something to play.
    """

    def __init__(self, lanes: dict, *, panels: Sequence[str] = ("summary", "text", "draft",
                                                                   "verify"),
                 sps=None, prefetch: int = 0, interval_ms: int = 900, title: str = "") -> None:
        if not lanes:
            raise ConfigError("RoundStepper needs at least one lane")
        self.chosen = panels_named(panels)
        self.panels = tuple(panels)
        self.sps = sps
        self.title = title
        self.explorer = Explorer([_lane_of(n, s) for n, s in lanes.items()])
        self._render_count = 0
        if prefetch:
            self._extend_to(prefetch)
        self._build_widget(interval_ms)
        self.render()

    def _build_widget(self, interval_ms: int) -> None:
        import ipywidgets as W
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
        self.text = W.HTML()
        self.out = W.Output()
        self.step_button.on_click(lambda _: self.step())
        self.back_button.on_click(lambda _: self.back())
        self.slider.observe(self._on_slider, names="value")
        head = [W.HTML(f"<b>{html.escape(self.title)}</b>")] if self.title else []
        self.widget = W.VBox(head + [W.HBox([self.play, self.back_button, self.step_button,
                                             self.slider, self.status]),
                                     self.text, self.out],
                             layout=W.Layout(width="100%"))
        self.widget.add_class("dsv-stepper")

    # ------------------------------------------------------------------ state
    @property
    def cursor(self) -> int:
        return self.explorer.cursor

    @property
    def lanes(self):
        return self.explorer.lanes

    def _extend_to(self, n: int) -> None:
        while self.explorer.total_rounds < n and self.explorer.extendable:
            if not extend_live(self.explorer):
                break

    def step(self) -> int:
        """One round forward (computing it on the live sessions when needed)."""
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
    def view(self) -> View:
        return view_of(self.explorer, big=False,
                       sps=self.sps.sps if self.sps is not None else None)

    def figures(self) -> list[go.Figure]:
        """The figures of the current cursor position (pure; also used by the tests)."""
        v = self.view()
        return [p.render(v) for p in self.chosen if p.kind == "plot"]

    def text_html(self) -> str:
        """The HTML panels at the cursor, under the token CSS and (with text) the legend."""
        v = self.view()
        tokens = any(p.name in ("text", "lanes") for p in self.chosen)
        head = f"<style>{CSS}</style>" + (legend_html() if tokens else "")
        return head + "".join(p.render(v) for p in self.chosen if p.kind == "html")

    def render(self) -> None:
        from IPython import get_ipython
        from IPython.display import display
        ex = self.explorer
        more = " · Step computes the next one" if ex.extendable else " · finished"
        where = (f"round {ex.cursor} of {ex.total_rounds}" if ex.cursor else
                 f"after prefill (round 0) · {ex.total_rounds} rounds computed")
        self.status.value = f"<span style='color:#424242'>{where}{more}</span>"
        self.text.value = self.text_html()
        self._render_count += 1
        if get_ipython() is None:  # plain Python (tests, scripts): nothing to display into
            return
        with self.out:
            self.out.clear_output(wait=True)
            for fig in self.figures():
                display(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


__all__ = ["RoundStepper", "PANELS", "first_differing_round"]

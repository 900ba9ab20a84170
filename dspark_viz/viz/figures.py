"""Figures of one decoding round and of a run so far: ``Trace`` → plotly figures (pure).

Scope: the round panels of the app and notebooks — the draft block (backbone top candidates,
Markov bias boosted/suppressed, corrected top candidates, where the Markov head changed the
choice), confidence (raw and calibrated c_k, survival a_k, chosen ℓ), the scheduler's
admission path Θ(B) (and the capacity curve SPS(B) with the operating point when a curve is
given), verification per position (p_t, p_d, ratio, uniform draw, decision), τ per round and
the metric table with definitions. Each function reads a trace (and a round index) and
returns a new figure or HTML string; no model, no I/O, no Gradio. Figures are built from
plain dicts and wrapped without plotly's per-property validation (it dominated the cost).
Load-sweep figures live in ``viz.load_figures``; evaluation figures in ``viz.eval_figures``;
which panel shows which figure, in ``viz.panels``. ``PALETTE``/``NOTEBOOK_TEMPLATE`` style the
notebooks' own figures.
"""
from __future__ import annotations

import html
import math

import plotly.graph_objects as go

from dspark_viz.decoding.trace import TAU_CONVENTION, Round, Trace
from dspark_viz.eval.metrics import DEFINITIONS, position_stats
from dspark_viz.viz.tokens import appended_fate, round_no

COLORS = {"accepted": "#2e7d32", "rejected": "#c62828", "dropped": "#9e9e9e",
          "correction": "#ef6c00", "bonus": "#1565c0", "raw": "#90caf9", "cal": "#1565c0",
          "p_t": "#6a1b9a", "p_d": "#00897b", "ratio": "#212121", "u": "#ef6c00",
          "live": "#6a1b9a"}  # live: the request a trace follows, among the R of a batch


# a compact white template (the named plotly templates would need validation to resolve)
_AX = {"gridcolor": "#e6e6e6", "linecolor": "#9e9e9e", "zerolinecolor": "#bdbdbd",
       "ticks": "outside", "tickcolor": "#9e9e9e", "automargin": True}
TEMPLATE = {"layout": {"xaxis": _AX, "yaxis": _AX, "hoverlabel": {"align": "left"},
                       "colorway": ["#1565c0", "#ef6c00", "#2e7d32", "#c62828", "#6a1b9a",
                                    "#00897b", "#5d4037", "#546e7a"]}}
# the notebooks' own figures (validated plotly figures): a named template, one colour per run
NOTEBOOK_TEMPLATE = "plotly_white"
PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00897b", "#5d4037")
# a horizontal legend at the very bottom of the figure, below the x-axis titles (with a bottom
# margin of about 110 px for one or two rows of entries)
BOTTOM_LEGEND = {"orientation": "h", "yref": "container", "y": 0.01, "yanchor": "bottom", "x": 0}


# ----------------------------------------------------------------------------- helpers
def plain_token(text: str, limit: int = 12) -> str:
    """Token text for plotly labels: visible whitespace/controls, HTML-escaped, shortened."""
    if text == "":
        return "∅"
    out = []
    for ch in text:
        if ch == " ":
            out.append("·")
        elif ch == "\n":
            out.append("⏎")
        elif ch == "\t":
            out.append("→")
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"0x{ord(ch):02x}")
        else:
            out.append(ch)
    s = "".join(out)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=False)  # plotly decodes &amp; &lt; &gt; but not &quot;


def _font(big: bool) -> dict:
    return {"size": 20 if big else 13, "family": "system-ui, sans-serif", "color": "#212121"}


def _layout(title: str, big: bool, height: int, **kw) -> dict:
    lay = {"title": {"text": title, "x": 0.01, "xanchor": "left",
                     "font": {"size": 22 if big else 15}},
           "font": _font(big), "template": TEMPLATE, "height": int(height * (1.3 if big else 1)),
           "margin": {"l": 60, "r": 30, "t": 80 if big else 70, "b": 150},
           "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
           # at the bottom of the figure (container coordinates), below the x-axis title
           "legend": {"orientation": "h", "yref": "container", "y": 0.005, "yanchor": "bottom",
                      "x": 0}}
    lay.update(kw)
    return lay


def _fig(data: list[dict], layout: dict) -> go.Figure:
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def _wrap(text: str, width: int = 48) -> str:
    """Escape and break a long line at spaces with <br> (plotly does not wrap text)."""
    lines, cur = [], ""
    for w in text.split(" "):
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return "<br>".join(html.escape(x) for x in lines)


SUBTITLE_CHARS = 56  # a subtitle line (<sup>, 70 % of the title font) fits a ~450 px column
LINE_SPACING = 1.3  # plotly's line height, in font sizes, of a multi-line text
TITLE_PAD = 30  # px between the top of the figure and its title: below the panel's label badge


def _title2(main: str, detail: str, width: int = SUBTITLE_CHARS) -> str:
    """A short title with smaller detail lines below it (wrapped at ``width`` characters, so it
    stays readable in half-width panels)."""
    if not detail:
        return main
    return main + "".join(f"<br><sup>{line}</sup>" for line in _wrap(detail, width).split("<br>"))


def _text_lines(text: str) -> int:
    return text.count("<br>") + 1


def _top_block(lay: dict, big: bool, note_lines: int = 0) -> None:
    """Pin the title to the top of the figure (in pixels) and make the top margin hold all of its
    lines plus ``note_lines`` lines of notes placed right above the plot area (``yref`` paper,
    ``y`` 1, ``yanchor`` bottom, ``yshift`` 4): the note can never run into the title."""
    t = lay["title"]
    size = t["font"]["size"]
    # plotly anchors a multi-line title ≈ 0.7 of its font size higher than a one-line one
    # (measured in Chromium: 16 px instead of 27 from the top at 15 px, 10 instead of 25 at
    # 22 px), which put the first line under the panel's label badge: pad it back down
    pad = TITLE_PAD + (math.ceil(0.7 * size) if _text_lines(t["text"]) > 1 else 0)
    t.update(yref="container", y=1, yanchor="top", pad={"t": pad})
    need = (pad + _text_lines(t["text"]) * size * LINE_SPACING
            + note_lines * (13 if big else 10) * LINE_SPACING + 10)
    lay["margin"]["t"] = max(lay["margin"]["t"], math.ceil(need))


def _top_note(lay: dict, big: bool, text: str, **style) -> dict:
    """A note of wrapped lines right above the plot area, under the title (``_top_block`` makes
    the top margin hold both); returns the annotation."""
    text = _wrap(text, SUBTITLE_CHARS)
    _top_block(lay, big, _text_lines(text))
    return {"text": text, "showarrow": False, "xref": "paper", "yref": "paper",
            "x": 0, "y": 1, "xanchor": "left", "yanchor": "bottom", "yshift": 4, "align": "left",
            "font": {"size": 13 if big else 10, "color": "#424242"}, **style}


def _density(n: int) -> int:
    """How crowded ``n`` positions on one axis are in a ~450 px column: 0 (≤ 8), 1 (≤ 12), 2."""
    return 0 if n <= 8 else 1 if n <= 12 else 2


def message_figure(title: str, text: str, *, big: bool = False, height: int = 260) -> go.Figure:
    """An empty panel carrying one explanation (no data for this view)."""
    lay = _layout(title, big, height, xaxis={"visible": False}, yaxis={"visible": False},
                  annotations=[{"text": _wrap(text), "showarrow": False, "x": 0.5, "y": 0.5,
                                "xref": "paper", "yref": "paper", "font": _font(big)}])
    _top_block(lay, big)
    return _fig([], lay)


def _round(trace: Trace, i: int) -> Round | None:
    if not trace.rounds or i < 0:
        return None
    return trace.rounds[min(i, len(trace.rounds) - 1)]


def position_fates(r: Round) -> list[str]:
    """Per draft position k: accepted / rejected / unreached / dropped."""
    out = []
    for k in range(len(r.draft)):
        if k < len(r.verify):
            v = r.verify[k]
            if v.accepted:
                out.append("accepted")
            elif k == r.n_accepted:
                out.append("rejected")
            else:
                out.append("unreached")  # verified after the first rejection: discarded
        else:
            out.append("dropped")
    return out


_FATE_MARK = {"accepted": "✓", "rejected": "✗", "unreached": "·", "dropped": "–"}


def markov_changed(r: Round) -> list[bool]:
    """Per draft position: the Markov head changed the top-1 candidate (U_k vs U_k + B_k)."""
    return [bool(d.base_topk and d.corrected_topk and d.boosted + d.suppressed
                 and d.base_topk[0].token != d.corrected_topk[0].token) for d in r.draft]


# ----------------------------------------------------------------------------- draft block
def draft_block_figure(trace: Trace, i: int, *, big: bool = False, top: int = 4,
                       n_bias: int = 3) -> go.Figure:
    """Per draft position: backbone top candidates, Markov bias, corrected top candidates.

    Three stacked heatmaps share the position axis; cell text is the candidate token and its
    probability (T = 1) or bias. The sampled token x_k is boxed in the corrected block — when
    sampling drew it from outside the ``top`` corrected candidates, in one more row below them
    (its rank and the probability it was drawn with); ★ marks positions where the Markov head
    changed the top-1 choice; tick labels carry the fate of x_k (✓ accepted, ✗ rejected,
    · discarded after a rejection, – dropped).
    """
    title = "Draft block"
    r = _round(trace, i)
    if r is None or not r.draft:
        why = "plain decoding: the target alone, no draft" if (r is not None or trace.meta.mode == "ar") \
            else "no round yet: press Step"
        return message_figure(title, why, big=big)
    fates = position_fates(r)
    xs = list(range(1, len(r.draft) + 1))
    dense = _density(len(xs))  # γ up to 16: the fate under the position, smaller cells
    # the fate and the ★ on a line of their own under x_k (one line each when crowded): side by
    # side, "x5 ✓ ★" runs into the next position's label at γ = 7
    tick = [f"x{k}<br>{_FATE_MARK[f]}" + (("<br>★" if dense else " ★") if c else "")
            for k, f, c in zip(xs, fates, markov_changed(r))]
    rows = _draft_rows(any(d.boosted or d.suppressed for d in r.draft))
    outside = any(_sampled_rank(d, top) is None for d in r.draft)  # x_k beyond the top rows
    sizes = [2 * n_bias if kind == "bias" else top + (kind == "corr" and outside)
             for kind, _ in rows]
    lay = _layout(f"{title} — round {round_no(r)} (γ={len(r.draft)}, ℓ={len(r.verify)}, accepted "
                  f"{r.n_accepted})", big, 160 + 38 * sum(sizes), showlegend=False)
    lay["margin"]["l"] = 150 if not big else 200
    data: list[dict] = []
    for ri, ((kind, label), domain) in enumerate(zip(rows, _stacked_domains(sizes))):
        ax = "" if ri == 0 else str(ri + 1)
        extra = kind == "corr" and outside
        lay[f"yaxis{ax}"] = _draft_yaxis(kind, label, domain, top, n_bias, big, extra)
        lay[f"xaxis{ax}"] = {"anchor": f"y{ax}", "tickvals": xs, "ticktext": tick,
                             "showticklabels": ri == len(rows) - 1, "showgrid": False,
                             "matches": "x" if ri else None}
        lim = (8, 5, 3)[dense]
        cells = _bias_cells(trace, r, n_bias, lim) if kind == "bias" else \
            _topk_cells(trace, r, "base_topk" if kind == "base" else "corrected_topk", top, extra, lim)
        data.append(_draft_heatmap(kind, xs, cells, ax, big, dense))
        if kind == "corr":
            lay["shapes"] = _sampled_boxes(r, fates, top, ax, big)
    lay[f"xaxis{'' if len(rows) == 1 else len(rows)}"].update(
        tickfont={"size": (20, 18, 16)[dense] if big else (13, 12, 11)[dense]},
        tickangle=0)  # lines of ≤ 3 characters: upright; plotly's auto-rotation tipped x_k over
    # the legend sits in pixels below the x-labels (paper units would move it with the height),
    # from the figure's left edge (the wide y-titles' margin), in short lines: never cut at the
    # right edge of a ~450 px column, never on the tick labels
    tick_px = 12 + max(map(_text_lines, tick)) * (20 if big else 13) * LINE_SPACING  # ticklen, gap, lines
    foot = DRAFT_FOOTER
    fsize = 14 if big else 11
    lay["annotations"] = [{"text": foot, "showarrow": False, "xref": "paper", "yref": "paper",
                           "x": 0, "xshift": -(lay["margin"]["l"] - 8), "y": 0, "yanchor": "top",
                           "yshift": -math.ceil(tick_px + 6), "xanchor": "left", "align": "left",
                           "font": {"size": fsize, "color": "#424242"}}]
    lay["margin"]["b"] = math.ceil(tick_px + 6 + _text_lines(foot) * fsize * LINE_SPACING + 10)
    return _fig(data, lay)


DRAFT_FOOTER = ("★ = the Markov head changed the top-1 · box = sampled x_k:<br>"
                "green ✓ accepted · red ✗ rejected · grey – dropped / · discarded")


def _draft_rows(has_bias: bool) -> list[tuple[str, str]]:
    """The stacked blocks of the draft figure: (kind, y-axis title), top to bottom."""
    rows = [("base", "backbone U_k<br>top candidates")]
    if has_bias:
        rows.append(("bias", "Markov bias B_k<br>boosted ▲ / suppressed ▼"))
    rows.append(("corr", "corrected U_k+B_k<br>(x_k drawn here)" if has_bias else
                 "no Markov head:<br>x_k drawn from U_k"))
    return rows


def _stacked_domains(sizes: list[int], gap: float = 0.06) -> list[list[float]]:
    """Paper y-domains of blocks stacked top to bottom, each as tall as its number of rows."""
    unit = (1 - gap * (len(sizes) - 1)) / sum(sizes)
    out = []
    for ri in range(len(sizes)):
        y1 = 1 - sum(sizes[:ri]) * unit - ri * gap
        out.append([max(0.0, y1 - sizes[ri] * unit), y1])
    return out


def _draft_yaxis(kind: str, label: str, domain: list[float], top: int, n_bias: int,
                 big: bool, extra: bool = False) -> dict:
    ticks = ([f"▲{j + 1}" for j in range(n_bias)] + [f"▼{j + 1}" for j in range(n_bias)]
             if kind == "bias" else [f"#{j + 1}" for j in range(top)]
             + ([f"x_k: #{top + 1}+"] if extra else []))
    return {"domain": domain, "autorange": "reversed", "showgrid": False,
            "title": {"text": label, "font": {"size": 16 if big else 12}},
            "tickvals": list(range(len(ticks))), "ticktext": ticks}


def _cells(r: Round, n_rows: int, pick, fmt):
    """(z, text, hover) grids [row][position]: ``pick(d, j)`` is the item shown at row j of x_k
    (or None: an empty cell), ``fmt(d, j, item)`` its (value, cell text, hover text)."""
    z, txt, hov = [], [], []
    for j in range(n_rows):
        row = [(pick(d, j), d) for d in r.draft]
        cells = [fmt(d, j, it) if it is not None else (None, "", "") for it, d in row]
        z.append([c[0] for c in cells]), txt.append([c[1] for c in cells]), hov.append([c[2] for c in cells])
    return z, txt, hov


def _sampled_rank(d, top: int) -> int | None:
    """0-based rank of the sampled x_k among the first ``top`` corrected candidates, or None."""
    ranks = [c.token for c in d.corrected_topk[:top]]
    return ranks.index(d.token) if d.token in ranks else None


def _topk_cells(trace: Trace, r: Round, attr: str, top: int, extra: bool = False, lim: int = 8):
    """The top candidates ``attr`` (base or corrected) of each x_k, by rank; with ``extra`` one
    more row holding x_k where it was sampled from outside those ``top`` (else empty)."""
    def pick(d, rank):
        if rank == top:  # the extra row: only the x_k drawn from beyond the top rows
            return None if _sampled_rank(d, top) is not None else d
        cands = getattr(d, attr)
        return cands[rank] if rank < len(cands) else None

    def fmt(d, rank, c):
        if rank == top:
            recorded = [t.token for t in d.corrected_topk]
            where = (f"rank {recorded.index(d.token) + 1}" if d.token in recorded
                     else f"below the recorded top {len(recorded)}")
            tok = plain_token(trace.token_text(d.token), lim)
            return (d.p_d, f"{tok}<br>{d.p_d:.0%}" if d.p_d >= 0.005 else f"{tok}<br>&lt;1%",
                    f"x{d.k} sampled from {where}: {plain_token(trace.token_text(d.token), 30)} "
                    f"(id {d.token}) drawn with p_d={d.p_d:.4f}")
        tok = plain_token(trace.token_text(c.token), lim)
        return (c.prob, f"{tok}<br>{c.prob:.0%}" if c.prob >= 0.005 else f"{tok}<br>&lt;1%",
                f"x{d.k} rank {rank + 1}: {plain_token(trace.token_text(c.token), 30)} "
                f"(id {c.token}) p={c.prob:.4f} logit={c.logit:.2f}")
    return _cells(r, top + extra, pick, fmt)


def _bias_cells(trace: Trace, r: Round, n_bias: int, lim: int = 8):
    """The ``n_bias`` largest boosts of each x_k, then its ``n_bias`` strongest suppressions."""
    def pick(d, j):
        src, jj = (d.boosted, j) if j < n_bias else (d.suppressed, j - n_bias)
        return src[jj] if jj < len(src) else None

    def fmt(d, j, b):
        return (b.bias, f"{plain_token(trace.token_text(b.token), lim)}<br>{b.bias:+.2f}",
                f"x{d.k}: bias {b.bias:+.3f} on {plain_token(trace.token_text(b.token), 30)} (id {b.token})")
    return _cells(r, 2 * n_bias, pick, fmt)


def _draft_heatmap(kind: str, xs: list[int], cells, ax: str, big: bool, dense: int = 0) -> dict:
    """One block of the draft figure: probabilities (blue, 0..1) or biases (red/white/green)."""
    z, txt, hov = cells
    if kind == "bias":
        m = max([abs(v) for row in z for v in row if v is not None] or [1.0]) or 1.0
        scale = {"colorscale": [[0, "#c62828"], [0.5, "#ffffff"], [1, "#2e7d32"]], "zmin": -m, "zmax": m}
    else:
        scale = {"colorscale": [[0, "#f7fbff"], [0.5, "#6baed6"], [1, "#08306b"]], "zmin": 0, "zmax": 1}
    return {"type": "heatmap", "x": xs, "y": list(range(len(z))), "z": z, "text": txt,
            "texttemplate": "%{text}", "hovertext": hov, "hoverinfo": "text", **scale,
            "showscale": False, "xaxis": f"x{ax}", "yaxis": f"y{ax}", "xgap": 2, "ygap": 2,
            "textfont": {"size": (16, 14, 12)[dense] if big else (11, 10, 9)[dense]}}


def _sampled_boxes(r: Round, fates: list[str], top: int, ax: str, big: bool) -> list[dict]:
    """A box around every sampled x_k — at its rank among the corrected top candidates, or in
    the extra row below them when it was drawn from further down — as a rectangle on the cell's
    own bounds (data units): it frames the cell whatever its text or the column width."""
    w = 0.46  # half a cell, less the heatmap's gap
    out = []
    for d, f in zip(r.draft, fates):
        rank = _sampled_rank(d, top)
        y = top if rank is None else rank
        out.append({"type": "rect", "xref": f"x{ax}", "yref": f"y{ax}", "x0": d.k - w, "x1": d.k + w,
                    "y0": y - w, "y1": y + w, "layer": "above",
                    "line": {"color": COLORS.get(f, "#616161"), "width": 4 if big else 3}})
    return out


# ----------------------------------------------------------------------------- confidence
def confidence_figure(trace: Trace, i: int, *, big: bool = False, note: str = "") -> go.Figure:
    """Raw and calibrated c_k (bars), survival a_k = Π c_i (lines), the chosen ℓ (shaded);
    ``note``: a line (wrapped) above the plot area, under the title."""
    title = "Confidence"
    r = _round(trace, i)
    if r is None or not r.draft:
        return message_figure(title, "no draft in this round" if r else "no round yet: press Step", big=big)
    if all(d.conf_raw is None for d in r.draft):
        return message_figure(title, "this drafter has no confidence head (c_k not available)", big=big)
    xs = [d.k for d in r.draft]
    ell = len(r.verify)
    fates = position_fates(r)
    data = [
        {"type": "bar", "x": xs, "y": [d.conf_raw for d in r.draft], "name": "c_k raw",
         "marker": {"color": COLORS["raw"]}, "hovertemplate": "c_%{x} raw = %{y:.3f}<extra></extra>"},
        {"type": "bar", "x": xs, "y": [d.conf_cal for d in r.draft], "name": "c_k calibrated (STS)",
         "marker": {"color": COLORS["cal"]}, "hovertemplate": "c_%{x} calibrated = %{y:.3f}<extra></extra>"},
        {"type": "scatter", "x": xs, "y": [d.a_raw for d in r.draft], "name": "a_k raw",
         "mode": "lines+markers", "line": {"color": "#ef6c00", "dash": "dot"},
         "hovertemplate": "a_%{x} raw = %{y:.3f}<extra></extra>"},
        {"type": "scatter", "x": xs, "y": [d.a_cal for d in r.draft], "name": "a_k = Π c_i (calibrated)",
         "mode": "lines+markers", "line": {"color": "#d84315", "width": 3},
         "hovertemplate": "a_%{x} = %{y:.3f}<extra></extra>"},
        {"type": "scatter", "x": xs, "y": [1.08] * len(xs), "mode": "text", "showlegend": False,
         "text": [_FATE_MARK[f] for f in fates], "hoverinfo": "skip",
         "textfont": {"color": [COLORS.get(f, "#616161") for f in fates], "size": 20 if big else 15}},
    ]
    shapes = []
    if ell > 0:
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": 0.5, "x1": ell + 0.5,
                       "y0": 0, "y1": 1, "fillcolor": "rgba(46,125,50,0.08)", "line": {"width": 0},
                       "layer": "below"})
    shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": ell + 0.5, "x1": ell + 0.5,
                   "y0": 0, "y1": 1, "line": {"color": "#2e7d32", "width": 2, "dash": "dash"}})
    cal = "calibrated" if trace.meta.calibrated else "calibration off / not fitted (raw = calibrated)"
    lay = _layout(_title2(f"{title} — round {round_no(r)}: chosen ℓ = {ell}", cal), big, 400,
                  barmode="group", shapes=shapes,
                  xaxis={"title": {"text": "draft position k (✓ acc. ✗ rej. · – not kept)"},
                         "tickvals": xs, "range": [0.4, len(xs) + 0.6]},
                  yaxis={"title": {"text": "probability"}, "range": [0, 1.15]})
    lay["annotations"] = [{"text": f"ℓ = {ell}", "x": ell + 0.5, "y": 1.0, "xref": "x",
                           "yref": "paper", "showarrow": False,
                           "xanchor": "left" if ell < len(xs) else "right",
                           "font": {"color": "#2e7d32", "size": 16 if big else 12}}]
    if note:
        lay["annotations"].append(_top_note(lay, big, note, bgcolor="#fff8e1"))
    return _fig(data, lay)


# ----------------------------------------------------------------------------- verification
UNREACHED = "#bdbdbd"  # bars and marks of positions after the first rejection
UNREACHED_OPACITY = 0.35
NARROW_PLOT_PX = 360  # plot-area width of the narrowest column the panels are laid out for (~450 px)


def unreached_positions(r: Round) -> list[int]:
    """Verified positions k (1-based) after the first rejected draft: speculative decoding stops
    there, so the target's p_t at them (computed on a prefix holding the rejected token) decides
    nothing — they are neither accepted nor rejected."""
    return [v.k for j, v in enumerate(r.verify) if j > r.n_accepted]


def _greyed(colour: str, dead: list[bool]) -> list | str:
    return [UNREACHED if d else colour for d in dead] if any(dead) else colour


def verify_figure(trace: Trace, i: int, *, big: bool = False) -> go.Figure:
    """Per verified position: p_t(x_k), p_d(x_k), ratio min(1, p_t/p_d), uniform u, decision.

    Positions after the first rejection (``unreached_positions``) are drawn greyed out — grey,
    translucent bars and marks in a shaded band labelled "not reached" — so they never read as
    accepted or rejected.
    """
    title = "Verification"
    r = _round(trace, i)
    if r is None:
        return message_figure(title, "no round yet: press Step", big=big)
    if not r.verify:
        tgt = trace.token_text(r.appended) if r.appended is not None else "—"
        return message_figure(title, f"round {round_no(r)}: ℓ = 0 verified; target token "
                                     f"{plain_token(tgt, 20)} (a plain target step)", big=big)
    xs = [v.k for v in r.verify]
    dead = [j > r.n_accepted for j in range(len(r.verify))]  # after the first rejection
    dec = ["✓" if j < r.n_accepted else "✗" if j == r.n_accepted else "·" for j in range(len(xs))]
    opacity = [UNREACHED_OPACITY if d else 1.0 for d in dead] if any(dead) else 1.0
    why = ["not reached (after the first rejection)" if d else "" for d in dead]
    greedy = all(v.uniform is None for v in r.verify)
    data = [
        {"type": "bar", "x": xs, "y": [v.p_t for v in r.verify], "name": "p_t(x_k) target",
         "marker": {"color": _greyed(COLORS["p_t"], dead), "opacity": opacity},
         "customdata": why, "hovertemplate": "p_t = %{y:.4f}<br>%{customdata}<extra></extra>"},
        {"type": "bar", "x": xs, "y": [v.p_d for v in r.verify], "name": "p_d(x_k) drafter",
         "marker": {"color": _greyed(COLORS["p_d"], dead), "opacity": opacity},
         "customdata": why, "hovertemplate": "p_d = %{y:.4f}<br>%{customdata}<extra></extra>"},
        {"type": "scatter", "x": xs, "y": [v.ratio for v in r.verify], "name": "ratio min(1, p_t/p_d)",
         "mode": "lines+markers", "line": {"color": COLORS["ratio"]},
         "marker": {"size": 9},
         "customdata": why, "hovertemplate": "ratio = %{y:.4f}<br>%{customdata}<extra></extra>"},
    ]
    if any(dead):  # the ratio line stops at the first rejection; its markers go on, greyed
        n_live = r.n_accepted + 1
        data[2]["y"] = [v.ratio if j < n_live else None for j, v in enumerate(r.verify)]
        data.append({"type": "scatter", "x": xs[n_live:], "y": [v.ratio for v in r.verify[n_live:]],
                     "mode": "markers", "showlegend": False, "name": "ratio (not reached)",
                     "marker": {"size": 9, "color": UNREACHED, "opacity": UNREACHED_OPACITY},
                     "hovertemplate": "ratio = %{y:.4f}<br>not reached<extra></extra>"})
    if not greedy:
        ux = [v.k for v in r.verify if v.uniform is not None]
        uy = [v.uniform for v in r.verify if v.uniform is not None]
        data.append({"type": "scatter", "x": ux, "y": uy, "name": "uniform u (accept if u < ratio)",
                     "mode": "markers", "marker": {"symbol": "diamond", "size": 12, "color": COLORS["u"]},
                     "hovertemplate": "u = %{y:.4f}<extra></extra>"})
    dcol = [COLORS["accepted"] if d == "✓" else COLORS["rejected"] if d == "✗" else UNREACHED
            for d in dec]
    data.append({"type": "scatter", "x": xs, "y": [1.1] * len(xs), "mode": "text", "text": dec,
                 "showlegend": False, "hoverinfo": "skip",
                 "textfont": {"color": dcol, "size": 22 if big else 16}})
    # unescaped: the subtitle escapes its text once
    app_txt = html.unescape(plain_token(trace.token_text(r.appended), 16)) if r.appended is not None else "—"
    rule = ("T = 0: accept while x_k equals the target argmax" if greedy else
            "accept x_k with probability min(1, p_t/p_d); first rejection → residual sample")
    dense = _density(len(xs))  # γ up to 16: shorter tokens, smaller labels
    lim, pre = (8, 4, 3)[dense], ("x", "x", "")[dense]
    grey = 'style="color:#9e9e9e"'
    tick = [(f"<span {grey}>{pre}{v.k}</span><br><span {grey}>{plain_token(trace.token_text(v.token), lim)}</span>"
             if d else f"{pre}{v.k}<br>{plain_token(trace.token_text(v.token), lim)}")
            for v, d in zip(r.verify, dead)]
    lay = _layout(_title2(f"{title} — round {round_no(r)}: {r.n_accepted}/{len(r.verify)} accepted, τ = {r.tau}",
                          f"then {appended_fate(r)} '{app_txt}' · ✓ acc. ✗ rej. · grey: not reached"),
                  big, 420, barmode="group",
                  xaxis={"tickvals": xs, "ticktext": tick, "range": [0.4, len(xs) + 0.6],
                         "tickfont": {"size": (20, 17, 15)[dense] if big else (13, 11, 10)[dense]}},
                  yaxis={"title": {"text": "probability"}, "range": [0, 1.2]})
    # the rule sits in pixels just above the plot area, below the title lines (never on them)
    notes = [_top_note(lay, big, rule)]
    shapes = []
    if any(dead):
        x0, x1 = r.n_accepted + 1.5, len(xs) + 0.5
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0,
                       "y1": 1, "fillcolor": "rgba(158,158,158,0.15)", "line": {"width": 0},
                       "layer": "below"})
        # horizontal where the band is wide enough in the narrowest column, else upright
        wide = (x1 - x0) / (len(xs) + 0.2) * NARROW_PLOT_PX >= 80
        notes.append({"text": "not reached", "showarrow": False, "xref": "x", "yref": "paper",
                      "x": (x0 + x1) / 2, "y": 0.5, "textangle": 0 if wide else -90,
                      "bgcolor": "rgba(255,255,255,0.75)",
                      "font": {"size": 14 if big else 11, "color": "#616161"}})
    lay["annotations"], lay["shapes"] = notes, shapes
    return _fig(data, lay)


# ----------------------------------------------------------------------------- scheduler
def admission_figure(trace: Trace, i: int, *, big: bool = False, sps=None) -> go.Figure:
    """The admission path Θ = τ*·SPS(B) against batch tokens B, with the stopping point.

    With ``sps`` (a callable B → steps/s, or None where the curve is not known, e.g. the
    trace's recorded ``capacity_curve.sps_at``) a second panel shows SPS(B) with the operating
    point (the final verify batch).
    """
    title = "Scheduler"
    r = _round(trace, i)
    if r is None or r.schedule is None:
        return message_figure(title, "no round yet: press Step", big=big)
    s = r.schedule
    # the policy and the stop reason in the wrapped detail lines: one title line fits ~450 px
    stop = s.stop if len(s.stop) <= 100 else s.stop[:99] + "…"
    head = _title2(f"{title} — round {round_no(r)}: R = {s.load}, ℓ = {s.ell}",
                   f"{s.policy} · stop: {stop}{' · lossless' if s.lossless else ' · NOT lossless'}")
    if not s.path:
        expl = {"fixed": "a fixed policy verifies ℓ = min(N, budget) with no admission search",
                "threshold": "a static threshold stops at the first c_k (or a_k) below it",
                "forced": "what-if: ℓ forced by the user",
                "plain decoding": "plain decoding: no draft to schedule"}.get(s.stop, s.stop)
        return message_figure(head, expl, big=big, height=300)
    path = _thinned(s.path)  # a figure's points never follow the trace's numbers
    data: list[dict] = []
    adm = [p for p in s.path if p.admitted]
    data.append({"type": "scatter", "x": [p.B for p in path], "y": [p.theta for p in path],
                 "mode": "lines", "line": {"color": "#90a4ae"}, "showlegend": False,
                 "hoverinfo": "skip", "xaxis": "x", "yaxis": "y"})
    data += _path_markers(path, r.request, s.stop)
    b_final = adm[-1].B if adm else s.load
    lay = _layout(head, big, 380, xaxis={"title": {"text": "verify batch B (tokens)"},
                                         "domain": [0, 0.55] if sps else [0, 1]},
                  yaxis={"title": {"text": "Θ (tokens/s)"}})  # Θ = τ*·SPS(B): the panel's terms line
    _top_block(lay, big)
    if sps is not None:
        hi = max(b_final + 1, max(p.B for p in path) + 1)
        data += _capacity_traces(sps, range(max(1, max(1, s.load) // 2), int(hi * 1.5) + 2), b_final)
        # the curve's name under the axis: a long rotated y-title runs into the figure title
        # SPS(B)'s axis on the right edge: between the panels its ticks and title would run
        # into the Θ panel in a narrow column
        lay["xaxis"]["domain"] = [0, 0.58]
        lay["xaxis2"] = {"domain": [0.66, 1], "anchor": "y2",
                         "title": {"text": f"B (tokens)<br><span style='font-size:0.7em'>"
                                           f"curve {html.escape(s.capacity[:40])}</span>"}}
        lay["yaxis2"] = {"anchor": "x2", "side": "right", "title": {"text": "SPS(B) (steps/s)"}}
        lay["margin"]["r"] = 16  # the right axis' automargin adds its labels and title
    # legend entries of a fixed width: as many columns as the panel holds (five entries one per
    # line took half the panel's height and left the Θ curve a strip ~60 px tall)
    lay["legend"].update(entrywidth=legend_entry_px(lay["font"]["size"]), entrywidthmode="pixels")
    return _fig(data, lay)


def _path_markers(path, live: int, stop: str) -> list[dict]:
    """Markers of the admission path: admitted candidates of the traced request and of the
    others, the first refused candidate (where Algorithm 1 stops: its first non-improvement)
    and any further ones a policy recorded (not admitted)."""
    adm = [p for p in path if p.admitted]
    refused = [p for p in path if not p.admitted]
    mine = [p for p in adm if p.r == live]
    others = [p for p in adm if p.r != live]
    # names of ≤ LEGEND_CHARS characters: the legend's fixed-width entries (two columns from ~420 px)
    first = "stop: no improvement" if stop.startswith("no improvement") else "first not admitted"
    groups = [(mine, f"admitted, r = {live}" if others else "admitted (r, j)",
               {"color": COLORS["live"] if others else COLORS["accepted"], "symbol": "diamond", "size": 12}),
              (others, "admitted, other r", {"color": "#a5d6a7", "size": 8}),
              (refused[:1], first, {"color": COLORS["rejected"], "symbol": "x", "size": 13}),
              (refused[1:], "not admitted", {"color": "#bdbdbd", "symbol": "circle-open", "size": 7})]
    return [{"type": "scatter", "x": [p.B for p in pts], "y": [p.theta for p in pts],
             "mode": "markers", "name": name, "marker": marker,
             "text": [f"r={p.r} j={p.j} a={p.a:.3g} τ*={p.tau:.2f}" for p in pts],
             "hovertemplate": "%{text}<br>B=%{x} Θ=%{y:.5g}<extra></extra>",
             "xaxis": "x", "yaxis": "y"}
            for pts, name, marker in groups if pts]


LEGEND_CHARS = 20  # the longest scheduler legend entry


def legend_entry_px(font_size: float) -> int:
    """The text width of a fixed-width legend entry of ``LEGEND_CHARS`` characters (≈ 0.6 em
    each; plotly adds the marker's ~45 px)."""
    return math.ceil(LEGEND_CHARS * 0.6 * font_size)


MAX_FIGURE_POINTS = 2000  # points one admission-path figure draws, whatever the trace holds
SPS_SAMPLES = 512  # points of an SPS(B) line: every B of a short range, else log-spaced


def _thinned(path: list) -> list:
    """At most about ``MAX_FIGURE_POINTS`` steps of an admission path, evenly spaced, always
    with the last admitted and the first refused step (the markers that explain the stop)."""
    if len(path) <= MAX_FIGURE_POINTS:
        return path
    keep = set(range(0, len(path), -(-len(path) // MAX_FIGURE_POINTS))) | {len(path) - 1}
    keep |= {i for i in (max((i for i, p in enumerate(path) if p.admitted), default=None),
                         next((i for i, p in enumerate(path) if not p.admitted), None))
             if i is not None}
    return [path[i] for i in sorted(keep)]


def _sampled(bs: range, n: int = SPS_SAMPLES) -> list[int]:
    """Every B of ``bs``, or ``n`` log-spaced ones when it is longer (B may be in the millions)."""
    if len(bs) <= n:
        return list(bs)
    lo, hi = max(1, bs.start), bs[-1]
    return sorted({lo, hi} | {int(round(lo * (hi / lo) ** (i / (n - 1)))) for i in range(n)})


def _capacity_traces(sps, bs: range, b_final: int) -> list[dict]:
    """SPS(B) over ``bs`` (sampled: ``_sampled``) and the operating point at ``b_final``
    (where the curve is known)."""
    pts = [(b, sps(b)) for b in _sampled(bs)]
    pts = [(b, float(y)) for b, y in pts if y is not None]  # a recorded curve ends somewhere
    op = sps(b_final)
    return [{"type": "scatter", "x": [b for b, _ in pts], "y": [y for _, y in pts],
             "mode": "lines", "name": "SPS(B) capacity", "line": {"color": "#1565c0"},
             "xaxis": "x2", "yaxis": "y2"},
            {"type": "scatter", "x": [b_final] if op is not None else [],
             "y": [float(op)] if op is not None else [], "mode": "markers",
             "name": "operating point", "marker": {"color": "#d84315", "size": 14},
             "xaxis": "x2", "yaxis": "y2"}]


# ----------------------------------------------------------------------------- run so far
def tau_figure(trace: Trace, upto: int, *, big: bool = False, others: list[Trace] | None = None
               ) -> go.Figure:
    """τ per round (bars split into accepted drafts + 1 target token), running mean τ."""
    title = "τ per round"
    rounds = trace.rounds[:upto]
    if not rounds:
        return message_figure(title, "no round yet: press Step", big=big)
    xs = [round_no(r) for r in rounds]
    acc = [min(r.n_accepted, len(r.committed)) for r in rounds]
    tgt = [len(r.committed) - a for r, a in zip(rounds, acc)]
    run, tot = [], 0
    for j, r in enumerate(rounds):
        tot += r.tau
        run.append(tot / (j + 1))
    data = [
        {"type": "bar", "x": xs, "y": acc, "name": "accepted drafts", "marker": {"color": COLORS["accepted"]}},
        {"type": "bar", "x": xs, "y": tgt, "name": "+1 target token", "marker": {"color": COLORS["correction"]}},
        {"type": "scatter", "x": xs, "y": run, "name": "mean τ so far", "mode": "lines",
         "line": {"color": "#212121", "width": 3}},
        {"type": "scatter", "x": xs, "y": [len(r.verify) for r in rounds], "name": "ℓ verified",
         "mode": "markers", "marker": {"symbol": "line-ew-open", "size": 16, "color": "#1565c0"}},
    ]
    lay = _layout(_title2(f"{title}: mean {run[-1]:.2f} over {len(rounds)} rounds", "τ = accepted drafts + 1 target token"), big, 360,
                  barmode="stack",
                  xaxis={"title": {"text": "round"}, "tickmode": "linear", "tick0": 1,
                         "dtick": max(1, math.ceil(len(rounds) / 12))},  # whole rounds only
                  yaxis={"title": {"text": "tokens committed"}, "rangemode": "tozero"})
    return _fig(data, lay)


def position_figure(trace: Trace, upto: int, *, big: bool = False) -> go.Figure:
    """Per-position cumulative survival and conditional acceptance over the rounds so far.

    The counts come from ``dspark_viz.eval.metrics.position_stats`` (definitions there).
    """
    title = "Per-position acceptance"
    rounds = [r for r in trace.rounds[:upto] if r.draft]
    if not rounds:
        return message_figure(title, "no drafted round yet", big=big)
    g = trace.meta.gamma
    ps = position_stats(rounds, g)
    xs = list(range(1, g + 1))
    data = [
        {"type": "scatter", "x": xs, "y": ps["cumulative_survival"], "mode": "lines+markers",
         "name": "cumulative survival (≥ k accepted / verified ≥ k)", "line": {"color": "#1565c0"},
         "customdata": ps["verified"], "hovertemplate": "k=%{x}: %{y:.3f} (n=%{customdata})<extra></extra>"},
        {"type": "scatter", "x": xs, "y": ps["conditional_acceptance"], "mode": "lines+markers",
         "name": "conditional acceptance (given first k−1 accepted)", "line": {"color": "#ef6c00"},
         "customdata": ps["reached"], "hovertemplate": "k=%{x}: %{y:.3f} (n=%{customdata})<extra></extra>"},
    ]
    lay = _layout(f"{title} over {len(rounds)} rounds", big, 340,
                  xaxis={"title": {"text": "draft position k"}, "tickvals": xs},
                  yaxis={"title": {"text": "rate"}, "range": [0, 1.05]})
    lay["annotations"] = [{"text": html.escape(DEFINITIONS["conditional_acceptance"][:90]) + "…",
                           "showarrow": False, "xref": "paper", "yref": "paper", "x": 0, "y": 1.0,
                           "xanchor": "left", "yanchor": "bottom",
                           "font": {"size": 13 if big else 10, "color": "#424242"}}]
    return _fig(data, lay)


def run_stats(trace: Trace, upto: int | None = None) -> dict:
    """Counts and rates over the first ``upto`` rounds (the app's running metrics)."""
    rounds = trace.rounds[:upto]
    n = len(rounds)
    verified = sum(len(r.verify) for r in rounds)
    accepted = sum(r.n_accepted for r in rounds)
    tokens = sum(len(r.committed) for r in rounds)
    ms = sum(r.timings.total_ms for r in rounds)
    return {"rounds": n, "tokens": tokens, "verified": verified, "accepted": accepted,
            "tau": tokens / n if n else float("nan"),
            "acceptance": accepted / verified if verified else float("nan"),
            "tokens_per_forward": tokens / n if n else float("nan"),
            "ms": ms, "tokens_per_s": tokens / (ms / 1e3) if ms > 0 else float("nan"),
            "draft_ms": sum(r.timings.draft_ms + r.timings.markov_ms for r in rounds),
            "verify_ms": sum(r.timings.verify_ms for r in rounds)}


def _fmt(x: float, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


METRIC_DEFS = {
    "τ": "tokens committed per round = accepted draft tokens + 1 target token (correction or bonus); "
         "τ ∈ [1, ℓ+1]",
    "acceptance rate": "accepted draft tokens / verified draft tokens",
    "tokens / target pass": "tokens committed per target forward (plain decoding: 1)",
    "tokens/s": "committed tokens / wall time of the rounds (draft + schedule + verify)",
    "speedup": "tokens/s of this lane / tokens/s of plain decoding, measured in the same run",
}


def metrics_html(lanes: list[tuple[str, Trace, int]], *, big: bool = False) -> str:
    """A table of running metrics per lane (name, trace, rounds shown) with definitions.

    The speedup column appears when a lane named ``plain`` (plain target decoding) is present.
    """
    stats = [(name, run_stats(tr, upto)) for name, tr, upto in lanes]
    base = next((s for n, s in stats if n == "plain"), None)
    fs = "18px" if big else "13px"
    head = ["lane", "rounds", "tokens", "τ (mean)", "acceptance rate", "tokens / target pass",
            "tokens/s", "draft ms", "verify ms"] + (["speedup vs plain"] if base else [])
    rows = []
    for name, s in stats:
        cells = [html.escape(name), str(s["rounds"]), str(s["tokens"]), _fmt(s["tau"], ".2f"),
                 _fmt(s["acceptance"], ".1%"), _fmt(s["tokens_per_forward"], ".2f"),
                 _fmt(s["tokens_per_s"], ".1f"), _fmt(s["draft_ms"], ".0f"), _fmt(s["verify_ms"], ".0f")]
        if base:
            sp = (s["tokens_per_s"] / base["tokens_per_s"]
                  if base["tokens_per_s"] and not math.isnan(base["tokens_per_s"]) else float("nan"))
            cells.append(_fmt(sp, ".2f") + ("×" if not math.isnan(sp) else ""))
        rows.append("".join(f"<td>{c}</td>" for c in cells))
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in METRIC_DEFS.items())
    return (f'<div class="dsv-metrics" style="font-size:{fs};color:#212121;background:#fff;padding:6px">'
            '<table style="border-collapse:collapse;width:100%">'
            "<tr>" + "".join(f'<th style="text-align:left;border-bottom:1px solid #bbb;padding:2px 6px">'
                             f"{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join(f"<tr>{r}</tr>" for r in rows) + "</table>"
            f'<ul style="margin:6px 0 0 0;padding-left:18px;color:#424242">{defs}</ul>'
            f'<div style="color:#616161">{html.escape(TAU_CONVENTION)}</div></div>')


def _appended_label(r: Round) -> str:
    kind = appended_fate(r)
    return "target token (ℓ = 0: a plain step)" if kind == "target" and r.draft else html.escape(kind)


def round_summary_html(trace: Trace, i: int) -> str:
    """One line about round i: anchor, ℓ, accepted, appended token and timings."""
    r = _round(trace, i)
    if r is None:
        return "<div>no round yet</div>"
    t = r.timings
    anchor = plain_token(trace.token_text(r.anchor), 20)
    app = plain_token(trace.token_text(r.appended), 20) if r.appended is not None else "—"
    return (f"<div>round <b>{round_no(r)}</b> · anchor x0 = '<code>{anchor}</code>' · drafted {len(r.draft)} · "
            f"verified ℓ = {len(r.verify)} · accepted {r.n_accepted} · then {_appended_label(r)} "
            f"'<code>{app}</code>' · τ = {r.tau} · dropped {len(r.dropped)} · "
            f"draft {t.draft_ms:.0f} ms + Markov {t.markov_ms:.0f} ms + schedule {t.schedule_ms:.1f} ms "
            f"+ verify {t.verify_ms:.0f} ms = {t.total_ms:.0f} ms</div>")


__all__ = ["COLORS", "PALETTE", "NOTEBOOK_TEMPLATE", "BOTTOM_LEGEND", "plain_token", "message_figure", "position_fates", "markov_changed",
           "draft_block_figure", "confidence_figure", "verify_figure", "admission_figure",
           "tau_figure", "position_figure", "run_stats", "metrics_html", "round_summary_html", "METRIC_DEFS"]

"""Token HTML: the generated text of a trace, every token colored by its fate.

Scope: pure functions from a ``Trace`` (and a round cursor) to escaped HTML strings — the
text panel of the app and the notebooks. Fates: prompt, first token (sampled by the target
after prefill), accepted draft, rejected draft (verified but not kept), target correction,
bonus (all verified drafts accepted), plain target token (plain decoding, or a round that
verified ℓ = 0 drafts), dropped by the scheduler (drafted beyond ℓ, never verified); rounds are
numbered from 1 on screen (``round_no``). Whitespace and special tokens are made
visible (``·`` for a space, ``⏎`` for a newline, ``→`` for a tab, ``⟨0x02⟩`` for control
bytes, specials such as ``<eos>`` as badges). Every token text goes through
``html.escape``; nothing from the trace is ever inserted raw. No model, no Gradio here.
"""
from __future__ import annotations

import html
import re

from dspark_viz.decoding.trace import Trace

FATES: dict[str, tuple[str, str, str]] = {
    # fate: (label, background, text color)
    "prompt": ("prompt", "#eceff1", "#455a64"),
    "first": ("first token (target, after prefill)", "#e0e0e0", "#212121"),
    "accepted": ("accepted draft", "#c8e6c9", "#1b5e20"),
    "rejected": ("rejected draft", "#ffcdd2", "#b71c1c"),
    "correction": ("target correction", "#ffe0b2", "#e65100"),
    "bonus": ("bonus (all verified drafts accepted)", "#bbdefb", "#0d47a1"),
    "target": ("plain target token (no draft verified: plain decoding, or ℓ = 0)", "#e1bee7", "#4a148c"),
    "dropped": ("dropped by the scheduler (beyond ℓ, never verified)", "#f5f5f5", "#9e9e9e"),
}
_STRUCK = {"rejected", "dropped"}
_SPECIAL = re.compile(r"^<[^<>\s]{1,40}>$")

CSS = """
.dsv-tokens{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:var(--dsv-tok-size,15px);
 line-height:2.0;white-space:normal;word-break:break-word;color:#212121;background:#fff;padding:8px;border-radius:6px}
.dsv-tok{padding:1px 2px;margin:0 1px;border-radius:3px;border-bottom:2px solid transparent}
.dsv-tok.dsv-struck{text-decoration:line-through;opacity:.85}
.dsv-tok.dsv-dropped{border:1px dashed #bdbdbd}
.dsv-tok.dsv-current{border-bottom-color:#000}
.dsv-ws{color:#90a4ae}
.dsv-sp{font-size:.8em;padding:0 3px;border:1px solid #90a4ae;border-radius:8px;color:#37474f}
.dsv-round{display:inline-block;width:0;height:1.2em;border-left:1px solid #cfd8dc;margin:0 2px;vertical-align:middle}
.dsv-legend{font-family:system-ui,sans-serif;font-size:13px;display:flex;flex-wrap:wrap;gap:10px;margin:4px 0;color:#212121}
.dsv-legend span.dsv-tok{font-family:system-ui,sans-serif}
"""


def visible_text(text: str) -> str:
    """Escaped HTML of one token's text with whitespace, controls and specials made visible."""
    if text == "":
        return '<span class="dsv-sp">∅</span>'
    if _SPECIAL.match(text):
        return f'<span class="dsv-sp">{html.escape(text)}</span>'
    out = []
    for ch in text:
        if ch == " ":
            out.append('<span class="dsv-ws">·</span>')
        elif ch == "\n":
            out.append('<span class="dsv-ws">⏎</span><br>')
        elif ch == "\t":
            out.append('<span class="dsv-ws">→</span>')
        elif ch == "\r":
            out.append('<span class="dsv-ws">␍</span>')
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(f'<span class="dsv-sp">0x{ord(ch):02x}</span>')
        elif ch == "\ufffd":
            out.append('<span class="dsv-sp">�</span>')
        else:
            out.append(html.escape(ch))
    return "".join(out)


def _span(text: str, fate: str, title: str, current: bool = False) -> str:
    label, bg, fg = FATES[fate]
    cls = "dsv-tok" + (" dsv-struck" if fate in _STRUCK else "") + \
        (" dsv-dropped" if fate == "dropped" else "") + (" dsv-current" if current else "")
    return (f'<span class="{cls}" data-fate="{fate}" style="background:{bg};color:{fg}" '
            f'title="{html.escape(title, quote=True)}">{visible_text(text)}</span>')


def round_no(r) -> int:
    """The number a round is shown under: 1 for the first (``Round.index`` counts from 0), so
    that round n is the one on screen after n rounds — the cursor of the app and the stepper."""
    return r.index + 1


def appended_fate(r) -> str:
    """Fate of a round's target token: ``correction``, ``bonus`` — or ``target`` when the round
    verified no draft (ℓ = 0: a plain target step, nothing was accepted to earn a bonus)."""
    kind = r.appended_kind if r.appended_kind in ("correction", "bonus", "target") else "target"
    return "target" if kind == "bonus" and not r.verify else kind


def token_fates(trace: Trace, upto: int | None = None, *, discarded: bool = True
                ) -> list[tuple[int | None, int, str, str]]:
    """(round or None, token id, fate, tooltip) for the output after ``upto`` rounds.

    With ``discarded`` the rejected and dropped drafts of each round are listed too (after
    the kept ones, before the target token), so the text reads as the drafter proposed it.
    """
    rounds = trace.rounds[:upto]
    out: list[tuple[int | None, int, str, str]] = [
        (None, trace.meta.first_token, "first", "sampled by the target from the prefill logits")]
    for r in rounds:
        nacc = min(r.n_accepted, len(r.committed))
        for k in range(nacc):
            v = r.verify[k]
            out.append((r.index, r.committed[k], "accepted",
                        f"round {round_no(r)} · x{k + 1} accepted · p_t={v.p_t:.3f} p_d={v.p_d:.3f}"))
        if discarded:
            for v in r.verify[r.n_accepted:]:
                out.append((r.index, v.token, "rejected",
                            f"round {round_no(r)} · x{v.k} rejected (verified, not kept) · "
                            f"p_t={v.p_t:.3f} p_d={v.p_d:.3f} ratio={v.ratio:.3f}"
                            + ("" if v.uniform is None else f" u={v.uniform:.3f}")))
        if len(r.committed) > nacc:
            kind = appended_fate(r)
            out.append((r.index, r.committed[nacc], kind,
                        f"round {round_no(r)} · {FATES[kind][0]} (target token"
                        + (", ℓ = 0 verified)" if not r.verify and r.draft else ")")))
        if discarded:
            for j, tok in enumerate(r.dropped):
                out.append((r.index, tok, "dropped",
                            f"round {round_no(r)} · x{len(r.verify) + j + 1} dropped: the scheduler "
                            f"verified ℓ={len(r.verify)} of {len(r.draft)}"))
    return out


def tokens_html(trace: Trace, upto: int | None = None, *, discarded: bool = True,
                prompt: bool = True, round_marks: bool = True, max_prompt_chars: int = 600) -> str:
    """The text after ``upto`` rounds (None = all) as escaped, fate-colored HTML.

    The tokens of the last shown round are underlined (the "current" round).
    """
    n = len(trace.rounds) if upto is None else max(0, min(upto, len(trace.rounds)))
    parts = ['<div class="dsv-tokens">']
    if prompt and trace.meta.prompt:
        p = trace.meta.prompt
        if len(p) > max_prompt_chars:
            p = "…" + p[-max_prompt_chars:]
        parts.append(_span(p, "prompt", "prompt"))
    last = None
    cur = n - 1
    for rnd, tok, fate, title in token_fates(trace, n, discarded=discarded):
        if round_marks and rnd is not None and rnd != last:
            parts.append(f'<span class="dsv-round" title="round {rnd + 1}"></span>')
        last = rnd
        parts.append(_span(trace.token_text(tok), fate, title, current=(rnd == cur and rnd is not None)))
    parts.append("</div>")
    return "".join(parts)


def legend_html(fates: tuple[str, ...] = ("accepted", "rejected", "correction", "bonus",
                                          "dropped", "target", "first")) -> str:
    items = []
    for f in fates:
        label, bg, fg = FATES[f]
        cls = "dsv-tok" + (" dsv-struck" if f in _STRUCK else "") + (" dsv-dropped" if f == "dropped" else "")
        items.append(f'<span><span class="{cls}" style="background:{bg};color:{fg}">abc</span> '
                     f'{html.escape(label)}</span>')
    items.append('<span><span class="dsv-ws">·</span> space, <span class="dsv-ws">⏎</span> newline, '
                 '<span class="dsv-sp">&lt;eos&gt;</span> special token, │ round boundary</span>')
    return '<div class="dsv-legend">' + "".join(items) + "</div>"


def page_html(trace: Trace, upto: int | None = None, **kw) -> str:
    """Self-contained HTML (style + legend + text) for export or a notebook cell."""
    return f"<style>{CSS}</style>{legend_html()}{tokens_html(trace, upto, **kw)}"


__all__ = ["FATES", "CSS", "visible_text", "round_no", "appended_fate", "token_fates", "tokens_html", "legend_html", "page_html"]

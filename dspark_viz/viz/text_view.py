"""The clean text view: the committed output as text, the current round's discarded drafts beside it.

Scope: pure functions from a ``Trace`` (and a round cursor) to escaped HTML — the app's default
text panel (docs/architecture.md, "viz"). The output reads as the model wrote it: real newlines,
spaces and tabs (``white-space: pre-wrap``), every kept token colored by its fate (accepted
draft, correction, bonus, plain target token; ``viz.tokens.FATES``). What the drafter proposed
and the output does not keep — the rejected and dropped drafts of the current round — never
enters the text: a thin marker stands where they were proposed (its tooltip lists them) and a
strip under the text shows them with visible whitespace. The full inline history of every round
stays ``viz.tokens.tokens_html``. Every token text goes through ``html.escape``.
"""
from __future__ import annotations

import html

from dspark_viz.decoding.trace import Trace
from dspark_viz.viz.tokens import _SPECIAL, FATES, round_no, token_fates, visible_text

CSS = """
.dsv-clean{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:var(--dsv-tok-size,15px);
 line-height:1.6;white-space:pre-wrap;word-break:break-word;color:#212121;background:#fff;padding:8px;border-radius:6px;
 max-height:var(--dsv-text-max,420px);overflow-y:auto}
.dsv-ctok{border-radius:2px}
.dsv-ctok.dsv-current{box-shadow:inset 0 -2px 0 #000}
.dsv-mark{display:inline-block;width:0;height:1.1em;border-left:2px solid #b71c1c;margin:0 1px;vertical-align:text-bottom;cursor:help}
.dsv-proposed{font-family:system-ui,sans-serif;font-size:13px;color:#37474f;margin:4px 0 0;padding:4px 8px;background:#fafafa;
 border-left:3px solid #b71c1c;border-radius:4px;white-space:normal}
.dsv-proposed .dsv-tok{font-family:ui-monospace,monospace}
body.dsv-present .dsv-proposed{font-size:18px}
"""


def _plain(text: str) -> str:
    """Escaped HTML of one token as plain text: whitespace kept as it is, specials as badges,
    control bytes visible (they would otherwise vanish or corrupt the page)."""
    if text == "":
        return ""
    if _SPECIAL.match(text):
        return f'<span class="dsv-sp">{html.escape(text)}</span>'
    out = []
    for ch in text:
        if ch in " \n\t":
            out.append(ch)
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(f'<span class="dsv-sp">0x{ord(ch):02x}</span>')
        else:
            out.append(html.escape(ch))
    return "".join(out)


def _ctok(text: str, fate: str, title: str, current: bool) -> str:
    _, bg, fg = FATES[fate]
    cls = "dsv-ctok" + (" dsv-current" if current else "")
    return (f'<span class="{cls}" data-fate="{fate}" style="background:{bg};color:{fg}" '
            f'title="{html.escape(title, quote=True)}">{_plain(text)}</span>')


def _chip(trace: Trace, tok: int, fate: str, title: str) -> str:
    _, bg, fg = FATES[fate]
    extra = " dsv-dropped" if fate == "dropped" else ""
    return (f'<span class="dsv-tok dsv-struck{extra}" data-fate="{fate}" style="background:{bg};color:{fg}" '
            f'title="{html.escape(title, quote=True)}">{visible_text(trace.token_text(tok))}</span>')


def discarded_of(trace: Trace, i: int) -> list[tuple[int, str, str]]:
    """(token, fate, tooltip) of round ``i``'s rejected and dropped drafts, in proposal order."""
    if not 0 <= i < len(trace.rounds):
        return []
    return [(tok, fate, title) for rnd, tok, fate, title in token_fates(trace, i + 1)
            if rnd == i and fate in ("rejected", "dropped")]


def proposed_strip(trace: Trace, i: int) -> str:
    """The strip under the text: what round ``i`` proposed and the output does not keep."""
    if not 0 <= i < len(trace.rounds):
        return ""
    r = trace.rounds[i]
    gone = discarded_of(trace, i)
    if not gone:
        what = "no draft proposed" if not r.draft else "every verified draft was kept"
        return f'<div class="dsv-proposed">round {round_no(r)}: {what} (nothing discarded)</div>'
    rej = "".join(_chip(trace, t, f, ti) for t, f, ti in gone if f == "rejected")
    drop = "".join(_chip(trace, t, f, ti) for t, f, ti in gone if f == "dropped")
    parts = []
    if rej:
        parts.append(f"rejected {rej}")
    if drop:
        parts.append(f"dropped by the scheduler {drop}")
    return (f'<div class="dsv-proposed">round {round_no(r)} also proposed, at the red marker: '
            + " · ".join(parts) + "</div>")


def clean_html(trace: Trace, upto: int | None = None, *, prompt: bool = True,
               max_prompt_chars: int = 600) -> str:
    """The output after ``upto`` rounds (None = all) as clean, fate-colored text, then the strip
    of the last shown round's discarded drafts (a marker in the text shows where they were
    proposed). The last shown round's tokens are underlined."""
    n = len(trace.rounds) if upto is None else max(0, min(upto, len(trace.rounds)))
    cur = n - 1
    gone = discarded_of(trace, cur)
    mark = ""
    if gone:
        listed = ", ".join(repr(trace.token_text(t)) for t, _, _ in gone)
        mark = (f'<span class="dsv-mark" title="{html.escape(f"round {cur + 1} proposed here: {listed}", quote=True)}">'
                "</span>")
    # the essentials inline, so the text reads right where only ``viz.tokens.CSS`` is loaded
    parts = ['<div class="dsv-clean" style="white-space:pre-wrap;font-family:ui-monospace,monospace">']
    if prompt and trace.meta.prompt:
        p = trace.meta.prompt
        if len(p) > max_prompt_chars:
            p = "…" + p[-max_prompt_chars:]
        parts.append(_ctok(p, "prompt", "prompt", False))
    for rnd, tok, fate, title in token_fates(trace, n, discarded=True):
        if fate in ("rejected", "dropped"):
            if rnd == cur and mark:
                parts.append(mark)  # where the current round's discarded drafts were proposed
                mark = ""
            continue
        parts.append(_ctok(trace.token_text(tok), fate, title, current=(rnd == cur and rnd is not None)))
    parts.append(mark + "</div>")
    parts.append(proposed_strip(trace, cur))
    return "".join(parts)


__all__ = ["CSS", "discarded_of", "proposed_strip", "clean_html"]

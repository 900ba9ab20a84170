"""Round figures on hand-built traces (no model): unreached verification positions greyed out,
layout that fits a narrow (~450 px) column, and every explorer figure at γ = 1 / 16 and R = 1 / 256.
"""
from __future__ import annotations

import html
import json
import re

import pytest

from dspark_viz.decoding.trace import (SCHEMA_VERSION, AdmissionStep, BiasEntry, CurveSample,
                                       DraftPos, Round, Schedule, Summary, Timings, TokenProb,
                                       Trace, TraceMeta, VerifyPos)
from dspark_viz.viz import figures as F
from dspark_viz.viz.app_state import Explorer, Lane
from dspark_viz.viz.panels import PANELS, view_of

VOCAB = {str(t): f"tok{t}" for t in range(400)}


def _round(i: int, *, gamma: int, ell: int, n_acc: int, load: int = 1, sampled: bool = True) -> Round:
    """A consistent round with every detail the figures draw: top candidates, Markov biases,
    confidences, an admission path over ``load`` requests, per-position verification."""
    toks = [10 + 3 * k + i for k in range(gamma)]
    draft, a = [], 1.0
    for k in range(gamma):
        t = toks[k]
        top = [TokenProb(t + j, 1.0 - 0.2 * j, 0.5 / (j + 1)) for j in range(4)]
        c = 0.9 - 0.02 * k
        a *= c
        draft.append(DraftPos(k=k + 1, base_topk=top, corrected_topk=top, token=t, p_d=0.5,
                              boosted=[BiasEntry(t + 100, 0.3), BiasEntry(t + 101, 0.1)],
                              suppressed=[BiasEntry(t + 102, -0.2)],
                              conf_raw=c, conf_cal=c, a_raw=a, a_cal=a))
    verify = []
    for k in range(ell):
        acc = k < n_acc
        u = (0.1 if acc else 0.9) if sampled and k <= n_acc else None
        verify.append(VerifyPos(k=k + 1, token=toks[k], p_t=0.6 if acc else 0.2, p_d=0.5,
                                ratio=1.0 if acc else 0.4, uniform=u, accepted=acc, target_topk=[]))
    appended, kind = 399, ("bonus" if n_acc == ell else "correction")
    path, B = [], load
    for j in range(1, gamma + 1):  # candidates (r, j) by descending a, round-robin over requests
        for r in range(load):
            B += 1
            path.append(AdmissionStep(r=r, j=j, a=0.9 ** j, B=B, tau=1 + 0.9 * j,
                                      theta=100.0 * j / (1 + 0.01 * B), admitted=j <= ell))
    sched = Schedule(policy="hardware", lossless=True, load=load, ell=ell, gamma=gamma,
                     stop=(f"no improvement: Θ 1.234e+04 ≤ 1.235e+04 at (r={load - 1}, j={ell + 1}, "
                           f"B={B})"), capacity="h200-qwen3-8b", path=path)
    return Round(index=i, request=0, anchor=5, anchor_pos=3 + i, draft=draft, schedule=sched,
                 verify=verify, n_accepted=n_acc, appended=appended, appended_kind=kind,
                 appended_topk=[], committed=toks[:n_acc] + [appended], dropped=toks[ell:],
                 eos=False, timings=Timings(draft_ms=1.0, verify_ms=2.0, total_ms=3.0))


def _trace(rounds: list[Round], *, gamma: int, load: int = 1, sampled: bool = True) -> Trace:
    new = 1 + sum(len(r.committed) for r in rounds)
    verified = sum(len(r.verify) for r in rounds)
    acc = sum(r.n_accepted for r in rounds)
    max_b = max((p.B for r in rounds for p in r.schedule.path), default=load) + 8
    meta = TraceMeta(target="hand", drafter="hand", mode="dspark", gamma=gamma,
                     temperature=1.0 if sampled else 0.0, top_k=0, top_p=1.0, seed=0,
                     max_new_tokens=64, policy="hardware", prompt="p", prompt_ids=[2, 3],
                     first_token=7, device="cpu", created="now", calibrated=True, load=load,
                     capacity="h200-qwen3-8b",
                     capacity_curve=CurveSample("h200-qwen3-8b", load,
                                                [100.0 / (1 + 0.01 * b) for b in range(1, max_b)]))
    summary = Summary(rounds=len(rounds), new_tokens=new, drafted=sum(len(r.draft) for r in rounds),
                      verified=verified, accepted=acc, tau_mean=(new - 1) / len(rounds),
                      acceptance_rate=acc / verified if verified else 0.0,
                      target_forwards=1 + len(rounds), tokens_per_forward=new / (1 + len(rounds)),
                      wall_s=1.0, tokens_per_s=float(new), stop_reason="max_new_tokens")
    t = Trace(version=SCHEMA_VERSION, meta=meta, rounds=rounds, summary=summary, vocab=VOCAB, text="")
    return Trace.from_dict(t.to_dict())  # the core's validation: the hand-built trace is consistent


def _data(fig) -> dict:
    return json.loads(fig.to_json())


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


# ----------------------------------------------------------------------------- verification
def test_positions_after_the_first_rejection_are_greyed_out():
    tr = _trace([_round(0, gamma=7, ell=7, n_acc=1)], gamma=7)  # x1 ✓, x2 ✗, x3..x7 not reached
    assert F.unreached_positions(tr.rounds[0]) == [3, 4, 5, 6, 7]
    fig = _data(F.verify_figure(tr, 0))
    named = {t["name"]: t for t in fig["data"] if t.get("name")}
    for name in ("p_t(x_k) target", "p_d(x_k) drafter"):
        m = named[name]["marker"]
        assert m["color"][:2] == [F.COLORS[name[:3]]] * 2 and m["color"][2:] == [F.UNREACHED] * 5
        assert m["opacity"][:2] == [1.0, 1.0] and m["opacity"][2:] == [F.UNREACHED_OPACITY] * 5
        assert all("not reached" in c for c in named[name]["customdata"][2:])
    ratio = named["ratio min(1, p_t/p_d)"]
    assert ratio["y"][2:] == [None] * 5  # the ratio line stops at the first rejection …
    grey = named["ratio (not reached)"]  # … its marks go on, greyed
    assert grey["x"] == [3, 4, 5, 6, 7] and grey["marker"]["color"] == F.UNREACHED
    dec = [t for t in fig["data"] if t.get("mode") == "text"][0]
    assert dec["text"] == ["✓", "✗"] + ["·"] * 5
    assert dec["textfont"]["color"][2:] == [F.UNREACHED] * 5
    band = [s for s in fig["layout"]["shapes"] if s["type"] == "rect"]
    assert len(band) == 1 and (band[0]["x0"], band[0]["x1"]) == (2.5, 7.5)
    label = [a for a in fig["layout"]["annotations"] if a["text"] == "not reached"]
    assert len(label) == 1 and 2.5 < label[0]["x"] < 7.5
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert all("#9e9e9e" in t for t in ticks[2:]) and not any("#9e9e9e" in t for t in ticks[:2])


def test_all_accepted_round_has_nothing_greyed():
    tr = _trace([_round(0, gamma=7, ell=7, n_acc=7)], gamma=7)
    assert F.unreached_positions(tr.rounds[0]) == []
    fig = _data(F.verify_figure(tr, 0))
    named = {t["name"]: t for t in fig["data"] if t.get("name")}
    assert named["p_t(x_k) target"]["marker"]["color"] == F.COLORS["p_t"]
    assert named["p_t(x_k) target"]["marker"]["opacity"] == 1.0
    assert "ratio (not reached)" not in named
    assert not fig["layout"].get("shapes")
    assert not any(a["text"] == "not reached" for a in fig["layout"]["annotations"])
    dec = [t for t in fig["data"] if t.get("mode") == "text"][0]
    assert dec["text"] == ["✓"] * 7 and F.UNREACHED not in dec["textfont"]["color"]
    # the last position rejected: still nothing after it to grey out
    last = _data(F.verify_figure(_trace([_round(0, gamma=7, ell=7, n_acc=6)], gamma=7), 0))
    assert not last["layout"].get("shapes")


# ----------------------------------------------------------------------------- layout (narrow columns)
def _title_px(lay: dict) -> float:
    t = lay["title"]
    return t["pad"]["t"] + t["text"].count("<br>") * t["font"]["size"] * F.LINE_SPACING + t["font"]["size"]


@pytest.mark.parametrize("big", [False, True])
def test_titles_and_notes_fit_a_narrow_column(big):
    tr = _trace([_round(0, gamma=7, ell=7, n_acc=1, load=256)], gamma=7, load=256)
    figs = {"verify": F.verify_figure(tr, 0, big=big),
            "admission": F.admission_figure(tr, 0, big=big, sps=tr.meta.capacity_curve.sps_at),
            "draft": F.draft_block_figure(tr, 0, big=big),
            "confidence": F.confidence_figure(tr, 0, big=big),
            "confidence-note": F.confidence_figure(tr, 0, big=big, note=(
                "c_5, c_6, c_7 calibrated ≈ 0.50, pinned: their STS temperatures sit at the top "
                "of the fit grid (T ≈ 200, sigmoid(logit/T) → ½)"))}
    for name, fig in figs.items():
        lay = _data(fig)["layout"]
        lines = [_plain(x) for x in lay["title"]["text"].split("<br>")]
        # one title line of ≤ 48 characters (15 px) and subtitle lines of ≤ 56 (70 %): ~450 px
        assert len(lines[0]) <= 48 and all(len(x) <= F.SUBTITLE_CHARS for x in lines[1:]), (name, lines)
        if name in ("verify", "admission", "confidence-note"):  # pinned to the top, in a margin that holds it
            assert lay["title"]["yanchor"] == "top" and lay["title"]["yref"] == "container"
            # plotly lifts a multi-line title by ≈ 0.7 font sizes: padded back below the badge
            if len(lines) > 1:
                assert lay["title"]["pad"]["t"] >= F.TITLE_PAD + 0.7 * lay["title"]["font"]["size"]
            top_notes = [a for a in lay.get("annotations", []) if a.get("yref") == "paper"
                         and a.get("y") == 1 and a.get("yanchor") == "bottom"]
            note_px = sum((a.get("yshift") or 0) + a["text"].count("<br>") * a["font"]["size"]
                          * F.LINE_SPACING + a["font"]["size"] for a in top_notes)
            assert _title_px(lay) + note_px <= lay["margin"]["t"], name
    sched = _data(figs["admission"])["layout"]
    assert "lossless" in sched["title"]["text"]  # the whole stop line, wrapped, not cut
    assert sched["yaxis2"]["side"] == "right"  # SPS's axis never between the two panels
    assert sched["xaxis"]["domain"][1] < sched["xaxis2"]["domain"][0]
    # draft block: the ★ footer below the tick labels, from the left edge, in short lines
    lay = _data(figs["draft"])["layout"]
    foot = lay["annotations"][0]
    ax = next(v for k, v in lay.items() if k.startswith("xaxis") and v.get("showticklabels"))
    tick_lines = max(t.count("<br>") + 1 for t in ax["ticktext"])
    assert tick_lines >= 2  # x_k above its fate mark: side by side they ran together at γ = 7
    # below every line of the tick labels
    assert foot["yshift"] <= -(tick_lines * ax["tickfont"]["size"] * F.LINE_SPACING + 8)
    # every tick line short: a label never reaches into its neighbour's column
    assert all(len(_plain(x)) <= 3 for t in ax["ticktext"] for x in t.split("<br>"))
    assert foot["xshift"] < 0 and -foot["xshift"] < lay["margin"]["l"]
    foot_px = -foot["yshift"] + (foot["text"].count("<br>") + 1) * foot["font"]["size"] * F.LINE_SPACING
    assert foot_px <= lay["margin"]["b"]
    assert all(len(_plain(x)) <= 64 for x in foot["text"].split("<br>"))


# ----------------------------------------------------------------------------- sweep γ, R
def _figures(tr: Trace) -> dict:
    ex = Explorer([Lane("dspark", "DSpark lane", tr)], source="replay")
    ex.seek(len(tr.rounds))
    v = view_of(ex)
    return {p.name: p.render(v) for p in PANELS}


@pytest.mark.parametrize("gamma", [1, 16])
@pytest.mark.parametrize("load", [1, 256])
def test_every_figure_builds_for_gamma_and_load(gamma, load):
    rounds = [_round(0, gamma=gamma, ell=gamma, n_acc=gamma, load=load),
              _round(1, gamma=gamma, ell=gamma, n_acc=0, load=load),
              _round(2, gamma=gamma, ell=max(1, gamma // 2), n_acc=max(0, gamma // 4), load=load)]
    tr = _trace(rounds, gamma=gamma, load=load)
    out = _figures(tr)
    for name, fig in out.items():
        if hasattr(fig, "to_json"):
            d = _data(fig)
            assert d["layout"]["title"]["text"] and "press Step" not in json.dumps(d), name
        else:
            assert isinstance(fig, str), name
    draft = _data(out["draft"])
    ticks = [v for k, v in draft["layout"].items() if k.startswith("xaxis") and v.get("showticklabels")]
    assert len(ticks) == 1 and len(ticks[0]["ticktext"]) == gamma
    boxes = draft["layout"]["shapes"]  # one box per x_k, on its cell's bounds at any γ
    assert len(boxes) == gamma and all(b["x1"] - b["x0"] < 1 for b in boxes)
    cells = [t for t in draft["data"] if t["type"] == "heatmap"][0]
    if gamma == 16:  # crowded: smaller cell text, short tokens, the fate under x_k
        assert cells["textfont"]["size"] < 11
        assert all(len(_plain(t.split("<br>")[0])) <= 3 for row in cells["text"] for t in row if t)
        assert all("<br>" in t for t in ticks[0]["ticktext"])
        ver = _data(F.verify_figure(tr, 1))["layout"]["xaxis"]  # ℓ = 16 verified
        assert ver["tickfont"]["size"] < 13 and all(len(_plain(t)) <= 6 for t in ver["ticktext"])
    sched = _data(out["admission"])
    pts = sum(len(t["x"]) for t in sched["data"] if t.get("xaxis", "x") == "x")
    assert pts <= 2 * F.MAX_FIGURE_POINTS + 8  # thinned line + markers, whatever R·γ is
    assert f"R = {load}" in sched["layout"]["title"]["text"]
    # the last round: ℓ = γ/2 verified of γ, with a rejection — the rest greyed
    r = tr.rounds[2]
    ver = _data(F.verify_figure(tr, 2))
    assert bool(ver["layout"].get("shapes")) == (len(r.verify) > r.n_accepted + 1)

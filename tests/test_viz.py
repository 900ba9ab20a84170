"""Pure viz layer: token HTML (fates, escaping, visible whitespace), round figures, playback."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from conftest import make_drafter
from dspark_viz.config import ConfigError, DecodeConfig
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.load.policy_spec import policy_from_spec
from dspark_viz.decoding.trace import Trace
from dspark_viz.viz import figures as F
from dspark_viz.viz import tokens as T
from dspark_viz.viz.app_state import TOUR, Explorer, Lane, extend_live, tour_markdown
from dspark_viz.viz.panels import PANEL_NAMES, PANELS, panels_named, trace_sps, view_of


def _run(target, drafter, policy="fixed", n=30, **kw):
    cfg = DecodeConfig(max_new_tokens=n, **kw)
    s = SpecSession(target, drafter, cfg, policy=policy_from_spec(policy, cfg.gamma),
                    drafter_name="untrained (test)")
    return s.run("def f(x):\n\treturn x")


@pytest.fixture(scope="module")
def traces(tiny_qwen):
    d = make_drafter(tiny_qwen)
    return {
        "fixed2": _run(tiny_qwen, d, "fixed:2"),
        "threshold": _run(tiny_qwen, d, "threshold:0.5"),
        "hardware": _run(tiny_qwen, d, "hardware"),
        "sampled": _run(tiny_qwen, d, "fixed", temperature=1.0, seed=3),
        "ar": _run(tiny_qwen, None, n=10, mode="ar"),
    }


def _fates(html_text):
    import re
    return re.findall(r'data-fate="(\w+)"', html_text)


# ----------------------------------------------------------------------------- tokens
def test_token_fates_count_every_token(traces):
    tr = traces["fixed2"]
    fates = [f for _, _, f, _ in T.token_fates(tr)]
    assert fates.count("accepted") == sum(min(r.n_accepted, len(r.committed)) for r in tr.rounds)
    assert fates.count("dropped") == sum(len(r.draft) - len(r.verify) for r in tr.rounds)
    assert all(len(r.dropped) >= 5 for r in tr.rounds)  # fixed:2 verifies ≤ 2 of γ = 7
    assert fates.count("rejected") == sum(len(r.verify) - r.n_accepted for r in tr.rounds)
    kept = [t for _, t, f, _ in T.token_fates(tr) if f not in ("rejected", "dropped")]
    assert kept == tr.output_ids()  # the kept tokens are exactly the output, in order
    no_disc = T.token_fates(tr, discarded=False)
    assert [t for _, t, _, _ in no_disc] == tr.output_ids()


def test_tokens_html_partial_and_kinds(traces):
    tr = traces["threshold"]
    h2 = T.tokens_html(tr, 2)
    assert _fates(h2).count("first") == 1
    assert sum(1 for f in _fates(h2) if f in ("correction", "bonus", "target")) == 2  # one per round
    assert len(_fates(T.tokens_html(tr, 5))) > len(_fates(h2))
    assert set(_fates(T.tokens_html(traces["ar"]))) <= {"prompt", "first", "target"}


def test_token_html_escapes_and_shows_whitespace(traces):
    tr = copy.deepcopy(traces["fixed2"])
    tok = tr.rounds[0].committed[0]
    tr.vocab[str(tok)] = '<script>alert("x")</script> \n\t\x02'
    h = T.tokens_html(tr, 1)
    assert "<script>" not in h and "&lt;script&gt;" in h
    assert "·" in h and "⏎" in h and "→" in h and "0x02" in h
    assert 'class="dsv-sp">&lt;eos&gt;' in T.visible_text("<eos>")
    assert "∅" in T.visible_text("")
    page = T.page_html(tr)
    assert all(T.FATES[f][0] in page for f in ("accepted", "rejected", "correction", "bonus", "dropped"))


# ----------------------------------------------------------------------------- figures
def _data(fig):
    return json.loads(fig.to_json())


def test_draft_block_marks_markov_changes(traces):
    tr = copy.deepcopy(traces["threshold"])
    r = tr.rounds[1]
    assert not any(F.markov_changed(r))  # untrained head: biases too small to flip a choice
    d = r.draft[2]
    d.corrected_topk = [d.corrected_topk[1], d.corrected_topk[0]] + d.corrected_topk[2:]
    assert F.markov_changed(r) == [k == 2 for k in range(len(r.draft))]
    fig = _data(F.draft_block_figure(tr, 1))
    tick = fig["layout"]["xaxis3"]["ticktext"]
    assert "★" in tick[2] and sum("★" in t for t in tick) == 1
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heat) == 3  # base, bias, corrected
    assert heat[0]["z"][0][0] == pytest.approx(r.draft[0].base_topk[0].prob)
    assert heat[1]["z"][0][0] == pytest.approx(r.draft[0].boosted[0].bias)


def test_draft_block_without_markov_and_plain(traces, tiny_qwen):
    tr = _run(tiny_qwen, make_drafter(tiny_qwen), "fixed", n=8, markov_off=True)
    fig = _data(F.draft_block_figure(tr, 0))
    assert len([t for t in fig["data"] if t["type"] == "heatmap"]) == 2
    assert "plain decoding" in json.dumps(_data(F.draft_block_figure(traces["ar"], 0)))
    assert "press Step" in json.dumps(_data(F.draft_block_figure(traces["fixed2"], -1)))


def test_confidence_figure_values_and_ell(traces):
    tr = traces["threshold"]
    for i in (0, 3):
        r = tr.rounds[i]
        fig = _data(F.confidence_figure(tr, i))
        bars = [t for t in fig["data"] if t["type"] == "bar"]
        assert bars[0]["y"] == pytest.approx([d.conf_raw for d in r.draft])
        assert bars[1]["y"] == pytest.approx([d.conf_cal for d in r.draft])
        line = [s for s in fig["layout"]["shapes"] if s["type"] == "line"][0]
        assert line["x0"] == len(r.verify) + 0.5
        assert f"ℓ = {len(r.verify)}" in fig["layout"]["title"]["text"]


def test_verify_figure_matches_trace(traces):
    tr = traces["sampled"]
    r = next(r for r in tr.rounds if r.n_accepted < len(r.verify))
    fig = _data(F.verify_figure(tr, r.index))
    named = {t.get("name"): t for t in fig["data"]}
    assert named["p_t(x_k) target"]["y"] == pytest.approx([v.p_t for v in r.verify])
    assert named["p_d(x_k) drafter"]["y"] == pytest.approx([v.p_d for v in r.verify])
    us = [v.uniform for v in r.verify if v.uniform is not None]
    assert named["uniform u (accept if u < ratio)"]["y"] == pytest.approx(us)
    dec = [t for t in fig["data"] if t.get("mode") == "text"][0]["text"]
    assert dec[r.n_accepted] == "✗" and dec[: r.n_accepted] == ["✓"] * r.n_accepted
    greedy = _data(F.verify_figure(traces["threshold"], 0))
    assert "argmax" in json.dumps(greedy) and not any("uniform" in (t.get("name") or "") for t in greedy["data"])


def test_admission_figure_path_and_capacity(traces):
    from dspark_viz.load.capacity import get_curve
    tr = traces["hardware"]
    r = tr.rounds[0]
    assert r.schedule.path, "the hardware-aware policy records its admission path"
    curve = get_curve("h200-qwen3-8b")
    fig = _data(F.admission_figure(tr, 0, sps=curve.sps))
    xs = [x for t in fig["data"] if t.get("xaxis", "x") == "x" for x in t["x"]]
    assert sorted(set(xs)) == sorted({p.B for p in r.schedule.path})
    op = [t for t in fig["data"] if t.get("name") == "operating point"][0]
    assert op["y"][0] == pytest.approx(curve.sps(op["x"][0]))
    fixed = json.dumps(_data(F.admission_figure(traces["fixed2"], 0)))
    assert "no admission search" in fixed


def test_tau_and_metrics(traces):
    tr = traces["threshold"]
    fig = _data(F.tau_figure(tr, 4))
    acc, tgt = fig["data"][0]["y"], fig["data"][1]["y"]
    assert [a + b for a, b in zip(acc, tgt)] == [r.tau for r in tr.rounds[:4]]
    st = F.run_stats(tr)
    assert st["tau"] == pytest.approx(tr.summary.tau_mean)
    assert st["tokens"] + 1 == tr.summary.new_tokens
    m = F.metrics_html([("dspark", tr, len(tr.rounds)), ("plain", traces["ar"], 3)])
    assert "speedup vs plain" in m and "accepted draft tokens + 1 target token" in m
    assert "speedup" not in F.metrics_html([("dspark", tr, 2)]).split("<ul")[0]


# ----------------------------------------------------------------------------- playback
def test_explorer_cursor_and_play_ticks(traces):
    tr = traces["fixed2"]
    ex = Explorer([Lane("replay", "r", tr)], source="replay")
    assert ex.forward(3) == 3 and ex.cursor == 3
    ex.back(5)
    assert ex.cursor == 0
    ex.seek(10 ** 6)
    assert ex.cursor == len(tr.rounds) and ex.at_end and ex.forward(1) == 0
    assert [ex.tick_rounds(3, 0.25) for _ in range(4)] == [0, 1, 1, 1]  # 0.75 per tick, carried


def test_explorer_extends_live_lanes(tiny_qwen):
    s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(max_new_tokens=12))
    s.prefill("ab")
    ex = Explorer([Lane("dspark", "d", s.trace(), s)])
    calls = []

    def extend(e):
        calls.append(1)
        return extend_live(e)

    assert ex.forward(2, extend) == 2 and len(calls) == 2 and len(ex.main.trace.rounds) == 2
    ex.back(1)
    assert ex.forward(1, extend) == 1 and len(calls) == 2  # replayed, not recomputed
    ex.forward(100, extend)
    assert ex.at_end and s.done and ex.cursor == len(s.rounds)


# ----------------------------------------------------------------------------- panels
def test_panel_registry_renders_every_panel(traces):
    assert len(set(PANEL_NAMES)) == len(PANELS) and all(p.kind in ("plot", "html") for p in PANELS)
    ex = Explorer([Lane("dspark", "DSpark lane", traces["hardware"]),
                   Lane("plain", "plain lane", traces["ar"])], source="replay")
    assert view_of(ex).i == -1 and "press Step" in dict(zip(PANEL_NAMES, (
        p.render(view_of(ex)) for p in PANELS)))["summary"]
    ex.seek(2)
    v = view_of(ex)
    out = {p.name: p.render(v) for p in PANELS}
    for p in PANELS:
        assert isinstance(out[p.name], str) if p.kind == "html" else hasattr(out[p.name], "to_json")
    assert "DSpark lane" in out["text"] and "plain lane" not in out["text"]
    assert "plain lane" in out["lanes"] and "speedup vs plain" in out["metrics"]
    sched = _data(out["admission"])
    assert any(t.get("name") == "operating point" for t in sched["data"])  # the trace's own curve
    assert [p.name for p in panels_named(("verify", "text"))] == ["verify", "text"]
    with pytest.raises(ConfigError, match="unknown panels"):
        panels_named(["nope"])


def test_capacity_curve_from_the_trace_or_its_name(traces):
    from dspark_viz.load.capacity import get_curve
    tr = traces["hardware"]
    sample = tr.meta.capacity_curve
    assert sample is not None and trace_sps(tr)(3) == sample.sps_at(3)
    assert trace_sps(traces["fixed2"]) is None  # a policy without a curve
    old = copy.copy(tr)  # a version-1 trace: the curve by its recorded name, bound to the load
    old.meta = dataclasses.replace(tr.meta, capacity_curve=None, capacity="h200-qwen3-8b", load=4)
    assert trace_sps(old)(9) == pytest.approx(get_curve("h200-qwen3-8b").for_load(4).sps(9))
    old.meta = dataclasses.replace(old.meta, capacity="profiled:elsewhere")
    assert trace_sps(old) is None


def test_tour_content():
    assert tour_markdown(-1) == "" and tour_markdown(len(TOUR)) == ""
    assert all(f"Tour {i + 1}/{len(TOUR)}" in tour_markdown(i) for i in range(len(TOUR)))


def test_app_command_registered():
    from dspark_viz.cli import build_parser
    a = build_parser().parse_args(["app", "--port", "7999", "--no-preload"])
    assert a.port == 7999 and callable(a.func)


# ----------------------------------------------------------------------------- notebook fixes (issue 20)
def test_sampled_token_boxed_even_outside_the_top_candidates(traces):
    tr = copy.deepcopy(traces["sampled"])
    r = tr.rounds[0]
    d = r.draft[1]
    ranks = [c.token for c in d.corrected_topk[:4]]
    d.token = next(t for t in range(10_000) if t not in ranks)  # drawn from below the 4 shown
    tr.vocab.setdefault(str(d.token), "zz")
    for other in r.draft:  # every other x_k among the shown ones
        if other is not d and other.token not in [c.token for c in other.corrected_topk[:4]]:
            other.token = other.corrected_topk[0].token
    fig = _data(F.draft_block_figure(tr, 0))
    shapes = fig["layout"]["shapes"]  # a rectangle on each sampled cell's bounds
    boxes = {"x": [(b["x0"] + b["x1"]) / 2 for b in shapes], "y": [(b["y0"] + b["y1"]) / 2 for b in shapes]}
    assert boxes["x"] == pytest.approx([p.k for p in r.draft])  # one box per position, always
    assert all(b["x1"] - b["x0"] < 1 and b["y1"] - b["y0"] < 1 for b in shapes)  # inside its cell
    assert boxes["y"][1] == pytest.approx(4)  # the extra row below the top 4
    assert [y for k, y in zip(boxes["x"], boxes["y"]) if round(k) != 2] == \
        [[c.token for c in p.corrected_topk[:4]].index(p.token) for p in r.draft if p is not d]
    corr = [t for t in fig["data"] if t["type"] == "heatmap"][-1]
    assert len(corr["z"]) == 5 and corr["z"][4][1] == pytest.approx(d.p_d)
    assert sum(v is not None for v in corr["z"][4]) == 1
    yax = [v for k, v in fig["layout"].items() if k.startswith("yaxis")][-1]
    assert yax["ticktext"][-1].startswith("x_k")
    plain = _data(F.draft_block_figure(traces["sampled"], 0))  # untouched: no extra row needed
    rows = len([t for t in plain["data"] if t["type"] == "heatmap"][-1]["z"])
    outside = any(p.token not in [c.token for c in p.corrected_topk[:4]] for p in traces["sampled"].rounds[0].draft)
    assert rows == 4 + outside


def test_rounds_numbered_from_one_everywhere(traces):
    tr = traces["threshold"]
    assert "round 1 " in _data(F.draft_block_figure(tr, 0))["layout"]["title"]["text"]
    assert "round 1:" in _data(F.confidence_figure(tr, 0))["layout"]["title"]["text"]
    assert "round <b>1</b>" in F.round_summary_html(tr, 0)
    assert "round 3:" in _data(F.verify_figure(traces["sampled"], 2))["layout"]["title"]["text"]
    assert "round 1 ·" in T.token_fates(tr, 1)[1][3]
    tau = _data(F.tau_figure(tr, 3))
    assert tau["data"][0]["x"] == [1, 2, 3]
    assert tau["layout"]["xaxis"]["tick0"] == 1 and tau["layout"]["xaxis"]["dtick"] >= 1


def test_ell_zero_target_token_is_not_a_bonus(traces):
    tr = copy.deepcopy(traces["threshold"])
    r = tr.rounds[0]
    r.verify, r.n_accepted, r.appended_kind = [], 0, "bonus"
    r.committed = r.committed[:1]
    assert T.appended_fate(r) == "target"
    fate = [f for rnd, _, f, _ in T.token_fates(tr, 1) if rnd == 0 and f not in ("dropped",)]
    assert fate == ["target"]
    assert "bonus" not in F.round_summary_html(tr, 0) and "ℓ = 0" in F.round_summary_html(tr, 0)
    assert "bonus" not in json.dumps(_data(F.verify_figure(tr, 0)))


def test_admission_legend_marks_one_stop(traces):
    from dspark_viz.decoding.trace import AdmissionStep
    retro = copy.deepcopy(traces["hardware"])  # a search without early stop records the whole path
    r0 = retro.rounds[0]
    r0.schedule.path = [AdmissionStep(0, j, 0.9 ** j, 1 + j, 1 + 0.9 * j, 10.0 - j, j <= 2)
                        for j in range(1, 6)]
    r0.schedule.stop = "global arg-max Θ 8 after 2 of 5 candidates (no early stop; lossy)"
    for tr, first in ((traces["hardware"], None), (retro, "first not admitted")):
        for i, r in enumerate(tr.rounds[:1] if first else tr.rounds):
            fig = _data(F.admission_figure(tr, i))
            named = {t.get("name"): t for t in fig["data"] if t.get("name")}
            refused = [p for p in r.schedule.path if not p.admitted]
            assert all(len(n) <= 20 for n in named), named  # fits a fixed-width legend entry
            stops = [n for n in named if n.startswith(("first ", "stop: "))]
            assert len(stops) == (1 if refused else 0)
            if refused:
                assert named[stops[0]]["x"] == [refused[0].B]
                assert stops[0] == first or (r.schedule.stop.startswith("no improvement") and
                                             stops[0] == "stop: no improvement")
            assert len(named.get("not admitted", {"x": []})["x"]) == max(0, len(refused) - 1)
    assert len(_data(F.admission_figure(retro, 0))["data"]) == 4  # line, admitted, stop, the rest

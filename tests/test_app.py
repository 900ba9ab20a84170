"""The Gradio app driven through ``gradio_client`` on tiny models (and one slow embedded check)."""
from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import pytest

from conftest import make_drafter

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app as appmod  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from dspark_viz.config import DecodeConfig  # noqa: E402
from dspark_viz.decoding.engine import SpecSession  # noqa: E402
from dspark_viz.decoding.policy import parse_policy  # noqa: E402
from dspark_viz.decoding.trace import Trace  # noqa: E402

DEFAULTS = dict(source="live model", prompt="def f(x):", target_spec=None, drafter_spec="default",
                trace_file=None, gamma=7, temperature=0.0, seed=0, max_tokens=24,
                policy="threshold:0.5", load=1, capacity=appmod.NO_CURVE, calibration=True,
                markov_off=False, force_ell="off", compare=False, big=False, demo_trace=None)
ORDER = list(DEFAULTS)


def start_args(target, **kw):
    d = dict(DEFAULTS, **{"target_spec": target.name, **kw})
    return [d[k] for k in ORDER]


@pytest.fixture(scope="module")
def served(tiny_qwen):
    drafter = make_drafter(tiny_qwen)
    demo = appmod.build_app(tiny_qwen, drafter, drafter_label="untrained (random, test)")
    _, url, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url, tiny_qwen, drafter
    demo.close()


def _round_of(status: str) -> tuple[int, int]:
    """(rounds shown, rounds there are) from the status line ("after prefill" is round 0)."""
    if "after prefill" in status:
        m = re.search(r"(\d+) rounds recorded", status)
        return 0, int(m.group(1)) if m else 0
    m = re.search(r"round (\d+) of (\d+)", status)
    assert m, status
    return int(m.group(1)), int(m.group(2))


def _solo(target, drafter, n_rounds, **kw):
    d = dict(DEFAULTS, **kw)
    cfg = DecodeConfig(gamma=d["gamma"], temperature=d["temperature"], seed=d["seed"],
                       max_new_tokens=d["max_tokens"])
    s = SpecSession(target, drafter, cfg, policy=parse_policy(d["policy"], cfg.gamma))
    s.prefill(d["prompt"])
    for _ in range(n_rounds):
        s.step()
    return s.trace()


def _solo_all(target, drafter, **kw):
    """The whole run a solo session makes with these settings (to EOS or max new tokens)."""
    d = dict(DEFAULTS, **kw)
    cfg = DecodeConfig(gamma=d["gamma"], temperature=d["temperature"], seed=d["seed"],
                       max_new_tokens=d["max_tokens"])
    s = SpecSession(target, drafter, cfg, policy=parse_policy(d["policy"], cfg.gamma))
    s.prefill(d["prompt"])
    while not s.done:
        s.step()
    return s.trace()


def test_export_finishes_the_run_first(tiny_qwen):
    from dspark_viz.viz.app_state import Explorer, Lane
    pool = appmod.ModelPool(tiny_qwen, make_drafter(tiny_qwen))
    ex = appmod.new_live(pool, **{k: v for k, v in dict(DEFAULTS, max_tokens=10).items()
                                  if k not in ("source", "trace_file", "big")})
    ex.forward(2, lambda e: appmod._extend(pool, e))
    export = appmod._status_beside(appmod.partial(appmod.on_export_trace, pool=pool), appmod.export_note)
    files, status = export(ex)
    tr = Trace.load(files[0])
    assert ex.cursor == 2 and not ex.extendable and len(tr.rounds) == ex.total_rounds > 2
    assert tr.summary.new_tokens == 10 and tr.summary.stop_reason == "max_new_tokens"
    assert f"exported dspark {len(tr.rounds)} rounds — the whole run" in status
    assert appmod.finish_run(pool, ex) == 0  # nothing left: a second export computes nothing
    again, status2 = export(ex)
    assert Trace.load(again[0]).to_dict() == tr.to_dict() and "dsv-error" not in status2
    # a replayed trace (no session) exports as it is, and says so
    rep = Explorer([Lane("replay", "r", tr.__class__.from_dict(tr.to_dict()))], source="replay")
    files, status = export(rep)
    assert len(Trace.load(files[0]).rounds) == len(tr.rounds) and "the whole run" in status
    appmod.drop_exports(ex), appmod.drop_exports(rep)


def test_start_step_back_seek_export(served):
    url, target, drafter = served
    c = Client(url, verbose=False)
    out = c.predict(*start_args(target), api_name="/start")
    assert _round_of(out[0]) == (0, 0)
    assert "untrained" in out[0]  # the untrained drafter is labelled on the page
    seen = []
    for k in range(1, 4):
        out = c.predict(False, api_name="/step")
        assert _round_of(out[0]) == (k, k)
        seen.append((out[2], out[4]["plot"], out[7]["plot"]))  # text, draft block, verification
    for a, b in zip(seen, seen[1:]):
        assert a[0] != b[0] and a[1] != b[1]  # text and draft panel change every round
    back = c.predict(False, api_name="/back")
    assert _round_of(back[0]) == (2, 3) and back[2] == seen[1][0] and back[4]["plot"] == seen[1][1]
    fwd = c.predict(False, api_name="/step")  # replays the recorded round, no recompute
    assert fwd[2] == seen[2][0]
    c.predict(0, False, api_name="/seek")
    files, status = c.predict(api_name="/export_trace")  # the whole run, not the 3 rounds so far
    assert "dsv-error" not in status
    tr = Trace.load(files[0])
    solo = _solo_all(target, drafter)
    assert len(tr.rounds) == len(solo.rounds) > 3 and tr.summary.new_tokens == DEFAULTS["max_tokens"]
    assert [r.committed for r in tr.rounds] == [r.committed for r in solo.rounds]
    assert f"exported dspark {len(tr.rounds)} rounds — the whole run" in status
    assert _round_of(status) == (0, len(tr.rounds))  # computed, the cursor where it was
    zips = c.predict(api_name="/export_figures")[0]
    import zipfile
    names = zipfile.ZipFile(zips[0]).namelist()
    assert {"draft_block.html", "verification.html", "plotly.min.js", "text.html"} <= set(names)


def test_compare_mode_lanes_and_speedup(served):
    url, target, _ = served
    c = Client(url, verbose=False)
    c.predict(*start_args(target, compare=True, policy="fixed"), api_name="/start")
    out = c.predict(False, api_name="/step")
    out = c.predict(False, api_name="/step")
    metrics, lanes = out[10], out[11]
    assert "speedup vs plain" in metrics and "dflash" in metrics and "plain" in metrics
    assert "DFlash ablation" in lanes and "plain target decoding" in lanes
    files = c.predict(api_name="/export_trace")[0]
    modes = sorted(Trace.load(f).meta.mode for f in files)
    assert modes == ["ar", "dflash", "dspark"]
    plain = next(Trace.load(f) for f in files if Trace.load(f).meta.mode == "ar")
    assert all(r.tau == 1 for r in plain.rounds) and plain.summary.new_tokens == DEFAULTS["max_tokens"]
    assert plain.summary.stop_reason == "max_new_tokens"  # the whole run, not the 2 rounds shown


def test_load_scheduler_and_load_view(served):
    url, target, _ = served
    c = Client(url, verbose=False)
    out = c.predict(*start_args(target, policy="hardware", load=16, capacity="h200-qwen3-8b"),
                    api_name="/start")
    assert "R = 16" in out[0] and "replay" in out[0]
    out = c.predict(False, api_name="/step")
    sched = json.loads(out[6]["plot"])
    assert "R = 16" in sched["layout"]["title"]["text"]
    assert any(t.get("name") == "operating point" for t in sched["data"])
    fig = json.loads(c.predict(7, "h200-qwen3-8b", 16, False, api_name="/load_view")[0]["plot"])
    names = {t.get("name") for t in fig["data"]}
    assert {"fixed(1)", "fixed(7)", "hardware", "current R = 16"} <= names


def test_replay_play_ticks_and_bad_files(served, tmp_path):
    url, target, drafter = served
    tr = _solo(target, drafter, 0, max_tokens=60)
    s = SpecSession(target, drafter, DecodeConfig(max_new_tokens=60), policy=parse_policy("fixed", 7))
    tr = s.run("hello")
    path = tr.save(tmp_path / "t.json")
    c = Client(url, verbose=False)
    out = c.predict(*start_args(target, source="replay a trace file", trace_file=handle_file(str(path))),
                    api_name="/start")
    assert _round_of(out[0]) == (0, len(tr.rounds)) and "replay" in out[0]
    c.predict(api_name="/play")
    out = c.predict(4, False, api_name="/tick")  # 4 rounds/s × 0.5 s tick = 2 rounds
    assert _round_of(out[0])[0] == 2
    out = c.predict(120, False, api_name="/tick")
    assert _round_of(out[0])[0] == len(tr.rounds)  # clamped at the end, playback stops
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "meta": 3}')
    out = c.predict(*start_args(target, source="replay a trace file", trace_file=handle_file(str(bad))),
                    api_name="/start")
    assert "dsv-error" in out[0] and "trace" in out[0]
    out = c.predict(False, api_name="/step")  # the previous session is intact
    assert _round_of(out[0])[1] == len(tr.rounds)


@pytest.mark.parametrize("kw,needle", [
    (dict(prompt="   "), "prompt is empty"),
    (dict(prompt="x" * (appmod.MAX_PROMPT_CHARS + 1)), "limit"),
    (dict(temperature=5.0), "temperature"),
    (dict(force_ell="9"), "forced ℓ"),
    (dict(drafter_spec="/no/such/drafter"), "drafter"),
    (dict(target_spec="/no/such/target"), "target"),
])
def test_bad_input_is_reported_and_server_keeps_serving(served, kw, needle):
    url, target, _ = served
    c = Client(url, verbose=False)
    out = c.predict(*start_args(target, **kw), api_name="/start")
    assert "dsv-error" in out[0] and needle in out[0]
    out = c.predict(False, api_name="/step")
    assert "press Start" in out[0]
    ok = c.predict(*start_args(target), api_name="/start")
    assert "dsv-error" not in ok[0]


def test_eight_users_at_once_no_cross_talk(served):
    url, target, drafter = served
    n, steps = 8, 3
    results, errors = {}, []
    barrier = threading.Barrier(n)

    def user(i):
        try:
            c = Client(url, verbose=False)
            kw = dict(prompt=f"user {i}: ", temperature=1.0, seed=100 + i, policy="fixed:3")
            c.predict(*start_args(target, **kw), api_name="/start")
            barrier.wait(timeout=60)
            for _ in range(steps):
                c.predict(False, api_name="/step")
            results[i] = (kw, Trace.load(c.predict(api_name="/export_trace")[0][0]))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors and len(results) == n
    for i, (kw, tr) in results.items():
        solo = _solo_all(target, drafter, **kw)  # the export finishes the run
        assert tr.meta.prompt == kw["prompt"] and len(tr.rounds) == len(solo.rounds) >= steps
        assert tr.output_ids() == solo.output_ids(), f"user {i} differs from a solo run"


@pytest.mark.slow
def test_embedded_default_labels_untrained_drafter(embedded_target):
    from dspark_viz.drafter.registry import resolve_drafter
    drafter, label = resolve_drafter("default", embedded_target)
    demo = appmod.build_app(embedded_target, drafter, drafter_label=label)
    _, url, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        c = Client(url, verbose=False)
        out = c.predict(*start_args(embedded_target, max_tokens=16), api_name="/start")
        if "shipped" not in label:
            assert "untrained" in out[0]
        out = c.predict(False, api_name="/step")
        assert _round_of(out[0]) == (1, 1) and json.loads(out[4]["plot"])["data"]
    finally:
        demo.close()


# ----------------------------------------------------------------------------- issue 18: the demo
def test_shipped_demo_trace_replays_with_no_model_loaded():
    assert len(appmod.DEMO_MENU) >= 6  # code, math, prose × fixed, hardware-aware R = 64
    total = sum((appmod.TRACES_DIR / n).stat().st_size for n in appmod.SHIPPED_TRACES)
    assert total <= 2 * 2 ** 20
    demo = appmod.build_app(None, None)  # nothing loaded, nothing to load
    _, url, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        c = Client(url, verbose=False)
        entry = next(e for e in appmod.DEMO_MENU if e.startswith("code-hardware-R64"))
        args = dict(DEFAULTS, source=appmod.DEMO, demo_trace=entry, target_spec=None)
        out = c.predict(*[args[k] for k in ORDER], api_name="/start")
        shown, n = _round_of(out[0])
        assert (shown, n) == (0, len(appmod.load_shipped(entry).rounds)) and n > 5
        assert "hardware" in out[0] and "R = 64" in out[0]
        out = c.predict(False, api_name="/step")
        assert _round_of(out[0]) == (1, n)
        assert "round 1" in json.loads(out[4]["plot"])["layout"]["title"]["text"]  # one numbering
        sched = json.loads(out[6]["plot"])
        assert "R = 64" in sched["layout"]["title"]["text"]
        assert "Θ = τ*·SPS(B)" in out[12]  # the scheduler's terms beside its panel
        out = c.predict(120, False, api_name="/tick")  # not playing: nothing moves
        assert _round_of(out[0]) == (1, n)
        bad = dict(args, demo_trace="../../etc/passwd")
        out = c.predict(*[bad[k] for k in ORDER], api_name="/start")
        assert "dsv-error" in out[0] and "demo trace" in out[0]
    finally:
        demo.close()


def test_clean_text_keeps_the_output_and_strips_discarded_drafts(served):
    from dspark_viz.viz import text_view as TV
    from dspark_viz.viz.app_state import Explorer, Lane
    from dspark_viz.viz.panels import PANELS, view_of
    _, target, drafter = served
    tr = _solo(target, drafter, 4)
    html_ = TV.clean_html(tr, 4)
    body = html_.split('<div class="dsv-proposed">')[0]
    assert 'data-fate="rejected"' not in body and 'data-fate="dropped"' not in body
    assert "⏎" not in body and "<br>" not in body  # real newlines (pre-wrap), never markers
    gone = TV.discarded_of(tr, 3)
    assert len(gone) == len(tr.rounds[3].verify) - tr.rounds[3].n_accepted + len(tr.rounds[3].dropped)
    if gone:
        assert 'class="dsv-mark"' in body and "also proposed" in html_
    ex = Explorer([Lane("dspark", "lane", tr)], source="replay", cursor=4)
    text = next(p for p in PANELS if p.name == "text")
    assert text.render(view_of(ex)) != (ex.__setattr__("history", True) or text.render(view_of(ex)))
    assert "dsv-tokens" in text.render(view_of(ex))  # the old inline history on the toggle


def test_status_numbering_sessions_and_replay_settings(served, monkeypatch):
    _, target, drafter = served
    tr = _solo(target, drafter, 3, gamma=5, temperature=0.0, seed=7)
    from dspark_viz.viz.app_state import Explorer, Lane
    ex = Explorer([Lane("replay", "x", tr)], source="replay", settings=appmod._trace_settings(tr))
    assert "after prefill · 3 rounds recorded" in appmod.status_html(ex)
    assert "round 3 of 3 · finished" in appmod.status_html(ex.seek(3))
    ups = appmod.sidebar_of(ex)
    assert ups[1]["value"] == 5 and ups[3]["value"] == 7 and ups[0]["value"] == tr.meta.prompt
    s = appmod.Sessions(size=2)
    a = s.put("", ex)
    assert len(a) >= 16 and s.get(a) is ex and s.get("nope") is None
    s.put("", ex), s.put("", ex)
    assert s.get(a) is None  # least recently used out
    assert [u["value"] for u in appmod.demo_under_load()] == ["hardware", 64, appmod.NO_CURVE]
    step, text, pol, load, cap = appmod.on_tour(appmod.SCHEDULER_STEP - 1, 1)
    assert step == appmod.SCHEDULER_STEP and pol["value"] == "hardware" and load["value"] == 64
    notes = []
    monkeypatch.setattr(appmod, "confidence_problem", lambda p, d, cfg: "hardware needs confidences")
    appmod._policy_for("hardware", DecodeConfig(gamma=4), None, None, notes, "DFlash")
    assert notes and notes[0].startswith("DFlash lane:")


def test_implied_temperature_reads_the_sts_temperature_back():
    import math
    from dspark_viz.viz import panels as P
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    for raw, t in ((0.1778, 210.0), (0.8479, 1.3), (0.253, 0.4)):
        assert P.implied_temperature(raw, sig(logit(raw) / t)) == pytest.approx(t, rel=1e-6)
    assert P.implied_temperature(0.5, 0.5) is None and P.implied_temperature(0.3, 0.5) == math.inf
    # a shipped round with c_5…c_7 re-calibrated at T = 210 (what a fit at the grid's top ships)
    tr = _pinned_at(appmod.load_shipped(next(e for e in appmod.DEMO_MENU if e.startswith("code-hardware-R64"))),
                    2, (5, 6, 7))
    assert P.pinned_positions(tr, 2) == [5, 6, 7]
    assert P.pinned_positions(tr, 1) == []  # the shipped calibration (T_k ≈ 0.7–1.7) pins nothing


def _pinned_at(trace, i, ks, t=210.0):
    """A copy of ``trace`` whose round ``i`` has c_k = sigmoid(logit(raw) / t) at positions ``ks``."""
    import copy
    import math
    from dspark_viz.eval.calibration import sigmoid
    tr = copy.deepcopy(trace)
    for d in tr.rounds[i].draft:
        if d.k in ks:
            d.conf_cal = float(sigmoid(math.log(d.conf_raw / (1 - d.conf_raw)) / t))
    return tr


def test_pinned_calibration_is_explained_and_load_axes_are_labelled():
    from types import SimpleNamespace
    from dspark_viz.viz import load_figures as LF
    from dspark_viz.viz import panels as P
    from dspark_viz.viz.app_state import Explorer, Lane
    tr = _pinned_at(appmod.load_shipped(next(e for e in appmod.DEMO_MENU if e.startswith("prose-fixed"))),
                    3, (6, 7))
    i = next(i for i in range(len(tr.rounds)) if P.pinned_positions(tr, i))
    assert i == 3
    for k in P.pinned_positions(tr, i):
        d = tr.rounds[i].draft[k - 1]
        assert d.k == k and round(d.conf_cal, 2) == 0.5 and round(d.conf_raw, 2) != 0.5
    fig = P._confidence(P.view_of(Explorer([Lane("replay", "x", tr)], source="replay", cursor=i + 1)))
    assert any("pinned" in a.text for a in fig.layout.annotations)
    res = [SimpleNamespace(policy=p, R=R, throughput=1.0, per_user=1.0, budget=1.0)
           for p in ("fixed(7)", "hardware") for R in (1, 4, 64)]
    lf = LF.load_sweep_figure(res)
    for ax in ("xaxis", "xaxis2", "xaxis3"):
        a = lf.layout[ax]
        assert a.type == "log" and a.showticklabels and list(a.tickvals) == [1, 4, 64]

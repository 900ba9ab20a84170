"""The app as a trust boundary (issue 19): menus fixed at launch and checked on the server,
model loads outside the model lock with a bounded cache, the upload limit, one-line statuses for
every handler error, bounded figures on hostile traces, and temporary exports cleaned up."""
from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import make_drafter

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import app as appmod  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from dspark_viz.config import DecodeConfig  # noqa: E402
from dspark_viz.decoding.engine import SpecSession  # noqa: E402
from dspark_viz.decoding.policy import parse_policy  # noqa: E402
from dspark_viz.decoding.scheduler import HardwareAware  # noqa: E402
from dspark_viz.decoding.trace import Trace  # noqa: E402
from dspark_viz.errors import UserError  # noqa: E402
from dspark_viz.load import capacity as C  # noqa: E402
from dspark_viz.targets import TargetError  # noqa: E402
from dspark_viz.viz import figures as F  # noqa: E402
from dspark_viz.viz import panels as P  # noqa: E402
from dspark_viz.viz.app_state import Explorer, Lane  # noqa: E402

SLOW_HUB = "slow-org/unreachable-model"
REFUSED = "not one of the choices this server offers"
DEFAULTS = dict(source="live model", prompt="def f(x):", target_spec=None, drafter_spec="default",
                trace_file=None, gamma=4, temperature=0.0, seed=0, max_tokens=12,
                policy="fixed", load=1, capacity=appmod.NO_CURVE, calibration=True,
                markov_off=False, force_ell="off", compare=False, big=False, demo_trace=None)


def start_args(**kw):
    d = dict(DEFAULTS, **kw)
    return [d[k] for k in DEFAULTS]


def _status(out) -> str:
    return out[0] if isinstance(out, (list, tuple)) else out


def _one_line_error(status: str) -> str:
    assert "dsv-error" in status, status
    text = status.split("⚠", 1)[1].split("</div>", 1)[0].strip()
    assert text and "\n" not in text
    return text


def _bad_drafter_dir(root: Path, target, value) -> Path:
    d = make_drafter(target)
    path = d.save_pretrained(root / f"drafter-{type(value).__name__}")
    cfg = json.loads((Path(path) / "config.json").read_text())

    def put(o):
        for k in o:
            if k == "intermediate_size":
                o[k] = value
            elif isinstance(o[k], dict):
                put(o[k])
    put(cfg)
    (Path(path) / "config.json").write_text(json.dumps(cfg))
    return Path(path)


@pytest.fixture(scope="module")
def bad_dirs(tiny_qwen, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-drafters")
    return [_bad_drafter_dir(root, tiny_qwen, 1e11), _bad_drafter_dir(root, tiny_qwen, 10**11)]


@pytest.fixture(scope="module")
def served(tiny_qwen, bad_dirs):
    demo = appmod.build_app(tiny_qwen, make_drafter(tiny_qwen), drafter_label="untrained (test)",
                            allow_models=[SLOW_HUB, *map(str, bad_dirs)], model_cache=2)
    _, url, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture
def spies(monkeypatch):
    """Every target/drafter load and curve file read the app attempts, by argument."""
    seen = {"target": [], "drafter": [], "curve_file": []}
    real_target, real_drafter = appmod.load_target, appmod.resolve_drafter

    def target(spec, **kw):
        seen["target"].append(spec)
        return real_target(spec, **kw)

    def drafter(spec, tgt, kind="dspark"):
        seen["drafter"].append(spec)
        return real_drafter(spec, tgt, kind=kind)

    def curve_file(cls, path):
        seen["curve_file"].append(str(path))
        raise AssertionError("the app read a curve file")

    monkeypatch.setattr(appmod, "load_target", target)
    monkeypatch.setattr(appmod, "resolve_drafter", drafter)
    monkeypatch.setattr(C.CapacityCurve, "from_json", classmethod(curve_file))
    return seen


# ----------------------------------------------------------------------------- menus
def test_menus_are_the_launch_list_with_no_custom_values(served, tiny_qwen, bad_dirs):
    demo, _ = served
    pool = demo.dsv_pool
    assert pool.target_menu == [tiny_qwen.name, "embedded", SLOW_HUB, *map(str, bad_dirs)]
    assert pool.drafter_menu[:3] == ["default", "random", "none"]
    assert pool.drafter_menu[-3:] == [SLOW_HUB, *map(str, bad_dirs)]
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    for elem, menu in (("dsv-target", pool.target_menu), ("dsv-drafter", pool.drafter_menu)):
        dd = by_id[elem]
        assert dd.allow_custom_value is False and [v for _, v in dd.choices] == menu


@pytest.mark.parametrize("field", ["target_spec", "drafter_spec"])
def test_crafted_model_values_never_reach_a_loader_and_tell_nothing(served, spies, tmp_path, field):
    _, url = served
    real = tmp_path / "exists"
    real.mkdir()
    (real / "config.json").write_text("{}")
    c = Client(url, verbose=False)
    texts = set()
    for value in (str(real), str(tmp_path / "missing"), "/etc/passwd", "../../etc", "evil-org/model",
                  "tiny:qwen3", "x" * 5000):
        out = c.predict(*start_args(**{field: value}), api_name="/start")
        texts.add(_one_line_error(out[0]))
    assert len(texts) == 1 and REFUSED in texts.pop()  # the same line, whether a path exists or not
    assert spies["target"] == spies["drafter"] == []


def test_policies_come_from_the_registry_and_curves_from_the_presets(served, spies, tmp_path):
    _, url = served
    curve = tmp_path / "curve.json"
    C.get_curve("h200-qwen3-8b").to_json(curve)
    c = Client(url, verbose=False)
    lines = set()
    for spec in (f"hardware:{curve}", f"hardware:{tmp_path / 'missing.json'}", "async:/etc/passwd"):
        lines.add(_one_line_error(c.predict(*start_args(policy=spec), api_name="/start")[0]))
    assert len(lines) == 2 and all("capacity curve" in ln for ln in lines)  # hardware / async
    assert "registry" in _one_line_error(c.predict(*start_args(policy="/etc/passwd"),
                                                   api_name="/start")[0])
    for cap in (str(curve), "/etc/passwd"):
        assert REFUSED in _one_line_error(c.predict(*start_args(capacity=cap), api_name="/start")[0])
    assert spies["curve_file"] == []
    ok = c.predict(*start_args(policy="fixed:3"), api_name="/start")  # a registry spelling
    assert "dsv-error" not in ok[0] and "fixed" in ok[0]
    ok = c.predict(*start_args(policy="hardware", capacity="h100-qwen3-8b-jagged", load=4),
                   api_name="/start")
    assert "dsv-error" not in ok[0]


def test_a_v1_trace_never_makes_the_server_read_the_curve_it_names(spies, tiny_qwen, tmp_path):
    s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(gamma=4, max_new_tokens=6),
                    policy=HardwareAware(C.get_curve("h200-qwen3-8b")))
    d = s.run("v1").to_dict()
    d["version"] = 1
    d["meta"].pop("capacity_curve")
    d["meta"]["capacity"] = str(tmp_path / "curve.json")
    assert P.trace_sps(Trace.from_dict(d)) is None and spies["curve_file"] == []
    d["meta"]["capacity"] = "h200-qwen3-8b"
    assert P.trace_sps(Trace.from_dict(d))(4) > 0


def test_inputs_gradio_refuses_reach_the_status_line(served):
    _, url = served
    c = Client(url, verbose=False)
    for kw, what in ((dict(gamma=99), "γ"), (dict(load=10**6), "concurrency R"),
                     (dict(max_tokens=-1), "max new tokens"), (dict(force_ell="abc"), "forced ℓ"),
                     (dict(source="rm -rf"), "source"), (dict(seed=-5), "seed"),
                     (dict(temperature=1e308), "temperature")):
        line = _one_line_error(c.predict(*start_args(**kw), api_name="/start")[0])
        assert what in line, (kw, line)
    assert "γ" in _one_line_error(c.predict(None, 99, appmod.NO_CURVE, 1, False,
                                            api_name="/load_view")[1])
    for bad in (float("nan"), float("inf"), 2**70, "x", None):  # what JSON clients cannot send
        with pytest.raises(UserError, match="seed"):
            appmod._check_settings("p", 4, 0.0, bad, 8, 1)


# ----------------------------------------------------------------------------- loading
def test_model_cache_is_a_bounded_lru_and_caches_no_failure():
    cache, calls = appmod.ModelCache(2), []

    def loader(key):
        def load():
            calls.append(key)
            return f"model-{key}"
        return load
    cache.pin("launch", "pinned")
    for k in ("a", "b", "a", "c"):  # c evicts b, the least recently used
        cache.get(k, loader(k))
    assert cache.keys() == ["a", "c"] and calls == ["a", "b", "c"]
    assert cache.get("launch", loader("x")) == "pinned" and cache.get("a", loader("a")) == "model-a"
    assert calls == ["a", "b", "c"]

    def broken():
        calls.append("bad")
        raise TargetError("unreachable")
    for _ in range(2):
        with pytest.raises(TargetError):
            cache.get("bad", broken)
    assert calls.count("bad") == 2 and "bad" not in cache.keys()


def test_one_key_loads_once_and_a_slow_key_blocks_no_other():
    cache, started, release, calls = appmod.ModelCache(4), threading.Event(), threading.Event(), []

    def slow():
        calls.append("slow")
        started.set()
        release.wait(10)
        return "slow-model"
    threads = [threading.Thread(target=cache.get, args=("slow", slow)) for _ in range(3)]
    for t in threads:
        t.start()
    assert started.wait(5)
    t0 = time.perf_counter()
    assert cache.get("fast", lambda: "fast-model") == "fast-model"
    assert time.perf_counter() - t0 < 0.5
    release.set()
    for t in threads:
        t.join(10)
    assert calls == ["slow"]


def test_an_unreachable_hub_id_does_not_slow_another_users_step(served, monkeypatch, tiny_qwen):
    _, url = served
    real, loading = appmod.load_target, threading.Event()

    def fake(spec, **kw):
        if spec == SLOW_HUB:
            loading.set()
            time.sleep(6.0)  # what an unreachable hub costs (measured ~47 s before the fix)
            raise TargetError(f"cannot load target {spec!r}: the hub could not be reached")
        return real(spec, **kw)
    monkeypatch.setattr(appmod, "load_target", fake)
    b = Client(url, verbose=False)
    b.predict(*start_args(max_tokens=200, prompt="other user"), api_name="/start")
    b.predict(False, api_name="/step")
    a_out = {}

    def user_a():
        t0 = time.perf_counter()
        a_out["out"] = Client(url, verbose=False).predict(*start_args(target_spec=SLOW_HUB),
                                                          api_name="/start")
        a_out["s"] = time.perf_counter() - t0
    ta = threading.Thread(target=user_a)
    ta.start()
    assert loading.wait(30)
    steps = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = b.predict(False, api_name="/step")
        steps.append(time.perf_counter() - t0)
        assert "dsv-error" not in out[0]
    ta.join(60)
    print(f"other user's Step during a 6 s hub load: max {max(steps):.3f} s, "
          f"mean {sum(steps) / len(steps):.3f} s; the loading user waited {a_out['s']:.1f} s")
    assert loading.is_set() and a_out["s"] >= 6.0  # all five steps ran inside the load
    assert max(steps) < 2.0
    assert "hub could not be reached" in _one_line_error(a_out["out"][0])


def test_a_broken_drafter_config_is_one_line(served, bad_dirs):
    _, url = served
    c = Client(url, verbose=False)
    for d in bad_dirs:  # intermediate_size 1e11 (a float) and 10**11 (a 25 TB allocation)
        line = _one_line_error(c.predict(*start_args(drafter_spec=str(d)), api_name="/start")[0])
        assert "drafter" in line


# ----------------------------------------------------------------------------- uploads
def test_upload_limit_in_launch_and_in_the_handler(tiny_qwen, tmp_path):
    demo = appmod.build_app(tiny_qwen, make_drafter(tiny_qwen), max_upload_mb=0.01)
    _, url, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        assert demo.max_file_size == demo.dsv_pool.max_upload_bytes == int(0.01 * 2**20)
    finally:
        demo.close()
    default = appmod.build_app(tiny_qwen, make_drafter(tiny_qwen))
    assert default.dsv_pool.max_upload_bytes == int(appmod.MAX_UPLOAD_MB * 2**20)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 20_000)
    with pytest.raises(UserError, match=r"accepts traces up to 0.01 MB \(--max-upload-mb\)"):
        appmod.new_replay(demo.dsv_pool, str(big))
    with pytest.raises(SystemExit):
        appmod.main(["--max-upload-mb=-3", "--no-preload"])  # refused before anything starts


# ----------------------------------------------------------------------------- handler errors
def test_export_before_start_and_load_view_on_an_empty_trace(served, tiny_qwen, tmp_path):
    _, url = served
    c = Client(url, verbose=False)
    for api in ("/export_trace", "/export_figures"):
        files, status = c.predict(api_name=api)
        assert not isinstance(files, list)  # no file: the output is left as it was
        assert "press Start first" in _one_line_error(status)
    s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(gamma=4, max_new_tokens=4))
    s.prefill("no rounds")
    path = s.trace().save(tmp_path / "empty.json")
    out = c.predict(*start_args(source=appmod.REPLAY, trace_file=handle_file(str(path))),
                    api_name="/start")
    assert "after prefill · no round yet" in out[0]
    fig, status = c.predict(4, appmod.NO_CURVE, 1, False, api_name="/load_view")
    assert "no drafted round" in _one_line_error(status)


def test_export_of_a_non_finite_trace_is_one_line_and_leaves_nothing(tiny_qwen):
    import dataclasses
    tr = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(gamma=4, max_new_tokens=6)).run("x")
    r0 = tr.rounds[0]
    bad = dataclasses.replace(tr, rounds=[dataclasses.replace(r0, timings=dataclasses.replace(
        r0.timings, total_ms=float("nan")))] + tr.rounds[1:])
    ex = Explorer(lanes=[Lane("dspark", "x", bad, None)], source="live", cursor=1)
    files, status = appmod._status_beside(appmod.on_export_trace)(ex)
    assert "not a finite number" in _one_line_error(status) and ex.export_dir is None


def test_a_nan_drafter_gives_one_line_statuses(tiny_qwen):
    d = make_drafter(tiny_qwen)
    with torch.no_grad():
        for p in d.parameters():
            p.fill_(float("nan"))
    demo = appmod.build_app(tiny_qwen, d)
    _, url, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        c = Client(url, verbose=False)
        outs = [c.predict(*start_args(), api_name="/start")[0], c.predict(False, api_name="/step")[0],
                c.predict(api_name="/export_trace")[1]]
        assert any("dsv-error" in o for o in outs)
        for o in outs:
            if "dsv-error" in o:
                assert "internal error" not in _one_line_error(o)
    finally:
        demo.close()


def test_an_unexpected_exception_is_logged_and_shown_in_one_line(served, monkeypatch, caplog):
    _, url = served
    c = Client(url, verbose=False)
    c.predict(*start_args(), api_name="/start")

    def boom(ex):
        raise RuntimeError("a bug\nwith two lines")
    monkeypatch.setattr(appmod, "extend_live", boom)
    out = c.predict(False, api_name="/step")
    assert _one_line_error(out[0]).startswith("internal error (RuntimeError)")
    assert "after prefill" not in out[0] and out[2]  # the previous state still renders


# ----------------------------------------------------------------------------- exports
def test_one_export_folder_per_session_and_stale_ones_removed(tiny_qwen, tmp_path):
    pool = appmod.ModelPool(tiny_qwen, make_drafter(tiny_qwen))
    ex = appmod.new_live(pool, **{k: v for k, v in DEFAULTS.items()
                                  if k not in ("source", "trace_file", "big")})
    ex.forward(2, lambda e: appmod._extend(pool, e))
    export = appmod._status_beside(appmod.on_export_trace)
    first, _ = export(ex)
    d1 = Path(ex.export_dir)
    second, _ = export(ex)
    assert not d1.exists() and Path(second[0]).exists() and Path(ex.export_dir) != d1
    appmod.drop_exports(ex)  # what the state's delete_callback does when a session expires
    assert not Path(second[0]).exists() and ex.export_dir is None
    old, new, other = (tmp_path / "dsv-figures-old", tmp_path / "dsv-export-new", tmp_path / "keep-me")
    for p in (old, new, other):
        p.mkdir()
        (p / "f").write_text("x")
    os.utime(old, (time.time() - 2 * appmod.STATE_TTL_S,) * 2)
    os.utime(other, (time.time() - 2 * appmod.STATE_TTL_S,) * 2)
    assert appmod.remove_stale_exports(root=tmp_path) == 1
    assert not old.exists() and new.exists() and other.exists()


# ----------------------------------------------------------------------------- bounded figures
def _two_million_b(tiny_qwen, version: int = 2) -> dict:
    s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(gamma=4, max_new_tokens=16),
                    policy=HardwareAware(C.get_curve("h200-qwen3-8b")))
    d = s.run("a hostile trace").to_dict()
    B = 2_000_000
    d["meta"]["load"] = B
    if version == 1:
        d["version"] = 1
        d["meta"].pop("capacity_curve")
    else:
        d["meta"]["capacity_curve"]["load"] = B
    for r in d["rounds"]:
        r["schedule"]["load"] = B
        r["schedule"]["path"] = [dict(st, B=B + k + 1) for k, st in enumerate(r["schedule"]["path"])]
    return d


def test_a_two_million_b_trace_replays_under_a_second_per_step(served, tiny_qwen, tmp_path):
    _, url = served
    path = tmp_path / "b2m.json"
    path.write_text(json.dumps(_two_million_b(tiny_qwen)))
    c = Client(url, verbose=False)
    out = c.predict(*start_args(source=appmod.REPLAY, trace_file=handle_file(str(path))),
                    api_name="/start")
    n = int(out[0].split(" rounds recorded")[0].rsplit(" ", 1)[1])
    assert n >= 2
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = c.predict(False, api_name="/step")
        times.append(time.perf_counter() - t0)
        sched = json.loads(out[6]["plot"])
        assert "R = 2000000" in sched["layout"]["title"]["text"]
        assert all(len(t.get("x") or []) <= F.SPS_SAMPLES + 2 for t in sched["data"])
    print(f"2M-B replay: step max {max(times):.3f} s, mean {sum(times) / n:.3f} s over {n} rounds")
    assert max(times) < 1.0


def test_every_panel_is_bounded_whatever_the_trace_says(tiny_qwen):
    tr = Trace.from_dict(_two_million_b(tiny_qwen, version=1))  # the curve resolved by name
    ex = Explorer(lanes=[Lane("replay", "x", tr, None)], source="replay", cursor=1)
    view = P.view_of(ex)
    assert view.sps is not None
    for p in P.PANELS:
        t0 = time.perf_counter()
        p.render(view)
        assert time.perf_counter() - t0 < 1.0, p.name
    path = [dict(a=0.5, B=10 + i, tau=1.0, theta=1.0, r=0, j=1, admitted=i < 5000) for i in range(9000)]
    thin = F._thinned([SimpleStep(**p) for p in path])
    assert len(thin) <= F.MAX_FIGURE_POINTS + 3
    assert any(p.admitted and p.B == 10 + 4999 for p in thin) and any(p.B == 10 + 5000 for p in thin)
    # the text and τ panels draw the latest MAX_SHOWN_ROUNDS rounds of a long trace
    s = SpecSession(tiny_qwen, None, DecodeConfig(mode="ar", max_new_tokens=3), drafter_name="none")
    d = s.run("long").to_dict()
    n = P.MAX_SHOWN_ROUNDS + 500
    d["rounds"] = [dict(copy.deepcopy(d["rounds"][0]), index=i) for i in range(n)]
    d["summary"].update(rounds=n, new_tokens=1 + sum(len(r["committed"]) for r in d["rounds"]))
    long = Trace.from_dict(d)
    view = P.view_of(Explorer(lanes=[Lane("replay", "x", long, None)], source="replay", cursor=n))
    text = next(p for p in P.PANELS if p.name == "text").render(view)
    assert "500 earlier rounds not shown" in text
    tau = next(p for p in P.PANELS if p.name == "tau").render(view)
    assert len(tau.data[0].x) == P.MAX_SHOWN_ROUNDS and tau.data[0].x[-1] == n


class SimpleStep:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_policy_check_refuses_without_looking(tmp_path):
    for spec in (f"hardware:{tmp_path}", "alg1:x", "retro:/etc/passwd"):
        with pytest.raises(UserError, match="capacity curve"):
            appmod.check_policy(spec)
    with pytest.raises(UserError, match="registry"):
        appmod.check_policy("fancy")
    assert appmod.check_policy("threshold:0.7") == "threshold:0.7"
    assert parse_policy(appmod.check_policy("fixed:2"), 4).name == "fixed(2)"

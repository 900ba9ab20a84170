"""Trace: JSON round trip, replay without a model, and refusal of malformed/hostile files."""
from __future__ import annotations

import json

import pytest

from conftest import make_drafter

from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.decoding.trace import Trace, TraceError


@pytest.fixture(scope="module")
def trace(tiny_qwen):
    s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(gamma=4, max_new_tokens=16))
    return s.run("replay me"), s


def test_round_trip_and_replay(tmp_path, trace):
    tr, s = trace
    p = tr.save(tmp_path / "t.json")
    back = Trace.load(p)
    assert back == tr
    assert back.output_ids() == s.generated
    assert back.output_ids(0) == [s.generated[0]]
    assert "".join(back.token_text(t) for t in back.output_ids()) == tr.text
    r = back.rounds[0]
    assert len(r.draft) == 4 and r.schedule.ell == len(r.verify)
    assert r.draft[0].base_topk and r.draft[0].corrected_topk and r.verify[0].target_topk
    assert 0 < r.draft[0].conf_raw < 1 and r.draft[1].a_raw <= r.draft[0].a_raw
    assert r.timings.verify_ms > 0 and r.timings.draft_ms > 0


def _mutate(tr, fn):
    d = json.loads(json.dumps(tr.to_dict()))
    fn(d)
    return d


@pytest.mark.parametrize("mutation, message", [
    (lambda d: d.update(version=99), "schema version"),
    (lambda d: d["rounds"][0].update(n_accepted="3"), "expected an integer"),
    (lambda d: d["rounds"][0].update(index=5), "numbered"),
    (lambda d: d["rounds"][0]["verify"][0].update(p_t=1.7), "probabilities"),
    (lambda d: d["rounds"][0].update(__class__="os.system"), "unknown field"),
    (lambda d: d["meta"].pop("gamma"), "missing"),
    (lambda d: d["summary"].update(new_tokens=1234), "counts"),
    (lambda d: d["rounds"][0]["draft"][0].update(conf_raw=float("nan")), "finite"),
    (lambda d: d.update(rounds={}), "expected a list"),
])
def test_malformed_traces_are_refused(trace, mutation, message):
    d = _mutate(trace[0], mutation)
    with pytest.raises(TraceError, match=message):
        Trace.from_dict(d)


def test_bad_files(tmp_path):
    with pytest.raises(TraceError, match="does not exist"):
        Trace.load(tmp_path / "missing.json")
    (tmp_path / "b.json").write_text("{\"version\": 1,")
    with pytest.raises(TraceError, match="not valid JSON"):
        Trace.load(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(TraceError, match="top level"):
        Trace.load(tmp_path / "c.json")


def test_trace_v2_carries_the_policy_curve_and_v1_still_loads(tmp_path, tiny_qwen):
    from dspark_viz.decoding.scheduler import HardwareAware
    from dspark_viz.decoding.trace import SCHEMA_VERSION
    from dspark_viz.load.capacity import get_curve
    curve = get_curve("h100-qwen3-8b-jagged")
    s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(gamma=4, max_new_tokens=8),
                    policy=HardwareAware(curve))
    tr = s.run("curve")
    c = tr.meta.capacity_curve
    assert tr.version == SCHEMA_VERSION == 2 and tr.meta.capacity == c.name == curve.name
    assert c.load == 1 and len(c.sps) == int(1.5 * (1 * 5 + 1)) + 2
    for B in (1, 3, len(c.sps)):
        assert c.sps_at(B) == pytest.approx(curve.for_load(1).sps(B))
    assert c.sps_at(0) is None and c.sps_at(len(c.sps) + 1) is None
    assert all(r.schedule.capacity == curve.name for r in tr.rounds)
    back = Trace.load(tr.save(tmp_path / "v2.json"))
    assert back == tr
    # a file written before version 2: no capacity_curve, still loads
    v1 = _mutate(tr, lambda d: (d.update(version=1), d["meta"].pop("capacity_curve")))
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    old = Trace.load(tmp_path / "v1.json")
    assert old.version == 1 and old.meta.capacity_curve is None and old.rounds == tr.rounds
    with pytest.raises(TraceError, match="capacity_curve"):
        Trace.from_dict(_mutate(tr, lambda d: d.update(version=1)))
    with pytest.raises(TraceError, match="capacity_curve"):
        Trace.from_dict(_mutate(tr, lambda d: d["meta"]["capacity_curve"].update(sps=[1.0, -2.0])))
    # a policy without a curve records none
    assert SpecSession(tiny_qwen, make_drafter(tiny_qwen),
                       DecodeConfig(gamma=4, max_new_tokens=4)).run("x").meta.capacity_curve is None

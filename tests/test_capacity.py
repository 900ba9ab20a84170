"""Capacity curves: presets (roofline, jagged), interpolation, JSON round trip and rejection,
profiling a real (tiny) target, and the ``dspark-viz profile`` command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dspark_viz.load.capacity import (CapacityCurve, CapacityError, get_curve, preset_names,
                                      profile_target, resolve_capacity)


def test_presets_cover_devices_and_models():
    names = preset_names()
    for dv in ("a100", "h100", "h200"):
        for m in ("qwen3-4b", "qwen3-8b", "qwen3-14b"):
            assert f"{dv}-{m}" in names and f"{dv}-{m}-jagged" in names
    with pytest.raises(CapacityError, match="unknown capacity preset"):
        get_curve("b200-llama")


def test_roofline_shape_and_kv_term():
    c = get_curve("h200-qwen3-8b")
    # memory bound at small B: weights 16.4 GB / (4.8 TB/s · 0.8) + 0.4 ms overhead
    assert 1e3 / c.sps(1) == pytest.approx(0.4 + 16.4e9 / 3.84e12 * 1e3 + 2048 * 147456 / 3.84e12 * 1e3, rel=1e-6)
    assert c.sps(1) == pytest.approx(c.sps(64))  # flat below the knee
    assert c.sps(4096) < c.sps(512) < c.sps(64)  # compute bound past it
    sps = c.sps_many(np.arange(1, 4097))
    assert np.all(np.diff(sps) <= 1e-9)  # never faster with more tokens
    # the KV-read term grows with concurrency and context length
    assert c.for_load(128).sps(128) < c.sps(128)
    assert c.with_context(8192).for_load(64).sps(64) < c.for_load(64).sps(64)
    # faster chip, smaller model → more steps per second
    assert get_curve("h200-qwen3-4b").sps(8) > get_curve("h200-qwen3-14b").sps(8)
    assert get_curve("h200-qwen3-8b").sps(8) > get_curve("a100-qwen3-8b").sps(8)


def test_jagged_has_cliffs():
    B = np.arange(8, 2049)
    j = get_curve("h100-qwen3-8b-jagged").for_load(8)
    d = np.diff(j.sps_many(B))
    assert (d == 0).mean() > 0.95  # flat within buckets/tiles
    assert (d < -1e-6).sum() >= 5  # … and step-wise drops between them
    smooth = get_curve("h100-qwen3-8b").for_load(8)
    assert (np.diff(smooth.sps_many(B)) < -1e-6).sum() > 1000  # the roofline decays smoothly
    assert np.all(j.sps_many(B) <= smooth.sps_many(B) + 1e-9)  # padding only costs


def test_table_interpolation_and_extrapolation():
    c = CapacityCurve(name="t", kind="table", batch=(1, 4, 8), step_ms=(10.0, 16.0, 20.0))
    assert 1e3 / c.sps(2) == pytest.approx(12.0)  # linear in time
    assert 1e3 / c.sps(12) == pytest.approx(24.0)  # extrapolated with the last slope
    s = CapacityCurve(name="s", kind="jagged", batch=(1, 4, 8), step_ms=(10.0, 16.0, 20.0),
                      interp="step")
    assert 1e3 / s.sps(2) == pytest.approx(16.0) and 1e3 / s.sps(5) == pytest.approx(20.0)
    one = CapacityCurve(name="o", kind="table", batch=(4,), step_ms=(5.0,))
    assert one.sps(1) == one.sps(100) == pytest.approx(200.0)
    with pytest.raises(CapacityError):
        c.sps(0)


def test_json_roundtrip(tmp_path):
    for c in (get_curve("a100-qwen3-4b-jagged", context_len=512, requests=3),
              CapacityCurve(name="t", kind="profiled", batch=(1, 2), step_ms=(3.0, 4.0),
                            context_len=64, meta={"device": "cpu"})):
        c2 = CapacityCurve.from_json(c.to_json(tmp_path / "c.json"))
        assert c2 == c and c2.meta == c.meta
        np.testing.assert_allclose(c2.sps_many(np.arange(1, 300)), c.sps_many(np.arange(1, 300)))
    assert resolve_capacity(tmp_path / "c.json").name == "t"


def _roof(**kw) -> dict:
    return {**get_curve("h100-qwen3-8b").to_dict()["roofline"], **kw}


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d.update(step_ms=[1.0]), "2 batch sizes but 1 step times"),
    (lambda d: d.update(batch=[2, 1]), "strictly increasing"),
    (lambda d: d.update(step_ms=[1.0, -2.0]), "finite and > 0"),
    (lambda d: d.update(step_ms=[1.0, "x"]), "numbers"),
    (lambda d: d.update(batch=[0, 1]), "integers ≥ 1"),
    (lambda d: d.update(batch=[1.5, 2]), "integers ≥ 1"),
    (lambda d: d.update(kind="magic"), "kind must be"),
    (lambda d: d.update(version=9), "version 9"),
    (lambda d: d.update(extra=1), "unknown field 'extra'"),
    (lambda d: d.pop("batch"), "missing field 'batch'"),
    (lambda d: d.update(batch=[], step_ms=[]), "at least one point"),
    (lambda d: d.update(format="trace"), "not a capacity curve"),
    (lambda d: d.update(roofline={"device": "x"}), "roofline"),
    # hardening: numbers a float cannot hold, wrong types inside the roofline
    (lambda d: d.update(step_ms=[1.0, 10**400]), "finite and > 0"),
    (lambda d: d.update(batch=[1, 10**400]), "integers ≥ 1"),
    (lambda d: d.update(context_len=10**400), "context_len must be an integer"),
    (lambda d: d.update(requests=True), "requests must be an integer"),
    (lambda d: d.update(name=["x"]), "non-empty name"),
    (lambda d: d.update(interp=["linear"]), "interp must be"),
    (lambda d: d.update(roofline=_roof(buckets="abc")), "buckets must be a list of integers"),
    (lambda d: d.update(roofline=_roof(buckets=[1, 2.5])), "buckets must be a list of integers"),
    (lambda d: d.update(roofline=_roof(buckets=[4, 2])), "strictly increasing"),
    (lambda d: d.update(roofline=_roof(bandwidth_tbs=10**400)), "bandwidth_tbs must be a positive"),
    (lambda d: d.update(roofline=_roof(layers=10**400)), "layers must be an integer"),
    (lambda d: d.update(roofline=_roof(overhead_ms="x")), "overhead_ms must be ≥ 0"),
    (lambda d: d.update(roofline=_roof(device=3)), "must be strings"),
])
def test_malformed_rejected_one_line(tmp_path, mutate, msg):
    d = CapacityCurve(name="t", kind="table", batch=(1, 2), step_ms=(3.0, 4.0)).to_dict()
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(CapacityError, match=msg) as e:
        CapacityCurve.from_json(p)
    assert "\n" not in str(e.value)
    p.write_text("{not json")
    with pytest.raises(CapacityError, match="not valid JSON"):
        CapacityCurve.from_json(p)
    with pytest.raises(CapacityError, match="does not exist"):
        CapacityCurve.from_json(tmp_path / "missing.json")


def test_profile_tiny_target(tiny_qwen, tmp_path):
    c = profile_target(tiny_qwen, [1, 4, 16], context_len=16, repeats=2)
    assert c.kind == "profiled" and c.batch == (1, 4, 16) and all(t > 0 for t in c.step_ms)
    for k in ("device", "model", "context_len", "date"):
        assert k in c.meta
    assert c.meta["device"] == "cpu" and c.meta["model"] == tiny_qwen.name
    assert c.sps(1000) > 0 and c.sps(2) > 0
    assert CapacityCurve.from_json(c.to_json(tmp_path / "p.json")) == c
    with pytest.raises(CapacityError, match="exceeds the target context"):
        profile_target(tiny_qwen, [4], context_len=tiny_qwen.max_context)


def test_profile_cli_preset_and_errors(tmp_path, capsys):
    from dspark_viz.cli import main
    out = tmp_path / "h.json"
    assert main(["profile", "--preset", "h200-qwen3-8b-jagged", "--out", str(out)]) == 0
    assert CapacityCurve.from_json(out).kind == "jagged"
    assert main(["profile", "--preset", "z9-foo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dspark-viz: error: unknown capacity preset") and err.count("\n") == 1


def test_profile_with_drafter_times_whole_steps(tiny_qwen, tmp_path):
    """--drafter: every B carries the same measured drafting time on top of the verify pass."""
    from conftest import make_drafter
    D = make_drafter(tiny_qwen)
    c = profile_target(tiny_qwen, [1, 4], context_len=16, repeats=3, drafter=D, gamma=5,
                       drafter_name="tiny")
    d = c.meta["draft_ms"]
    assert d > 0 and c.meta["gamma"] == 5 and c.meta["drafter"] == "tiny"
    assert all(t > d for t in c.step_ms) and "drafting" in c.meta["statistic"]
    assert CapacityCurve.from_json(c.to_json(tmp_path / "s.json")) == c


def test_profile_cli_drafter_errors(capsys):
    from dspark_viz.cli import main
    assert main(["profile", "--target", "tiny:qwen3", "--drafter", "none", "--out", "x.json"]) == 2
    assert "--drafter none" in capsys.readouterr().err

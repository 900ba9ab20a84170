"""Load simulator: trace pools, exact truncation, accounting, sweeps, live integration, CLI,
and the load figures."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_drafter
from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.decoding.policy import Fixed, RequestView, parse_policy
from dspark_viz.decoding.scheduler import AsyncDelayed, HardwareAware
from dspark_viz.load.capacity import CapacityCurve, get_curve
from dspark_viz.load.simulator import (PoolRound, SimError, SimulatedBackground, TracePool,
                                       frontier, simulate, sweep)

FLAT = CapacityCurve(name="flat", kind="table", batch=(1,), step_ms=(10.0,))  # 100 SPS at any B


def pool_of(rounds, gamma=4):
    return TracePool([[PoolRound(np.array(c, float), n, m) for c, n, m in rounds]], gamma)


@pytest.fixture(scope="module")
def traces(tiny_qwen):
    """Two real traces recorded under fixed(γ) (every round whole) with a tiny drafter."""
    out = []
    for seed, prompt in ((0, "hello"), (1, "abc")):
        s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(
            gamma=4, temperature=1.0, max_new_tokens=24, seed=seed), policy=Fixed(4))
        out.append(s.run(prompt))
    return out


def test_pool_from_real_traces(traces, tmp_path):
    pool = TracePool.from_traces(traces)
    assert pool.gamma == 4
    assert pool.n_rounds + pool.dropped == sum(len(t.rounds) for t in traces)
    # fixed(γ): only a final round cut by max_new_tokens can be censored (or dropped at ℓ = 0)
    assert pool.censored + pool.dropped <= len(traces)
    assert all(r.max_ell == 4 for s in pool.sequences for r in s[:-1])
    r0, t0 = pool.sequences[0][0], traces[0].rounds[0]
    assert r0.accepted == t0.n_accepted
    np.testing.assert_allclose(r0.conf, [d.conf_cal for d in t0.draft])
    traces[0].save(tmp_path / "a.json")
    traces[1].save(tmp_path / "b.json")
    assert TracePool.from_paths([tmp_path]).n_rounds == pool.n_rounds
    with pytest.raises(SimError):
        TracePool([], 4)


def test_censoring_from_short_verification(tiny_qwen):
    s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(
        gamma=4, temperature=0.0, max_new_tokens=12, seed=0), policy=Fixed(2))
    pool = TracePool.from_traces([s.run("xyz")])
    for r in pool.sequences[0]:
        assert r.max_ell == (4 if r.accepted < 2 else 2)  # accepted all 2 → unknown past 2


def test_truncation_exact_and_accounting():
    # one request: accepted 3 of γ = 4; fixed(ℓ) commits min(3, ℓ) + 1 each step
    pool = pool_of([([0.9, 0.9, 0.9, 0.9], 3, 4)])
    for ell, tau in ((0, 1), (1, 2), (2, 3), (4, 4)):
        r = simulate(pool, Fixed(ell), FLAT, 1, 10)
        assert r.tau == tau and r.budget == ell and r.batch == 1 + ell
        assert r.throughput == pytest.approx(100.0 * tau) and r.per_user == r.throughput
        assert r.acceptance_rate == (pytest.approx(min(3, ell) / ell) if ell else 0.0)
    # censored round: ℓ never exceeds what was recorded exactly
    pool = pool_of([([0.9] * 4, 2, 2)])
    assert simulate(pool, Fixed(4), FLAT, 3, 5).budget == 2


def test_simulate_deterministic_and_sweep_shapes():
    rng = np.random.default_rng(0)
    seqs = [[PoolRound(rng.uniform(0.4, 1.0, 7), int(rng.integers(0, 8)), 7) for _ in range(30)]
            for _ in range(8)]
    pool = TracePool(seqs, 7)
    cap = get_curve("h200-qwen3-8b")
    a = simulate(pool, HardwareAware(record_path=False), cap, 32, 40, torch.Generator().manual_seed(1))
    b = simulate(pool, HardwareAware(record_path=False), cap, 32, 40, torch.Generator().manual_seed(1))
    assert a.to_dict() == {**b.to_dict(), "sched_us": a.sched_us}
    pols = [HardwareAware(record_path=False), AsyncDelayed(record_path=False), Fixed(7), Fixed(1)]
    res = sweep(pool, pols, cap, [1, 64, 512], 30)
    assert len(res) == 12
    hw = [r for r in res if r.policy == "hardware"]
    assert hw[0].budget > hw[-1].budget  # the scheduled budget shrinks with load
    fr = frontier(res)
    assert set(fr) == {p.name for p in pols} and len(fr["hardware"]) == 3
    with pytest.raises(SimError):
        simulate(pool, Fixed(1), cap, 0, 5)


def test_live_request_budget_responds_to_load(tiny_qwen):
    """The live request decodes as one of R; its ℓ shrinks when the others crowd the batch."""
    pool = TracePool([[PoolRound(np.full(4, 0.97), 4, 4)] * 5], 4)  # confident background
    cap = get_curve("h200-qwen3-8b")
    mean_ell = {}
    for n_others in (0, 1023):
        bg = SimulatedBackground(pool, n_others, seed=0)
        s = SpecSession(tiny_qwen, make_drafter(tiny_qwen), DecodeConfig(
            gamma=4, temperature=0.0, max_new_tokens=10, seed=0), policy=HardwareAware(cap),
            background=bg)
        tr = s.run("load")
        assert tr.meta.load == n_others + 1
        assert all(r.schedule.load == n_others + 1 for r in tr.rounds)
        assert bg.steps == len(tr.rounds)
        mean_ell[n_others] = np.mean([r.schedule.ell for r in tr.rounds])
        if not n_others:  # alone on an H200: every drafted token is worth verifying
            assert all(not r.schedule.stop.startswith("no improvement") for r in tr.rounds)
            assert tr.rounds[0].schedule.ell == 4
        else:
            assert 0 < bg.mean_budget <= 4 and tr.rounds[0].schedule.path
    assert mean_ell[1023] < mean_ell[0]
    with pytest.raises(SimError):
        SimulatedBackground(pool, 2).advance([])


def test_simulate_cli_and_figures(traces, tmp_path, capsys):
    from dspark_viz.cli import main
    for i, t in enumerate(traces):
        t.save(tmp_path / f"t{i}.json")
    out = tmp_path / "sim.json"
    rc = main(["simulate", "--traces", str(tmp_path), "--policies", "hardware,async,fixed,fixed:1",
               "--loads", "1,16", "--steps", "20", "--json", str(out), "--figures",
               str(tmp_path / "figs")])
    assert rc == 0
    d = json.loads(out.read_text())
    assert len(d["results"]) == 8 and {r["R"] for r in d["results"]} == {1, 16}
    assert (tmp_path / "figs" / "load_sweep.html").stat().st_size > 1000
    assert "τ = accepted draft tokens + 1" in capsys.readouterr().out
    assert main(["simulate", "--traces", str(tmp_path / "nope.json")]) == 2
    assert main(["simulate", "--traces", str(tmp_path), "--steps", "0"]) == 2


def test_load_figures_pure(traces):
    from dspark_viz.viz.load_figures import (admission_path_figure, capacity_figure,
                                             frontier_figure, load_sweep_figure)
    pool = TracePool.from_traces(traces)
    cap = get_curve("h100-qwen3-8b-jagged")
    res = sweep(pool, [parse_policy("hardware", 4), Fixed(1)], cap, [1, 8], 10)
    f = load_sweep_figure(res)
    assert len(f.data) == 6 and list(f.data[0].x) == [1, 8]
    assert len(frontier_figure(res).data) == 2
    assert len(capacity_figure([cap, get_curve("h100-qwen3-8b")], loads=(1, 64)).data) == 4
    d = HardwareAware().decide([RequestView(pool.sequences[0][0].conf, 4)], cap)
    fig = admission_path_figure(d[0].path, theta0=1.0)
    assert sum(len(t.x) for t in fig.data[1:]) == len(d[0].path)
    assert admission_path_figure([]).layout.title.text.endswith("(no candidates)")


def test_load_and_steps_caps_and_large_seeds():
    from dspark_viz.load.simulator import MAX_LOAD, MAX_STEPS
    pool = pool_of([([0.9] * 4, 3, 4)])
    for R, steps in ((MAX_LOAD + 1, 1), (1, MAX_STEPS + 1), (10**8, 200)):
        with pytest.raises(SimError, match=f"R ≤ {MAX_LOAD}") as e:
            simulate(pool, Fixed(1), FLAT, R, steps)
        assert "\n" not in str(e.value)
    with pytest.raises(SimError, match="n_others"):
        SimulatedBackground(pool, MAX_LOAD)
    big = 2**63 - 1  # the largest --seed: derived generator seeds stay valid
    assert len(sweep(pool, [Fixed(2)], FLAT, [1, MAX_LOAD], 2, seed=big)) == 2
    assert SimulatedBackground(pool, 2, seed=big).views()

"""The engine: greedy losslessness, sampling losslessness, what-ifs, batches, budgets, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import OracleDrafter, make_drafter
from test_verify import chi2_stat, wilson_hilferty_chi2

from dspark_viz.config import ConfigError, DecodeConfig
from dspark_viz.decoding.engine import SpecSession, plain_decode, run_batch
from dspark_viz.decoding.policy import Fixed, Threshold
from dspark_viz.sampling import warp

PROMPT = "The quick brown fox"


def run(target, drafter, cfg, prompt=PROMPT, **kw):
    s = SpecSession(target, drafter, cfg, **kw)
    if isinstance(drafter, torch.nn.Module) and hasattr(drafter, "session"):
        drafter.session = s
    tr = s.run(prompt)
    return s, tr


@pytest.mark.parametrize("gamma", [1, 4, 7])
def test_greedy_equality_random_drafter(tiny_target_any, gamma):
    T = tiny_target_any
    cfg = DecodeConfig(gamma=gamma, max_new_tokens=40)
    ref = plain_decode(T, PROMPT, cfg)
    s, tr = run(T, make_drafter(T), cfg)
    assert s.generated == ref
    assert tr.summary.rounds >= 10


@pytest.mark.parametrize("gamma", [1, 4, 7])
def test_greedy_equality_nothing_accepted(tiny_target_any, gamma):
    T = tiny_target_any
    cfg = DecodeConfig(gamma=gamma, max_new_tokens=30)
    ref = plain_decode(T, PROMPT, cfg)
    s, tr = run(T, OracleDrafter(T, make_drafter(T), adversarial=True), cfg)
    assert s.generated == ref
    assert tr.summary.accepted == 0 and all(r.tau == 1 for r in tr.rounds)
    assert all(r.appended_kind == "correction" for r in tr.rounds if r.verify)


@pytest.mark.parametrize("gamma", [1, 4, 7, 16])
def test_greedy_equality_perfect_drafter(tiny_target_any, gamma):
    T = tiny_target_any
    cfg = DecodeConfig(gamma=gamma, max_new_tokens=40)
    ref = plain_decode(T, PROMPT, cfg)
    s, tr = run(T, OracleDrafter(T, make_drafter(T)), cfg)
    assert s.generated == ref
    assert all(r.n_accepted == len(r.verify) for r in tr.rounds)  # everything accepted
    assert all(r.appended_kind == "bonus" for r in tr.rounds)
    assert tr.summary.tau_mean == pytest.approx((tr.summary.new_tokens - 1) / len(tr.rounds))
    # τ counts the +1 target token: full blocks give γ + 1 per round (the last may be capped)
    assert tr.rounds[0].tau == gamma + 1


def _joint_exact(T, prompt_ids, cfg):
    """Exact p(t1, t2, t3) of plain decoding under the warped target distribution."""
    def dist(ids):
        with torch.inference_mode():
            z = T.model(torch.tensor([ids])).logits[0, -1]
        return warp(z, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    probs = {}
    p1 = dist(prompt_ids)
    for a in torch.nonzero(p1).flatten().tolist():
        p2 = dist(prompt_ids + [a])
        for b in torch.nonzero(p2).flatten().tolist():
            p3 = dist(prompt_ids + [a, b])
            for c in torch.nonzero(p3).flatten().tolist():
                probs[(a, b, c)] = float(p1[a] * p2[b] * p3[c])
    return probs


@pytest.mark.parametrize("markov", ["on", "off"])
def test_sampling_losslessness_through_engine(tiny_qwen, markov):
    """Committed (t1, t2, t3) through the real engine (γ = 2, T = 1, top-k 3) vs the target's
    exact joint, χ² at p = 1e-4. The noisy oracle drafter is partly rejected, so the
    acceptance, residual and bonus paths are all exercised, with its Markov head on or off."""
    T = tiny_qwen
    ids = [2, 40, 50, 60]
    cfg = DecodeConfig(gamma=2, max_new_tokens=3, temperature=1.0, top_k=3, record_topk=1,
                       markov_off=(markov == "off"))
    probs = _joint_exact(T, ids, cfg)
    oracle = OracleDrafter(T, make_drafter(T), noise=1.5)
    N = 1500
    counts, acc, ver = {}, 0, 0
    for i in range(N):
        s = SpecSession(T, oracle, DecodeConfig(**{**cfg.__dict__, "seed": 1000 + i}))
        oracle.session = s
        s.prefill(ids)
        while not s.done:
            r = s.step()
            acc, ver = acc + r.n_accepted, ver + len(r.verify)
        key = tuple(s.generated)
        counts[key] = counts.get(key, 0) + 1
    stat, df = chi2_stat(counts, probs, N)
    assert stat < wilson_hilferty_chi2(df), (stat, df)
    assert 0.1 < acc / ver < 0.95  # both accepts and rejections happened


def test_dflash_mode_and_markov_off_change_drafts(tiny_qwen):
    T = tiny_qwen
    D = make_drafter(T)
    with torch.no_grad():
        D.markov.w2.weight.mul_(2000.0)  # make the untrained Markov bias matter
    base = DecodeConfig(gamma=4, max_new_tokens=12)
    _, on = run(T, D, base)
    _, off = run(T, D, DecodeConfig(**{**base.__dict__, "markov_off": True}))
    _, dfl = run(T, D, DecodeConfig(**{**base.__dict__, "mode": "dflash"}))
    d_on = [d.token for r in on.rounds for d in r.draft]
    d_off = [d.token for r in off.rounds for d in r.draft]
    d_dfl = [d.token for r in dfl.rounds for d in r.draft]
    assert d_on != d_off and d_off == d_dfl
    assert all(not d.boosted for r in off.rounds for d in r.draft)
    assert any(d.boosted for r in on.rounds for d in r.draft)
    assert on.text == off.text == dfl.text  # lossless either way


def test_force_ell_and_policies(tiny_qwen):
    T, D = tiny_qwen, make_drafter(tiny_qwen)
    _, tr = run(T, D, DecodeConfig(gamma=6, max_new_tokens=20, force_ell=2))
    assert all(len(r.verify) <= 2 and r.schedule.forced for r in tr.rounds)
    assert all(len(r.dropped) == 6 - len(r.verify) for r in tr.rounds)
    _, tr = run(T, D, DecodeConfig(gamma=6, max_new_tokens=20), policy=Fixed(3))
    assert {len(r.verify) for r in tr.rounds[:-1]} == {3}
    _, tr = run(T, D, DecodeConfig(gamma=6, max_new_tokens=20), policy=Threshold(0.99))
    assert all(len(r.verify) == 0 for r in tr.rounds)  # untrained c ≈ σ(1) < 0.99
    assert all(r.tau == 1 for r in tr.rounds)


def test_ar_mode_and_budget(tiny_gemma):
    T = tiny_gemma
    cfg = DecodeConfig(mode="ar", max_new_tokens=9)
    s, tr = run(T, None, cfg)
    assert len(s.generated) == 9 and tr.summary.rounds == 8
    assert all(r.appended_kind == "target" and not r.draft for r in tr.rounds)
    # the budget is never overshot, whatever γ
    s, tr = run(T, OracleDrafter(T, make_drafter(T)), DecodeConfig(gamma=7, max_new_tokens=10))
    assert len(s.generated) == 10 and tr.summary.stop_reason == "max_new_tokens"


def test_eos_stops_inside_block(tiny_qwen):
    T = tiny_qwen
    cfg = DecodeConfig(gamma=7, max_new_tokens=30)
    ref = plain_decode(T, PROMPT, cfg)
    eos = ref[5]  # pretend the 6th generated token is EOS
    old = T.eos_ids
    T.eos_ids = (eos,)
    try:
        ref2 = plain_decode(T, PROMPT, cfg)
        s, tr = run(T, OracleDrafter(T, make_drafter(T)), cfg)
    finally:
        T.eos_ids = old
    assert s.generated == ref2 == ref[: ref.index(eos) + 1]
    assert tr.summary.stop_reason == "eos" and tr.rounds[-1].eos


def test_batch_matches_single(tiny_qwen):
    T, D = tiny_qwen, make_drafter(tiny_qwen)
    prompts = ["alpha beta", "one two three", "x"]
    cfg = DecodeConfig(gamma=4, max_new_tokens=15)
    singles = [run(T, D, cfg, prompt=p)[1].text for p in prompts]
    sessions = [SpecSession(T, D, cfg, request_id=i) for i in range(3)]
    traces = run_batch(sessions, prompts, Fixed(4))
    assert [t.text for t in traces] == singles
    assert all(r.schedule.load == 3 for r in traces[0].rounds[:1])


def test_bad_inputs(tiny_qwen):
    T, D = tiny_qwen, make_drafter(tiny_qwen)
    with pytest.raises(ConfigError, match="empty"):
        SpecSession(T, D, DecodeConfig()).prefill("   ")
    with pytest.raises(ConfigError, match="context"):
        SpecSession(T, D, DecodeConfig(max_new_tokens=10)).prefill("x" * 3000)
    with pytest.raises(ConfigError, match="gamma"):
        DecodeConfig(gamma=17)
    with pytest.raises(ConfigError, match="temperature"):
        DecodeConfig(temperature=-0.5)
    with pytest.raises(ConfigError, match="needs a drafter"):
        SpecSession(T, None, DecodeConfig(mode="dspark"))
    s = SpecSession(T, D, DecodeConfig(max_new_tokens=10))
    with pytest.raises(ConfigError):
        s.prefill("x" * 3000)
    assert s.generated == [] and s.rounds == []  # nothing changed


def test_deterministic_for_seed(tiny_gemma):
    T, D = tiny_gemma, make_drafter(tiny_gemma)
    cfg = DecodeConfig(gamma=4, max_new_tokens=20, temperature=1.0, seed=7)
    a = run(T, D, cfg)[1]
    b = run(T, D, cfg)[1]
    assert a.text == b.text and [r.n_accepted for r in a.rounds] == [r.n_accepted for r in b.rounds]
    assert np.isfinite([d.conf_raw for r in a.rounds for d in r.draft]).all()


@pytest.mark.parametrize("k", [1, 4])
def test_fewer_candidates_than_recorded_topk(tiny_qwen, k):
    """K below record_topk (5) records what there is instead of failing, and stays lossless."""
    cfg = DecodeConfig(gamma=4, max_new_tokens=16, draft_candidates=k)
    assert cfg.record_topk > k
    ref = plain_decode(tiny_qwen, PROMPT, cfg)
    s, tr = run(tiny_qwen, make_drafter(tiny_qwen), cfg)
    assert s.generated == ref
    assert all(len(d.corrected_topk) == k for r in tr.rounds for d in r.draft)

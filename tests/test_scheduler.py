"""Hardware-aware prefix scheduler: Algorithm 1 by hand, Appendix A, losslessness, async K."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from conftest import make_drafter
from dspark_viz.config import ConfigError, DecodeConfig
from dspark_viz.decoding.policy import Fixed, RequestView, parse_policy
from dspark_viz.sampling import draw, warp
from dspark_viz.decoding.scheduler import (AsyncDelayed, HardwareAware, Retrospective,
                                           admission_path, early_stop_count, global_best_count)
from dspark_viz.decoding.verify import verify_block
from dspark_viz.load.capacity import CapacityCurve, get_curve
from dspark_viz.load.policy_spec import policy_from_spec


def table(sps: dict[int, float], name="hand") -> CapacityCurve:
    b = sorted(sps)
    return CapacityCurve(name=name, kind="table", batch=tuple(b),
                         step_ms=tuple(1e3 / sps[x] for x in b))


APPENDIX = table({1: 1.0, 2: 0.5, 3: 0.45}, "appendix-a")


def views(*confs, max_ell=None):
    return [RequestView(np.array(c, dtype=float), len(c) if max_ell is None else max_ell)
            for c in confs]


# ----------------------------------------------------------------------------- by hand
def test_algorithm1_hand_worked_two_requests():
    # a: r0 = (0.9, 0.45), r1 = (0.8, 0.64); sorted (0,1) (1,1) (1,2) (0,2)
    # Θ0 = 2·1 = 2; admit → 2.9·0.9 = 2.61, 3.7·0.8 = 2.96, 4.34·0.7 = 3.038, 4.79·0.6 = 2.874 ✗
    cap = table({2: 1.0, 3: 0.9, 4: 0.8, 5: 0.7, 6: 0.6})
    d = HardwareAware().decide(views([0.9, 0.5], [0.8, 0.8]), cap)
    assert [x.ell for x in d] == [1, 2]
    path = d[0].path
    assert [(s.r, s.j) for s in path] == [(0, 1), (1, 1), (1, 2), (0, 2)]
    assert [s.admitted for s in path] == [True, True, True, False]
    assert [s.B for s in path] == [3, 4, 5, 6]
    np.testing.assert_allclose([s.tau for s in path], [2.9, 3.7, 4.34, 4.79])
    np.testing.assert_allclose([s.theta for s in path], [2.61, 2.96, 3.038, 2.874])
    assert "no improvement" in d[0].stop and "j=2" in d[0].stop


# a CPU-like curve: 2–3 rows cost more than 4 (step ms 100, 130, 140, 120, 150)
DIP = table({1: 10.0, 2: 1e3 / 130, 3: 1e3 / 140, 4: 1e3 / 120, 5: 1e3 / 150}, "dip")


def test_envelope_runs_through_a_dip_in_the_curve():
    # a = .45, .0495, .02475, .002475. On the raw curve (alg1): Θ0 = 10, Θ1 = 1.45·7.692 =
    # 11.15, Θ2 = 1.4995·7.143 = 10.71 ✗ → ℓ = 1 at 130 ms. On the envelope SPS* = (10, 8.333,
    # 8.333, 8.333, 6.667): 12.08, 12.50, 12.70, then 1.5267·6.667 = 10.18 ✗ → ℓ = 3 at 120 ms.
    v = views([0.45, 0.11, 0.5, 0.1])
    raw = parse_policy("alg1", 7).decide(v, DIP)[0]
    env = HardwareAware().decide(v, DIP)[0]
    assert (raw.ell, env.ell) == (1, 3)
    np.testing.assert_allclose([s.theta for s in raw.path], [11.1538, 10.7107], atol=1e-4)
    np.testing.assert_allclose([s.theta for s in env.path], [12.0833, 12.4958, 12.7021, 10.1782],
                               atol=1e-4)
    assert [s.admitted for s in env.path] == [True, True, True, False]
    # on a monotone curve the envelope is the curve: the same decisions, every time
    rng = np.random.default_rng(0)
    cap = get_curve("h200-qwen3-8b")
    for _ in range(20):
        v = views(*rng.uniform(0.0, 1.0, (int(rng.integers(1, 40)), 7)))
        assert ([d.ell for d in HardwareAware().decide(v, cap)]
                == [d.ell for d in parse_policy("alg1", 7).decide(v, cap)])


def test_appendix_a_decisions_early_stop_vs_retrospective():
    hi, lo = views([0.8, 0.9]), views([0.8, 0.0])
    assert HardwareAware().decide(hi, APPENDIX)[0].ell == 0  # Θ1 = 0.9 < Θ0 = 1: stop
    assert HardwareAware().decide(lo, APPENDIX)[0].ell == 0
    r_hi, r_lo = Retrospective().decide(hi, APPENDIX)[0], Retrospective().decide(lo, APPENDIX)[0]
    assert (r_hi.ell, r_lo.ell) == (2, 0)  # Θ2 = 2.52·0.45 = 1.134 is the global max
    assert r_hi.path[-1].theta == pytest.approx(1.134)
    assert not Retrospective().lossless and HardwareAware().lossless and AsyncDelayed().lossless


def test_budget_cap_zero_confidence_and_empty():
    cap = get_curve("h200-qwen3-8b")  # memory bound at R = 2: everything is admitted
    d = HardwareAware().decide(views([0.9] * 7, [0.9, 0.9, 0.0, 0.9], max_ell=3), cap)
    assert [x.ell for x in d] == [3, 2]  # cap ℓ ≤ 3; a = 0 stops request 1 at j = 2
    assert d[0].stop == "budget"
    assert HardwareAware().decide([], cap) == []
    assert [x.ell for x in HardwareAware().decide(views([], []), cap)] == [0, 0]


def test_ties_keep_prefix_order_and_r_order():
    p = admission_path(views([1.0, 1.0, 1.0], [1.0, 1.0]), get_curve("h100-qwen3-4b"))
    assert list(zip(p.r.tolist(), p.j.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]


def test_greedy_early_stop_is_optimal_on_concave_curve():
    rng = np.random.default_rng(3)
    cap = get_curve("a100-qwen3-14b").for_load(16)  # smooth: Θ unimodal along the path
    for _ in range(20):
        v = views(*[rng.uniform(0.2, 1.0, 5) for _ in range(16)])
        p = admission_path(v, cap)
        assert early_stop_count(p) == global_best_count(p)


def test_load_shrinks_budget():
    rng = np.random.default_rng(0)
    cap = get_curve("h200-qwen3-8b")
    budgets = []
    for R in (8, 128, 512):
        d = HardwareAware(record_path=False).decide(views(*rng.uniform(0.5, 1.0, (R, 7))), cap)
        budgets.append(np.mean([x.ell for x in d]))
    assert budgets[0] == 7 and budgets[0] > budgets[1] > budgets[2]


def test_parse_scheduler_and_policy():
    assert isinstance(policy_from_spec("hardware", 7), HardwareAware)
    assert isinstance(policy_from_spec("async:h100-qwen3-4b-jagged", 7), AsyncDelayed)
    assert policy_from_spec("async:h100-qwen3-4b-jagged", 7).capacity.kind == "jagged"
    assert isinstance(policy_from_spec("retrospective", 7), Retrospective)
    with pytest.raises(ConfigError, match="unknown policy"):
        parse_policy("nope", 7)
    assert isinstance(parse_policy("hardware", 7), HardwareAware)
    with pytest.raises(ConfigError, match="unknown capacity preset"):
        policy_from_spec("hardware:z100-qwen9", 7)


# ----------------------------------------------------------------------------- async K
def test_async_k_ignores_current_step():
    rng = np.random.default_rng(1)
    cap = get_curve("h200-qwen3-8b-jagged")
    hist = [views(*rng.uniform(0.3, 1.0, (64, 7))) for _ in range(5)]
    ks = []
    for trial in range(6):  # same history, wildly different current confidences
        pol = AsyncDelayed()
        for v in hist:
            pol.decide(v, cap)
        cur = views(*rng.uniform(0.0, 1.0, (64, 7)) ** (trial + 1))
        k_before, _ = pol.next_k(64)
        d = pol.decide(cur, cap)
        ks.append((k_before, pol.last_k))
        assert sum(x.ell for x in d) == min(pol.last_k, admission_path(cur, cap).n)
    assert len(set(ks)) == 1 and ks[0][0] == ks[0][1]
    # and K at step t is the no-early-stop optimum of step t − 2's candidates
    pol = AsyncDelayed()
    for v in hist:
        pol.decide(v, cap)
    assert pol.next_k(64)[0] == global_best_count(admission_path(hist[-2], cap))


def test_async_admits_top_k_current_candidates():
    pol = AsyncDelayed(k_init=3)
    d = pol.decide(views([0.9, 0.9, 0.9], [0.95, 0.1, 0.1]), APPENDIX)
    assert [x.ell for x in d] == [2, 1]  # a: .95 .9 .81 .729 | .095 → top 3
    assert "K=3" in d[0].stop


# ----------------------------------------------------------------------------- Appendix A
def _appendix_first_token_freq(policy, n: int, seed: int = 0, curve=APPENDIX) -> float:
    """One request, γ = 2, p_t = (0.7, 0.3), p_d = (0.5, 0.5); c2 = 0.9 if x1 = A else 0."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.tensor([[0.7, 0.3]] * 3)
    q = torch.tensor([[0.5, 0.5]] * 2)
    hits = 0
    for _ in range(n):
        x = draw(q, gen)  # [2] x1, x2 ~ p_d
        conf = np.array([0.8, 0.9 if int(x[0]) == 0 else 0.0])
        ell = policy.decide([RequestView(conf, 2)], curve)[0].ell  # sees c2, i.e. x1
        res = verify_block(draft=x[:ell], q=q[:ell], p=p[: ell + 1], greedy=False, gen=gen)
        first = int(x[0]) if res.n_accepted >= 1 else res.appended
        hits += first == 0
    return hits / n


def test_appendix_a_end_to_end():
    n = 2500
    tol = 4.5 * math.sqrt(0.25 / n)  # 4.5 σ of a binomial frequency (σ ≤ √(1/4N)): 0.045
    retro = _appendix_first_token_freq(Retrospective(record_path=False), n)
    causal = _appendix_first_token_freq(HardwareAware(record_path=False), n)
    delayed = _appendix_first_token_freq(AsyncDelayed(record_path=False), n)
    assert abs(retro - 0.85) < tol, retro  # the paper's biased (0.85, 0.15)
    assert abs(causal - 0.70) < tol, causal  # the target (0.7, 0.3)
    assert abs(delayed - 0.70) < tol, delayed
    # Appendix A on a curve with a dip (SPS 1, 0.5, 0.6): the envelope admits x1 on a1 alone
    # (Θ1 = 1.8·0.6 > 1), whatever c2 says; the search without early stop is biased again
    dip = table({1: 1.0, 2: 0.5, 3: 0.6}, "appendix-a-dip")
    env = _appendix_first_token_freq(HardwareAware(record_path=False), n, seed=1, curve=dip)
    retro = _appendix_first_token_freq(Retrospective(record_path=False), n, seed=1, curve=dip)
    assert abs(env - 0.70) < tol, env
    assert abs(retro - 0.85) < tol, retro


# ----------------------------------------------------------------------------- the real engine
class CraftedDrafter:
    """Wraps a tiny drafter: q_k = uniform over the target's top-2 at position 1 (one target
    pass per round) and crafted confidences c1 = c1_fn(anchor),
    c2 = 0.95 if x1 is the target's top token else 0.05 — Appendix A inside the engine."""

    def __init__(self, inner, c1_fn):
        self.inner, self.c1_fn, self.session = inner, c1_fn, None

    def __getattr__(self, k):
        return getattr(self.inner, k)

    def propose(self, target, cache, anchor, *, gamma, temperature, top_k=0, top_p=1.0,
                gen=None, use_markov=True, **_):
        from dspark_viz.drafter.model import Proposal
        hist = list(self.session.prompt_ids) + list(self.session.generated)
        with torch.inference_mode():  # one target pass: the decoding distribution at position 1
            z = target.model(torch.tensor([hist])).logits[0, -1:].float()
        p = warp(z, temperature=temperature, top_k=top_k, top_p=top_p)[0]
        top2 = torch.topk(p, 2).indices
        q = torch.zeros_like(p)
        q[top2] = 0.5
        # every position drafts from the same q (a valid, if poor, proposal past position 1)
        toks = [int(t) for t in draw(q.expand(gamma, -1), gen)]
        qs = [q] * gamma
        conf = [self.c1_fn(int(anchor[0])), 0.95 if toks[0] == int(top2[0]) else 0.05]
        conf = (conf + [0.5] * gamma)[:gamma]
        q = torch.stack(qs).unsqueeze(0)
        known = dict(tokens=torch.tensor([toks]), q=q, base_logits=torch.log(q + 1e-9),
                     conf_logit=torch.logit(torch.tensor([conf], dtype=torch.float64)).float())
        # optional display fields (candidate ids, Markov bias, …) are absent: None
        return Proposal(**{f.name: known.get(f.name) for f in dataclasses.fields(Proposal)
                           if f.name in known or f.default is dataclasses.MISSING})


ENGINE_CURVE = table({1: 1.0, 2: 0.6, 3: 0.5}, "engine-test")
T_ENGINE = 4.0  # flattens the top-2 target distribution: a larger Appendix A bias


def _engine_z(target, policy, c1_fn, rounds: int):
    """Decode with the real engine; every committed token y with the target's (top-2, T)
    probability π of its top token gives 1[y = top] − π, a martingale difference when the
    decoding is lossless. Returns (Z over all tokens, Z over each round's first token, ℓ counts)."""
    from dspark_viz.decoding.engine import SpecSession
    inner = make_drafter(target)
    obs, ells, seed = [], [0, 0, 0], 0
    while len(ells) and sum(ells) < rounds:
        w = CraftedDrafter(inner, c1_fn)
        s = SpecSession(target, w, DecodeConfig(gamma=2, temperature=T_ENGINE, top_k=2,
                                                max_new_tokens=60, seed=seed),
                        policy=policy)
        w.session = s
        tr = s.run(chr(97 + seed % 26) + chr(97 + seed // 26 % 26))
        for r in tr.rounds:
            ell = len(r.verify)
            ells[ell] += 1
            for m, y in enumerate(r.committed):
                tk = r.verify[m].target_topk if m < ell else r.appended_topk
                pi = 1.0 / (1.0 + math.exp(-(tk[0].logit - tk[1].logit) / T_ENGINE))
                obs.append((m, float(y == tk[0].token), pi))
        seed += 1
    o = np.array(obs)

    def z(sel):
        return float((sel[:, 1] - sel[:, 2]).sum() / math.sqrt((sel[:, 2] * (1 - sel[:, 2])).sum()))
    return z(o), z(o[o[:, 0] == 0]), ells


Z_BOUND = 4.5  # |Z| of N(0, 1) exceeds 4.5 with probability 7e-6, whatever N is (CLT)


@pytest.mark.parametrize("make", [HardwareAware, AsyncDelayed], ids=["hardware", "async"])
def test_lossless_policies_through_engine(tiny_qwen, make):
    z_all, z_first, ells = _engine_z(tiny_qwen, make(capacity=ENGINE_CURVE),
                                     lambda a: 0.9 if a % 2 else 0.6, 250)
    assert min(ells) > 20, ells  # ℓ = 0, 1 and 2 all exercised
    assert abs(z_all) < Z_BOUND and abs(z_first) < Z_BOUND, (z_all, z_first)


def test_envelope_lossless_through_engine(tiny_qwen):
    """A curve whose B = 2 step is dearer than B = 3: the envelope takes ℓ = 0 or 2, never 1."""
    pol = HardwareAware(capacity=table({1: 1.0, 2: 0.5, 3: 0.55}, "engine-dip"))
    z_all, z_first, ells = _engine_z(tiny_qwen, pol, lambda a: 0.9 if a % 2 else 0.5, 250)
    assert ells[1] == 0 and ells[0] > 20 and ells[2] > 20, ells
    assert abs(z_all) < Z_BOUND and abs(z_first) < Z_BOUND, (z_all, z_first)


def test_retrospective_bias_visible_through_engine(tiny_qwen):
    """The same statistic has the power to catch the lossy search (it favours the top token)."""
    z_all, z_first, ells = _engine_z(tiny_qwen, Retrospective(capacity=ENGINE_CURVE),
                                     lambda a: 0.6, 350)
    assert ells[0] > 50 and ells[2] > 50
    assert z_first > 3.0, (z_first, ells)  # one-sided, P(Z > 3) = 1e-3 under losslessness


def test_fixed_is_policy_baseline():
    d = Fixed(1).decide(views([0.1] * 7, [0.9] * 7), APPENDIX)
    assert [x.ell for x in d] == [1, 1]


# ----------------------------------------------------------------------------- the registry
def test_registry_is_the_one_list():
    from dspark_viz.decoding.policy import (POLICY_REGISTRY, policy_entry, policy_help,
                                            policy_menu, policy_names, sweep_specs)
    assert policy_names() == ["fixed", "threshold", "threshold-a", "hardware", "alg1", "async",
                              "retrospective"]
    assert policy_menu() == ["fixed", "fixed:1", "threshold:0.5", "threshold-a:0.3", "hardware",
                             "async", "retrospective"]
    assert sweep_specs() == ["fixed:1", "fixed", "threshold:0.5", "hardware", "async"]
    for name, e in POLICY_REGISTRY.items():
        assert name in policy_help()
        for alias in (name,) + e.aliases:
            assert policy_entry(alias.upper()) is e
        spec = name + {"N": ":2", "T": ":0.25"}.get(e.arg, "")
        p = policy_from_spec(spec, 7)
        assert isinstance(p, e.cls) and p.lossless == e.lossless
        assert p.needs_curve == e.needs_curve == (p.capacity is not None)
        assert p.needs_confidence == e.needs_confidence
    assert not POLICY_REGISTRY["retrospective"].lossless
    assert not POLICY_REGISTRY["fixed"].needs_confidence and POLICY_REGISTRY["threshold"].needs_confidence
    for s in policy_menu() + sweep_specs():
        policy_from_spec(s, 7)


def test_policies_take_curve_objects_never_names():
    cap = get_curve("h100-qwen3-4b")
    assert parse_policy("async", 7, cap).capacity is cap
    assert parse_policy("fixed:2", 7, cap).capacity is None  # a fixed policy needs no curve
    with pytest.raises(ConfigError, match="as an object"):
        parse_policy("hardware:h100-qwen3-4b", 7)
    with pytest.raises(ConfigError, match="curve object"):
        HardwareAware(capacity="h100-qwen3-4b")
    with pytest.raises(ConfigError, match="no capacity curve"):
        HardwareAware().decide(views([0.9]))
    # the spec's curve, else the given one, else the default
    assert policy_from_spec("hw:a100-qwen3-8b", 7, capacity=cap).capacity.name == "a100-qwen3-8b"
    assert policy_from_spec("hw", 7, capacity=cap).capacity is cap
    assert policy_from_spec("hw", 7).capacity.name == "h200-qwen3-8b"
    assert policy_from_spec("fixed:3", 7, capacity=cap).ell == 3


def test_engine_checks_curve_and_confidence_head(tiny_qwen):
    from dspark_viz.decoding.engine import SpecSession, confidence_problem
    d = make_drafter(tiny_qwen)
    cfg = DecodeConfig(gamma=2, max_new_tokens=4)
    with pytest.raises(ConfigError, match="needs a capacity curve"):
        SpecSession(tiny_qwen, d, cfg, policy=HardwareAware())
    assert confidence_problem(HardwareAware(ENGINE_CURVE), d, cfg) is None
    headless = type("Headless", (), {"confidence": None})()
    assert "confidence head" in confidence_problem(HardwareAware(ENGINE_CURVE), headless, cfg)
    assert confidence_problem(Fixed(2), headless, cfg) is None
    assert confidence_problem(HardwareAware(ENGINE_CURVE), headless,
                              DecodeConfig(gamma=2, force_ell=1)) is None

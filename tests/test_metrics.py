"""Evaluation metrics on hand-built traces: exact values (τ with +1, EOS censoring, per-position
survival and conditional acceptance, tokens per forward, macro averages, threshold sweep).

The trace builders here (make_round, make_trace, trace_a, trace_b, trace_plain) are reused by
test_calibration.py and test_eval.py.
"""
from __future__ import annotations

import pytest

from dspark_viz.decoding.trace import (SCHEMA_VERSION, DraftPos, Round, Schedule, Summary,
                                       Timings, Trace, TraceMeta, VerifyPos)
from dspark_viz.eval.metrics import (DEFINITIONS, macro_average, position_stats, summarize,
                                     threshold_sweep, view_round)

EOS = 1


def make_round(i: int, *, gamma: int, ell: int, n_acc: int, kind: str, conf=None,
               draft_eos: bool = False, target_eos: bool = False) -> Round:
    """A consistent round: drafts 10+k, ``n_acc`` accepted of ``ell``; ``kind`` of the appended
    target token ("bonus" | "correction" | "target" | "none" for a drafted EOS)."""
    drafts = [10 + k for k in range(gamma)]
    if draft_eos:
        drafts[n_acc - 1] = EOS
    conf = conf if conf is not None else [None] * gamma
    a, prod = [], 1.0
    for c in conf:
        prod = prod * c if c is not None else None
        a.append(prod)
    draft = [DraftPos(k=k + 1, base_topk=[], boosted=[], suppressed=[], corrected_topk=[],
                      token=drafts[k], p_d=1.0, conf_raw=conf[k], conf_cal=conf[k],
                      a_raw=a[k], a_cal=a[k]) for k in range(gamma)] if gamma else []
    verify = [VerifyPos(k=k + 1, token=drafts[k], p_t=1.0 if k < n_acc else 0.0, p_d=1.0,
                        ratio=1.0 if k < n_acc else 0.0, uniform=None, accepted=k < n_acc,
                        target_topk=[]) for k in range(ell)]
    accepted = drafts[:n_acc]
    if kind == "none":
        committed, appended = accepted, None
    else:
        appended = EOS if target_eos else 99
        committed = accepted + [appended]
    return Round(index=i, request=0, anchor=5, anchor_pos=3 + i, draft=draft,
                 schedule=Schedule(policy=f"fixed({gamma})", lossless=True, load=1, ell=ell,
                                   gamma=gamma, stop="fixed"),
                 verify=verify, n_accepted=n_acc, appended=appended, appended_kind=kind,
                 appended_topk=[], committed=committed, dropped=drafts[ell:],
                 eos=draft_eos or target_eos, timings=Timings())


def make_trace(rounds: list[Round], *, gamma: int, mode: str = "dspark", wall: float = 1.0,
               stop: str = "max_new_tokens") -> Trace:
    new = 1 + sum(len(r.committed) for r in rounds)
    meta = TraceMeta(target="hand", drafter="hand", mode=mode, gamma=gamma, temperature=0.0,
                     top_k=0, top_p=1.0, seed=0, max_new_tokens=64, policy=f"fixed({gamma})",
                     prompt="p", prompt_ids=[2, 3], first_token=7, device="cpu", created="now")
    verified = sum(len(r.verify) for r in rounds)
    acc = sum(r.n_accepted for r in rounds)
    summary = Summary(rounds=len(rounds), new_tokens=new,
                      drafted=sum(len(r.draft) for r in rounds), verified=verified, accepted=acc,
                      tau_mean=(new - 1) / len(rounds) if rounds else 0.0,
                      acceptance_rate=acc / verified if verified else 0.0,
                      target_forwards=1 + len(rounds), tokens_per_forward=new / (1 + len(rounds)),
                      wall_s=wall, tokens_per_s=new / wall, stop_reason=stop)
    t = Trace(version=SCHEMA_VERSION, meta=meta, rounds=rounds, summary=summary, vocab={}, text="")
    return Trace.from_dict(t.to_dict())  # the core's validation: the hand-built trace is consistent


CONF_A = [[0.9, 0.8, 0.7, 0.6], [0.9, 0.4, 0.9, 0.9], [0.3, 0.9, 0.9, 0.9], [0.8, 0.8, 0.2, 0.9]]


def trace_a() -> Trace:
    """γ = 4: all accepted + bonus; 1 then correction; 0 then correction; drafted EOS at 2."""
    g = 4
    return make_trace([
        make_round(0, gamma=g, ell=4, n_acc=4, kind="bonus", conf=CONF_A[0]),
        make_round(1, gamma=g, ell=4, n_acc=1, kind="correction", conf=CONF_A[1]),
        make_round(2, gamma=g, ell=4, n_acc=0, kind="correction", conf=CONF_A[2]),
        make_round(3, gamma=g, ell=4, n_acc=2, kind="none", conf=CONF_A[3], draft_eos=True),
    ], gamma=g, wall=2.0, stop="eos")


def trace_b() -> Trace:
    """γ = 4, one round verifying ℓ = 2: 1 accepted, then the target's correction is EOS."""
    return make_trace([make_round(0, gamma=4, ell=2, n_acc=1, kind="correction",
                                  conf=[0.9, 0.5, 0.5, 0.5], target_eos=True)],
                      gamma=4, wall=0.5, stop="eos")


def trace_plain(n: int = 3) -> Trace:
    return make_trace([make_round(i, gamma=0, ell=0, n_acc=0, kind="target") for i in range(n)],
                      gamma=4, mode="ar", wall=1.0)


# ----------------------------------------------------------------------------- tests
def test_hand_built_traces_pass_core_validation():
    a, b = trace_a(), trace_b()
    assert [r.tau for r in a.rounds] == [5, 2, 1, 2]
    assert [r.tau for r in b.rounds] == [2]
    assert a.summary.new_tokens == 11


def test_round_views_censor_after_drafted_eos():
    v = [view_round(r) for r in trace_a().rounds]
    assert [x.ell_eff for x in v] == [4, 4, 4, 2]  # the drafted EOS at k=2 censors k=3,4
    assert [x.draft_eos for x in v] == [False, False, False, True]
    vb = view_round(trace_b().rounds[0])  # EOS as the target's correction: an ordinary round
    assert (vb.ell_eff, vb.accepted, vb.tau, vb.draft_eos) == (2, 1, 2, False)


def test_summary_single_trace_hand_computed():
    m = summarize([trace_a()])
    assert m["rounds"] == 4 and m["new_tokens"] == 11 and m["target_forwards"] == 5
    assert m["tau"] == pytest.approx(10 / 4)  # (4+1) + (1+1) + (0+1) + 2 (drafted EOS: no +1)
    assert m["verified"] == 14 and m["censored"] == 2 and m["accepted"] == 7
    assert m["acceptance_rate"] == pytest.approx(0.5)
    assert m["tokens_per_forward"] == pytest.approx(11 / 5)
    assert m["cumulative_survival"] == pytest.approx([3 / 4, 2 / 4, 1 / 3, 1 / 3])
    assert m["conditional_acceptance"] == pytest.approx([3 / 4, 2 / 3, 1.0, 1.0])
    assert m["position_counts"] == {"verified": [4, 4, 3, 3], "reached": [4, 3, 1, 1],
                                    "accepted": [3, 2, 1, 1]}
    assert m["eos_rounds"] == 1
    assert m["wall_s"] == 2.0 and m["tokens_per_s"] == pytest.approx(5.5)
    # the core summary counts the censored positions as rejected; ours does not
    assert trace_a().summary.acceptance_rate == pytest.approx(7 / 16)


def test_summary_pooled_over_traces_and_wall_override():
    m = summarize([trace_a(), trace_b()], wall_s=7.0)
    assert m["tau"] == pytest.approx(12 / 5)
    assert m["acceptance_rate"] == pytest.approx(8 / 16)
    assert m["tokens_per_forward"] == pytest.approx(14 / 7)
    assert m["cumulative_survival"] == pytest.approx([4 / 5, 2 / 5, 1 / 3, 1 / 3])
    assert m["conditional_acceptance"] == pytest.approx([4 / 5, 2 / 4, 1.0, 1.0])
    assert m["tokens_per_s"] == pytest.approx(14 / 7.0)
    assert m["stop_reasons"] == {"eos": 2}


def test_plain_decoding_metrics():
    m = summarize([trace_plain(3)])
    assert m["tau"] == 1.0 and m["tokens_per_forward"] == 1.0
    assert m["acceptance_rate"] is None and m["conditional_acceptance"] is None


def test_position_stats_unreached_positions_are_none():
    r = make_round(0, gamma=3, ell=3, n_acc=0, kind="correction")
    ps = position_stats([r], 3)
    assert ps["conditional_acceptance"] == [0.0, None, None]
    assert ps["cumulative_survival"] == [0.0, 0.0, 0.0]


def test_macro_average_is_unweighted_and_skips_missing():
    per = {"x": {"tau": 2.0, "acceptance_rate": 0.5, "tokens_per_forward": 1.5,
                 "tokens_per_s": 10.0, "speedup": 1.2, "cumulative_survival": [0.8, 0.4],
                 "conditional_acceptance": [0.8, 0.5]},
           "y": {"tau": 4.0, "acceptance_rate": None, "tokens_per_forward": 2.5,
                 "tokens_per_s": 30.0, "speedup": 1.8, "cumulative_survival": [0.6, 0.2],
                 "conditional_acceptance": [0.6, None]}}
    m = macro_average(per)
    assert m["tau"] == 3.0 and m["acceptance_rate"] == 0.5 and m["speedup"] == pytest.approx(1.5)
    assert m["conditional_acceptance"] == pytest.approx([0.7, 0.5])
    assert m["cumulative_survival"] == pytest.approx([0.7, 0.3])


def test_threshold_sweep_hand_computed():
    rows = {r["threshold"]: r for r in threshold_sweep([trace_a()], [0.0, 0.35, 0.5, 0.85])}
    r0 = rows[0.0]  # threshold 0 = the recorded fixed-γ verification
    assert (r0["verified_per_step"], r0["accepted_per_step"], r0["tau"]) == (14 / 4, 7 / 4, 2.5)
    r = rows[0.35]
    assert r["verified_per_step"] == 10 / 4 and r["accepted_per_step"] == 7 / 4
    assert r["rejected_per_step"] == 3 / 4 and r["acceptance_rate"] == pytest.approx(0.7)
    r = rows[0.5]
    assert r["verified_per_step"] == 7 / 4 and r["acceptance_rate"] == 1.0 and r["tau"] == 2.5
    r = rows[0.85]
    assert r["verified_per_step"] == 2 / 4 and r["tau"] == 6 / 4
    assert threshold_sweep([trace_plain()], [0.5]) is None


def test_every_metric_has_a_definition():
    m = summarize([trace_a()])
    for key in ("tau", "acceptance_rate", "cumulative_survival", "conditional_acceptance",
                "tokens_per_forward", "tokens_per_s"):
        assert key in m and DEFINITIONS[key]
    assert "+ 1 target token" in DEFINITIONS["tau"]

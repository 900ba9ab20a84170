"""Exact verification cases with hand-built distributions, and the sampling-level guarantee."""
from __future__ import annotations

import math

import pytest
import torch

from dspark_viz.sampling import draw, warp
from dspark_viz.decoding.verify import commit, verify_block


def onehot(i, v=4):
    x = torch.zeros(v)
    x[i] = 1.0
    return x


def test_full_accept_and_bonus_greedy():
    draft = torch.tensor([1, 2])
    q = torch.stack([onehot(1), onehot(2)])
    p = torch.stack([onehot(1), onehot(2), onehot(3)])
    r = verify_block(draft=draft, q=q, p=p, greedy=True, gen=None)
    assert (r.n_accepted, r.appended, r.kind) == (2, 3, "bonus")
    assert [c.accepted for c in r.checks] == [True, True]
    assert all(c.uniform is None for c in r.checks)


def test_reject_at_position_one_greedy():
    r = verify_block(draft=torch.tensor([1, 2]), q=torch.stack([onehot(1), onehot(2)]),
                     p=torch.stack([onehot(0), onehot(2), onehot(3)]), greedy=True, gen=None)
    assert (r.n_accepted, r.appended, r.kind) == (0, 0, "correction")
    assert [c.accepted for c in r.checks] == [False, False]
    assert r.checks[1].uniform is None  # never evaluated after the first rejection


def test_all_rejected_sampling_uses_residual():
    # q puts all mass on token 1, p has none there: ratio 0 → always rejected, residual = p
    q = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    p = torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.25] * 4])
    g = torch.Generator().manual_seed(0)
    outs = [verify_block(draft=torch.tensor([1]), q=q, p=p, greedy=False, gen=g) for _ in range(400)]
    assert all(o.n_accepted == 0 and o.kind == "correction" for o in outs)
    assert {o.appended for o in outs} == {0, 2}
    assert all(o.checks[0].ratio == 0.0 for o in outs)


def test_ell_zero_samples_bonus_from_target():
    p = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    r = verify_block(draft=torch.zeros(0, dtype=torch.long), q=torch.zeros(0, 4), p=p,
                     greedy=False, gen=torch.Generator().manual_seed(1))
    assert (r.n_accepted, r.appended, r.kind, r.checks) == (0, 2, "bonus", [])


def test_draft_identical_to_target_zero_residual():
    p = torch.tensor([[0.3, 0.7, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    q = p[:1].clone()
    g = torch.Generator().manual_seed(2)
    for _ in range(200):
        r = verify_block(draft=torch.tensor([1]), q=q, p=p, greedy=False, gen=g)
        assert r.n_accepted == 1 and r.kind == "bonus" and r.checks[0].ratio == 1.0


def test_zero_residual_mass_falls_back_to_target(monkeypatch):
    """A rejection whose residual max(p − q, 0) is numerically zero samples from p_t."""
    import dspark_viz.decoding.verify as V
    monkeypatch.setattr(V, "uniform", lambda gen: 1.0 - 1e-16)  # force the rejection
    q = torch.tensor([[0.3, 0.7, 0.0, 0.0]], dtype=torch.float64)
    p = torch.tensor([[0.3 + 1e-13, 0.7 - 1e-13, 0.0, 0.0], [0.25] * 4], dtype=torch.float64)
    r = V.verify_block(draft=torch.tensor([1]), q=q, p=p, greedy=False,
                       gen=torch.Generator().manual_seed(0))
    assert r.n_accepted == 0 and r.kind == "correction" and r.residual_fallback
    assert r.appended in (0, 1)


def test_eos_inside_block_commit():
    toks, eos = commit([5, 1, 7], 9, eos_ids=(1,))
    assert toks == [5, 1] and eos
    toks, eos = commit([5, 6], 1, eos_ids=(1,))
    assert toks == [5, 6, 1] and eos
    toks, eos = commit([5, 6], 8, eos_ids=(1,))
    assert toks == [5, 6, 8] and not eos


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        verify_block(draft=torch.tensor([1, 2]), q=torch.zeros(1, 4), p=torch.zeros(3, 4),
                     greedy=True, gen=None)


def test_warp_top_k_top_p_and_greedy():
    z = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert torch.equal(warp(z, temperature=0.0), onehot(0))
    p = warp(z, temperature=1.0, top_k=2)
    assert p[2] == 0 and p[3] == 0 and math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)
    full = torch.softmax(z, -1)
    p = warp(z, temperature=1.0, top_p=float(full[0]) + 1e-4)  # needs the first two tokens
    assert (p > 0).tolist() == [True, True, False, False]
    p = warp(z, temperature=1.0, top_p=0.01)
    assert torch.equal(p, onehot(0))


def wilson_hilferty_chi2(df: int, z: float = 3.719) -> float:
    """Upper chi-square quantile (z = 3.719 ↔ one-sided p = 1e-4)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2_stat(counts: dict, probs: dict, n: int) -> tuple[float, int]:
    """Pearson χ² with cells of expected count < 5 pooled into one."""
    stat, df, pool_o, pool_e = 0.0, -1, 0, 0.0
    for cell, pr in probs.items():
        e = pr * n
        if e < 5:
            pool_o += counts.get(cell, 0)
            pool_e += e
            continue
        stat += (counts.get(cell, 0) - e) ** 2 / e
        df += 1
    if pool_e > 0:
        stat += (pool_o - pool_e) ** 2 / max(pool_e, 1e-9)
        df += 1
    extra = sum(c for k, c in counts.items() if k not in probs)
    assert extra == 0, "a sample landed in a zero-probability cell"
    return stat, df


def test_sampling_losslessness_markov_dependent_block():
    """1e5 rounds of a 2-token block whose draft (like a Markov head) conditions on x1.

    The committed pair must follow the target's joint p(a)·p(b | a) — χ² test at p = 1e-4.
    """
    V = 4
    gen = torch.Generator().manual_seed(123)
    pt1 = torch.tensor([0.5, 0.25, 0.15, 0.10])
    pt2 = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1],
                        [0.25, 0.25, 0.25, 0.25], [0.05, 0.05, 0.1, 0.8]])  # p(b | a)
    pt3 = torch.tensor([0.4, 0.3, 0.2, 0.1])  # bonus after two accepted (independent here)
    qd1 = torch.tensor([0.25, 0.25, 0.25, 0.25])
    qd2 = torch.tensor([[0.4, 0.4, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1],
                        [0.3, 0.3, 0.3, 0.1], [0.1, 0.1, 0.1, 0.7]])  # q(b | a): Markov-like
    N = 100_000
    counts: dict = {}
    for _ in range(N):
        x1 = int(draw(qd1.unsqueeze(0), gen)[0])
        x2 = int(draw(qd2[x1].unsqueeze(0), gen)[0])
        # target rows: p(·), p(· | x1), and the bonus row
        p = torch.stack([pt1, pt2[x1], pt3])
        r = verify_block(draft=torch.tensor([x1, x2]), q=torch.stack([qd1, qd2[x1]]), p=p,
                         greedy=False, gen=gen)
        out = [x1, x2][: r.n_accepted] + [r.appended]
        if len(out) < 2:  # rejected at position 1: the second token comes from p(· | a)
            out.append(int(draw(pt2[out[0]].unsqueeze(0), gen)[0]))
        key = (out[0], out[1])
        counts[key] = counts.get(key, 0) + 1
    probs = {(a, b): float(pt1[a] * pt2[a, b]) for a in range(V) for b in range(V)}
    stat, df = chi2_stat(counts, probs, N)
    assert stat < wilson_hilferty_chi2(df), (stat, df)
    # and the draft distribution itself is far from the target (so the test has teeth)
    naive = {(a, b): float(qd1[a] * qd2[a, b]) for a in range(V) for b in range(V)}
    assert chi2_stat({k: round(v * N) for k, v in naive.items()}, probs, N)[0] > 1000

"""Training with a restricted draft vocabulary (issue 6): the TV term against the target's full
distribution, OOV labels, the cached full-vocabulary lse, corpus samples, the draft vocabulary
builder, version-1 caches, and an end-to-end restricted run whose drafter ships and proposes."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import make_drafter
from dspark_viz.data import cache as C
from dspark_viz.data.corpus import corpus_samples, draft_vocab_from_counts
from dspark_viz.data.sources import Prompt
from dspark_viz.drafter.model import DSparkDrafter
from dspark_viz.train import losses as L
from dspark_viz.train import trainer as T


def _setup(seed=0, N=9, H=12, V=40, Vd=15, r=4):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(V, H, generator=g)
    R = torch.randperm(V, generator=g)[:Vd].sort().values  # draft vocabulary (target ids)
    h = torch.randn(N, H, generator=g)
    u = torch.randn(N, r, generator=g)
    w2 = torch.nn.Linear(r, Vd, bias=False)
    with torch.no_grad():
        w2.weight.copy_(torch.randn(Vd, r, generator=g) * 0.3)
    t_last = torch.randn(N, H, generator=g)
    labels_t = torch.randint(0, V, (N,), generator=g)
    labels_t[0] = R[3]  # at least one in-vocabulary label
    idx = torch.full((V,), Vd, dtype=torch.long)
    idx[R] = torch.arange(Vd)
    return dict(W=W, R=R, h=h, u=u, w2=w2, t_last=t_last, labels=idx[labels_t], Vd=Vd)


def test_restricted_l1_matches_full_distribution_and_gradients():
    s = _setup()
    W, R, Vd = s["W"], s["R"], s["Vd"]
    N = s["h"].shape[0]
    cce, ctv = torch.rand(N) + 0.1, torch.rand(N) + 0.1
    key = torch.tensor([0, 0, 1, 2, 2, 3, 4, 5, 5])  # shared target positions
    t_last = s["t_last"].clone()
    t_last[1], t_last[4], t_last[8] = t_last[0], t_last[3], t_last[7]
    lse = torch.logsumexp(t_last @ W.T, -1)
    head = (lambda z: z @ W[R].T)
    out = {}
    for name, kw in (("cached", dict(t_lse=lse)),
                     ("recomputed", dict(full_lse=lambda z: torch.logsumexp(z @ W.T, -1)))):
        w2 = torch.nn.Linear(4, Vd, bias=False)
        w2.load_state_dict(s["w2"].state_dict())
        ht = L.chunked_head_terms(h=s["h"], u=s["u"], w2=w2, head=head, t_last=t_last, t_key=key,
                                  labels=s["labels"], coef_ce=cce, coef_tv=ctv, chunk_rows=4,
                                  restricted=True, **kw)
        out[name] = (ht, w2.weight.grad.clone())
    # reference: plain autograd, p_d on R (zero elsewhere), p_t the full softmax
    h = s["h"].clone().requires_grad_(True)
    u = s["u"].clone().requires_grad_(True)
    w2 = torch.nn.Linear(4, Vd, bias=False)
    w2.load_state_dict(s["w2"].state_dict())
    z = h @ W[R].T + w2(u)
    logp = F.log_softmax(z, -1)
    pt = torch.softmax(t_last @ W.T, -1)
    pd_full = torch.zeros(N, W.shape[0]).index_copy(1, R, logp.exp())
    l1 = (pd_full - pt).abs().sum(-1)
    ok = s["labels"] < Vd
    ce = -logp.gather(-1, s["labels"].clamp(max=Vd - 1)[:, None]).squeeze(-1) * ok
    ((cce * ce).sum() + (ctv * l1).sum()).backward()
    for name, (ht, gw2) in out.items():
        assert torch.allclose(ht.l1, l1.detach(), atol=1e-5), name
        assert torch.allclose(ht.ce, ce.detach(), atol=1e-5), name
        assert (ht.ce[~ok] == 0).all()
        assert torch.allclose(ht.grad_h, h.grad, atol=1e-5), name
        assert torch.allclose(ht.grad_u, u.grad, atol=1e-5), name
        assert torch.allclose(gw2, w2.weight.grad, atol=1e-5), name
    assert (~ok).any(), "the fixture must contain out-of-vocabulary labels"
    # the out-of-R target mass is part of the distance: never below it
    out_mass = 1 - pt[:, R].sum(-1)
    assert (out["cached"][0].l1 >= out_mass - 1e-6).all()


def test_restricted_needs_a_normaliser():
    s = _setup()
    with pytest.raises(ValueError, match="t_lse or full_lse"):
        L.chunked_head_terms(h=s["h"], u=None, w2=None, head=lambda z: z @ s["W"][s["R"]].T,
                             t_last=s["t_last"], t_key=torch.arange(9), labels=s["labels"],
                             coef_ce=torch.ones(9), coef_tv=torch.ones(9), restricted=True)


def test_draft_vocab_from_counts_is_frequency_ranked_and_deterministic():
    lists = [[5, 5, 5, 7, 7, 9], [7, 3, 3, 3, 3]]
    assert draft_vocab_from_counts(lists, 2, 20) == [3, 5]  # 3×4, 5×3, 7×3 (tie → smaller id)
    assert draft_vocab_from_counts(lists, 3, 20, always=[1]) == [1, 3, 5]
    assert draft_vocab_from_counts(lists, 6, 20) == [0, 3, 5, 7, 9, 1][:0] + [0, 1, 3, 5, 7, 9]
    with pytest.raises(ValueError):
        draft_vocab_from_counts(lists, 0, 20)
    with pytest.raises(ValueError):
        draft_vocab_from_counts(lists, 1, 20, always=[1, 2])


def test_corpus_samples_windows(tiny_gemma):
    text = " ".join(f"word{i}" for i in range(200))
    ps = [Prompt(id="a", turns=(text,), source="t"), Prompt(id="b", turns=("hi",), source="t")]
    ss = corpus_samples(ps, tiny_gemma.encode, max_tokens=64, min_tokens=2)
    ids = tiny_gemma.encode(text)
    assert [s["id"] for s in ss][:2] == ["a", "a#1"] and ss[-1]["id"] == "b"
    a = [s for s in ss if s["id"].startswith("a")]
    assert all(len(s["input_ids"]) <= 64 and s["input_ids"][0] == ids[0] for s in a)
    assert sum(len(s["input_ids"]) - 1 for s in a) == len(ids) - 1  # every token once
    assert all(s["loss_spans"] == [[1, len(s["input_ids"])]] for s in ss)


@torch.no_grad()
def _sampled(target, n, T, g):
    """n sequences of T tokens sampled from the target itself (T = 1) after 4 random ids."""
    x = torch.randint(3, target.vocab_size, (n, 4), generator=g)
    while x.shape[1] < T:
        p = torch.softmax(target.forward(x, None).logits[:, -1], -1)
        x = torch.cat([x, torch.multinomial(p, 1, generator=g)], 1)
    return x


def _cache(tmp_path, target, n=12, T=40):
    g = torch.Generator().manual_seed(3)
    ss = [{"id": f"s{i}", "input_ids": row.tolist(), "loss_spans": [[4, T]]}
          for i, row in enumerate(_sampled(target, n, T, g))]
    d = tmp_path / "cache"
    C.write_cache(ss, d, target, layer_ids=(0, 1), progress=False)
    return d, ss


def test_cache_stores_full_vocabulary_lse_and_reads_version_1(tmp_path, tiny_gemma):
    d, ss = _cache(tmp_path, tiny_gemma, n=3)
    c = C.TargetCache(d)
    assert c.has_lse
    it = c[1]
    with torch.no_grad():
        logits = tiny_gemma.forward(it.ids[None], None).logits[0]
    assert torch.allclose(it.lse, torch.logsumexp(logits, -1), atol=1e-4)
    ids, m = c.tokens(1)
    assert torch.equal(ids, it.ids) and torch.equal(m, it.loss_mask)
    # a version-1 cache (no lse files) stays readable, lse None; the writer refuses to extend it
    man = json.loads((d / "manifest.json").read_text())
    man["version"] = 1
    for rec in man["shards"]:
        (d / rec["files"].pop("lse")["file"]).unlink()
    (d / "manifest.json").write_text(json.dumps(man))
    spec = json.loads((d / "cache-spec.json").read_text())
    (d / "cache-spec.json").write_text(json.dumps(spec | {"version": 1}))
    old = C.TargetCache(d)
    assert not old.has_lse and old[0].lse is None
    with pytest.raises(C.CacheError, match="version-1"):
        C.write_cache(ss, d, tiny_gemma, layer_ids=(0, 1), progress=False)


def test_restricted_training_end_to_end(tmp_path, tiny_gemma):
    d, _ = _cache(tmp_path, tiny_gemma)
    src = T.CacheSource(C.TargetCache(d))
    cfg = T.TrainConfig(method="dspark", steps=30, batch_size=4, micro_batch=4, num_anchors=6,
                        log_every=10, ckpt_every=30, lr=3e-3, seed=1)
    rc = T.resolve_config(cfg, tiny_gemma)
    dcfg = T.drafter_config(rc, tiny_gemma, draft_vocab_size=96, markov_rank=8)
    res = T.train(tiny_gemma, src, tmp_path / "run", cfg, drafter_cfg=dcfg, progress=False)
    h = res.history
    assert 0 <= h[-1]["oov_rate"] < 1
    vocab = T.build_draft_vocab(src, 96, tiny_gemma)
    assert res.drafter.draft_vocab.tolist() == vocab
    assert set(tiny_gemma.eos_ids) <= set(vocab)
    # the shipped drafter keeps its vocabulary and proposes only inside it
    dr = DSparkDrafter.from_pretrained(tmp_path / "run" / "drafter", target=tiny_gemma)
    assert dr.draft_vocab.tolist() == vocab and dr.markov.w2.weight.shape[0] == 96
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        fresh = DSparkDrafter(dr.cfg)
    fresh.set_draft_vocab(torch.tensor(vocab))
    after, before = T.evaluate(dr, tiny_gemma, src, max_samples=12), \
        T.evaluate(fresh, tiny_gemma, src, max_samples=12)
    assert after["tv"] < before["tv"] - 0.05 and after["tau_prob"] > before["tau_prob"]
    # metrics without a cached lse (recomputed through the full head) are the same
    items = [src.item(i) for i in range(4)]
    for it in items:
        assert it.lse is not None
    no_lse = [C.CacheItem(it.id, it.ids, it.loss_mask, it.taps, it.last, None) for it in items]

    class _List:
        def __init__(self, xs):
            self.xs = xs

        def __len__(self):
            return len(self.xs)

        def item(self, i):
            return self.xs[i]

        def tokens(self, i):
            return self.xs[i].ids, self.xs[i].loss_mask

    a = T.evaluate(dr, tiny_gemma, _List(items), max_samples=4)
    b = T.evaluate(dr, tiny_gemma, _List(no_lse), max_samples=4)
    for k in ("tv", "ce", "tau_prob", "accept@1"):  # cached lse: exact fp32 logits; recomputed:
        assert a[k] == pytest.approx(b[k], rel=5e-3, abs=5e-3), k  # from the bf16 final state


def test_deadline_stops_and_saves_the_drafter(tmp_path, tiny_qwen):
    d, _ = _cache(tmp_path, tiny_qwen, n=4, T=24)
    src = T.CacheSource(C.TargetCache(d))
    cfg = T.TrainConfig(method="dflash", steps=50, batch_size=2, micro_batch=2, num_anchors=4,
                        log_every=1, ckpt_every=100)
    res = T.train(tiny_qwen, src, tmp_path / "run", cfg, progress=False, deadline=0.0)
    assert res.steps == 1
    meta = json.loads((tmp_path / "run" / "drafter" / "config.json").read_text())
    assert (tmp_path / "run" / "checkpoints" / "step-00000001").exists()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "stopped_at_deadline"
    assert meta  # the drafter was written


def test_export_bf16_roundtrip(tmp_path, tiny_gemma):
    from dspark_viz.train.export import export
    cfg = T.drafter_config(T.resolve_config(T.TrainConfig(), tiny_gemma), tiny_gemma,
                           draft_vocab_size=64, markov_rank=8)
    d = DSparkDrafter(cfg)
    d.set_draft_vocab(torch.arange(0, 128, 2))
    d.save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "dst", "bf16")
    from safetensors.torch import load_file
    sd = load_file(str(out / "model.safetensors"))
    assert sd["draft_vocab"].dtype == torch.long and sd["fc.weight"].dtype == torch.bfloat16
    back = DSparkDrafter.from_pretrained(out, target=tiny_gemma)
    assert back.draft_vocab.tolist() == list(range(0, 128, 2))
    assert torch.equal(back.fc.weight, d.fc.weight.to(torch.bfloat16).float())
    with pytest.raises(ValueError):
        export(tmp_path / "src", tmp_path / "x", "int8")


def test_init_starts_from_a_drafter_and_checks_its_config(tmp_path, tiny_gemma):
    d, _ = _cache(tmp_path, tiny_gemma, n=4, T=24)
    src = T.CacheSource(C.TargetCache(d))
    cfg = T.resolve_config(T.TrainConfig(steps=1, batch_size=2, micro_batch=2, num_anchors=4,
                                         lr=1e-30, log_every=1, ckpt_every=100), tiny_gemma)
    dcfg = T.drafter_config(cfg, tiny_gemma, draft_vocab_size=64, markov_rank=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        init = DSparkDrafter(dcfg)
    init.set_draft_vocab(torch.arange(0, 128, 2))
    res = T.train(tiny_gemma, src, tmp_path / "run", cfg, drafter_cfg=dcfg, progress=False,
                  init=init)
    out = res.drafter
    assert out.draft_vocab.tolist() == list(range(0, 128, 2))
    for (k, a), (_, b) in zip(out.state_dict().items(), init.state_dict().items()):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-6, atol=1e-20, msg=k)  # lr 1e-30: the init's weights
    other = T.drafter_config(cfg, tiny_gemma, draft_vocab_size=64, markov_rank=4)
    with pytest.raises(T.TrainError, match="markov_rank"):
        T.train(tiny_gemma, src, tmp_path / "run2", cfg, drafter_cfg=other, progress=False,
                init=init)


def test_remap_draft_vocab_moves_markov_rows_with_their_ids(tiny_gemma):
    """A new draft vocabulary keeps what the Markov head learned for the ids in both: the bias
    W2·W1[prev] between two kept ids is unchanged; new ids get the OOV row and no bias."""
    d = make_drafter(tiny_gemma, draft_vocab_size=64)
    d.set_draft_vocab(torch.arange(0, 128, 2))
    with torch.no_grad():
        d.markov.w2.weight.normal_()
    w1, w2 = d.markov.w1.weight.detach().clone(), d.markov.w2.weight.detach().clone()
    old_idx = {int(t): i for i, t in enumerate(d.draft_vocab)}
    new = torch.cat([torch.arange(64, 128, 2), torch.arange(129, 193, 2)])  # 32 kept, 32 new
    assert d.remap_draft_vocab(new) == {"kept": 32, "new": 32}
    assert d.draft_vocab.tolist() == sorted(new.tolist())
    for j, t in enumerate(d.draft_vocab.tolist()):
        if t in old_idx:
            assert torch.equal(d.markov.w1.weight[j], w1[old_idx[t]])
            assert torch.equal(d.markov.w2.weight[j], w2[old_idx[t]])
        else:
            assert torch.equal(d.markov.w1.weight[j], w1[64])  # the out-of-vocabulary row
            assert not d.markov.w2.weight[j].any()
    assert torch.equal(d.markov.w1.weight[64], w1[64])
    assert d.to_draft_index(torch.tensor([64, 129, 2])).tolist() == [0, 32, 64]  # 2 left the vocabulary
    with pytest.raises(ValueError, match="64 unique ids"):
        d.remap_draft_vocab(torch.arange(10))
    assert d.draft_vocab.tolist() == sorted(new.tolist())  # a refused remap changes nothing


def test_train_init_with_a_new_draft_vocab_remaps_it(tmp_path, tiny_gemma):
    d, _ = _cache(tmp_path, tiny_gemma, n=4, T=24)
    src = T.CacheSource(C.TargetCache(d))
    cfg = T.resolve_config(T.TrainConfig(steps=1, batch_size=2, micro_batch=2, num_anchors=4,
                                         lr=1e-30, log_every=1, ckpt_every=100), tiny_gemma)
    dcfg = T.drafter_config(cfg, tiny_gemma, draft_vocab_size=64, markov_rank=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        init = DSparkDrafter(dcfg)
    init.set_draft_vocab(torch.arange(0, 128, 2))
    vocab = list(range(64, 192, 2))
    out = T.train(tiny_gemma, src, tmp_path / "run", cfg, drafter_cfg=dcfg, progress=False,
                  init=init, draft_vocab=vocab).drafter
    assert out.draft_vocab.tolist() == vocab
    torch.testing.assert_close(out.fc.weight.cpu(), init.fc.weight, rtol=1e-6, atol=1e-20)
    torch.testing.assert_close(out.markov.w2.weight[:32].cpu(), init.markov.w2.weight[32:],
                               rtol=1e-6, atol=1e-20)  # ids 64…126 kept their rows

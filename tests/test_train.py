"""Training: anchors/mask semantics, training forward == inference, chunked losses, end to
end (prompts → regenerate → cache → train → load → speculative decoding), resume after a
kill, DDP (2 gloo processes) == 1 process, clear errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import make_drafter
from dspark_viz.cli import main
from dspark_viz.data.cache import CacheItem, TargetCache
from dspark_viz.drafter.model import ContextCache, DSparkDrafter
from dspark_viz.train import anchors as A
from dspark_viz.train import losses as L
from dspark_viz.train import trainer as T


def _env():
    # the subprocess runs on the CPU (gloo), also on a machine with one GPU
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent.parent),
                CUDA_VISIBLE_DEVICES="")


# ------------------------------------------------------------------------------ anchors
def test_anchor_candidates_and_block_targets():
    ids = torch.arange(10, 22)  # T = 12
    m = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1]).bool()
    cand = A.anchor_candidates(m)
    assert cand.tolist() == [3, 4, 5, 6, 10]
    lab, prev, valid = A.block_targets(ids, m, torch.tensor([3, 6, 10]), 4)
    assert lab[0].tolist() == [14, 15, 16, 17] and valid[0].all()
    assert prev[0].tolist() == [13, 14, 15, 16]  # slot 0's previous token is the anchor
    assert valid[1].tolist() == [True, False, False, False]  # leaves the span, never resumes
    assert valid[2].tolist() == [True, False, False, False]  # runs off the sequence end
    g = torch.Generator().manual_seed(0)
    a = A.sample_anchors(m, 3, g)
    assert a.numel() == 3 and set(a.tolist()) <= set(cand.tolist()) and a.tolist() == sorted(a.tolist())


def test_block_mask_semantics():
    M = A.block_mask(torch.tensor([[2, 5]]), C=7, gamma=3)[0, 0]  # [6, 13]
    assert M.shape == (6, 13)
    assert M[:3, :7].sum(1).tolist() == [2, 2, 2] and M[:3, :2].all()  # block 0 sees ctx < 2
    assert M[3:, :5].all() and not M[3:, 5:7].any()  # block 1 sees ctx < 5, not the anchor
    assert M[:3, 7:10].all() and not M[:3, 10:].any() and M[3:, 10:].all() and not M[3:, 7:10].any()


@pytest.mark.parametrize("markov", ["vanilla", "gated", "rnn", "none"])
def test_training_forward_matches_inference(tiny_target_any, markov):
    """The packed training forward gives propose()'s base logits, bias and confidence."""
    t = tiny_target_any
    d = make_drafter(t, markov, seed=3).float()
    g = d.cfg.block_size
    ids = torch.randint(4, 250, (40,), generator=torch.Generator().manual_seed(1))
    ids[0] = 2
    out = t.forward(ids[None], None, d.cfg.target_layer_ids + (t.num_layers - 1,))
    LH = len(d.cfg.target_layer_ids) * t.hidden_size
    item = CacheItem("x", ids, torch.ones(40, dtype=torch.bool), out.taps[0, :, :LH], out.taps[0, :, LH:])
    anchors = torch.tensor([5, 17, 30])
    b = A.pack([item, item], [anchors, anchors[:2]], gamma=g, mask_token_id=d.cfg.mask_token_id)
    feats = d.context_features(b.ctx_taps)
    h = d.backbone(t.embed(b.block_ids), b.block_pos, d.layer_kv(feats, b.ctx_pos), b.mask)
    h = h.view(2, 3, g, -1)
    prev = b.prev.view(2, 3 * g)
    for j, a in enumerate(anchors.tolist()):
        cache = ContextCache()
        d.extend_context(cache, item.taps[None, :a])  # positions < a only
        labels = ids[a + 1: a + 1 + g]
        # propose with greedy sampling forced onto the true tokens is not possible, so compare
        # the parallel stage for all slots and the Markov/confidence terms for slot 0
        p = d.propose(t, cache, ids[a: a + 1], gamma=g, temperature=0.0, candidates=0)
        torch.testing.assert_close(t.logits(h[0, j]), p.base_logits[0], rtol=1e-4, atol=1e-4)
        if d.markov is not None:
            u = d.markov.features(prev, h.view(2, 3 * g, -1), g).view(2, 3, g, -1)
            torch.testing.assert_close(d.markov.w2(u[0, j, 0]).float(), p.bias[0, 0], rtol=1e-4, atol=1e-4)
        if d.confidence is not None:
            e = d.markov.prev_embed(prev.view(2, 3, g)[0, j, 0]) if d.markov is not None else None
            torch.testing.assert_close(d.confidence(h[0, j, 0], e), p.conf_logit[0, 0], rtol=1e-4, atol=1e-4)
        assert b.labels[0, j].tolist() == labels.tolist()
    assert not b.valid[1, 2].any()  # the padding block


def test_chunked_head_gradients_equal_direct_autograd(tiny_qwen):
    t = tiny_qwen
    g = torch.Generator().manual_seed(0)
    N, H, r, V = 23, t.hidden_size, 8, t.vocab_size
    h = torch.randn(N, H, generator=g, requires_grad=True)
    u = torch.randn(N, r, generator=g, requires_grad=True)
    w2 = torch.nn.Linear(r, V, bias=False)
    t_last = torch.randn(N, H, generator=g)
    key = torch.arange(N) // 2  # pairs share a target position
    t_last = t_last[key * 2]
    labels = torch.randint(0, V, (N,), generator=g)
    cce, ctv = torch.rand(N, generator=g), torch.rand(N, generator=g)
    terms = L.chunked_head_terms(h=h, u=u, w2=w2, head=t.logits, t_last=t_last, t_key=key,
                                 labels=labels, coef_ce=cce, coef_tv=ctv, chunk_rows=5)
    gw_chunk = w2.weight.grad.clone()
    w2.weight.grad = None
    z = t.logits(h) + w2(u)
    logp = torch.log_softmax(z, -1)
    pt = torch.softmax(t.logits(t_last), -1)
    ce = -logp.gather(-1, labels[:, None]).squeeze(-1)
    l1 = (logp.exp() - pt).abs().sum(-1)
    (cce * ce + ctv * l1).sum().backward()
    torch.testing.assert_close(terms.ce, ce.detach())
    torch.testing.assert_close(terms.l1, l1.detach())
    torch.testing.assert_close(terms.grad_h, h.grad)
    torch.testing.assert_close(terms.grad_u, u.grad)
    torch.testing.assert_close(gw_chunk, w2.weight.grad)
    assert ((terms.accept >= 0) & (terms.accept <= 1)).all()


def test_greedy_match_label_hand_built():
    """The T = 0 confidence label: 1[argmax p_d = argmax p_t], with the restricted-vocabulary rule
    (the target's argmax over R counts only if it beats the mass outside R or is the label)."""
    head = lambda x: x  # noqa: E731 — logits are the rows themselves, V' = 3
    h = torch.tensor([[3., 0., 0.], [0., 2., 0.], [0., 0., 1.], [0., 0., 1.]])
    t_last = torch.tensor([[5., 0., 0.], [5., 0., 0.], [0., 0., 1.], [0., 0., 1.]])
    key, z4 = torch.arange(4), torch.zeros(4)
    full = L.chunked_head_terms(h=h, u=None, w2=None, head=head, t_last=t_last, t_key=key,
                                labels=torch.tensor([0, 0, 2, 2]), coef_ce=z4, coef_tv=z4,
                                backward=False)
    assert full.match.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert torch.equal(full.label("greedy"), full.match) and torch.equal(full.label("tv"), full.accept)
    # restricted: rows 2 and 3 have p_t = softmax over R scaled by exp(lse_R − lse) with lse so
    # large that most of the target's mass is outside R (p_t(argmax_R) < mass outside)
    lse_r = torch.logsumexp(t_last, -1)
    lse = torch.stack([lse_r[0], lse_r[1], lse_r[2] + 2.0, lse_r[3] + 2.0])
    res = L.chunked_head_terms(h=h, u=None, w2=None, head=head, t_last=t_last, t_key=key,
                               labels=torch.tensor([0, 0, 2, 3]), coef_ce=z4, coef_tv=z4,
                               backward=False, restricted=True, t_lse=lse)
    # row 2: argmax_R is the (greedy-regenerated) label → counted; row 3: label outside R, and
    # argmax_R holds less than the mass outside R → not counted
    assert res.match.tolist() == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        L.LossConfig(conf_label="argmax")


def test_position_weights_prob_tau_and_variants():
    w = L.position_weights(7, 7.0)
    assert w[0] == 1 and abs(float(w[6]) - float(torch.exp(torch.tensor(-6 / 7)))) < 1e-6
    assert L.LossConfig("paper").decay(7) == 7 and L.LossConfig("deepspec").decay(7) == 4
    acc = torch.tensor([[0.5, 0.5, 1.0]])
    assert abs(float(L.prob_tau(acc, torch.tensor([[True, True, True]]))) - (1 + 0.5 + 0.25 + 0.25)) < 1e-6
    assert abs(float(L.prob_tau(acc, torch.tensor([[True, False, False]]))) - 1.5) < 1e-6
    v = torch.tensor([[True, True, False], [True, False, False]])
    assert float(L.denominator(v, w[:3], "paper")) == 2
    assert abs(float(L.denominator(v, w[:3], "deepspec")) - float(2 * w[0] + w[1])) < 1e-6
    with pytest.raises(ValueError):
        L.LossConfig("nope")


def test_lr_schedule():
    cfg = T.TrainConfig(steps=100, lr=1e-3, warmup_ratio=0.1)
    lrs = [T.lr_at(s, cfg) for s in range(100)]
    assert abs(lrs[9] - 1e-3) < 1e-12 and lrs[0] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-5


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """prompts → regenerate → cache through the CLI on the tiny Qwen3 target."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("e2e")
    assert main(["prepare", "prompts", "--source", "builtin:instructions", "--source",
                 "builtin:arithmetic", "--n", "20", "--val-fraction", "0.1", "--out", str(d / "p")]) == 0
    assert main(["prepare", "regenerate", "--prompts", str(d / "p" / "train.jsonl"), "--out",
                 str(d / "regen.jsonl"), "--target", "tiny:qwen3", "--max-new-tokens", "48",
                 "--temperature", "1.0", "--batch-size", "12", "--no-progress"]) == 0
    assert main(["prepare", "cache", "--samples", str(d / "regen.jsonl"), "--out", str(d / "cache"),
                 "--target", "tiny:qwen3", "--shard-tokens", "1500", "--no-progress"]) == 0
    return d


def test_end_to_end_train_load_decode(e2e, tiny_qwen, capsys):
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    t0 = time.perf_counter()
    run = e2e / "run"
    assert main(["train", "--cache", str(e2e / "cache"), "--target", "tiny:qwen3", "--out", str(run),
                 "--steps", "300", "--log-every", "25", "--ckpt-every", "100", "--no-progress"]) == 0
    assert "anchor-blocks/s" in capsys.readouterr().out
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == list(range(25, 301, 25))
    first, last = hist[0], hist[-1]
    assert last["loss"] < 0.8 * first["loss"] and last["tv"] < first["tv"]
    assert last["accept@1"] > first["accept@1"] + 0.1 and last["tau_prob"] > first["tau_prob"] + 0.3
    assert {"conf", "conf_abs_err", "conf_bias", "accept@7", "blocks_per_s"} <= set(last)
    assert len(list((run / "checkpoints").glob("step-*"))) == 2  # keep_ckpts
    # load the trained drafter; analytic acceptance rose on the training data
    cache = TargetCache(e2e / "cache")
    src = T.CacheSource(cache)
    drafter = DSparkDrafter.from_pretrained(run / "drafter", target=tiny_qwen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = DSparkDrafter(drafter.cfg)
    after = T.evaluate(drafter, tiny_qwen, src, max_samples=16)
    before = T.evaluate(fresh, tiny_qwen, src, max_samples=16)
    assert after["accept@1"] > before["accept@1"] + 0.1 and after["tau_prob"] > before["tau_prob"] + 0.3
    # speculative decoding with the trained drafter (sampling at T = 1, as trained)
    prompt = json.loads((e2e / "regen.jsonl").read_text().splitlines()[0])["input_ids"][:20]
    tr = SpecSession(tiny_qwen, drafter, DecodeConfig(gamma=7, temperature=1.0, max_new_tokens=40,
                                                      seed=1)).run(prompt)
    tr_rand = SpecSession(tiny_qwen, fresh.eval(), DecodeConfig(gamma=7, temperature=1.0,
                                                                max_new_tokens=40, seed=1)).run(prompt)
    assert tr.summary.new_tokens >= 40 - 8 and tr.summary.tau_mean > tr_rand.summary.tau_mean
    assert time.perf_counter() - t0 < 120


def test_dflash_preset_has_no_heads_and_trains(e2e, tiny_qwen):
    src = T.CacheSource(TargetCache(e2e / "cache", verify=False))
    res = T.train(tiny_qwen, src, e2e / "dflash", T.TrainConfig(method="dflash", steps=30,
                                                                 log_every=10), progress=False)
    d = DSparkDrafter.from_pretrained(e2e / "dflash" / "drafter", target=tiny_qwen)
    assert d.markov is None and d.confidence is None
    assert res.history[-1]["loss"] == pytest.approx(res.history[-1]["ce"])  # CE only
    assert "conf" not in res.history[-1] and res.history[-1]["loss"] < res.history[0]["loss"]


def test_train_refuses_mismatched_cache_and_bad_settings(e2e, capsys):
    rc = main(["train", "--cache", str(e2e / "cache"), "--target", "tiny:qwen3", "--out",
               str(e2e / "bad"), "--layer-ids", "0", "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "layer_ids" in err and len(err.strip().splitlines()) == 1
    rc = main(["train", "--cache", str(e2e / "cache"), "--target", "tiny:gemma3", "--out",
               str(e2e / "bad"), "--steps", "2", "--no-progress"])
    assert rc == 2 and "target" in capsys.readouterr().err
    rc = main(["train", "--target", "tiny:qwen3", "--out", str(e2e / "bad"), "--steps", "2"])
    assert rc == 2 and "--cache" in capsys.readouterr().err


def _train_cmd(cache, out, steps, extra=()):
    return [sys.executable, "-m", "dspark_viz.cli", "train", "--cache", str(cache), "--target",
            "tiny:qwen3", "--out", str(out), "--steps", str(steps), "--log-every", "5",
            "--ckpt-every", "10", "--keep-ckpts", "5", "--no-progress", "--threads", "1", *extra]


def test_resume_after_kill_matches_uninterrupted(e2e):
    out = e2e / "killed"
    p = subprocess.Popen(_train_cmd(e2e / "cache", out, 60), env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and not (out / "checkpoints" / "step-00000020").exists():
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = sorted((out / "checkpoints").glob("step-*"))
    assert done and not (out / "drafter").exists(), "the run was not killed mid-training"
    r = subprocess.run(_train_cmd(e2e / "cache", out, 60), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed_from = int(r.stdout.split("steps ")[1].split("→")[0])
    assert 0 < resumed_from < 60
    ref = e2e / "straight"
    r = subprocess.run(_train_cmd(e2e / "cache", ref, 60), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]  # the same run, uninterrupted (same device)
    a = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in a] == [x["step"] for x in b]  # no duplicated / missing lines
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-5)
    da = DSparkDrafter.from_pretrained(out / "drafter")
    db = DSparkDrafter.from_pretrained(ref / "drafter")
    for (k, v), (_, w) in zip(da.state_dict().items(), db.state_dict().items()):
        torch.testing.assert_close(v, w, rtol=1e-4, atol=1e-5, msg=k)


def test_ddp_two_gloo_processes_match_one(e2e):
    steps, extra = 20, ("--batch-size", "8", "--micro-batch", "2")
    one = subprocess.run(_train_cmd(e2e / "cache", e2e / "ddp1", steps, extra), env=_env(),
                         capture_output=True, text=True)  # 1 process, on the CPU like the two
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = _train_cmd(e2e / "cache", e2e / "ddp2", steps, extra)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", *cmd[2:]], env=_env(),
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a = [json.loads(x) for x in (e2e / "ddp1" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (e2e / "ddp2" / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 4
    cfg = json.loads((e2e / "ddp2" / "train_config.json").read_text())
    assert cfg["world_size"] == 2
    for x, y in zip(a, b):
        for k in ("loss", "ce", "tv", "accept@1", "tau_prob"):
            assert x[k] == pytest.approx(y[k], rel=1e-3, abs=1e-4), (k, x["step"])
    assert a[-1]["loss"] < a[0]["loss"]


def test_train_only_confidence_with_greedy_labels(e2e, capsys):
    """--train-only confidence --conf-label greedy: only the confidence head moves, its bias
    against the T = 0 label shrinks, and the label is recorded in the drafter's metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    base = ["train", "--cache", str(e2e / "cache"), "--target", "tiny:qwen3", "--no-progress"]
    assert main(base + ["--out", str(e2e / "conf-src"), "--steps", "40", "--log-every", "40"]) == 0
    src = e2e / "conf-src" / "drafter"
    assert main(base + ["--out", str(e2e / "conf-ft"), "--steps", "60", "--log-every", "10",
                        "--init", str(src), "--train-only", "confidence", "--conf-label", "greedy",
                        "--lr", "3e-3"]) == 0
    assert "tau_greedy" in capsys.readouterr().out
    w0 = load_file(str(src / "model.safetensors"))
    w1 = load_file(str(e2e / "conf-ft" / "drafter" / "model.safetensors"))
    moved = {k for k in w0 if not torch.equal(w0[k], w1[k])}
    assert moved and all(k.startswith("confidence.") for k in moved), moved
    hist = [json.loads(x) for x in (e2e / "conf-ft" / "metrics.jsonl").read_text().splitlines()]
    assert {"greedy@1", "tau_greedy"} <= set(hist[-1])
    assert abs(hist[-1]["conf_bias"]) < abs(hist[0]["conf_bias"])
    assert hist[-1]["tau_prob"] == pytest.approx(hist[0]["tau_prob"], abs=0.5)  # drafts unchanged
    with safe_open(str(e2e / "conf-ft" / "drafter" / "model.safetensors"), "pt") as f:
        assert f.metadata()["conf_label"] == "greedy"
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    from dspark_viz.targets import load_target
    ft = DSparkDrafter.from_pretrained(e2e / "conf-ft" / "drafter")
    assert ft.conf_label == "greedy" and DSparkDrafter.from_pretrained(src).conf_label == "tv"
    tr = SpecSession(load_target("tiny:qwen3"), ft, DecodeConfig(gamma=4, max_new_tokens=8)).run("ab")
    assert tr.meta.conf_label == "greedy"
    for extra, needle in ((["--train-only", "confidence"], "--init"),
                          (["--train-only", "confidence", "--init", str(src), "--method", "dflash"],
                           "confidence head")):
        rc = main(base + ["--out", str(e2e / "conf-bad"), "--steps", "2"] + extra)
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, err)


def test_train_init_fine_tunes_and_refuses_mismatches(e2e, capsys):
    base = ["train", "--cache", str(e2e / "cache"), "--target", "tiny:qwen3", "--no-progress",
            "--steps", "2", "--log-every", "1"]
    assert main(base + ["--out", str(e2e / "init-src")]) == 0
    assert main(base + ["--out", str(e2e / "init-ft"), "--init", str(e2e / "init-src" / "drafter")]) == 0
    capsys.readouterr()
    src = json.loads((e2e / "init-src" / "drafter" / "config.json").read_text())
    ft = json.loads((e2e / "init-ft" / "drafter" / "config.json").read_text())
    assert {k: v for k, v in ft.items() if k != "metadata"} == {k: v for k, v in src.items() if k != "metadata"}
    for extra, needle in ((["--init", str(e2e / "missing")], "--init"),
                          (["--init", str(e2e / "init-src" / "drafter"), "--markov-rank", "3"], "--markov-rank"),
                          (["--init", str(e2e / "init-src" / "drafter"), "--method", "dflash"], "DSpark"),
                          (["--init", "none"], "none"),
                          (["--revocab"], "--revocab"),
                          (["--init", str(e2e / "init-src" / "drafter"), "--revocab", "--draft-vocab",
                            str(e2e / "v.json")], "--revocab")):
        rc = main(base + ["--out", str(e2e / "init-bad")] + extra)
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, err)


def test_walk_anchors_hand_built():
    """Rounds start at a, then a + (leading matches) + 1; the walk ends past the candidates."""
    cand = torch.arange(3, 11)  # 3..10
    match = torch.zeros(8, 3, dtype=torch.long)
    valid = torch.ones(8, 3, dtype=torch.bool)
    match[0] = torch.tensor([1, 1, 0])  # a = 3: 2 accepted → next round at 6
    match[3] = torch.tensor([0, 1, 1])  # a = 6: the first draft rejected → 7
    match[4] = torch.tensor([1, 1, 1])  # a = 7: all γ accepted (+ bonus) → 11: past the end
    match[1] = torch.tensor([1, 1, 1])  # a = 4 is never a round start: no effect
    assert A.walk_anchors(cand, match, valid).tolist() == [3, 6, 7]
    valid[4, 1:] = False  # at 7 only one slot lies inside the answer: 1 accepted → 9
    match[6] = torch.tensor([0, 0, 0])  # a = 9 → 10
    assert A.walk_anchors(cand, match, valid).tolist() == [3, 6, 7, 9, 10]
    assert A.walk_anchors(torch.zeros(0, dtype=torch.long), match[:0], valid[:0]).numel() == 0
    g = torch.Generator().manual_seed(0)
    among = torch.tensor([3, 6, 7])
    assert A.sample_anchors(torch.ones(12, dtype=torch.bool), 16, g, among).tolist() == [3, 6, 7]
    assert set(A.sample_anchors(torch.ones(12), 2, g, among).tolist()) <= {3, 6, 7}


def test_round_anchors_are_the_rounds_of_greedy_decoding(e2e, capsys):
    """The walk over teacher-forced matches lands exactly where fixed-γ T = 0 decoding started
    its rounds on the same (greedy) text; --conf-anchors rounds trains from them."""
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    from dspark_viz.targets import load_target
    base = ["train", "--cache", str(e2e / "cache"), "--target", "tiny:qwen3", "--no-progress"]
    src = e2e / "walk-src"
    assert main(base + ["--out", str(src), "--steps", "60", "--log-every", "60"]) == 0
    t = load_target("tiny:qwen3")
    d = DSparkDrafter.from_pretrained(src / "drafter", target=t)
    g = d.cfg.block_size
    samples, starts, accepted = [], [], 0
    for j, prompt in enumerate(["abc abc abc", "the cat sat on the", "1 2 3 4 5"]):
        s = SpecSession(t, d, DecodeConfig(gamma=g, max_new_tokens=40, temperature=0.0))
        tr = s.run(prompt)
        P = len(s.prompt_ids)
        samples.append({"id": f"w{j}", "input_ids": s.prompt_ids + s.generated,
                        "loss_spans": [[P, P + len(s.generated)]]})
        starts.append([r.anchor_pos for r in tr.rounds])
        accepted += sum(r.n_accepted for r in tr.rounds)
    walks = T.round_anchors(d, t, T.OnlineSource(samples, t, d.cfg.target_layer_ids, 4096))
    for w, st, smp in zip(walks, starts, samples):
        end = len(smp["input_ids"]) - 1  # the last candidate anchor is end − 1
        assert w.tolist() == [a for a in st if a < end], (w.tolist(), st)
    assert accepted > 0, accepted  # some rounds accepted drafts: the walk is not every position
    capsys.readouterr()
    assert main(base + ["--out", str(e2e / "walk-ft"), "--steps", "6", "--log-every", "3",
                        "--init", str(src / "drafter"), "--train-only", "confidence",
                        "--conf-label", "greedy", "--conf-anchors", "rounds"]) == 0
    assert "round anchors:" in capsys.readouterr().out
    from safetensors import safe_open
    with safe_open(str(e2e / "walk-ft" / "drafter" / "model.safetensors"), "pt") as f:
        assert f.metadata()["conf_anchors"] == "rounds"
    rc = main(base + ["--out", str(e2e / "walk-bad"), "--steps", "2", "--conf-anchors", "rounds"])
    err = capsys.readouterr().err
    assert rc == 2 and "conf_anchors" in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------ resume hardening
def _run_args(e2e, out, steps=20):
    return ["train", "--cache", str(e2e / "cache"), "--target", "tiny:qwen3", "--out", str(out),
            "--steps", str(steps), "--log-every", "5", "--ckpt-every", "10", "--keep-ckpts", "5",
            "--no-progress", "--threads", "1", "--no-verify"]


@pytest.fixture(scope="module")
def base_run(e2e):
    """20 uninterrupted steps, checkpoints at 10 and 20."""
    out = e2e / "base20"
    assert main(_run_args(e2e, out)) == 0
    return out


def _as_killed_at_20(base_run: Path, out: Path) -> Path:
    """A copy of the run as if killed after checkpoint 20, before the drafter was saved."""
    import shutil
    shutil.copytree(base_run, out)
    shutil.rmtree(out / "drafter")
    return out / "checkpoints" / "step-00000020"


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


@pytest.mark.parametrize("corrupt", ["optimizer.safetensors", "model.safetensors", "trainer_state.json"])
def test_resume_falls_back_from_a_corrupt_newest_checkpoint(e2e, base_run, capsys, corrupt):
    out = e2e / f"fallback-{corrupt.split('.')[0]}"
    step20 = _as_killed_at_20(base_run, out)
    _truncate(step20 / corrupt)
    # what a killed run leaves: temporaries of our own name pattern (and files of the user's)
    stale = [out / "checkpoints" / ".step-00000030.ab12cd34.tmp", out / ".drafter.zz99yy00.tmp",
             out / ".metrics.jsonl.q1w2e3r4.tmp", step20 / ".model.safetensors.a1b2c3d4.tmp"]
    stale[0].mkdir()
    (stale[0] / "model.safetensors").write_bytes(b"half")
    stale[1].mkdir()
    for f in stale[2:]:
        f.write_text("half")
    mine = [out / "notes.tmp", out / "checkpoints" / "README"]
    for f in mine:
        f.write_text("the user's")
    capsys.readouterr()
    assert main(_run_args(e2e, out)) == 0
    cap = capsys.readouterr()
    warnings = [x for x in cap.err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 2 and "step-00000020" in warnings[0] and corrupt in warnings[0], cap.err
    assert "resuming from step-00000010" in warnings[1]
    assert "steps 10→20" in cap.out
    assert not any(p.exists() for p in stale) and all(p.exists() for p in mine)
    # the fallen-back run equals the uninterrupted one
    a = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (base_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in a] == [x["step"] for x in b] == [5, 10, 15, 20]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-5)
    da, db = (DSparkDrafter.from_pretrained(r / "drafter") for r in (out, base_run))
    for (k, v), (_, w) in zip(da.state_dict().items(), db.state_dict().items()):
        torch.testing.assert_close(v, w, rtol=1e-4, atol=1e-5, msg=k)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["README", "step-00000010", "step-00000020"]


def test_resume_with_every_checkpoint_corrupt_is_one_line(e2e, base_run, capsys):
    out = e2e / "fallback-all"
    step20 = _as_killed_at_20(base_run, out)
    _truncate(step20 / "optimizer.safetensors")
    _truncate(out / "checkpoints" / "step-00000010" / "model.safetensors")
    cfg_before = (out / "train_config.json").read_bytes()
    capsys.readouterr()
    assert main(_run_args(e2e, out)) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("warning:")]
    assert len(err) == 1 and "no checkpoint under" in err[0] and "step-00000010" in err[0], err
    assert (out / "train_config.json").read_bytes() == cfg_before and not (out / "drafter").exists()
    assert step20.exists()  # nothing of the user's run is deleted


def test_checkpoint_written_whole_and_abandoned_future_pruned(e2e, base_run, tmp_path):
    """A step directory appears complete or not at all; after a fall-back, checkpoints past the
    resumed step are dropped at the next save, and old layouts without a state file are cleaned."""
    from dspark_viz.train import checkpoint as CK
    out = tmp_path / "run"
    _as_killed_at_20(base_run, out)
    ck = out / "checkpoints"
    (ck / "step-00000015").mkdir()  # killed mid-save (older layout: no state file)
    (ck / "step-00000015" / "model.safetensors").write_bytes(b"x")
    gone = CK.clean_run_dir(out)
    assert gone == [ck / "step-00000015"]
    drafter = DSparkDrafter.from_pretrained(ck / "step-00000010")
    opt = torch.optim.AdamW(drafter.parameters())
    cfg = T.TrainConfig.from_dict(CK.read_state(ck / "step-00000010")["train_config"])
    assert CK.load_checkpoint(ck / "step-00000010", drafter, opt) == 10
    CK.save_checkpoint(out, 12, drafter, opt, cfg, {"loss": float("nan")}, keep=5)
    assert sorted(p.name for p in ck.iterdir()) == ["step-00000010", "step-00000012"]
    from dspark_viz.io import stale_temps
    assert stale_temps(ck) == [] and stale_temps(ck / "step-00000012") == []
    assert CK.read_state(ck / "step-00000012")["metrics"] == {"loss": None}


def test_metrics_log_resume_drops_unreadable_lines(tmp_path):
    from dspark_viz.train.metrics_log import MetricsLog
    f = tmp_path / "metrics.jsonl"
    f.write_bytes(b'{"step": 5, "loss": 1.0}\n\xff\xfe\n[1, 2]\n' + b"[" * 100_000 + b"\n"
                  + b'{"step": ' + b"9" * 5000 + b"}\n" + b'{"step": 10, "loss": NaN}\n'
                  + b'{"step": 15, "loss": 0.5}\n{"step": 20, "lo')
    MetricsLog(tmp_path, 10, enabled=True).close()
    assert f.read_text().splitlines() == ['{"step": 5, "loss": 1.0}', '{"step": 10, "loss": NaN}']


def test_online_source_refuses_ids_outside_the_vocabulary(tiny_qwen):
    ok = {"id": "a", "input_ids": [2, 5, 6], "loss_spans": [[1, 3]]}
    assert len(T.OnlineSource([ok], tiny_qwen, (0,), 64)) == 1
    for bad in ([2, 320], [2, 10**30], [2, -1]):
        with pytest.raises(T.TrainError, match="outside the target vocabulary of 320"):
            T.OnlineSource([ok, {**ok, "id": "b", "input_ids": bad}], tiny_qwen, (0,), 64)

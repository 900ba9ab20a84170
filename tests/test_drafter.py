"""Drafter: taps, KV injection, Markov heads (step == teacher-forced), checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import make_drafter

from dspark_viz.drafter.model import ContextCache, DrafterError, DSparkDrafter


def test_taps_come_from_the_same_pass(tiny_target_any):
    T = tiny_target_any
    ids = torch.tensor([T.encode("hello")])
    out = T.forward(ids, T.new_cache(), (-1, 0))
    assert out.taps.shape == (1, ids.shape[1], 2 * T.hidden_size)
    emb = T.embed(ids)
    assert torch.allclose(out.taps[..., : T.hidden_size], emb, atol=1e-6)  # −1 = embedding output
    with torch.inference_mode():
        ref = T.model(ids, output_hidden_states=True).hidden_states[1]
    assert torch.allclose(out.taps[..., T.hidden_size:], ref, atol=1e-5)


def test_cache_crop_matches_fresh_pass(tiny_target_any):
    T = tiny_target_any
    ids = T.encode("abcdefgh")
    c = T.new_cache()
    T.forward(torch.tensor([ids[:5]]), c)
    T.forward(torch.tensor([ids[5:] + [9, 9, 9]]), c)
    T.crop(c, len(ids))
    nxt = T.forward(torch.tensor([[7]]), c).logits[0, -1]
    fresh = T.forward(torch.tensor([ids + [7]]), T.new_cache()).logits[0, -1]
    assert torch.allclose(nxt, fresh, atol=1e-4)


def test_context_is_injected_and_incremental(tiny_qwen):
    T, D = tiny_qwen, make_drafter(tiny_qwen)
    taps = T.forward(torch.tensor([T.encode("some context here")]), T.new_cache(),
                     D.cfg.target_layer_ids).taps
    full, inc = ContextCache(), ContextCache()
    D.extend_context(full, taps)
    D.extend_context(inc, taps[:, :4])
    D.extend_context(inc, taps[:, 4:])
    for (k1, v1), (k2, v2) in zip(full.kv, inc.kv):
        assert torch.allclose(k1, k2, atol=1e-5) and torch.allclose(v1, v2, atol=1e-5)
    a = torch.tensor([T.encode("x")[-1]])
    g = lambda: torch.Generator().manual_seed(0)
    p1 = D.propose(T, full, a, gamma=4, temperature=0.0, gen=g())
    other = ContextCache()
    D.extend_context(other, taps.flip(1))
    p2 = D.propose(T, other, a, gamma=4, temperature=0.0, gen=g())
    assert not torch.allclose(p1.base_logits, p2.base_logits)  # the block sees the context
    assert p1.tokens.shape == (1, 4) and p1.q.shape == (1, 4, T.vocab_size)
    assert torch.allclose(p1.q.sum(-1), torch.ones(1, 4))


@pytest.mark.parametrize("kind", ["vanilla", "gated", "rnn"])
def test_markov_step_equals_teacher_forced(tiny_gemma, kind):
    D = make_drafter(tiny_gemma, markov_type=kind)
    torch.manual_seed(0)
    B, blocks, g, H = 2, 3, 4, tiny_gemma.hidden_size
    prev = torch.randint(0, 300, (B, blocks * g))
    h = torch.randn(B, blocks * g, H)
    with torch.no_grad():
        tf = D.markov.w2(D.markov.features(prev, h, g)).float()
        for b in range(blocks):
            state = D.markov.init_state(B, "cpu", torch.float32)
            for k in range(g):
                i = b * g + k
                step, state = D.markov.step(prev[:, i], h[:, i], state)
                assert torch.allclose(step, tf[:, i], atol=1e-5), (kind, b, k)


@pytest.mark.parametrize("kind", ["vanilla", "gated", "rnn", "none"])
def test_save_load_round_trip(tmp_path, tiny_qwen, kind):
    T = tiny_qwen
    D = make_drafter(T, markov_type=kind)
    D.calibration = [1.5, 1.2, 1.0]
    D.save_pretrained(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "calibration.json", "config.json", "model.safetensors"]
    E = DSparkDrafter.from_pretrained(tmp_path / "d", target=T)
    assert E.cfg == D.cfg and E.calibration == [1.5, 1.2, 1.0]
    for (k, v), (k2, v2) in zip(D.state_dict().items(), E.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_bad_checkpoints_are_refused(tmp_path, tiny_qwen, tiny_gemma):
    T = tiny_qwen
    with pytest.raises(DrafterError, match="does not exist"):
        DSparkDrafter.from_pretrained(tmp_path / "nope", target=T)
    make_drafter(tiny_gemma).save_pretrained(tmp_path / "g")
    with pytest.raises(DrafterError, match="family"):
        DSparkDrafter.from_pretrained(tmp_path / "g", target=T)
    d = tmp_path / "q"
    make_drafter(T).save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_size": 99}))
    with pytest.raises(DrafterError, match="hidden size"):
        DSparkDrafter.from_pretrained(d, target=T)
    (d / "config.json").write_text("{not json")
    with pytest.raises(DrafterError, match="not valid JSON"):
        DSparkDrafter.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({**cfg, "bogus": 1}))
    with pytest.raises(DrafterError, match="unknown drafter config keys"):
        DSparkDrafter.from_pretrained(d)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(DrafterError, match="safetensors"):
        DSparkDrafter.from_pretrained(d, target=T)
    (d / "config.json").write_text(json.dumps({**cfg, "target_layer_ids": [0, 5]}))
    with pytest.raises(DrafterError, match="out of range"):
        DSparkDrafter.from_pretrained(d)


def test_restricted_draft_vocabulary(tmp_path, tiny_qwen):
    """A restricted draft vocabulary: drafts and q stay inside it, greedy output is unchanged,
    and the vocabulary survives save/load."""
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession, plain_decode
    T = tiny_qwen
    D = make_drafter(T, draft_vocab_size=64)
    vocab = torch.arange(4, 4 + 128, 2)  # 64 ids
    D.set_draft_vocab(vocab)
    assert D.markov.w2.weight.shape[0] == 64 and D.markov.w1.weight.shape[0] == 65
    assert D.to_draft_index(torch.tensor([4, 6, 5, 300])).tolist() == [0, 1, 64, 64]
    cfg = DecodeConfig(gamma=4, max_new_tokens=20, temperature=1.0, seed=3, draft_candidates=16)
    s = SpecSession(T, D, cfg)
    tr = s.run("restricted")
    allowed = set(vocab.tolist())
    assert all(d.token in allowed for r in tr.rounds for d in r.draft)
    assert all(t.token in allowed for r in tr.rounds for d in r.draft for t in d.base_topk)
    g = DecodeConfig(gamma=4, max_new_tokens=20)
    s2 = SpecSession(T, D, g)
    s2.run("restricted")
    assert s2.generated == plain_decode(T, "restricted", g)
    D.save_pretrained(tmp_path / "r")
    E = DSparkDrafter.from_pretrained(tmp_path / "r", target=T)
    assert torch.equal(E.draft_vocab, vocab) and E.draft_vocab.dtype == torch.long
    with pytest.raises(ValueError):
        D.set_draft_vocab(torch.arange(10))


def test_confidence_note_names_a_temperature_mismatch(tiny_qwen):
    d = make_drafter(tiny_qwen)
    assert d.conf_label == "tv" and d.confidence_note(1.0) is None
    assert "T = 1" in d.confidence_note(0.0)
    d.conf_label = "greedy"
    assert d.confidence_note(0.0) is None and "T = 0 (argmax match)" in d.confidence_note(0.7)
    d.calibration, d.calibration_temperature = [1.0] * d.cfg.block_size, 1.0
    note = d.confidence_note(0.0)
    assert "STS calibration was fitted on T = 1" in note and "trained" not in note
    d.conf_label = "tv"  # the shipped embedded drafter: a T = 1 head, STS-fitted on T = 0 rounds
    d.calibration_temperature = 0.0
    assert d.confidence_note(0.0) is None
    note = d.confidence_note(1.0)
    assert "fitted on T = 0" in note and "trained" not in note
    assert make_drafter(tiny_qwen, "none", confidence_head=False).confidence_note(0.0) is None


def test_markov_registry_is_the_one_list_of_kinds():
    """One class per head kind; the registry covers exactly config.MARKOV_TYPES ("none" = no
    head) and every kind keeps its state-dict names (saved checkpoints load unchanged)."""
    from dspark_viz.config import MARKOV_TYPES
    from dspark_viz.drafter.markov import MARKOV_HEADS, build_markov_head
    assert set(MARKOV_HEADS) | {"none"} == set(MARKOV_TYPES)
    assert build_markov_head("none", 10, 8, 4) is None
    keys = {k: sorted(build_markov_head(k, 10, 8, 4).state_dict()) for k in MARKOV_HEADS}
    assert keys == {"vanilla": ["w1.weight", "w2.weight"],
                    "gated": ["gate.bias", "gate.weight", "w1.weight", "w2.weight"],
                    "rnn": ["cell.bias", "cell.weight", "w1.weight", "w2.weight"]}
    with pytest.raises(ValueError, match="unknown Markov head"):
        build_markov_head("lstm", 10, 8, 4)


@pytest.mark.parametrize("kind", ["dspark", "dflash"])
def test_shipped_checkpoints_load_unchanged(kind):
    from safetensors.torch import load_file
    from dspark_viz.drafter.registry import SHIPPED
    from dspark_viz.targets import EMBEDDED_NAME
    path = SHIPPED[EMBEDDED_NAME][kind]
    if not (path / "model.safetensors").exists():
        pytest.skip("shipped drafter not installed")
    d = DSparkDrafter.from_pretrained(path)
    stored = load_file(str(path / "model.safetensors"))
    assert sorted(stored) == sorted(d.state_dict())
    assert all(torch.equal(stored[k].to(v.dtype), v) for k, v in d.state_dict().items())


# ----------------------------------------------------------------------------- Gemma 4
@pytest.fixture(scope="module")
def tiny_gemma4():
    from dspark_viz.targets import tiny_target
    return tiny_target(family="gemma4", vocab_size=320, seed=1)


def test_gemma4_drafter_follows_the_targets_full_attention(tiny_gemma4):
    """A Gemma 4 drafter copies the target's full-attention geometry (as DeepSpec's
    ``build_draft_config``): head dim 32, one K = V head (no v_proj), proportional RoPE ¼ at
    θ = 1e6, plain-weight norms, a weightless value norm and a layer scalar."""
    from dspark_viz.drafter.backbone import ScaleRMSNorm
    from dspark_viz.drafter.model import config_for_target
    c = config_for_target(tiny_gemma4, preset="deepspec")
    assert (c.family, c.head_dim, c.num_kv_heads, c.k_eq_v) == ("gemma4", 32, 1, True)
    assert (c.rope_theta, c.rope_proportion, c.num_layers) == (1e6, 0.25, 5)
    D = DSparkDrafter(c)
    layer = D.layers[0]
    assert layer.self_attn.v_proj is None and layer.self_attn.scale == 1.0
    assert isinstance(D.norm, ScaleRMSNorm) and torch.equal(D.norm.weight.detach(), torch.ones(64))
    assert not hasattr(layer.self_attn.v_norm, "weight") and "layers.0.layer_scalar" in D.state_dict()
    from dspark_viz.config import ConfigError, DrafterConfig
    with pytest.raises(ConfigError, match="Gemma 4 drafters only"):
        DrafterConfig(**(c.to_dict() | dict(family="qwen3")))


def test_gemma4_proportional_rope_rotates_the_first_pairs_only():
    from dspark_viz.drafter.backbone import inv_freq, rope
    f = inv_freq(32, 1e6, torch.device("cpu"), 0.25)
    assert f.shape == (16,) and torch.equal(f[4:], torch.zeros(12)) and bool((f[:4] > 0).all())
    assert torch.equal(f[:4], 1.0 / (1e6 ** (torch.arange(0, 8, 2).float() / 32)))
    x = torch.randn(1, 1, 3, 32)
    y = rope(x, torch.tensor([[5, 6, 7]]), 1e6, 0.25)
    keep = torch.cat([torch.arange(4, 16), torch.arange(20, 32)])
    assert torch.equal(y[..., keep], x[..., keep]) and not torch.allclose(y, x)


def test_gemma4_save_load_and_masked_forward(tmp_path, tiny_gemma4):
    """Our own checkpoint of a Gemma 4 drafter loads back equal; the training path (explicit
    mask) equals the inference path (cached context, no mask)."""
    T = tiny_gemma4
    D = make_drafter(T, markov_type="gated")
    D.save_pretrained(tmp_path / "g4")
    E = DSparkDrafter.from_pretrained(tmp_path / "g4", target=T)
    assert E.cfg == D.cfg and all(torch.equal(v, E.state_dict()[k]) for k, v in D.state_dict().items())
    ids = torch.tensor([T.encode("context words")])
    taps = T.forward(ids, T.new_cache(), D.cfg.target_layer_ids).taps
    C, Q = taps.shape[1], 4
    cache = ContextCache()
    D.extend_context(cache, taps)
    x = torch.randn(1, Q, T.hidden_size)
    pos = torch.arange(C, C + Q)[None]
    with torch.no_grad():
        inc = D.backbone(x, pos, cache.kv)
        feats = D.context_features(taps)
        kv = D.layer_kv(feats, torch.arange(C)[None])
        mask = torch.ones(1, 1, Q, C + Q, dtype=torch.bool)
        full = D.backbone(x, pos, kv, mask)
    assert torch.allclose(inc, full, atol=1e-5)

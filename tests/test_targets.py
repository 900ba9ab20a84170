"""The CPU bf16 LM head (exact top logits, same greedy decoding, opt-in/opt-out rules) and the
tiny Gemma 4 target (transformers' Gemma4ForCausalLM: family, geometry, taps, sliding-window rollback)."""
from __future__ import annotations

import pytest
import torch

from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.engine import SpecSession, plain_decode
from dspark_viz.targets import (Bf16Head, _family_of, config_value, fast_head_wanted, gemma4_full_attention,
                               load_target, tiny_target, use_fast_head)

from conftest import make_drafter


def test_bf16_head_top_logits_exact_and_tail_close():
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5000, 64, generator=g) * 0.2)
    head = Bf16Head(w, exact_k=16)
    h = torch.randn(3, 7, 64, generator=g) * 3  # [B, T, H]
    ref = h @ w.detach().T  # [B, T, V] fp32
    z = head(h)
    assert z.dtype == torch.float32 and z.shape == ref.shape
    top = ref.topk(16, dim=-1).indices
    # the exact-k largest entries are the fp32 products (same argmax, same head of p)
    torch.testing.assert_close(z.gather(-1, top[..., :8]), ref.gather(-1, top[..., :8]),
                               rtol=1e-6, atol=1e-5)
    assert torch.equal(z.argmax(-1), ref.argmax(-1))
    # the tail carries bf16 error only
    assert (z - ref).abs().max() < 0.05 * ref.abs().max()
    assert "weight_bf16" not in head.state_dict() and head.weight is w


def test_fast_head_greedy_equals_fp32_head():
    cfg = DecodeConfig(gamma=4, max_new_tokens=40)
    plain = tiny_target(family="gemma3", vocab_size=320, seed=1)
    fast = tiny_target(family="gemma3", vocab_size=320, seed=1)
    use_fast_head(fast.model, exact_k=8)
    assert isinstance(fast.model.get_output_embeddings(), Bf16Head)
    ref = plain_decode(plain, "The quick brown fox", cfg)
    assert plain_decode(fast, "The quick brown fox", cfg) == ref
    s = SpecSession(fast, make_drafter(fast), cfg)
    s.run("The quick brown fox")
    assert s.generated == ref


def test_fast_head_rules(monkeypatch):
    t = tiny_target(family="qwen3", vocab_size=320, seed=0)
    monkeypatch.delenv("DSPARK_VIZ_FAST_HEAD", raising=False)
    assert not fast_head_wanted(t.model)  # small vocabulary: nothing to gain
    monkeypatch.setenv("DSPARK_VIZ_FAST_HEAD", "1")
    assert fast_head_wanted(t.model)
    monkeypatch.setenv("DSPARK_VIZ_FAST_HEAD", "0")
    assert not fast_head_wanted(t.model)


@pytest.mark.slow
def test_embedded_fast_head_matches_fp32(embedded_target):
    T = embedded_target
    head = T.model.get_output_embeddings()
    if not isinstance(head, Bf16Head):
        pytest.skip("this CPU has no fast bf16 products: the embedded target keeps the fp32 head")
    ids = torch.tensor([T.encode("def add(a, b):\n    return")])
    out = T.forward(ids, T.new_cache(), layer_ids=(T.num_layers - 1,))
    h = out.taps[0]  # [T, H]: the last layer after the final norm
    ref = h @ head.weight.T
    assert torch.equal(out.logits[0].argmax(-1), ref.argmax(-1))
    top = ref.topk(32, dim=-1).indices
    torch.testing.assert_close(out.logits[0].gather(-1, top), ref.gather(-1, top),
                               rtol=1e-5, atol=1e-4)


def test_fast_draft_head_keeps_candidates_exact_and_greedy_equal():
    """With the bf16 CPU head, a restricted drafter's head runs in bf16 at inference too: the
    K candidates the sequential stage keeps carry their exact fp32 logits, training keeps the
    fp32 product, and speculative greedy output still equals plain decoding."""
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession, plain_decode
    T = tiny_target(family="gemma3", vocab_size=2048, seed=1)
    use_fast_head(T.model, exact_k=8)
    D = make_drafter(T, draft_vocab_size=512)
    D.set_draft_vocab(torch.arange(4, 4 + 512))
    h = torch.randn(1, 5, T.hidden_size, generator=torch.Generator().manual_seed(0))
    ref = D.draft_logits(T, h)  # exact_k = 0: the fp32 product (training)
    fast = D.draft_logits(T, h, exact_k=32)
    top = ref.topk(24, dim=-1).indices  # (the 32nd may sit past bf16's own top 32)
    torch.testing.assert_close(fast.gather(-1, top), ref.gather(-1, top), rtol=1e-6, atol=1e-5)
    assert not torch.equal(fast, ref)  # the tail is the bf16 product
    assert "_fast_head" not in dict(D.named_modules())
    cfg = DecodeConfig(gamma=4, max_new_tokens=24, draft_candidates=32)
    s = SpecSession(T, D, cfg)
    s.run("The quick brown fox")
    assert s.generated == plain_decode(T, "The quick brown fox", cfg)


# ----------------------------------------------------------------------------- Gemma 4
@pytest.fixture(scope="module")
def tiny_gemma4():
    return load_target("tiny:gemma4")


def test_tiny_gemma4_target_is_a_gemma4_family_target(tiny_gemma4):
    """``tiny:gemma4`` is transformers' own Gemma4ForCausalLM, with the full-attention geometry
    DeepSpec's Gemma 4 drafter copies (read through 5.2x's per-layer config)."""
    from transformers import Gemma4ForCausalLM
    T = tiny_gemma4
    assert isinstance(T.model, Gemma4ForCausalLM) and T.family == "gemma4" and T.softcap == 30.0
    fa = gemma4_full_attention(T.config)
    assert (fa.head_dim, fa.num_kv_heads, fa.k_eq_v, fa.rope_theta, fa.rope_proportion) == (32, 1, True, 1e6, 0.25)
    assert config_value(T.config, "num_key_value_heads") == 2 and config_value(T.config, "head_dim") == 16
    assert [_family_of(m) for m in ("gemma4", "gemma4_text", "gemma4_unified_text", "gemma3_text", "qwen3")] == \
        ["gemma4", "gemma4", "gemma4", "gemma3", "qwen3"]


def test_gemma4_taps_and_cache_crop_past_the_sliding_window(tiny_gemma4):
    """Taps come from the logits' pass; a cache grown past the sliding window (16) and rolled
    back gives the logits of a fresh pass."""
    T = tiny_gemma4
    ids = T.encode("a sentence longer than the window")  # 35 tokens
    out = T.forward(torch.tensor([ids]), T.new_cache(), (-1, 0))
    with torch.inference_mode():
        ref = T.model(torch.tensor([ids]), output_hidden_states=True)
    assert torch.allclose(out.taps[..., : T.hidden_size], T.embed(torch.tensor([ids])), atol=1e-6)
    assert torch.allclose(out.taps[..., T.hidden_size:], ref.hidden_states[1], atol=1e-5)
    assert torch.allclose(out.logits, ref.logits.float(), atol=1e-5)
    c = T.new_cache()
    T.forward(torch.tensor([ids[:20]]), c)
    T.forward(torch.tensor([ids[20:] + [9, 9, 9, 9]]), c)
    T.crop(c, len(ids))
    nxt = T.forward(torch.tensor([[7]]), c).logits[0, -1]
    fresh = T.forward(torch.tensor([ids + [7]]), T.new_cache()).logits[0, -1]
    assert torch.allclose(nxt, fresh, atol=1e-4)


def test_gemma4_speculative_greedy_equals_plain(tiny_gemma4):
    T = tiny_gemma4
    cfg = DecodeConfig(gamma=5, max_new_tokens=40, stop_at_eos=False)
    ref = plain_decode(T, "The quick brown fox jumps over", cfg)
    for kind in ("vanilla", "rnn"):
        s = SpecSession(T, make_drafter(T, markov_type=kind), cfg)
        s.run("The quick brown fox jumps over")
        assert s.generated == ref, kind


def test_embedded_snapshot_is_converted_once_by_concurrent_callers(tmp_path, monkeypatch):
    """Two writers started together must not both assemble/convert the GGUF (they raced into
    FileExistsError on the half-written file): one converts under the lock, the other waits."""
    import threading
    import time as _time

    from dspark_viz import targets as T

    monkeypatch.setenv("DSPARK_VIZ_CACHE", str(tmp_path))
    calls, inside = [], []

    def fake_convert(snap):
        inside.append(1)
        assert len(inside) == 1, "two converters ran at once"
        calls.append(snap)
        _time.sleep(0.3)
        snap.mkdir(parents=True)
        (snap / "COMPLETE").write_text("x")
        inside.pop()

    monkeypatch.setattr(T, "_convert_embedded", fake_convert)
    got = []
    threads = [threading.Thread(target=lambda: got.append(T.ensure_embedded_snapshot())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [tmp_path / "gemma3-270m"] * 3
    assert T.ensure_embedded_snapshot() == tmp_path / "gemma3-270m" and len(calls) == 1

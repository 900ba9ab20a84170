"""DeepSpec's checkpoint format: import, exact drafts, bf16 op order, export, round trips, refusals.

Tiny random models only. The checkpoints are written by ``deepspec_reference.Qwen3DSparkModel``
(DeepSpec's module tree on transformers' Qwen3 modules) with transformers' ``save_pretrained``,
as DeepSpec writes its own; its draft loop (``deepspec_greedy_rounds``) is the reference the
drafts, accepted counts and confidences are compared against.
"""
from __future__ import annotations

import copy
import json
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_drafter
from deepspec_reference import Qwen3DSparkModel, deepspec_greedy_rounds

from dspark_viz.cli import main
from dspark_viz.config import DecodeConfig, TinyTargetSpec
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.drafter.backbone import DraftLayer, DraftMLP, RMSNorm, rope
from dspark_viz.drafter.deepspec import deepspec_class, load_deepspec, save_deepspec, tensor_names
from dspark_viz.drafter.model import ContextCache, DrafterError, config_for_target
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.targets import tiny_target
from dspark_viz.train.export import export_deepspec


def _bf16_target(seed=0, **extra):
    """A tiny Qwen3 target whose weights are bf16 values (as released checkpoints are)."""
    T = tiny_target(TinyTargetSpec(family="qwen3", vocab_size=320, seed=seed, extra=extra))
    with torch.no_grad():
        for p in T.model.parameters():
            p.copy_(p.bfloat16().float())
    return T


@pytest.fixture(scope="module")
def T():
    return _bf16_target()


def ref_config(T, kind="vanilla", rank=16, layers=2, mask=7, conf=True, theta=1e6):
    """DeepSpec's ``build_draft_config``: a copy of the target's config plus the DSpark keys."""
    c = copy.deepcopy(T.config)
    c.architectures = ["Qwen3DSparkModel"]
    c.num_target_layers, c.num_hidden_layers, c.block_size = T.num_layers, layers, 7
    c.tie_word_embeddings, c.layer_types = False, ["full_attention"] * layers
    c.mask_token_id, c.target_layer_ids, c.num_anchors = mask, [0, 1], 512
    c.enable_confidence_head, c.markov_rank = conf, rank
    if conf:
        c.confidence_head_with_markov = rank > 0
    if rank:
        c.markov_head_type = kind
    c.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    return c


def ref_model(T, seed=1, bigram=None, **kw) -> Qwen3DSparkModel:
    """A random DeepSpec drafter for T (bf16 values). ``bigram`` (a token list): a rank-V
    vanilla head that boosts, after each token, its successor in that list — the target's own
    greedy output — so drafts get accepted."""
    torch.manual_seed(0)
    m = Qwen3DSparkModel(ref_config(T, **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            scale = p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if n.endswith("norm.weight") else 0.0))
        if m.markov_head is not None:
            m.markov_head.markov_w2.weight.mul_(30.0)  # a bias that reorders the base logits
        if bigram:
            V = T.vocab_size
            m.markov_head.markov_w1.weight.copy_(torch.eye(V))
            w2 = m.markov_head.markov_w2.weight.zero_()
            for a, b in zip(bigram, bigram[1:]):
                w2[:, a] = 0.0
                w2[b, a] = 40.0
        m.embed_tokens.weight.copy_(T.model.get_input_embeddings().weight)
        m.lm_head.weight.copy_(T.model.get_output_embeddings().weight)
    return m.to(torch.bfloat16).eval()


def write_ckpt(tmp_path, T, name="ck", dtype=torch.bfloat16, **kw):
    """Save a reference drafter as DeepSpec does; return its directory and the reference model
    loaded back in fp32 the way DeepSpec's evaluator loads it (``from_pretrained``)."""
    ref_model(T, **kw).to(dtype).save_pretrained(tmp_path / name)
    return tmp_path / name, Qwen3DSparkModel.from_pretrained(tmp_path / name, dtype=torch.float32).eval()


def _ours(T, d, label, prompt, draft_candidates=8):
    cfg = DecodeConfig(gamma=7, max_new_tokens=40, stop_at_eos=False, draft_candidates=draft_candidates)
    return SpecSession(T, d, cfg, drafter_name=label).run(prompt)


# ----------------------------------------------------------------------------- import
def test_import_reads_config_and_weights(tmp_path, T):
    path, m = write_ckpt(tmp_path, T, kind="gated")
    assert deepspec_class(path) == "Qwen3DSparkModel"
    d, label = resolve_drafter(str(path), T)
    assert label == f"deepspec:{path}"
    c = d.cfg
    assert (c.markov_type, c.markov_rank, c.confidence_head, c.num_layers) == ("gated", 16, True, 2)
    assert c.mask_token_id == 7 != T.mask_token_id  # the checkpoint's, not the target's guess
    assert c.rope_theta == 1e6 and d.whole_vocab_markov and d.conf_label == "tv"
    theirs = m.state_dict()
    for ours, name in tensor_names(d).items():
        assert torch.equal(d.state_dict()[ours], theirs[name]), ours
    assert "markov_head.gate_proj.weight" in tensor_names(d).values()


@pytest.mark.parametrize("kind", ["vanilla", "gated", "rnn", "none"])
def test_drafts_equal_deepspec_loop_fp32(tmp_path, T, kind):
    """T = 0, full block: drafts, accepted counts and confidences of every round equal the
    reference loop's; ``draft_candidates=8`` is ignored (the whole vocabulary is used)."""
    kw = dict(rank=0, conf=False) if kind == "none" else dict(kind=kind)
    path, m = write_ckpt(tmp_path, T, **kw)
    d, label = resolve_drafter(str(path), T)
    prompt = T.encode("the quick brown fox")
    ref, _ = deepspec_greedy_rounds(T, m, prompt, 30)
    tr = _ours(T, d, label, prompt)
    assert tr.meta.drafter == f"deepspec:{path}"
    n = len(ref) - 1  # our last round may verify fewer than γ (max_new_tokens)
    assert n >= 4
    for (toks, acc, confs), r in zip(ref[:n], tr.rounds):
        assert [p.token for p in r.draft] == toks and r.n_accepted == acc
        if confs:
            assert [p.conf_raw for p in r.draft] == pytest.approx(confs, abs=1e-6)


def test_accepted_drafts_equal_deepspec_loop(tmp_path, T):
    from dspark_viz.decoding.engine import plain_decode
    prompt = T.encode("abc")
    greedy = prompt + plain_decode(T, prompt, DecodeConfig(max_new_tokens=40, stop_at_eos=False))
    path, m = write_ckpt(tmp_path, T, rank=T.vocab_size, bigram=greedy)
    d, label = resolve_drafter(str(path), T)
    ref, out = deepspec_greedy_rounds(T, m, prompt, 30)
    tr = _ours(T, d, label, prompt)
    assert sum(acc for _, acc, _ in ref) >= 3  # the comparison covers accepted drafts
    n = len(ref) - 1
    assert [([p.token for p in r.draft], r.n_accepted) for r in tr.rounds[:n]] == \
        [(t, a) for t, a, _ in ref[:n]]
    mine = prompt + [tr.meta.first_token] + [t for r in tr.rounds for t in r.committed]
    assert mine[: len(out) - 8] == out[: len(out) - 8] == greedy[: len(out) - 8]


def test_top_k_candidates_would_change_the_drafts(tmp_path, T):
    """Why imports run over the whole vocabulary: with K = 8 candidates the drafts differ."""
    path, _ = write_ckpt(tmp_path, T, kind="vanilla")
    d, label = resolve_drafter(str(path), T)
    whole = _ours(T, d, label, T.encode("the quick brown fox"))
    d.whole_vocab_markov = False
    top8 = _ours(T, d, label, T.encode("the quick brown fox"))
    assert [p.token for r in whole.rounds for p in r.draft] != [p.token for r in top8.rounds for p in r.draft]


# ----------------------------------------------------------------------------- bf16 op order
def test_bf16_blocks_equal_transformers_bitwise():
    from transformers import Qwen3Config
    from transformers.models.qwen3.modeling_qwen3 import (Qwen3MLP, Qwen3RMSNorm, Qwen3RotaryEmbedding,
                                                          apply_rotary_pos_emb)
    torch.manual_seed(0)
    bf = torch.bfloat16
    x = (torch.randn(2, 9, 64) * 3).to(bf)
    mine, hf = RMSNorm(64, 1e-6, offset=False), Qwen3RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        mine.weight.copy_(torch.randn(64))
        hf.weight.copy_(mine.weight)
    mine, hf = mine.to(bf), hf.to(bf)
    assert torch.equal(mine(x), hf(x))
    cfg = Qwen3Config(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    q, k = torch.randn(2, 4, 9, 16).to(bf), torch.randn(2, 2, 9, 16).to(bf)
    pos = torch.arange(100, 109).expand(2, -1)
    cos, sin = Qwen3RotaryEmbedding(cfg)(q, pos)
    hq, hk = apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(rope(q, pos, 1e6), hq) and torch.equal(rope(k, pos, 1e6), hk)
    m1, m2 = DraftMLP(64, 96, "silu").to(bf), Qwen3MLP(cfg).to(bf)
    m2.load_state_dict(m1.state_dict())
    assert torch.equal(m1(x), m2(x))


def test_bf16_draft_layer_equals_deepspec_layer_bitwise(tmp_path, T):
    """One whole draft layer (norms, q/k norms, RoPE, context K/V, SDPA, MLP) in bf16."""
    from deepspec_reference import Layer
    cfg = ref_config(T)
    ref = Layer(cfg, 0).to(torch.bfloat16)
    dc = config_for_target(T, preset="tiny", num_heads=cfg.num_attention_heads,
                           num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                           intermediate_size=cfg.intermediate_size, rope_theta=1e6)
    mine = DraftLayer(dc).to(torch.bfloat16)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5 if p.dim() > 1 else
                    1.0 + 0.3 * torch.randn(p.shape, generator=g))
    mine.load_state_dict(ref.state_dict())
    ctx, blk = torch.randn(1, 11, 64).to(torch.bfloat16), torch.randn(1, 7, 64).to(torch.bfloat16)
    pos_all = torch.arange(18)[None]
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding
    pe = Qwen3RotaryEmbedding(cfg)(blk, pos_all)
    want = ref(blk, ctx, pe, None)
    got = mine(blk, pos_all[:, 11:], mine.context_kv(ctx, pos_all[:, :11]), None)
    assert torch.equal(got, want)


def test_bf16_markov_bias_is_added_in_model_dtype(tmp_path, T):
    path, m = write_ckpt(tmp_path, T, kind="vanilla")
    d = load_deepspec(path, T, dtype=torch.bfloat16)
    Tb = copy.deepcopy(T)
    Tb.model = Tb.model.to(torch.bfloat16)
    Tb.dtype = torch.bfloat16
    ids = torch.tensor([T.encode("hello there")])
    taps = Tb.forward(ids, Tb.new_cache(), d.cfg.target_layer_ids).taps
    c = ContextCache()
    d.extend_context(c, taps)
    p = d.propose(Tb, c, ids[0, -1:], gamma=7, temperature=1.0, gen=torch.Generator().manual_seed(0))
    mh = m.to(torch.bfloat16).markov_head
    prev = ids[0, -1:]
    with torch.inference_mode():
        for k in range(7):
            want = p.base_logits[:, k].to(torch.bfloat16) + mh.markov_w2(mh.markov_w1(prev))  # bf16 sum
            assert torch.equal(torch.softmax(want.float(), -1), p.q[:, k])
            prev = p.tokens[:, k]


# ----------------------------------------------------------------------------- export
def test_import_export_import_is_the_identity(tmp_path, T):
    path, _ = write_ckpt(tmp_path, T, kind="rnn")
    d, _ = resolve_drafter(str(path), T)
    d.calibration = [1.1] * 7
    out = export_deepspec(d, T, tmp_path / "exported")
    a, b = load_file(str(path / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and b[k].dtype == torch.bfloat16 for k in a)
    ca, cb = json.loads((path / "config.json").read_text()), json.loads((out / "config.json").read_text())
    for key in ("architectures", "model_type", "target_layer_ids", "mask_token_id", "block_size",
                "num_target_layers", "num_hidden_layers", "markov_rank", "markov_head_type",
                "enable_confidence_head", "confidence_head_with_markov", "rope_parameters",
                "num_anchors", "tie_word_embeddings", "layer_types"):
        assert ca[key] == cb[key], key
    e, _ = resolve_drafter(str(out), T)
    assert e.cfg == d.cfg and e.calibration == [1.1] * 7
    assert all(torch.equal(v, e.state_dict()[k]) for k, v in d.state_dict().items())


def test_exported_drafter_loads_in_deepspec_class(tmp_path, T):
    d = make_drafter(T, markov_type="gated")
    out = save_deepspec(d, T, tmp_path / "x")
    m, info = Qwen3DSparkModel.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    names = tensor_names(d)
    assert all(torch.equal(m.state_dict()[names[k]], v.to(torch.bfloat16)) for k, v in d.state_dict().items())
    assert m.config.rope_parameters["rope_theta"] == d.cfg.rope_theta


def test_export_cli_refuses_a_restricted_drafter(tmp_path, tiny_qwen, capsys):
    d = make_drafter(tiny_qwen, draft_vocab_size=64)
    d.set_draft_vocab(torch.arange(4, 132, 2))
    d.save_pretrained(tmp_path / "r")
    t0 = time.perf_counter()
    rc = main(["export", str(tmp_path / "r"), str(tmp_path / "o"), "--format", "deepspec",
               "--target", "tiny:qwen3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "restricted draft vocabulary" in err and "\n" not in err
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "o").exists()
    assert main(["export", str(tmp_path / "r"), str(tmp_path / "o2"), "--format", "deepspec"]) == 2
    assert "needs --target" in capsys.readouterr().err


def test_export_and_trace_cli(tmp_path, tiny_qwen, capsys):
    """Our full-vocabulary drafter → DeepSpec layout (CLI) → decoded by ``trace`` as deepspec:…"""
    make_drafter(tiny_qwen).save_pretrained(tmp_path / "ours")
    assert main(["export", str(tmp_path / "ours"), str(tmp_path / "ds"), "--format", "deepspec",
                 "--target", "tiny:qwen3"]) == 0
    assert "DeepSpec layout" in capsys.readouterr().out
    ds = tmp_path / "ds"
    assert main(["trace", "--prompt", "hi", "--target", "tiny:qwen3", "--drafter", str(ds),
                 "--max-new-tokens", "8", "--out", str(tmp_path / "t.json")]) == 0
    assert f"drafter: deepspec:{ds}" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["meta"]["drafter"] == f"deepspec:{ds}"
    assert main(["trace", "--prompt", "hi", "--target", "tiny:qwen3:5", "--drafter", str(ds)]) == 2
    err = capsys.readouterr().err.strip()
    assert "drafter was trained for a different target" in err and "\n" not in err


# ----------------------------------------------------------------------------- refusals
def test_embed_or_lm_head_of_another_target_is_refused(tmp_path, T):
    path, _ = write_ckpt(tmp_path, T)
    with pytest.raises(DrafterError, match="^drafter was trained for a different target: its embed_tokens"):
        resolve_drafter(str(path), _bf16_target(seed=5))
    sd = load_file(str(path / "model.safetensors"))
    sd["lm_head.weight"] = sd["lm_head.weight"] * 2
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(DrafterError, match="different target: its lm_head"):
        resolve_drafter(str(path), T)


def _edit(path, config=None, drop=(), tensors=None):
    if config is not None:
        raw = json.loads((path / "config.json").read_text())
        raw = config(raw) or raw
        (path / "config.json").write_text(json.dumps(raw))
    if drop or tensors:
        sd = load_file(str(path / "model.safetensors"))
        for k in drop:
            sd.pop(k)
        sd |= tensors or {}
        save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})


MALFORMED = {
    "missing key": (dict(config=lambda c: c.pop("mask_token_id") and None), "missing DeepSpec key.*mask_token_id"),
    "missing markov type": (dict(config=lambda c: c.pop("markov_head_type") and None), "markov_head_type is required"),
    "unknown markov type": (dict(config=lambda c: c.update(markov_head_type="carh")), "unsupported markov_head_type 'carh'"),
    "rope_type": (dict(config=lambda c: c.update(rope_parameters={"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0})),
                  "unsupported rope_type 'linear'"),
    "confidence without markov": (dict(config=lambda c: c.update(confidence_head_with_markov=False)),
                                  "confidence_head_with_markov is False"),
    "attention bias": (dict(config=lambda c: c.update(attention_bias=True)), "attention_bias"),
    "sliding window": (dict(config=lambda c: c.update(layer_types=["sliding_attention", "full_attention"])), "sliding-window"),
    "not qwen3": (dict(config=lambda c: c.update(model_type="llama")), "model_type 'llama'"),
    "bad layer ids": (dict(config=lambda c: c.update(target_layer_ids=[0, 9])), "out of range"),
    "gemma 4": (dict(config=lambda c: c.update(architectures=["Gemma4DSparkModel"])), "Gemma 4 DSpark drafters are not supported"),
    "wrong shape": (dict(tensors={"fc.weight": torch.zeros(64, 64, dtype=torch.bfloat16)}), "fc.weight has shape"),
    "missing tensor": (dict(drop=("markov_head.markov_w2.weight",)), "missing"),
    "extra tensor": (dict(tensors={"markov_head.joint_proj.weight": torch.zeros(3, 3, dtype=torch.bfloat16)}),
                     "does not have: markov_head.joint_proj.weight"),
    "no lm_head": (dict(drop=("lm_head.weight",)), "lm_head.weight is missing"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_deepspec_checkpoints_fail_in_one_line(tmp_path, T, case):
    path, _ = write_ckpt(tmp_path, T)
    edit, pattern = MALFORMED[case]
    _edit(path, **edit)
    with pytest.raises(DrafterError, match=pattern) as e:
        resolve_drafter(str(path), T)
    assert "\n" not in str(e.value)


def test_hub_id_offline_fails_fast_in_one_line(T, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(DrafterError, match="offline") as e:
        resolve_drafter("deepseek-ai/dspark_qwen3_8b_block7-not-cached", T)
    assert time.perf_counter() - t0 < 5 and "\n" not in str(e.value)


def test_config_for_target_carries_the_targets_rope_theta(tiny_gemma):
    T6 = tiny_target(TinyTargetSpec(family="qwen3", vocab_size=320,
                                    extra={"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}))
    assert config_for_target(T6, preset="tiny").rope_theta == 1e6
    assert config_for_target(tiny_gemma, preset="tiny").rope_theta == 10000.0  # the shipped drafters'

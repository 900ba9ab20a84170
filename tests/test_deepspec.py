"""DeepSpec's checkpoint format: import, exact drafts, bf16 op order, export, round trips, refusals.

Tiny random models only. Qwen3 checkpoints are written by ``deepspec_reference.Qwen3DSparkModel``
(DeepSpec's module tree on transformers' Qwen3 modules) with transformers' ``save_pretrained``,
as DeepSpec writes its own; Gemma 4 ones by ``deepspec_reference.Gemma4DSparkModel`` (DeepSpec's
Gemma 4 module tree on transformers' Gemma 4 modules) in the layout DeepSpec's pinned
transformers 5.10 writes. The reference draft loop (``deepspec_greedy_rounds``) is what the
drafts, accepted counts and confidences are compared against.
"""
from __future__ import annotations

import copy
import json
import threading
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_drafter
from deepspec_reference import (Gemma4DSparkModel, Gemma4Layer, Qwen3DSparkModel, _hf_gemma4_config,
                                deepspec_greedy_rounds, gemma4_draft_config)

from dspark_viz.cli import main
from dspark_viz.config import DecodeConfig, TinyTargetSpec
from dspark_viz.decoding.engine import SpecSession
from dspark_viz.drafter.backbone import DraftLayer, DraftMLP, RMSNorm, ScaleRMSNorm, rope
from dspark_viz.drafter.deepspec import (DEEPSPEC_CLASSES, deepspec_class, load_deepspec,
                                         save_deepspec, tensor_names)
from dspark_viz.drafter.deepspec_config import drafter_config
from dspark_viz.drafter.model import ContextCache, DrafterError, DSparkDrafter, config_for_target
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.targets import tiny_target
from dspark_viz.train.export import export_deepspec


def _bf16_target(seed=0, family="qwen3", **extra):
    """A tiny target whose weights are bf16 values (as released checkpoints are)."""
    T = tiny_target(TinyTargetSpec(family=family, vocab_size=320, seed=seed, extra=extra))
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
    assert c.rope_theta == 1e6 and d.markov_candidates == 0 and d.conf_label == "tv"
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


def _drafts(tr):
    return [p.token for r in tr.rounds for p in r.draft]


def test_whole_vocabulary_is_the_default_and_top_k_an_explicit_override(tmp_path, T):
    """Imports run the Markov stage over the whole vocabulary by default, whatever
    ``DecodeConfig.draft_candidates`` says (K = 8 and K = 0 give DeepSpec's drafts alike); only an
    explicit ``markov_candidates`` restricts it — K = 8 then changes the drafts (the reason for the
    default) and equals our own top-8 path; None follows the DecodeConfig."""
    path, _ = write_ckpt(tmp_path, T, kind="vanilla")
    prompt = T.encode("the quick brown fox")
    d, label = resolve_drafter(str(path), T)
    assert d.markov_candidates == 0
    whole = _drafts(_ours(T, d, label, prompt, draft_candidates=8))
    assert whole == _drafts(_ours(T, d, label, prompt, draft_candidates=0))
    top8 = load_deepspec(path, T, markov_candidates=8)
    assert top8.markov_candidates == 8
    restricted = _drafts(_ours(T, top8, label, prompt, draft_candidates=0))  # K pinned to 8
    assert restricted != whole
    follow = load_deepspec(path, T, markov_candidates=None)  # as our own drafters do
    assert _drafts(_ours(T, follow, label, prompt, draft_candidates=8)) == restricted
    assert _drafts(_ours(T, follow, label, prompt, draft_candidates=0)) == whole
    assert make_drafter(T).markov_candidates is None  # ours: DecodeConfig.draft_candidates decides
    for bad in (-1, 2.5, True):
        with pytest.raises(DrafterError, match="markov_candidates must be None or an integer"):
            load_deepspec(path, T, markov_candidates=bad)


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
    "not a DeepSpec class": (dict(config=lambda c: c.update(architectures=["Qwen3DFlashModel"])),
                             "not a dspark_drafter config, and its architectures .*Qwen3DFlashModel.* name no DeepSpec drafter class"),
    "gemma 4 class on a qwen3 config": (dict(config=lambda c: c.update(architectures=["Gemma4DSparkModel"])),
                                        "model_type 'qwen3', a Gemma4DSparkModel needs"),
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


RELEASED = "deepseek-ai/dspark_qwen3_8b_block7"


def _empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache (the released drafter is surely not in it)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _fails_fast(T, spec, match):
    """resolve_drafter(spec) raises one line matching ``match`` in < 5 s; returns the seconds."""
    t0 = time.perf_counter()
    with pytest.raises(DrafterError, match=match) as e:
        resolve_drafter(spec, T)
    dt = time.perf_counter() - t0
    assert dt < 5 and "\n" not in str(e.value) and spec in str(e.value)
    return dt


def test_hub_id_offline_fails_fast_in_one_line(T, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1: the released id, not cached, fails at once telling to download it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _empty_hub_cache(tmp_path, monkeypatch)
    _fails_fast(T, RELEASED, "hub is offline .*hf download deepseek-ai/dspark_qwen3_8b_block7")
    _fails_fast(T, RELEASED + "-not-cached", "offline")


def test_hub_id_unreachable_fails_fast_in_one_line(T, tmp_path, monkeypatch):
    """Online but the hub unreachable (its endpoint a closed local port: the connection is
    refused, as with no network): one line, at once, through huggingface_hub's real request."""
    from huggingface_hub import constants
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    _empty_hub_cache(tmp_path, monkeypatch)
    _fails_fast(T, RELEASED, "could not be fetched from the hub")


def test_hub_id_failure_holds_no_lock(T, tmp_path, monkeypatch):
    """Two users asking at once both fail fast (nothing serialises them), and no file lock
    is left held in the cache afterwards."""
    from filelock import FileLock
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _empty_hub_cache(tmp_path, monkeypatch)
    times, errors = [], []

    def ask():
        t0 = time.perf_counter()
        try:
            resolve_drafter(RELEASED, T)
        except DrafterError as e:
            errors.append(str(e))
        times.append(time.perf_counter() - t0)
    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 2 and max(times) < 5
    for lock in cache.rglob("*.lock"):
        FileLock(str(lock), timeout=0).acquire()  # raises Timeout if anyone still holds it


def test_config_for_target_carries_the_targets_rope_theta(tiny_gemma):
    T6 = tiny_target(TinyTargetSpec(family="qwen3", vocab_size=320,
                                    extra={"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}))
    assert config_for_target(T6, preset="tiny").rope_theta == 1e6
    assert config_for_target(tiny_gemma, preset="tiny").rope_theta == 10000.0  # the shipped drafters'


# ----------------------------------------------------------------------------- Gemma 4
@pytest.fixture(scope="module")
def G():
    """A tiny Gemma 4 target (sliding + full layers, global head dim 32, K = V, proportional
    RoPE ¼) with bf16-valued weights and a final soft-cap of 3, low enough that the cap shapes
    the draft logits."""
    return _bf16_target(seed=1, family="gemma4", final_logit_softcapping=3.0)


def g4_ref_model(T, seed=1, bigram=None, over=None, **kw) -> Gemma4DSparkModel:
    """A random DeepSpec Gemma 4 drafter for T (bf16 values); ``over``: config keys replaced
    after ``build_draft_config`` (variants DeepSpec's class also builds)."""
    raw = gemma4_draft_config(T, **kw) | (over or {})
    torch.manual_seed(0)
    m = Gemma4DSparkModel(raw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            scale = p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if n.endswith("norm.weight") else 0.0))
        if m.markov_head is not None:
            m.markov_head.markov_w2.weight.mul_(3.0)  # a bias of the soft-capped logits' size
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


def write_g4(tmp_path, T, name="g4", **kw):
    """Save a reference Gemma 4 drafter as DeepSpec does; return its directory and the reference
    loaded back in fp32."""
    g4_ref_model(T, **kw).save(tmp_path / name)
    m, missing, unexpected = Gemma4DSparkModel.load(tmp_path / name)
    assert not missing and not unexpected
    return tmp_path / name, m


def test_deepspec_has_two_drafter_classes():
    """``eval.py``'s ``get_evaluator_cls``: DFlash checkpoints are the same two classes."""
    assert set(DEEPSPEC_CLASSES) == {"Qwen3DSparkModel", "Gemma4DSparkModel"}


def test_gemma4_import_reads_config_and_weights(tmp_path, G):
    path, m = write_g4(tmp_path, G, kind="gated")
    raw = json.loads((path / "config.json").read_text())
    assert raw["global_head_dim"] == 32 and raw["num_global_key_value_heads"] == 1
    assert "per_layer_config" not in raw and raw["model_type"] == "gemma4_text"
    assert deepspec_class(path) == "Gemma4DSparkModel"
    d, label = resolve_drafter(str(path), G)
    c = d.cfg
    assert label == f"deepspec:{path}" and c.family == "gemma4" and d.markov_candidates == 0
    assert (c.head_dim, c.num_kv_heads, c.num_heads, c.k_eq_v) == (32, 1, 4, True)
    assert (c.rope_theta, c.rope_proportion, c.mask_token_id) == (1e6, 0.25, 7)
    names = tensor_names(d)
    assert not any("v_proj" in n for n in names.values()) and "layers.1.layer_scalar" in names.values()
    theirs = m.state_dict()
    assert set(names.values()) | {"embed_tokens.weight", "lm_head.weight"} == set(theirs)
    for ours, name in names.items():
        assert torch.equal(d.state_dict()[ours], theirs[name]), ours


G4_VARIANTS = {
    "vanilla": dict(kind="vanilla"), "gated": dict(kind="gated"), "rnn": dict(kind="rnn"),
    "dflash": dict(rank=0, conf=False),
    "separate v_proj": dict(kind="vanilla", over=dict(attention_k_eq_v=False, num_key_value_heads=2)),
    "plain rope": dict(kind="vanilla", over=dict(rope_parameters={"full_attention": {
        "rope_type": "proportional", "partial_rotary_factor": 1.0, "rope_theta": 1e4}})),
}


@pytest.mark.parametrize("variant", list(G4_VARIANTS))
def test_gemma4_drafts_equal_deepspec_loop_fp32(tmp_path, G, variant):
    """T = 0, full block: Gemma 4 drafts, accepted counts and confidences of every round equal
    the reference loop's (``draft_candidates=8`` ignored: the whole vocabulary is used)."""
    path, m = write_g4(tmp_path, G, **G4_VARIANTS[variant])
    d, label = resolve_drafter(str(path), G)
    prompt = G.encode("the quick brown fox jumps")  # 26 tokens: past the sliding window (16)
    ref, _ = deepspec_greedy_rounds(G, m, prompt, 30)
    tr = _ours(G, d, label, prompt)
    n = len(ref) - 1
    assert n >= 4
    for (toks, acc, confs), r in zip(ref[:n], tr.rounds):
        assert [p.token for p in r.draft] == toks and r.n_accepted == acc
        if confs:
            assert [p.conf_raw for p in r.draft] == pytest.approx(confs, abs=1e-6)


def test_gemma4_accepted_drafts_equal_deepspec_loop(tmp_path, G):
    from dspark_viz.decoding.engine import plain_decode
    prompt = G.encode("abc")
    greedy = prompt + plain_decode(G, prompt, DecodeConfig(max_new_tokens=40, stop_at_eos=False))
    path, m = write_g4(tmp_path, G, rank=G.vocab_size, bigram=greedy)
    d, label = resolve_drafter(str(path), G)
    ref, out = deepspec_greedy_rounds(G, m, prompt, 30)
    tr = _ours(G, d, label, prompt)
    assert sum(acc for _, acc, _ in ref) >= 3
    n = len(ref) - 1
    assert [([p.token for p in r.draft], r.n_accepted) for r in tr.rounds[:n]] == [(t, a) for t, a, _ in ref[:n]]
    mine = prompt + [tr.meta.first_token] + [t for r in tr.rounds for t in r.committed]
    assert mine[: len(out) - 8] == out[: len(out) - 8] == greedy[: len(out) - 8]


def test_gemma4_top_k_candidates_would_change_the_drafts(tmp_path, G):
    path, _ = write_g4(tmp_path, G, kind="vanilla")
    prompt = G.encode("the quick brown fox")
    d, label = resolve_drafter(str(path), G)
    top8 = load_deepspec(path, G, markov_candidates=8)
    assert _drafts(_ours(G, d, label, prompt)) != _drafts(_ours(G, top8, label, prompt))


def test_gemma4_bf16_draft_layer_equals_deepspec_layer_bitwise(G):
    """One whole Gemma 4 draft layer in bf16 — plain-weight norms, q/k norms, the scale-free
    value norm, K = V, proportional RoPE, scale-1 attention, GELU-tanh MLP, layer scalar — equals
    the reference layer built on transformers' Gemma 4 modules, bit for bit."""
    from transformers.models.gemma4.modeling_gemma4 import Gemma4RMSNorm, Gemma4TextRotaryEmbedding
    bf = torch.bfloat16
    for over in ({}, dict(attention_k_eq_v=False, num_key_value_heads=2)):
        raw = gemma4_draft_config(G) | over
        hf = _hf_gemma4_config(raw)
        ref = Gemma4Layer(raw, hf, 0).to(bf)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5 if p.dim() > 1 else
                        1.0 + 0.3 * torch.randn(p.shape, generator=g))
            ref.layer_scalar.fill_(0.75)
        dc = drafter_config(raw, "test")
        mine = DraftLayer(dc).to(bf)
        mine.load_state_dict(ref.state_dict())
        ctx, blk = (torch.randn(1, 11, 64) * 2).to(bf), (torch.randn(1, 7, 64) * 2).to(bf)
        pos_all = torch.arange(40, 58)[None]
        pe = Gemma4TextRotaryEmbedding(hf)(blk, pos_all, "full_attention")
        want = ref(blk, ctx, pe, None)
        got = mine(blk, pos_all[:, 11:], mine.context_kv(ctx, pos_all[:, :11]), None)
        assert torch.equal(got, want), over
    x = (torch.randn(2, 9, 64) * 3).to(bf)
    a, b = ScaleRMSNorm(64, 1e-6), Gemma4RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        a.weight.copy_(torch.randn(64))
        b.weight.copy_(a.weight)
    assert torch.equal(a.to(bf)(x), b.to(bf)(x))
    assert torch.equal(ScaleRMSNorm(64, 1e-6, with_scale=False)(x), Gemma4RMSNorm(64, eps=1e-6, with_scale=False)(x))


def test_gemma4_bf16_softcap_in_model_dtype(G):
    """The target's soft-cap runs in the head's dtype before the fp32 upcast, as Gemma4ForCausalLM
    and DeepSpec's ``compute_logits`` do: our draft-side logits equal the model's own in bf16."""
    Gb = copy.deepcopy(G)
    Gb.model = Gb.model.to(torch.bfloat16)
    ids = torch.tensor([G.encode("hello there")])
    with torch.inference_mode():
        out = Gb.model(input_ids=ids, output_hidden_states=True)
        assert torch.equal(Gb.logits(out.hidden_states[-1]), out.logits.float())


def test_gemma4_import_export_import_is_the_identity(tmp_path, G):
    path, _ = write_g4(tmp_path, G, kind="rnn")
    d, _ = resolve_drafter(str(path), G)
    out = export_deepspec(d, G, tmp_path / "exported")
    a, b = load_file(str(path / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and b[k].dtype == torch.bfloat16 for k in a)
    ca, cb = json.loads((path / "config.json").read_text()), json.loads((out / "config.json").read_text())
    for key in ("architectures", "model_type", "target_layer_ids", "mask_token_id", "block_size",
                "num_target_layers", "num_hidden_layers", "markov_rank", "markov_head_type",
                "enable_confidence_head", "confidence_head_with_markov", "num_anchors",
                "tie_word_embeddings", "layer_types", "global_head_dim", "num_global_key_value_heads",
                "attention_k_eq_v", "num_attention_heads", "intermediate_size", "hidden_size",
                "vocab_size", "final_logit_softcapping", "hidden_size_per_layer_input",
                "enable_moe_block", "hidden_activation", "rms_norm_eps"):
        assert ca[key] == cb[key], key
    assert ca["rope_parameters"]["full_attention"] == cb["rope_parameters"]["full_attention"]
    assert "per_layer_config" not in cb
    e, _ = resolve_drafter(str(out), G)
    assert e.cfg == d.cfg
    assert all(torch.equal(v, e.state_dict()[k]) for k, v in d.state_dict().items())


def test_gemma4_exported_drafter_loads_in_deepspec_class(tmp_path, G):
    """Our own Gemma 4 drafter (built for the target like DeepSpec's ``build_draft_config``)
    → DeepSpec's layout → the reference class, with no missing or unexpected tensors."""
    d = DSparkDrafter(config_for_target(G, preset="deepspec", markov_type="gated", layer_ids=(0, 1),
                                        num_layers=2, markov_rank=8)).eval()
    assert (d.cfg.head_dim, d.cfg.num_kv_heads, d.cfg.k_eq_v, d.cfg.rope_proportion) == (32, 1, True, 0.25)
    out = save_deepspec(d, G, tmp_path / "x")
    m, missing, unexpected = Gemma4DSparkModel.load(out)
    assert not missing and not unexpected
    names = tensor_names(d)
    assert all(torch.equal(m.state_dict()[names[k]], v.to(torch.bfloat16).float()) for k, v in d.state_dict().items())


def test_gemma4_embed_lm_head_or_softcap_of_another_target_is_refused(tmp_path, G):
    path, _ = write_g4(tmp_path, G)
    other = _bf16_target(seed=5, family="gemma4", final_logit_softcapping=3.0)
    with pytest.raises(DrafterError, match="^drafter was trained for a different target: its embed_tokens"):
        resolve_drafter(str(path), other)
    capped = copy.copy(G)
    capped.softcap = 30.0
    with pytest.raises(DrafterError, match="final_logit_softcapping 3.0 differs from .*30.0") as e:
        resolve_drafter(str(path), capped)
    assert "\n" not in str(e.value)
    with pytest.raises(DrafterError, match="family gemma4 ≠ qwen3"):
        resolve_drafter(str(path), _bf16_target())  # vocab and softcap aside, the family differs


def _rope(**full):
    return lambda c: c.update(rope_parameters={"full_attention": full})


G4_MALFORMED = {
    "missing global_head_dim": (dict(config=lambda c: c.pop("global_head_dim") and None),
                                "missing DeepSpec key.*global_head_dim"),
    "missing num_global_key_value_heads": (dict(config=lambda c: c.pop("num_global_key_value_heads") and None),
                                           "missing DeepSpec key.*num_global_key_value_heads"),
    "not gemma4_text": (dict(config=lambda c: c.update(model_type="gemma3_text")), "model_type 'gemma3_text'"),
    "rope_type": (dict(config=_rope(rope_type="yarn", rope_theta=1e6, factor=2.0)), "unsupported rope_type 'yarn'"),
    "rope factor": (dict(config=_rope(rope_type="proportional", rope_theta=1e6, partial_rotary_factor=0.25, factor=2.0)),
                    "factor 2.0 is not supported"),
    "default rope, head dims differ": (dict(config=_rope(rope_type="default", rope_theta=1e6)),
                                       "default RoPE with head_dim 16 ≠ global_head_dim 32"),
    "no full-attention rope": (dict(config=lambda c: c.update(rope_parameters={})), "rope_parameters.full_attention"),
    "attention bias": (dict(config=lambda c: c.update(attention_bias=True)), "attention_bias is true"),
    "moe": (dict(config=lambda c: c.update(enable_moe_block=True)), "enable_moe_block is true"),
    "per-layer inputs": (dict(config=lambda c: c.update(hidden_size_per_layer_input=256)),
                         "hidden_size_per_layer_input is 256"),
    "sliding layers": (dict(config=lambda c: c.update(layer_types=["sliding_attention", "full_attention"])),
                       "sliding-window draft layers"),
    "layer count": (dict(config=lambda c: c.update(layer_types=["full_attention"])), "1 layer_types for 2 draft layers"),
    "activation": (dict(config=lambda c: c.update(hidden_activation="silu")), "hidden_activation 'silu'"),
    "double-wide mlp": (dict(config=lambda c: c.update(use_double_wide_mlp=True, num_kv_shared_layers=1)),
                        "use_double_wide_mlp"),
    "confidence without markov": (dict(config=lambda c: c.update(confidence_head_with_markov=False)),
                                  "confidence_head_with_markov is False"),
    "bad softcap": (dict(config=lambda c: c.update(final_logit_softcapping="30")), "final_logit_softcapping must be"),
    "v_proj beside K = V": (dict(tensors={"layers.0.self_attn.v_proj.weight": torch.zeros(32, 64, dtype=torch.bfloat16)}),
                            "does not have: layers.0.self_attn.v_proj.weight"),
    "missing layer_scalar": (dict(drop=("layers.1.layer_scalar",)), "missing"),
    "wrong head dim": (dict(config=lambda c: c.update(global_head_dim=16)), "has shape"),
}


@pytest.mark.parametrize("case", list(G4_MALFORMED))
def test_malformed_gemma4_checkpoints_fail_in_one_line(tmp_path, G, case):
    path, _ = write_g4(tmp_path, G)
    edit, pattern = G4_MALFORMED[case]
    _edit(path, **edit)
    with pytest.raises(DrafterError, match=pattern) as e:
        resolve_drafter(str(path), G)
    assert "\n" not in str(e.value)


def test_drafter_help_names_the_three_kinds_of_value(capsys):
    """``--drafter`` help: a shipped name, a local path (ours or DeepSpec's), a hub id."""
    with pytest.raises(SystemExit):
        main(["trace", "--help"])
    flat = "".join(capsys.readouterr().out.split())  # argparse wraps at spaces and hyphens
    for words in ("a shipped drafter name: 'default'", "a local directory", "DeepSpec-format",
                  "hub id such as deepseek-ai/dspark_qwen3_8b_block7"):
        assert "".join(words.split()) in flat, words


def test_gemma4_export_and_trace_cli(tmp_path, capsys, tiny_gemma):
    """Our Gemma 4 drafter → DeepSpec layout (CLI) → decoded by ``trace`` as deepspec:…; a
    Gemma 3 drafter is refused before any model loads (DeepSpec has no Gemma 3 class)."""
    from dspark_viz.targets import load_target
    make_drafter(load_target("tiny:gemma4")).save_pretrained(tmp_path / "ours")
    assert main(["export", str(tmp_path / "ours"), str(tmp_path / "ds"), "--format", "deepspec",
                 "--target", "tiny:gemma4"]) == 0
    assert json.loads((tmp_path / "ds" / "config.json").read_text())["architectures"] == ["Gemma4DSparkModel"]
    capsys.readouterr()
    assert main(["trace", "--prompt", "hi there", "--target", "tiny:gemma4", "--drafter", str(tmp_path / "ds"),
                 "--max-new-tokens", "8", "--out", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["meta"]["drafter"] == f"deepspec:{tmp_path / 'ds'}"
    make_drafter(tiny_gemma).save_pretrained(tmp_path / "g3")
    assert main(["export", str(tmp_path / "g3"), str(tmp_path / "o"), "--format", "deepspec",
                 "--target", "tiny:gemma3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gemma3 drafter; DeepSpec's format holds Qwen3 and Gemma 4 drafters" in err and "\n" not in err

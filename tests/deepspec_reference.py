"""A stand-in for DeepSpec's DSpark drafters and its evaluator's draft loop, for the tests.

Not our code path: it is re-written from DeepSpec's ``deepspec/modeling/dspark/qwen3/modeling.py``
and ``deepspec/modeling/dspark/gemma4/modeling.py`` (module names, the attention ``forward``s,
``_forward_backbone``, Gemma 4's ``compute_logits``), its Markov heads
(``markov_w1``/``markov_w2``, ``gate_proj``, ``joint_proj``; the head file itself is read from a
port, DeepSpec's own is not in the reference index), ``AcceptRatePredictor``, ``sample_tokens``
and ``deepspec/eval`` (``generate_decoding_sample``, ``verify_draft_tokens`` at T = 0,
``draft_ops.forward_dspark_draft_block``: context = the newly verified target features,
positions = [cache length, start + γ), the draft cache cropped back to ``start`` after each
block), built on transformers' own modules — Qwen3 (``Qwen3RMSNorm``, ``Qwen3MLP``,
``Qwen3RotaryEmbedding``, ``rotate_half``, its SDPA attention function) and Gemma 4
(``Gemma4RMSNorm``, ``Gemma4TextMLP``, ``Gemma4TextRotaryEmbedding``,
``Gemma4TextScaledWordEmbedding``, ``apply_rotary_pos_emb``), as DeepSpec's are.

Qwen3: the class subclasses ``Qwen3PreTrainedModel``, so ``save_pretrained`` writes exactly the
files DeepSpec's ``save_pretrained`` writes. Gemma 4: DeepSpec pins transformers 5.10.2, whose
``Gemma4TextConfig`` serialises ``global_head_dim`` / ``num_global_key_value_heads`` as top-level
keys; the installed transformers folds them into ``per_layer_config``, and its
``Gemma4TextRotaryEmbedding`` no longer takes DeepSpec's ``layer_type=`` argument — so DeepSpec's
own Gemma 4 class would not run here. This stand-in therefore writes and reads the 5.10 layout
itself (``gemma4_draft_config``, ``Gemma4DSparkModel.save`` / ``load``): ``config.json`` with the
keys ``build_draft_config`` sets, ``model.safetensors`` with the module's state dict (the
persistent ``layer_scalar`` buffers included, as ``save_pretrained`` keeps them).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DynamicCache, Gemma4TextConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.gemma4.modeling_gemma4 import (Gemma4RMSNorm, Gemma4TextMLP,
                                                        Gemma4TextRotaryEmbedding,
                                                        Gemma4TextScaledWordEmbedding)
from transformers.models.gemma4.modeling_gemma4 import apply_rotary_pos_emb as apply_gemma4_rotary_pos_emb
from transformers.models.qwen3.modeling_qwen3 import (Qwen3MLP, Qwen3PreTrainedModel, Qwen3RMSNorm,
                                                      Qwen3RotaryEmbedding, rotate_half)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):  # DeepSpec's (q on the last q_len)
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    q_len = q.size(-2)
    q_embed = (q * cos[..., -q_len:, :]) + (rotate_half(q) * sin[..., -q_len:, :])
    return q_embed, (k * cos) + (rotate_half(k) * sin)


class Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx, self.config = layer_idx, config
        self.head_dim = config.head_dim
        self.nh, self.nkv = config.num_attention_heads, config.num_key_value_heads
        self.num_key_value_groups = self.nh // self.nkv
        self.scaling, self.is_causal = self.head_dim ** -0.5, False
        H = config.hidden_size
        self.q_proj = nn.Linear(H, self.nh * self.head_dim, bias=False)
        self.k_proj = nn.Linear(H, self.nkv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(H, self.nkv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.nh * self.head_dim, H, bias=False)
        self.q_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, hidden_states, target_hidden_states, position_embeddings, cache):
        bsz, q_len = hidden_states.shape[:-1]
        ctx_len = target_hidden_states.shape[1]
        q = self.q_norm(self.q_proj(hidden_states).view(bsz, q_len, self.nh, self.head_dim)).transpose(1, 2)
        k = torch.cat([self.k_proj(target_hidden_states), self.k_proj(hidden_states)], 1)
        v = torch.cat([self.v_proj(target_hidden_states), self.v_proj(hidden_states)], 1)
        k = self.k_norm(k.view(bsz, ctx_len + q_len, self.nkv, self.head_dim)).transpose(1, 2)
        v = v.view(bsz, ctx_len + q_len, self.nkv, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        o, _ = sdpa_attention_forward(self, q, k, v, None, dropout=0.0, scaling=self.scaling,
                                      is_causal=False)
        return self.o_proj(o.reshape(bsz, q_len, self.nh * self.head_dim))


class Layer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = Qwen3MLP(config)
        self.input_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, target_hidden_states, position_embeddings, cache):
        h = hidden_states + self.self_attn(self.input_layernorm(hidden_states), target_hidden_states,
                                           position_embeddings, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class VanillaMarkov(nn.Module):
    def __init__(self, vocab, rank, hidden):
        super().__init__()
        self.markov_w1 = nn.Embedding(vocab, rank)
        self.markov_w2 = nn.Linear(rank, vocab, bias=False)

    def get_prev_embeddings(self, ids):
        return self.markov_w1(ids.long())

    def step_bias(self, ids, h, state):
        return self.markov_w2(self.get_prev_embeddings(ids)), state


class GatedMarkov(VanillaMarkov):
    def __init__(self, vocab, rank, hidden):
        super().__init__(vocab, rank, hidden)
        self.gate_proj = nn.Linear(hidden + rank, rank)

    def step_bias(self, ids, h, state):
        e = self.get_prev_embeddings(ids)
        gate = torch.sigmoid(self.gate_proj(torch.cat([h, e], dim=-1))).to(e.dtype)
        return self.markov_w2(gate * e), state


class RNNMarkov(VanillaMarkov):
    def __init__(self, vocab, rank, hidden):
        super().__init__(vocab, rank, hidden)
        self.joint_proj = nn.Linear(2 * rank + hidden, 3 * rank)

    def step_bias(self, ids, h, state):
        e = self.get_prev_embeddings(ids)
        g, c, o = self.joint_proj(torch.cat([state, e, h], dim=-1)).chunk(3, dim=-1)
        g = torch.sigmoid(g)
        return self.markov_w2(torch.tanh(o)), g * state + (1.0 - g) * torch.tanh(c)


HEADS = {"vanilla": VanillaMarkov, "gated": GatedMarkov, "rnn": RNNMarkov}


class AcceptRatePredictor(nn.Module):
    def __init__(self, input_dim):
        super().__init__()
        self.proj = nn.Linear(int(input_dim), 1)

    def forward(self, features):
        return self.proj(features).squeeze(-1)


class Qwen3DSparkModel(Qwen3PreTrainedModel):
    """DeepSpec's module tree (names as in its file); ``architectures`` = the class name."""

    def __init__(self, config):
        super().__init__(config)
        H, V = config.hidden_size, config.vocab_size
        self.target_layer_ids = config.target_layer_ids
        self.embed_tokens = nn.Embedding(V, H)
        self.layers = nn.ModuleList([Layer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Qwen3RMSNorm(H, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen3RotaryEmbedding(config)
        self.fc = nn.Linear(len(self.target_layer_ids) * H, H, bias=False)
        self.hidden_norm = Qwen3RMSNorm(H, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(H, V, bias=False)
        self.block_size, self.mask_token_id = int(config.block_size), config.mask_token_id
        rank = int(config.markov_rank)
        self.markov_head = HEADS[config.markov_head_type](V, rank, H) if rank > 0 else None
        self.confidence_head = (AcceptRatePredictor(H + (rank if config.confidence_head_with_markov else 0))
                                if config.enable_confidence_head else None)
        self.post_init()

    def forward_backbone(self, position_ids, noise_embedding, target_hidden_states, cache):
        target_hidden_states = self.hidden_norm(self.fc(target_hidden_states))
        pe = self.rotary_emb(noise_embedding, position_ids)
        h = noise_embedding
        for layer in self.layers:
            h = layer(h, target_hidden_states, pe, cache)
        return self.norm(h)

    def compute_logits(self, h):
        return self.lm_head(h)


# ----------------------------------------------------------------------------- Gemma 4
GEMMA4_TEXT_KEYS = (  # transformers 5.10's Gemma4TextConfig fields, as its to_dict writes them
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_activation", "max_position_embeddings",
    "initializer_range", "rms_norm_eps", "use_cache", "pad_token_id", "eos_token_id", "bos_token_id",
    "tie_word_embeddings", "rope_parameters", "attention_bias", "attention_dropout", "sliding_window",
    "layer_types", "final_logit_softcapping", "use_bidirectional_attention",
    "vocab_size_per_layer_input", "hidden_size_per_layer_input", "attention_k_eq_v",
    "num_kv_shared_layers", "enable_moe_block", "use_double_wide_mlp", "num_experts",
    "top_k_experts", "moe_intermediate_size")


def gemma4_draft_config(target, *, layers=2, mask=7, layer_ids=(0, 1), conf=True, rank=16,
                        kind="vanilla", block=7) -> dict:
    """DeepSpec's ``gemma4/config.py::build_draft_config`` on the target's text config, as
    transformers 5.10 serialises it (``global_head_dim`` and ``num_global_key_value_heads`` top
    level). Read attribute by attribute (``_getattr_without_heterogeneous_validation``: the
    installed transformers refuses plain reads of per-layer keys)."""
    tc = target.config
    get = tc._getattr_without_heterogeneous_validation
    full = tc.per_layer_config["full_attention"]
    raw = {k: get(k) for k in GEMMA4_TEXT_KEYS}
    raw |= dict(model_type="gemma4_text", transformers_version="5.10.2",
                global_head_dim=full.head_dim,
                num_global_key_value_heads=full.num_key_value_heads if raw["attention_k_eq_v"] else None)
    raw |= dict(architectures=["Gemma4DSparkModel"], target_model_type="gemma4_text",
                target_text_model_type="gemma4_text", num_target_layers=raw["num_hidden_layers"],
                num_hidden_layers=layers, enable_moe_block=False, hidden_size_per_layer_input=0,
                block_size=block, tie_word_embeddings=False, layer_types=["full_attention"] * layers,
                mask_token_id=mask, target_layer_ids=list(layer_ids), num_anchors=512,
                enable_confidence_head=conf, markov_rank=rank, dtype="bfloat16")
    if conf:
        raw["confidence_head_with_markov"] = rank > 0
    if rank:
        raw["markov_head_type"] = kind
    return raw


def _hf_gemma4_config(raw: dict) -> Gemma4TextConfig:
    """The installed transformers' Gemma4TextConfig for ``raw`` (for its MLP and rotary modules)."""
    keys = {k: raw[k] for k in GEMMA4_TEXT_KEYS if k in raw}
    keys["num_global_key_value_heads"] = raw["num_global_key_value_heads"]
    return Gemma4TextConfig(global_head_dim=raw["global_head_dim"], **keys)


class Gemma4Attention(nn.Module):
    """DeepSpec's ``Gemma4DSparkAttention``."""

    def __init__(self, raw, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.nh, self.head_dim = raw["num_attention_heads"], raw["global_head_dim"]
        self.k_eq_v = bool(raw["attention_k_eq_v"])
        self.nkv = raw["num_global_key_value_heads"] if self.k_eq_v else raw["num_key_value_heads"]
        self.groups, self.scaling = self.nh // self.nkv, 1.0
        H, eps, d = raw["hidden_size"], raw["rms_norm_eps"], self.head_dim
        self.q_proj = nn.Linear(H, self.nh * d, bias=False)
        self.k_proj = nn.Linear(H, self.nkv * d, bias=False)
        self.v_proj = None if self.k_eq_v else nn.Linear(H, self.nkv * d, bias=False)
        self.o_proj = nn.Linear(self.nh * d, H, bias=False)
        self.q_norm = Gemma4RMSNorm(d, eps=eps)
        self.k_norm = Gemma4RMSNorm(d, eps=eps)
        self.v_norm = Gemma4RMSNorm(d, eps=eps, with_scale=False)

    def _repeat_kv(self, x):
        return x if self.groups == 1 else x.repeat_interleave(self.groups, dim=1)

    def forward(self, hidden_states, target_hidden_states, position_embeddings, cache):
        bsz, q_len = hidden_states.shape[:-1]
        ctx_len = target_hidden_states.shape[1]
        q = self.q_norm(self.q_proj(hidden_states).view(bsz, q_len, self.nh, self.head_dim)).transpose(1, 2)
        k_ctx, k_noise = self.k_proj(target_hidden_states), self.k_proj(hidden_states)
        if self.k_eq_v:
            v_ctx, v_noise = k_ctx, k_noise
        else:
            v_ctx, v_noise = self.v_proj(target_hidden_states), self.v_proj(hidden_states)
        k = torch.cat([k_ctx, k_noise], dim=1).view(bsz, ctx_len + q_len, self.nkv, self.head_dim)
        v = torch.cat([v_ctx, v_noise], dim=1).view(bsz, ctx_len + q_len, self.nkv, self.head_dim)
        k = self.k_norm(k).transpose(1, 2)
        v = self.v_norm(v).transpose(1, 2)
        cos, sin = position_embeddings
        q = apply_gemma4_rotary_pos_emb(q, cos[:, -q_len:, :], sin[:, -q_len:, :], unsqueeze_dim=1)
        k = apply_gemma4_rotary_pos_emb(k, cos, sin, unsqueeze_dim=1)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False,
                                           scale=self.scaling)
        return self.o_proj(o.transpose(1, 2).contiguous().reshape(bsz, q_len, -1))


class Gemma4Layer(nn.Module):
    """DeepSpec's ``Gemma4DSparkDecoderLayer``."""

    def __init__(self, raw, hf_cfg, layer_idx):
        super().__init__()
        H, eps = raw["hidden_size"], raw["rms_norm_eps"]
        self.self_attn = Gemma4Attention(raw, layer_idx)
        self.mlp = Gemma4TextMLP(hf_cfg, layer_idx)
        self.input_layernorm = Gemma4RMSNorm(H, eps=eps)
        self.post_attention_layernorm = Gemma4RMSNorm(H, eps=eps)
        self.pre_feedforward_layernorm = Gemma4RMSNorm(H, eps=eps)
        self.post_feedforward_layernorm = Gemma4RMSNorm(H, eps=eps)
        self.register_buffer("layer_scalar", torch.ones(1))

    def forward(self, hidden_states, target_hidden_states, position_embeddings, cache):
        residual = hidden_states
        h = self.self_attn(self.input_layernorm(hidden_states), target_hidden_states,
                           position_embeddings, cache)
        h = residual + self.post_attention_layernorm(h)
        residual = h
        h = residual + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))
        return h * self.layer_scalar


class Gemma4DSparkModel(nn.Module):
    """DeepSpec's ``Gemma4DSparkModel`` module tree (names as in its file), built from the raw
    config dict DeepSpec writes."""

    def __init__(self, raw: dict):
        super().__init__()
        self.raw = raw
        hf_cfg = _hf_gemma4_config(raw)
        H, V, eps = raw["hidden_size"], raw["vocab_size"], raw["rms_norm_eps"]
        self.target_layer_ids = raw["target_layer_ids"]
        self.embed_tokens = Gemma4TextScaledWordEmbedding(V, H, raw.get("pad_token_id"), embed_scale=float(H) ** 0.5)
        self.layers = nn.ModuleList([Gemma4Layer(raw, hf_cfg, i) for i in range(raw["num_hidden_layers"])])
        self.norm = Gemma4RMSNorm(H, eps=eps)
        self.rotary_emb = Gemma4TextRotaryEmbedding(hf_cfg)
        self.fc = nn.Linear(len(self.target_layer_ids) * H, H, bias=False)
        self.hidden_norm = Gemma4RMSNorm(H, eps=eps)
        self.lm_head = nn.Linear(H, V, bias=False)
        self.block_size, self.mask_token_id = int(raw["block_size"]), raw["mask_token_id"]
        rank = int(raw["markov_rank"])
        self.markov_head = HEADS[raw["markov_head_type"]](V, rank, H) if rank > 0 else None
        self.confidence_head = (AcceptRatePredictor(H + (rank if raw["confidence_head_with_markov"] else 0))
                                if raw["enable_confidence_head"] else None)

    def compute_logits(self, h):
        logits = self.lm_head(h)
        cap = self.raw.get("final_logit_softcapping")
        if cap is not None:
            logits = torch.tanh(logits / float(cap)) * float(cap)
        return logits

    def forward_backbone(self, position_ids, noise_embedding, target_hidden_states, cache):
        target_hidden_states = self.hidden_norm(self.fc(target_hidden_states))
        pe = self.rotary_emb(noise_embedding, position_ids, "full_attention")
        h = noise_embedding
        for layer in self.layers:
            h = layer(h, target_hidden_states, pe, cache)
        return self.norm(h)

    def save(self, path, dtype=torch.bfloat16) -> Path:
        """What DeepSpec's ``save_pretrained`` writes: config.json (5.10 layout) + the state dict."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.raw, indent=2, sort_keys=True) + "\n")
        sd = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
        return path

    @classmethod
    def load(cls, path, dtype=torch.float32):
        """Build from ``path/config.json`` and load the weights strictly; (model, missing, unexpected)."""
        path = Path(path)
        m = cls(json.loads((path / "config.json").read_text()))
        sd = load_file(str(path / "model.safetensors"))
        info = m.load_state_dict(sd, strict=False)
        return m.to(dtype).eval(), list(info.missing_keys), list(info.unexpected_keys)


def crop(cache, length: int) -> None:
    """Keep the first ``length`` positions (transformers 5.2x takes the count to remove)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def extract_context_feature(hidden_states, layer_ids):
    return torch.cat([hidden_states[0 if i == -1 else i + 1] for i in layer_ids], dim=-1)


@torch.inference_mode()
def deepspec_greedy_rounds(target, draft, prompt_ids: list[int], max_new: int):
    """DeepSpec's T = 0 speculative loop with the full block verified (confidence threshold 0).

    Returns per round (drafts, accepted draft count, confidence probabilities) and the output."""
    model, kw = target.model, target._cache_kw
    dev = next(draft.parameters()).device
    ids = torch.tensor([prompt_ids], device=dev)
    tcache, dcache = target.new_cache(), DynamicCache()  # (sliding-window targets roll back too)
    n_in = ids.shape[1]
    out = model(input_ids=ids, position_ids=torch.arange(n_in, device=dev)[None], use_cache=True,
                output_hidden_states=True, **{kw: tcache})
    output = prompt_ids + [int(out.logits[0, -1].argmax())]
    ctx = extract_context_feature(out.hidden_states, draft.target_layer_ids)
    start, g, rounds = n_in, draft.block_size, []
    while start < n_in + max_new:
        block = torch.full((1, g), int(draft.mask_token_id), device=dev)
        block[0, 0] = output[start]
        past = dcache.get_seq_length()
        pos = torch.arange(past, start + g, device=dev)[None]
        h = draft.forward_backbone(pos, draft.embed_tokens(block), ctx, dcache)
        crop(dcache, start)
        base = draft.compute_logits(h)  # [1, γ, V] in the model dtype (Gemma 4: soft-capped)
        prev, state, toks, confs = block[:, 0], None, [], []
        if isinstance(draft.markov_head, RNNMarkov):
            state = torch.zeros(1, draft.markov_head.markov_w1.weight.shape[1], device=dev, dtype=h.dtype)
        for k in range(g):
            step = base[:, k]
            if draft.markov_head is not None:
                bias, state = draft.markov_head.step_bias(prev, h[:, k], state)
                step = step + bias
            if draft.confidence_head is not None:
                feat = h[:, k]
                if draft.markov_head is not None:
                    feat = torch.cat([feat, draft.markov_head.get_prev_embeddings(prev).to(h.dtype)], -1)
                confs.append(float(torch.sigmoid(draft.confidence_head(feat).float())))
            prev = torch.argmax(step, dim=-1)
            toks.append(int(prev))
        v_in = torch.tensor([[output[start]] + toks], device=dev)
        vout = model(input_ids=v_in, position_ids=torch.arange(start, start + g + 1, device=dev)[None],
                     use_cache=True, output_hidden_states=True, **{kw: tcache})
        tgt = vout.logits[0].argmax(-1).tolist()
        acc = 0
        while acc < g and toks[acc] == tgt[acc]:
            acc += 1
        rounds.append((toks, acc, confs))
        output = output[: start + 1] + toks[:acc] + [tgt[acc]]
        start += acc + 1
        crop(tcache, start)
        ctx = extract_context_feature(vout.hidden_states, draft.target_layer_ids)[:, : acc + 1]
    return rounds, output

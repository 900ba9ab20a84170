"""A stand-in for DeepSpec's Qwen3 DSpark drafter and its evaluator's draft loop, for the tests.

Not our code path: it is re-written from DeepSpec's ``deepspec/modeling/dspark/qwen3/modeling.py``
(module names, ``Qwen3DSparkAttention.forward``, ``_forward_backbone``), its Markov heads
(``markov_w1``/``markov_w2``, ``gate_proj``, ``joint_proj``; the head file itself is read from a
port, DeepSpec's own is not in the reference index), ``AcceptRatePredictor``, ``sample_tokens``
and ``deepspec/eval`` (``generate_decoding_sample``, ``verify_draft_tokens`` at T = 0), built on
transformers' own Qwen3 modules (``Qwen3RMSNorm``, ``Qwen3MLP``, ``Qwen3RotaryEmbedding``,
``rotate_half``) and its SDPA attention function. Because it subclasses ``Qwen3PreTrainedModel``,
``save_pretrained`` writes exactly the files DeepSpec's ``save_pretrained`` writes. The one piece
reconstructed rather than read is the block step of ``deepspec/eval/dspark/draft_ops.py`` (not in
the index either): context = the newly verified target features, positions = [cache length,
start + γ), the draft cache cropped back to ``start`` after each block.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
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


def crop(cache, length: int) -> None:
    """Keep the first ``length`` positions (transformers 5.2x takes the count to remove)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def extract_context_feature(hidden_states, layer_ids):
    return torch.cat([hidden_states[0 if i == -1 else i + 1] for i in layer_ids], dim=-1)


@torch.inference_mode()
def deepspec_greedy_rounds(target, draft: Qwen3DSparkModel, prompt_ids: list[int], max_new: int):
    """DeepSpec's T = 0 speculative loop with the full block verified (confidence threshold 0).

    Returns per round (drafts, accepted draft count, confidence probabilities) and the output."""
    model, kw = target.model, target._cache_kw
    dev = next(draft.parameters()).device
    ids = torch.tensor([prompt_ids], device=dev)
    tcache, dcache = DynamicCache(config=model.config), DynamicCache()
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
        base = draft.lm_head(h)  # [1, γ, V] in the model dtype
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

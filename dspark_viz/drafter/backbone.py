"""The drafter's parallel backbone: draft decoder layers with KV injection of target features.

Scope: RMSNorm, rotary embeddings, and one draft decoder layer in two family styles —
Qwen3-style (pre-norm, SiLU-gated MLP, q/k norms) and Gemma-3-style (four (1+w) norms,
GELU-tanh-gated MLP, q/k norms). In every layer the keys and values come from the projected
target context features *and* from the block's own hidden states, concatenated along the
sequence axis; queries come from the block only. The same code serves
inference (context K/V cached per layer, block attends to all of it, bidirectional inside the
block) and training (many packed blocks, an explicit boolean mask).

Shapes: B batch, Q block query positions, C context positions, H hidden, h heads, k kv heads,
d head dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm in the op order of the family's Hugging Face module, so bf16 results match it bit
    for bit: Qwen3 (``offset=False``) normalises in fp32, casts to the input dtype, then
    multiplies by w; Gemma 3 (``offset=True``, x·(1 + w) with w initialised at 0) multiplies in
    fp32, then casts. In fp32 both are the same computation as before."""

    def __init__(self, dim: int, eps: float, offset: bool) -> None:
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:
            return (y * (1.0 + self.weight.float())).to(x.dtype)
        return self.weight * y.to(x.dtype)


_INV_FREQ: dict[tuple[int, float, torch.device], torch.Tensor] = {}


def inv_freq(d: int, theta: float, device: torch.device) -> torch.Tensor:
    """RoPE inverse frequencies [d/2], computed on the CPU as transformers does (then moved)."""
    key = (d, float(theta), torch.device(device))
    if key not in _INV_FREQ:
        inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        _INV_FREQ[key] = inv.to(device)
    return _INV_FREQ[key]


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding. x [B, n, T, d], pos [B, T] (absolute token positions).

    Hugging Face's op order: angles in fp32, cos/sin cast to x's dtype, the rotation in x's
    dtype (``apply_rotary_pos_emb``)."""
    d = x.shape[-1]
    ang = pos.float().unsqueeze(-1) * inv_freq(d, theta, x.device)  # [B, T, d/2]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().to(x.dtype).unsqueeze(1), emb.sin().to(x.dtype).unsqueeze(1)  # [B, 1, T, d]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class DraftAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, eps: float,
                 offset: bool, theta: float) -> None:
        super().__init__()
        self.h, self.k, self.d, self.theta = heads, kv_heads, head_dim, theta
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(head_dim, eps, offset)
        self.k_norm = RMSNorm(head_dim, eps, offset)

    def kv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, H], pos [B, T] → k, v [B, k, T, d] (k rotated)."""
        B, T, _ = x.shape
        k = self.k_norm(self.k_proj(x).view(B, T, self.k, self.d)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.k, self.d).transpose(1, 2)
        return rope(k, pos, self.theta), v

    def forward(self, x: torch.Tensor, pos: torch.Tensor,
                ctx_kv: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, Q, H], pos [B, Q], ctx_kv ([B, k, C, d] ×2), mask [B, 1, Q, C+Q] bool."""
        B, Q, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, Q, self.h, self.d)).transpose(1, 2)
        q = rope(q, pos, self.theta)  # [B, h, Q, d]
        kb, vb = self.kv(x, pos)
        if ctx_kv is not None and ctx_kv[0].shape[2] > 0:
            k = torch.cat([ctx_kv[0], kb], dim=2)  # [B, k, C+Q, d]
            v = torch.cat([ctx_kv[1], vb], dim=2)
        else:
            k, v = kb, vb
        gqa = {}
        if self.h != self.k and mask is None and self.d <= 256:
            gqa = {"enable_gqa": True}  # the kernel transformers' SDPA path dispatches to here
        elif self.h != self.k:
            k = k.repeat_interleave(self.h // self.k, dim=1)
            v = v.repeat_interleave(self.h // self.k, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.d ** -0.5,
                                           **gqa)  # [B, h, Q, d]
        return self.o_proj(o.transpose(1, 2).reshape(B, Q, self.h * self.d))


class DraftMLP(nn.Module):
    def __init__(self, hidden: int, inter: int, act: str) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_proj(x)
        g = F.silu(g) if self.act == "silu" else F.gelu(g, approximate="tanh")
        return self.down_proj(g * self.up_proj(x))


class DraftLayer(nn.Module):
    """One draft decoder layer in the target family's style."""

    def __init__(self, cfg) -> None:
        super().__init__()
        gemma = cfg.family == "gemma3"
        self.gemma = gemma
        H, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.self_attn = DraftAttention(H, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, eps,
                                        gemma, cfg.rope_theta)
        self.mlp = DraftMLP(H, cfg.intermediate_size, "gelu" if gemma else "silu")
        self.input_layernorm = RMSNorm(H, eps, gemma)
        self.post_attention_layernorm = RMSNorm(H, eps, gemma)
        if gemma:
            self.pre_feedforward_layernorm = RMSNorm(H, eps, True)
            self.post_feedforward_layernorm = RMSNorm(H, eps, True)

    def context_kv(self, ctx: torch.Tensor, pos: torch.Tensor):
        """Context features [B, C, H] → this layer's injected K/V. Not normed again per layer."""
        return self.self_attn.kv(ctx, pos)

    def forward(self, x, pos, ctx_kv, mask):
        a = self.self_attn(self.input_layernorm(x), pos, ctx_kv, mask)
        if self.gemma:
            x = x + self.post_attention_layernorm(a)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x))

"""The drafter's parallel backbone: draft decoder layers with KV injection of target features.

Scope: RMSNorm, rotary embeddings, and one draft decoder layer in two family styles —
Qwen3-style (pre-norm, SiLU-gated MLP, q/k norms) and Gemma-3-style (four (1+w) norms,
GELU-tanh-gated MLP, q/k norms). In every layer the keys and values come from the projected
target context features *and* from the block's own hidden states, concatenated along the
sequence axis; queries come from the block only (DESIGN.md §2). The same code serves
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
    """RMSNorm; ``offset=True`` is Gemma's x·(1 + w) with w initialised at 0."""

    def __init__(self, dim: int, eps: float, offset: bool) -> None:
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        w = (1.0 + self.weight.float()) if self.offset else self.weight.float()
        return (y * w).to(x.dtype)


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding. x [B, n, T, d], pos [B, T] (absolute token positions)."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = pos.float().unsqueeze(-1) * inv  # [B, T, d/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1).unsqueeze(1)  # [B, 1, T, d]
    sin = torch.cat([ang.sin(), ang.sin()], -1).unsqueeze(1)
    x1, x2 = x.float().chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rot * sin).to(x.dtype)


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
        if self.h != self.k:
            k = k.repeat_interleave(self.h // self.k, dim=1)
            v = v.repeat_interleave(self.h // self.k, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, h, Q, d]
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

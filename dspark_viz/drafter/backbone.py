"""The drafter's parallel backbone: draft decoder layers with KV injection of target features.

Scope: RMSNorm, rotary embeddings, and one draft decoder layer in three family styles —
Qwen3-style (pre-norm, SiLU-gated MLP, q/k norms), Gemma-3-style (four (1+w) norms, GELU-tanh-gated
MLP, q/k norms) and Gemma-4-style, as DeepSpec's ``Gemma4DSparkDecoderLayer``
(``deepspec/modeling/dspark/gemma4/modeling.py``): four plain-weight norms, q/k norms and a
scale-free value norm, attention scale 1, K = V when the values are the key projection,
proportional RoPE, and the output times the layer's ``layer_scalar``. In every layer the keys
and values come from the projected target context features *and* from the block's own hidden
states, concatenated along the sequence axis; queries come from the block only. The same code serves
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


class ScaleRMSNorm(nn.Module):
    """Gemma 4's RMSNorm (Hugging Face ``Gemma4RMSNorm``, the one DeepSpec's Gemma 4 drafter uses):
    x·(mean(x²) + ε)^(−½) in fp32 (``torch.pow``, not ``rsqrt``), times a plain weight w
    (initialised at 1, no 1 + w offset) in fp32, then cast to the input dtype. ``with_scale=False``
    is the weightless value norm."""

    def __init__(self, dim: int, eps: float, with_scale: bool = True) -> None:
        super().__init__()
        self.eps, self.with_scale = eps, with_scale
        if with_scale:
            self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.pow(xf.pow(2).mean(-1, keepdim=True) + self.eps, -0.5)
        if self.with_scale:
            y = y * self.weight.float()
        return y.type_as(x)


def make_norm(family: str, dim: int, eps: float) -> nn.Module:
    """The RMSNorm of a family's draft layers (qwen3: w·x̂, gemma3: (1 + w)·x̂, gemma4: Gemma 4's)."""
    if family == "gemma4":
        return ScaleRMSNorm(dim, eps)
    return RMSNorm(dim, eps, offset=family == "gemma3")


_INV_FREQ: dict[tuple[int, float, float, torch.device], torch.Tensor] = {}


def inv_freq(d: int, theta: float, device: torch.device, proportion: float = 1.0) -> torch.Tensor:
    """RoPE inverse frequencies [d/2], computed on the CPU as transformers does (then moved).

    ``proportion`` < 1 is Gemma 4's proportional RoPE (transformers' ``proportional`` rope type):
    the first ⌊proportion·d/2⌋ pairs rotate at θ^(−2i/d) — the exponent over the whole head dim —
    and the rest do not rotate (frequency 0). With ``proportion`` = 1 it is plain RoPE."""
    key = (d, float(theta), float(proportion), torch.device(device))
    if key not in _INV_FREQ:
        n = int(proportion * d // 2)
        inv = 1.0 / (theta ** (torch.arange(0, 2 * n, 2, dtype=torch.int64).float() / d))
        if n < d // 2:
            inv = torch.cat([inv, torch.zeros(d // 2 - n)])
        _INV_FREQ[key] = inv.to(device)
    return _INV_FREQ[key]


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float, proportion: float = 1.0) -> torch.Tensor:
    """Rotary embedding. x [B, n, T, d], pos [B, T] (absolute token positions).

    Hugging Face's op order: angles in fp32, cos/sin cast to x's dtype, the rotation in x's
    dtype (``apply_rotary_pos_emb``)."""
    d = x.shape[-1]
    ang = pos.float().unsqueeze(-1) * inv_freq(d, theta, x.device, proportion)  # [B, T, d/2]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().to(x.dtype).unsqueeze(1), emb.sin().to(x.dtype).unsqueeze(1)  # [B, 1, T, d]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class DraftAttention(nn.Module):
    """Attention over [context K/V; block K/V] in the family's style (see the module docstring)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        fam, H, eps = cfg.family, cfg.hidden_size, cfg.rms_norm_eps
        self.h, self.k, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.theta, self.proportion = cfg.rope_theta, cfg.rope_proportion
        self.gemma4 = fam == "gemma4"
        self.scale = 1.0 if self.gemma4 else self.d ** -0.5  # Gemma 4: q, k normed, scale 1
        self.q_proj = nn.Linear(H, self.h * self.d, bias=False)
        self.k_proj = nn.Linear(H, self.k * self.d, bias=False)
        # K = V (Gemma 4 ``attention_k_eq_v``): the values are the key projection, before k_norm
        self.v_proj = None if cfg.k_eq_v else nn.Linear(H, self.k * self.d, bias=False)
        self.o_proj = nn.Linear(self.h * self.d, H, bias=False)
        self.q_norm = make_norm(fam, self.d, eps)
        self.k_norm = make_norm(fam, self.d, eps)
        self.v_norm = ScaleRMSNorm(self.d, eps, with_scale=False) if self.gemma4 else None

    def kv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, H], pos [B, T] → k, v [B, k, T, d] (k rotated)."""
        B, T, _ = x.shape
        k = self.k_proj(x).view(B, T, self.k, self.d)
        v = self.v_proj(x).view(B, T, self.k, self.d) if self.v_proj is not None else k
        k = self.k_norm(k).transpose(1, 2)
        if self.v_norm is not None:
            v = self.v_norm(v)
        return rope(k, pos, self.theta, self.proportion), v.transpose(1, 2)

    def forward(self, x: torch.Tensor, pos: torch.Tensor,
                ctx_kv: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, Q, H], pos [B, Q], ctx_kv ([B, k, C, d] ×2), mask [B, 1, Q, C+Q] bool."""
        B, Q, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, Q, self.h, self.d)).transpose(1, 2)
        q = rope(q, pos, self.theta, self.proportion)  # [B, h, Q, d]
        kb, vb = self.kv(x, pos)
        if ctx_kv is not None and ctx_kv[0].shape[2] > 0:
            k = torch.cat([ctx_kv[0], kb], dim=2)  # [B, k, C+Q, d]
            v = torch.cat([ctx_kv[1], vb], dim=2)
        else:
            k, v = kb, vb
        gqa = {}
        if self.h != self.k and mask is None and self.d <= 256 and not self.gemma4:
            gqa = {"enable_gqa": True}  # the kernel transformers' SDPA path dispatches to here
        elif self.h != self.k:  # (DeepSpec's Gemma 4 attention repeats K/V itself: ``_repeat_kv``)
            k = k.repeat_interleave(self.h // self.k, dim=1)
            v = v.repeat_interleave(self.h // self.k, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale,
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
        fam, H, eps = cfg.family, cfg.hidden_size, cfg.rms_norm_eps
        self.gemma = fam in ("gemma3", "gemma4")  # sandwich norms around attention and MLP
        self.self_attn = DraftAttention(cfg)
        self.mlp = DraftMLP(H, cfg.intermediate_size, "gelu" if self.gemma else "silu")
        self.input_layernorm = make_norm(fam, H, eps)
        self.post_attention_layernorm = make_norm(fam, H, eps)
        if self.gemma:
            self.pre_feedforward_layernorm = make_norm(fam, H, eps)
            self.post_feedforward_layernorm = make_norm(fam, H, eps)
        if fam == "gemma4":  # a persistent buffer in DeepSpec's files too (never trained: 1)
            self.register_buffer("layer_scalar", torch.ones(1))
        else:
            self.layer_scalar = None

    def context_kv(self, ctx: torch.Tensor, pos: torch.Tensor):
        """Context features [B, C, H] → this layer's injected K/V. Not normed again per layer."""
        return self.self_attn.kv(ctx, pos)

    def forward(self, x, pos, ctx_kv, mask):
        a = self.self_attn(self.input_layernorm(x), pos, ctx_kv, mask)
        if not self.gemma:
            x = x + a
            return x + self.mlp(self.post_attention_layernorm(x))
        x = x + self.post_attention_layernorm(a)
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x if self.layer_scalar is None else x * self.layer_scalar

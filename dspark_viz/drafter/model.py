"""The DSpark drafter: parallel backbone + Markov head + confidence head, and its checkpoints.

Scope: the module (trainable parts only — the embedding and LM head are the target's, shared
and frozen, passed in at call time and never saved), the per-request context K/V cache fed
with newly verified target features, ``propose`` (one block of γ drafts: one parallel pass,
then the sequential Markov loop that samples left to right), the teacher-forced block forward
used by training, and save/load in Hugging Face layout with compatibility checks.

Shapes: B batch, C context, γ block, H hidden, V vocabulary, L tapped layers, r rank.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dspark_viz.config import DRAFTER_PRESETS, ConfigError, DrafterConfig
from dspark_viz.drafter.backbone import DraftLayer, make_norm
from dspark_viz.drafter.markov import ConfidenceHead, build_markov_head
from dspark_viz.errors import UserError
from dspark_viz.io import atomic_path, read_json_capped, write_json_atomic
from dspark_viz.sampling import draw, warp
from dspark_viz.targets import Bf16Head, gemma4_full_attention

FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20  # a drafter's config.json / calibration.json is a few KiB


class DrafterError(UserError):
    """A drafter checkpoint is missing, malformed or incompatible; one-line message."""


def default_layer_ids(num_layers: int, n: int = 5) -> tuple[int, ...]:
    """n target layers spread over depth (first layer to the one before last)."""
    if num_layers <= n:
        return tuple(range(num_layers))
    step = (num_layers - 2) / (n - 1)
    return tuple(sorted({int(round(1 + i * step)) for i in range(n)}))


def config_for_target(target, *, preset: str = "embedded", markov_type: str = "vanilla",
                      layer_ids: tuple[int, ...] | None = None, block_size: int = 7,
                      **overrides) -> DrafterConfig:
    """A DrafterConfig sized for ``target`` from a named preset plus overrides.

    Gemma 4 targets: the draft layers copy the target's *full-attention* geometry, as DeepSpec's
    ``build_draft_config`` does (head dim ``global_head_dim``, K = V and its key/value heads, the
    ``full_attention`` RoPE θ and proportion); a preset's head sizes still override them."""
    if preset not in DRAFTER_PRESETS:
        raise ConfigError(f"unknown drafter preset {preset!r} ({', '.join(DRAFTER_PRESETS)})")
    tc = target.config
    base = dict(num_heads=int(tc.num_attention_heads), intermediate_size=int(tc.intermediate_size))
    if target.family == "gemma4":
        fa = gemma4_full_attention(tc)
        base.update(head_dim=fa.head_dim, num_kv_heads=fa.num_kv_heads, k_eq_v=fa.k_eq_v,
                    rope_theta=fa.rope_theta, rope_proportion=fa.rope_proportion)
    else:
        base.update(num_kv_heads=int(tc.num_key_value_heads),
                    head_dim=int(getattr(tc, "head_dim", tc.hidden_size // tc.num_attention_heads)))
    base.update(DRAFTER_PRESETS[preset])
    base.update(overrides)
    conf = base.pop("confidence_head", markov_type != "none")
    # Qwen3: the target's rotary base (1e6 for the released Qwen3 models). Gemma 3 targets rotate
    # per layer type; their drafters keep the default 10 000 the shipped drafters were trained with.
    theta = target_rope_theta(tc)
    if theta is not None and target.family == "qwen3":
        base.setdefault("rope_theta", theta)
    return DrafterConfig(
        family=target.family, vocab_size=target.vocab_size, hidden_size=target.hidden_size,
        target_layer_ids=tuple(layer_ids or default_layer_ids(target.num_layers,
                                                              min(5, target.num_layers))),
        target_num_layers=target.num_layers, mask_token_id=target.mask_token_id,
        block_size=block_size, markov_type=markov_type, confidence_head=conf,
        rms_norm_eps=float(getattr(tc, "rms_norm_eps", 1e-6)), target_name=target.name, **base)


def add_in_dtype(z: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Base logits + Markov bias in the model dtype, then upcast to fp32 (Hugging Face / DeepSpec
    order: in bf16 the sum is rounded to bf16 before sampling). Both inputs are fp32 upcasts of
    model-dtype values, so the cast back is exact; in fp32 this is plain ``z + b``."""
    if dtype == torch.float32:
        return z + b
    return (z.to(dtype) + b.to(dtype)).float()


def target_rope_theta(target_config) -> float | None:
    """The rotary base of a Qwen3-style target config (``rope_parameters.rope_theta``, or the
    older top-level ``rope_theta``); None for per-layer-type rotary (Gemma 3/4) or none given."""
    rp = getattr(target_config, "rope_parameters", None)
    if isinstance(rp, dict) and isinstance(rp.get("rope_theta"), (int, float)):
        return float(rp["rope_theta"])
    theta = getattr(target_config, "rope_theta", None)
    return float(theta) if isinstance(theta, (int, float)) else None


@dataclass
class ContextCache:
    """Per-request drafter context: projected K/V of every committed position, per layer."""

    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # [B, k, C, d]
    length: int = 0


@dataclass
class Proposal:
    """One drafted block for a batch of requests (everything the trace and verifier need)."""

    tokens: torch.Tensor  # [B, γ] sampled draft tokens
    q: torch.Tensor  # [B, γ, V] the distribution each token was drawn from (after warping)
    base_logits: torch.Tensor  # [B, γ, Vd] parallel-stage logits U_k over the draft vocabulary
    base_ids: torch.Tensor | None  # [Vd] target id of each draft index (None: identity, Vd = V)
    cand: torch.Tensor | None  # [B, γ, K] draft indices the sequential stage ran over (None: all)
    bias: torch.Tensor | None  # [B, γ, K] (or [B, γ, V]) Markov bias B_k at the candidates
    conf_logit: torch.Tensor | None  # [B, γ] confidence logits (σ → c_k), None without head
    draft_ms: float = 0.0  # parallel pass (backbone + LM head)
    markov_ms: float = 0.0  # sequential loop (bias, sampling, confidence)


class DSparkDrafter(nn.Module):
    def __init__(self, cfg: DrafterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden_size
        self.fc = nn.Linear(len(cfg.target_layer_ids) * H, H, bias=False)
        self.hidden_norm = make_norm(cfg.family, H, cfg.rms_norm_eps)
        self.layers = nn.ModuleList([DraftLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = make_norm(cfg.family, H, cfg.rms_norm_eps)
        Vd = cfg.draft_vocab_size if cfg.restricted else cfg.vocab_size
        self.markov = build_markov_head(cfg.markov_type, Vd, H, cfg.markov_rank,
                                        in_vocab=Vd + 1 if cfg.restricted else Vd)
        # restricted draft vocabulary: sorted target ids the drafter may propose (saved)
        self.register_buffer("draft_vocab", torch.arange(Vd, dtype=torch.long), persistent=cfg.restricted)
        self._index_of: torch.Tensor | None = None  # [V] target id → draft index (Vd = OOV)
        self._head: tuple[int, torch.Tensor] | None = None  # cached sliced LM head weight
        self._fast_head: tuple[int, nn.Module] | None = None  # (exact_k, Bf16Head over those rows)
        self.confidence = (ConfidenceHead(H, cfg.markov_rank if cfg.has_markov else 0)
                           if cfg.confidence_head else None)
        self.calibration: list[float] | None = None  # STS temperatures per position
        self.calibration_temperature: float | None = None  # the sampling T the STS rounds used
        # what the confidence head was trained to predict: "tv" (T = 1 acceptance, the paper's
        # label) or "greedy" (T = 0 argmax match); saved in the safetensors metadata
        self.conf_label: str = "tv"
        # How many candidates the sequential stage runs over, when this drafter insists: None
        # (our drafters) follows the caller's ``candidates`` (``DecodeConfig.draft_candidates``);
        # an int K pins it (0 = the whole vocabulary). DeepSpec imports pin 0 — DeepSpec's
        # evaluator runs the Markov stage over the whole vocabulary, and only then are the drafts
        # DeepSpec's own; set K > 0 (``load_deepspec(..., markov_candidates=K)`` or this
        # attribute) to restrict an import on purpose, or None to follow the DecodeConfig.
        self.markov_candidates: int | None = None
        for m in self.modules():
            if isinstance(m, nn.Linear) and m not in (getattr(self.markov, "w2", None),) and \
                    (self.confidence is None or m is not self.confidence.proj):
                nn.init.normal_(m.weight, std=0.02)

    # ------------------------------------------------------------------ draft vocabulary
    def set_draft_vocab(self, ids: torch.Tensor) -> None:
        """Install the restricted draft vocabulary (sorted, unique target ids, size Vd)."""
        ids = torch.as_tensor(ids, dtype=torch.long).unique(sorted=True)
        if not self.cfg.restricted or ids.numel() != self.cfg.draft_vocab_size:
            raise ValueError(f"draft vocab must have {self.cfg.draft_vocab_size} unique ids, got {ids.numel()}")
        if int(ids[0]) < 0 or int(ids[-1]) >= self.cfg.vocab_size:
            raise ValueError("draft vocab ids outside the target vocabulary")
        self.draft_vocab = ids.to(self.draft_vocab.device)
        self._index_of, self._head, self._fast_head = None, None, None

    def remap_draft_vocab(self, ids: torch.Tensor) -> dict[str, int]:
        """Install another draft vocabulary keeping what the weights learned: the backbone does
        not depend on it (the head is the target's own LM head, gathered at the vocabulary), and
        the Markov rows of the ids in both vocabularies move to their new indices. An id new to
        the drafter gets W1's out-of-vocabulary row (what it saw for that token before) and a
        zero W2 row (no bigram bias until trained). Returns counts {kept, new}."""
        if not self.cfg.restricted:
            raise ValueError("remapping needs a restricted draft vocabulary (draft_vocab_size > 0)")
        old = self.draft_vocab.detach().clone().cpu()
        new = torch.as_tensor(ids, dtype=torch.long).unique(sorted=True)
        self.set_draft_vocab(new)  # checks size and range
        Vd = self.cfg.draft_vocab_size
        pos_old = torch.full((self.cfg.vocab_size,), -1, dtype=torch.long)
        pos_old[old] = torch.arange(Vd)
        src = pos_old[new]  # [Vd] old index of each new id, −1 if new
        hit = src >= 0
        if self.markov is not None:
            with torch.no_grad():
                w1, w2 = self.markov.w1.weight, self.markov.w2.weight  # [Vd + 1, r], [Vd, r]
                s1 = torch.where(hit, src, torch.full_like(src, Vd)).to(w1.device)
                w1[:Vd] = w1[s1].clone()  # the OOV row Vd stays
                w2_new = torch.zeros_like(w2)
                w2_new[hit.to(w2.device)] = w2[src[hit].to(w2.device)]
                w2.copy_(w2_new)
        return {"kept": int(hit.sum()), "new": int((~hit).sum())}

    def to_draft_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Target token ids […] → draft-vocabulary indices […]; Vd for ids outside it."""
        if not self.cfg.restricted:
            return ids
        if self._index_of is None or self._index_of.device != ids.device:
            idx = torch.full((self.cfg.vocab_size,), self.cfg.draft_vocab_size, dtype=torch.long,
                             device=ids.device)
            idx[self.draft_vocab.to(ids.device)] = torch.arange(self.cfg.draft_vocab_size, device=ids.device)
            self._index_of = idx
        return self._index_of[ids]

    def draft_logits(self, target, h: torch.Tensor, exact_k: int = 0) -> torch.Tensor:
        """h […, H] → base logits […, Vd] through the target's frozen LM head (its rows for the
        draft vocabulary when restricted; the whole head otherwise).

        ``exact_k`` > 0 (inference): when the target runs the bf16 CPU head (``Bf16Head``), the
        restricted rows do too — the product in bf16, the ``exact_k`` largest logits rescored in
        fp32 — so the candidates the sequential stage keeps carry their exact logits; about 2.5×
        faster than the fp32 product for a block of 7 (3.6 vs 8.6 ms over 16 384 rows here).
        Lossless either way: verification uses the q the drafter actually drew from.
        ``exact_k`` = 0 (training, full-vocabulary drafting): the fp32 product."""
        if not self.cfg.restricted:
            return target.logits(h.to(target.dtype))
        out_head = target.model.get_output_embeddings()
        w_full = out_head.weight
        if self._head is None or self._head[0] != id(w_full) or self._head[1].device != w_full.device:
            self._head = (id(w_full), w_full.detach()[self.draft_vocab.to(w_full.device)].contiguous())
            self._fast_head = None
        if exact_k > 0 and isinstance(out_head, Bf16Head):
            if self._fast_head is None or self._fast_head[0] != exact_k:
                # kept in a tuple: not a submodule (``.float()`` must not touch its bf16 copy)
                self._fast_head = (exact_k, Bf16Head(self._head[1], exact_k))
            z = self._fast_head[1](h.to(w_full.dtype))
        else:
            z = torch.nn.functional.linear(h.to(w_full.dtype), self._head[1]).float()
        if target.softcap:
            z = torch.tanh(z / target.softcap) * target.softcap
        return z

    # ------------------------------------------------------------------ context features
    def context_features(self, taps: torch.Tensor) -> torch.Tensor:
        """taps [B, C, L·H] (target hidden states of the tapped layers) → [B, C, H]."""
        return self.hidden_norm(self.fc(taps.to(self.fc.weight.dtype)))

    def layer_kv(self, feats: torch.Tensor, pos: torch.Tensor):
        """[B, C, H] features at positions [B, C] → per layer (k, v) [B, k, C, d]."""
        return [layer.context_kv(feats, pos) for layer in self.layers]

    @torch.inference_mode()
    def extend_context(self, cache: ContextCache, taps: torch.Tensor) -> None:
        """Append newly verified positions (taps [B, n, L·H]) to the context cache."""
        n = taps.shape[1]
        if n == 0:
            return
        pos = torch.arange(cache.length, cache.length + n, device=taps.device)
        kv = self.layer_kv(self.context_features(taps), pos.unsqueeze(0).expand(taps.shape[0], -1))
        if not cache.kv:
            cache.kv = kv
        else:
            cache.kv = [(torch.cat([k0, k1], 2), torch.cat([v0, v1], 2))
                        for (k0, v0), (k1, v1) in zip(cache.kv, kv)]
        cache.length += n

    def crop_context(self, cache: ContextCache, length: int) -> None:
        cache.kv = [(k[:, :, :length], v[:, :, :length]) for k, v in cache.kv]
        cache.length = length

    # ------------------------------------------------------------------ parallel stage
    def backbone(self, x: torch.Tensor, pos: torch.Tensor, ctx_kv, mask=None) -> torch.Tensor:
        """Block embeddings x [B, Q, H] at positions [B, Q] → final-normed hidden [B, Q, H]."""
        h = x.to(self.fc.weight.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h, pos, ctx_kv[i] if ctx_kv else None, mask)
        return self.norm(h)

    def block_inputs(self, target, anchor: torch.Tensor, gamma: int) -> torch.Tensor:
        """anchor [B] → embeddings of [anchor, mask × (γ−1)] [B, γ, H]."""
        ids = torch.full((anchor.shape[0], gamma), self.cfg.mask_token_id, dtype=torch.long,
                         device=anchor.device)
        ids[:, 0] = anchor
        return target.embed(ids)

    # ------------------------------------------------------------------ propose
    @torch.inference_mode()
    def propose(self, target, cache: ContextCache, anchor: torch.Tensor, *, gamma: int,
                temperature: float, top_k: int = 0, top_p: float = 1.0,
                gen: torch.Generator | None = None, use_markov: bool = True,
                candidates: int = 256) -> Proposal:
        """Draft γ tokens after ``anchor`` [B] (at position cache.length) for each request.

        Parallel stage: one backbone pass over [anchor, mask…] → h [B, γ, H], U = LM head(h).
        Sequential stage: for k = 1..γ, bias B_k from the previously *sampled* token (x0 =
        anchor), q_k = warp(U_k + B_k), x_k ~ q_k, c_k from [h_k; W1[x_{k−1}]].

        ``candidates`` = K > 0 runs the sequential stage over the K highest base logits of each
        position (the draft distribution q_k is then supported on them; verification uses this
        exact q_k, so decoding stays lossless). It keeps the Markov loop at O(K·r) per position
        instead of O(V·r) — on a 262k vocabulary that is the difference between a few percent
        of the round and a third of it. K = 0 uses the whole vocabulary. A drafter whose
        ``markov_candidates`` is set uses that instead (DeepSpec imports: 0, the whole
        vocabulary, unless overridden).
        """
        t0 = time.perf_counter()
        if self.markov_candidates is not None:
            candidates = self.markov_candidates
        B = anchor.shape[0]
        pos = torch.arange(cache.length, cache.length + gamma, device=anchor.device)
        h = self.backbone(self.block_inputs(target, anchor, gamma), pos.expand(B, -1), cache.kv)
        # [B, γ, Vd] (Vd = V unless restricted); the K candidates' logits exact
        base = self.draft_logits(target, h, exact_k=max(candidates, 0))
        V, Vd = target.vocab_size, base.shape[-1]
        vocab = self.draft_vocab if self.cfg.restricted else None  # draft index → target id
        if 0 < candidates < Vd:
            cvals, cand = torch.topk(base, candidates, dim=-1)  # [B, γ, K] draft indices
        elif vocab is not None:
            cvals, cand = base, torch.arange(Vd, device=base.device).expand(B, gamma, Vd)
        else:
            cvals, cand = base, None
        t1 = time.perf_counter()
        markov = self.markov if (use_markov and self.markov is not None) else None
        state = markov.init_state(B, h.device, h.dtype) if markov is not None else None
        prev = anchor  # target ids
        toks, qs, biases, confs = [], [], [], []
        for k in range(gamma):
            ck = cand[:, k] if cand is not None else None  # draft indices [B, K]
            z = cvals[:, k]
            prev_d = self.to_draft_index(prev)
            if markov is not None:
                b, state = markov.step(prev_d, h[:, k], state, ck)
                biases.append(b)
                z = add_in_dtype(z, b, h.dtype)
            qc = warp(z, temperature=temperature, top_k=top_k, top_p=top_p)  # [B, K]
            xc = draw(qc, gen)
            if ck is not None:
                ids = ck if vocab is None else vocab[ck]  # [B, K] target ids
                x = ids.gather(-1, xc.unsqueeze(-1)).squeeze(-1)
                q = qc.new_zeros(B, V).scatter_(-1, ids, qc)
            else:
                x, q = xc, qc
            if self.confidence is not None:
                e = self.markov.prev_embed(prev_d) if self.markov is not None else None
                confs.append(self.confidence(h[:, k], e))
            toks.append(x)
            qs.append(q)
            prev = x
        t2 = time.perf_counter()
        return Proposal(tokens=torch.stack(toks, 1), q=torch.stack(qs, 1), base_logits=base,
                        base_ids=vocab, cand=cand, bias=torch.stack(biases, 1) if biases else None,
                        conf_logit=torch.stack(confs, 1) if confs else None,
                        draft_ms=(t1 - t0) * 1e3, markov_ms=(t2 - t1) * 1e3)

    def confidence_note(self, temperature: float) -> str | None:
        """One line when the confidence head (or its STS fit) was made for another sampling
        temperature than ``temperature`` — its c_k then estimate another acceptance; else None.
        An STS fit on rounds of this kind of temperature (T = 0, or T > 0) maps the head onto
        this acceptance, whatever labels the head was trained on."""
        if self.confidence is None:
            return None
        greedy = temperature == 0
        ct = self.calibration_temperature
        fitted = self.calibration is not None and ct is not None
        fit_matches = fitted and (ct == 0) == greedy
        parts = []
        if (self.conf_label == "greedy") != greedy and not fit_matches:
            parts.append(f"its confidence head was trained on {'T = 0 (argmax match)' if self.conf_label == 'greedy' else 'T = 1 (1 − ½‖p_d − p_t‖₁)'} labels")
        if fitted and not fit_matches:
            parts.append(f"its STS calibration was fitted on T = {ct:g} rounds")
        if not parts:
            return None
        return f"sampling at T = {temperature:g}, but " + " and ".join(parts) + ": c_k may be off"

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` (+ ``calibration.json``) and ``config.json`` into ``path``,
        each file atomically (``io.atomic_path``)."""
        path = Path(path)
        self.write_files(path, {k: v.detach().contiguous() for k, v in self.state_dict().items()},
                         extra=extra)
        cfg = self.cfg.to_dict() | {"model_type": "dspark_drafter", "format_version": FORMAT_VERSION}
        write_json_atomic(path / "config.json", cfg)
        return path

    def write_files(self, path: Path, tensors: dict[str, torch.Tensor], *,
                    extra: dict | None = None) -> None:
        """``tensors`` as ``path/model.safetensors`` (the confidence label in its metadata) and
        the STS calibration as ``path/calibration.json``, each atomically; the config is the
        caller's (each checkpoint format writes its own)."""
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": "pt"} | ({"conf_label": self.conf_label} if self.confidence is not None else {})
        with atomic_path(path / "model.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=meta | (extra or {}))
        if self.calibration is not None:
            cal = {"temperatures": self.calibration} | (
                {"temperature": self.calibration_temperature} if self.calibration_temperature is not None else {})
            write_json_atomic(path / "calibration.json", cal, indent=None)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, target=None, device=None,
                        dtype=None) -> "DSparkDrafter":
        """Load a drafter; with ``target`` given, refuse an incompatible one with a reason."""
        path = Path(path)
        cfg = read_drafter_config(path)
        if target is not None:
            check_compatible(cfg, target)
        model = cls(cfg)
        w_file = path / "model.safetensors"
        model.load_checked(read_safetensors(w_file), str(w_file))
        model.read_extras(path)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        elif target is not None:
            model = model.to(device=target.device, dtype=target.dtype)
        return model.eval()

    def read_extras(self, path: Path) -> None:
        """The confidence label (safetensors metadata; "tv" when absent) and the STS calibration
        (``calibration.json``, when present) of the checkpoint directory ``path``."""
        w_file = path / "model.safetensors"
        with safe_open(str(w_file), "pt") as f:
            label = (f.metadata() or {}).get("conf_label", "tv")
        if label not in ("tv", "greedy"):
            raise DrafterError(f"{w_file}: unknown conf_label {label!r} in its metadata (tv or greedy)")
        self.conf_label = label
        if (path / "calibration.json").exists():
            self.calibration, self.calibration_temperature = read_calibration(path / "calibration.json")

    def load_checked(self, sd: dict[str, torch.Tensor], where: str) -> None:
        """Load a state dict whose names and shapes must be exactly this model's (each tensor
        copied into the model's own dtype)."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise DrafterError(f"{where}: weights do not match config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        for k, v in sd.items():
            if v.shape != expected[k].shape:
                raise DrafterError(f"{where}: {k} has shape {tuple(v.shape)}, config implies {tuple(expected[k].shape)}")
        self.load_state_dict(sd)


def read_drafter_config(path: Path) -> DrafterConfig:
    """The DrafterConfig of our checkpoint directory ``path`` (DrafterError with a reason)."""
    if not path.is_dir():
        raise DrafterError(f"drafter path {str(path)!r} does not exist or is not a directory")
    cfg_file, w_file = path / "config.json", path / "model.safetensors"
    if not cfg_file.exists() or not w_file.exists():
        raise DrafterError(f"{path} is not a drafter checkpoint (needs config.json and model.safetensors)")
    raw = read_json_capped(cfg_file, MAX_CONFIG_BYTES, what="drafter config", error=DrafterError)
    if not isinstance(raw, dict) or raw.get("model_type") != "dspark_drafter":
        archs = raw.get("architectures") if isinstance(raw, dict) else None
        also = (f", and its architectures {archs!r} name no DeepSpec drafter class "
                "(Qwen3DSparkModel, Gemma4DSparkModel)" if archs else "")
        raise DrafterError(f"{cfg_file} is not a dspark_drafter config{also}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise DrafterError(f"{cfg_file}: unsupported format_version {raw.get('format_version')!r}")
    try:
        return DrafterConfig.from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise DrafterError(f"{cfg_file}: {e}") from None


def read_safetensors(w_file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(w_file))
    except (SafetensorError, OSError, ValueError) as e:
        raise DrafterError(f"{w_file} is not a readable safetensors file: {e}") from None


def read_calibration(cal: Path) -> tuple[list[float], float | None]:
    """calibration.json → (STS temperatures per position, the sampling T they were fitted at)."""
    obj = read_json_capped(cal, MAX_CONFIG_BYTES, what="calibration", error=DrafterError)
    try:
        temps = obj["temperatures"]
        if not (isinstance(temps, list) and all(isinstance(t, (int, float)) and t > 0 for t in temps)):
            raise ValueError("temperatures must be a list of positive numbers")
        fit_t = obj.get("temperature")
        return [float(t) for t in temps], float(fit_t) if isinstance(fit_t, (int, float)) else None
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        raise DrafterError(f"{cal}: malformed calibration ({e})") from None


def check_compatible(cfg: DrafterConfig, target) -> None:
    """Raise DrafterError naming the first mismatch between a drafter config and a target."""
    checks = [
        ("family", cfg.family, target.family),
        ("vocab size", cfg.vocab_size, target.vocab_size),
        ("hidden size", cfg.hidden_size, target.hidden_size),
        ("target layer count", cfg.target_num_layers, target.num_layers),
    ]
    for what, mine, theirs in checks:
        if mine != theirs:
            raise DrafterError(f"drafter does not fit target {target.name}: {what} {mine} ≠ {theirs}")
    bad = [i for i in cfg.target_layer_ids if not -1 <= i < target.num_layers]
    if bad:
        raise DrafterError(f"drafter taps target layers {bad} that {target.name} does not have")

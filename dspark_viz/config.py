"""Frozen configuration dataclasses shared by the drafter, the engine and the CLI.

Scope: plain data plus validation (one-line ``ConfigError`` messages) and a few named presets.
No callables, no I/O besides ``DrafterConfig.to_dict``/``from_dict`` (used by the checkpoint
code in ``dspark_viz.drafter.model``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

GAMMA_MAX = 16
FAMILIES = ("qwen3", "gemma3")
MARKOV_TYPES = ("none", "vanilla", "gated", "rnn")


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message is one line."""


@dataclass(frozen=True)
class DrafterConfig:
    """Architecture of a DSpark drafter (DESIGN.md §2).

    The drafter's hidden size equals the target's, because the embedding and LM head are
    shared with (and frozen from) the target. ``target_layer_ids`` use −1 for the embedding
    output and i ≥ 0 for the output of target decoder layer i.
    """

    family: str  # "qwen3" | "gemma3" (Gemma 4 targets use gemma3-style draft layers)
    vocab_size: int
    hidden_size: int
    target_layer_ids: tuple[int, ...]
    target_num_layers: int
    mask_token_id: int
    block_size: int = 7  # γ used in training; inference may use any γ ≤ GAMMA_MAX
    num_layers: int = 1
    num_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 64
    intermediate_size: int = 1024
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    markov_type: str = "vanilla"
    markov_rank: int = 256
    confidence_head: bool = True
    draft_vocab_size: int = 0  # 0 = the whole target vocabulary; else a restricted draft vocab
    target_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_layer_ids", tuple(int(i) for i in self.target_layer_ids))
        if self.family not in FAMILIES:
            raise ConfigError(f"drafter family must be one of {FAMILIES}, got {self.family!r}")
        if self.markov_type not in MARKOV_TYPES:
            raise ConfigError(f"markov_type must be one of {MARKOV_TYPES}, got {self.markov_type!r}")
        if not self.target_layer_ids:
            raise ConfigError("target_layer_ids must name at least one target layer")
        for i in self.target_layer_ids:
            if not -1 <= i < self.target_num_layers:
                raise ConfigError(
                    f"target layer id {i} out of range [-1, {self.target_num_layers - 1}]")
        if not 1 <= self.block_size <= GAMMA_MAX:
            raise ConfigError(f"block_size must be in [1, {GAMMA_MAX}], got {self.block_size}")
        if self.num_layers < 1 or self.num_heads < 1 or self.num_kv_heads < 1:
            raise ConfigError("num_layers, num_heads and num_kv_heads must be ≥ 1")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("num_heads must be a multiple of num_kv_heads")
        if self.markov_type != "none" and self.markov_rank < 1:
            raise ConfigError("markov_rank must be ≥ 1 when a Markov head is used")
        if not 0 <= self.draft_vocab_size <= self.vocab_size:
            raise ConfigError(f"draft_vocab_size must be in [0, vocab_size], got {self.draft_vocab_size}")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ConfigError(f"mask_token_id {self.mask_token_id} outside the vocabulary")

    @property
    def has_markov(self) -> bool:
        return self.markov_type != "none"

    @property
    def restricted(self) -> bool:
        return 0 < self.draft_vocab_size < self.vocab_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_layer_ids"] = list(self.target_layer_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DrafterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"model_type", "format_version"})
        if unknown:
            raise ConfigError(f"unknown drafter config keys: {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class DecodeConfig:
    """Settings of one decoding run (engine + CLI).

    ``mode``: "dspark" (Markov head as trained), "dflash" (parallel drafter only, Markov head
    off), "ar" (plain target decoding). ``markov_off`` is the what-if switch that disables a
    trained Markov head at inference; ``force_ell`` overrides the policy's verification length.
    """

    gamma: int = 7
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    max_new_tokens: int = 64
    seed: int = 0
    mode: str = "dspark"
    markov_off: bool = False
    force_ell: int | None = None
    record_topk: int = 5
    draft_candidates: int = 256  # K: the sequential stage runs over the top-K base logits (0 = all)
    calibrated: bool = True
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.gamma <= GAMMA_MAX:
            raise ConfigError(f"gamma must be in [1, {GAMMA_MAX}], got {self.gamma}")
        if not self.temperature >= 0.0:
            raise ConfigError(f"temperature must be ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be ≥ 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.mode not in ("dspark", "dflash", "ar"):
            raise ConfigError(f"mode must be dspark, dflash or ar, got {self.mode!r}")
        if self.force_ell is not None and not 0 <= self.force_ell <= self.gamma:
            raise ConfigError(f"force_ell must be in [0, gamma={self.gamma}], got {self.force_ell}")
        if self.draft_candidates < 0:
            raise ConfigError(f"draft_candidates must be ≥ 0 (0 = whole vocabulary), got {self.draft_candidates}")
        if not 1 <= self.record_topk <= 50:
            raise ConfigError(f"record_topk must be in [1, 50], got {self.record_topk}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class TinyTargetSpec:
    """A tiny random target for tests (vocab ≤ 512, hidden 32–64, 2 layers)."""

    family: str = "qwen3"
    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    intermediate_size: int = 128
    seed: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)


# Named drafter presets: (num_layers, num_heads, num_kv_heads, head_dim, intermediate, rank).
DRAFTER_PRESETS: dict[str, dict] = {
    "tiny": dict(num_layers=1, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128,
                 markov_rank=16),
    "embedded": dict(num_layers=2, num_heads=4, num_kv_heads=1, head_dim=128,
                     intermediate_size=1536, markov_rank=128),
    "deepspec": dict(num_layers=5, markov_rank=256),
}

"""Frozen configuration dataclasses shared by the drafter, the engine and the CLI.

Scope: plain data plus validation (one-line ``ConfigError`` messages) and every named preset of
the project, so each list of choices has one home: drafter sizes (``DRAFTER_PRESETS``), training
methods and target families (``METHOD_PRESETS``, ``TARGET_PRESETS``, ``TARGET_ALIASES``), the
names of the embedded target (``EMBEDDED_ALIASES``), roofline devices and models
(``ROOFLINE_DEVICES``, ``ROOFLINE_MODELS``) and the notebook presets (``NOTEBOOK_PRESETS``).
No callables, no I/O besides ``DrafterConfig.to_dict``/``from_dict`` (used by the checkpoint
code in ``dspark_viz.drafter.model``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from dspark_viz.errors import UserError

GAMMA_MAX = 16
FAMILIES = ("qwen3", "gemma3", "gemma4")
MARKOV_TYPES = ("none", "vanilla", "gated", "rnn")


class ConfigError(UserError):
    """A setting is out of range or inconsistent; the message is one line."""


@dataclass(frozen=True)
class DrafterConfig:
    """Architecture of a DSpark drafter (docs/architecture.md, §1–2).

    The drafter's hidden size equals the target's, because the embedding and LM head are
    shared with (and frozen from) the target. ``target_layer_ids`` use −1 for the embedding
    output and i ≥ 0 for the output of target decoder layer i.
    """

    family: str  # "qwen3" | "gemma3" | "gemma4" (the target's; sets the draft layers' style)
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
    # Gemma 4 (DeepSpec's Gemma4DSparkModel): the fraction of frequency pairs that rotate
    # (proportional RoPE, θ^(−2i/d) for i < proportion·d/2, the rest 0; 1 = plain RoPE) and
    # whether the values are the key projection (``attention_k_eq_v``: no v_proj)
    rope_proportion: float = 1.0
    k_eq_v: bool = False
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
        if not 0.0 < self.rope_proportion <= 1.0:
            raise ConfigError(f"rope_proportion must be in (0, 1], got {self.rope_proportion}")
        if self.family != "gemma4" and (self.k_eq_v or self.rope_proportion != 1.0):
            raise ConfigError("k_eq_v and rope_proportion < 1 exist for Gemma 4 drafters only")

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
        if not 0.0 <= self.temperature < float("inf"):
            raise ConfigError(f"temperature must be finite and ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be ≥ 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.mode not in ("dspark", "dflash", "ar"):
            raise ConfigError(f"mode must be dspark, dflash or ar, got {self.mode!r}")
        if self.force_ell is not None and not 0 <= self.force_ell <= self.gamma:
            raise ConfigError(f"forced ℓ (force_ell) must be in [0, γ={self.gamma}], got {self.force_ell}")
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

    family: str = "qwen3"  # "qwen3" | "gemma3" | "gemma4"
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

# Training presets: the method (DSpark or the DFlash ablation) and the target's family.
METHOD_PRESETS: dict[str, dict] = {
    # DSpark: vanilla Markov head + confidence head, CE + TV + confidence BCE.
    "dspark": dict(markov_type="vanilla", confidence_head=True, alpha_ce=0.1, alpha_tv=0.9,
                   alpha_conf=1.0),
    # DFlash ablation: the same parallel drafter, no Markov head, no confidence head, CE only.
    "dflash": dict(markov_type="none", confidence_head=False, alpha_ce=1.0, alpha_tv=0.0,
                   alpha_conf=0.0),
}

# Per-target presets: drafter size preset, tapped layer ids (DeepSpec's for its targets) and
# training settings that suit the hardware the target implies.
TARGET_PRESETS: dict[str, dict] = {
    "qwen3-4b": dict(drafter="deepspec", layer_ids=(1, 9, 17, 25, 33), num_anchors=512,
                     lr=6e-4, batch_size=64, micro_batch=1),
    "qwen3-8b": dict(drafter="deepspec", layer_ids=(1, 9, 17, 25, 33), num_anchors=512,
                     lr=6e-4, batch_size=64, micro_batch=1),
    "qwen3-14b": dict(drafter="deepspec", layer_ids=(1, 10, 19, 28, 37), num_anchors=512,
                      lr=6e-4, batch_size=64, micro_batch=1),
    "gemma4-12b": dict(drafter="deepspec", layer_ids=(5, 17, 29, 41, 46), num_anchors=512,
                       lr=6e-4, batch_size=64, micro_batch=1),
    # the embedded Gemma 3 270M on a small CPU: few anchors per sequence, small steps
    "embedded": dict(drafter="embedded", layer_ids=None, num_anchors=16, lr=6e-4,
                     batch_size=8, micro_batch=4, chunk_rows=64),
    "tiny": dict(drafter="tiny", layer_ids=None, num_anchors=16, lr=3e-3, batch_size=8,
                 micro_batch=8, chunk_rows=512),
}
TARGET_ALIASES = {"gemma": "gemma4-12b", "gemma3-270m": "embedded"}

# Embedded default target: the names that pick it.
EMBEDDED_NAME = "embedded:gemma3-270m"
EMBEDDED_ALIASES = ("embedded", "default", "gemma3-270m", EMBEDDED_NAME)

# Roofline capacity presets (load/capacity.py). # Public spec-sheet figures (dense bf16, no sparsity) and Qwen3 model shapes.
ROOFLINE_DEVICES = {
    "a100": dict(device="A100-SXM-80GB", bandwidth_tbs=2.039, peak_tflops=312.0),
    "h100": dict(device="H100-SXM", bandwidth_tbs=3.35, peak_tflops=989.0),
    "h200": dict(device="H200-SXM", bandwidth_tbs=4.8, peak_tflops=989.0),
}
ROOFLINE_MODELS = {
    "qwen3-4b": dict(model="Qwen3-4B", params_b=4.0, layers=36, heads=32, kv_heads=8, head_dim=128),
    "qwen3-8b": dict(model="Qwen3-8B", params_b=8.2, layers=36, heads=32, kv_heads=8, head_dim=128),
    "qwen3-14b": dict(model="Qwen3-14B", params_b=14.8, layers=40, heads=40, kv_heads=8, head_dim=128),
}


# Notebook presets (notebooks/, first cell).
@dataclass(frozen=True)
class NotebookPreset:
    """The parameters every notebook reads in its first cell."""

    name: str
    target: str  # "embedded" or "tiny:qwen3" (the toolchain CLI's spelling)
    max_new_tokens: int  # per decoded prompt
    prompts_per_set: int  # prompts per built-in eval set (code, math, prose)
    mc_samples: int  # Monte-Carlo draws of the sampling demos
    sim_steps: int  # engine steps per simulated load point
    loads: tuple[int, ...]  # concurrency R of the load sweeps
    profile_batches: tuple[int, ...]  # B of the capacity profile of this machine
    tiny_train_steps: int  # steps of the tiny tutorial drafters (and notebook 6)
    regen_prompts: int  # prompts per built-in source for the tiny toolchain run
    regen_tokens: int  # answer length of the tiny regeneration
    gamma: int = 7

    @property
    def is_tiny(self) -> bool:
        return self.target.startswith("tiny")


NOTEBOOK_PRESETS: dict[str, NotebookPreset] = {
    # the default for people: the embedded Gemma 3 270M (its shipped drafter when installed)
    "embedded": NotebookPreset("embedded", "embedded", max_new_tokens=40, prompts_per_set=2,
                               mc_samples=10000, sim_steps=300,
                               loads=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                               profile_batches=(1, 2, 4, 8, 16), tiny_train_steps=600,
                               regen_prompts=40, regen_tokens=64),
    # tiny random targets, trained tiny drafters, generous counts: a few minutes on a laptop
    "tiny": NotebookPreset("tiny", "tiny:qwen3", max_new_tokens=64, prompts_per_set=6,
                           mc_samples=20000, sim_steps=300,
                           loads=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                           profile_batches=(1, 2, 4, 8, 16), tiny_train_steps=600,
                           regen_prompts=40, regen_tokens=64),
    # CI: everything small enough that the six notebooks run in a few minutes on 2 cores
    "ci": NotebookPreset("ci", "tiny:qwen3", max_new_tokens=32, prompts_per_set=2,
                         mc_samples=3000, sim_steps=60, loads=(1, 4, 16, 64, 256),
                         profile_batches=(1, 4, 8), tiny_train_steps=150, regen_prompts=20,
                         regen_tokens=48),
}

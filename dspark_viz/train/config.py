"""What defines a training run: ``TrainConfig``, its preset resolution and the LR schedule.

Scope: the frozen run settings saved in every checkpoint (``TrainConfig``), the choice of a
target preset for a loaded target (``target_preset_for``, ``resolve_target_preset``), filling
the settings left None from the method and target presets (``resolve_config``), the drafter
configuration a run trains (``drafter_config``), warmup + cosine (``lr_at``) and the one-line
``TrainError``. The presets themselves live in ``dspark_viz.config``. Not here: data
(``source.py``), the forward (``forward.py``), the loop (``trainer.py``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from dspark_viz.config import (METHOD_PRESETS, TARGET_ALIASES, TARGET_PRESETS, ConfigError,
                               DrafterConfig)
from dspark_viz.drafter.model import config_for_target
from dspark_viz.errors import UserError, one_line
from dspark_viz.train.losses import LossConfig


TRAIN_ONLY = ("confidence",)  # parts that can be trained alone (None: every parameter)
CONF_ANCHORS = ("uniform", "rounds")  # where the confidence head's training anchors sit


class TrainError(UserError):
    """Training cannot start or resume as asked; one-line message."""


def target_preset_for(target) -> str:
    """The target preset that suits a loaded target (by name, then size, then family)."""
    name = target.name.lower()
    if "embedded" in name or "gemma3-270m" in name:
        return "embedded"
    if name.startswith("tiny") or target.hidden_size <= 128:
        return "tiny"
    for key in ("qwen3-14b", "qwen3-8b", "qwen3-4b"):
        if key in name:
            return key
    if "gemma-4-12b" in name or "gemma4-12b" in name:
        return "gemma4-12b"
    return "qwen3-8b" if target.family == "qwen3" else "gemma4-12b"


def canonical_target_preset(name: str) -> str:
    """``auto`` or a target preset name (aliases resolved); ConfigError when unknown."""
    tp = TARGET_ALIASES.get(name, name)
    if tp != "auto" and tp not in TARGET_PRESETS:
        raise ConfigError(f"target preset must be auto or one of {', '.join(TARGET_PRESETS)}, "
                          f"got {name!r}")
    return tp


def resolve_target_preset(name: str, target) -> str:
    """The target preset ``name`` means for ``target`` (``auto``: ``target_preset_for``)."""
    tp = canonical_target_preset(name)
    return target_preset_for(target) if tp == "auto" else tp


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint)."""

    method: str = "dspark"
    target_preset: str = "auto"
    steps: int = 1000
    batch_size: int | None = None  # sequences per optimizer step, all ranks (None: preset)
    micro_batch: int | None = None  # sequences per forward on one rank (None: preset)
    num_anchors: int | None = None  # anchors per sequence (None: preset)
    block_size: int = 7
    lr: float | None = None  # None: preset
    warmup_ratio: float = 0.04
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    loss_variant: str = "deepspec"
    gamma_w: float | None = None
    alpha_ce: float | None = None  # None: the method preset's value
    alpha_tv: float | None = None
    alpha_conf: float | None = None
    markov_type: str | None = None  # None: the method preset's
    chunk_rows: int | None = None
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    keep_ckpts: int = 2
    max_len: int = 4096
    head_bf16: bool = False  # drafter-side LM-head products in bf16 (CPU: ≈2× faster matmuls)
    conf_label: str = "tv"  # confidence label: "tv" (paper eq. 8, T = 1) or "greedy" (T = 0)
    train_only: str | None = None  # None: every parameter; "confidence": the confidence head alone
    conf_anchors: str = "uniform"  # "rounds": anchors where fixed-γ T = 0 decoding starts rounds

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.method not in METHOD_PRESETS:
            raise ConfigError(f"method must be one of {', '.join(METHOD_PRESETS)}, got {self.method!r}")
        object.__setattr__(self, "target_preset", canonical_target_preset(self.target_preset))
        for name in ("steps", "batch_size", "micro_batch", "num_anchors", "log_every",
                     "ckpt_every", "chunk_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if (self.lr is not None and not self.lr > 0) or not 0 <= self.warmup_ratio < 1 \
                or self.grad_clip < 0:
            raise ConfigError("lr must be > 0, warmup_ratio in [0, 1), grad_clip ≥ 0")
        try:
            LossConfig(self.loss_variant, 0, 0, 0, self.gamma_w, self.conf_label)  # validates
        except ValueError as e:
            raise ConfigError(one_line(e)) from None
        self._check_confidence_only()

    def _check_confidence_only(self) -> None:
        if self.train_only is not None and self.train_only not in TRAIN_ONLY:
            raise ConfigError(f"train_only must be None or 'confidence', got {self.train_only!r}")
        if self.train_only == "confidence" and not METHOD_PRESETS[self.method]["confidence_head"]:
            raise ConfigError(f"method {self.method} has no confidence head to train alone")
        if self.conf_anchors not in CONF_ANCHORS:
            raise ConfigError(f"conf_anchors must be 'uniform' or 'rounds', got {self.conf_anchors!r}")
        if self.conf_anchors == "rounds" and (self.train_only != "confidence"
                                              or self.conf_label != "greedy"):
            raise ConfigError("conf_anchors 'rounds' needs train_only 'confidence' and conf_label "
                              "'greedy' (the rounds of T = 0 decoding with the frozen drafts)")

    def method_value(self, key: str):
        mine = getattr(self, key, None)
        return mine if mine is not None else METHOD_PRESETS[self.method][key]

    def loss_config(self) -> LossConfig:
        return LossConfig(self.loss_variant, self.method_value("alpha_ce"),
                          self.method_value("alpha_tv"), self.method_value("alpha_conf"),
                          self.gamma_w, self.conf_label)

    def to_dict(self) -> dict:
        return asdict(self) | {"betas": list(self.betas)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_config(cfg: TrainConfig, target) -> TrainConfig:
    """Resolve ``auto`` to a target preset and fill the fields left None from it."""
    tp = resolve_target_preset(cfg.target_preset, target)
    pre = TARGET_PRESETS[tp]
    upd = {k: v for k, v in pre.items() if k in {f.name for f in fields(TrainConfig)}
           and getattr(cfg, k) is None}
    return replace(cfg, target_preset=tp, **upd)


def drafter_config(cfg: TrainConfig, target, **overrides) -> DrafterConfig:
    """The drafter a (resolved) run trains: the target preset's size and taps, the method's heads."""
    pre = TARGET_PRESETS[cfg.target_preset]
    mt = cfg.method_value("markov_type")
    return config_for_target(target, preset=pre["drafter"], markov_type=mt,
                             layer_ids=overrides.pop("layer_ids", pre["layer_ids"]),
                             block_size=cfg.block_size,
                             confidence_head=METHOD_PRESETS[cfg.method]["confidence_head"],
                             **overrides)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ⌈warmup_ratio·steps⌉ steps, then cosine to min_lr_ratio·lr (step is 0-based)."""
    warm = max(1, math.ceil(cfg.warmup_ratio * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

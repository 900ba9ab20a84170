"""Drafter training: presets, the packed block forward, the optimisation loop, checkpoints.

Scope: train a ``DSparkDrafter`` against a frozen target from a target cache (``data.cache``)
or online (the target runs on the fly over regenerated samples). One optimizer step takes
``batch_size`` sequences (global, across ranks), samples ``num_anchors`` anchors in each
(``anchors.py``), runs the packed block forward in micro-batches and the chunked LM-head
losses (``losses.py``), then AdamW with warmup + cosine and gradient clipping. Data order
and anchors depend only on (seed, step, sample), so a resumed run and an N-rank run see
exactly what a 1-rank uninterrupted run sees. Data parallelism (``torchrun``; NCCL on GPU,
gloo on CPU) sums gradients with one all-reduce per step; the loss is normalised by the
global denominator, so N ranks compute the 1-rank gradient. bf16 autocast on GPU, fp32 on
CPU. Checkpoints: ``<out>/checkpoints/step-NNNNNNNN/`` holds the drafter in HF layout
(``DSparkDrafter.save_pretrained``), ``optimizer.safetensors`` and ``trainer_state.json``
(no pickles), written to a temp dir and renamed; the newest complete one is resumed
automatically. Metrics go to ``<out>/metrics.jsonl`` (and TensorBoard when installed).
Restricted draft vocabulary (``DrafterConfig.draft_vocab_size`` > 0): the drafter's logits use
only the Vd frozen head rows (``drafter.draft_logits``), labels and Markov/confidence previous
tokens are mapped to draft indices (out-of-vocabulary labels get no CE term), the TV term is
taken against the target's full distribution via the cached log-sum-exp (``losses.py``); the
vocabulary is frequency-ranked from the training data (``build_draft_vocab``) unless given.

Shapes: B sequences per micro-batch, C context, n anchors, γ block, Q = n·γ, N valid
slots, H hidden, V vocabulary.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

import torch

from dspark_viz.config import METHOD_PRESETS, TARGET_ALIASES, TARGET_PRESETS
from dspark_viz.errors import UserError
from dspark_viz.config import ConfigError, DrafterConfig
from dspark_viz.drafter.model import DSparkDrafter, check_compatible, config_for_target
from dspark_viz.train.anchors import Packed, pack, sample_anchors
from dspark_viz.train.losses import (LossConfig, chunked_head_terms, confidence_terms,
                                     denominator, position_weights, prob_tau)


class TrainError(UserError):
    """Training cannot start or resume as asked; one-line message."""


# ------------------------------------------------------------------------------ presets


def target_preset_for(target) -> str:
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
        tp = TARGET_ALIASES.get(self.target_preset, self.target_preset)
        if tp != "auto" and tp not in TARGET_PRESETS:
            raise ConfigError(f"target preset must be auto or one of {', '.join(TARGET_PRESETS)}, got {self.target_preset!r}")
        object.__setattr__(self, "target_preset", tp)
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
            raise ConfigError(str(e)) from None
        if self.train_only not in (None, "confidence"):
            raise ConfigError(f"train_only must be None or 'confidence', got {self.train_only!r}")
        if self.train_only == "confidence" and not METHOD_PRESETS[self.method]["confidence_head"]:
            raise ConfigError(f"method {self.method} has no confidence head to train alone")
        if self.conf_anchors not in ("uniform", "rounds"):
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
    tp = target_preset_for(target) if cfg.target_preset == "auto" else cfg.target_preset
    pre = TARGET_PRESETS[tp]
    upd = {k: v for k, v in pre.items() if k in {f.name for f in fields(TrainConfig)}
           and getattr(cfg, k) is None}
    return replace(cfg, target_preset=tp, **upd)


def drafter_config(cfg: TrainConfig, target, **overrides) -> DrafterConfig:
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


# ------------------------------------------------------------------------------ data sources
class Source(Protocol):
    def __len__(self) -> int: ...

    def tokens(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [T], loss_mask [T]) — cheap, no target pass."""

    def item(self, i: int):
        """A ``CacheItem`` with taps and final hidden states."""


class CacheSource:
    def __init__(self, cache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def tokens(self, i):
        return self.cache.tokens(i)

    def item(self, i):
        return self.cache[i]


class OnlineSource:
    """Regenerated samples; the target computes taps and final states when an item is used."""

    def __init__(self, samples: list[dict], target, layer_ids: tuple[int, ...], max_len: int) -> None:
        from dspark_viz.data.regenerate import loss_mask_of
        self.target, self.layer_ids = target, tuple(layer_ids)
        self.rows = [(str(s["id"]), torch.tensor(s["input_ids"][:max_len]),
                      torch.tensor(loss_mask_of(s)[:max_len]).bool()) for s in samples]

    def __len__(self) -> int:
        return len(self.rows)

    def tokens(self, i):
        return self.rows[i][1], self.rows[i][2]

    def item(self, i):
        from dspark_viz.data.cache import compute_item
        sid, ids, m = self.rows[i]
        with torch.inference_mode():
            it = compute_item(self.target, sid, ids.tolist(), m.tolist(), self.layer_ids)
        it.taps, it.last = it.taps.clone().float(), it.last.clone().float()
        return it


class _Order:
    """Epoch permutations, cached; position p of the infinite stream → dataset index."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self._perm = n, seed, {}

    def __call__(self, p: int) -> int:
        epoch, r = divmod(p, self.n)
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm = {epoch: torch.randperm(self.n, generator=g)}
        return int(self._perm[epoch][r])


def build_draft_vocab(source: Source, size: int, target) -> list[int]:
    """The ``size`` most frequent target ids over the loss regions of ``source`` (the tokens
    the drafter must predict), plus the target's end tokens; deterministic (ties by id)."""
    from dspark_viz.data.corpus import draft_vocab_from_counts
    lists = []
    for i in range(len(source)):
        ids, m = source.tokens(i)
        lists.append(ids[m.bool()].tolist())
    return draft_vocab_from_counts(lists, size, target.vocab_size, always=tuple(target.eos_ids))


class ConcatSource:
    """Several sources (e.g. caches written in parallel) seen as one, in order."""

    def __init__(self, sources: list) -> None:
        self.sources = list(sources)
        self.offsets = []
        n = 0
        for s in self.sources:
            self.offsets.append(n)
            n += len(s)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def _loc(self, i: int):
        import bisect
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.sources[k], i - self.offsets[k]

    def tokens(self, i):
        s, j = self._loc(i)
        return s.tokens(j)

    def item(self, i):
        s, j = self._loc(i)
        return s.item(j)


def anchor_gen(seed: int, step: int, i: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 100_003 + i)


# ------------------------------------------------------------------------------ forward
@dataclass
class StepSums:
    """Sums over a step's valid slots/blocks (all-reduced across ranks before logging)."""

    gamma: int
    t: dict = field(default_factory=dict)

    def add(self, key: str, v) -> None:
        v = v.detach().double().cpu() if torch.is_tensor(v) else torch.tensor(float(v), dtype=torch.float64)
        self.t[key] = self.t.get(key, 0) + v

    def vector(self) -> tuple[list[str], torch.Tensor]:
        keys = sorted(self.t)
        return keys, torch.cat([self.t[k].reshape(-1) for k in keys]) if keys else torch.zeros(0)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)


def bf16_head(drafter: DSparkDrafter, target):
    """h [m, H] → draft logits [m, Vd] (or [m, V]) with the frozen head rows in bf16 (float32
    out, soft-cap applied). Cached on the drafter, keyed by the head weight and vocabulary."""
    w_full = target.model.get_output_embeddings().weight
    key = (id(w_full), int(drafter.draft_vocab.sum()), drafter.cfg.restricted)
    cached = getattr(drafter, "_bf16_head_cache", None)
    if cached is None or cached[0] != key:
        w = w_full.detach()[drafter.draft_vocab.to(w_full.device)] if drafter.cfg.restricted \
            else w_full.detach()
        cached = (key, w.to(torch.bfloat16).contiguous())
        drafter._bf16_head_cache = cached

    def head(h: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.linear(h.to(torch.bfloat16), cached[1]).float()
        if target.softcap:
            z = torch.tanh(z / target.softcap) * target.softcap
        return z
    return head


def block_losses(drafter: DSparkDrafter, target, batch: Packed, *, loss: LossConfig,
                 weights: torch.Tensor, den: torch.Tensor, chunk_rows: int, sums: StepSums,
                 backward: bool = True, head_bf16: bool = False,
                 only_conf: bool = False) -> torch.Tensor:
    """Forward the packed blocks, compute the losses (normalised by ``den``), back-propagate
    into the drafter's parameters when ``backward``, and add the metric sums to ``sums``.
    ``head_bf16``: the drafter's head products (forward and backward into h) in bf16; the
    target's p_t stays exact (float32 head rows). ``only_conf``: only the confidence loss is
    back-propagated, into the confidence head alone (backbone and Markov head run without a graph)."""
    dev = target.device
    B, n, g = batch.valid.shape
    with torch.set_grad_enabled(backward and not only_conf), _autocast(dev):
        feats = drafter.context_features(batch.ctx_taps.to(dev))  # [B, C, H]
        ctx_kv = drafter.layer_kv(feats, batch.ctx_pos.to(dev))
        with torch.no_grad():
            x = target.embed(batch.block_ids.to(dev))  # [B, Q, H] frozen shared embedding
        h = drafter.backbone(x, batch.block_pos.to(dev), ctx_kv, batch.mask.to(dev))  # [B, Q, H]
        prev = drafter.to_draft_index(batch.prev.view(B, n * g).to(dev))  # draft indices
        u = drafter.markov.features(prev, h, g) if drafter.markov is not None else None
        conf = None
        if drafter.confidence is not None:
            e = drafter.markov.prev_embed(prev) if drafter.markov is not None else None
            with torch.set_grad_enabled(backward):
                conf = drafter.confidence(h, e)  # [B, Q]
    valid = batch.valid.view(-1).to(dev)
    rows = valid.nonzero().flatten()  # [N]
    if rows.numel() == 0:
        return torch.zeros(B, n, g, device=dev)
    k_of = torch.arange(g, device=dev).repeat(B * n)[rows]  # slot index per row
    w = weights.to(dev)[k_of]
    inv_den = 1.0 / den.to(dev).float()
    h_rows = h.reshape(B * n * g, -1)[rows]
    u_rows = u.reshape(B * n * g, -1)[rows] if u is not None else None
    b_of = rows // (n * g)
    tpos = batch.tpos.view(-1).to(dev)[rows]
    t_last = batch.ctx_last.to(dev)[b_of, tpos]  # [N, H]
    restricted = drafter.cfg.restricted
    labels = drafter.to_draft_index(batch.labels.view(-1).to(dev)[rows])  # Vd = out of vocab
    t_lse = batch.ctx_lse.to(dev)[b_of, tpos] if (restricted and batch.ctx_lse is not None) else None
    exact = (lambda z: drafter.draft_logits(target, z))  # [m, Vd] (or [m, V])
    head = bf16_head(drafter, target) if head_bf16 else exact
    full_lse = (lambda z: torch.logsumexp(target.logits(z.to(target.dtype)).float(), -1))
    terms = chunked_head_terms(h=h_rows, u=u_rows, w2=drafter.markov.w2 if u is not None else None,
                               head=head, t_last=t_last, t_key=b_of * batch.ctx_last.shape[1] + tpos,
                               labels=labels, coef_ce=loss.alpha_ce * w * inv_den,
                               coef_tv=loss.alpha_tv * w * inv_den, chunk_rows=chunk_rows,
                               backward=backward and not only_conf, restricted=restricted,
                               t_lse=t_lse, full_lse=full_lse, t_head=exact)
    acc = terms.accept
    lab_c = terms.label(loss.conf_label)  # [N] the confidence head's label
    conf_rows = conf.reshape(-1)[rows] if conf is not None else None
    if backward:
        surrogate = torch.zeros((), device=dev)
        if not only_conf:
            outs, grads = [h_rows], [terms.grad_h]
            if u_rows is not None and terms.grad_u is not None:
                outs.append(u_rows)
                grads.append(terms.grad_u)
            surrogate = sum((o.float() * gr.float()).sum() for o, gr in zip(outs, grads))
        if conf_rows is not None and loss.alpha_conf > 0:
            closs, bce = confidence_terms(conf_rows, lab_c, loss.alpha_conf * w * inv_den)
            surrogate = surrogate + closs
        if surrogate.requires_grad:
            surrogate.backward()
    # metric sums (numerators with their denominators)
    sums.add("w_sum", w.sum())
    sums.add("blocks", batch.valid[..., 0].sum())
    sums.add("ce_num", (w * terms.ce).sum())  # OOV labels contribute no CE (ce = 0)
    oov = (labels >= (drafter.cfg.draft_vocab_size if restricted else 1 << 62)).float()
    sums.add("oov_num", (w * oov).sum())
    sums.add("tv_num", (w * terms.l1).sum())
    if conf_rows is not None:
        c = torch.sigmoid(conf_rows.detach().float())
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            conf_rows.detach().float(), lab_c, reduction="none")
        sums.add("conf_num", (w * bce).sum())
        sums.add("conf_abs_num", (w * (c - lab_c).abs()).sum())
        sums.add("conf_bias_num", (w * (c - lab_c)).sum())
    vd = batch.valid.to(dev)
    for name, per_row in (("acc", acc), ("greedy", terms.match)):
        a3 = torch.zeros(B * n * g, device=dev)
        a3[rows] = per_row
        a3 = a3.view(B, n, g)
        sums.add(f"{name}_pos_num", (a3 * vd).sum((0, 1)))
        sums.add(f"{name}_tau_num", (prob_tau(a3, vd) * vd[..., 0]).sum())
    sums.add("acc_pos_den", vd.float().sum((0, 1)))
    if loss.variant == "paper":  # per-block sums / blocks — what the optimised loss reports
        sums.add("den_paper", batch.valid[..., 0].sum())
    return a3  # [B, n, γ] greedy (T = 0) match per slot, 0 where not valid


def metrics_from(keys: list[str], vec: torch.Tensor, gamma: int, loss: LossConfig) -> dict:
    """Turn all-reduced sums into the logged metrics (definitions in the notes)."""
    d, i = {}, 0
    for k in keys:
        size = gamma if "_pos_" in k else 1
        d[k] = vec[i: i + size]
        i += size
    w = float(d.get("w_sum", torch.zeros(1))[0])
    blocks = float(d.get("blocks", torch.zeros(1))[0])
    out: dict = {}
    if w <= 0 or blocks <= 0:
        return out
    norm = blocks if loss.variant == "paper" else w
    out["ce"] = float(d["ce_num"][0]) / norm
    if "oov_num" in d:  # w-weighted share of labels outside the draft vocabulary
        out["oov_rate"] = float(d["oov_num"][0]) / w
    out["tv"] = float(d["tv_num"][0]) / norm
    total = loss.alpha_ce * out["ce"] + loss.alpha_tv * out["tv"]
    if "conf_num" in d:
        out["conf"] = float(d["conf_num"][0]) / norm
        total += loss.alpha_conf * out["conf"]
        out["conf_abs_err"] = float(d["conf_abs_num"][0]) / w
        out["conf_bias"] = float(d["conf_bias_num"][0]) / w
    out["loss"] = total
    pos = (d["acc_pos_num"] / d["acc_pos_den"].clamp(min=1)).tolist()
    for k, a in enumerate(pos, 1):
        out[f"accept@{k}"] = a
    out["tau_prob"] = float(d["acc_tau_num"][0]) / blocks
    if "greedy_pos_num" in d:  # T = 0: the draft argmax equals the target argmax
        gpos = (d["greedy_pos_num"] / d["acc_pos_den"].clamp(min=1)).tolist()
        for k, a in enumerate(gpos, 1):
            out[f"greedy@{k}"] = a
        out["tau_greedy"] = float(d["greedy_tau_num"][0]) / blocks
    out["blocks"] = int(blocks)
    return out


# ------------------------------------------------------------------------------ distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group that ``torchrun`` describes (env WORLD_SIZE > 1), else 1 rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    d = Dist(rank=dist.get_rank(), world=dist.get_world_size(),
             local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available() and d.local_rank >= torch.cuda.device_count():
        raise TrainError(f"local rank {d.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                         f"start one process per GPU, or set CUDA_VISIBLE_DEVICES= to train on the CPU")
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))
    return d


def close_distributed(d: Dist) -> None:
    """Leave the process group (a no-op for one rank). Without it, gloo's worker threads can
    outlive the interpreter's teardown and abort the process at exit ("terminate called without
    an active exception") after a finished run."""
    if d.world <= 1:
        return
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def _all_reduce(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        import torch.distributed as dist
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ------------------------------------------------------------------------------ checkpoints
def _optimizer_tensors(opt: torch.optim.Optimizer, names: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {}
    for p, st in opt.state.items():
        n = names[p]
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"{n}::{k}"] = v.detach().contiguous().cpu()
            else:
                meta[f"{n}::{k}"] = float(v)
    return tensors, meta


def save_checkpoint(out: Path, step: int, drafter: DSparkDrafter, opt, cfg: TrainConfig,
                    metrics: dict, keep: int) -> Path:
    """Write checkpoints/step-N atomically (temp dir + rename) and prune old ones."""
    from safetensors.torch import save_file
    ck = out / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"step-{step:08d}"
    tmp = ck / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    drafter.save_pretrained(tmp, extra={"step": str(step)})
    names = {p: n for n, p in drafter.named_parameters()}
    tensors, meta = _optimizer_tensors(opt, names)
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"format": "pt"})
    state = {"step": step, "train_config": cfg.to_dict(), "optimizer_scalars": meta,
             "metrics": metrics, "time": time.time()}
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in sorted(ck.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    ck = out / "checkpoints"
    done = [p for p in sorted(ck.glob("step-*")) if (p / "trainer_state.json").exists()] if ck.exists() else []
    return done[-1] if done else None


def load_checkpoint(path: Path, drafter: DSparkDrafter, opt) -> int:
    from safetensors.torch import load_file
    state = json.loads((path / "trainer_state.json").read_text())
    loaded = DSparkDrafter.from_pretrained(path)
    if loaded.cfg != drafter.cfg:
        raise TrainError(f"checkpoint {path} holds a drafter with another architecture; use a new --out")
    drafter.load_state_dict(loaded.state_dict())
    names = {n: p for n, p in drafter.named_parameters()}
    tens = load_file(str(path / "optimizer.safetensors"))
    for key, v in tens.items():
        n, k = key.split("::")
        opt.state[names[n]][k] = v.to(names[n].device)
    for key, v in state["optimizer_scalars"].items():
        n, k = key.split("::")
        opt.state[names[n]][k] = torch.tensor(v)
    return int(state["step"])


# ------------------------------------------------------------------------------ metrics log
class MetricsLog:
    def __init__(self, out: Path, resume_step: int, enabled: bool) -> None:
        self.path, self.enabled, self.tb = out / "metrics.jsonl", enabled, None
        if not enabled:
            return
        if self.path.exists():  # drop lines past the resumed step (they will be recomputed)
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
                except json.JSONDecodeError:
                    pass
            self.path.write_text("".join(x + "\n" for x in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard not installed
            self.tb = None

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k.replace("@", "/"), v, rec["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ------------------------------------------------------------------------------ the loop
@dataclass
class TrainResult:
    out: Path
    steps: int
    resumed_from: int
    history: list[dict]
    seconds: float
    blocks_per_s: float
    drafter: DSparkDrafter


def _step_plan(source: Source, order: _Order, step: int, cfg: TrainConfig, d: Dist,
               among: list[torch.Tensor] | None = None):
    """This rank's share of global step ``step``: [(dataset index, anchors)] and the global
    loss denominator's local part. ``among``: per sequence, the positions to draw anchors from."""
    per = cfg.batch_size // d.world
    plan = []
    for i in range(d.rank * per, (d.rank + 1) * per):
        idx = order(step * cfg.batch_size + i)
        ids, m = source.tokens(idx)
        a = sample_anchors(m, cfg.num_anchors, anchor_gen(cfg.seed, step, i),
                           among[idx] if among is not None else None)
        plan.append((idx, a, ids, m))
    return plan


@torch.no_grad()
def round_anchors(drafter: DSparkDrafter, target, source: Source, *, chunk_anchors: int = 32,
                  chunk_rows: int = 1024, progress: bool = False) -> list[torch.Tensor]:
    """Per sequence, the anchors of fixed-γ T = 0 decoding (:func:`anchors.walk_anchors`), from
    teacher-forced matches of the drafter's drafts at every candidate anchor. The drafts must
    not change during training (confidence head alone), so the walk is computed once."""
    from dspark_viz.train.anchors import anchor_candidates, walk_anchors
    g = drafter.cfg.block_size
    loss = LossConfig(conf_label="greedy")
    weights = position_weights(g, loss.decay(g))
    was = drafter.training
    drafter.eval()
    out = []
    it = range(len(source))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="round anchors", unit="seq", dynamic_ncols=True)
    for i in it:
        item = source.item(i)
        cand = anchor_candidates(item.loss_mask)
        matches, valids = [], []
        for c0 in range(0, cand.numel(), chunk_anchors):
            part = cand[c0: c0 + chunk_anchors]
            batch = pack([item], [part], gamma=g, mask_token_id=drafter.cfg.mask_token_id)
            m = block_losses(drafter, target, batch, loss=loss, weights=weights,
                             den=torch.tensor(1.0), chunk_rows=chunk_rows, sums=StepSums(g),
                             backward=False)
            matches.append(m[0].cpu())
            valids.append(batch.valid[0])
        if cand.numel():
            out.append(walk_anchors(cand, torch.cat(matches), torch.cat(valids)))
        else:
            out.append(cand)
    drafter.train(was)
    return out


def train(target, source: Source, out_dir: str | os.PathLike, cfg: TrainConfig, *,
          drafter_cfg: DrafterConfig | None = None, dist_info: Dist | None = None,
          progress: bool = True, stop_after: int | None = None,
          draft_vocab=None, deadline: float | None = None,
          init: DSparkDrafter | None = None) -> TrainResult:
    """Train (or resume) a drafter; returns the history of logged metrics.

    ``init``: start from this drafter's weights (fine-tuning; its draft vocabulary included)
    instead of a fresh initialisation; its configuration must equal the run's. A run that
    resumes from a checkpoint ignores it.

    ``draft_vocab``: with a restricted draft vocabulary (``drafter_cfg.draft_vocab_size`` > 0)
    the target ids it holds; None builds it from the training data's token frequencies
    (``build_draft_vocab``). A resumed run keeps the checkpoint's.

    ``deadline``: a Unix time; at the first step end past it, checkpoint, save the drafter as
    it is (``stopped_at_deadline`` in its metadata — the LR schedule did not finish) and stop.
    ``stop_after``: return after that many steps of this call (the run stays resumable) —
    for benchmarks; a killed run resumes the same way.
    """
    d = dist_info or Dist()
    cfg = resolve_config(cfg, target)
    if cfg.batch_size % d.world:
        raise TrainError(f"batch_size {cfg.batch_size} is not a multiple of the world size {d.world}")
    if len(source) == 0:
        raise TrainError("the training data holds no sample")
    out = Path(out_dir)
    dcfg = drafter_cfg or drafter_config(cfg, target)
    check_compatible(dcfg, target)
    loss = cfg.loss_config()
    g = dcfg.block_size
    weights = position_weights(g, loss.decay(g))
    chunk = cfg.chunk_rows or 128
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        drafter = DSparkDrafter(dcfg)
    if init is not None:
        if init.cfg != dcfg:
            diff = [f.name for f in fields(DrafterConfig) if getattr(init.cfg, f.name) != getattr(dcfg, f.name)]
            raise TrainError(f"--init drafter differs from the run's drafter in {', '.join(diff)} "
                             f"({', '.join(f'{k}={getattr(init.cfg, k)!r} vs {getattr(dcfg, k)!r}' for k in diff[:3])})")
        if draft_vocab is not None:
            raise TrainError("give either an --init drafter or a draft vocabulary, not both")
        drafter.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in init.state_dict().items()})
        if dcfg.restricted:
            drafter.set_draft_vocab(init.draft_vocab.detach().clone().cpu())
        drafter.conf_label = getattr(init, "conf_label", "tv")
    elif dcfg.restricted:
        vocab = list(draft_vocab) if draft_vocab is not None else build_draft_vocab(
            source, dcfg.draft_vocab_size, target)
        drafter.set_draft_vocab(torch.tensor(vocab))
    drafter = drafter.to(target.device).train()
    if cfg.train_only == "confidence":  # the rest stays as initialised (fine-tuning the head)
        if init is None:
            raise TrainError("training the confidence head alone needs an --init drafter")
        for p in drafter.parameters():
            p.requires_grad_(False)
        for p in drafter.confidence.parameters():
            p.requires_grad_(True)
    params = [p for p in drafter.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    start = 0
    last = latest_checkpoint(out)
    if last is not None:
        st = json.loads((last / "trainer_state.json").read_text())
        old = TrainConfig.from_dict(st["train_config"])
        for k in ("batch_size", "num_anchors", "seed", "method", "block_size", "loss_variant",
                  "conf_label", "train_only", "conf_anchors"):
            if getattr(old, k) != getattr(cfg, k):
                raise TrainError(f"{out} holds a run with {k}={getattr(old, k)} (now {getattr(cfg, k)}); "
                                 f"resume with the same settings or use a new --out")
        start = load_checkpoint(last, drafter, opt)
    if d.world > 1:  # every rank starts from rank 0's weights
        import torch.distributed as dist
        for p in drafter.parameters():
            dist.broadcast(p.data, 0)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(
            {"train": cfg.to_dict(), "drafter": dcfg.to_dict(), "world_size": d.world}, indent=1))
    among = None
    if cfg.conf_anchors == "rounds":
        t_w = time.perf_counter()
        among = round_anchors(drafter, target, source, chunk_rows=chunk,
                              progress=progress and d.main)
        if d.main:
            n_w = sum(int(a.numel()) for a in among)
            print(f"round anchors: {n_w} over {len(source)} sequences "
                  f"({time.perf_counter() - t_w:.0f} s)", flush=True)
    log = MetricsLog(out, start, d.main)
    order = _Order(len(source), cfg.seed)
    history: list[dict] = []
    bar = None
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    if progress and d.main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.method}", unit="step",
                   dynamic_ncols=True)
    t_run = time.perf_counter()
    blocks_total, window, t_win = 0, None, time.perf_counter()
    step = start
    stopped = None
    try:
        for step in range(start, end):
            for gr in opt.param_groups:
                gr["lr"] = lr_at(step, cfg)
            plan = _step_plan(source, order, step, cfg, d, among)
            # global denominator (known before any forward): Σ w or #blocks over all ranks
            from dspark_viz.train.anchors import block_targets
            den_local = torch.zeros((), dtype=torch.float64)
            for idx, a, ids, m in plan:
                if a.numel():
                    den_local += denominator(block_targets(ids, m, a, g)[2], weights, loss.variant).double()
            den = _all_reduce(den_local.clone(), d).float()
            sums = StepSums(g)
            opt.zero_grad(set_to_none=True)
            if float(den) > 0:
                for b0 in range(0, len(plan), cfg.micro_batch):
                    part = plan[b0: b0 + cfg.micro_batch]
                    items = [source.item(idx) for idx, *_ in part]
                    batch = pack(items, [a for _, a, *_ in part], gamma=g,
                                 mask_token_id=dcfg.mask_token_id)
                    block_losses(drafter, target, batch, loss=loss, weights=weights, den=den,
                                 chunk_rows=chunk, sums=sums, head_bf16=cfg.head_bf16,
                                 only_conf=cfg.train_only == "confidence")
            # one all-reduce of all gradients (summed: the loss is already globally normalised)
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = _all_reduce(torch.cat([gg.reshape(-1).float() for gg in grads]), d)
            off = 0
            for p, gg in zip(params, grads):
                p.grad = flat[off: off + gg.numel()].view_as(p).to(p.dtype)
                off += gg.numel()
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 \
                else float(torch.linalg.vector_norm(flat))
            opt.step()
            keys, vec = sums.vector()
            vec = _all_reduce(vec.clone(), d)
            nb = int(vec[keys.index("blocks")]) if "blocks" in keys else 0
            blocks_total += nb
            window = vec if window is None or window.shape != vec.shape else window + vec
            s1 = step + 1
            if s1 % cfg.log_every == 0 or s1 == cfg.steps:
                dt = time.perf_counter() - t_win
                m = metrics_from(keys, window, g, loss)
                rec = {"step": s1, "lr": lr_at(step, cfg), "grad_norm": gnorm, **m,
                       "blocks_per_s": (m.get("blocks", 0) / dt) if dt > 0 else 0.0,
                       "time": time.time()}
                history.append(rec)
                log.write(rec)
                window, t_win = None, time.perf_counter()
                if bar is not None:
                    bar.set_postfix(loss=f"{m.get('loss', float('nan')):.3f}",
                                    acc1=f"{m.get('accept@1', 0):.2f}", tau=f"{m.get('tau_prob', 0):.2f}")
            if (s1 % cfg.ckpt_every == 0 or s1 == cfg.steps) and d.main:
                save_checkpoint(out, s1, drafter, opt, cfg, history[-1] if history else {},
                                cfg.keep_ckpts)
            if d.world > 1:
                import torch.distributed as dist
                dist.barrier()
            if bar is not None:
                bar.update(1)
            if deadline is not None and s1 < end:
                late = _all_reduce(torch.tensor(float(time.time() > deadline)), d)
                if float(late) > 0:
                    stopped = s1
                    if d.main:
                        if s1 % cfg.ckpt_every != 0:
                            save_checkpoint(out, s1, drafter, opt, cfg,
                                            history[-1] if history else {}, cfg.keep_ckpts)
                        log.write({"step": s1, "event": "stopped_at_deadline", "time": time.time()})
                    break
        done = end if stopped is None else stopped
    finally:
        if bar is not None:
            bar.close()
        log.close()
    if (done == cfg.steps or stopped is not None) and d.main:
        drafter.eval()
        if drafter.confidence is not None and (cfg.train_only == "confidence" or cfg.method_value("alpha_conf") > 0):
            drafter.conf_label = cfg.conf_label
        extra = {"step": str(done)} | ({"stopped_at_deadline": "true", "planned_steps": str(cfg.steps)}
                                       if stopped is not None else {}) \
            | ({"conf_anchors": cfg.conf_anchors} if cfg.conf_anchors != "uniform" else {})
        drafter.save_pretrained(out / "drafter", extra=extra)
    secs = time.perf_counter() - t_run
    return TrainResult(out=out, steps=done, resumed_from=start, history=history, seconds=secs,
                       blocks_per_s=blocks_total / secs if secs > 0 else 0.0, drafter=drafter.eval())


@torch.no_grad()
def evaluate(drafter: DSparkDrafter, target, source: Source, *, num_anchors: int = 16,
             max_samples: int = 64, seed: int = 12345, loss: LossConfig | None = None,
             micro_batch: int = 4, chunk_rows: int = 128) -> dict:
    """Metrics (no gradient) on fixed anchors of the first ``max_samples`` sequences."""
    loss = loss or LossConfig()
    g = drafter.cfg.block_size
    weights = position_weights(g, loss.decay(g))
    was = drafter.training
    drafter.eval()
    sums = StepSums(g)
    idxs = list(range(min(max_samples, len(source))))
    for b0 in range(0, len(idxs), micro_batch):
        part = idxs[b0: b0 + micro_batch]
        items = [source.item(i) for i in part]
        anchors = [sample_anchors(it.loss_mask, num_anchors, anchor_gen(seed, 0, i))
                   for i, it in zip(part, items)]
        batch = pack(items, anchors, gamma=g, mask_token_id=drafter.cfg.mask_token_id)
        block_losses(drafter, target, batch, loss=loss, weights=weights, den=torch.tensor(1.0),
                     chunk_rows=chunk_rows, sums=sums, backward=False)
    drafter.train(was)
    keys, vec = sums.vector()
    return metrics_from(keys, vec, g, loss)

"""``dspark-viz train`` — train a DSpark (or DFlash-ablation) drafter; resumable, DDP-ready.

Scope: argument parsing over ``train.trainer.train``; data from a target cache (``--cache``) or
online (``--samples`` + ``--online``: the target runs on the fly). Launch on several
processes with ``torchrun --nproc_per_node N -m dspark_viz.cli train ...`` (NCCL on GPU,
gloo on CPU). Errors are one-line ``CLIError`` messages.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from dspark_viz.cli.common import (FRACTION, GAMMA, MAX_TOKENS, POSITIVE, SEED, Bound, CLIError,
                                   bounds, check_sample_ids, count, outputs, parse_layer_ids)
from dspark_viz.config import (MARKOV_TYPES, METHOD_PRESETS, TARGET_ALIASES, TARGET_PRESETS,
                               ConfigError)
from dspark_viz.data.cache import TargetCache
from dspark_viz.data.regenerate import read_samples
from dspark_viz.drafter.model import DrafterError
from dspark_viz.drafter.registry import resolve_drafter
from dspark_viz.errors import one_line
from dspark_viz.io import read_json_capped
from dspark_viz.targets import load_target
from dspark_viz.train.config import (CONF_ANCHORS, TRAIN_ONLY, TrainConfig, drafter_config,
                                     resolve_config)
from dspark_viz.train.distributed import close_distributed, init_distributed
from dspark_viz.train.losses import CONF_LABELS, VARIANTS
from dspark_viz.train.source import CacheSource, ConcatSource, OnlineSource, build_draft_vocab
from dspark_viz.train.trainer import train

# options whose default comes from the method / target preset when not given
PRESET_FIELDS = ("batch_size", "micro_batch", "num_anchors", "lr", "chunk_rows")
# options that override the method preset when given
METHOD_FIELDS = ("alpha_ce", "alpha_tv", "alpha_conf", "gamma_w", "markov_type")
# options that override the drafter's shape when given
SHAPE_FIELDS = ("draft_vocab_size", "markov_rank", "num_layers")
MAX_VOCAB_BYTES = 64 << 20  # a --draft-vocab file (a JSON list of ids)


def _cmd_train(a) -> int:
    if a.threads:
        torch.set_num_threads(a.threads)
    if (a.cache is None) == (a.samples is None):
        raise CLIError("give exactly one of --cache DIR or --samples FILE --online")
    if a.samples is not None and not a.online:
        raise CLIError("--samples trains online (the target runs on the fly); add --online")
    if a.train_only == "confidence" and a.init is None:
        raise CLIError("--train-only confidence fine-tunes a drafter's confidence head: add --init DIR|default")
    d = init_distributed()
    try:
        return _train_ranked(a, d)
    finally:
        close_distributed(d)


def _train_config(a, target) -> TrainConfig:
    kw = {k: getattr(a, k) for k in PRESET_FIELDS + METHOD_FIELDS if getattr(a, k) is not None}
    cfg = TrainConfig(method=a.method, target_preset=a.target_preset, steps=a.steps,
                      block_size=a.block_size, warmup_ratio=a.warmup_ratio,
                      min_lr_ratio=a.min_lr_ratio, weight_decay=a.weight_decay,
                      grad_clip=a.grad_clip, loss_variant=a.loss_variant, seed=a.seed,
                      log_every=a.log_every, ckpt_every=a.ckpt_every, keep_ckpts=a.keep_ckpts,
                      max_len=a.max_len, head_bf16=a.head_bf16, conf_label=a.conf_label,
                      train_only=a.train_only, conf_anchors=a.conf_anchors, **kw)
    return resolve_config(cfg, target)


def _init_drafter(a, target, cfg: TrainConfig, over: dict):
    """The ``--init`` drafter, checked against the run's method, block size and overrides."""
    if a.draft_vocab is not None and a.revocab:
        raise CLIError("--revocab builds the draft vocabulary from the data; drop --draft-vocab")
    try:
        init, _ = resolve_drafter(a.init, target, a.method)
    except (DrafterError, OSError, ValueError) as e:
        raise CLIError(f"--init {a.init}: {one_line(e)}") from None
    if init is None:
        raise CLIError("--init needs a drafter (a directory or 'default'), not 'none'")
    given = {k: v for k, v in over.items()
             if getattr(init.cfg, "target_layer_ids" if k == "layer_ids" else k) != v}
    if given:
        raise CLIError(f"--init {a.init} fixes the drafter's shape; drop "
                       + ", ".join("--" + k.replace("_", "-") for k in given))
    dcfg = init.cfg
    if (dcfg.markov_type != "none") != (cfg.method_value("markov_type") != "none") or \
            dcfg.block_size != cfg.block_size:
        raise CLIError(f"--init {a.init} is a {'DSpark' if dcfg.markov_type != 'none' else 'DFlash'} "
                       f"drafter with block size {dcfg.block_size}; it does not match --method "
                       f"{a.method} --block-size {cfg.block_size}")
    return init


def _source(a, target, dcfg, cfg: TrainConfig):
    if a.samples is not None:
        samples = read_samples(a.samples)
        if not samples:
            raise CLIError(f"--samples {a.samples} holds no sample")
        check_sample_ids(samples, target.vocab_size, f"--samples {a.samples}")  # before train_config.json
        return OnlineSource(samples, target, dcfg.target_layer_ids, cfg.max_len)
    caches = [TargetCache(c, verify=not a.no_verify,
                          expect={"target": target.name, "hidden_size": target.hidden_size,
                                  "layer_ids": list(dcfg.target_layer_ids)}) for c in a.cache]
    if dcfg.restricted and not all(c.has_lse for c in caches):
        print("note: a cache without the full-vocabulary lse (version 1): the full LM head "
              "runs for every target position — rebuild it with `prepare cache` for speed")
    return CacheSource(caches[0]) if len(caches) == 1 else ConcatSource([CacheSource(c) for c in caches])


def _draft_vocab(path: Path | None, vocab_size: int) -> list[int] | None:
    if path is None:
        return None
    ids = read_json_capped(path, MAX_VOCAB_BYTES, what="--draft-vocab", error=CLIError)
    if not (isinstance(ids, list) and ids and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size for i in ids)):
        raise CLIError(f"--draft-vocab {path}: expected a non-empty JSON list of token ids in "
                       f"[0, {vocab_size})")
    return ids


def _print_result(a, cfg: TrainConfig, res) -> None:
    last = res.history[-1] if res.history else {}
    print(f"trained {cfg.method} drafter: steps {res.resumed_from}→{res.steps} in {res.seconds:.1f} s "
          f"({res.blocks_per_s:.1f} anchor-blocks/s); drafter at {Path(a.out) / 'drafter'}")
    if last:
        keys = ["loss", "ce", "tv", "conf", "tau_prob", "tau_greedy"] + [f"accept@{k}" for k in range(1, 4)]
        print("last: " + json.dumps({k: round(last[k], 4) for k in keys if k in last}))
        print("(accept@k = mean 1 − ½‖p_d − p_t‖₁ at block position k; tau_prob = 1 + Σ_k Π_{i≤k} accept_i per block;"
              " tau_greedy: the same with 1[argmax p_d = argmax p_t], T = 0)")


def _train_ranked(a, d) -> int:
    dev = f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"
    target = load_target(a.target, device=dev)
    cfg = _train_config(a, target)
    layers = parse_layer_ids(a.layer_ids)
    over = ({"layer_ids": layers} if layers else {}) | {
        k: getattr(a, k) for k in SHAPE_FIELDS if getattr(a, k) is not None}
    try:
        dcfg = drafter_config(cfg, target, **over)
    except ConfigError as e:
        raise CLIError(one_line(e)) from None
    init = None
    if a.init is not None:
        init = _init_drafter(a, target, cfg, over)
        dcfg = init.cfg  # the run's drafter is the --init one
    if a.revocab and (init is None or not dcfg.restricted):
        raise CLIError("--revocab re-indexes an --init drafter with a restricted draft vocabulary")
    vocab = _draft_vocab(a.draft_vocab, target.vocab_size)
    source = _source(a, target, dcfg, cfg)
    if a.revocab:
        vocab = build_draft_vocab(source, dcfg.draft_vocab_size, target)
    try:
        res = train(target, source, a.out, cfg, drafter_cfg=dcfg, dist_info=d,
                    progress=not a.no_progress, draft_vocab=vocab,
                    deadline=(time.time() + 60 * a.max_minutes) if a.max_minutes else None,
                    init=init)
    except ValueError as e:  # e.g. a draft vocabulary of the wrong size
        raise CLIError(one_line(e)) from None
    if d.main:
        _print_result(a, cfg, res)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a DSpark / DFlash drafter (resumable, torchrun-ready)",
                       description="Train a drafter from a target cache or online. Resumes from the "
                                   "latest checkpoint in --out automatically.")
    p.add_argument("--cache", type=Path, action="append", default=None,
                   help="target cache directory (repeatable: caches written in parallel)")
    p.add_argument("--samples", type=Path, default=None, help="regenerated JSONL (with --online)")
    p.add_argument("--online", action="store_true", help="run the target on the fly (no cache)")
    p.add_argument("--target", default="embedded", help="target (HF id, path, embedded, tiny:qwen3)")
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, metrics, drafter)")
    p.add_argument("--method", default="dspark", choices=tuple(METHOD_PRESETS),
                   help="dspark, or the dflash ablation (no Markov head, no confidence head, CE only)")
    p.add_argument("--target-preset", default="auto",
                   help=" | ".join(["auto"] + [n + "".join(f" ({k})" for k, v in TARGET_ALIASES.items()
                                                          if v == n) for n in TARGET_PRESETS]))
    p.add_argument("--layer-ids", default=None, help="override the tapped target layers")
    p.add_argument("--markov-type", default=None, choices=MARKOV_TYPES)
    p.add_argument("--num-layers", type=int, default=None, help="draft backbone layers (preset: 2)")
    p.add_argument("--markov-rank", type=int, default=None, help="Markov head rank r")
    p.add_argument("--draft-vocab-size", type=int, default=None,
                   help="restricted draft vocabulary Vd (0 = whole target vocabulary); built "
                        "from the training data's token frequencies unless --draft-vocab")
    p.add_argument("--draft-vocab", type=Path, default=None,
                   help="JSON list of target ids (size Vd); with --init it replaces the drafter's "
                        "vocabulary, its Markov rows following their ids")
    p.add_argument("--revocab", action="store_true",
                   help="with --init: rebuild the draft vocabulary from this run's training data "
                        "(most frequent answer tokens) and re-index the drafter's Markov rows")
    p.add_argument("--init", default=None,
                   help="start from this drafter's weights: a drafter directory, or 'default' for "
                        "the shipped one of --method (fine-tuning; its configuration is kept)")
    _add_optimisation_args(p)
    bounds(p, num_layers=count(1, 256), markov_rank=count(1, 1 << 16),
           draft_vocab_size=count(0, 1 << 24), steps=count(1, 10**9), batch_size=count(1, 1 << 20),
           micro_batch=count(1, 1 << 20), num_anchors=count(1, 1 << 16), block_size=GAMMA,
           lr=Bound(0.0, 10.0, lo_open=True), warmup_ratio=FRACTION, min_lr_ratio=Bound(0.0, 1.0),
           weight_decay=Bound(0.0, 100.0), grad_clip=Bound(0.0, 1e6), gamma_w=POSITIVE,
           alpha_ce=Bound(0.0, 1e6), alpha_tv=Bound(0.0, 1e6), alpha_conf=Bound(0.0, 1e6),
           chunk_rows=count(1, 1 << 20), max_len=count(2, MAX_TOKENS), max_minutes=POSITIVE,
           seed=SEED, log_every=count(1), ckpt_every=count(1), keep_ckpts=count(0, 10**6),
           threads=count(1, 4096))
    outputs(p, dirs=("out",))
    p.set_defaults(func=_cmd_train)


def _add_optimisation_args(p) -> None:
    """Schedule, loss, confidence-head and run-keeping options of ``train``."""
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step, all ranks")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per forward per rank")
    p.add_argument("--num-anchors", type=int, default=None, help="anchors sampled per sequence")
    p.add_argument("--block-size", type=int, default=7)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup-ratio", type=float, default=0.04)
    p.add_argument("--min-lr-ratio", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--loss-variant", default="deepspec", choices=VARIANTS,
                   help="deepspec: γ_w = 4, weighted means; paper: γ_w = γ, per-block sums")
    p.add_argument("--gamma-w", type=float, default=None)
    p.add_argument("--alpha-ce", type=float, default=None)
    p.add_argument("--alpha-tv", type=float, default=None)
    p.add_argument("--alpha-conf", type=float, default=None)
    p.add_argument("--conf-label", default="tv", choices=CONF_LABELS,
                   help="confidence-head label: tv = 1 − ½‖p_d − p_t‖₁ (the paper's; acceptance when "
                        "sampling at T = 1), greedy = 1[argmax p_d = argmax p_t] (acceptance at T = 0)")
    p.add_argument("--train-only", default=None, choices=TRAIN_ONLY,
                   help="train the confidence head alone (needs --init; the drafts stay unchanged)")
    p.add_argument("--conf-anchors", default="uniform", choices=CONF_ANCHORS,
                   help="with --train-only confidence --conf-label greedy: rounds = train the head "
                        "on the anchors where fixed-γ T = 0 decoding starts its rounds (walked once "
                        "from teacher-forced drafts) instead of uniform ones — where c_k is used")
    p.add_argument("--chunk-rows", type=int, default=None, help="LM-head rows per chunk")
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time guard: past it, checkpoint and save the drafter as it is")
    p.add_argument("--head-bf16", action="store_true",
                   help="drafter-side LM-head products in bf16 (the target's p_t stays float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--keep-ckpts", type=int, default=2)
    p.add_argument("--no-verify", action="store_true", help="skip the cache checksum pass")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true")

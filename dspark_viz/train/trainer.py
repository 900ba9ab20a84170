"""Drafter training: the optimisation loop, from a fresh or ``--init`` drafter to a saved one.

Scope: ``train`` a ``DSparkDrafter`` against a frozen target from a target cache or online
(``source.py``). One optimizer step takes ``batch_size`` sequences (global, across ranks),
samples ``num_anchors`` anchors in each (``anchors.py``), runs the packed block forward in
micro-batches (``forward.py``), then AdamW with warmup + cosine (``config.lr_at``) and gradient
clipping. Data order and anchors depend only on (seed, step, sample), so a resumed run and an
N-rank run see exactly what a 1-rank uninterrupted run sees. Data parallelism
(``distributed.py``) sums gradients with one all-reduce per step; the loss is normalised by the
global denominator, so N ranks compute the 1-rank gradient. Checkpoints (``checkpoint.py``) are
resumed automatically; metrics go to ``<out>/metrics.jsonl`` (``metrics_log.py``). Also here:
``evaluate`` (metrics on fixed anchors, no gradient) and ``round_anchors`` (the anchors of
fixed-γ T = 0 decoding, for training the confidence head where it is used).
A restricted draft vocabulary (``DrafterConfig.draft_vocab_size`` > 0) is frequency-ranked from
the training data (``source.build_draft_vocab``) unless given.

This module also re-exports the names callers used when training was one module
(``TrainConfig``, ``TrainError``, the sources, ``block_losses``, …): see ``__all__``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from dspark_viz.config import DrafterConfig
from dspark_viz.drafter.model import DSparkDrafter, check_compatible
from dspark_viz.io import write_json_atomic
from dspark_viz.train.anchors import anchor_candidates, block_targets, pack, sample_anchors, walk_anchors
from dspark_viz.train.checkpoint import clean_run_dir, resume, save_checkpoint, save_drafter
from dspark_viz.train.config import (TrainConfig, TrainError, drafter_config, lr_at,
                                     resolve_config, target_preset_for)
from dspark_viz.train.distributed import (Dist, all_reduce, barrier, broadcast_parameters,
                                          close_distributed, init_distributed)
from dspark_viz.train.forward import StepSums, block_losses, metrics_from
from dspark_viz.train.losses import LossConfig, denominator, position_weights
from dspark_viz.train.metrics_log import MetricsLog
from dspark_viz.train.source import (CacheSource, ConcatSource, DataOrder, OnlineSource, Source,
                                     anchor_gen, build_draft_vocab)

__all__ = ["TrainResult", "train", "evaluate", "round_anchors",
           # re-exported from the modules training was split into
           "TrainConfig", "TrainError", "resolve_config", "drafter_config", "lr_at",
           "target_preset_for", "Source", "CacheSource", "ConcatSource", "OnlineSource",
           "build_draft_vocab", "StepSums", "block_losses", "metrics_from", "Dist",
           "init_distributed", "close_distributed"]


@dataclass
class TrainResult:
    out: Path
    steps: int
    resumed_from: int
    history: list[dict]
    seconds: float
    blocks_per_s: float
    drafter: DSparkDrafter


@dataclass(frozen=True)
class _Run:
    """What every step of one run shares."""

    target: object
    source: Source
    out: Path
    cfg: TrainConfig
    dcfg: DrafterConfig
    d: Dist
    drafter: DSparkDrafter
    opt: torch.optim.Optimizer
    params: list
    loss: LossConfig
    weights: torch.Tensor  # [γ] position weights w_k
    chunk: int  # LM-head rows per chunk
    among: list | None  # per sequence, the positions anchors are drawn from (None: all)


# ------------------------------------------------------------------------------ set-up
def _take_init(drafter: DSparkDrafter, init: DSparkDrafter, dcfg: DrafterConfig, draft_vocab) -> None:
    """Copy an ``--init`` drafter (weights, draft vocabulary, confidence label) into ``drafter``."""
    if init.cfg != dcfg:
        diff = [f.name for f in fields(DrafterConfig) if getattr(init.cfg, f.name) != getattr(dcfg, f.name)]
        raise TrainError(f"--init drafter differs from the run's drafter in {', '.join(diff)} "
                         f"({', '.join(f'{k}={getattr(init.cfg, k)!r} vs {getattr(dcfg, k)!r}' for k in diff[:3])})")
    if draft_vocab is not None and not dcfg.restricted:
        raise TrainError("a draft vocabulary needs a restricted drafter (draft_vocab_size > 0)")
    drafter.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in init.state_dict().items()})
    if dcfg.restricted:
        drafter.set_draft_vocab(init.draft_vocab.detach().clone().cpu())
        if draft_vocab is not None:  # re-vocabulary: the Markov rows follow their ids
            drafter.remap_draft_vocab(torch.tensor(list(draft_vocab)))
    drafter.conf_label = getattr(init, "conf_label", "tv")


def _initial_drafter(cfg: TrainConfig, dcfg: DrafterConfig, target, source: Source,
                     init: DSparkDrafter | None, draft_vocab) -> DSparkDrafter:
    """The drafter step 0 starts from (seeded fresh weights, or ``init``'s), on the target's
    device, in train mode, with only the parameters the run trains requiring gradients."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        drafter = DSparkDrafter(dcfg)
    if init is not None:
        _take_init(drafter, init, dcfg, draft_vocab)
    elif dcfg.restricted:
        vocab = list(draft_vocab) if draft_vocab is not None else build_draft_vocab(
            source, dcfg.draft_vocab_size, target)
        drafter.set_draft_vocab(torch.tensor(vocab))
    drafter = drafter.to(target.device).train()
    if cfg.train_only == "confidence":  # the rest stays as initialised (fine-tuning the head)
        for p in drafter.parameters():
            p.requires_grad_(False)
        for p in drafter.confidence.parameters():
            p.requires_grad_(True)
    return drafter


def _resume(out: Path, cfg: TrainConfig, drafter: DSparkDrafter, opt, d: Dist) -> int:
    """The step to start from: the newest readable checkpoint's (loaded; an unreadable newer one
    is skipped with a one-line warning on stderr), else 0."""
    def warn(msg: str) -> None:
        if d.main:
            print(msg, file=sys.stderr, flush=True)
    return resume(out, cfg, drafter, opt, warn=warn)


def _conf_round_anchors(drafter, target, source: Source, cfg: TrainConfig, chunk: int, d: Dist,
                        progress: bool) -> list | None:
    """With ``conf_anchors='rounds'``: per sequence, the round starts of T = 0 decoding."""
    if cfg.conf_anchors != "rounds":
        return None
    t_w = time.perf_counter()
    among = round_anchors(drafter, target, source, chunk_rows=chunk, progress=progress and d.main)
    if d.main:
        n_w = sum(int(a.numel()) for a in among)
        print(f"round anchors: {n_w} over {len(source)} sequences "
              f"({time.perf_counter() - t_w:.0f} s)", flush=True)
    return among


def _set_up(target, source: Source, out: Path, cfg: TrainConfig, dcfg: DrafterConfig, d: Dist,
            init, draft_vocab, progress: bool) -> tuple[_Run, int]:
    """Build (or resume) the run: drafter, optimizer, run config file; returns it and its start step."""
    check_compatible(dcfg, target)
    drafter = _initial_drafter(cfg, dcfg, target, source, init, draft_vocab)
    params = [p for p in drafter.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if d.main:  # what a killed run left: temporaries, half-written step directories
        clean_run_dir(out)
    barrier(d)
    start = _resume(out, cfg, drafter, opt, d)
    broadcast_parameters(drafter, d)  # every rank starts from rank 0's weights
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", {"train": cfg.to_dict(), "drafter": dcfg.to_dict(),
                                                      "world_size": d.world}, indent=1)
    loss = cfg.loss_config()
    g = dcfg.block_size
    chunk = cfg.chunk_rows or 128
    among = _conf_round_anchors(drafter, target, source, cfg, chunk, d, progress)
    return _Run(target=target, source=source, out=out, cfg=cfg, dcfg=dcfg, d=d, drafter=drafter,
                opt=opt, params=params, loss=loss, weights=position_weights(g, loss.decay(g)),
                chunk=chunk, among=among), start


# ------------------------------------------------------------------------------ one step
def _step_plan(source: Source, order: DataOrder, step: int, cfg: TrainConfig, d: Dist,
               among: list[torch.Tensor] | None = None):
    """This rank's share of global step ``step``: [(dataset index, anchors, ids, loss mask)].
    ``among``: per sequence, the positions to draw anchors from."""
    per = cfg.batch_size // d.world
    plan = []
    for i in range(d.rank * per, (d.rank + 1) * per):
        idx = order(step * cfg.batch_size + i)
        ids, m = source.tokens(idx)
        a = sample_anchors(m, cfg.num_anchors, anchor_gen(cfg.seed, step, i),
                           among[idx] if among is not None else None)
        plan.append((idx, a, ids, m))
    return plan


def _global_denominator(run: _Run, plan) -> torch.Tensor:
    """Σ w (or #blocks) over every rank's blocks of the step — known before any forward."""
    g = run.dcfg.block_size
    den_local = torch.zeros((), dtype=torch.float64)
    for idx, a, ids, m in plan:
        if a.numel():
            den_local += denominator(block_targets(ids, m, a, g)[2], run.weights, run.loss.variant).double()
    return all_reduce(den_local.clone(), run.d).float()


def _sync_gradients(params: list, d: Dist) -> torch.Tensor:
    """One all-reduce of all gradients (summed: the loss is already globally normalised);
    returns the flat summed gradient."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = all_reduce(torch.cat([gg.reshape(-1).float() for gg in grads]), d)
    off = 0
    for p, gg in zip(params, grads):
        p.grad = flat[off: off + gg.numel()].view_as(p).to(p.dtype)
        off += gg.numel()
    return flat


def _optimizer_step(run: _Run, order: DataOrder, step: int) -> tuple[list[str], torch.Tensor, float]:
    """Global step ``step``: forward/backward this rank's share, all-reduce, clip, AdamW.
    Returns the all-reduced metric sums (keys, vector) and the gradient norm."""
    cfg, g = run.cfg, run.dcfg.block_size
    for gr in run.opt.param_groups:
        gr["lr"] = lr_at(step, cfg)
    plan = _step_plan(run.source, order, step, cfg, run.d, run.among)
    den = _global_denominator(run, plan)
    sums = StepSums(g)
    run.opt.zero_grad(set_to_none=True)
    if float(den) > 0:
        for b0 in range(0, len(plan), cfg.micro_batch):
            part = plan[b0: b0 + cfg.micro_batch]
            items = [run.source.item(idx) for idx, *_ in part]
            batch = pack(items, [a for _, a, *_ in part], gamma=g, mask_token_id=run.dcfg.mask_token_id)
            block_losses(run.drafter, run.target, batch, loss=run.loss, weights=run.weights, den=den,
                         chunk_rows=run.chunk, sums=sums, head_bf16=cfg.head_bf16,
                         only_conf=cfg.train_only == "confidence")
    flat = _sync_gradients(run.params, run.d)
    gnorm = float(torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)) if cfg.grad_clip > 0 \
        else float(torch.linalg.vector_norm(flat))
    run.opt.step()
    keys, vec = sums.vector()
    return keys, all_reduce(vec.clone(), run.d), gnorm


# ------------------------------------------------------------------------------ the loop
class _StepLog:
    """The window of sums between logged steps, the logged history, the metrics file, the bar."""

    def __init__(self, run: _Run, start: int, progress: bool) -> None:
        self.run, self.history, self.blocks_total = run, [], 0
        self.log = MetricsLog(run.out, start, run.d.main)
        self.bar = tqdm(total=run.cfg.steps, initial=start, desc=f"train {run.cfg.method}",
                        unit="step", dynamic_ncols=True) if progress and run.d.main else None
        self.window, self.t_win = None, time.perf_counter()

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}

    def add(self, step: int, keys: list[str], vec: torch.Tensor, gnorm: float) -> None:
        cfg = self.run.cfg
        self.blocks_total += int(vec[keys.index("blocks")]) if "blocks" in keys else 0
        self.window = vec if self.window is None or self.window.shape != vec.shape else self.window + vec
        s1 = step + 1
        if s1 % cfg.log_every != 0 and s1 != cfg.steps:
            return
        dt = time.perf_counter() - self.t_win
        m = metrics_from(keys, self.window, self.run.dcfg.block_size, self.run.loss)
        rec = {"step": s1, "lr": lr_at(step, cfg), "grad_norm": gnorm, **m,
               "blocks_per_s": (m.get("blocks", 0) / dt) if dt > 0 else 0.0, "time": time.time()}
        self.history.append(rec)
        self.log.write(rec)
        self.window, self.t_win = None, time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{m.get('loss', float('nan')):.3f}",
                                 acc1=f"{m.get('accept@1', 0):.2f}", tau=f"{m.get('tau_prob', 0):.2f}")

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()


def _checkpoint(run: _Run, step: int, metrics: dict) -> None:
    save_checkpoint(run.out, step, run.drafter, run.opt, run.cfg, metrics, run.cfg.keep_ckpts)


def _past(deadline: float, d: Dist) -> bool:
    """Whether any rank is past the deadline (all ranks agree)."""
    return float(all_reduce(torch.tensor(float(time.time() > deadline)), d)) > 0


def _loop(run: _Run, start: int, end: int, progress: bool,
          deadline: float | None) -> tuple[int, int | None, _StepLog]:
    """Steps start..end-1; returns (steps done, step stopped at by the deadline or None, log)."""
    cfg, d = run.cfg, run.d
    order = DataOrder(len(run.source), cfg.seed)
    slog = _StepLog(run, start, progress)
    stopped = None
    try:
        for step in range(start, end):
            slog.add(step, *_optimizer_step(run, order, step))
            s1 = step + 1
            if (s1 % cfg.ckpt_every == 0 or s1 == cfg.steps) and d.main:
                _checkpoint(run, s1, slog.last)
            barrier(d)
            slog.tick()
            if deadline is not None and s1 < end and _past(deadline, d):
                stopped = s1
                if d.main:
                    if s1 % cfg.ckpt_every != 0:
                        _checkpoint(run, s1, slog.last)
                    slog.log.write({"step": s1, "event": "stopped_at_deadline", "time": time.time()})
                break
    finally:
        slog.close()
    return (end if stopped is None else stopped), stopped, slog


def _save_drafter(run: _Run, done: int, stopped: int | None) -> None:
    """Save the trained drafter to ``<out>/drafter`` (with the step and how the run ended)."""
    cfg, drafter = run.cfg, run.drafter
    drafter.eval()
    if drafter.confidence is not None and (cfg.train_only == "confidence" or cfg.method_value("alpha_conf") > 0):
        drafter.conf_label = cfg.conf_label
    extra = {"step": str(done)} | ({"stopped_at_deadline": "true", "planned_steps": str(cfg.steps)}
                                   if stopped is not None else {}) \
        | ({"conf_anchors": cfg.conf_anchors} if cfg.conf_anchors != "uniform" else {})
    save_drafter(run.out, drafter, extra)


def train(target, source: Source, out_dir: str | os.PathLike, cfg: TrainConfig, *,
          drafter_cfg: DrafterConfig | None = None, dist_info: Dist | None = None,
          progress: bool = True, stop_after: int | None = None,
          draft_vocab=None, deadline: float | None = None,
          init: DSparkDrafter | None = None) -> TrainResult:
    """Train (or resume) a drafter; returns the history of logged metrics.

    ``init``: start from this drafter's weights (fine-tuning; its draft vocabulary included,
    unless ``draft_vocab`` replaces it: ``DSparkDrafter.remap_draft_vocab``) instead of a fresh
    initialisation; its configuration must equal the run's. A run that resumes from a
    checkpoint ignores it.

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
    if cfg.train_only == "confidence" and init is None:
        raise TrainError("training the confidence head alone needs an --init drafter")
    dcfg = drafter_cfg or drafter_config(cfg, target)
    run, start = _set_up(target, source, Path(out_dir), cfg, dcfg, d, init, draft_vocab, progress)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    t_run = time.perf_counter()
    done, stopped, slog = _loop(run, start, end, progress, deadline)
    if (done == cfg.steps or stopped is not None) and d.main:
        _save_drafter(run, done, stopped)
    secs = time.perf_counter() - t_run
    return TrainResult(out=run.out, steps=done, resumed_from=start, history=slog.history, seconds=secs,
                       blocks_per_s=slog.blocks_total / secs if secs > 0 else 0.0,
                       drafter=run.drafter.eval())


# ------------------------------------------------------------------------------ no gradient
@torch.no_grad()
def round_anchors(drafter: DSparkDrafter, target, source: Source, *, chunk_anchors: int = 32,
                  chunk_rows: int = 1024, progress: bool = False) -> list[torch.Tensor]:
    """Per sequence, the anchors of fixed-γ T = 0 decoding (:func:`anchors.walk_anchors`), from
    teacher-forced matches of the drafter's drafts at every candidate anchor. The drafts must
    not change during training (confidence head alone), so the walk is computed once."""
    g = drafter.cfg.block_size
    loss = LossConfig(conf_label="greedy")
    weights = position_weights(g, loss.decay(g))
    was = drafter.training
    drafter.eval()
    out = []
    it = range(len(source))
    if progress:
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

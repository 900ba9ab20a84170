"""Capacity curves SPS(B): engine steps per second at B tokens in one verify batch.

Scope: the ``CapacityCurve`` value (frozen, JSON load/save with strict validation), three
sources of curves — profiling the real target on the current device (``profile_target``),
roofline presets for GPU serving (A100/H100/H200 × Qwen3-4B/8B/14B) and jagged presets with
step-wise cliffs (CUDA-graph buckets, tile quantization) — and the lookups ``get_curve`` and
``resolve_capacity`` (the one place a curve is found by name or path; ``DEFAULT_CAPACITY`` when
none is named). Not here: scheduling (``dspark_viz.decoding.scheduler``, which receives curve
objects) or simulation (``.simulator``).

Model of one step (roofline curves; times in ms; B = verify tokens, R = concurrent requests,
C = context tokens per request):
    t(B) = overhead + max( (weights + R·C·kv_bytes_per_token) / (bandwidth·mem_eff),
                           B̂·(2·params + 4·layers·heads·head_dim·C) / (peak·flop_eff) )
with B̂ = B rounded up to the compute tile and, for jagged curves, first padded up to the
next CUDA-graph bucket. The KV-read term grows with context length and concurrency: a curve
is tabulated for one (R, C) and ``for_load(R)`` / ``with_context(C)`` rebind it.
Profiled curves are tables of measured step times, interpolated linearly in time (or as a
step function for ``interp="step"``) and extrapolated linearly past the last point.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dspark_viz.config import ROOFLINE_DEVICES, ROOFLINE_MODELS
from dspark_viz.drafter.model import ContextCache
from dspark_viz.errors import UserError
from dspark_viz.io import read_json_capped, write_json_atomic

DEFAULT_CAPACITY = "h200-qwen3-8b"  # the curve of a curve policy when none is named
CAPACITY_FORMAT = "dspark-viz-capacity"
CAPACITY_VERSION = 1
MAX_CAPACITY_BYTES = 4 * 1024 * 1024
KINDS = ("profiled", "roofline", "jagged", "table")
MAX_INT = 1 << 40  # bound of every integer field (batch sizes, layers, context, buckets, …)
MAX_POINTS = 1 << 16  # tabulated points / buckets of one curve


def _is_int(v, lo: int = 1, hi: int = MAX_INT) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi


def _is_number(v) -> bool:
    """A finite real that is not a bool (an int too large for a float is not finite)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


class CapacityError(UserError):
    """A capacity curve is malformed or cannot be built; the message is one line."""


# ----------------------------------------------------------------------------- hardware model
@dataclass(frozen=True)
class Roofline:
    """Parameters of the analytic step-time model (see module docstring)."""

    device: str
    bandwidth_tbs: float  # HBM bandwidth, TB/s
    peak_tflops: float  # dense bf16 peak, TFLOP/s
    model: str
    params_b: float  # parameters, billions
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mem_eff: float = 0.8  # achievable fraction of the bandwidth
    flop_eff: float = 0.8  # achievable fraction of the peak (0.8 × 989 ≈ 790 TFLOP/s on H100/H200)
    bytes_per_param: float = 2.0  # bf16 weights
    kv_bytes: float = 2.0  # bf16 KV cache
    overhead_ms: float = 0.4  # launch, sampling, host work per step
    tile: int = 1  # compute quantization (tokens); 1 = none
    buckets: tuple[int, ...] = ()  # CUDA-graph batch buckets; B is padded up to the next one

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not isinstance(self.model, str):
            raise CapacityError("roofline.device and roofline.model must be strings")
        bk = self.buckets
        if not isinstance(bk, (list, tuple)) or len(bk) > MAX_POINTS or not all(_is_int(b) for b in bk):
            raise CapacityError(f"roofline.buckets must be a list of integers in [1, {MAX_INT}]")
        object.__setattr__(self, "buckets", tuple(int(b) for b in bk))
        for name in ("bandwidth_tbs", "peak_tflops", "params_b", "mem_eff", "flop_eff",
                     "bytes_per_param", "kv_bytes"):
            v = getattr(self, name)
            if not (_is_number(v) and v > 0):
                raise CapacityError(f"roofline.{name} must be a positive number, got {v!r:.40}")
        for name in ("layers", "heads", "kv_heads", "head_dim", "tile"):
            v = getattr(self, name)
            if not _is_int(v):
                raise CapacityError(f"roofline.{name} must be an integer in [1, {MAX_INT}], got {v!r:.40}")
        if not (_is_number(self.overhead_ms) and self.overhead_ms >= 0):
            raise CapacityError(f"roofline.overhead_ms must be ≥ 0, got {self.overhead_ms!r:.40}")
        if self.mem_eff > 1 or self.flop_eff > 1:
            raise CapacityError("roofline efficiencies must be in (0, 1]")
        if any(b < 1 for b in self.buckets) or list(self.buckets) != sorted(set(self.buckets)):
            raise CapacityError("roofline.buckets must be strictly increasing positive integers")

    @property
    def kv_bytes_per_token(self) -> float:
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes

    def padded(self, B: np.ndarray) -> np.ndarray:
        """B [n] → tokens actually computed: next bucket (past the last: its multiples), then tile."""
        B = np.asarray(B, dtype=np.float64)
        if self.buckets:
            bk = np.asarray(self.buckets, dtype=np.float64)
            i = np.searchsorted(bk, B, side="left")
            last = bk[-1]
            over = np.ceil(B / last) * last
            B = np.where(i < len(bk), bk[np.minimum(i, len(bk) - 1)], over)
        return np.ceil(B / self.tile) * self.tile

    def step_ms(self, B: np.ndarray, requests: int, context_len: int) -> np.ndarray:
        Bp = self.padded(B)
        mem = (self.params_b * 1e9 * self.bytes_per_param
               + requests * context_len * self.kv_bytes_per_token)
        t_mem = mem / (self.bandwidth_tbs * 1e12 * self.mem_eff) * 1e3
        flops_tok = 2.0 * self.params_b * 1e9 + 4.0 * self.layers * self.heads * self.head_dim * context_len
        t_cmp = Bp * flops_tok / (self.peak_tflops * 1e12 * self.flop_eff) * 1e3
        return self.overhead_ms + np.maximum(t_mem, t_cmp)


# ----------------------------------------------------------------------------- the curve
@dataclass(frozen=True)
class CapacityCurve:
    """SPS(B) for B ≥ 1 verify tokens; a table of measured points or an analytic roofline."""

    name: str
    kind: str  # "profiled" | "roofline" | "jagged" | "table"
    batch: tuple[int, ...] = ()  # B of the tabulated points (strictly increasing, ≥ 1)
    step_ms: tuple[float, ...] = ()  # measured step time at each B (ms)
    interp: str = "linear"  # tables: "linear" (in time) or "step" (pad up to the next point)
    context_len: int = 0  # context tokens per request the curve is bound to
    requests: int = 1  # concurrency R the KV term is bound to (roofline curves)
    roofline: Roofline | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch", tuple(self.batch))
        if not isinstance(self.name, str) or not self.name.strip():
            raise CapacityError("capacity curve needs a non-empty name")
        if not all(_is_number(x) for x in self.step_ms):
            raise CapacityError(f"capacity {self.name}: step times must be finite and > 0 ms")
        object.__setattr__(self, "step_ms", tuple(float(x) for x in self.step_ms))
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise CapacityError(f"capacity kind must be one of {KINDS}, got {self.kind!r:.40}")
        if not isinstance(self.interp, str) or self.interp not in ("linear", "step"):
            raise CapacityError(f"capacity interp must be 'linear' or 'step', got {self.interp!r:.40}")
        if len(self.batch) > MAX_POINTS:
            raise CapacityError(f"capacity {self.name}: more than {MAX_POINTS} points")
        if self.roofline is not None and not isinstance(self.roofline, Roofline):
            raise CapacityError(f"capacity {self.name}: roofline must be a Roofline")
        if not isinstance(self.meta, dict):
            raise CapacityError(f"capacity {self.name}: meta must be a dict")
        if len(self.batch) != len(self.step_ms):
            raise CapacityError(f"capacity {self.name}: {len(self.batch)} batch sizes but "
                                f"{len(self.step_ms)} step times")
        if not all(_is_int(b) for b in self.batch):
            raise CapacityError(f"capacity {self.name}: batch sizes must be integers ≥ 1 (≤ {MAX_INT})")
        if list(self.batch) != sorted(set(self.batch)):
            raise CapacityError(f"capacity {self.name}: batch sizes must be strictly increasing")
        if any(not (math.isfinite(t) and t > 0) for t in self.step_ms):
            raise CapacityError(f"capacity {self.name}: step times must be finite and > 0 ms")
        if self.roofline is None and not self.batch:
            raise CapacityError(f"capacity {self.name}: a table curve needs at least one point")
        if not _is_int(self.requests):
            raise CapacityError(f"capacity {self.name}: requests must be an integer in [1, {MAX_INT}]")
        if not _is_int(self.context_len, 0):
            raise CapacityError(f"capacity {self.name}: context_len must be an integer in [0, {MAX_INT}]")

    # ------------------------------------------------------------------ evaluation
    def step_time_ms(self, B: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Step time (ms) at verify batch B (array in, array out)."""
        B = np.maximum(np.asarray(B, dtype=np.float64), 1.0)
        if self.roofline is not None:
            return self.roofline.step_ms(B, self.requests, self.context_len)
        bx = np.asarray(self.batch, dtype=np.float64)
        ty = np.asarray(self.step_ms, dtype=np.float64)
        slope = (ty[-1] - ty[-2]) / (bx[-1] - bx[-2]) if len(bx) >= 2 else 0.0
        slope = max(slope, 0.0)  # past the last point time never decreases
        beyond = ty[-1] + slope * (B - bx[-1])
        if self.interp == "step":
            i = np.searchsorted(bx, B, side="left")
            inside = ty[np.minimum(i, len(bx) - 1)]
        else:
            inside = np.interp(B, bx, ty)  # clamps below the first point
        return np.where(B > bx[-1], beyond, inside)

    def sps_many(self, B: np.ndarray | Sequence[int]) -> np.ndarray:
        """SPS at each B [n] (steps per second)."""
        return 1e3 / self.step_time_ms(B)

    def sps(self, B: int) -> float:
        """Engine steps per second with B tokens in the verify batch (B ≥ 1)."""
        if B < 1:
            raise CapacityError(f"SPS(B) needs B ≥ 1, got {B}")
        return float(self.sps_many(np.array([B]))[0])

    # ------------------------------------------------------------------ rebinding
    def for_load(self, requests: int) -> "CapacityCurve":
        """The same hardware with the KV-read term bound to R concurrent requests."""
        if self.roofline is None or requests == self.requests:
            return self
        return dataclasses.replace(self, requests=max(1, int(requests)))

    def with_context(self, context_len: int) -> "CapacityCurve":
        if self.roofline is None or context_len == self.context_len:
            return self
        return dataclasses.replace(self, context_len=int(context_len))

    @property
    def label(self) -> str:
        if self.roofline is not None:
            return f"{self.name} (R={self.requests}, ctx={self.context_len})"
        return self.name

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {"format": CAPACITY_FORMAT, "version": CAPACITY_VERSION, "name": self.name,
                "kind": self.kind, "batch": list(self.batch), "step_ms": list(self.step_ms),
                "interp": self.interp, "context_len": self.context_len,
                "requests": self.requests,
                "roofline": None if self.roofline is None else {
                    **dataclasses.asdict(self.roofline), "buckets": list(self.roofline.buckets)},
                "meta": dict(self.meta)}

    def to_json(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: object, where: str = "capacity") -> "CapacityCurve":
        if not isinstance(d, dict):
            raise CapacityError(f"{where}: expected a JSON object")
        if d.get("format") != CAPACITY_FORMAT:
            raise CapacityError(f"{where}: not a capacity curve (format {d.get('format')!r})")
        if d.get("version") != CAPACITY_VERSION:
            raise CapacityError(f"{where}: version {d.get('version')!r} not supported")
        known = {"format", "version", "name", "kind", "batch", "step_ms", "interp",
                 "context_len", "requests", "roofline", "meta"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CapacityError(f"{where}: unknown field {unknown[0]!r}")
        for k in ("name", "kind", "batch", "step_ms"):
            if k not in d:
                raise CapacityError(f"{where}: missing field {k!r}")
        if not isinstance(d["batch"], list) or not isinstance(d["step_ms"], list):
            raise CapacityError(f"{where}: batch and step_ms must be lists")
        for x in d["step_ms"]:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise CapacityError(f"{where}: step_ms must hold numbers, got {x!r:.40}")
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise CapacityError(f"{where}: meta must be an object")
        roof = d.get("roofline")
        if roof is not None:
            if not isinstance(roof, dict):
                raise CapacityError(f"{where}: roofline must be an object or null")
            names = {f.name for f in dataclasses.fields(Roofline)}
            bad = sorted(set(roof) - names)
            if bad:
                raise CapacityError(f"{where}: unknown roofline field {bad[0]!r}")
            try:
                roof = Roofline(**{**roof, "buckets": roof.get("buckets", ())})
            except CapacityError as e:
                raise CapacityError(f"{where}: {e}") from None
            except TypeError as e:
                raise CapacityError(f"{where}: roofline: {e}") from None
        try:
            return cls(name=d["name"], kind=d["kind"], batch=tuple(d["batch"]),
                       step_ms=tuple(d["step_ms"]), interp=d.get("interp", "linear"),
                       context_len=d.get("context_len", 0), requests=d.get("requests", 1),
                       roofline=roof, meta=meta)
        except CapacityError as e:
            raise CapacityError(f"{where}: {e}") from None
        except TypeError as e:  # non-string name etc.
            raise CapacityError(f"{where}: {e}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "CapacityCurve":
        d = read_json_capped(path, MAX_CAPACITY_BYTES, what="capacity file", error=CapacityError)
        return cls.from_dict(d, where=f"capacity file {path}")


# ----------------------------------------------------------------------------- presets
# CUDA-graph capture sizes of a typical serving engine (1, 2, 4, 8, then every 8 up to 256,
# every 32 up to 512) and a 64-token GEMM tile: the step-wise cliffs of the jagged presets.
GRAPH_BUCKETS = (1, 2, 4) + tuple(range(8, 257, 8)) + tuple(range(288, 513, 32))
JAGGED_TILE = 64
DEFAULT_CONTEXT = 2048


def preset_names() -> list[str]:
    out = []
    for dv in ROOFLINE_DEVICES:
        for m in ROOFLINE_MODELS:
            out += [f"{dv}-{m}", f"{dv}-{m}-jagged"]
    return out


def get_curve(name: str, *, context_len: int = DEFAULT_CONTEXT, requests: int = 1) -> CapacityCurve:
    """A roofline (``h200-qwen3-8b``) or jagged (``h200-qwen3-8b-jagged``) preset."""
    key = name.strip().lower()
    jagged = key.endswith("-jagged")
    base = key[: -len("-jagged")] if jagged else key
    dv, _, m = base.partition("-")
    if dv not in ROOFLINE_DEVICES or m not in ROOFLINE_MODELS:
        raise CapacityError(f"unknown capacity preset {name!r} (known: {', '.join(preset_names())})")
    if context_len < 0 or requests < 1:
        raise CapacityError("preset needs context_len ≥ 0 and requests ≥ 1")
    extra = dict(tile=JAGGED_TILE, buckets=GRAPH_BUCKETS) if jagged else {}
    roof = Roofline(**ROOFLINE_DEVICES[dv], **ROOFLINE_MODELS[m], **extra)
    return CapacityCurve(name=key, kind="jagged" if jagged else "roofline",
                         context_len=int(context_len), requests=int(requests), roofline=roof,
                         meta={"source": "preset", "note": "analytic roofline; see module docstring"})


def resolve_capacity(spec: "str | os.PathLike | CapacityCurve", **kw) -> CapacityCurve:
    """A curve from a preset name, a JSON path, or a curve (returned as is)."""
    if isinstance(spec, CapacityCurve):
        return spec
    s = str(spec)
    if s.endswith(".json") or os.sep in s or Path(s).is_file():
        return CapacityCurve.from_json(s)
    return get_curve(s, **kw)


# ----------------------------------------------------------------------------- profiling
def profile_target(target, batch_sizes: Sequence[int], *, context_len: int = 128,
                   repeats: int = 3, warmup: int = 1, seed: int = 0, progress=None,
                   name: str | None = None, drafter=None, gamma: int = 7,
                   drafter_name: str = "") -> CapacityCurve:
    """Time one ``Target.forward`` of B tokens after a context of ``context_len`` tokens.

    The context is prefilled once with random token ids; each measurement forwards B new
    tokens and crops the cache back, so every pass sees the same context (the verify pass of
    one request with B = ℓ + 1 tokens). The median of ``repeats`` timed passes is kept.

    With a ``drafter``: the curve times a whole speculative step of one request — drafting γ
    tokens (the median of ``repeats`` ``propose`` calls on the same context, added to every B)
    plus the verify forward of B tokens *with* the drafter's hidden-state taps. Where drafting
    is not negligible next to a verify pass (a CPU), Θ = τ*·SPS(B) then compares the real
    round times: admitting a draft token costs t(B+1) − t(B), against a base t_draft + t(1)
    that the round pays whatever ℓ is chosen.
    """
    bs = sorted({int(b) for b in batch_sizes})
    if not bs or bs[0] < 1:
        raise CapacityError("profile needs batch sizes ≥ 1")
    if repeats < 1 or warmup < 0 or context_len < 1:
        raise CapacityError("profile needs repeats ≥ 1, warmup ≥ 0 and context_len ≥ 1")
    if context_len + bs[-1] > target.max_context:
        raise CapacityError(f"context {context_len} + B {bs[-1]} exceeds the target context "
                            f"of {target.max_context} tokens")
    g = torch.Generator().manual_seed(seed)
    hi = max(5, min(target.vocab_size, 32000))
    dev = target.device
    sync = (torch.cuda.synchronize if dev.type == "cuda" else (lambda: None))
    ctx = torch.randint(4, hi, (1, context_len), generator=g).to(dev)
    cache = target.new_cache()
    taps = tuple(drafter.cfg.target_layer_ids) if drafter is not None else ()
    out = target.forward(ctx, cache, taps)
    draft_ms = 0.0
    if drafter is not None:
        draft_ms = _time_drafting(drafter, target, out.taps, gamma, warmup, repeats, g, sync)
    times = []
    for i, B in enumerate(bs):
        x = torch.randint(4, hi, (1, B), generator=g).to(dev)
        ms = _median_ms(lambda: target.forward(x, cache, taps), warmup, repeats, sync,
                        after=lambda: target.crop(cache, context_len))
        times.append(ms + draft_ms)
        if progress is not None:
            progress(i + 1, len(bs), B, times[-1])
    dev_name = str(dev)
    if dev.type == "cuda":
        dev_name = f"cuda:{torch.cuda.get_device_name(dev)}"
    meta = {"source": "profile", "device": dev_name, "model": target.name,
            "context_len": context_len, "dtype": str(target.dtype).replace("torch.", ""),
            "repeats": repeats, "statistic": "median step time of one forward of B tokens",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__}
    if drafter is not None:
        meta.update(statistic=f"median time of drafting γ = {gamma} tokens ({draft_ms:.2f} ms, "
                              "added to every B) + median time of one verify forward of B "
                              "tokens with the drafter's taps",
                    draft_ms=draft_ms, gamma=gamma, drafter=drafter_name or "drafter")
    return CapacityCurve(name=name or f"profile:{target.name}@{dev.type}", kind="profiled",
                         batch=tuple(bs), step_ms=tuple(times), interp="linear",
                         context_len=context_len, meta=meta)


def _median_ms(fn, warmup: int, repeats: int, sync, after=None) -> float:
    """Median wall ms of ``fn()`` over ``repeats`` timed calls after ``warmup`` untimed ones;
    ``after()`` runs after each call, outside the clock."""
    samples = []
    for rep in range(warmup + repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        dt = (time.perf_counter() - t0) * 1e3
        if after is not None:
            after()
        if rep >= warmup:
            samples.append(dt)
    return float(np.median(samples))


def _time_drafting(drafter, target, taps, gamma: int, warmup: int, repeats: int, gen,
                   sync) -> float:
    """Median ms of one ``propose`` of γ tokens (T = 0) on a context of target taps [1, C, L·H]."""
    ctx = ContextCache()
    drafter.extend_context(ctx, taps)
    anchor = torch.tensor([5], device=taps.device)
    with torch.inference_mode():
        return _median_ms(lambda: drafter.propose(target, ctx, anchor, gamma=gamma,
                                                  temperature=0.0, gen=gen),
                          warmup, repeats, sync)


__all__ = ["CapacityCurve", "CapacityError", "Roofline", "get_curve", "preset_names",
           "profile_target", "resolve_capacity", "DEFAULT_CONTEXT", "DEFAULT_CAPACITY"]

"""Verification-length policies: the interface, ``fixed(ℓ)`` and static confidence thresholds.

Scope: pure decisions. A policy sees, for every active request, its confidences c_{r,1..γ}
(calibrated when available) and the longest ℓ it may verify (token budget), plus an optional
capacity curve SPS(B); it returns one ``Decision`` per request with the chosen ℓ and an
explanation for the trace (the admission path and why it stopped). Policies may keep state
across steps (e.g. the asynchronous scheduler's delayed capacity), so the engine calls
``decide`` exactly once per step. The hardware-aware scheduler (Algorithm 1 and its
variants) lives in ``dspark_viz.decoding.scheduler`` and implements the same interface.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from dspark_viz.config import ConfigError
from dspark_viz.decoding.trace import AdmissionStep


@dataclass(frozen=True)
class RequestView:
    """What a policy may look at for one request: confidences and its budget cap."""

    conf: np.ndarray  # [γ] c_k (P(x_k survives | prefix survived)); NaN-free, in [0, 1]
    max_ell: int  # ℓ may not exceed this (token budget, γ)

    @property
    def survival(self) -> np.ndarray:
        """a_k = Π_{i≤k} c_i  [γ]."""
        return np.cumprod(self.conf)


@dataclass
class Decision:
    ell: int
    stop: str
    path: list[AdmissionStep] = field(default_factory=list)


class Policy(Protocol):
    name: str
    lossless: bool

    def decide(self, requests: Sequence[RequestView], capacity=None) -> list[Decision]: ...


@dataclass
class Fixed:
    """Verify ℓ = min(ell, cap) drafted tokens every step (ℓ = 1: the MTP-1 baseline)."""

    ell: int
    lossless: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.ell <= 16:
            raise ConfigError(f"fixed policy needs 0 ≤ ℓ ≤ 16, got {self.ell}")

    @property
    def name(self) -> str:
        return f"fixed({self.ell})"

    def decide(self, requests, capacity=None):
        return [Decision(ell=min(self.ell, r.max_ell),
                         stop="fixed" if self.ell <= r.max_ell else "budget") for r in requests]


@dataclass
class Threshold:
    """Static threshold: verify the longest prefix whose c_k (on="c") or a_k (on="a") ≥ t.

    Lossless: whether x_k is verified depends on c_1..c_k, which depend on x_{<k} only.
    """

    threshold: float
    on: str = "c"
    lossless: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.on not in ("c", "a"):
            raise ConfigError(f"threshold applies to 'c' or 'a', got {self.on!r}")

    @property
    def name(self) -> str:
        return f"threshold({self.on}≥{self.threshold:g})"

    def decide(self, requests, capacity=None):
        out = []
        for r in requests:
            vals = r.conf if self.on == "c" else r.survival
            ell, stop = 0, "threshold"
            for k in range(len(vals)):
                if k >= r.max_ell:
                    stop = "budget"
                    break
                if vals[k] < self.threshold:
                    break
                ell = k + 1
            out.append(Decision(ell=ell, stop=stop))
        return out


def parse_policy(spec: str, gamma: int):
    """'fixed:4', 'fixed' (= γ), 'threshold:0.5', 'threshold-a:0.3', or a scheduler policy."""
    name, _, arg = spec.partition(":")
    try:
        if name == "fixed":
            return Fixed(int(arg) if arg else gamma)
        if name == "threshold":
            return Threshold(float(arg or 0.5), "c")
        if name == "threshold-a":
            return Threshold(float(arg or 0.3), "a")
    except ValueError as e:
        raise ConfigError(f"bad policy {spec!r}: {e}") from None
    try:
        from dspark_viz.decoding import scheduler
    except ImportError:  # pragma: no cover
        scheduler = None
    if scheduler is not None and hasattr(scheduler, "parse_scheduler"):
        pol = scheduler.parse_scheduler(spec)
        if pol is not None:
            return pol
    raise ConfigError(f"unknown policy {spec!r} (try fixed:N, threshold:T, threshold-a:T)")

"""What a verification-length policy sees and returns: the interface every policy implements.

Scope: ``RequestView`` (one request's confidences and its budget cap), ``Decision`` (the chosen ℓ
and its explanation for the trace) and the ``Policy`` protocol. Not here: any policy
(``decoding.policy`` holds the simple ones and the registry, ``decoding.scheduler`` the
hardware-aware ones).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

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
    """A verification-length policy. ``capacity`` is its curve SPS(B) (an object, never a name;
    None for policies that need none). ``decide`` is called once per engine step; its
    ``capacity`` argument overrides the policy's own curve (the load simulator passes the
    hardware it simulates; the engine never does)."""

    name: str
    lossless: bool
    needs_curve: bool
    needs_confidence: bool
    capacity: object

    def decide(self, requests: Sequence[RequestView], capacity=None) -> list[Decision]: ...


__all__ = ["RequestView", "Decision", "Policy"]

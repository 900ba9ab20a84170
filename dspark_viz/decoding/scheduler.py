"""The hardware-aware prefix scheduler (Algorithm 1) and its variants, as pure policies.

Scope: decide the verification length ℓ_r of each of R active requests from their
confidences c_{r,1..γ} and a capacity curve SPS(B) (``dspark_viz.load.capacity``), by greedy
admission of candidates (r, j) in descending prefix survival a_{r,j} = Π_{i≤j} c_{r,i},
maximising the expected throughput Θ = τ*·SPS(B) with B = Σ_r (1 + ℓ_r) verify tokens and
τ* = Σ_r (1 + Σ_{j≤ℓ_r} a_{r,j}) expected committed tokens (τ counts the +1 target token).
Every decision carries its explanation: the admission path [(r, j, a, B, τ*, Θ, admitted)]
and where/why admission stopped. Not here: sampling, verification, the engine.

Policies (all implement ``dspark_viz.decoding.decision.Policy``; each holds its curve as an
object — names and paths are resolved by ``dspark_viz.load``, never here):
- ``HardwareAware`` — Algorithm 1 with the early stop: admit while Θ strictly improves, stop
  at the first non-improvement. Lossless: whether (r, k) is reached depends only on
  candidates ranked before it (ties broken by request then position), none of which depend
  on x_{r,k}; a_{r,k} itself depends on x_{r,<k} only.
  *Envelope* (on by default; ``alg1`` is the paper's algorithm on the raw curve): on a curve
  that is not monotone — a CPU whose matmul is slower at 2–3 rows than at 4 — a step of B
  tokens can cost more than one of B' > B. Admission then runs on SPS*(B) = max_{B' ≥ B}
  SPS(B') over B' ≤ R + budget: the throughput a step reaches when it may verify more. The
  early stop never lands inside a dip of the raw curve (there SPS* is flat, so any a > 0
  improves Θ): admission runs on to the cheaper B', and verifies more tokens in less time.
  Lossless as Algorithm 1 on any curve: SPS* is fixed by the budget, not by the drafts.
- ``AsyncDelayed`` — the production variant (paper §5.2): the capacity K (number of draft
  tokens admitted) is the arg-max of a global search *without* early stop over the
  confidences seen two ``decide`` calls earlier; the current step admits the top-K current
  candidates. Lossless because K is fixed before the current tokens exist.
- ``Retrospective`` — global search without early stop over the current candidates (take the
  best Θ anywhere on the path). LOSSY (Appendix A): kept for teaching only.

Ties in a are broken by (request, position), so within one request position j is always
ranked before j + 1 (a is non-increasing along the block, also in floating point).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np

from dspark_viz.config import ConfigError
from dspark_viz.decoding.decision import Decision, RequestView
from dspark_viz.decoding.trace import AdmissionStep


# ----------------------------------------------------------------------------- pure core
@dataclass
class AdmissionPath:
    """The sorted candidate pool and the running totals along the greedy admission path.

    n candidates; index i is the (i+1)-th admitted candidate if admission reaches it.
    """

    R: int
    r: np.ndarray  # [n] request index
    j: np.ndarray  # [n] position (1-based)
    a: np.ndarray  # [n] prefix survival, descending
    B: np.ndarray  # [n] verify tokens after admitting candidate i (R + i + 1)
    tau: np.ndarray  # [n] expected committed tokens τ* after admitting it
    theta: np.ndarray  # [n] τ*·SPS(B)
    theta0: float  # R·SPS(R): nothing admitted

    @property
    def n(self) -> int:
        return len(self.a)


def _bind(capacity, R: int):
    return capacity.for_load(R) if hasattr(capacity, "for_load") else capacity


def _sps(capacity, B: np.ndarray) -> np.ndarray:
    if hasattr(capacity, "sps_many"):
        return np.asarray(capacity.sps_many(B), dtype=np.float64)
    return np.array([capacity.sps(int(b)) for b in B], dtype=np.float64)


def admission_path(requests: Sequence[RequestView], capacity, *,
                   envelope: bool = False) -> AdmissionPath:
    """Sort all candidates (r, j), j ≤ max_ell, a_{r,j} > 0, by a descending; accumulate Θ.

    ``envelope``: Θ = τ*·SPS*(B) with SPS*(B) = max over B' ≥ B (up to R + the budget Σ ℓ_max,
    which the drafts do not change) of SPS(B'): the throughput a step at B reaches when it may
    verify more.
    """
    R = len(requests)
    cap = _bind(capacity, R)
    if R == 0:
        e = np.zeros(0)
        return AdmissionPath(0, e.astype(int), e.astype(int), e, e.astype(int), e, e, 0.0)
    lens = [len(v.conf) for v in requests]
    gamma = max(lens)
    if min(lens) == gamma:  # fast path: one [R, γ] stack
        C = np.array([v.conf for v in requests], dtype=np.float64).reshape(R, gamma)
    else:
        C = np.zeros((R, gamma))
        for i, v in enumerate(requests):
            C[i, : lens[i]] = v.conf
    np.clip(C, 0.0, 1.0, out=C)
    maxl = np.fromiter((v.max_ell for v in requests), dtype=np.int64, count=R)
    C[np.arange(gamma)[None, :] >= maxl[:, None]] = 0.0  # beyond the budget: not admissible
    A = np.cumprod(C, axis=1)  # [R, γ] prefix survival
    flat = A.ravel()  # r-major, j-minor: a stable sort breaks ties by (r, j)
    idx = np.flatnonzero(flat > 0.0)
    order = idx[np.argsort(-flat[idx], kind="stable")]
    a = flat[order]
    r, j = np.divmod(order, gamma) if gamma else (order, order)
    n = len(a)
    budget = int(np.minimum(maxl, gamma).sum())  # admissible tokens, whatever the drafts
    S = _sps(cap, R + np.arange(budget + 1))  # [budget + 1] SPS at B = R .. R + budget
    E = np.maximum.accumulate(S[::-1])[::-1] if envelope else S
    B = R + np.arange(1, n + 1)
    tau = R + np.cumsum(a)
    theta = tau * E[1 : n + 1]
    return AdmissionPath(R, r, j + 1, a, B, tau, theta, float(R * E[0]))


def early_stop_count(p: AdmissionPath) -> int:
    """Algorithm 1: number admitted before the first candidate that does not improve Θ."""
    if p.n == 0:
        return 0
    prev = np.concatenate(([p.theta0], p.theta[:-1]))
    bad = np.flatnonzero(~(p.theta > prev))
    return int(bad[0]) if len(bad) else p.n


def global_best_count(p: AdmissionPath) -> int:
    """Search without early stop: the prefix of the path with the largest Θ (first arg-max)."""
    if p.n == 0:
        return 0
    i = int(np.argmax(p.theta))
    return i + 1 if p.theta[i] > p.theta0 else 0


def lengths_from(p: AdmissionPath, count: int) -> np.ndarray:
    """ℓ_r [R] after admitting the first ``count`` candidates of the path."""
    ell = np.zeros(p.R, dtype=int)
    if count:
        np.maximum.at(ell, p.r[:count], p.j[:count])
    return ell


def explain(p: AdmissionPath, count: int, shown: int | None = None) -> list[AdmissionStep]:
    """AdmissionStep records for the admitted candidates plus the first refused one."""
    m = min(p.n, count + 1 if shown is None else shown)
    adm = [True] * min(count, m) + [False] * max(0, m - count)
    return list(map(AdmissionStep, p.r[:m].tolist(), p.j[:m].tolist(), p.a[:m].tolist(),
                    p.B[:m].tolist(), p.tau[:m].tolist(), p.theta[:m].tolist(), adm))


def _decisions(requests, ell: np.ndarray, stop: str, path: list[AdmissionStep]) -> list[Decision]:
    return [Decision(e, "budget" if (e > 0 and e == v.max_ell and e < len(v.conf)) else stop, path)
            for v, e in zip(requests, ell.tolist())]


def sample_sps(capacity, load: int, b_max: int) -> list[float]:
    """SPS(B) of ``capacity`` bound to ``load`` requests at B = 1 .. b_max (what a trace keeps)."""
    if b_max < 1:
        return []
    return _sps(_bind(capacity, max(1, int(load))), np.arange(1, b_max + 1)).tolist()


def _check_curve(policy) -> None:
    c = policy.capacity
    if c is not None and not hasattr(c, "sps"):
        raise ConfigError(f"policy {policy.name}: capacity must be a curve object, got {c!r:.60} "
                          "(resolve names and paths with dspark_viz.load.capacity.resolve_capacity)")


def _curve_for(policy, capacity):
    """The curve a decision runs on: the override passed to ``decide``, else the policy's own."""
    cap = capacity if capacity is not None else policy.capacity
    if cap is None:
        raise ConfigError(f"policy {policy.name} has no capacity curve: build it with one "
                          "(parse_policy(spec, γ, curve=…)) or pass one to decide")
    return cap


# ----------------------------------------------------------------------------- policies
@dataclass
class HardwareAware:
    """Algorithm 1: greedy admission by prefix survival with the early stop (lossless).

    ``capacity``: the curve SPS(B) (an object; used when ``decide`` is given none).
    ``record_path=False`` skips building the explanation.
    """

    capacity: object = None
    record_path: bool = True
    name: str = "hardware"
    envelope: bool = True  # admission on SPS*(B) = max_{B' ≥ B} SPS(B') (docstring); False: alg1
    lossless: ClassVar[bool] = True
    needs_curve: ClassVar[bool] = True
    needs_confidence: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_curve(self)

    def decide(self, requests: Sequence[RequestView], capacity=None) -> list[Decision]:
        p = admission_path(requests, _curve_for(self, capacity), envelope=self.envelope)
        k = early_stop_count(p)
        if k == p.n:
            stop = "all candidates admitted" if p.n else "no candidates (all a = 0)"
        else:
            prev = p.theta0 if k == 0 else p.theta[k - 1]
            stop = (f"no improvement: Θ {p.theta[k]:.4g} ≤ {prev:.4g} at (r={p.r[k]}, "
                    f"j={p.j[k]}, B={p.B[k]})")
        path = explain(p, k) if self.record_path else []
        return _decisions(requests, lengths_from(p, k), stop, path)


@dataclass
class Retrospective:
    """Global search WITHOUT early stop over the current candidates — LOSSY (Appendix A).

    The admission of x_{r,k} then depends on confidences computed from x_{r,k} itself,
    which biases the output toward tokens with confident continuations. Teaching only.
    """

    capacity: object = None
    record_path: bool = True
    name: str = "retrospective (lossy)"
    lossless: ClassVar[bool] = False
    needs_curve: ClassVar[bool] = True
    needs_confidence: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_curve(self)

    def decide(self, requests: Sequence[RequestView], capacity=None) -> list[Decision]:
        p = admission_path(requests, _curve_for(self, capacity))
        k = global_best_count(p)
        best = p.theta[k - 1] if k else p.theta0
        stop = f"global arg-max Θ {best:.4g} after {k} of {p.n} candidates (no early stop; lossy)"
        path = explain(p, k, shown=p.n) if self.record_path else []
        return _decisions(requests, lengths_from(p, k), stop, path)


@dataclass
class AsyncDelayed:
    """Production variant: K from a no-early-stop search over the views of two steps earlier.

    Step t admits the top-K_t current candidates with K_t = global_best_count(views_{t−2}).
    Until two steps of history exist K = ``k_init`` (None → R, one draft token per request on
    average, the MTP-1 budget). The policy is stateful: call ``decide`` once per engine step
    (``reset()`` starts a new run).
    """

    capacity: object = None
    delay: int = 2
    k_init: int | None = None
    record_path: bool = True
    name: str = "async"
    _pending: deque = field(default_factory=deque, repr=False)
    last_k: int | None = field(default=None, repr=False)
    last_k_source: str = field(default="", repr=False)
    lossless: ClassVar[bool] = True
    needs_curve: ClassVar[bool] = True
    needs_confidence: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.delay < 1:
            raise ConfigError(f"async scheduler needs delay ≥ 1, got {self.delay}")
        _check_curve(self)

    def reset(self) -> None:
        self._pending.clear()
        self.last_k, self.last_k_source = None, ""

    def next_k(self, R: int) -> tuple[int, str]:
        """K for the step about to be decided; depends only on earlier calls (and R)."""
        if len(self._pending) >= self.delay:
            return self._pending[0], f"from step t−{self.delay}"
        return (R if self.k_init is None else int(self.k_init)), "initial (no history yet)"

    def decide(self, requests: Sequence[RequestView], capacity=None) -> list[Decision]:
        cap = _curve_for(self, capacity)
        K, src = self.next_k(len(requests))
        if len(self._pending) >= self.delay:
            self._pending.popleft()
        p = admission_path(requests, cap)
        # the capacity this step's candidates would ask for, used `delay` steps from now
        self._pending.append(global_best_count(p))
        self.last_k, self.last_k_source = K, src
        k = min(K, p.n)
        stop = f"top-K admission, K={K} ({src})" + ("" if k == K else f"; only {p.n} candidates")
        path = explain(p, k) if self.record_path else []
        return _decisions(requests, lengths_from(p, k), stop, path)


__all__ = ["HardwareAware", "AsyncDelayed", "Retrospective", "admission_path", "early_stop_count",
           "global_best_count", "lengths_from", "explain", "AdmissionPath", "sample_sps"]

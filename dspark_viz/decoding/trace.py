"""The trace: the versioned, JSON-serialisable record of every internal of a decoding run.

Scope: the ``Trace``/``Round`` dataclasses, JSON save/load with strict
validation (types, ranges, internal consistency; a malformed or hostile file gets a one-line
``TraceError`` — loading only ever calls ``json.loads``), and replay helpers that need no model.
The app, notebooks, evaluator and load simulator consume traces only.

Conventions written into every trace: τ of a round = tokens committed by that round, i.e. the
accepted draft tokens **plus the one target token** (correction or bonus), so τ ∈ [1, ℓ + 1]
(fewer only when EOS ends the answer inside the block). Acceptance rate = accepted draft
tokens / verified draft tokens.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dspark_viz.errors import UserError
from dspark_viz.io import read_json_capped, write_json_atomic

# version 2 added ``TraceMeta.capacity_curve``; version-1 files load with it absent (None)
SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MAX_TRACE_BYTES = 256 * 1024 * 1024
MAX_CURVE_POINTS = 8192
TAU_CONVENTION = "τ = accepted draft tokens + 1 target token (correction or bonus) per round"


class TraceError(UserError):
    """A trace file is malformed, inconsistent or of another version; one-line message."""


@dataclass
class TokenProb:
    token: int
    logit: float
    prob: float


@dataclass
class BiasEntry:
    token: int
    bias: float


@dataclass
class DraftPos:
    """Draft position k (1-based) of one round."""

    k: int
    base_topk: list[TokenProb]  # parallel-stage U_k, probabilities at T = 1
    boosted: list[BiasEntry]  # largest Markov biases B_k among the sequential-stage candidates
    suppressed: list[BiasEntry]  # most negative biases among the base top-50 candidates
    corrected_topk: list[TokenProb]  # U_k + B_k over the candidates, probabilities at T = 1
    token: int  # sampled draft token x_k
    p_d: float  # probability of x_k under the distribution it was drawn from
    conf_raw: float | None = None  # c_k from the confidence head
    conf_cal: float | None = None  # c_k after STS calibration
    a_raw: float | None = None  # prefix survival Π c_i (raw)
    a_cal: float | None = None  # prefix survival (calibrated) — what the scheduler sees


@dataclass
class AdmissionStep:
    """One candidate (request r, position j) on the scheduler's admission path."""

    r: int
    j: int
    a: float
    B: int  # verify batch in tokens after admitting it
    tau: float  # expected accepted tokens τ* after admitting it
    theta: float  # τ*·SPS(B)
    admitted: bool


@dataclass
class Schedule:
    policy: str
    lossless: bool
    load: int  # R, concurrent requests the decision was taken over
    ell: int  # chosen verification length for this request
    gamma: int
    stop: str  # why admission stopped (e.g. "no improvement", "fixed", "threshold", "budget")
    forced: bool = False  # what-if: verification length forced by the user
    capacity: str = ""
    path: list[AdmissionStep] = field(default_factory=list)


@dataclass
class VerifyPos:
    k: int
    token: int
    p_t: float  # target probability of x_k (decoding distribution)
    p_d: float
    ratio: float  # min(1, p_t / p_d)
    uniform: float | None  # the U(0,1) draw (None at T = 0: greedy comparison)
    accepted: bool
    target_topk: list[TokenProb]


@dataclass
class Timings:
    draft_ms: float = 0.0
    markov_ms: float = 0.0
    schedule_ms: float = 0.0
    verify_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class Round:
    index: int
    request: int
    anchor: int  # x0, the last token committed by the target
    anchor_pos: int
    draft: list[DraftPos]  # γ positions (empty in plain decoding)
    schedule: Schedule | None
    verify: list[VerifyPos]  # ℓ positions
    n_accepted: int
    appended: int | None  # target token (correction / bonus / plain), None if EOS came first
    appended_kind: str  # "correction" | "bonus" | "target" | "none"
    appended_topk: list[TokenProb]
    committed: list[int]  # tokens this round adds to the output (τ = len)
    dropped: list[int]  # drafted tokens beyond ℓ that the scheduler never sent to verify
    eos: bool
    timings: Timings

    @property
    def tau(self) -> int:
        return len(self.committed)


@dataclass
class CurveSample:
    """The policy's capacity curve as the trace carries it: SPS(B) (steps/s) at B = 1..len(sps),
    bound to ``load`` concurrent requests — enough to draw it without resolving any name."""

    name: str
    load: int
    sps: list[float]

    def sps_at(self, B: int) -> float | None:
        """SPS at verify batch B, or None outside the recorded B = 1..len(sps)."""
        return self.sps[B - 1] if 1 <= B <= len(self.sps) else None


@dataclass
class TraceMeta:
    target: str
    drafter: str
    mode: str
    gamma: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    max_new_tokens: int
    policy: str
    prompt: str
    prompt_ids: list[int]
    first_token: int  # sampled by the target from the prefill logits (the first anchor)
    device: str
    created: str
    markov_off: bool = False
    force_ell: int | None = None
    calibrated: bool = False
    load: int = 1
    capacity: str = ""
    tau_convention: str = TAU_CONVENTION
    conf_label: str = ""  # the confidence head's training label: "tv" (T = 1) / "greedy" (T = 0); "" none
    calibration_temperature: float | None = None  # the sampling T of the rounds STS was fitted on
    capacity_curve: CurveSample | None = None  # the policy's curve (version ≥ 2; None: no curve)


@dataclass
class Summary:
    rounds: int
    new_tokens: int
    drafted: int
    verified: int
    accepted: int
    tau_mean: float
    acceptance_rate: float
    target_forwards: int
    tokens_per_forward: float
    wall_s: float
    tokens_per_s: float
    stop_reason: str  # "eos" | "max_new_tokens" | "context"


@dataclass
class Trace:
    version: int
    meta: TraceMeta
    rounds: list[Round]
    summary: Summary
    vocab: dict[str, str]  # token id (as string) → text, for every id the trace mentions
    text: str

    # -------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict(), indent=None, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: object) -> "Trace":
        if not isinstance(d, dict):
            raise TraceError("trace: expected a JSON object at the top level")
        v = d.get("version")
        if type(v) is not int or v not in SUPPORTED_VERSIONS:
            raise TraceError(f"trace: schema version {v!r} is not supported (expected one of "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
        if v < 2 and isinstance(d.get("meta"), dict) and "capacity_curve" in d["meta"]:
            raise TraceError("trace.meta: unknown field 'capacity_curve' (version 1)")
        t = _build(cls, d, "trace")
        _check_consistency(t)
        return t

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trace":
        return cls.from_dict(read_json_capped(path, MAX_TRACE_BYTES, what="trace file",
                                              error=TraceError))

    # -------------------------------------------------------------- replay
    def token_text(self, tok: int) -> str:
        return self.vocab.get(str(tok), f"<{tok}>")

    def output_ids(self, upto_round: int | None = None) -> list[int]:
        """Generated ids after ``upto_round`` rounds (None = all); no model needed."""
        out = [self.meta.first_token]
        for r in self.rounds[: upto_round]:
            out.extend(r.committed)
        return out

    def taus(self) -> list[int]:
        return [r.tau for r in self.rounds]


# ------------------------------------------------------------------ validation machinery
def _build(tp, obj, path: str):
    """Build ``tp`` (a dataclass, list[...], dict[str, str], scalar or union) from JSON data."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if obj is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], obj, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(obj, dict):
            raise TraceError(f"{path}: expected an object, got {type(obj).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(obj) - names)
        if unknown:
            raise TraceError(f"{path}: unknown field {unknown[0]!r}")
        kw = {}
        for f in dataclasses.fields(tp):
            if f.name not in obj:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise TraceError(f"{path}.{f.name}: missing")
                continue
            kw[f.name] = _build(hints[f.name], obj[f.name], f"{path}.{f.name}")
        return tp(**kw)
    if origin is list:
        if not isinstance(obj, list):
            raise TraceError(f"{path}: expected a list, got {type(obj).__name__}")
        (item,) = typing.get_args(tp)
        return [_build(item, x, f"{path}[{i}]") for i, x in enumerate(obj)]
    if origin is dict:
        if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in obj.items()):
            raise TraceError(f"{path}: expected an object of strings")
        return dict(obj)
    if tp is bool:
        if not isinstance(obj, bool):
            raise TraceError(f"{path}: expected true/false, got {obj!r:.40}")
        return obj
    if tp is int:
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise TraceError(f"{path}: expected an integer, got {obj!r:.40}")
        return obj
    if tp is float:
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
            raise TraceError(f"{path}: expected a finite number, got {obj!r:.40}")
        return float(obj)
    if tp is str:
        if not isinstance(obj, str):
            raise TraceError(f"{path}: expected a string, got {type(obj).__name__}")
        return obj
    raise TraceError(f"{path}: unsupported type {tp}")  # pragma: no cover


def _check_consistency(t: Trace) -> None:
    m = t.meta
    if not 1 <= m.gamma <= 16:
        raise TraceError(f"trace.meta.gamma: {m.gamma} outside [1, 16]")
    if m.mode not in ("dspark", "dflash", "ar"):
        raise TraceError(f"trace.meta.mode: unknown mode {m.mode!r}")
    for i, r in enumerate(t.rounds):
        p = f"trace.rounds[{i}]"
        if r.index != i:
            raise TraceError(f"{p}.index: {r.index} (rounds must be numbered 0, 1, 2, …)")
        ell = len(r.verify)
        if r.schedule is not None and r.schedule.ell != ell:
            raise TraceError(f"{p}: schedule.ell={r.schedule.ell} but {ell} positions verified")
        if ell > len(r.draft):
            raise TraceError(f"{p}: {ell} positions verified but only {len(r.draft)} drafted")
        if not 0 <= r.n_accepted <= ell:
            raise TraceError(f"{p}.n_accepted: {r.n_accepted} outside [0, {ell}]")
        if [v.accepted for v in r.verify] != [True] * r.n_accepted + [False] * (ell - r.n_accepted):
            raise TraceError(f"{p}.verify: accepted flags do not form a prefix of length n_accepted")
        if not 1 <= len(r.committed) <= r.n_accepted + 1:
            raise TraceError(f"{p}.committed: {len(r.committed)} tokens, expected 1..{r.n_accepted + 1}")
        if r.appended_kind not in ("correction", "bonus", "target", "none"):
            raise TraceError(f"{p}.appended_kind: unknown {r.appended_kind!r}")
        for v in r.verify:
            if not (0.0 <= v.p_t <= 1.0 and 0.0 <= v.p_d <= 1.0 and 0.0 <= v.ratio <= 1.0):
                raise TraceError(f"{p}.verify[{v.k - 1}]: probabilities must lie in [0, 1]")
        for d in r.draft:
            for name in ("conf_raw", "conf_cal", "a_raw", "a_cal"):
                x = getattr(d, name)
                if x is not None and not 0.0 <= x <= 1.0:
                    raise TraceError(f"{p}.draft[{d.k - 1}].{name}: {x} outside [0, 1]")
    c = m.capacity_curve
    if c is not None and not (c.load >= 1 and 0 < len(c.sps) <= MAX_CURVE_POINTS
                              and all(x > 0 for x in c.sps)):
        raise TraceError(f"trace.meta.capacity_curve: needs load ≥ 1 and 1..{MAX_CURVE_POINTS} "
                         "positive SPS values")
    n = 1 + sum(len(r.committed) for r in t.rounds)
    if t.summary.new_tokens != n or t.summary.rounds != len(t.rounds):
        raise TraceError("trace.summary: token or round counts disagree with the rounds")

"""The trace: the versioned, JSON-serialisable record of every internal of a decoding run.

Scope: the ``Trace``/``Round`` dataclasses, JSON save/load with strict
validation (types, ranges, internal consistency; a malformed or hostile file gets a one-line
``TraceError`` naming the field and round — loading only ever calls ``json.loads``), and replay
helpers that need no model. The app, notebooks, evaluator and load simulator consume traces only.

What a loaded trace can hold (the caps below, checked on load in one pass, well under 0.3 s per
MB): token ids in [0, ``meta.vocab_size``) (in [0, ``MAX_VOCAB``) for files that do not record
it), at most γ ≤ ``GAMMA_MAX`` draft, verified and dropped positions per round, anchor positions
in [0, ``MAX_POSITION``], loads R in [1, ``MAX_LOAD``], admission-path batches B in
[1, ``MAX_BATCH``], at most ``MAX_CURVE_POINTS`` capacity-curve points, token texts of at most
``MAX_TOKEN_CHARS`` and names of at most ``MAX_LABEL_CHARS`` characters, probabilities in
[0, 1], finite numbers only. ``meta.vocab_size`` (optional: older files lack it) is the
target's vocabulary size. Consumers still bound their own work by what they
draw, never by these numbers (a figure samples B, it does not iterate up to it).

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

from dspark_viz.config import GAMMA_MAX
from dspark_viz.errors import UserError, one_line
from dspark_viz.io import read_json_capped, write_json_atomic

# version 2 added ``TraceMeta.capacity_curve``; version-1 files load with it absent (None)
SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MAX_TRACE_BYTES = 256 * 1024 * 1024
MAX_CURVE_POINTS = 8192  # points of ``meta.capacity_curve``
MAX_VOCAB = 2 ** 24  # bound of token ids (and of ``meta.vocab_size``) when the file records none
MAX_LOAD = 2 ** 22  # concurrent requests R a trace may record (meta, schedule, curve)
MAX_BATCH = MAX_LOAD * (GAMMA_MAX + 1)  # verify batch B of an admission step: R·(γ + 1) at the caps
MAX_POSITION = 2 ** 31 - 1  # anchor positions, request numbers, prompt length, max_new_tokens
MAX_TOKEN_CHARS = 1024  # characters of one token's text in ``vocab``
MAX_LABEL_CHARS = 1024  # characters of a name or label (target, drafter, policy, stop reason, …)
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
    vocab_size: int | None = None  # the target's vocabulary size V (token ids < V); None: unrecorded


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
        """Write the trace as JSON (atomically); a NaN or infinite number anywhere (e.g. from a
        drafter whose weights are NaN) is a TraceError naming the first such field, and nothing is
        written."""
        d = self.to_dict()
        try:
            return write_json_atomic(path, d, indent=None, ensure_ascii=False)
        except ValueError as e:
            where = _first_non_finite(d, "trace")
            raise TraceError(f"trace not saved: {where or one_line(e)} is not a finite number "
                             "(JSON has no NaN or infinity)") from None

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
        try:
            t = _build(cls, d, "trace")
        except RecursionError:  # only a Python object (JSON nests no deeper than the schema)
            raise TraceError("trace: nested too deeply") from None
        _check_consistency(t)
        return t

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trace":
        """Read and validate a trace file: every malformed input (missing, over
        ``MAX_TRACE_BYTES``, not UTF-8, not JSON, nested too deeply, an integer too long, a value
        out of range) is a one-line TraceError."""
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
class _Bad(Exception):
    """A validation failure deep in the JSON; containers add where it happened on the way out."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.where: list[str] = []  # innermost first


def _first_non_finite(obj, path: str) -> str | None:
    """The path of the first NaN or infinite float in plain data, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        got = _first_non_finite(v, f"{path}.{k}" if isinstance(obj, dict) else f"{path}[{k}]")
        if got:
            return got
    return None


def _short(obj) -> str:
    """A short, always-printable description of a JSON value (never a huge repr)."""
    if isinstance(obj, (bool, float)) or obj is None:
        return repr(obj)
    if isinstance(obj, int):
        return repr(obj) if obj.bit_length() < 100 else f"an integer of {obj.bit_length()} bits"
    if isinstance(obj, str):
        return repr(obj[:40]) + ("…" if len(obj) > 40 else "")
    return f"a {type(obj).__name__}"


def _build_int(obj):
    if type(obj) is int:
        return obj
    raise _Bad(f"expected an integer, got {_short(obj)}")


def _build_float(obj):
    t = type(obj)
    if t is float:
        if obj - obj == 0.0:  # finite (inf − inf and nan − nan are nan)
            return obj
    elif t is int:
        try:
            return float(obj)
        except OverflowError:
            pass
    raise _Bad(f"expected a finite number, got {_short(obj)}")


def _build_bool(obj):
    if type(obj) is bool:
        return obj
    raise _Bad(f"expected true/false, got {_short(obj)}")


def _build_str(obj):
    if type(obj) is str:
        return obj
    raise _Bad(f"expected a string, got {type(obj).__name__}")


def _build_str_dict(obj):
    if type(obj) is not dict or not all(type(v) is str for v in obj.values()):
        raise _Bad("expected an object of strings")
    return dict(obj)


def _list_of(item):
    def build(obj):
        if type(obj) is not list:
            raise _Bad(f"expected a list, got {type(obj).__name__}")
        try:
            return [item(x) for x in obj]
        except _Bad:
            for i, x in enumerate(obj):  # the error path only: find which item, to say where
                try:
                    item(x)
                except _Bad as e:
                    e.where.append(f"[{i}]")
                    raise
            raise  # pragma: no cover
    return build


def _optional(inner):
    def build(obj):
        return None if obj is None else inner(obj)
    return build


def _record_of(tp):
    fields = dataclasses.fields(tp)
    hints = typing.get_type_hints(tp)
    spec = [(f.name, _builder(hints[f.name]),
             f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in fields]
    names = frozenset(f.name for f in fields)

    def build(obj):
        if type(obj) is not dict:
            raise _Bad(f"expected an object, got {type(obj).__name__}")
        if not names.issuperset(obj):
            raise _Bad(f"unknown field {_short(sorted(set(obj) - names)[0])}")
        kw = {}
        for name, b, required in spec:
            if name in obj:
                try:
                    kw[name] = b(obj[name])
                except _Bad as e:
                    e.where.append(f".{name}")
                    raise
            elif required:
                e = _Bad("missing")
                e.where.append(f".{name}")
                raise e
        return tp(**kw)
    return build


_SCALARS = {int: _build_int, float: _build_float, bool: _build_bool, str: _build_str}
_BUILDERS: dict = {}


def _builder(tp):
    """The builder of ``tp`` (a dataclass, list[...], dict[str, str], scalar or optional):
    a function JSON value → value, made once per type (validation is then one pass)."""
    if tp in _BUILDERS:
        return _BUILDERS[tp]
    origin = typing.get_origin(tp)
    if tp in _SCALARS:
        b = _SCALARS[tp]
    elif origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        b = _optional(_builder(inner[0]))
    elif dataclasses.is_dataclass(tp):
        b = _record_of(tp)
    elif origin is list:
        b = _list_of(_builder(typing.get_args(tp)[0]))
    elif origin is dict:
        b = _build_str_dict
    else:  # pragma: no cover
        raise TypeError(f"trace schema: unsupported type {tp}")
    _BUILDERS[tp] = b
    return b


def _build(tp, obj, path: str):
    """Build ``tp`` from JSON data; a type error becomes a TraceError naming where."""
    try:
        return _builder(tp)(obj)
    except _Bad as e:
        raise TraceError(f"{path}{''.join(reversed(e.where))}: {e.msg}") from None


# ------------------------------------------------------------------ ranges and consistency
def _ids(where: str, ids, V: int) -> None:
    """Every token id in ``ids`` lies in [0, V)."""
    if ids and not (0 <= min(ids) and max(ids) < V):
        bad = next(x for x in ids if not 0 <= x < V)
        raise TraceError(f"{where}: token id {_short(bad)} outside [0, {V})")


def _unit(where: str, x: float | None) -> None:
    if x is not None and not 0.0 <= x <= 1.0:
        raise TraceError(f"{where}: {x:g} outside [0, 1]")


def _within(where: str, x: int, lo: int, hi: int) -> None:
    """lo ≤ x ≤ hi (integers; ``hi`` inclusive)."""
    if not lo <= x <= hi:
        raise TraceError(f"{where}: {_short(x)} outside [{lo}, {hi}]")


def _check_topk(where: str, items: list[TokenProb], V: int) -> None:
    _ids(where, [t.token for t in items], V)
    for j, t in enumerate(items):
        _unit(f"{where}[{j}].prob", t.prob)


def _label(where: str, s: str) -> None:
    if len(s) > MAX_LABEL_CHARS:
        raise TraceError(f"{where}: {len(s)} characters, more than {MAX_LABEL_CHARS}")


def _check_meta(m: TraceMeta) -> int:
    """Range checks of the header; returns V, the bound of every token id."""
    p = "trace.meta"
    for name in ("target", "drafter", "mode", "policy", "device", "created", "capacity",
                 "tau_convention", "conf_label"):
        _label(f"{p}.{name}", getattr(m, name))
    _within(f"{p}.gamma", m.gamma, 1, GAMMA_MAX)
    if m.mode not in ("dspark", "dflash", "ar"):
        raise TraceError(f"{p}.mode: unknown mode {_short(m.mode)}")
    if m.vocab_size is not None:
        _within(f"{p}.vocab_size", m.vocab_size, 1, MAX_VOCAB)
    V = m.vocab_size if m.vocab_size is not None else MAX_VOCAB
    _within(f"{p}.load", m.load, 1, MAX_LOAD)
    if m.force_ell is not None:
        _within(f"{p}.force_ell", m.force_ell, 0, m.gamma)
    _within(f"{p}.max_new_tokens", m.max_new_tokens, 0, MAX_POSITION)
    _within(f"{p}.top_k", m.top_k, 0, V)
    if not m.temperature >= 0.0:
        raise TraceError(f"{p}.temperature: {m.temperature:g} is negative")
    if not 0.0 < m.top_p <= 1.0:
        raise TraceError(f"{p}.top_p: {m.top_p:g} outside (0, 1]")
    if len(m.prompt_ids) > MAX_POSITION:
        raise TraceError(f"{p}.prompt_ids: more than {MAX_POSITION} tokens")
    _ids(f"{p}.prompt_ids", m.prompt_ids, V)
    _ids(f"{p}.first_token", [m.first_token], V)
    c = m.capacity_curve
    if c is not None:
        _label(f"{p}.capacity_curve.name", c.name)
        _within(f"{p}.capacity_curve.load", c.load, 1, MAX_LOAD)
        if not (0 < len(c.sps) <= MAX_CURVE_POINTS and all(x > 0 for x in c.sps)):
            raise TraceError(f"{p}.capacity_curve: needs 1..{MAX_CURVE_POINTS} positive SPS values, "
                             f"got {len(c.sps)} values")
    return V


def _check_schedule(p: str, s: Schedule, ell: int) -> None:
    if s.ell != ell:
        raise TraceError(f"{p}: schedule.ell={s.ell} but {ell} positions verified")
    for name in ("policy", "stop", "capacity"):
        _label(f"{p}.schedule.{name}", getattr(s, name))
    _within(f"{p}.schedule.gamma", s.gamma, 0, GAMMA_MAX)
    _within(f"{p}.schedule.load", s.load, 1, MAX_LOAD)
    for j, a in enumerate(s.path):
        q = f"{p}.schedule.path[{j}]"
        if not (0 <= a.r < s.load and 1 <= a.j <= GAMMA_MAX and 0.0 <= a.a <= 1.0
                and 1 <= a.B <= MAX_BATCH and a.tau >= 0.0 and a.theta >= 0.0):
            raise TraceError(f"{q}: needs 0 ≤ r < load = {s.load}, 1 ≤ j ≤ {GAMMA_MAX}, "
                             f"0 ≤ a ≤ 1, 1 ≤ B ≤ {MAX_BATCH} (MAX_BATCH), τ ≥ 0 and Θ ≥ 0; got "
                             f"r={_short(a.r)} j={_short(a.j)} a={a.a:g} B={_short(a.B)} "
                             f"τ={a.tau:g} Θ={a.theta:g}")


def _check_round(i: int, r: Round, gamma: int, V: int) -> None:
    p = f"trace.rounds[{i}]"
    if r.index != i:
        raise TraceError(f"{p}.index: {_short(r.index)} (rounds must be numbered 0, 1, 2, …)")
    _within(f"{p}.request", r.request, 0, MAX_POSITION)
    _within(f"{p}.anchor_pos", r.anchor_pos, 0, MAX_POSITION)
    _ids(f"{p}.anchor", [r.anchor], V)
    if len(r.draft) > gamma:
        raise TraceError(f"{p}.draft: {len(r.draft)} positions but γ = {gamma}")
    ell = len(r.verify)
    if r.schedule is not None:
        _check_schedule(p, r.schedule, ell)
    if ell > len(r.draft):
        raise TraceError(f"{p}: {ell} positions verified but only {len(r.draft)} drafted")
    if ell > gamma:
        raise TraceError(f"{p}.verify: {ell} positions but γ = {gamma}")
    if not 0 <= r.n_accepted <= ell:
        raise TraceError(f"{p}.n_accepted: {_short(r.n_accepted)} outside [0, {ell}]")
    if [v.accepted for v in r.verify] != [True] * r.n_accepted + [False] * (ell - r.n_accepted):
        raise TraceError(f"{p}.verify: accepted flags do not form a prefix of length n_accepted")
    if not 1 <= len(r.committed) <= r.n_accepted + 1:
        raise TraceError(f"{p}.committed: {len(r.committed)} tokens, expected 1..{r.n_accepted + 1}")
    if r.appended_kind not in ("correction", "bonus", "target", "none"):
        raise TraceError(f"{p}.appended_kind: unknown {_short(r.appended_kind)}")
    if len(r.dropped) > gamma:
        raise TraceError(f"{p}.dropped: {len(r.dropped)} tokens but γ = {gamma}")
    _ids(f"{p}.committed", r.committed, V)
    _ids(f"{p}.dropped", r.dropped, V)
    if r.appended is not None:
        _ids(f"{p}.appended", [r.appended], V)
    _check_topk(f"{p}.appended_topk", r.appended_topk, V)
    for j, d in enumerate(r.draft):
        q = f"{p}.draft[{j}]"
        if d.k != j + 1:
            raise TraceError(f"{q}.k: {_short(d.k)} (draft positions are numbered 1..γ)")
        _ids(f"{q}.token", [d.token], V)
        _unit(f"{q}.p_d", d.p_d)
        for name in ("conf_raw", "conf_cal", "a_raw", "a_cal"):
            _unit(f"{q}.{name}", getattr(d, name))
        _check_topk(f"{q}.base_topk", d.base_topk, V)
        _check_topk(f"{q}.corrected_topk", d.corrected_topk, V)
        _ids(f"{q}.boosted", [b.token for b in d.boosted], V)
        _ids(f"{q}.suppressed", [b.token for b in d.suppressed], V)
    for j, v in enumerate(r.verify):
        q = f"{p}.verify[{j}]"
        if v.k != j + 1:
            raise TraceError(f"{q}.k: {_short(v.k)} (verified positions are numbered 1..ℓ)")
        if not (0.0 <= v.p_t <= 1.0 and 0.0 <= v.p_d <= 1.0 and 0.0 <= v.ratio <= 1.0):
            raise TraceError(f"{q}: probabilities must lie in [0, 1]")
        _unit(f"{q}.uniform", v.uniform)
        _ids(f"{q}.token", [v.token], V)
        _check_topk(f"{q}.target_topk", v.target_topk, V)
    t = r.timings
    if min(t.draft_ms, t.markov_ms, t.schedule_ms, t.verify_ms, t.total_ms) < 0.0:
        raise TraceError(f"{p}.timings: negative time")


def _check_consistency(t: Trace) -> None:
    """Ranges (token ids in [0, V), positions ≤ γ, loads and B within the caps above, probabilities
    in [0, 1]) and internal consistency; the first violation is a TraceError naming where."""
    V = _check_meta(t.meta)
    long = next((k for k, v in t.vocab.items() if len(v) > MAX_TOKEN_CHARS or len(k) > 12), None)
    if long is not None:
        raise TraceError(f"trace.vocab[{_short(long)}]: a token text or id longer than "
                         f"{MAX_TOKEN_CHARS} characters (ids 12)")
    for i, r in enumerate(t.rounds):
        _check_round(i, r, t.meta.gamma, V)
    n = 1 + sum(len(r.committed) for r in t.rounds)
    if t.summary.new_tokens != n or t.summary.rounds != len(t.rounds):
        raise TraceError("trace.summary: token or round counts disagree with the rounds")

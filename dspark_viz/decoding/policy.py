"""Verification-length policies: ``fixed(ℓ)``, static confidence thresholds, and THE registry.

Scope: the two simple policies and ``POLICY_REGISTRY`` — the one list of policies from which
every name, alias, menu, help text and the parser ``parse_policy`` derive. A policy sees, for
every active request, its confidences c_{r,1..γ} (calibrated when available) and the longest ℓ
it may verify (token budget); it returns one ``Decision`` per request with the chosen ℓ and an
explanation for the trace (the interface lives in ``decoding.decision``). The hardware-aware
policies (Algorithm 1 and its variants) live in ``decoding.scheduler``; they hold a capacity
curve SPS(B) as an object. Nothing here resolves a curve by name or path: ``dspark_viz.load``
does (``load.policy_spec.policy_from_spec`` reads the ``hardware:CURVE`` spellings).

Adding a policy: its class (with the class attributes ``lossless``, ``needs_curve``,
``needs_confidence``) and one ``PolicyEntry`` line below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

from dspark_viz.config import ConfigError
from dspark_viz.decoding.decision import Decision, Policy, RequestView
from dspark_viz.decoding.scheduler import AsyncDelayed, HardwareAware, Retrospective
from dspark_viz.errors import one_line


@dataclass
class Fixed:
    """Verify ℓ = min(ell, cap) drafted tokens every step (ℓ = 1: the MTP-1 baseline)."""

    ell: int
    lossless: ClassVar[bool] = True
    needs_curve: ClassVar[bool] = False
    needs_confidence: ClassVar[bool] = False
    capacity: ClassVar[None] = None

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
    lossless: ClassVar[bool] = True
    needs_curve: ClassVar[bool] = False
    needs_confidence: ClassVar[bool] = True
    capacity: ClassVar[None] = None

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


# ----------------------------------------------------------------------------- the registry
Builder = Callable[[str, int, object, bool], Policy]  # (arg after ':', γ, curve, record_path)


@dataclass(frozen=True)
class PolicyEntry:
    """One policy of the registry: its names, its one-line help, its flags and its builder.

    ``arg``: what may follow ``name:`` in a spec ("N", "T"; "" = nothing — the curve policies
    take their curve as an object). ``menu``: the specs menus offer; ``sweep``: the specs of the
    default load sweep. The flags are those of ``cls``.
    """

    name: str
    cls: type
    help: str
    build: Builder
    aliases: tuple[str, ...] = ()
    arg: str = ""
    menu: tuple[str, ...] = ()
    sweep: tuple[str, ...] = ()

    @property
    def lossless(self) -> bool:
        return bool(self.cls.lossless)

    @property
    def needs_curve(self) -> bool:
        return bool(self.cls.needs_curve)

    @property
    def needs_confidence(self) -> bool:
        return bool(self.cls.needs_confidence)


def _number(arg: str, kind, default):
    return kind(arg) if arg else default


_ENTRIES = (
    PolicyEntry("fixed", Fixed, "verify ℓ = N drafted tokens every step (default N = γ; "
                "N = 1 is the MTP-1 baseline)", arg="N", menu=("fixed", "fixed:1"),
                sweep=("fixed:1", "fixed"),
                build=lambda a, g, c, rp: Fixed(_number(a, int, g))),
    PolicyEntry("threshold", Threshold, "verify the longest prefix with every c_k ≥ T "
                "(default 0.5)", arg="T", menu=("threshold:0.5",), sweep=("threshold:0.5",),
                build=lambda a, g, c, rp: Threshold(_number(a, float, 0.5), "c")),
    PolicyEntry("threshold-a", Threshold, "verify the longest prefix with survival a_k ≥ T "
                "(default 0.3)", arg="T", menu=("threshold-a:0.3",),
                build=lambda a, g, c, rp: Threshold(_number(a, float, 0.3), "a")),
    PolicyEntry("hardware", HardwareAware, "Algorithm 1 on the envelope of SPS(B): greedy "
                "admission by prefix survival with the early stop (lossless)",
                aliases=("hw", "scheduler"), menu=("hardware",), sweep=("hardware",),
                build=lambda a, g, c, rp: HardwareAware(capacity=c, record_path=rp)),
    PolicyEntry("alg1", HardwareAware, "Algorithm 1 as in the paper, on the raw curve SPS(B) "
                "(no envelope)",
                build=lambda a, g, c, rp: HardwareAware(capacity=c, record_path=rp,
                                                        envelope=False, name="alg1")),
    PolicyEntry("async", AsyncDelayed, "production variant: K from a search without early "
                "stop over the confidences of two steps earlier (lossless)",
                aliases=("asynchronous",), menu=("async",), sweep=("async",),
                build=lambda a, g, c, rp: AsyncDelayed(capacity=c, record_path=rp)),
    PolicyEntry("retrospective", Retrospective, "search without early stop over the current "
                "candidates — LOSSY, for teaching only", aliases=("retro",),
                menu=("retrospective",),
                build=lambda a, g, c, rp: Retrospective(capacity=c, record_path=rp)),
)
POLICY_REGISTRY: dict[str, PolicyEntry] = {e.name: e for e in _ENTRIES}
_BY_NAME: dict[str, PolicyEntry] = {n: e for e in _ENTRIES for n in (e.name,) + e.aliases}


def policy_names() -> list[str]:
    """The canonical policy names, in menu order."""
    return list(POLICY_REGISTRY)


def policy_menu() -> list[str]:
    """The policy specs a menu offers (the app's dropdown), in registry order."""
    return [s for e in _ENTRIES for s in e.menu]


def sweep_specs() -> list[str]:
    """The policy specs of the default load sweep (``simulate``, the app's load view)."""
    return [s for e in _ENTRIES for s in e.sweep]


def policy_entry(name: str) -> PolicyEntry:
    """The registry entry of a canonical name or alias (case-insensitive)."""
    e = _BY_NAME.get(name.strip().lower())
    if e is None:
        raise ConfigError(f"unknown policy {name!r} (known: {', '.join(policy_names())})")
    return e


def policy_help() -> str:
    """The help text of ``--policy``: every policy, its spelling and its one-line help."""
    parts = []
    for e in _ENTRIES:
        spell = e.name + (f"[:{e.arg}]" if e.arg else "[:CURVE]" if e.needs_curve else "")
        alias = f" (alias {', '.join(e.aliases)})" if e.aliases else ""
        parts.append(f"{spell}{alias}: {e.help}")
    return ("verification-length policy (default fixed:γ). " + "; ".join(parts)
            + ". CURVE: a capacity preset or curve JSON (default h200-qwen3-8b)")


def parse_policy(spec: str, gamma: int, curve=None, *, record_path: bool = True) -> Policy:
    """'fixed[:N]', 'threshold[:T]', 'threshold-a[:T]', or a curve policy ('hardware', 'alg1',
    'async', 'retrospective', their aliases) built on ``curve`` (a curve object or None).

    A curve part in the spec ('hardware:NAME') is refused: names and paths are resolved by
    ``dspark_viz.load.policy_spec.policy_from_spec``.
    """
    name, _, arg = spec.strip().partition(":")
    e = policy_entry(name)
    if arg and not e.arg:
        raise ConfigError(f"bad policy {spec!r}: {e.name} takes its capacity curve as an object, "
                          "not a name (resolve it with dspark_viz.load.policy_spec.policy_from_spec)")
    try:
        return e.build(arg.strip(), gamma, curve if e.needs_curve else None, record_path)
    except ValueError as ex:
        raise ConfigError(f"bad policy {spec!r}: {one_line(ex)}") from None


__all__ = ["Fixed", "Threshold", "PolicyEntry", "POLICY_REGISTRY", "policy_names", "policy_menu",
           "sweep_specs", "policy_entry", "policy_help", "parse_policy", "RequestView", "Decision",
           "Policy"]

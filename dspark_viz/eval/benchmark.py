"""The benchmark runner: drafters × datasets × temperatures on one target, timed side by side.

Scope: decode every prompt of every dataset with every drafter run (DSpark, the DFlash
ablation, plain target decoding) through ``SpecSession``/``run_batch`` (batch size ≥ 1, one
seed per prompt so runs are comparable and deterministic), time each batch with the same
clock, and assemble the report: ``metrics.summarize`` per (temperature, drafter, dataset),
speedup against the plain run of the same batch of prompts, macro averages, greedy agreement
with plain decoding at T = 0, and the offline threshold sweep. Batches of the different
drafters are interleaved so slow drifts of a shared machine hit every drafter alike.
Not here: argument parsing and printing files (``cli.eval``), figures (``viz.eval_figures``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

from dspark_viz.config import ConfigError, DecodeConfig
from dspark_viz.decoding.engine import SpecSession, run_batch
from dspark_viz.decoding.policy import Fixed
from dspark_viz.decoding.trace import TAU_CONVENTION, Trace
from dspark_viz.eval.metrics import DEFINITIONS, macro_average, summarize, threshold_sweep
from dspark_viz.load.policy_spec import policy_from_spec

REPORT_VERSION = 1
DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))
EXTRA_DEFINITIONS = {
    "greedy_agreement": "T = 0 only: fraction of prompts whose speculative output equals plain "
                        "decoding's token for token (lossless greedy decoding gives 1.0 up to "
                        "floating-point ties between batched and single-token target passes)",
}


@dataclass(frozen=True)
class DrafterRun:
    """One column of the comparison: a label, a drafter (None for plain decoding), a mode."""

    label: str
    drafter: object | None
    mode: str  # "dspark" | "dflash" | "ar"
    name: str = ""  # where the drafter came from (path, "untrained (random)", …)

    def __post_init__(self) -> None:
        if self.mode not in ("dspark", "dflash", "ar"):
            raise ConfigError(f"drafter run {self.label!r}: unknown mode {self.mode!r}")
        if (self.mode == "ar") != (self.drafter is None):
            raise ConfigError(f"drafter run {self.label!r}: mode 'ar' goes with no drafter, "
                              f"and only with it")


@dataclass(frozen=True)
class EvalSettings:
    gamma: int = 7
    temperatures: tuple[float, ...] = (0.0, 1.0)
    max_new_tokens: int = 64
    samples: int | None = None  # cap on prompts per dataset (None = all)
    seed: int = 0
    batch_size: int = 1
    top_k: int = 0
    top_p: float = 1.0
    policy: str | None = None  # verification-length policy spec (None = fixed γ)
    calibrated: bool = True
    chat_template: str = "auto"  # "auto" | "on" | "off"
    thinking: bool = False
    thresholds: tuple[float, ...] | None = None  # threshold sweep (None = no sweep)
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be ≥ 1, got {self.batch_size}")
        if self.samples is not None and self.samples < 1:
            raise ConfigError(f"samples per dataset must be ≥ 1, got {self.samples}")
        if not self.temperatures:
            raise ConfigError("at least one temperature is needed")
        if self.chat_template not in ("auto", "on", "off"):
            raise ConfigError(f"chat template must be auto, on or off, got {self.chat_template!r}")
        for t in self.thresholds or ():
            if not 0.0 <= t <= 1.0:
                raise ConfigError(f"sweep thresholds must lie in [0, 1], got {t}")

    def decode_config(self, temperature: float, mode: str, seed: int) -> DecodeConfig:
        return DecodeConfig(gamma=self.gamma, temperature=temperature, top_k=self.top_k,
                            top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=seed,
                            mode=mode, calibrated=self.calibrated)


# ----------------------------------------------------------------------------- prompts
def chat_available(target) -> bool:
    tok = getattr(target.tokenizer, "tok", None)
    return bool(tok is not None and getattr(tok, "chat_template", None))


def encode_prompt(target, text: str, chat_template: str = "auto",
                  thinking: bool = False) -> str | list[int]:
    """The prompt as the engine should see it: raw text, or chat-template token ids."""
    has = chat_available(target)
    if chat_template == "on" and not has:
        raise ConfigError(f"target {target.name} has no chat template (use --chat-template off)")
    if chat_template == "off" or not has:
        return text
    tok = target.tokenizer.tok
    ids = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                  add_generation_prompt=True, enable_thinking=thinking)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


# ----------------------------------------------------------------------------- decoding
def make_policy(spec: str | None, gamma: int):
    """The policy of a spec ('hardware:CURVE' resolves its curve); None → fixed(γ)."""
    return Fixed(gamma) if not spec else policy_from_spec(spec, gamma)


def decode_batch(target, run: DrafterRun, prompts: Sequence[str | Sequence[int]],
                 settings: EvalSettings, temperature: float, seeds: Sequence[int], *,
                 max_new_tokens: int | None = None) -> tuple[list[Trace], float]:
    """Decode ``prompts`` in lock step (one session each); returns (traces, wall seconds)."""
    s = settings if max_new_tokens is None else replace(settings, max_new_tokens=max_new_tokens)
    policy = make_policy(s.policy if run.mode != "ar" else None, s.gamma)
    sessions = [SpecSession(target, run.drafter, s.decode_config(temperature, run.mode, sd),
                            policy=policy, request_id=i, drafter_name=run.name or run.label)
                for i, sd in enumerate(seeds)]
    t0 = time.perf_counter()
    traces = run_batch(sessions, list(prompts), policy)
    return traces, time.perf_counter() - t0


def run_eval(target, runs: Sequence[DrafterRun], datasets: dict[str, Sequence[str]],
             settings: EvalSettings, *, progress: Callable[[str], None] | None = None,
             keep_traces: bool = False) -> dict:
    """Decode everything and build the JSON-ready report (see the module docstring).

    A plain-decoding run (mode "ar") is added when ``runs`` has none: speedups need it.
    ``progress`` is called with a short label after every batch.
    """
    if not datasets or not all(datasets.values()):
        raise ConfigError("every dataset needs at least one prompt")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"drafter labels must be unique, got {labels}")
    runs = list(runs)
    if not any(r.mode == "ar" for r in runs):
        runs.append(DrafterRun("plain", None, "ar", "none"))
    sets = {name: list(p)[: settings.samples] if settings.samples else list(p)
            for name, p in datasets.items()}
    encoded = {name: [encode_prompt(target, t, settings.chat_template, settings.thinking)
                      for t in ps] for name, ps in sets.items()}
    traces, walls = _decode_all(target, runs, encoded, settings, progress)
    report = {
        "version": REPORT_VERSION,
        "target": target.name,
        "device": str(target.device),
        "settings": asdict(settings),
        "drafters": [{"label": r.label, "mode": r.mode, "name": r.name} for r in runs],
        "datasets": {ds: len(p) for ds, p in encoded.items()},
        "prompts": sets,
        "tau_convention": TAU_CONVENTION,
        "definitions": DEFINITIONS | EXTRA_DEFINITIONS,
        "results": _results(traces, walls, runs, list(encoded), settings.temperatures),
    }
    if settings.thresholds:
        report["sweep"] = _sweep(traces, runs, list(encoded), settings)
    if keep_traces:
        report["_traces"] = traces  # not JSON: (T, label, dataset) → [Trace]; commands pop it
    return report


def _decode_all(target, runs: Sequence[DrafterRun], encoded: dict[str, list], settings: EvalSettings,
                progress) -> tuple[dict, dict]:
    """Every (temperature, dataset, batch) with every run, interleaved; (traces, walls) keyed by
    (T, run label, dataset)."""
    if settings.warmup:  # first-call overheads (allocations, lazy imports) stay out of timings
        first = next(iter(encoded.values()))[0]
        for r in runs:
            decode_batch(target, r, [first], settings, settings.temperatures[0], [settings.seed],
                         max_new_tokens=min(4, settings.max_new_tokens))
    traces: dict = {}
    walls: dict = {}
    for T in settings.temperatures:
        for ds, prompts in encoded.items():
            for b in range(0, len(prompts), settings.batch_size):
                chunk = prompts[b: b + settings.batch_size]
                seeds = [settings.seed + b + i for i in range(len(chunk))]
                for r in runs:
                    tr, wall = decode_batch(target, r, chunk, settings, T, seeds)
                    traces.setdefault((T, r.label, ds), []).extend(tr)
                    walls[(T, r.label, ds)] = walls.get((T, r.label, ds), 0.0) + wall
                    if progress is not None:
                        progress(f"T={T:g} {ds} {r.label} prompts {b + len(chunk)}/{len(prompts)}")
    return traces, walls


def _results(traces: dict, walls: dict, runs: Sequence[DrafterRun], datasets: list[str],
             temperatures: Sequence[float]) -> list[dict]:
    """Per (T, run): metrics per dataset with the speedup over plain decoding, and macro rows."""
    plain = next(r for r in runs if r.mode == "ar")
    results = []
    for T in temperatures:
        for r in runs:
            per = {}
            for ds in datasets:
                m = summarize(traces[(T, r.label, ds)], walls[(T, r.label, ds)])
                base = summarize(traces[(T, plain.label, ds)], walls[(T, plain.label, ds)])
                m["speedup"] = (m["tokens_per_s"] / base["tokens_per_s"]
                                if m["tokens_per_s"] and base["tokens_per_s"] else None)
                if T == 0.0:
                    same = [a.output_ids() == p.output_ids() for a, p in
                            zip(traces[(T, r.label, ds)], traces[(T, plain.label, ds)])]
                    m["greedy_agreement"] = sum(same) / len(same)
                per[ds] = m
            macro = macro_average(per)
            if T == 0.0:
                macro["greedy_agreement"] = sum(d["greedy_agreement"] for d in per.values()) / len(per)
            results.append({"temperature": T, "drafter": r.label, "mode": r.mode,
                            "datasets": per, "macro": macro})
    return results


def _sweep(traces: dict, runs: Sequence[DrafterRun], datasets: list[str],
           settings: EvalSettings) -> list[dict]:
    """The offline threshold sweep per (T, drafter run); exact only over fixed(γ) rounds."""
    sweep = []
    exact = settings.policy in (None, "fixed", f"fixed:{settings.gamma}")
    for T in settings.temperatures:
        for r in runs:
            if r.mode == "ar":
                continue
            per = {ds: threshold_sweep(traces[(T, r.label, ds)], settings.thresholds)
                   for ds in datasets}
            if all(v is None for v in per.values()):
                continue
            sweep.append({"temperature": T, "drafter": r.label, "exact": exact, "datasets": per})
    return sweep


# ----------------------------------------------------------------------------- printing
def _f(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def format_table(report: dict) -> str:
    """The terminal table: one row per (temperature, drafter, dataset) plus macro rows."""
    g = report["settings"]["gamma"]
    head = (f"{'T':>4} {'drafter':<14} {'dataset':<12} {'τ':>5} {'acc.rate':>8} {'tok/fwd':>7} "
            f"{'tok/s':>7} {'speedup':>7}  conditional acceptance k=1..{g}")
    lines = [head, "-" * len(head)]
    for res in report["results"]:
        rows = list(res["datasets"].items()) + [("macro", res["macro"])]
        for ds, m in rows:
            cond = m.get("conditional_acceptance")
            cond_s = " ".join(_f(c, ".2f") for c in cond) if cond else ""
            lines.append(f"{res['temperature']:>4g} {res['drafter']:<14.14} {ds:<12.12} "
                         f"{_f(m.get('tau'), '.2f'):>5} {_f(m.get('acceptance_rate'), '.1%'):>8} "
                         f"{_f(m.get('tokens_per_forward'), '.2f'):>7} "
                         f"{_f(m.get('tokens_per_s'), '.1f'):>7} {_f(m.get('speedup'), '.2f'):>7}  "
                         f"{cond_s}")
    lines.append("")
    d = report["definitions"]
    for key in ("tau", "acceptance_rate", "conditional_acceptance", "tokens_per_forward",
                "speedup", "macro"):
        lines.append(f"{key}: {d[key]}")
    return "\n".join(lines)


def format_sweep(report: dict) -> str:
    lines = []
    for s in report.get("sweep", []):
        for ds, rows in s["datasets"].items():
            if rows is None:
                continue
            lines.append(f"threshold sweep  T={s['temperature']:g}  {s['drafter']}  {ds}"
                         + ("" if s["exact"] else "  (recorded under a non-fixed policy: capped)"))
            lines.append(f"  {'t':>4} {'accepted/step':>13} {'rejected/step':>13} {'acc.rate':>8} {'τ':>5}")
            for r in rows:
                lines.append(f"  {r['threshold']:>4.2f} {r['accepted_per_step']:>13.2f} "
                             f"{r['rejected_per_step']:>13.2f} {_f(r['acceptance_rate'], '.1%'):>8} "
                             f"{r['tau']:>5.2f}")
    return "\n".join(lines)


__all__ = ["DrafterRun", "EvalSettings", "encode_prompt", "chat_available", "make_policy",
           "decode_batch", "run_eval", "format_table", "format_sweep", "DEFAULT_THRESHOLDS"]

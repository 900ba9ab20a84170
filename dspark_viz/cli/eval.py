"""``dspark-viz eval`` and ``dspark-viz calibrate``: parsing, printing, files.

Scope: the command-line edge of ``eval.benchmark`` and ``eval.calibration`` — build drafter
runs and prompt sets from arguments, print the tables with their definitions, write
``--json`` reports, figures (interactive HTML always; PNG through plotly/kaleido when a
Chrome/Chromium is available, otherwise said so on the terminal), trace files, and the STS
``calibration.json`` beside the drafter. No metric or fitting logic lives here.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from dspark_viz.cli.common import (GAMMA, SEED, TEMPERATURE, TOKENS, TOP_K, TOP_P, Bound, CLIError,
                                   add_decode_args, bounds, count, outputs)
from dspark_viz.decoding.trace import Trace
from dspark_viz.drafter.model import DSparkDrafter
from dspark_viz.drafter.registry import resolve_drafter, shipped_drafter_path
from dspark_viz.errors import one_line
from dspark_viz.eval import calibration as C
from dspark_viz.eval.benchmark import (DEFAULT_THRESHOLDS, DrafterRun, EvalSettings, decode_batch,
                                       encode_prompt, format_sweep, format_table, run_eval)
from dspark_viz.eval.prompts import builtin_sets, dataset_name, read_turns_jsonl
from dspark_viz.io import write_json_atomic
from dspark_viz.targets import load_target
from dspark_viz.viz import eval_figures as ef

MODES = ("dspark", "dflash")
THRESHOLD = Bound(0.0, 1.0)  # a confidence threshold
PROMPT_ARGS = dict(samples=count(1), batch_size=count(1, 4096))


# ----------------------------------------------------------------------------- figures
def save_figures(figs: dict, outdir: Path, *, png: bool = True) -> tuple[list[Path], str | None]:
    """Write ``name.html`` (plotly.js beside it, works offline) and ``name.png`` per figure.

    Returns (written paths, why PNG export failed or None).
    """
    import plotly.io as pio
    from plotly.offline import get_plotlyjs
    outdir.mkdir(parents=True, exist_ok=True)
    js = outdir / "plotly.min.js"
    if not js.exists():
        js.write_text(get_plotlyjs(), encoding="utf-8")
    written = []
    for name, fig in figs.items():
        p = outdir / f"{name}.html"
        fig.write_html(p, include_plotlyjs="directory")
        written.append(p)
    if not png or not figs:
        return written, None
    pngs = [outdir / f"{name}.png" for name in figs]
    try:
        pio.write_images(list(figs.values()), pngs, format="png", width=1200, scale=1)
    except Exception as e:  # kaleido missing, no Chrome, sandbox…: keep the HTML, say why
        return written, f"{type(e).__name__}: {one_line(e)[:200]}"
    return written + pngs, None


def _print_figures(written: list[Path], png_error: str | None) -> None:
    for p in written:
        print(f"figure written to {p}")
    if png_error:
        print(f"PNG export unavailable ({png_error}); the interactive HTML figures were written. "
              "PNG needs `pip install kaleido` and a Chrome/Chromium (Debian: apt-get install chromium).")


def _floats(spec: str, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise CLIError(f"{what}: expected comma-separated numbers, got {spec!r}") from None
    if not vals or not all(math.isfinite(v) for v in vals):
        raise CLIError(f"{what}: expected comma-separated numbers, got {spec!r}")
    return vals


def _datasets(a) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    if a.prompts != "none" and (a.prompts is not None or not a.data):
        sets.update(builtin_sets(a.prompts))
    for path in a.data or []:
        name = dataset_name(path)
        if name in sets:
            raise CLIError(f"two eval sets are named {name!r}; rename one file")
        sets[name] = read_turns_jsonl(path)
    if not sets:
        raise CLIError("no prompts: give --prompts and/or --data")
    return sets


def _add_prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", default=None,
                   help="built-in prompt sets: code,math,prose, 'all' (default when no --data) "
                        "or 'none'")
    p.add_argument("--data", action="append", type=Path, default=None, metavar="JSONL",
                   help="eval set in DeepSpec layout ({'turns': [...]} per line, first turn "
                        "used); repeatable")
    p.add_argument("--samples", type=int, default=None, help="cap on prompts per dataset")
    p.add_argument("--batch-size", type=int, default=1, help="requests decoded in lock step")
    p.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                   help="wrap prompts in the target's chat template (auto: when it has one)")
    p.add_argument("--thinking", action="store_true",
                   help="enable_thinking=True for chat templates that support it (Qwen3)")


# ----------------------------------------------------------------------------- eval
def _drafter_runs(a, target) -> list:
    if a.drafters:
        specs = [s.strip() for s in a.drafters.split(",") if s.strip()]
    elif a.drafter is not None:
        specs = [a.drafter if a.drafter == "none" else f"{a.drafter}:{a.mode or 'dspark'}"]
    else:
        specs = ["default:dspark", "default:dflash"]
    parsed = []
    for s in specs:
        name, _, mode = s.rpartition(":")
        if not name or mode not in MODES + ("ar",):
            name, mode = s, ("ar" if s == "none" else "dspark")
        if (name == "none") != (mode == "ar"):
            raise CLIError(f"--drafters {s!r}: 'none' is plain decoding and takes no mode")
        parsed.append((name, mode))
    modes = [m for _, m in parsed]
    runs, cache = [], {}
    for name, mode in parsed:
        if mode == "ar":
            runs.append(DrafterRun("plain", None, "ar", "none"))
            continue
        key = (name, mode if name == "default" else "")
        if key not in cache:
            cache[key] = resolve_drafter(name, target, kind=mode)
        drafter, where = cache[key]
        label = mode if modes.count(mode) == 1 else f"{Path(name).name}:{mode}"
        runs.append(DrafterRun(label, drafter, mode, where))
    return runs


def _eval_settings(a: argparse.Namespace) -> EvalSettings:
    if a.markov_off or a.force_ell is not None:
        raise CLIError("eval compares whole drafters: use --drafters PATH:dflash for the "
                       "Markov-off ablation (--markov-off/--force-ell are for `trace`)")
    GAMMA.check("--gamma", a.gamma)
    temps = ((a.temperature,) if a.temperature is not None
             else _floats(a.temperatures, "--temperatures"))
    for t in temps:
        TEMPERATURE.check("--temperature" if a.temperature is not None else "--temperatures", t)
    thresholds = None
    if a.sweep_threshold is not None:
        thresholds = (DEFAULT_THRESHOLDS if a.sweep_threshold == "default"
                      else _floats(a.sweep_threshold, "--sweep-threshold"))
        for x in thresholds:
            THRESHOLD.check("--sweep-threshold", x)
    return EvalSettings(gamma=a.gamma, temperatures=temps, max_new_tokens=a.max_new_tokens,
                        samples=a.samples, seed=a.seed, batch_size=a.batch_size,
                        top_k=a.top_k, top_p=a.top_p, policy=a.policy,
                        calibrated=not a.no_calibration, chat_template=a.chat_template,
                        thinking=a.thinking, thresholds=thresholds)


def _write_eval_traces(traces: dict, root: Path) -> None:
    n = 0
    for (T, label, ds), trs in traces.items():
        d = root / f"T{T:g}" / label.replace("/", "_") / ds
        d.mkdir(parents=True, exist_ok=True)
        for i, tr in enumerate(trs):
            tr.save(d / f"{i:04d}.json")
            n += 1
    print(f"{n} traces written under {root}")


def _write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report, indent=1, ensure_ascii=False)
    print(f"report written to {path}")


def _cmd_eval(a: argparse.Namespace) -> int:
    settings = _eval_settings(a)
    temps, thresholds = settings.temperatures, settings.thresholds
    sets = _datasets(a)
    target = load_target(a.target, device=a.device)
    runs = _drafter_runs(a, target)
    n_batches = sum(math.ceil(min(len(p), a.samples or len(p)) / a.batch_size) for p in sets.values())
    total = n_batches * len(temps) * (len(runs) + (0 if any(r.mode == "ar" for r in runs) else 1))
    with tqdm(total=total, desc="eval", unit="batch", disable=a.quiet, file=sys.stderr) as bar:
        def progress(msg: str) -> None:
            bar.set_postfix_str(msg, refresh=False)
            bar.update(1)
        report = run_eval(target, runs, sets, settings, progress=progress,
                          keep_traces=a.save_traces is not None)
    traces = report.pop("_traces", None)
    print(f"target: {report['target']}   device: {report['device']}   γ={a.gamma}   "
          f"max new tokens {a.max_new_tokens}   policy: {a.policy or f'fixed({a.gamma})'}")
    for d in report["drafters"]:
        print(f"  {d['label']:<14} mode {d['mode']:<6} {d['name']}")
    print(format_table(report))
    if thresholds:
        print()
        print(format_sweep(report))
        print(f"sweep: {report['definitions']['sweep']}")
    if a.json:
        _write_report(a.json, report)
    if traces is not None:
        _write_eval_traces(traces, a.save_traces)
    if a.plots:
        figs = eval_figures(report)
        _print_figures(*save_figures(figs, a.plots, png=not a.no_png))
    return 0


def eval_figures(report: dict) -> dict:
    figs = {}
    for T in dict.fromkeys(r["temperature"] for r in report["results"]):
        figs[f"tau_T{T:g}"] = ef.tau_figure(report, T)
        figs[f"conditional_acceptance_T{T:g}"] = ef.conditional_acceptance_figure(report, T)
        figs[f"cumulative_survival_T{T:g}"] = ef.conditional_acceptance_figure(
            report, T, key="cumulative_survival")
    figs["speedup"] = ef.speedup_figure(report)
    for s in report.get("sweep", []):
        figs[f"threshold_sweep_{s['drafter'].replace('/', '_').replace(':', '_')}_T{s['temperature']:g}"] = \
            ef.sweep_figure(s)
    return figs


# ----------------------------------------------------------------------------- calibrate
def _calibration_traces(a, target, drafter) -> list:
    if a.traces:
        files = []
        for p in a.traces:
            files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
        if not files:
            raise CLIError("--traces: no trace files found")
        traces = [Trace.load(f) for f in files]
        for f, t in zip(files, traces):
            if t.meta.target != target.name or t.meta.gamma != a.gamma:
                raise CLIError(f"--traces: {f} was recorded on {t.meta.target} at γ={t.meta.gamma}, "
                               f"not on {target.name} at γ={a.gamma}")
        return traces
    sets = _datasets(a)
    prompts = [t for ps in sets.values() for t in (ps[: a.samples] if a.samples else ps)]
    settings = EvalSettings(gamma=a.gamma, temperatures=(a.temperature,),
                            max_new_tokens=a.max_new_tokens, seed=a.seed, batch_size=a.batch_size,
                            top_k=a.top_k, top_p=a.top_p, policy=None, calibrated=False,
                            chat_template=a.chat_template, thinking=a.thinking)
    run = DrafterRun("dspark", drafter, "dspark")
    enc = [encode_prompt(target, t, a.chat_template, a.thinking) for t in prompts]
    traces = []
    for b in tqdm(range(0, len(enc), a.batch_size), desc="collect rounds", unit="batch",
                  disable=a.quiet, file=sys.stderr):
        chunk = enc[b: b + a.batch_size]
        tr, _ = decode_batch(target, run, chunk, settings, a.temperature,
                             [a.seed + b + i for i in range(len(chunk))])
        traces.extend(tr)
    if a.save_traces is not None:
        a.save_traces.mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(traces):
            t.save(a.save_traces / f"{i:04d}.json")
        print(f"{len(traces)} traces written under {a.save_traces} (reusable by --traces)")
    return traces


def _drafter_to_calibrate(a, target) -> tuple[DSparkDrafter, Path]:
    if a.drafter == "default":
        path = shipped_drafter_path(target.name, "dspark")
        if path is None:
            raise CLIError(f"no shipped drafter for {target.name}: pass --drafter DIR")
    else:
        path = Path(a.drafter)
    drafter = DSparkDrafter.from_pretrained(path, target=target)
    if drafter.confidence is None:
        raise CLIError(f"drafter {path} has no confidence head: nothing to calibrate")
    return drafter, path


def _print_positions(rep: dict, temps: Sequence[float]) -> None:
    """The per-position before/after table of a calibration report."""
    head = (f"{'k':>2} {'T_k':>6} {'n':>5} {'ECE raw→STS':>15} {'AUROC raw/STS':>14} "
            f"{'Brier raw→STS':>15} {'mean a_k raw→STS':>17} {'observed':>8} {'floor':>6}")
    print(head)
    print("-" * len(head))

    def f(x, s):
        return "–" if x is None else format(x, s)

    for k, (b, t) in enumerate(zip(rep["before"], rep["after"])):
        print(f"{k + 1:>2} {temps[k]:>6.3f} {b['n']:>5} "
              f"{f(b['ece'], '.1%'):>7}→{f(t['ece'], '.1%'):<7} "
              f"{f(b['auroc'], '.3f'):>6}/{f(t['auroc'], '.3f'):<7} "
              f"{f(b['brier'], '.3f'):>7}→{f(t['brier'], '.3f'):<7} "
              f"{f(b['mean_pred'], '.3f'):>8}→{f(t['mean_pred'], '.3f'):<8} {f(b['observed'], '.3f'):>8} "
              f"{f(t['ece_floor'], '.1%'):>6}")
    print(f"mean ECE {f(rep['mean_ece_before'], '.2%')} → {f(rep['mean_ece_after'], '.2%')}")
    print(f"({C.DEFINITIONS['target']}; ECE: {C.DEFINITIONS['ece']}; floor: "
          f"{C.DEFINITIONS['ece_floor']})")


def _compact_positions(rep: dict, temps: Sequence[float]) -> list[dict]:
    """Per position, the numbers ``calibration.json`` keeps beside the temperatures."""
    return [{"k": b["k"], "T": temps[i], "n": b["n"], "ece_before": b["ece"],
             "ece_after": t["ece"], "auroc_before": b["auroc"], "auroc_after": t["auroc"],
             "brier_before": b["brier"], "brier_after": t["brier"],
             "mean_pred_before": b["mean_pred"], "mean_pred_after": t["mean_pred"],
             "observed": b["observed"], "ece_floor": t["ece_floor"]}
            for i, (b, t) in enumerate(zip(rep["before"], rep["after"]))]


def _cmd_calibrate(a: argparse.Namespace) -> int:
    if a.traces and a.save_traces is not None:
        raise CLIError("--save-traces writes decoded rounds: it does not go with --traces")
    target = load_target(a.target, device=a.device)
    drafter, path = _drafter_to_calibrate(a, target)
    traces = _calibration_traces(a, target, drafter)
    fit_idx, ho_idx = C.split_rounds(len(traces), a.holdout, a.seed)
    fit_tr = [traces[i] for i in fit_idx]
    ho_tr = [traces[i] for i in ho_idx] or fit_tr
    fit_data = C.collect_pairs(fit_tr, a.gamma)
    ho_data = C.collect_pairs(ho_tr, a.gamma)
    fit = C.fit_sts(fit_data, n_bins=a.bins)
    rep_fit = C.calibration_report(fit_data, fit.temperatures, a.bins)
    rep_ho = C.calibration_report(ho_data, fit.temperatures, a.bins)
    where = "held-out" if len(ho_idx) else "fitting (no held-out prompts: --holdout 0)"
    print(f"drafter: {path}   target: {target.name}   γ={a.gamma}   T={a.temperature:g}")
    print(f"prompts: {len(fit_tr)} fitting ({len(fit_data)} rounds), {len(ho_idx)} held-out "
          f"({len(ho_data) if len(ho_idx) else 0} rounds); report on the {where} rounds")
    _print_positions(rep_ho, fit.temperatures)
    extra = {"n_bins": a.bins, "gamma": a.gamma, "temperature": a.temperature,
             "fit_rounds": len(fit_data), "report_on": where,
             "per_position": _compact_positions(rep_ho, fit.temperatures),
             "definitions": C.DEFINITIONS}
    if a.dry_run:
        print("--dry-run: calibration.json not written")
    else:
        out = C.save_calibration(path, fit.temperatures, extra)
        print(f"calibration written to {out} (applied automatically when the drafter is loaded)")
    if a.json:
        _write_report(a.json, {"drafter": str(path), "target": target.name,
                               "temperatures": fit.temperatures, "fit": rep_fit,
                               "report": rep_ho, "report_on": where})
    if a.plots:
        ks = [r["k"] for r in rep_ho["before"] if r["n"]]
        figs = {"reliability": ef.reliability_figure(rep_ho, ks[:8],
                                                     title=f"Reliability of a_k ({where} rounds)"),
                "sts_summary": ef.calibration_summary_figure(rep_ho)}
        _print_figures(*save_figures(figs, a.plots, png=not a.no_png))
    return 0


# ----------------------------------------------------------------------------- registration
def register(sub) -> None:
    p = sub.add_parser("eval", help="benchmark drafters: τ, acceptance, per-position stats, speedup",
                       description="Decode built-in and/or JSONL prompt sets with several drafters "
                                   "and plain decoding on one target; print τ (with the +1 target "
                                   "token), acceptance rate, per-position survival and conditional "
                                   "acceptance, tokens per target pass and wall-clock speedup.")
    add_decode_args(p)
    p.set_defaults(temperature=None, drafter=None)
    p.add_argument("--drafters", default=None,
                   help="comma list of DRAFTER[:MODE] (DRAFTER: checkpoint dir, default, random, "
                        "none; MODE: dspark|dflash). Default: default:dspark,default:dflash. "
                        "Plain decoding is always added as the speedup baseline")
    p.add_argument("--temperatures", default="0,1",
                   help="comma list (default 0,1); a single --temperature overrides it")
    _add_prompt_args(p)
    p.add_argument("--sweep-threshold", nargs="?", const="default", default=None,
                   metavar="T1,T2,…", help="static confidence-threshold sweep (Figure 5); "
                                           "default thresholds 0.0,0.1,…,0.9")
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    p.add_argument("--plots", type=Path, default=None, help="directory for PNG + HTML figures")
    p.add_argument("--no-png", action="store_true", help="HTML figures only")
    p.add_argument("--save-traces", type=Path, default=None,
                   help="directory to write every trace (reusable by `calibrate --traces`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    bounds(p, **PROMPT_ARGS)
    outputs(p, files=("json",), dirs=("plots", "save_traces"))
    p.set_defaults(func=_cmd_eval)

    c = sub.add_parser("calibrate", help="fit Sequential Temperature Scaling for a drafter",
                       description="Decode prompts with the drafter at fixed ℓ = γ (or read "
                                   "traces), collect (c_k, realized prefix survival), fit STS on "
                                   "the fitting prompts, report ECE/AUROC/Brier per position on "
                                   "held-out prompts, and write calibration.json beside the "
                                   "drafter.")
    c.add_argument("--target", default="embedded")
    c.add_argument("--drafter", default="default",
                   help="drafter checkpoint directory (or 'default': the shipped one)")
    c.add_argument("--gamma", type=int, default=7)
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--top-k", type=int, default=0)
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-new-tokens", type=int, default=96)
    c.add_argument("--device", default=None)
    _add_prompt_args(c)
    c.add_argument("--traces", action="append", type=Path, default=None,
                   help="trace files or directories to use instead of decoding (rounds recorded "
                        "at fixed ℓ = γ); repeatable")
    c.add_argument("--save-traces", type=Path, default=None,
                   help="directory to write the decoded traces (reusable by --traces: several "
                        "processes can decode parts of a prompt set, one calibrate reads them all)")
    c.add_argument("--holdout", type=float, default=0.3,
                   help="fraction of prompts (traces) held out for the report (default 0.3)")
    c.add_argument("--bins", type=int, default=10, help="equal-width ECE bins (default 10)")
    c.add_argument("--dry-run", action="store_true", help="do not write calibration.json")
    c.add_argument("--json", type=Path, default=None, help="write the full report here")
    c.add_argument("--plots", type=Path, default=None, help="directory for reliability diagrams")
    c.add_argument("--no-png", action="store_true")
    c.add_argument("--quiet", action="store_true")
    bounds(c, gamma=GAMMA, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P, seed=SEED,
           max_new_tokens=TOKENS, holdout=Bound(0.0, 1.0, hi_open=True), bins=count(2, 1000),
           **PROMPT_ARGS)
    outputs(c, files=("json",), dirs=("plots", "save_traces"))
    c.set_defaults(func=_cmd_calibrate)


__all__ = ["register", "save_figures", "eval_figures"]

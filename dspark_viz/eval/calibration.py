"""Confidence calibration: metrics, reliability bins and Sequential Temperature Scaling (STS).

Scope (pure numpy, no models): collect (c_k, realized prefix survival) pairs from traces; ECE,
AUROC, Brier and reliability bins of a predicted probability against 0/1 outcomes; fit STS
(for k = 1..γ in order, a 1-D grid search of the temperature T_k of the logit of
c_k that minimises the ECE of the cumulative product a_k = Π_{i≤k} σ(logit_i / T_i), the
earlier T_i already fixed) and apply it; per-position before/after reports; save/load of
``calibration.json`` beside a drafter in the format ``DSparkDrafter.from_pretrained`` reads
(``{"temperatures": [T_1..T_γ], …}``; the engine then uses c_k = σ(logit_k / T_k), positions
past the fitted ones reusing the last T). Not here: decoding (``benchmark``), figures.

What is calibrated is the prefix survival a_k (what the scheduler multiplies into τ*), against
the realized outcome y_k = 1 iff the first k drafts of the round were all accepted.

Shapes: N rounds, γ positions; arrays are [N, γ] with an ``observed`` mask (a position is
observed when it was verified, or when an earlier rejection already settled y_k = 0; positions
after an accepted drafted EOS, or beyond a shorter ℓ with the prefix intact, are not).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dspark_viz.config import ConfigError
from dspark_viz.decoding.trace import Trace
from dspark_viz.eval.metrics import view_round
from dspark_viz.io import read_json_capped, write_json_atomic

CALIBRATION_FILE = "calibration.json"
MAX_CALIBRATION_BYTES = 16 << 20
DEFAULT_BINS = 10
DEFINITIONS = {
    "ece": "expected calibration error: Σ_b (n_b / N)·|mean predicted_b − observed rate_b| over "
           "equal-width bins of the predicted probability",
    "auroc": "area under the ROC curve of the predicted probability for y (Mann–Whitney, ties "
             "count ½); None when all outcomes are equal",
    "brier": "mean (predicted − y)²",
    "ece_floor": "mean ECE of the same predictions against outcomes drawn from them (y ~ "
                 "Bernoulli(predicted), 200 seeded draws): what a perfectly calibrated predictor "
                 "would measure on this many rounds",
    "target": "predicted a_k = Π_{i≤k} c_i vs y_k = 1 iff the first k drafts were all accepted",
}
_EPS = 1e-12


class CalibrationError(ConfigError):
    """Calibration data or a calibration file is unusable; one-line message."""


# ----------------------------------------------------------------------------- data
@dataclass
class CalibrationData:
    """(confidence logit, realized prefix survival) pairs from recorded rounds."""

    logits: np.ndarray  # [N, γ] raw confidence logits
    survived: np.ndarray  # [N, γ] 1.0 iff the first k drafts were accepted
    observed: np.ndarray  # [N, γ] bool

    @property
    def gamma(self) -> int:
        return int(self.logits.shape[1])

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def subset(self, idx) -> "CalibrationData":
        return CalibrationData(self.logits[idx], self.survived[idx], self.observed[idx])


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 1e-15, 1.0 - 1e-15)
    return np.log(c) - np.log1p(-c)


def collect_pairs(traces: Sequence[Trace], gamma: int | None = None) -> CalibrationData:
    """Rounds with raw confidences → CalibrationData, ``gamma`` positions wide (None: the largest
    drafted block). Positions past a shorter round are unobserved; a round drafting more than
    ``gamma`` tokens, or a confidence that is not a probability, is a CalibrationError."""
    rows = [r for t in traces for r in t.rounds if r.draft and r.draft[0].conf_raw is not None]
    if not rows:
        raise CalibrationError("no rounds with confidences to calibrate on (plain decoding, or a "
                               "drafter without a confidence head)")
    longest = max(len(r.draft) for r in rows)
    if gamma is not None and longest > gamma:
        raise CalibrationError(f"a round drafted {longest} tokens, more than γ={gamma}")
    g = longest if gamma is None else gamma
    logits = np.zeros((len(rows), g))
    surv = np.zeros((len(rows), g))
    obs = np.zeros((len(rows), g), dtype=bool)
    for i, r in enumerate(rows):
        v = view_round(r)
        try:
            conf = np.array([d.conf_raw for d in r.draft], dtype=np.float64)
        except (TypeError, ValueError):
            raise CalibrationError(f"round {r.index}: confidences must all be numbers") from None
        if not np.all((conf >= 0) & (conf <= 1)):
            raise CalibrationError(f"round {r.index}: confidences must lie in [0, 1]")
        logits[i, : len(conf)] = _logit(conf)
        k = np.arange(1, g + 1)
        surv[i] = (k <= v.accepted).astype(float)
        rejected = v.accepted < v.ell_eff  # a real rejection at accepted + 1 settles later y_k = 0
        obs[i] = ((k <= v.ell_eff) | rejected) & (k <= len(conf))
    return CalibrationData(logits, surv, obs)


# ----------------------------------------------------------------------------- metrics
def _check(pred: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, y = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if pred.shape != y.shape:
        raise CalibrationError(f"predictions {pred.shape} and outcomes {y.shape} differ in length")
    return pred, y


def reliability_bins(pred, y, n_bins: int = DEFAULT_BINS) -> list[dict]:
    """Equal-width bins over [0, 1]: count, mean predicted, observed rate (None when empty)."""
    pred, y = _check(pred, y)
    idx = np.minimum((pred * n_bins).astype(int), n_bins - 1)
    cnt = np.bincount(idx, minlength=n_bins)
    sp = np.bincount(idx, weights=pred, minlength=n_bins)
    sy = np.bincount(idx, weights=y, minlength=n_bins)
    return [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": int(cnt[b]),
             "mean_pred": float(sp[b] / cnt[b]) if cnt[b] else None,
             "observed": float(sy[b] / cnt[b]) if cnt[b] else None} for b in range(n_bins)]


def ece(pred, y, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error with equal-width bins (0 for empty input)."""
    pred, y = _check(pred, y)
    if pred.size == 0:
        return 0.0
    idx = np.minimum((pred * n_bins).astype(int), n_bins - 1)
    sp = np.bincount(idx, weights=pred, minlength=n_bins)
    sy = np.bincount(idx, weights=y, minlength=n_bins)
    return float(np.abs(sp - sy).sum() / pred.size)


def ece_floor(pred, n_bins: int = DEFAULT_BINS, n_sims: int = 200, seed: int = 0) -> float:
    """Expected ECE of a *perfectly calibrated* predictor with these predictions: the mean ECE of
    ``pred`` against outcomes drawn y ~ Bernoulli(pred), over ``n_sims`` draws (seeded).

    The finite-sample level below which a measured ECE says nothing: with N rounds, each bin's
    observed rate scatters by about √(p(1−p)/n_b) even when p is exact.
    """
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if pred.size == 0:
        return 0.0
    if n_sims < 1:
        raise CalibrationError(f"ece_floor needs n_sims ≥ 1, got {n_sims}")
    rng = np.random.default_rng(seed)
    return float(np.mean([ece(pred, (rng.random(pred.size) < pred).astype(np.float64), n_bins)
                          for _ in range(n_sims)]))


def auroc(pred, y) -> float | None:
    """Probability that a random positive scores above a random negative (ties ½)."""
    pred, y = _check(pred, y)
    pos = y > 0.5
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return None
    _, inv, cnt = np.unique(pred, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(cnt) - cnt + (cnt + 1) / 2.0)[inv]  # 1-based ranks, ties averaged
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def brier(pred, y) -> float:
    pred, y = _check(pred, y)
    return float(np.mean((pred - y) ** 2)) if pred.size else 0.0


# ----------------------------------------------------------------------------- STS
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def apply_sts(logits: np.ndarray, temps: Sequence[float] | None) -> np.ndarray:
    """c [N, γ] = σ(logit / T_k); positions past the fitted ones reuse the last T.

    Same rule as ``dspark_viz.decoding.engine.calibrate_conf`` (vectorised over rounds).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not temps:
        return sigmoid(logits)
    g = logits.shape[-1]
    t = np.array([temps[min(k, len(temps) - 1)] for k in range(g)], dtype=np.float64)
    return sigmoid(logits / t)


def default_grid() -> np.ndarray:
    """Log-spaced temperatures 0.02 … 200 (373 points, ≈2.5 % apart).

    Wide on purpose: an uninformative head (logits near a constant) needs a large temperature
    to flatten c_k toward ½, and a timid one a small temperature to sharpen it.
    """
    return np.exp(np.linspace(math.log(0.02), math.log(200.0), 373))


@dataclass
class STSFit:
    temperatures: list[float]
    ece_before: list[float | None]  # ECE of a_k on the fitting data, raw
    ece_after: list[float | None]  # … with the fitted temperatures
    n: list[int]  # observed rounds per position


def _best_temperature(prev: np.ndarray, z: np.ndarray, y: np.ndarray, grid: np.ndarray,
                      n_bins: int) -> tuple[float, float]:
    scores = np.array([ece(prev * sigmoid(z / t), y, n_bins) for t in grid])
    best = scores.min()
    ties = grid[scores <= best + 1e-15]
    t = float(ties[np.argmin(np.abs(np.log(ties)))])  # among equal ECEs, the least change
    return t, float(best)


def fit_sts(data: CalibrationData, *, n_bins: int = DEFAULT_BINS, grid: np.ndarray | None = None,
            refine: bool = True) -> STSFit:
    """Sequential Temperature Scaling on ``data`` (positions left to right, earlier fixed).

    A position with no observed rounds keeps the previous temperature (1.0 at k = 1).
    ``refine``: a second, 10× finer grid around the best coarse temperature.
    """
    grid = default_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(grid > 0):
        raise CalibrationError("the temperature grid must be a non-empty list of positive numbers")
    if len(data) == 0:
        raise CalibrationError("no calibration rounds")
    temps: list[float] = []
    before, after, ns = [], [], []
    prev_cal = np.ones(len(data))  # a_{k−1} calibrated, [N]
    prev_raw = np.ones(len(data))
    for k in range(data.gamma):
        z, y, m = data.logits[:, k], data.survived[:, k], data.observed[:, k]
        raw_k = prev_raw * sigmoid(z)
        ns.append(int(m.sum()))
        if not m.any():
            t = temps[-1] if temps else 1.0
            before.append(None)
            after.append(None)
        else:
            t, _ = _best_temperature(prev_cal[m], z[m], y[m], grid, n_bins)
            if refine:
                fine = t * np.exp(np.linspace(-0.05, 0.05, 41))
                t, _ = _best_temperature(prev_cal[m], z[m], y[m], np.append(fine, t), n_bins)
            before.append(ece(raw_k[m], y[m], n_bins))
            after.append(ece(prev_cal[m] * sigmoid(z[m] / t), y[m], n_bins))
        temps.append(float(t))
        prev_cal = prev_cal * sigmoid(z / t)
        prev_raw = raw_k
    return STSFit(temps, before, after, ns)


# ----------------------------------------------------------------------------- reports
def position_report(data: CalibrationData, temps: Sequence[float] | None,
                    n_bins: int = DEFAULT_BINS) -> list[dict]:
    """Per position k: n, ECE, AUROC, Brier, mean predicted a_k vs observed y_k, bins."""
    a = np.cumprod(apply_sts(data.logits, temps), axis=1)  # [N, γ]
    out = []
    for k in range(data.gamma):
        m = data.observed[:, k]
        p, y = a[m, k], data.survived[m, k]
        out.append({"k": k + 1, "n": int(m.sum()),
                    "ece": ece(p, y, n_bins) if m.any() else None,
                    "auroc": auroc(p, y) if m.any() else None,
                    "brier": brier(p, y) if m.any() else None,
                    "mean_pred": float(p.mean()) if m.any() else None,
                    "observed": float(y.mean()) if m.any() else None,
                    "ece_floor": ece_floor(p, n_bins) if m.any() else None,
                    "bins": reliability_bins(p, y, n_bins)})
    return out


def calibration_report(data: CalibrationData, temps: Sequence[float],
                       n_bins: int = DEFAULT_BINS) -> dict:
    """Before (raw, T = 1) and after (``temps``) per position, plus averages."""
    before = position_report(data, None, n_bins)
    after = position_report(data, temps, n_bins)

    def avg(rows, key):
        v = [r[key] for r in rows if r[key] is not None]
        return sum(v) / len(v) if v else None

    return {"rounds": len(data), "n_bins": n_bins, "temperatures": list(map(float, temps)),
            "before": before, "after": after,
            "mean_ece_before": avg(before, "ece"), "mean_ece_after": avg(after, "ece"),
            "definitions": DEFINITIONS}


def split_rounds(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (fit, held-out) index split of n rounds."""
    if not 0.0 <= holdout < 1.0:
        raise CalibrationError(f"held-out fraction must be in [0, 1), got {holdout}")
    perm = np.random.default_rng(seed).permutation(n)
    n_ho = int(round(n * holdout))
    return np.sort(perm[n_ho:]), np.sort(perm[:n_ho])


# ----------------------------------------------------------------------------- files
def save_calibration(drafter_dir: str | os.PathLike, temps: Sequence[float],
                     extra: dict | None = None) -> Path:
    """Write ``calibration.json`` beside a drafter (atomically); extra keys are kept alongside."""
    d = Path(drafter_dir)
    if not d.is_dir():
        raise CalibrationError(f"drafter directory {str(d)!r} does not exist")
    temps = [float(t) for t in temps]
    if not temps or not all(math.isfinite(t) and t > 0 for t in temps):
        raise CalibrationError("temperatures must be a non-empty list of positive numbers")
    payload = {"temperatures": temps, "method": "sts", "format_version": 1} | (extra or {})
    return write_json_atomic(d / CALIBRATION_FILE, payload, indent=1)


def load_calibration(path: str | os.PathLike) -> dict:
    """Read a ``calibration.json`` (or the drafter directory holding it); validates temperatures."""
    p = Path(path)
    if p.is_dir():
        p = p / CALIBRATION_FILE
    if not p.is_file():
        raise CalibrationError(f"no calibration file at {str(p)!r}")
    d = read_json_capped(p, MAX_CALIBRATION_BYTES, what="calibration file", error=CalibrationError)
    temps = d.get("temperatures") if isinstance(d, dict) else None
    if not (isinstance(temps, list) and temps and all(_positive(t) for t in temps)):
        raise CalibrationError(f"{p}: 'temperatures' must be a non-empty list of positive numbers")
    return d


def _positive(t) -> bool:
    """A finite number > 0 (not a bool; an int too large for a float is not finite)."""
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return False
    try:
        return math.isfinite(t) and t > 0
    except OverflowError:
        return False


__all__ = ["CALIBRATION_FILE", "DEFINITIONS", "CalibrationError", "CalibrationData",
           "collect_pairs", "reliability_bins", "ece", "auroc", "brier", "sigmoid", "apply_sts",
           "default_grid", "STSFit", "fit_sts", "position_report", "calibration_report",
           "split_rounds", "save_calibration", "load_calibration"]

"""Calibration: ECE/AUROC/Brier against reference implementations, STS on synthetic
over-confident scores (held-out ECE < 1 %, order preserved), pair collection from hand-built
traces, calibration.json round trip through the drafter loader and the engine."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dspark_viz.eval import calibration as C
from test_metrics import CONF_A, trace_a, trace_b


# ----------------------------------------------------------------------------- references
def ref_ece(p, y, n_bins):
    total, n = 0.0, len(p)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i in range(n) if (lo <= p[i] < hi) or (b == n_bins - 1 and p[i] == 1.0)]
        if idx:
            total += len(idx) / n * abs(sum(p[i] for i in idx) / len(idx)
                                        - sum(y[i] for i in idx) / len(idx))
    return total


def ref_auroc(p, y):
    pos = [p[i] for i in range(len(p)) if y[i] == 1]
    neg = [p[i] for i in range(len(p)) if y[i] == 0]
    s = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return s / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_auroc_brier_match_reference(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.random(60), 1 if seed == 2 else 3)  # seed 2: many ties, values on bin edges
    p[0], p[1] = 0.0, 1.0
    y = (rng.random(60) < p).astype(float)
    for nb in (5, 10):
        assert C.ece(p, y, nb) == pytest.approx(ref_ece(list(p), list(y), nb), abs=1e-12)
    assert C.auroc(p, y) == pytest.approx(ref_auroc(list(p), list(y)), abs=1e-12)
    assert C.brier(p, y) == pytest.approx(float(np.mean((p - y) ** 2)))
    bins = C.reliability_bins(p, y, 10)
    assert sum(b["count"] for b in bins) == 60
    ece_from_bins = sum(b["count"] / 60 * abs(b["mean_pred"] - b["observed"])
                        for b in bins if b["count"])
    assert ece_from_bins == pytest.approx(C.ece(p, y, 10))


def test_metric_edge_cases():
    assert C.auroc([0.2, 0.9], [1, 1]) is None
    assert C.auroc([0.1, 0.9], [0, 1]) == 1.0 and C.auroc([0.9, 0.1], [0, 1]) == 0.0
    assert C.ece([], []) == 0.0
    with pytest.raises(C.CalibrationError):
        C.ece([0.1, 0.2], [1])


def test_ece_floor_matches_the_binomial_scatter():
    """All predictions ½ in one bin: the floor is E|Binomial(N, ½)/N − ½| (exact sum), it shrinks
    like 1/√N, is 0 for certain predictions and is reproducible for a seed."""
    from math import comb
    for n in (10, 40):
        exact = sum(comb(n, j) * 0.5 ** n * abs(j / n - 0.5) for j in range(n + 1))
        assert C.ece_floor(np.full(n, 0.5), n_bins=10, n_sims=20000) == pytest.approx(exact, rel=0.03)
    small, big = (C.ece_floor(np.full(n, 0.3), n_sims=400) for n in (100, 10000))
    assert big == pytest.approx(small / 10, rel=0.2)
    assert C.ece_floor(np.array([0.0, 1.0, 1.0])) == 0.0 and C.ece_floor([]) == 0.0
    p = np.random.default_rng(0).random(500)
    assert C.ece_floor(p, seed=4) == C.ece_floor(p, seed=4)
    with pytest.raises(C.CalibrationError):
        C.ece_floor(p, n_sims=0)


def _synthetic(n, rng, gamma=7, overconfidence=3.0):
    z = rng.normal(1.0, 1.5, (n, gamma)) - 0.1 * np.arange(gamma)  # true logits of c_k
    accept = rng.random((n, gamma)) < C.sigmoid(z)
    survived = np.cumprod(accept, axis=1).astype(float)
    return C.CalibrationData(overconfidence * z, survived, np.ones((n, gamma), dtype=bool))


def test_sts_fixes_overconfidence_and_preserves_order():
    rng = np.random.default_rng(0)
    fit_data, held = _synthetic(20000, rng), _synthetic(40000, rng)
    fit = C.fit_sts(fit_data)
    assert fit.temperatures[0] == pytest.approx(3.0, rel=0.15)
    rep = C.calibration_report(held, fit.temperatures)
    before = [r["ece"] for r in rep["before"]]
    after = [r["ece"] for r in rep["after"]]
    assert min(before) > 0.03  # the raw scores really are miscalibrated
    assert max(after) < 0.01, after  # held-out ECE under 1 % at every position
    raw, cal = C.apply_sts(held.logits, None), C.apply_sts(held.logits, fit.temperatures)
    for k in range(held.gamma):  # temperature scaling keeps the ranking of c_k
        order = np.argsort(raw[:, k], kind="stable")
        assert np.all(np.diff(cal[order, k]) >= 0)
    assert rep["after"][0]["auroc"] == pytest.approx(rep["before"][0]["auroc"])
    assert rep["mean_ece_after"] < rep["mean_ece_before"] / 5


def test_sts_position_without_data_keeps_previous_temperature():
    rng = np.random.default_rng(1)
    d = _synthetic(3000, rng, gamma=3)
    d.observed[:, 2] = False
    fit = C.fit_sts(d)
    assert fit.temperatures[2] == fit.temperatures[1] and fit.n[2] == 0
    assert fit.ece_after[2] is None


def test_apply_sts_matches_engine_rule():
    from dspark_viz.decoding.engine import calibrate_conf
    rng = np.random.default_rng(3)
    lg = rng.normal(0, 2, (5, 6))
    for temps in (None, [2.0], [0.5, 1.5, 3.0]):
        got = C.apply_sts(lg, temps)
        for i in range(5):
            assert got[i] == pytest.approx(calibrate_conf(lg[i], temps), abs=1e-12)


def test_collect_pairs_from_hand_built_traces():
    d = C.collect_pairs([trace_a(), trace_b()])
    assert d.logits.shape == (5, 4)
    assert C.sigmoid(d.logits[:4]) == pytest.approx(np.array(CONF_A), abs=1e-9)
    assert d.survived.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0],
                                   [1, 0, 0, 0]]
    # drafted EOS at k=2 (row 3): k=3,4 unknown; trace b verified ℓ=2 and rejected k=2, so
    # y_3 = y_4 = 0 are settled even though they were never verified
    assert d.observed.tolist() == [[True] * 4, [True] * 4, [True] * 4,
                                   [True, True, False, False], [True] * 4]


def test_collect_pairs_needs_confidences():
    from test_metrics import trace_plain
    with pytest.raises(C.CalibrationError):
        C.collect_pairs([trace_plain()])


def test_split_is_deterministic_and_disjoint():
    a = C.split_rounds(10, 0.3, seed=4)
    b = C.split_rounds(10, 0.3, seed=4)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert len(a[1]) == 3 and not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == 10


def test_save_load_and_engine_applies_calibration(tmp_path, tiny_qwen):
    from conftest import make_drafter
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    from dspark_viz.drafter.model import DSparkDrafter
    d = make_drafter(tiny_qwen)
    d.save_pretrained(tmp_path / "dr")
    temps = [2.0, 1.5, 3.0]
    C.save_calibration(tmp_path / "dr", temps, {"per_position": [{"k": 1, "ece_before": 0.05}]})
    raw = json.loads((tmp_path / "dr" / C.CALIBRATION_FILE).read_text())
    assert raw["temperatures"] == temps and raw["per_position"][0]["k"] == 1
    assert C.load_calibration(tmp_path / "dr")["temperatures"] == temps
    loaded = DSparkDrafter.from_pretrained(tmp_path / "dr", target=tiny_qwen)
    assert loaded.calibration == temps
    tr = SpecSession(tiny_qwen, loaded, DecodeConfig(gamma=4, max_new_tokens=6)).run("ab")
    assert tr.meta.calibrated
    for r in tr.rounds:
        lg = C._logit(np.array([p.conf_raw for p in r.draft]))
        assert [p.conf_cal for p in r.draft] == pytest.approx(C.apply_sts(lg[None], temps)[0])


def test_bad_calibration_files(tmp_path):
    with pytest.raises(C.CalibrationError, match="no calibration file"):
        C.load_calibration(tmp_path)
    f = tmp_path / C.CALIBRATION_FILE
    for text in ("{", '{"temperatures": []}', '{"temperatures": [1, -2]}', '{"temperatures": [true]}',
                 "[1, 2]"):
        f.write_text(text)
        with pytest.raises(C.CalibrationError):
            C.load_calibration(f)
    with pytest.raises(C.CalibrationError):
        C.save_calibration(tmp_path, [1.0, 0.0])
    with pytest.raises(C.CalibrationError):
        C.save_calibration(tmp_path / "missing", [1.0])


# ----------------------------------------------------------------------------- hardening
def test_collect_pairs_is_gamma_wide_and_refuses_longer_rounds():
    from test_metrics import make_round, make_trace
    short = make_trace([make_round(0, gamma=2, ell=2, n_acc=1, kind="correction", conf=[0.9, 0.4])],
                       gamma=4, wall=0.5)
    d = C.collect_pairs([short], gamma=4)
    assert d.gamma == 4 and d.observed[0].tolist() == [True, True, False, False]
    full = C.collect_pairs([trace_a()], gamma=4)
    fit = C.fit_sts(d)  # fitted on the short rounds: still γ temperatures, the held-out report works
    assert len(fit.temperatures) == 4
    rep = C.calibration_report(full, fit.temperatures)
    assert len(rep["before"]) == 4 and rep["before"][3]["n"] == 3
    with pytest.raises(C.CalibrationError, match="more than γ=3") as e:
        C.collect_pairs([trace_a()], gamma=3)
    assert "\n" not in str(e.value)


def test_calibrate_traces_shorter_than_gamma_do_not_crash(tmp_path, monkeypatch, tiny_qwen, capsys):
    """Fit on traces whose rounds drafted fewer than γ tokens, report on full ones: γ columns."""
    import dspark_viz.cli.eval as cli_eval
    from conftest import make_drafter
    from dspark_viz.cli import main
    from dspark_viz.config import DecodeConfig
    from dspark_viz.decoding.engine import SpecSession
    monkeypatch.setattr(cli_eval, "load_target", lambda spec, device=None, dtype=None: tiny_qwen)
    d = make_drafter(tiny_qwen)
    d.save_pretrained(tmp_path / "dr")
    (tmp_path / "tr").mkdir()
    for i in range(4):
        cfg = DecodeConfig(gamma=3, max_new_tokens=10, seed=i, force_ell=1 if i else None)
        tr = SpecSession(tiny_qwen, d, cfg).run(f"hello {i}")
        raw = tr.to_dict()
        if i:  # rounds that drafted (and verified) one token
            for r in raw["rounds"]:
                r["draft"] = r["draft"][:1]
        (tmp_path / "tr" / f"{i}.json").write_text(json.dumps(raw))
    for holdout in ("0.25", "0.75"):
        rc = main(["calibrate", "--drafter", str(tmp_path / "dr"), "--gamma", "3", "--quiet",
                   "--dry-run", "--holdout", holdout, "--traces", str(tmp_path / "tr"),
                   "--json", str(tmp_path / "c.json")])
        out = capsys.readouterr()
        assert rc == 0, out.err
        rep = json.loads((tmp_path / "c.json").read_text())
        assert len(rep["temperatures"]) == 3 and len(rep["report"]["before"]) == 3


@pytest.mark.parametrize("text", ['{"temperatures": [1.0, Infinity]}', '{"temperatures": [1e999]}',
                                  '{"temperatures": [NaN]}', '{"temperatures": [' + "9" * 400 + "]}",
                                  '{"temperatures": [1], "temperature": ' + "9" * 400 + "}"])
def test_calibration_json_with_non_finite_numbers_refused(tmp_path, tiny_qwen, text):
    from conftest import make_drafter
    from dspark_viz.drafter.model import DrafterError, DSparkDrafter
    make_drafter(tiny_qwen).save_pretrained(tmp_path / "dr")
    (tmp_path / "dr" / C.CALIBRATION_FILE).write_text(text)
    if "temperature\"" not in text:  # the loader of `calibrate` checks the temperatures
        with pytest.raises(C.CalibrationError) as e:
            C.load_calibration(tmp_path / "dr")
        assert "\n" not in str(e.value) and C.CALIBRATION_FILE in str(e.value)
    with pytest.raises(DrafterError) as e:  # the drafter refuses to load with it
        DSparkDrafter.from_pretrained(tmp_path / "dr")
    assert "\n" not in str(e.value) and "calibration" in str(e.value)

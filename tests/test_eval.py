"""Evaluation runner, prompt sets, JSONL reader, figures and the eval/calibrate commands on tiny
random targets (the embedded-target run is marked slow)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dspark_viz.config import ConfigError
from dspark_viz.eval import prompts as P
from dspark_viz.eval.benchmark import DrafterRun, EvalSettings, run_eval

TIMING_KEYS = {"wall_s", "tokens_per_s", "speedup"}


# ----------------------------------------------------------------------------- prompts
def test_builtin_sets_are_distinct_and_not_from_training_corpora():
    import pydoc_data.topics as topics
    corpus = "\n".join(topics.topics.values())
    data_dir = Path(P.__file__).resolve().parent.parent / "data"
    toolchain = "\n".join(f.read_text(encoding="utf-8") for f in data_dir.glob("*.py"))
    seen = set()
    for name, ps in P.BUILTIN.items():
        assert len(ps) >= 10, name
        for p in ps:
            assert p.strip() and p not in seen
            assert p[:40] not in corpus  # the stdlib prose corpus the training toolchain uses
            assert p[:30] not in toolchain and p[-30:] not in toolchain, p  # its instructions
            seen.add(p)
    assert list(P.builtin_sets("math,code")) == ["math", "code"]
    with pytest.raises(ConfigError, match="unknown built-in prompt set"):
        P.builtin_sets("poetry")


def test_read_turns_jsonl(tmp_path):
    f = tmp_path / "mt.jsonl"
    f.write_text('{"turns": ["first q", "second"], "id": 1}\n\n{"turns": ["other"]}\n')
    assert P.read_turns_jsonl(f) == ["first q", "other"]
    assert P.dataset_name(f) == "mt"
    cases = {'{"turns": []}': ":1: 'turns' must be", '{"turns": [1]}': ":1: 'turns' must be",
             "[1]": ":1: expected a JSON object", '{"turns": ["  "]}': ":1: the first turn is empty",
             '{"turns": ["a"]}\n{oops': ":2: malformed JSON", "\n\n": "holds no prompts",
             "": "holds no prompts", '{"turns": ["a"], "x": NaN}': ":1: malformed JSON (NaN",
             '{"turns": ["a"], "n": ' + "9" * 5000 + "}": ":1: malformed JSON (Exceeds the limit",
             "[" * 100_000 + "]" * 100_000: ":1: malformed JSON (nested too deeply)",
             '{"turns": ["a"], "x": 1e999}': ":1: malformed JSON (number 1e999 overflows"}
    for text, msg in cases.items():
        f.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(msg)) as e:
            P.read_turns_jsonl(f)
        assert "\n" not in str(e.value) and isinstance(e.value, P.EvalDataError)
    f.write_bytes(b'{"turns": ["a"]}\n{"turns": ["\xff"]}\n')
    with pytest.raises(P.EvalDataError, match=r"mt\.jsonl:2: not UTF-8"):
        P.read_turns_jsonl(f)
    with pytest.raises(ConfigError, match="does not exist"):
        P.read_turns_jsonl(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- runner
def _strip_timing(x):
    if isinstance(x, dict):
        return {k: _strip_timing(v) for k, v in x.items() if k not in TIMING_KEYS}
    if isinstance(x, list):
        return [_strip_timing(v) for v in x]
    return x


@pytest.fixture(scope="module")
def tiny_runs(tiny_qwen):
    from conftest import make_drafter
    d = make_drafter(tiny_qwen)
    return [DrafterRun("dspark", d, "dspark"), DrafterRun("dflash", d, "dflash")]


SETS = {"code": ["def add(a, b):", "for i in"], "prose": ["The river"]}


def test_eval_is_deterministic_for_a_fixed_seed(tiny_qwen, tiny_runs):
    s = EvalSettings(gamma=3, temperatures=(0.0, 1.0), max_new_tokens=8, seed=5,
                     thresholds=(0.0, 0.5), warmup=False)
    r1 = run_eval(tiny_qwen, tiny_runs, SETS, s, keep_traces=True)
    r2 = run_eval(tiny_qwen, tiny_runs, SETS, EvalSettings(**{**s.__dict__, "batch_size": 2}),
                  keep_traces=True)
    t1, t2 = r1.pop("_traces"), r2.pop("_traces")
    assert {k: [t.output_ids() for t in v] for k, v in t1.items()} == \
           {k: [t.output_ids() for t in v] for k, v in t2.items()}  # batching changes nothing
    r2["settings"]["batch_size"] = 1
    assert _strip_timing(r1) == _strip_timing(r2)
    json.dumps(r1, allow_nan=False)  # every number is JSON
    labels = [(r["temperature"], r["drafter"]) for r in r1["results"]]
    assert labels == [(0.0, "dspark"), (0.0, "dflash"), (0.0, "plain"),
                      (1.0, "dspark"), (1.0, "dflash"), (1.0, "plain")]
    for res in r1["results"]:
        for ds, m in res["datasets"].items():
            assert m["prompts"] == len(SETS[ds])
            if res["mode"] == "ar":
                assert m["tau"] == 1.0 and m["speedup"] == 1.0
            else:
                assert 1.0 <= m["tau"] <= 4.0 and len(m["conditional_acceptance"]) == 3
            if res["temperature"] == 0.0:  # lossless greedy: same text as plain decoding
                assert m["greedy_agreement"] == 1.0
    assert len(r1["sweep"]) == 4 and r1["sweep"][0]["exact"]
    # a different seed gives different samples at T = 1
    r3 = run_eval(tiny_qwen, tiny_runs[:1], {"prose": SETS["prose"]},
                  EvalSettings(**{**s.__dict__, "seed": 6, "temperatures": (1.0,)}),
                  keep_traces=True)["_traces"]
    assert r3[(1.0, "dspark", "prose")][0].output_ids() != t1[(1.0, "dspark", "prose")][0].output_ids()


def test_eval_settings_and_runs_validate():
    with pytest.raises(ConfigError):
        EvalSettings(batch_size=0)
    with pytest.raises(ConfigError):
        EvalSettings(thresholds=(1.5,))
    with pytest.raises(ConfigError):
        DrafterRun("x", None, "dspark")


def test_figures_build_from_a_report():
    from dspark_viz.viz import eval_figures as ef
    from test_metrics import trace_a, trace_b
    from dspark_viz.eval.metrics import macro_average, summarize, threshold_sweep, DEFINITIONS
    m = summarize([trace_a(), trace_b()], 1.0) | {"speedup": 1.3}
    rep = {"target": "hand", "device": "cpu", "settings": {"gamma": 4}, "datasets": {"x": 2},
           "definitions": DEFINITIONS,
           "results": [{"temperature": 0.0, "drafter": "dspark", "mode": "dspark",
                        "datasets": {"x": m}, "macro": macro_average({"x": m})}]}
    f = ef.conditional_acceptance_figure(rep, 0.0)
    assert list(f.data[0].y) == pytest.approx(m["conditional_acceptance"])
    assert list(ef.tau_figure(rep, 0.0).data[0].y) == pytest.approx([m["tau"], m["tau"]])
    assert ef.speedup_figure(rep).data[0].y[0] == 1.3
    sw = {"temperature": 0.0, "drafter": "dspark", "exact": True,
          "datasets": {"x": threshold_sweep([trace_a()], [0.0, 0.5])}}
    f = ef.sweep_figure(sw)
    assert list(f.data[0].y) == [7 / 4, 7 / 4] and list(f.data[1].y) == [7 / 4, 0.0]
    from dspark_viz.eval import calibration as C
    d = C.collect_pairs([trace_a(), trace_b()])
    cal = C.calibration_report(d, [1.5, 1.0, 1.0, 1.0])
    f = ef.reliability_figure(cal, [1, 2])
    assert "ECE" in f.layout.annotations[0].text
    # one count scale shared by every panel (only the last panel labels it)
    count_axes = [ax for name, ax in f.layout.to_plotly_json().items()
                  if name.startswith("yaxis") and ax.get("overlaying")]
    assert len(count_axes) == 2 and count_axes[0]["range"] == count_axes[1]["range"]
    f = ef.calibration_summary_figure(cal)
    floor = [t for t in f.data if t.name.startswith("ECE floor")]
    assert len(floor) == 1 and list(floor[0].y) == [r["ece_floor"] for r in cal["after"]]


# ----------------------------------------------------------------------------- commands
@pytest.fixture
def cli_on_tiny(monkeypatch, tiny_qwen):
    import dspark_viz.cli.common as common
    import dspark_viz.cli.eval as cli_eval
    for mod in (common, cli_eval):  # the CLI modules import load_target at their top
        monkeypatch.setattr(mod, "load_target", lambda spec, device=None, dtype=None: tiny_qwen)
    from dspark_viz.cli import main
    return main


def test_eval_command_writes_json_and_figures(tmp_path, cli_on_tiny, capsys):
    rc = cli_on_tiny(["eval", "--drafters", "random,random:dflash", "--prompts", "code,prose",
                      "--samples", "1", "--max-new-tokens", "6", "--gamma", "3", "--quiet",
                      "--json", str(tmp_path / "r.json"), "--plots", str(tmp_path / "figs"),
                      "--no-png", "--sweep-threshold", "0,0.5", "--save-traces",
                      str(tmp_path / "tr")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "conditional acceptance" in out and "accepted draft tokens + 1 target token" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert {d["label"] for d in rep["drafters"]} == {"dspark", "dflash", "plain"}
    assert rep["settings"]["temperatures"] == [0.0, 1.0] and "sweep" in rep
    figs = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {"tau_T0.html", "conditional_acceptance_T1.html", "speedup.html",
            "plotly.min.js"} <= figs
    assert any(n.startswith("threshold_sweep_dspark") for n in figs)
    assert len(list((tmp_path / "tr").rglob("*.json"))) == 2 * 2 * 3  # T × datasets × runs


def test_eval_command_errors_are_one_line(tmp_path, cli_on_tiny, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"turns": ["ok"]}\nnot json\n')
    assert cli_on_tiny(["eval", "--data", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dspark-viz: error:") and "bad.jsonl:2" in err and "\n" not in err
    assert cli_on_tiny(["eval", "--drafters", "none:dflash", "--quiet"]) == 2
    assert cli_on_tiny(["eval", "--temperatures", "0,x", "--quiet"]) == 2


def test_calibrate_command_writes_calibration_json(tmp_path, cli_on_tiny, tiny_qwen, capsys):
    from conftest import make_drafter
    from dspark_viz.drafter.model import DSparkDrafter
    make_drafter(tiny_qwen).save_pretrained(tmp_path / "dr")
    rc = cli_on_tiny(["calibrate", "--drafter", str(tmp_path / "dr"), "--prompts", "math",
                      "--samples", "3", "--max-new-tokens", "8", "--gamma", "3", "--holdout",
                      "0.34", "--quiet", "--json", str(tmp_path / "c.json"), "--plots",
                      str(tmp_path / "cf"), "--no-png"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ECE raw→STS" in out and "held-out" in out
    cal = json.loads((tmp_path / "dr" / "calibration.json").read_text())
    assert len(cal["temperatures"]) == 3 and cal["per_position"][0]["k"] == 1
    assert DSparkDrafter.from_pretrained(tmp_path / "dr").calibration == cal["temperatures"]
    assert (tmp_path / "cf" / "reliability.html").exists()
    rep = json.loads((tmp_path / "c.json").read_text())
    assert rep["report_on"] == "held-out" and len(rep["report"]["before"]) == 3


def test_calibrate_saved_traces_refit_identically(tmp_path, cli_on_tiny, tiny_qwen, capsys):
    """--save-traces writes the decoded rounds; --traces on them fits the same temperatures, and
    traces from another γ are refused with a one-line error that writes nothing."""
    from conftest import make_drafter
    make_drafter(tiny_qwen).save_pretrained(tmp_path / "dr")
    common = ["calibrate", "--drafter", str(tmp_path / "dr"), "--gamma", "3", "--holdout", "0.34",
              "--quiet", "--dry-run"]
    assert cli_on_tiny(common + ["--prompts", "math", "--samples", "3", "--max-new-tokens", "8",
                                 "--save-traces", str(tmp_path / "tr"),
                                 "--json", str(tmp_path / "a.json")]) == 0
    assert len(list((tmp_path / "tr").glob("*.json"))) == 3
    assert cli_on_tiny(common + ["--traces", str(tmp_path / "tr"), "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["temperatures"] == b["temperatures"] and a["report"] == b["report"]
    capsys.readouterr()
    assert cli_on_tiny(["calibrate", "--drafter", str(tmp_path / "dr"), "--gamma", "4", "--quiet",
                        "--traces", str(tmp_path / "tr")]) == 2
    err = capsys.readouterr().err.strip()
    assert "γ=3" in err and "γ=4" in err and "\n" not in err
    assert not (tmp_path / "dr" / "calibration.json").exists()
    assert cli_on_tiny(common + ["--traces", str(tmp_path / "tr"), "--save-traces", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_png_export_when_chromium_is_available(tmp_path):
    import shutil
    pytest.importorskip("kaleido")
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chrome/Chromium for kaleido")
    import plotly.graph_objects as go
    from dspark_viz.cli.eval import save_figures
    written, err = save_figures({"f": go.Figure(go.Bar(x=[1], y=[2]))}, tmp_path)
    assert err is None, err
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_eval_on_embedded_target(embedded_target):
    """The path works on the real target: untrained drafter, one prompt, a few tokens."""
    from dspark_viz.drafter.registry import untrained_drafter
    d = untrained_drafter(embedded_target)
    rep = run_eval(embedded_target, [DrafterRun("dspark", d, "dspark")],
                   {"prose": [P.PROSE[0]]},
                   EvalSettings(gamma=3, temperatures=(0.0,), max_new_tokens=6, warmup=False))
    m = rep["results"][0]["datasets"]["prose"]
    assert 1.0 <= m["tau"] <= 4.0 and m["greedy_agreement"] == 1.0

"""The command line: bad input gets one line, exit status 2 and nothing written — every numeric
option checked before any work, the device, output paths, empty and malformed input files, token
ids outside the vocabulary, non-finite numbers in the engine; the embedded path works."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import make_drafter

from dspark_viz.cli import main
from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.engine import NonFiniteError, SpecSession


@pytest.mark.parametrize("argv, message", [
    (["trace", "--prompt", "   "], "--prompt is empty"),
    (["trace", "--prompt", "hi", "--gamma", "0"], "--gamma must be in [1, 16]"),
    (["trace", "--prompt", "hi", "--gamma", "17"], "--gamma must be in [1, 16]"),
    (["trace", "--prompt", "hi", "--temperature", "-1"], "--temperature must be 0 or in [0.001, 100]"),
    (["trace", "--prompt", "hi", "--target", "/no/such/model"], "does not exist"),
])
def test_bad_input_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("dspark-viz: error:")


@pytest.mark.slow
def test_trace_on_embedded_default(tmp_path, capsys):
    out = tmp_path / "t.json"
    rc = main(["trace", "--prompt", "def add(a, b):", "--max-new-tokens", "10", "--gamma", "4",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mean τ" in text and "+ 1 target token" in text
    d = json.loads(out.read_text())
    assert d["version"] == 2 and d["summary"]["new_tokens"] == 10  # trace format v2
    assert d["meta"]["target"] == "embedded:gemma3-270m"


@pytest.mark.slow
def test_wrong_drafter_and_long_prompt_on_embedded(tmp_path, capsys, tiny_qwen):
    make_drafter(tiny_qwen).save_pretrained(tmp_path / "tinyd")
    assert main(["trace", "--prompt", "hi", "--drafter", str(tmp_path / "tinyd")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit target" in err and err.count("\n") == 0
    assert main(["trace", "--prompt", "word " * 40000, "--drafter", "none"]) == 2
    assert "exceeds the target context" in capsys.readouterr().err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "dspark_viz.cli", "trace", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--drafter" in r.stdout


# ----------------------------------------------------------------------------- every option, before any work
def _refused(capsys, argv, message, root):
    """exit 2, one line naming the problem, nothing written under ``root``."""
    before = sorted(root.rglob("*"))
    assert main([str(x) for x in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dspark-viz: error:") and "\n" not in err, err
    assert message in err, err
    assert sorted(root.rglob("*")) == before, "something was written"
    return err


TRACE = ["trace", "--prompt", "hi", "--target", "tiny:qwen3", "--drafter", "random"]
NUMERIC = [
    (TRACE + ["--temperature", "inf"], "--temperature must be 0 or in [0.001, 100], got inf"),
    (TRACE + ["--temperature", "nan"], "--temperature must be 0 or in [0.001, 100], got nan"),
    (TRACE + ["--temperature", "1e-300"], "--temperature must be"),
    (TRACE + ["--seed", str(2**70)], f"--seed must be in [0, {2**63 - 1}], got {2**70}"),
    (TRACE + ["--seed", "-1"], "--seed must be in [0,"),
    (TRACE + ["--top-p", "0"], "--top-p must be in (0, 1]"),
    (TRACE + ["--top-p", "nan"], "--top-p must be in (0, 1]"),
    (TRACE + ["--top-k", "-1"], "--top-k must be in [0,"),
    (TRACE + ["--max-new-tokens", "0"], "--max-new-tokens must be in [1,"),
    (TRACE + ["--max-new-tokens", str(10**12)], "--max-new-tokens must be in [1, 1048576]"),
    (TRACE + ["--force-ell", "99"], "--force-ell must be in [0, 16]"),
    (TRACE + ["--device", "bogus"], "--device 'bogus' is not a device"),
    (["prepare", "estimate", "--num-samples", "3", "--seq-len", "4", "--hidden-size", "4",
      "--num-layers", "1", "--shard-bytes", "0"], "--shard-bytes must be in [1,"),
    (["prepare", "regenerate", "--prompts", "{d}/p.jsonl", "--out", "{d}/o.jsonl", "--target",
      "tiny:qwen3", "--temperature", "-1"], "--temperature must be 0 or in"),
    (["prepare", "regenerate", "--prompts", "{d}/p.jsonl", "--out", "{d}/o.jsonl", "--target",
      "tiny:qwen3", "--temperature", "nan"], "--temperature must be 0 or in"),
    (["prepare", "regenerate", "--prompts", "{d}/p.jsonl", "--out", "{d}/o.jsonl", "--batch-size",
      "0"], "--batch-size must be in [1, 4096]"),
    (["prepare", "prompts", "--source", "builtin:arithmetic", "--out", "{d}/p", "--val-fraction",
      "1"], "--val-fraction must be in [0, 1)"),
    (["prepare", "cache", "--samples", "{d}/s.jsonl", "--out", "{d}/c", "--shard-tokens", "0"],
     "--shard-tokens must be in [1,"),
    (["simulate", "--traces", "{d}", "--loads", "100000000"], "--loads: expected integers in [1, 4096]"),
    (["simulate", "--traces", "{d}", "--loads", "1e8"], "--loads: expected comma-separated integers"),
    (["simulate", "--traces", "{d}", "--steps", "0"], "--steps must be in [1, 100000]"),
    (["profile", "--target", "tiny:qwen3", "--batch-sizes", "1,100000000", "--out", "{d}/c.json"],
     "--batch-sizes: expected integers in [1, 65536]"),
    (["train", "--samples", "{d}/s.jsonl", "--online", "--out", "{d}/run", "--lr", "nan"],
     "--lr must be in (0, 10], got nan"),
    (["train", "--samples", "{d}/s.jsonl", "--online", "--out", "{d}/run", "--steps", "0"],
     "--steps must be in [1,"),
    (["train", "--samples", "{d}/s.jsonl", "--online", "--out", "{d}/run", "--seed", str(2**70)],
     "--seed must be in [0,"),
    (["train", "--samples", "{d}/s.jsonl", "--online", "--out", "{d}/run", "--block-size", "40"],
     "--block-size must be in [1, 16]"),
    (["eval", "--temperatures", "0,inf", "--target", "tiny:qwen3"], "--temperatures: expected"),
    (["eval", "--temperatures", "0,-1", "--target", "tiny:qwen3"], "--temperatures must be 0 or in"),
    (["eval", "--sweep-threshold", "0.5,2", "--target", "tiny:qwen3"], "--sweep-threshold must be in [0, 1]"),
    (["eval", "--samples", "0", "--target", "tiny:qwen3"], "--samples must be in [1,"),
    (["calibrate", "--bins", "1"], "--bins must be in [2, 1000]"),
    (["calibrate", "--holdout", "1"], "--holdout must be in [0, 1)"),
    (["calibrate", "--temperature", "inf"], "--temperature must be 0 or in"),
    (["app", "--port", "0"], "--port must be in [1, 65535]"),
]


@pytest.mark.parametrize("argv, message", NUMERIC, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(NUMERIC)])
def test_numeric_options_refused_before_any_work(tmp_path, capsys, argv, message):
    (tmp_path / "p.jsonl").write_text('{"turns": ["hi"]}\n')
    (tmp_path / "s.jsonl").write_text('{"id": "a", "input_ids": [2, 5, 6], "loss_spans": [[1, 3]]}\n')
    _refused(capsys, [x.format(d=tmp_path) for x in argv], message, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_one_line(tmp_path, capsys):
    _refused(capsys, TRACE + ["--device", "cuda"], "CUDA is not available", tmp_path)
    _refused(capsys, ["prepare", "cache", "--samples", tmp_path / "s.jsonl", "--out", tmp_path / "c",
                      "--device", "cuda:1"], "CUDA is not available", tmp_path)


def test_trace_out_directory_refused_and_no_tmp_left(tmp_path, capsys):
    d = tmp_path / "DIR"
    d.mkdir()
    _refused(capsys, TRACE + ["--out", d], "is a directory", tmp_path)
    assert not (tmp_path / "DIR.tmp").exists() and list(d.iterdir()) == []
    (tmp_path / "afile").write_text("x")
    _refused(capsys, TRACE + ["--out", tmp_path / "afile" / "t.json"], "is not a directory", tmp_path)
    _refused(capsys, ["prepare", "prompts", "--source", "builtin:arithmetic", "--out",
                      tmp_path / "afile"], "exists and is not a directory", tmp_path)


# ----------------------------------------------------------------------------- input files
def _files(tmp_path):
    bad = {"empty": b"", "utf8": b'\n{"turns": ["\xff\xfe"]}\n',
           "deep": b"[" * 100_000 + b"]" * 100_000 + b"\n",
           "bigint": b'{"turns": ["a"], "n": ' + b"7" * 5000 + b"}\n",
           "nan": b'{"turns": ["a"], "x": NaN}\n'}
    out = {}
    for k, v in bad.items():
        out[k] = tmp_path / "in" / f"{k}.jsonl"
        out[k].parent.mkdir(exist_ok=True)
        out[k].write_bytes(v)
    return out


EMPTY_OR_BAD = {"empty": "no", "utf8": ":2: not UTF-8 (invalid start byte", "deep": ":1: malformed JSON (nested too deeply)",
                "bigint": ":1: malformed JSON", "nan": ":1: malformed JSON (NaN"}


@pytest.mark.parametrize("kind", list(EMPTY_OR_BAD))
@pytest.mark.parametrize("cmd", ["eval", "calibrate"])
def test_eval_and_calibrate_data_files_one_line(tmp_path, capsys, monkeypatch, tiny_qwen, kind, cmd):
    import dspark_viz.cli.eval as cli_eval
    monkeypatch.setattr(cli_eval, "load_target", lambda spec, device=None, dtype=None: tiny_qwen)
    f = _files(tmp_path)[kind]
    make_drafter(tiny_qwen).save_pretrained(tmp_path / "dr")
    argv = [cmd, "--data", f, "--quiet", "--json", tmp_path / "r.json"]
    argv += ["--drafters", "random"] if cmd == "eval" else ["--drafter", tmp_path / "dr"]
    err = _refused(capsys, argv, EMPTY_OR_BAD[kind], tmp_path)
    assert f.name in err


def _samples(tmp_path, rows):
    f = tmp_path / "s.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def test_prepare_cache_refuses_ids_beyond_vocabulary_before_writing(tmp_path, capsys):
    f = _samples(tmp_path, [{"id": "a", "input_ids": [2, 5, 6], "loss_spans": [[1, 3]]},
                            {"id": "b", "input_ids": [2, 10**6], "loss_spans": [[1, 2]]}])
    err = _refused(capsys, ["prepare", "cache", "--samples", f, "--out", tmp_path / "c",
                            "--target", "tiny:qwen3", "--no-progress"], "token id 1000000", tmp_path)
    assert "'b'" in err and "vocabulary of 320" in err and not (tmp_path / "c").exists()


def test_train_online_refuses_ids_beyond_vocabulary_before_writing(tmp_path, capsys):
    f = _samples(tmp_path, [{"id": "a", "input_ids": [2, 5, 320], "loss_spans": [[1, 3]]}])
    _refused(capsys, ["train", "--samples", f, "--online", "--target", "tiny:qwen3", "--out",
                      tmp_path / "run", "--steps", "1", "--no-progress"], "token id 320", tmp_path)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [
    ["prepare", "regenerate", "--prompts", "{e}", "--out", "{d}/o.jsonl", "--target", "tiny:qwen3"],
    ["prepare", "cache", "--samples", "{e}", "--out", "{d}/c", "--target", "tiny:qwen3"],
    ["prepare", "corpus", "--prompts", "{e}", "--out", "{d}/o.jsonl", "--target", "tiny:qwen3"],
    ["prepare", "estimate", "--samples", "{e}", "--hidden-size", "4", "--num-layers", "1"],
    ["train", "--samples", "{e}", "--online", "--target", "tiny:qwen3", "--out", "{d}/run"],
], ids=["regenerate", "cache", "corpus", "estimate", "train"])
def test_empty_input_files_exit_2_and_write_nothing(tmp_path, capsys, argv):
    e = tmp_path / "empty.jsonl"
    e.write_text("")
    _refused(capsys, [x.format(d=tmp_path, e=e) for x in argv], "empty.jsonl", tmp_path)


# ----------------------------------------------------------------------------- non-finite numbers
def test_nan_drafter_fails_before_anything_is_written(tmp_path, capsys, tiny_qwen):
    d = make_drafter(tiny_qwen)
    with torch.no_grad():
        for p in d.parameters():
            p.fill_(float("nan"))
    d.save_pretrained(tmp_path / "nan")
    out = tmp_path / "t.json"
    before = sorted(tmp_path.rglob("*"))
    assert main(["trace", "--prompt", "hello", "--target", "tiny:qwen3", "--drafter",
                 str(tmp_path / "nan"), "--max-new-tokens", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "NaN or +∞" in err and "\n" not in err and not out.exists()
    assert sorted(tmp_path.rglob("*")) == before
    with pytest.raises(NonFiniteError, match="drafter"):
        SpecSession(tiny_qwen, d, DecodeConfig(gamma=3, max_new_tokens=6)).run("hi")


@pytest.mark.parametrize("field, value", [("temperature", math.inf), ("top_p", math.nan)])
def test_engine_refuses_non_finite_settings(tiny_qwen, field, value):
    cfg = DecodeConfig(gamma=3, max_new_tokens=6)
    object.__setattr__(cfg, field, value)  # past DecodeConfig's own checks
    with pytest.raises(NonFiniteError, match=f"{field} must be a finite number"):
        SpecSession(tiny_qwen, make_drafter(tiny_qwen), cfg)


@pytest.mark.parametrize("kind", [k for k in EMPTY_OR_BAD if k != "empty"])
@pytest.mark.parametrize("argv", [
    ["prepare", "prompts", "--source", "{f}", "--out", "{d}/p"],
    ["prepare", "regenerate", "--prompts", "{f}", "--out", "{d}/o.jsonl", "--target", "tiny:qwen3"],
    ["prepare", "cache", "--samples", "{f}", "--out", "{d}/c", "--target", "tiny:qwen3"],
    ["prepare", "estimate", "--samples", "{f}", "--hidden-size", "4", "--num-layers", "1"],
    ["train", "--samples", "{f}", "--online", "--target", "tiny:qwen3", "--out", "{d}/run"],
], ids=["prompts", "regenerate", "cache", "estimate", "train"])
def test_malformed_jsonl_inputs_one_line_with_file_and_line(tmp_path, capsys, argv, kind):
    f = _files(tmp_path)[kind]
    err = _refused(capsys, [x.format(d=tmp_path, f=f) for x in argv], EMPTY_OR_BAD[kind], tmp_path)
    assert f.name in err


@pytest.mark.parametrize("vocab", ["[1, 2, 320]", "[1, 2.0]", "[true]", "[]", '{"a": 1}', "[1, NaN]"])
def test_train_draft_vocab_file_checked_before_writing(tmp_path, capsys, vocab):
    f = _samples(tmp_path, [{"id": "a", "input_ids": [2, 5, 6], "loss_spans": [[1, 3]]}])
    (tmp_path / "v.json").write_text(vocab)
    _refused(capsys, ["train", "--samples", f, "--online", "--target", "tiny:qwen3", "--out",
                      tmp_path / "run", "--steps", "1", "--draft-vocab-size", "2", "--draft-vocab",
                      tmp_path / "v.json", "--no-progress"], "--draft-vocab", tmp_path)


def test_app_command_forwards_launch_flags(monkeypatch):
    """``dspark-viz app`` passes the trust-boundary flags through to app.py unchanged."""
    from dspark_viz.cli import viz as cli_viz
    seen = {}

    class FakeApp:
        @staticmethod
        def main(argv):
            seen["argv"] = argv
            return 0
    monkeypatch.setattr(cli_viz, "load_app_module", lambda: FakeApp)
    assert main(["app", "--no-preload", "--allow-models", "/m/a", "org/b", "--max-upload-mb", "12.5",
                 "--model-cache", "2"]) == 0
    argv = seen["argv"]
    assert argv[argv.index("--allow-models") + 1:argv.index("--allow-models") + 3] == ["/m/a", "org/b"]
    assert argv[argv.index("--max-upload-mb") + 1] == "12.5" and argv[argv.index("--model-cache") + 1] == "2"
    assert main(["app", "--max-upload-mb", "0"]) == 2 and main(["app", "--model-cache", "0"]) == 2

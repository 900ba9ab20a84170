"""`dspark-viz trace`: bad input gets one line and a non-zero exit; the embedded path works."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import make_drafter

from dspark_viz.cli import main


@pytest.mark.parametrize("argv, message", [
    (["trace", "--prompt", "   "], "--prompt is empty"),
    (["trace", "--prompt", "hi", "--gamma", "0"], "--gamma must be in [1, 16]"),
    (["trace", "--prompt", "hi", "--gamma", "17"], "--gamma must be in [1, 16]"),
    (["trace", "--prompt", "hi", "--temperature", "-1"], "--temperature must be ≥ 0"),
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

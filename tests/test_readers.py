"""The one JSON / JSONL reading path (``dspark_viz.io``): every malformed input is one line naming
the file (and the line) in the caller's error type; atomic directories and stale temporaries."""
from __future__ import annotations

import json

import pytest

from dspark_viz import io as dio
from dspark_viz.errors import UserError

DEEP = "[" * 100_000 + "]" * 100_000
BIG_INT = "1" * 5000

# (file bytes, where the message points, what it says)
BAD_JSONL = [
    (b'{"a": 1}\n\xff\xfe bad\n', ":2:", "not UTF-8"),
    (b'{"a": 1}\n' + DEEP.encode() + b"\n", ":2:", "nested too deeply"),
    (b'{"a": ' + BIG_INT.encode() + b"}\n", ":1:", "integer string conversion"),
    (b'{"a": NaN}\n', ":1:", "NaN is not a JSON number"),
    (b'{"a": 1}\n\n{"a": -Infinity}\n', ":3:", "-Infinity is not a JSON number"),
    (b'{"a": 1e400}\n', ":1:", "overflows a float"),
    (b'{"a": 1}\n[1, 2]\n', ":2:", "expected a JSON object, got a list"),
    (b'{"a": 1}\n{oops\n', ":2:", "malformed JSON"),
    (b"", "", "holds no records"),
    (b"\n  \n\n", "", "holds no records"),
]


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


def test_read_jsonl_yields_line_numbers_and_skips_blank_lines(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \r\n{"b": [1, 2.5, "\xc3\xa9"]}\r\n{"c": null}')
    assert list(dio.read_jsonl(f)) == [(1, {"a": 1}), (4, {"b": [1, 2.5, "é"]}), (5, {"c": None})]
    f.write_text("[1]\n2\n")
    assert list(dio.read_jsonl(f, objects=False)) == [(1, [1]), (2, 2)]
    f.write_text("")
    assert list(dio.read_jsonl(f, allow_empty=True)) == []


@pytest.mark.parametrize("data, where, msg", BAD_JSONL,
                         ids=["utf8", "deep", "bigint", "nan", "inf", "overflow", "list", "syntax",
                              "empty", "blank"])
def test_read_jsonl_malformed_is_one_line_naming_file_and_line(tmp_path, data, where, msg):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(data)
    with pytest.raises(dio.InputError) as e:
        list(dio.read_jsonl(f, what="prompt file"))
    text = _one_line(e)
    assert f"bad.jsonl{where}" in text and msg in text


def test_read_jsonl_caps_missing_and_not_a_file(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": "' + "x" * 200 + '"}\n')
    with pytest.raises(dio.InputError, match=r"x\.jsonl:1: line longer than") as e:
        list(dio.read_jsonl(f, max_line_bytes=100))
    _one_line(e)
    with pytest.raises(dio.InputError, match="larger than"):
        list(dio.read_jsonl(f, max_bytes=100))
    with pytest.raises(dio.InputError, match="does not exist or is not a file"):
        list(dio.read_jsonl(tmp_path / "nope.jsonl"))
    with pytest.raises(dio.InputError, match="does not exist or is not a file"):
        list(dio.read_jsonl(tmp_path))  # a directory
    with pytest.raises(dio.InputError, match="does not exist or is not a file"):
        list(dio.read_jsonl("/dev/zero"))  # never read: no hang


def test_read_jsonl_raises_the_callers_error_type(tmp_path):
    class MyError(UserError):
        pass
    f = tmp_path / "x.jsonl"
    f.write_bytes(b"\x80\n")
    with pytest.raises(MyError, match=r"x\.jsonl:1: not UTF-8"):
        list(dio.read_jsonl(f, error=MyError))


@pytest.mark.parametrize("text, msg", [
    (DEEP, "nested too deeply"), (BIG_INT, "integer string conversion"),
    ('{"t": [Infinity]}', "Infinity is not a JSON number"), ('{"t": NaN}', "NaN"),
    ('{"t": 1e999}', "overflows a float"), ("", "Expecting value"), ("{", "Expecting"),
])
def test_read_json_capped_malformed_is_one_line(tmp_path, text, msg):
    f = tmp_path / "c.json"
    f.write_text(text)
    with pytest.raises(dio.InputError) as e:
        dio.read_json_capped(f, 1 << 20, what="calibration file")
    t = _one_line(e)
    assert "calibration file" in t and str(f) in t and msg in t
    f.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(dio.InputError, match="not UTF-8"):
        dio.read_json_capped(f, 1 << 20)


def test_parse_json_keeps_ordinary_numbers():
    assert dio.parse_json('{"a": [1, -2.5e3, 1e308, 0.0]}') == {"a": [1, -2500.0, 1e308, 0.0]}


def test_atomic_dir_replaces_whole_and_cleans_up_on_failure(tmp_path):
    d = tmp_path / "drafter"
    d.mkdir()
    (d / "stale.json").write_text("old")
    with dio.atomic_dir(d) as tmp:
        assert tmp.parent == tmp_path and dio.TEMP_NAME.match(tmp.name)
        (tmp / "model.safetensors").write_text("new")
    assert sorted(p.name for p in d.iterdir()) == ["model.safetensors"]  # no file of the old one
    with pytest.raises(RuntimeError):
        with dio.atomic_dir(d) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
    assert sorted(p.name for p in d.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drafter"]  # no temporary left


def test_remove_stale_temps_only_our_pattern(tmp_path):
    with dio.atomic_path(tmp_path / "keep.json") as t:
        t.write_text("{}")
    stale = [tmp_path / ".metrics.jsonl.ab12cd_9.tmp", tmp_path / ".drafter.zz99yy00.tmp"]
    stale[0].write_text("half")
    stale[1].mkdir()
    (stale[1] / "model.safetensors").write_text("half")
    others = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / ".x.short.tmp",
              tmp_path / "data.jsonl"]
    for p in others:
        p.write_text("mine")
    assert dio.stale_temps(tmp_path) == sorted(stale)
    assert sorted(dio.remove_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in others] + ["keep.json"])
    assert json.loads((tmp_path / "keep.json").read_text()) == {}
    assert dio.remove_stale_temps(tmp_path / "missing") == []

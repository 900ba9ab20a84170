"""Property-based fuzzing (Hypothesis) of the readers: the JSONL reader, the calibration loaders
and the capacity-curve loader. Arbitrary bytes and arbitrary JSON either load or raise the
module's one-line error type — never anything else, never a hang (bounded examples, deadline).
"""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dspark_viz import io as dio  # noqa: E402
from dspark_viz.drafter.model import DrafterError, read_calibration  # noqa: E402
from dspark_viz.eval import calibration as C  # noqa: E402
from dspark_viz.eval.prompts import EvalDataError, read_turns_jsonl  # noqa: E402
from dspark_viz.load.capacity import CapacityCurve, CapacityError, get_curve  # noqa: E402

FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# JSON values, including the awkward ones: huge integers, floats at the edge, deep-ish nesting
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=25)
# raw fragments a hostile or broken file holds
fragments = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"[" * 3000, b"{\"a\":",
                             b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", b"9" * 5000, b"\n", b"\r\n", b"}",
                             b'"\\ud800"', b"[1,2]", b'{"turns": ["x"]}', b'{"temperatures": [1, 2]}'])
hostile_bytes = st.lists(st.binary(max_size=40) | fragments, max_size=12).map(b"".join)

_DIR = Path(tempfile.mkdtemp(prefix="dsv-fuzz-"))
atexit.register(shutil.rmtree, _DIR, True)


def _file(data: bytes, name: str) -> Path:
    p = _DIR / name
    p.write_bytes(data)
    return p


def _one_line(e: Exception) -> None:
    assert "\n" not in str(e) and str(e).strip()


def _jsonl(values) -> bytes:
    return b"".join(json.dumps(v).encode() + b"\n" for v in values)


# ----------------------------------------------------------------------------- JSONL reader
@FUZZ
@given(hostile_bytes)
def test_read_jsonl_arbitrary_bytes(data):
    f = _file(data, "x.jsonl")
    try:
        out = list(dio.read_jsonl(f, max_line_bytes=1 << 16))
    except dio.InputError as e:
        _one_line(e)
        assert "x.jsonl" in str(e)
    else:
        assert out and all(isinstance(v, dict) for _, v in out)
        assert [n for n, _ in out] == sorted({n for n, _ in out})


@FUZZ
@given(st.lists(json_values, max_size=6))
def test_read_jsonl_arbitrary_json(values):
    f = _file(_jsonl(values), "v.jsonl")
    try:
        out = list(dio.read_jsonl(f, objects=False))
    except dio.InputError as e:
        _one_line(e)
    else:
        assert [v for _, v in out] == [v for v in values]


@FUZZ
@given(hostile_bytes | st.lists(json_values, max_size=4).map(_jsonl))
def test_eval_set_reader(data):
    try:
        out = read_turns_jsonl(_file(data, "e.jsonl"))
    except EvalDataError as e:
        _one_line(e)
    else:
        assert out and all(isinstance(t, str) and t.strip() for t in out)


# ----------------------------------------------------------------------------- calibration
calibration_docs = json_values | st.fixed_dictionaries(
    {"temperatures": json_values | st.lists(scalars, max_size=6)},
    optional={"temperature": scalars, "method": scalars})


@FUZZ
@given(hostile_bytes | calibration_docs.map(lambda d: json.dumps(d).encode()))
def test_calibration_loaders(data):
    f = _file(data, C.CALIBRATION_FILE)
    try:
        d = C.load_calibration(f)
    except C.CalibrationError as e:
        _one_line(e)
    else:
        assert all(0 < float(t) < float("inf") for t in d["temperatures"])
    try:
        temps, _ = read_calibration(f)  # the drafter's loader of the same file
    except DrafterError as e:
        _one_line(e)
    else:
        assert all(isinstance(t, float) for t in temps)


# ----------------------------------------------------------------------------- capacity curves
_VALID = [get_curve("h100-qwen3-8b-jagged").to_dict(),
          CapacityCurve(name="t", kind="table", batch=(1, 2, 8), step_ms=(3.0, 4.0, 9.0)).to_dict()]
_FIELDS = sorted(set(_VALID[0]) | {"extra"})
_ROOF = sorted(_VALID[0]["roofline"])


@st.composite
def capacity_docs(draw):
    """A valid curve with some fields (top level or roofline) replaced by arbitrary JSON."""
    d = json.loads(json.dumps(draw(st.sampled_from(_VALID))))
    for _ in range(draw(st.integers(1, 3))):
        if isinstance(d.get("roofline"), dict) and draw(st.booleans()):
            d["roofline"][draw(st.sampled_from(_ROOF))] = draw(json_values)
        else:
            d[draw(st.sampled_from(_FIELDS))] = draw(json_values)
    return d


@FUZZ
@given(hostile_bytes | json_values.map(lambda v: json.dumps(v).encode())
       | capacity_docs().map(lambda d: json.dumps(d).encode()))
def test_capacity_loader(data):
    try:
        c = CapacityCurve.from_json(_file(data, "cap.json"))
    except CapacityError as e:
        _one_line(e)
    else:
        assert isinstance(c, CapacityCurve) and c.kind in ("profiled", "roofline", "jagged", "table")

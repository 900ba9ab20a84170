"""Atomic writes and size-capped reads: the one path every writer and JSON reader takes.

Scope: ``atomic_path`` (a unique temporary name beside the destination, renamed over it on success,
removed on failure) and ``atomic_dir`` (the same for a directory), ``write_json_atomic`` /
``write_text_atomic`` on top of it, ``stale_temps`` / ``remove_stale_temps`` (what a killed writer
left: names of exactly that temporary pattern), and the readers: ``read_json_capped`` (one JSON
document) and ``read_jsonl`` (one JSON value per line). Both refuse a file over a byte cap before
reading it and turn every malformed input — missing, not a regular file, not UTF-8, bad JSON,
NaN/Infinity or a float that overflows to ∞, nesting too deep for the parser, an integer too long to
convert, a line over the line cap, no record at all — into ONE line naming the file (and the line),
raised as the caller's ``UserError`` subclass (``InputError`` by default). Not here: formats
(traces, caches, checkpoints) and what a record must hold, which their modules check.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from dspark_viz.errors import UserError, one_line

MAX_JSONL_BYTES = 1 << 30  # default cap of a JSONL file (prompts, samples, eval sets)
MAX_LINE_BYTES = 64 << 20  # default cap of one JSONL line
# the temporary names ``atomic_path`` / ``atomic_dir`` make: ``.NAME.XXXXXXXX.tmp`` (tempfile's
# 8 random characters); nothing else in a directory matches
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


class InputError(UserError):
    """A file a reader was given is missing, too large or malformed; one line naming it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary name is unique (``tempfile``), so concurrent writers never share one; on any
    exception it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual mode
    try:
        yield tmp
        if fsync:
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh empty temporary directory beside ``path``; on success it takes ``path``'s place.

    An existing ``path`` is first renamed to another temporary name and removed after the swap, so
    ``path`` is never a half-written directory; on any exception the temporary one is removed.
    A writer killed in between leaves only ``TEMP_NAME`` entries (``remove_stale_temps``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.replace(path, old)  # an empty directory is replaced by rename
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_temps(directory: str | os.PathLike) -> list[Path]:
    """The entries of ``directory`` named like ``atomic_path`` / ``atomic_dir`` temporaries."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if TEMP_NAME.match(p.name))


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove what killed atomic writers left in ``directory`` (``TEMP_NAME`` entries only, never
    following a link out of it); returns what was removed."""
    gone = []
    for p in stale_temps(directory):
        with contextlib.suppress(FileNotFoundError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            gone.append(p)
    return gone


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: str | os.PathLike, obj, *, indent: int | None = 1,
                      fsync: bool = False, ensure_ascii: bool = True) -> Path:
    """Serialise ``obj`` (no NaN or infinity) and write it to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=ensure_ascii)
    return write_text_atomic(path, text, fsync=fsync)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} overflows a float")
    return v


def parse_json(text: str):
    """``json.loads`` without NaN/Infinity (or floats that overflow to ∞). Raises ValueError
    (malformed, an integer over the digit limit) or RecursionError (nested too deeply)."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _json_problem(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at column {e.colno}" if e.lineno == 1 else f"{e.msg} at line {e.lineno} column {e.colno}"
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 ({e.reason} at byte {e.start})"
    return one_line(e)


def _checked_file(path: Path, max_bytes: int, what: str, error: type[UserError]) -> int:
    if not path.is_file():
        raise error(f"{what} {path} does not exist or is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{what} {path} is larger than {max_bytes / 2**20:.3g} MiB ({size} bytes)")
    return size


def read_json_capped(path: str | os.PathLike, max_bytes: int, *, what: str = "file",
                     error: type[UserError] = InputError):
    """Parse the JSON file at ``path``, refusing it first when it is over ``max_bytes``.

    Every failure (missing, too large, not UTF-8, malformed, NaN/Infinity, too deeply nested,
    an integer too long to convert) raises ``error`` with one line naming the file.
    """
    path = Path(path)
    _checked_file(path, max_bytes, what, error)
    try:
        return parse_json(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"{what} {path} is not valid JSON: {_json_problem(e)}") from None


def read_jsonl(path: str | os.PathLike, *, max_bytes: int = MAX_JSONL_BYTES,
               max_line_bytes: int = MAX_LINE_BYTES, what: str = "file",
               error: type[UserError] = InputError, objects: bool = True,
               allow_empty: bool = False) -> Iterator[tuple[int, object]]:
    """Yield ``(line number, value)`` for every non-blank line of the JSONL file at ``path``.

    The file is checked (exists, regular, ≤ ``max_bytes``) on the first ``next``; each line is
    read with at most ``max_line_bytes`` bytes, decoded as UTF-8 (a BOM on line 1 is allowed) and
    parsed by ``parse_json``. ``objects``: every value must be a JSON object. ``allow_empty``:
    otherwise a file without a record is an error. Every failure raises ``error`` with one line
    ``"<path>:<line>: …"`` (or ``"<what> <path> …"`` for the file as a whole). Callers that must
    write nothing on a bad file consume the whole iterator before writing.
    """
    path = Path(path)
    _checked_file(path, max_bytes, what, error)
    n_records = 0
    with path.open("rb") as f:
        n = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                break
            n += 1
            if len(raw) > max_line_bytes:
                raise error(f"{path}:{n}: line longer than {max_line_bytes / 2**20:.3g} MiB")
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{n}: {_json_problem(e)}") from None
            if not line.strip():
                continue
            try:
                obj = parse_json(line)
            except (ValueError, RecursionError) as e:
                raise error(f"{path}:{n}: malformed JSON ({_json_problem(e)})") from None
            if objects and not isinstance(obj, dict):
                raise error(f"{path}:{n}: expected a JSON object, got {_kind(obj)}")
            n_records += 1
            yield n, obj
    if not n_records and not allow_empty:
        raise error(f"{what} {path} holds no records (empty file)")


def _kind(obj) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(obj), "a number")

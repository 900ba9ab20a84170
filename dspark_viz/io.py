"""Atomic writes and size-capped reads: the one path every writer and JSON reader takes.

Scope: ``atomic_path`` (a unique temporary name beside the destination, renamed over it on success,
removed on failure), ``write_json_atomic`` / ``write_text_atomic`` on top of it, and
``read_json_capped`` (refuse a file over a byte cap before reading it, then parse it, turning every
malformed input into the caller's one-line error type). Not here: formats (traces, caches,
checkpoints), which call these.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from dspark_viz.errors import UserError, one_line


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


def read_json_capped(path: str | os.PathLike, max_bytes: int, *, what: str = "file",
                     error: type[UserError] = UserError):
    """Parse the JSON file at ``path``, refusing it first when it is over ``max_bytes``.

    Every failure (missing, too large, not UTF-8, malformed, NaN/Infinity, too deeply nested,
    an integer too long to convert) raises ``error`` with one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist or is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{what} {path} is larger than {max_bytes / 2**20:.3g} MiB ({size} bytes)")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise error(f"{what} {path} is not valid JSON: {one_line(e)}") from None

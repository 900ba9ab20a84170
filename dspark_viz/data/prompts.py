"""Prompt sets: read JSONL / plain text / built-in / hub sources, dedupe, split, write.

Scope: turn user files and the built-in offline sources (``sources.py``) into ``Prompt``
records and write a deterministic train/validation split as JSONL
(``{"id", "source", "turns", "text"?, "reference"?}`` per line). Accepted JSONL shapes, one
object per line: DeepSpec eval ``{"turns": [...]}``, DeepSpec train ``{"conversations":
[{"role", "content"}]}`` (user turns kept; assistant turns are regenerated later), and
``{"prompt": ...}`` / ``{"text": ...}``. A malformed line is reported with its file and line
number. Plain text files hold one prompt per blank-line separated paragraph. Hub datasets
load through ``datasets`` when it is installed and the hub is reachable; otherwise a one-line
``PromptError``. Not here: generation (``regenerate.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from dspark_viz.data.sources import Prompt, builtin
from dspark_viz.errors import UserError, one_line
from dspark_viz.io import atomic_path
from dspark_viz.io import read_jsonl as read_jsonl_values

SPLITS = ("train", "val")


class PromptError(UserError):
    """A prompt file or source is malformed or unavailable; one-line message."""


# ------------------------------------------------------------------------------ readers
def _record_to_prompt(obj, where: str, index: int) -> Prompt:
    if not isinstance(obj, dict):
        raise PromptError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    src = str(obj.get("source", "jsonl"))
    text = obj.get("text") if isinstance(obj.get("text"), str) else None
    if "turns" in obj:
        turns = obj["turns"]
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise PromptError(f"{where}: 'turns' must be a non-empty list of strings")
    elif "conversations" in obj:
        conv = obj["conversations"]
        if not isinstance(conv, list) or not conv:
            raise PromptError(f"{where}: 'conversations' must be a non-empty list")
        turns = []
        for m in conv:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), str)):
                raise PromptError(f"{where}: each conversation message needs string 'role' and 'content'")
            if m["role"] in ("user", "human"):
                turns.append(m["content"])
        if not turns:
            raise PromptError(f"{where}: conversation has no user turn")
    elif isinstance(obj.get("prompt"), str):
        turns = [obj["prompt"]]
    elif text is not None:
        turns = [text]
    else:
        raise PromptError(f"{where}: needs 'turns', 'conversations', 'prompt' or 'text'")
    if not any(t.strip() for t in turns):
        raise PromptError(f"{where}: prompt is empty")
    body = json.dumps([turns, text], ensure_ascii=False)
    pid = obj.get("id")
    pid = str(pid) if pid is not None else f"{src}-{hashlib.sha1(body.encode()).hexdigest()[:12]}"
    ref = obj.get("reference")
    return Prompt(id=pid, turns=tuple(turns), source=src, text=text,
                  reference=str(ref) if ref is not None else None)


def iter_jsonl(path: str | os.PathLike) -> Iterable[tuple[int, dict]]:
    """Yield (line number, value) for every non-blank line (``io.read_jsonl``: any malformed
    input — not UTF-8, bad JSON, NaN, too deep, huge integers — is a PromptError naming the line)."""
    yield from read_jsonl_values(path, what="prompt file", error=PromptError, objects=False,
                                 allow_empty=True)


def read_jsonl(path: str | os.PathLike) -> list[Prompt]:
    return [_record_to_prompt(obj, f"{path}:{n}", n) for n, obj in iter_jsonl(path)]


def read_text(path: str | os.PathLike) -> list[Prompt]:
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompt file {str(path)!r} does not exist")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PromptError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    paras = [p.strip() for p in raw.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return [Prompt(id=f"text-{hashlib.sha1(p.encode()).hexdigest()[:12]}", turns=(p,),
                   source=path.name) for p in paras]


def read_hub(name: str, split: str = "train", limit: int | None = None) -> list[Prompt]:
    """A Hugging Face dataset with DeepSpec-style columns, when ``datasets`` and the hub are available."""
    try:
        import datasets
    except ImportError:
        raise PromptError("hub datasets need `pip install datasets` (not installed)") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown name, … — report in one line
        raise PromptError(f"cannot load hub dataset {name!r} (offline?): {one_line(e)}") from None
    out = []
    for i, row in enumerate(ds):
        if limit is not None and len(out) >= limit:
            break
        out.append(_record_to_prompt(dict(row) | {"source": f"hub:{name}"}, f"{name}[{i}]", i))
    return out


def load_source(spec: str, *, n: int = 100, seed: int = 0) -> list[Prompt]:
    """``builtin:NAME``, ``hub:NAME``, or a path (``.jsonl``/``.json`` → JSONL, else plain text)."""
    if spec.startswith("builtin:"):
        try:
            return builtin(spec.split(":", 1)[1], n, seed)
        except ValueError as e:
            raise PromptError(one_line(e)) from None
    if spec.startswith("hub:"):
        return read_hub(spec.split(":", 1)[1], limit=n)
    p = Path(spec)
    return read_jsonl(p) if p.suffix in (".jsonl", ".json") else read_text(p)


# ------------------------------------------------------------------------------ split/write
def dedupe(prompts: Iterable[Prompt]) -> list[Prompt]:
    """Drop repeated ids and repeated texts (first occurrence kept, order preserved)."""
    seen_id, seen_body, out = set(), set(), []
    for p in prompts:
        body = (p.turns, p.text)
        if p.id in seen_id or body in seen_body:
            continue
        seen_id.add(p.id)
        seen_body.add(body)
        out.append(p)
    return out


def split_of(pid: str, val_fraction: float, seed: int) -> str:
    """Deterministic split from a hash of (seed, id): independent of order and of other prompts."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big") / 2 ** 64
    return "val" if h < val_fraction else "train"


def split(prompts: list[Prompt], val_fraction: float, seed: int) -> dict[str, list[Prompt]]:
    if not 0.0 <= val_fraction < 1.0:
        raise PromptError(f"validation fraction must be in [0, 1), got {val_fraction}")
    out: dict[str, list[Prompt]] = {s: [] for s in SPLITS}
    for p in prompts:
        out[split_of(p.id, val_fraction, seed)].append(p)
    return out


def write_jsonl(path: str | os.PathLike, prompts: Iterable[Prompt]) -> int:
    """Write atomically (temp file + rename); returns the number of records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def prepare_prompts(sources: list[str], out_dir: str | os.PathLike, *, n: int = 100,
                    val_fraction: float = 0.05, seed: int = 0) -> dict[str, int]:
    """Load every source (``n`` each for built-in/hub ones), dedupe, split, write
    ``train.jsonl`` and ``val.jsonl`` in ``out_dir``; returns counts per split."""
    if not sources:
        raise PromptError("no prompt source given")
    allp: list[Prompt] = []
    for s in sources:
        allp.extend(load_source(s, n=n, seed=seed))
    parts = split(dedupe(allp), val_fraction, seed)
    out = Path(out_dir)
    return {s: write_jsonl(out / f"{s}.jsonl", parts[s]) for s in SPLITS}

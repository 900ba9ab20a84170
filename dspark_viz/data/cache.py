"""Target cache: per-sample token ids, loss mask, tapped hidden states and final hidden state.

Scope: compute what training needs from the frozen target (one forward pass per sample;
logits are never stored — the LM head is re-applied to the final hidden state at sampled
positions), write it as memory-mapped ``.npy`` shards, resume an interrupted write, and
read it back with validation. ``estimate`` sizes a cache before anything is written.

Layout of a cache directory:
- ``cache-spec.json``      what the cache is for (target, layer ids, hidden size, dtype, max
                           length); written first, checked on resume;
- ``shard-NNNNN.{ids,mask,taps,last,lse}.npy``  tokens of many samples laid end to end: ids
                           int32 [N], loss mask uint8 [N], taps [N, L·H], last [N, H] (bf16 is
                           stored as its uint16 bit pattern; numpy has no bf16), lse float32
                           [N] — the log-sum-exp of the target's full-vocabulary logits at each
                           position (version 2), so training with a restricted draft vocabulary
                           gets p_t(v) = exp(z_v − lse) from the Vd head rows alone. Version-1
                           caches (no lse) stay readable (``CacheItem.lse`` is None);
- ``shard-NNNNN.json``     the shard's samples (id, offset, length) and per-file byte sizes
                           and sha256, written after its arrays — a shard without it is
                           incomplete and is deleted on resume;
- ``manifest.json``        written last and atomically: spec, counts, every shard record.
A cache without a manifest, with a file whose size or checksum differs, or built for another
target / layer set is refused with a one-line ``CacheError`` naming the reason.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from dspark_viz.data.regenerate import loss_mask_of
from dspark_viz.errors import UserError, one_line
from dspark_viz.io import atomic_path, read_json_capped, write_json_atomic

FORMAT = "dspark-target-cache"
VERSION = 2
READABLE_VERSIONS = (1, 2)
FIELDS = ("ids", "mask", "taps", "last", "lse")
FIELDS_V1 = ("ids", "mask", "taps", "last")
DTYPES = {"bf16": 2, "fp16": 2, "fp32": 4}
SPEC_FILE, MANIFEST_FILE = "cache-spec.json", "manifest.json"
MAX_JSON_BYTES = 1 << 30  # a manifest lists every sample: ≈ 40 bytes each


class CacheError(UserError):
    """The cache is incomplete, corrupt or built for something else; one-line reason."""


@dataclass(frozen=True)
class CacheSpec:
    target: str
    layer_ids: tuple[int, ...]
    hidden_size: int
    target_num_layers: int
    vocab_size: int
    dtype: str = "bf16"
    max_len: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_ids", tuple(int(i) for i in self.layer_ids))
        if self.dtype not in DTYPES:
            raise CacheError(f"cache dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_len < 2:
            raise CacheError(f"max_len must be ≥ 2, got {self.max_len}")

    def to_dict(self) -> dict:
        return asdict(self) | {"layer_ids": list(self.layer_ids)}

    @classmethod
    def from_dict(cls, d: dict) -> "CacheSpec":
        try:
            return cls(**{k: d[k] for k in ("target", "layer_ids", "hidden_size",
                                             "target_num_layers", "vocab_size", "dtype", "max_len")})
        except (KeyError, TypeError) as e:
            raise CacheError(f"cache spec is missing or has a bad field ({e})") from None

    def bytes_per_token(self) -> int:
        b = DTYPES[self.dtype]
        return 4 + 1 + len(self.layer_ids) * self.hidden_size * b + self.hidden_size * b


# ------------------------------------------------------------------------------ estimate
def estimate(*, num_samples: int, tokens_per_sample: float, hidden_size: int, num_layers: int,
             dtype: str = "bf16", shard_bytes: int = 1 << 30) -> dict:
    """Bytes a cache will take (per field and total) — nothing is computed or written."""
    if dtype not in DTYPES:
        raise CacheError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if num_samples < 0 or tokens_per_sample < 0 or hidden_size < 1 or num_layers < 1:
        raise CacheError("estimate needs num_samples ≥ 0, tokens ≥ 0, hidden_size ≥ 1, layers ≥ 1")
    b = DTYPES[dtype]
    tokens = num_samples * tokens_per_sample
    per_tok = {"ids": 4, "mask": 1, "taps": num_layers * hidden_size * b, "last": hidden_size * b}
    data = {k: int(v * tokens) for k, v in per_tok.items()}
    total = sum(data.values()) + 64 * num_samples  # + index entries in the shard JSONs
    return {"num_samples": int(num_samples), "tokens": int(tokens), "bytes_per_token": sum(per_tok.values()),
            "bytes_per_field": data, "total_bytes": int(total),
            "shards": max(1, math.ceil(total / shard_bytes)), "dtype": dtype}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.2f} PiB"


# ------------------------------------------------------------------------------ compute
@dataclass
class CacheItem:
    """One sample as training consumes it (also produced on the fly in online mode)."""

    id: str
    ids: torch.Tensor  # [T] long
    loss_mask: torch.Tensor  # [T] bool
    taps: torch.Tensor  # [T, L·H] float
    last: torch.Tensor  # [T, H] float — final hidden state (LM head input)
    lse: torch.Tensor | None = None  # [T] float — log Σ_v exp(target logit) (None: v1 cache)


def compute_item(target, sample_id: str, ids: Sequence[int], loss_mask: Sequence[int],
                 layer_ids: tuple[int, ...]) -> CacheItem:
    """One target pass over the sample → taps of ``layer_ids`` and the final hidden state."""
    x = torch.tensor([list(ids)], dtype=torch.long, device=target.device)
    out = target.forward(x, None, tuple(layer_ids) + (target.num_layers - 1,))
    L, H = len(layer_ids), target.hidden_size
    taps = out.taps[0]  # [T, (L+1)·H]
    lse = torch.logsumexp(out.logits[0].float(), dim=-1)  # [T] full-vocabulary normaliser
    return CacheItem(id=sample_id, ids=x[0].cpu(), loss_mask=torch.tensor(list(loss_mask)).bool(),
                     taps=taps[:, : L * H], last=taps[:, L * H:], lse=lse.cpu())


def _to_np(t: torch.Tensor, dtype: str) -> np.ndarray:
    t = t.detach().cpu()
    if dtype == "bf16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return t.to(torch.float16 if dtype == "fp16" else torch.float32).numpy()


def _from_np(a: np.ndarray, dtype: str) -> torch.Tensor:
    t = torch.from_numpy(np.array(a, copy=True))
    if dtype == "bf16":
        return t.view(torch.int16).view(torch.bfloat16).float()
    return t.float()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ writer
@dataclass
class WriteStats:
    samples: int = 0
    tokens: int = 0
    bytes: int = 0
    resumed_samples: int = 0
    truncated: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _read_json(path: Path):
    return read_json_capped(path, MAX_JSON_BYTES, what="cache file", error=CacheError)


def _completed_shards(out: Path) -> list[dict]:
    """Shard records whose files exist with the recorded sizes (resume)."""
    recs = []
    for j in sorted(out.glob("shard-*.json")):
        try:
            rec = _read_json(j)
        except CacheError as e:
            raise CacheError(f"{one_line(e)}; delete it and its .npy files to recompute") from None
        for fld, meta in rec["files"].items():
            p = out / meta["file"]
            if not p.exists() or p.stat().st_size != meta["bytes"]:
                raise CacheError(f"{p} is missing or has the wrong size; delete {j.name} to recompute it")
        recs.append(rec)
    return recs


def _open_dir(out: Path, spec: CacheSpec) -> None:
    """Create ``out`` with its spec, or check that the cache already there is for ``spec``."""
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / SPEC_FILE
    if not spec_file.exists():
        write_json_atomic(spec_file, spec.to_dict() | {"format": FORMAT, "version": VERSION}, fsync=True)
        return
    raw = _read_json(spec_file)
    ver = raw.get("version") if isinstance(raw, dict) else None
    if ver != VERSION:
        raise CacheError(f"{out} holds a version-{ver} cache (this writer makes version {VERSION}); "
                         f"use another directory")
    old = CacheSpec.from_dict(raw)
    if old != spec:
        diff = [k for k in spec.to_dict() if spec.to_dict()[k] != old.to_dict()[k]]
        raise CacheError(f"{out} holds a cache with a different {diff[0]} "
                         f"({old.to_dict()[diff[0]]} ≠ {spec.to_dict()[diff[0]]}); use another directory")


def _resume_shards(out: Path) -> list[dict]:
    """The complete shards already in ``out``; the manifest and half-written files go."""
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # only valid for the final set of shards
    shards = _completed_shards(out)
    named = {m["file"] for r in shards for m in r["files"].values()}
    for p in out.glob("shard-*"):  # leftovers of a shard killed mid-write
        if p.suffix != ".json" and p.name not in named or ".tmp" in p.name:
            p.unlink()
    for p in out.glob(".*.tmp"):  # temporary files of atomic writes killed mid-write
        p.unlink()
    return shards


class _ShardWriter:
    """Samples buffered until a shard holds ``shard_tokens`` tokens, then written as one shard:
    its arrays first (each atomically), then its JSON record."""

    def __init__(self, out: Path, dtype: str, shards: list[dict], stats: WriteStats) -> None:
        self.out, self.dtype, self.shards, self.stats = out, dtype, shards, stats
        self.buf: dict[str, list] = {f: [] for f in FIELDS}
        self.index: list[list] = []
        self.tok = self.trunc = self.empty = 0

    def add(self, item: CacheItem, ids: list[int], mask: list[int]) -> None:
        self.index.append([item.id, self.tok, len(ids)])
        self.buf["ids"].append(np.asarray(ids, dtype=np.int32))
        self.buf["mask"].append(np.asarray(mask, dtype=np.uint8))
        self.buf["taps"].append(_to_np(item.taps, self.dtype))
        self.buf["last"].append(_to_np(item.last, self.dtype))
        self.buf["lse"].append(item.lse.numpy().astype(np.float32))
        self.tok += len(ids)

    def _write_array(self, fname: str, arr: np.ndarray) -> dict:
        path = self.out / fname
        with atomic_path(path, fsync=True) as tmp, tmp.open("wb") as fh:
            np.save(fh, arr)
        size = path.stat().st_size
        self.stats.bytes += size
        return {"file": fname, "bytes": size, "sha256": _sha256(path), "dtype": str(arr.dtype),
                "shape": list(arr.shape)}

    def flush(self) -> None:
        if not self.index:
            return
        name = _shard_name(len(self.shards))
        rec = {"name": name, "samples": [list(x) for x in self.index], "tokens": self.tok,
               "truncated": self.trunc, "skipped_empty": self.empty, "files": {}}
        for f in FIELDS:
            rec["files"][f] = self._write_array(f"{name}.{f}.npy", np.concatenate(self.buf[f], axis=0))
        write_json_atomic(self.out / f"{name}.json", rec, fsync=True)
        self.shards.append(rec)
        for f in FIELDS:
            self.buf[f].clear()
        self.index.clear()
        self.tok = self.trunc = self.empty = 0


def _write_manifest(out: Path, spec: CacheSpec, shards: list[dict], truncated: int,
                    skipped_empty: int) -> None:
    manifest = {"format": FORMAT, "version": VERSION, "spec": spec.to_dict(),
                "num_samples": sum(len(r["samples"]) for r in shards),
                "num_tokens": sum(r["tokens"] for r in shards),
                "truncated": truncated, "skipped_empty": skipped_empty,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "shards": shards}
    write_json_atomic(out / MANIFEST_FILE, manifest, fsync=True)


def write_cache(samples: Sequence[dict], out_dir: str | os.PathLike, target, *,
                layer_ids: tuple[int, ...], dtype: str = "bf16", max_len: int = 4096,
                shard_tokens: int = 65536, progress: bool = True,
                max_seconds: float | None = None) -> WriteStats:
    """Compute and write the cache for regenerated ``samples`` (``regenerate.read_samples``).

    Resumable: completed shards are kept and their samples skipped; half-written files are
    removed. Samples longer than ``max_len`` are truncated to it (counted and recorded in the
    manifest); samples with no loss token left after that are skipped (counted).
    """
    out = Path(out_dir)
    spec = CacheSpec(target=target.name, layer_ids=tuple(layer_ids), hidden_size=target.hidden_size,
                     target_num_layers=target.num_layers, vocab_size=target.vocab_size,
                     dtype=dtype, max_len=max_len)
    bad = [i for i in spec.layer_ids if not -1 <= i < target.num_layers]
    if bad:
        raise CacheError(f"layer ids {bad} out of range for {target.name} ({target.num_layers} layers)")
    _open_dir(out, spec)
    shards = _resume_shards(out)
    done = {s[0] for r in shards for s in r["samples"]}
    stats = WriteStats(resumed_samples=len(done), truncated=sum(r.get("truncated", 0) for r in shards))
    skipped_empty = sum(r.get("skipped_empty", 0) for r in shards)
    todo = [s for s in samples if str(s["id"]) not in done]
    writer = _ShardWriter(out, dtype, shards, stats)
    t0 = time.perf_counter()
    with tqdm(todo, desc="cache", unit="sample", dynamic_ncols=True, disable=not progress) as bar:
        for s in bar:
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                stats.stopped_early = True
                break
            ids, mask = list(s["input_ids"]), loss_mask_of(s)
            if len(ids) > max_len:
                ids, mask = ids[:max_len], mask[:max_len]
                writer.trunc += 1
                stats.truncated += 1
            if sum(mask[1:]) == 0:
                writer.empty += 1
                skipped_empty += 1
                continue
            with torch.inference_mode():
                writer.add(compute_item(target, str(s["id"]), ids, mask, spec.layer_ids), ids, mask)
            stats.samples += 1
            stats.tokens += len(ids)
            if writer.tok >= shard_tokens:
                writer.flush()
        writer.flush()
    _write_manifest(out, spec, shards, stats.truncated, skipped_empty)
    stats.seconds = time.perf_counter() - t0
    return stats


# ------------------------------------------------------------------------------ reader
class TargetCache:
    """A validated, memory-mapped cache. ``cache[i]`` → ``CacheItem`` (float32 tensors).

    ``verify=True`` checks every file's sha256 (reads the whole cache once); sizes and
    shapes are always checked. ``expect`` (a dict of spec fields, e.g. target, layer_ids,
    hidden_size) refuses a cache built for something else.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True,
                 expect: dict | None = None) -> None:
        self.path = Path(path)
        man = self.path / MANIFEST_FILE
        if not self.path.is_dir():
            raise CacheError(f"cache directory {str(self.path)!r} does not exist")
        if not man.exists():
            raise CacheError(f"{self.path} has no manifest.json: the cache is incomplete "
                             f"(run `dspark-viz prepare cache` again to finish it)")
        m = _read_json(man)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise CacheError(f"{man} is not a {FORMAT} manifest")
        if m.get("version") not in READABLE_VERSIONS:
            raise CacheError(f"{man}: unsupported cache version {m.get('version')!r} "
                             f"(readable: {', '.join(map(str, READABLE_VERSIONS))})")
        self.version = int(m["version"])
        fields_ = FIELDS if self.version >= 2 else FIELDS_V1
        self.manifest = m
        self.spec = CacheSpec.from_dict(m.get("spec", {}))
        for k, v in (expect or {}).items():
            mine = self.spec.to_dict().get(k)
            v = list(v) if isinstance(v, tuple) else v
            if mine != v:
                raise CacheError(f"cache {self.path} was built with {k}={mine}, but {v} is needed")
        L, H = len(self.spec.layer_ids), self.spec.hidden_size
        want_cols = {"ids": None, "mask": None, "taps": L * H, "last": H, "lse": None}
        self._arrays: list[dict[str, np.ndarray]] = []
        self.index: list[tuple[int, int, int, str]] = []  # (shard, offset, length, id)
        for k, rec in enumerate(m.get("shards", [])):
            self._arrays.append({f: self._open_array(rec, f, want_cols[f], verify) for f in fields_})
            for sid, off, n in rec["samples"]:
                if off + n > rec["tokens"]:
                    raise CacheError(f"shard {rec['name']}: sample {sid} runs past the shard end")
                self.index.append((k, int(off), int(n), str(sid)))
        if len(self.index) != m.get("num_samples"):
            raise CacheError(f"{man}: num_samples {m.get('num_samples')} ≠ {len(self.index)} indexed")

    def _open_array(self, rec: dict, f: str, cols: int | None, verify: bool) -> np.ndarray:
        """The memory-mapped ``f`` array of shard ``rec``, checked (size, checksum, shape)."""
        meta = rec["files"].get(f)
        if meta is None:
            raise CacheError(f"shard {rec.get('name')} lists no {f} file")
        p = self.path / meta["file"]
        if not p.exists():
            raise CacheError(f"shard file {p.name} is missing")
        if p.stat().st_size != meta["bytes"]:
            raise CacheError(f"shard file {p.name} has {p.stat().st_size} bytes, manifest "
                             f"says {meta['bytes']} (truncated or corrupt)")
        if verify and _sha256(p) != meta["sha256"]:
            raise CacheError(f"shard file {p.name} fails its sha256 checksum (corrupt)")
        try:
            a = np.load(p, mmap_mode="r")
        except ValueError as e:
            raise CacheError(f"shard file {p.name} is not a readable .npy ({e})") from None
        if a.shape[0] != rec["tokens"] or (cols and a.shape[1] != cols):
            raise CacheError(f"shard file {p.name} has shape {a.shape}, expected "
                             f"{rec['tokens']} tokens × {cols or 1}")
        return a

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_tokens(self) -> int:
        return int(self.manifest["num_tokens"])

    def lengths(self) -> list[int]:
        return [n for _, _, n, _ in self.index]

    def tokens(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [T] long, loss_mask [T] bool) of sample i without reading its hidden states."""
        k, off, n, _ = self.index[i]
        a = self._arrays[k]
        return (torch.from_numpy(a["ids"][off: off + n].astype(np.int64)),
                torch.from_numpy(a["mask"][off: off + n].astype(bool)))

    def __getitem__(self, i: int) -> CacheItem:
        k, off, n, sid = self.index[i]
        a, dt = self._arrays[k], self.spec.dtype
        return CacheItem(id=sid, ids=torch.from_numpy(a["ids"][off: off + n].astype(np.int64)),
                         loss_mask=torch.from_numpy(a["mask"][off: off + n].astype(bool)),
                         taps=_from_np(a["taps"][off: off + n], dt),
                         last=_from_np(a["last"][off: off + n], dt),
                         lse=torch.from_numpy(np.array(a["lse"][off: off + n], dtype=np.float32))
                         if "lse" in a else None)

    @property
    def has_lse(self) -> bool:
        return self.version >= 2

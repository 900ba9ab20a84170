"""Sharded regeneration: N writers, resumable per shard, seeded per prompt, progress in JSON.

Scope: the target answers every prompt of a ``mix.write_mix`` file. Writer ``w`` of ``N`` takes
the prompts with ``idx % N == w``, sorts them by token length and cuts them into shards of
``shard_records`` prompts of similar length (``plan``), answered in a seeded random order (so the
shards done after any stop are a sample of the whole mix); inside a shard the prompts are
answered in batches of ``batch_size`` in length order (little padding) with
``batchgen.generate_batch``, each prompt seeded from (``seed``, its id). A shard is written once,
atomically, when all its prompts are answered — so stopping a writer (kill, ``--max-seconds``)
loses at most the shard in flight, and running it again skips finished shards and produces the
same shards an uninterrupted run would. Which prompts a shard holds depends only on the prompt
file, the target's tokenizer, ``writers``, ``shard_records`` and ``seed`` (checked on resume against ``regen-config.json``); the
batch size may change between runs (answers do not depend on it: ``batchgen``).

Files under the output directory:
- ``regen-config.json``: the settings and the prompt file's sha256 (written by the first writer);
- ``shard-wWofN-KKKKK.safetensors``: ``tokens`` int32 [T] (prompt then answer of each record, end
  to end), ``offsets`` int64 [R + 1], ``prompt_lens`` int32 [R], ``finished`` uint8 [R], ``idx``
  int64 [R]; metadata: prompt ids and sources (JSON), answer token count, skipped prompt idx
  (longer than ``max_prompt_tokens``), the config. About 4 bytes per stored token;
- ``progress-wW.json``: tokens done, tokens/s and tokens per CPU-second this run, ETA, state —
  rewritten atomically after every batch; ``status`` sums the writers (a ``running`` writer
  whose process is gone shows as ``gone``);
- ``STOP``: create it to stop every writer cleanly after its shard in flight; remove it to resume.
``iter_samples`` reads the shards back as regenerated samples (``id``, ``input_ids``,
``loss_spans`` on the answer) for ``cache.write_cache`` / training.
Not here: the generation loop (``batchgen.py``), prompt files (``mix.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from dspark_viz.data.batchgen import generate_batch, prompt_seed
from dspark_viz.data.regenerate import RegenError, _encoder, template_for
from dspark_viz.data.sources import Prompt
from dspark_viz.io import atomic_path, read_json_capped, write_json_atomic

FORMAT = "dspark-regen-shards"
VERSION = 1
CONFIG_FILE = "regen-config.json"
STOP_FILE = "STOP"  # while it exists, writers finish their shard in flight and exit


@dataclass(frozen=True)
class RegenConfig:
    """Everything that decides the shards' content (``batch_size`` only decides speed)."""

    target: str = "embedded"
    template: str = "raw"
    max_new_tokens: int = 128
    max_prompt_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    writers: int = 2
    batch_size: int = 128
    shard_records: int = 256

    def __post_init__(self) -> None:
        bad = [k for k in ("max_new_tokens", "max_prompt_tokens", "writers", "batch_size",
                           "shard_records") if int(getattr(self, k)) < 1]
        if bad:
            raise RegenError(f"{bad[0].replace('_', '-')} must be ≥ 1, got {getattr(self, bad[0])}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise RegenError("temperature must be ≥ 0, top-p in (0, 1], top-k ≥ 0")

    def content(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "batch_size"}


def shard_name(writer: int, writers: int, k: int) -> str:
    return f"shard-w{writer}of{writers}-{k:05d}.safetensors"


def plan(lengths: Sequence[int], writers: int, writer: int, shard_records: int, seed: int = 0
         ) -> tuple[list[list[int]], list[int]]:
    """Writer ``writer``'s shards and the order to answer them in.

    The writer's prompts (``idx % writers == writer``), sorted by (token length, idx), cut into
    shards of ``shard_records``: shard k holds prompts of similar length, so its batches pad
    little. The shards are answered in a seeded random order, so the shards done after any
    stop are a random sample of the lengths (and so of the sources). Returns (shards as lists
    of idx, processing order of shard numbers)."""
    if not 0 <= writer < writers:
        raise RegenError(f"writer must be in [0, {writers}), got {writer}")
    mine = sorted(range(writer, len(lengths), writers), key=lambda i: (lengths[i], i))
    shards = [mine[i:i + shard_records] for i in range(0, len(mine), shard_records)]
    order = list(range(len(shards)))
    random.Random(f"{seed}:{writer}:{writers}").shuffle(order)
    return shards, order


def _check_config(out: Path, cfg: RegenConfig, prompts_sha: str, n: int) -> None:
    want = {"format": FORMAT, "version": VERSION, "config": cfg.content(),
            "prompts_sha256": prompts_sha, "num_prompts": n}
    f = out / CONFIG_FILE
    if not f.exists():
        write_json_atomic(f, want, fsync=True)
        return
    have = read_json_capped(f, 1 << 20, what="regen config", error=RegenError)
    for key in ("prompts_sha256", "num_prompts"):
        if have.get(key) != want[key]:
            raise RegenError(f"{out} holds shards of another prompt file ({key} differs); use another --out")
    old = have.get("config", {})
    for k, v in want["config"].items():
        if old.get(k) != v:
            raise RegenError(f"{out} was started with {k.replace('_', '-')}={old.get(k)!r}, not {v!r}; "
                             f"resume with the same settings or use another --out")


def read_shard(path: str | os.PathLike) -> dict:
    """One shard's arrays and metadata, checked (offsets consistent); ``RegenError`` otherwise."""
    path = Path(path)
    try:
        arr = load_file(str(path))
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise RegenError(f"shard {path.name} is unreadable ({str(e).splitlines()[0]}); delete it to redo it") from None
    need = ("tokens", "offsets", "prompt_lens", "finished", "idx")
    if any(k not in arr for k in need) or meta.get("format") != FORMAT:
        raise RegenError(f"shard {path.name} is not a {FORMAT} file")
    off, R = arr["offsets"], len(arr["idx"])
    if len(off) != R + 1 or off[0] != 0 or off[-1] != len(arr["tokens"]) or np.any(np.diff(off) < 0) \
            or np.any(arr["prompt_lens"] > np.diff(off)):
        raise RegenError(f"shard {path.name} has inconsistent offsets")
    ids = json.loads(meta.get("ids", "[]"))
    if len(ids) != R:
        raise RegenError(f"shard {path.name} lists {len(ids)} ids for {R} records")
    return {**arr, "ids": ids, "sources": json.loads(meta.get("sources", "[]")),
            "answer_tokens": int(meta.get("answer_tokens", 0)),
            "skipped": json.loads(meta.get("skipped", "[]")), "meta": meta}


def _write_shard(path: Path, recs: list[dict], skipped: list[int], cfg: RegenConfig,
                 writer: int, k: int, prompts_sha: str) -> int:
    recs = sorted(recs, key=lambda r: r["idx"])
    lens = [len(r["prompt"]) + len(r["answer"]) for r in recs]
    tokens = np.fromiter((t for r in recs for t in (*r["prompt"], *r["answer"])), dtype=np.int32,
                         count=sum(lens))
    arrays = {"tokens": tokens,
              "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
              "prompt_lens": np.array([len(r["prompt"]) for r in recs], dtype=np.int32),
              "finished": np.array([r["finished"] for r in recs], dtype=np.uint8),
              "idx": np.array([r["idx"] for r in recs], dtype=np.int64)}
    answer = sum(len(r["answer"]) for r in recs)
    meta = {"format": FORMAT, "version": str(VERSION), "writer": str(writer), "shard": str(k),
            "ids": json.dumps([r["id"] for r in recs]), "sources": json.dumps([r["source"] for r in recs]),
            "answer_tokens": str(answer), "skipped": json.dumps(sorted(skipped)),
            "prompts_sha256": prompts_sha, "config": json.dumps(cfg.content())}
    with atomic_path(path, fsync=True) as tmp:
        save_file(arrays, str(tmp), metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates its file 0600
    return answer


def _first_ids(prompts: Sequence[Prompt], positions: Sequence[int], tokenizer, template) -> dict:
    enc_first, _ = _encoder(tokenizer)
    return {i: enc_first(prompts[i].raw_text() if template.raw else
                         template.user.format(prompts[i].turns[0]) + template.assistant_open)
            for i in positions}


def run_writer(prompts: Sequence[Prompt], out_dir: str | os.PathLike, cfg: RegenConfig,
               writer: int, *, target, prompts_sha: str | None = None,
               prompts_path: str | os.PathLike | None = None, max_seconds: float | None = None,
               max_shards: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Answer writer ``writer``'s unfinished shards; returns its final progress record.

    ``prompts_sha`` (or ``prompts_path``, hashed) ties the directory to one prompt file.
    ``max_seconds`` / ``max_shards``: start no new shard after that wall time / that many shards.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if prompts_sha is None:
        if prompts_path is None:
            raise RegenError("run_writer needs prompts_sha or prompts_path")
        prompts_sha = hashlib.sha256(Path(prompts_path).read_bytes()).hexdigest()
    _check_config(out, cfg, prompts_sha, len(prompts))
    for p in out.glob(f".shard-w{writer}of{cfg.writers}-*.tmp"):  # this writer's torn writes only
        p.unlink()
    template = template_for(cfg.template, target.name, target.family)
    tok = target.tokenizer
    mine = range(writer, len(prompts), cfg.writers)
    first = _first_ids(prompts, mine, tok, template)
    lengths = [len(first[i]) if i in first else 0 for i in range(len(prompts))]
    shards, order = plan(lengths, cfg.writers, writer, cfg.shard_records, cfg.seed)
    pad = getattr(getattr(tok, "tok", tok), "pad_token_id", None)
    done_tokens, done_records, todo = 0, 0, []
    for k in order:
        pos = shards[k]
        f = out / shard_name(writer, cfg.writers, k)
        if f.exists():
            s = read_shard(f)
            done_tokens += s["answer_tokens"]
            done_records += len(pos)
        else:
            todo.append(k)
    total_records = sum(len(p) for p in shards)
    prog_file = out / f"progress-w{writer}.json"
    t0, c0 = time.perf_counter(), time.process_time()
    run_tokens, run_records, shards_done = 0, 0, len(shards) - len(todo)
    state = {"writer": writer, "writers": cfg.writers, "pid": os.getpid(), "batch_size": cfg.batch_size,
             "shards_total": len(shards), "records_total": total_records,
             "max_new_tokens": cfg.max_new_tokens}

    def progress(status: str, extra_tokens: int = 0, extra_records: int = 0) -> dict:
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tok_run = run_tokens + extra_tokens
        rec_run = run_records + extra_records
        rate = tok_run / wall if wall > 0 else 0.0
        per_rec = (done_tokens + tok_run) / max(1, done_records + rec_run)
        left = total_records - done_records - rec_run
        rec = state | {"state": status, "shards_done": shards_done,
                       "records_done": done_records + rec_run,
                       "tokens_done": done_tokens + tok_run, "tokens_this_run": tok_run,
                       "wall_s_this_run": round(wall, 1), "cpu_s_this_run": round(cpu, 1),
                       "tokens_per_s": round(rate, 2),
                       "tokens_per_cpu_s": round(tok_run / cpu, 2) if cpu > 0 else 0.0,
                       "tokens_per_record": round(per_rec, 1),
                       "eta_s": round(left * per_rec / rate) if rate > 0 else None,
                       "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json_atomic(prog_file, rec)
        return rec

    rec = progress("running" if todo else "done")
    for n_started, k in enumerate(todo):
        if (max_seconds is not None and time.perf_counter() - t0 > max_seconds) or \
                (max_shards is not None and n_started >= max_shards) or (out / STOP_FILE).exists():
            return progress("stopped")
        pos = shards[k]
        keep = sorted((i for i in pos if len(first[i]) <= cfg.max_prompt_tokens),
                      key=lambda i: (len(first[i]), i))
        skipped = [i for i in pos if len(first[i]) > cfg.max_prompt_tokens]
        recs, shard_tokens = [], 0
        for b in range(0, len(keep), cfg.batch_size):
            batch = keep[b:b + cfg.batch_size]
            gens = generate_batch(target, [first[i] for i in batch],
                                  [prompt_seed(cfg.seed, prompts[i].id) for i in batch],
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  top_k=cfg.top_k, top_p=cfg.top_p, pad_id=pad)
            for i, (g, fin) in zip(batch, gens):
                recs.append({"idx": i, "id": prompts[i].id, "source": prompts[i].source,
                             "prompt": first[i], "answer": g, "finished": fin})
                shard_tokens += len(g)
            rec = progress("running", shard_tokens, len(recs))
        _write_shard(out / shard_name(writer, cfg.writers, k), recs, skipped, cfg, writer, k, prompts_sha)
        run_tokens += shard_tokens
        run_records += len(pos)
        shards_done += 1
        rec = progress("running")
        if log:
            log(f"writer {writer}: shard {k} ({len(recs)} answers, {shard_tokens} tokens); "
                f"{rec['tokens_done']:,} tokens done, {rec['tokens_per_s']:.1f} tok/s, "
                f"ETA {_hms(rec['eta_s'])}")
    return progress("done")


def _hms(s) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def status(out_dir: str | os.PathLike) -> dict:
    """The writers' progress records and their sum (tokens, rate, ETA = the slowest writer's)."""
    out = Path(out_dir)
    files = sorted(out.glob("progress-w*.json"))
    if not files:
        raise RegenError(f"{out} has no progress-w*.json (no writer has started there)")
    ws = [read_json_capped(f, 1 << 20, what="progress file", error=RegenError) for f in files]
    for w in ws:  # a writer killed without a chance to say so
        if w.get("state") == "running" and not _alive(w.get("pid")):
            w["state"] = "gone"
    etas = [w.get("eta_s") for w in ws if w.get("state") == "running"]
    return {"writers": ws, "tokens_done": sum(w.get("tokens_done", 0) for w in ws),
            "records_done": sum(w.get("records_done", 0) for w in ws),
            "records_total": sum(w.get("records_total", 0) for w in ws),
            "tokens_per_s": round(sum(w.get("tokens_per_s", 0) for w in ws if w.get("state") == "running"), 2),
            "eta_s": None if any(e is None for e in etas) else max(etas, default=0)}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def format_status(s: dict) -> str:
    lines = [f"{'writer':>6} {'state':>8} {'shards':>9} {'records':>13} {'tokens':>11} {'tok/s':>7} "
             f"{'tok/CPU-s':>9} {'ETA':>7}  updated"]
    for w in s["writers"]:
        lines.append(f"{w['writer']:>6} {w['state']:>8} {w['shards_done']:>4}/{w['shards_total']:<4} "
                     f"{w['records_done']:>6}/{w['records_total']:<6} {w['tokens_done']:>11,} "
                     f"{w['tokens_per_s']:>7.1f} {w['tokens_per_cpu_s']:>9.1f} {_hms(w.get('eta_s')):>7}  {w['updated']}")
    lines.append(f"total: {s['tokens_done']:,} tokens, {s['records_done']}/{s['records_total']} prompts, "
                 f"{s['tokens_per_s']:.1f} tok/s now ({s['tokens_per_s'] * 3600 / 1e6:.2f} M/h), ETA {_hms(s['eta_s'])}")
    return "\n".join(lines)


def shard_files(out_dir: str | os.PathLike) -> list[Path]:
    return sorted(Path(out_dir).glob("shard-w*of*-*.safetensors"))


def iter_samples(out_dir: str | os.PathLike) -> Iterator[dict]:
    """Every record of every shard as a regenerated sample (``regenerate.read_samples`` layout:
    ``id``, ``source``, ``input_ids``, ``loss_spans`` = the answer, ``finished``), in prompt order."""
    recs = []
    for f in shard_files(out_dir):
        s = read_shard(f)
        off = s["offsets"]
        for r in range(len(s["idx"])):
            ids = s["tokens"][off[r]:off[r + 1]].tolist()
            pl = int(s["prompt_lens"][r])
            recs.append((int(s["idx"][r]), {"id": s["ids"][r], "source": s["sources"][r] if s["sources"] else "",
                                            "input_ids": ids, "loss_spans": [[pl, len(ids)]],
                                            "finished": bool(s["finished"][r])}))
    recs.sort(key=lambda x: x[0])
    yield from (r for _, r in recs)

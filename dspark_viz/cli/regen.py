"""``dspark-viz prepare mix | regen | regen-status | regen-export | regen-vocab`` — the issue-21 data stages (registered by ``cli.data``).

Scope: argument parsing and printing over ``data.mix`` (the prompt mix from offline corpora)
and ``data.shards`` (sharded, resumable, per-prompt-seeded regeneration by N writers, progress
in JSON files). Library errors are ``UserError`` subclasses, printed in one line by
``dspark_viz.cli``.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch

from dspark_viz.data import mix as M
from dspark_viz.data import shards as SH
from dspark_viz.data.corpus import draft_vocab_from_counts, write_samples
from dspark_viz.io import write_json_atomic
from dspark_viz.targets import load_target


def _cmd_mix(a) -> int:
    mix = M.parse_mix(a.mix)
    prompts, rep = M.build_mix(mix, seed=a.seed, exclude=a.exclude or (), max_chars=a.max_chars)
    man = M.write_mix(a.out, prompts, rep, seed=a.seed,
                      command="dspark-viz " + " ".join(shlex.quote(x) for x in sys.argv[1:]))
    print(f"wrote {man['num_prompts']} prompts to {a.out} ({man['bytes']:,} bytes, sha256 "
          f"{man['sha256'][:16]}…) in {rep.seconds:.0f} s; manifest {M.manifest_path(a.out).name}")
    for d, n in man["by_domain"].items():
        print(f"  {d:<6} {n:>6}")
    return 0


def _cmd_regen(a) -> int:
    torch.set_num_threads(a.threads)
    prompts = M.read_mix(a.prompts)
    cfg = SH.RegenConfig(target=a.target, template=a.template, max_new_tokens=a.max_new_tokens,
                         max_prompt_tokens=a.max_prompt_tokens, temperature=a.temperature,
                         top_p=a.top_p, top_k=a.top_k, seed=a.seed, writers=a.writers,
                         batch_size=a.batch_size, shard_records=a.shard_records)
    writers = range(a.writers) if a.writer is None else [a.writer]
    target = load_target(a.target, device=a.device)
    for w in writers:
        st = SH.run_writer(prompts, a.out, cfg, w, target=target, prompts_path=a.prompts,
                           max_seconds=a.max_seconds, log=None if a.quiet else print)
        print(f"writer {w}/{a.writers}: {st['shards_done']}/{st['shards_total']} shards, "
              f"{st['tokens_done']:,} tokens, {st['tokens_per_cpu_s']:.1f} tok per CPU-s"
              + (" (stopped at --max-seconds)" if st["state"] == "stopped" else ""))
    return 0


def _cmd_vocab(a) -> int:
    target = load_target(a.target, device="cpu")
    answers = [s["input_ids"][b:e] for s in SH.iter_samples(a.out) for b, e in s["loss_spans"]]
    if not answers:
        raise SH.RegenError(f"{a.out} holds no regenerated answer")
    if not 0 < a.size <= target.vocab_size:
        raise SH.RegenError(f"--size must be in [1, {target.vocab_size}], got {a.size}")
    vocab = draft_vocab_from_counts(answers, a.size, target.vocab_size, always=target.eos_ids)
    seen = {int(t) for ans in answers for t in ans}
    n = sum(len(x) for x in answers)
    vs = set(vocab)
    covered = sum(1 for ans in answers for t in ans if t in vs)
    write_json_atomic(a.to, vocab)
    print(f"wrote {len(vocab)} ids to {a.to}: {len(seen):,} distinct answer tokens, "
          f"{covered / n:.2%} of {n:,} answer tokens covered")
    return 0


def _cmd_export(a) -> int:
    if not 0 <= a.part < a.parts:
        raise SH.RegenError(f"--part must be in [0, {a.parts}), got {a.part}")
    rows = [s for i, s in enumerate(SH.iter_samples(a.out)) if i % a.parts == a.part]
    n = write_samples(a.to, rows)
    print(f"wrote {n} samples ({sum(e - s for r in rows for s, e in r['loss_spans']):,} answer tokens) "
          f"to {a.to}")
    return 0


def _cmd_status(a) -> int:
    s = SH.status(a.out)
    print(SH.format_status(s))
    return 0


def add_parsers(ps) -> None:
    p = ps.add_parser("mix", help="build the regeneration prompt mix from offline corpora",
                      description="Draw prompts from the offline corpora (python3.11-doc, perl-doc, "
                                  "golang-1.19-src, debian-reference-en, fortunes, wordnet-base, faker, "
                                  "mathematics_dataset, installed packages' source), deduplicate, refuse "
                                  "anything near an evaluation benchmark or held-out prompt, write a "
                                  "gzip JSONL and its manifest.")
    p.add_argument("--out", type=Path, required=True, help="e.g. data/regen/prompts.jsonl.gz")
    p.add_argument("--mix", default=None, help="SOURCE=COUNT,… (default: the issue-21 mix, "
                   + ", ".join(f"{k}={v}" for k, v in M.DEFAULT_MIX.items()) + ")")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude", type=Path, action="append",
                   help="JSONL of prompts to stay away from (e.g. a benchmark's {turns} file; repeatable)")
    p.add_argument("--max-chars", type=int, default=M.K.MAX_CHARS)
    p.set_defaults(func=_cmd_mix)

    p = ps.add_parser("regen", help="regenerate answers into shards (N writers, resumable)",
                      description="The target answers every prompt of a `prepare mix` file; writer W "
                                  "of N takes the prompts with idx % N == W and writes its own "
                                  "safetensors shards and progress-wW.json under --out. Run again to "
                                  "resume (finished shards are kept; the same settings are required).")
    p.add_argument("--prompts", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="shard directory, e.g. data/regen/embedded")
    p.add_argument("--target", default="embedded")
    p.add_argument("--template", default="raw", help="raw (base models; the recipe's) | gemma | qwen3")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="base seed; each prompt's is derived from it and its id")
    p.add_argument("--writers", type=int, default=2, help="N: how many writers split the prompts")
    p.add_argument("--writer", type=int, default=None, help="run only writer W (0 ≤ W < N); default all in turn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--shard-records", type=int, default=256, help="prompts per shard")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=None, help="start no new shard after this wall time")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_regen)

    p = ps.add_parser("regen-export", help="write `prepare regen` shards as a samples JSONL (for `prepare cache`)",
                      description="Every record of the shards under --out, in prompt order, as "
                                  "regenerated samples (id, input_ids, loss_spans on the answer); "
                                  "--parts N --part I keeps every N-th one, for N cache processes.")
    p.add_argument("--out", type=Path, required=True, help="the `prepare regen` directory")
    p.add_argument("--to", type=Path, required=True, help="samples JSONL to write")
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--part", type=int, default=0)
    p.set_defaults(func=_cmd_export)

    p = ps.add_parser("regen-vocab", help="a draft vocabulary (JSON ids) from the answers of `prepare regen` shards",
                      description="The --size most frequent answer tokens over every shard under --out "
                                  "plus the target's end tokens (ties by id; `train --draft-vocab`), so "
                                  "every training chunk of the same data shares one vocabulary.")
    p.add_argument("--out", type=Path, required=True, help="the `prepare regen` directory")
    p.add_argument("--to", type=Path, required=True, help="JSON file to write")
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--target", default="embedded")
    p.set_defaults(func=_cmd_vocab)

    p = ps.add_parser("regen-status", help="progress of a `prepare regen` directory (tokens, rate, ETA)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_status)

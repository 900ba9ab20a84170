"""Regeneration and cache throughput on this CPU, side by side in one run (bench/results_regenerate.md).

    OMP_NUM_THREADS=1 python bench/bench_regenerate.py regen --prompts data/regen/prompts.jsonl.gz \\
        --batch-sizes 32,64,128,256 --num-prompts 256 --max-new-tokens 64 --json out/bench_regen.json
    OMP_NUM_THREADS=1 python bench/bench_regenerate.py cache --shards data/regen/embedded \\
        --num-samples 32 --json out/bench_cache.json

``regen``: the same ``--num-prompts`` prompts (the first of the file whose length is in
``--length-window``, so padding does not differ between batch sizes; sorted by length as a writer
sorts a shard) answered at each batch size with ``batchgen.generate_batch`` (greedy, the recipe's
raw template) — tokens per process CPU-second (``time.process_time``, immune to other jobs on a
shared machine) and per wall second, and whether every batch size gave the same answers; then 8
prompts answered alone against the same 8 inside the largest batch. The quiet-machine rate of
two 1-thread writers is 2 × (tokens per CPU-second) × 3600.

``cache``: the target-cache stage on regenerated samples (``shards.iter_samples``):
``cache.write_cache`` as the recipe runs it (one sample per forward, every position's
full-vocabulary log-sum-exp), then the same forward on batches of 8 right-padded samples, then
the forward without the LM head (hidden states only) — CPU-seconds and bytes per token.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from dspark_viz.data import shards as SH
from dspark_viz.data.batchgen import generate_batch
from dspark_viz.data.cache import write_cache
from dspark_viz.data.mix import read_mix
from dspark_viz.data.regenerate import _encoder
from dspark_viz.drafter.model import default_layer_ids
from dspark_viz.io import write_json_atomic
from dspark_viz.targets import load_target


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    r = fn()
    return r, time.process_time() - c0, time.perf_counter() - w0


def bench_regen(a, target) -> dict:
    enc = _encoder(target.tokenizer)[0]
    lo, hi = a.length_window
    ids = []
    for p in read_mix(a.prompts):  # the first prompts of the file whose length is in the window
        x = enc(p.raw_text())
        if lo <= len(x) <= hi:
            ids.append(x)
        if len(ids) >= a.num_prompts:
            break
    ids.sort(key=len)
    pad = getattr(getattr(target.tokenizer, "tok", None), "pad_token_id", None)
    rows, answers = [], {}
    for B in a.batch_sizes:
        def run():
            out = []
            for b in range(0, len(ids), B):
                out += generate_batch(target, ids[b:b + B], [0] * len(ids[b:b + B]),
                                      max_new_tokens=a.max_new_tokens, pad_id=pad)
            return out
        out, cpu, wall = _timed(run)
        tok = sum(len(g) for g, _ in out)
        answers[B] = out
        rows.append({"batch_size": B, "prompts": len(ids), "tokens": tok, "cpu_s": round(cpu, 1),
                     "wall_s": round(wall, 1), "tokens_per_cpu_s": round(tok / cpu, 1),
                     "tokens_per_wall_s": round(tok / wall, 1),
                     "two_writers_M_per_h": round(2 * tok / cpu * 3600 / 1e6, 3),
                     "finished": sum(f for _, f in out)})
        print(json.dumps(rows[-1]), flush=True)
    ref = answers[a.batch_sizes[0]]
    same = {B: sum(x == y for x, y in zip(ref, answers[B])) for B in a.batch_sizes}
    big = max(a.batch_sizes)
    alone = [generate_batch(target, [x], [0], max_new_tokens=a.max_new_tokens, pad_id=pad)[0]
             for x in ids[:8]]
    alone_same = sum(x == y for x, y in zip(alone, answers[big][:8]))
    print(f"answers equal to batch {a.batch_sizes[0]}'s: {same} of {len(ids)}; alone == inside batch {big}: "
          f"{alone_same}/8")
    return {"rows": rows, "same_as_first": same, "alone_equal": alone_same, "alone_n": 8}


def _forward_batched(target, samples, layer_ids, B, head: bool) -> int:
    """Right-padded batches of ``B`` samples: taps of ``layer_ids`` and the last hidden state for
    every position, and (``head``) the full-vocabulary log-sum-exp; returns tokens processed."""
    model, n = target.model, 0
    for b in range(0, len(samples), B):
        part = samples[b:b + B]
        L = max(len(s["input_ids"]) for s in part)
        x = torch.zeros((len(part), L), dtype=torch.long)
        att = torch.zeros((len(part), L), dtype=torch.long)
        for i, s in enumerate(part):
            x[i, :len(s["input_ids"])] = torch.tensor(s["input_ids"])
            att[i, :len(s["input_ids"])] = 1
        with torch.inference_mode():
            base = model.base_model(input_ids=x, attention_mask=att, output_hidden_states=True)
            hs = base.hidden_states
            taps = torch.cat([hs[i + 1] for i in layer_ids], -1).to(torch.bfloat16)  # noqa: F841
            last = base.last_hidden_state
            if head:
                m = att.bool()
                torch.logsumexp(target.logits(last[m]), dim=-1)
        n += int(att.sum())
    return n


def bench_cache(a, target) -> dict:
    samples = list(SH.iter_samples(a.shards))[: a.num_samples]
    if not samples:
        raise SystemExit(f"no samples in {a.shards}")
    layers = default_layer_ids(target.num_layers, min(5, target.num_layers))
    tok = sum(len(s["input_ids"]) for s in samples)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        st, cpu, wall = _timed(lambda: write_cache(samples, tmp / "c", target, layer_ids=layers,
                                                   dtype="bf16", max_len=384, shard_tokens=4096,
                                                   progress=False))
        rows = [{"variant": "write_cache (recipe: 1 sample/forward, lse at every position)",
                 "tokens": tok, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                 "cpu_s_per_1k_tokens": round(1000 * cpu / tok, 3), "bytes_per_token": round(st.bytes / tok),
                 "M_tokens_per_h_two_processes": round(2 * tok / cpu * 3600 / 1e6, 3)}]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for B, head in ((8, True), (8, False)):
        n, cpu, wall = _timed(lambda: _forward_batched(target, samples, layers, B, head))
        rows.append({"variant": f"forward, batch {B}, " + ("taps + last + lse" if head else "taps + last, no LM head"),
                     "tokens": n, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                     "cpu_s_per_1k_tokens": round(1000 * cpu / n, 3),
                     "M_tokens_per_h_two_processes": round(2 * n / cpu * 3600 / 1e6, 3)})
    for r in rows:
        print(json.dumps(r), flush=True)
    return {"layers": list(layers), "samples": len(samples), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("regen", "cache"))
    ap.add_argument("--prompts", type=Path, default=Path("data/regen/prompts.jsonl.gz"))
    ap.add_argument("--shards", type=Path, default=Path("data/regen/embedded"))
    ap.add_argument("--target", default="embedded")
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128, 256])
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--num-samples", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--length-window", type=lambda s: tuple(int(x) for x in s.split(",")), default=(24, 48),
                    help="LO,HI: only prompts of LO..HI tokens, so batch sizes compare without padding")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    target = load_target(a.target, device="cpu")
    res = bench_regen(a, target) if a.what == "regen" else bench_cache(a, target)
    res |= {"command": " ".join(sys.argv), "threads": a.threads}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

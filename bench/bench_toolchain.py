"""Toolchain benchmark on the embedded Gemma 3 270M (CPU): regeneration tok/s, cache bytes per
token and write speed, training anchor-blocks/s for the DSpark and DFlash presets.

Usage:  nice -n 10 python bench/bench_toolchain.py [--prompts 8] [--new-tokens 48] [--steps 6]
        [--threads 2] [--out /tmp/bench_toolchain]
Prints one JSON line per measurement and a Markdown table at the end. Short on purpose (the
CPU is shared); the first training step of each run is excluded from the train timing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from dspark_viz.data import regenerate as R
from dspark_viz.data import sources as S
from dspark_viz.data.cache import TargetCache, write_cache
from dspark_viz.targets import load_target
from dspark_viz.train.config import TrainConfig, drafter_config, resolve_config
from dspark_viz.train.source import CacheSource
from dspark_viz.train.trainer import train


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--num-anchors", type=int, default=16)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_toolchain"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    shutil.rmtree(a.out, ignore_errors=True)
    rows = []
    t0 = time.perf_counter()
    target = load_target("embedded", device="cpu")
    rows.append(("load embedded target", f"{time.perf_counter() - t0:.1f} s", ""))
    k = max(1, a.prompts // 4)
    prompts = (S.stdlib_code(k) + S.pydoc_prose(k) + S.arithmetic(k) + S.instructions(k))[: a.prompts]
    be = R.TransformersBackend(target, temperature=0.7, seed=0)
    st = R.regenerate(prompts, a.out / "regen.jsonl", backend=be, tokenizer=target.tokenizer,
                      template=R.TEMPLATES["raw"], target_name=target.name,
                      max_new_tokens=a.new_tokens, batch_size=a.batch_size, progress=False)
    print(json.dumps({"regen_tokens": st.generated_tokens, "regen_s": st.seconds,
                      "regen_tok_s": st.tokens_per_s}))
    rows.append(("regeneration (transformers, batch %d, raw template, T=0.7)" % a.batch_size,
                 f"{st.tokens_per_s:.1f} generated tok/s", f"{st.generated_tokens} tokens in {st.seconds:.1f} s"))
    samples = R.read_samples(a.out / "regen.jsonl")
    cfg = resolve_config(TrainConfig(steps=a.steps), target)
    layers = drafter_config(cfg, target).target_layer_ids
    ws = write_cache(samples, a.out / "cache", target, layer_ids=layers, dtype="bf16", progress=False)
    print(json.dumps({"cache_tokens": ws.tokens, "cache_bytes": ws.bytes, "cache_s": ws.seconds}))
    rows.append((f"cache write (bf16, layers {list(layers)} + final)",
                 f"{ws.bytes / ws.tokens:.0f} B/token, {ws.tokens / ws.seconds:.0f} tok/s",
                 f"{ws.tokens} tokens, {ws.bytes / 2**20:.1f} MiB in {ws.seconds:.1f} s"))
    t0 = time.perf_counter()
    cache = TargetCache(a.out / "cache")
    rows.append(("cache open + sha256 verify", f"{time.perf_counter() - t0:.2f} s", ""))
    src = CacheSource(cache)
    for method in ("dspark", "dflash"):
        c = TrainConfig(method=method, steps=a.steps + 1, batch_size=a.train_batch,
                          micro_batch=a.train_batch, num_anchors=a.num_anchors, log_every=1,
                          ckpt_every=10 ** 6)
        res = train(target, src, a.out / f"run-{method}", c, progress=False)
        h = res.history[1:]  # drop the first (warm-up) step
        secs = sum(x["blocks"] / x["blocks_per_s"] for x in h)
        bps = sum(x["blocks"] for x in h) / secs
        print(json.dumps({"method": method, "blocks_per_s": bps, "steps": len(h),
                          "s_per_step": secs / len(h), "last_loss": h[-1]["loss"]}))
        rows.append((f"train {method} (embedded preset, {a.train_batch} seq × {a.num_anchors} anchors, γ=7)",
                     f"{bps:.1f} anchor-blocks/s", f"{secs / len(h):.2f} s/step"))
    print("\n| stage | figure | detail |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

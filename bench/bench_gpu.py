"""GPU timings, side by side in one run: verify-pass curves, plain vs speculative rounds, training.

Scope: what the CUDA path costs, measured on the machine it runs on (an H200 when one is lent).
Model hubs are unreachable there, so the targets are *random* models with the exact shapes of
the embedded Gemma 3 270M and of Qwen3-8B, in bf16: every timing is real (same kernels, same
bytes), no acceptance figure is (random weights accept nothing). Sections:

1. ``curve``: one verify pass of B tokens after a 512-token context (``profile_target``),
   B = 1…256, against the roofline preset for the same model on an H200 (``h200-qwen3-8b``).
2. ``rounds``: plain greedy decoding tok/s and one speculative round's parts (draft, Markov,
   verify) with the shipped embedded drafter (Gemma shape) or a random drafter (Qwen3-8B shape),
   γ = 7, ℓ = 7 forced — the per-round cost a trained drafter would pay.
3. ``train``: drafter training steps on the Gemma-shaped target (online taps, bf16 autocast),
   anchor-blocks/s against the CPU figure in ``bench/results_toolchain.md``.

Not a test (``tests/test_gpu.py`` holds the CUDA guarantees). Usage:
    python bench/bench_gpu.py --out bench/gpu/h200.json [--skip 8b]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dspark_viz.config import DecodeConfig  # noqa: E402
from dspark_viz.decoding.engine import SpecSession, plain_decode  # noqa: E402
from dspark_viz.drafter.model import DSparkDrafter  # noqa: E402
from dspark_viz.load.capacity import get_curve, profile_target  # noqa: E402
from dspark_viz.targets import ByteTokenizer, Target  # noqa: E402
from dspark_viz.train.config import TrainConfig, drafter_config, resolve_config  # noqa: E402
from dspark_viz.train.source import OnlineSource  # noqa: E402
from dspark_viz.train.trainer import train  # noqa: E402

GEMMA_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                  query_pre_attn_scalar=256, sliding_window=512, max_position_embeddings=32768,
                  layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
                  tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2)
QWEN3_8B = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                max_position_embeddings=40960, tie_word_embeddings=False, rope_theta=1e6,
                pad_token_id=0, eos_token_id=1, bos_token_id=2)
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
QUICK = False  # --quick: a smoke run of the script itself (CPU)


def random_target(kind: str, dev: torch.device) -> Target:
    """A random model with the real shapes, built directly on the device in bf16."""
    if kind == "gemma3-270m":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig
        cfg, cls, fam = Gemma3TextConfig(**GEMMA_270M), Gemma3ForCausalLM, "gemma3"
    else:
        from transformers import Qwen3Config, Qwen3ForCausalLM
        cfg, cls, fam = Qwen3Config(**QWEN3_8B), Qwen3ForCausalLM, "qwen3"
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            model = cls(cfg)
    finally:
        torch.set_default_dtype(old)
    tok = ByteTokenizer(cfg.vocab_size)
    return Target(model, tok, name=f"{kind}-random", family=fam, mask_token_id=tok.mask_token_id,
                  eos_ids=())


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def section_curve(t: Target, kind: str) -> dict:
    c = profile_target(t, [1, 8] if QUICK else BATCHES, context_len=64 if QUICK else 512,
                       repeats=1 if QUICK else 10, warmup=0 if QUICK else 3)
    out = {"batch": list(c.batch), "step_ms": [round(x, 3) for x in c.step_ms], "meta": c.meta}
    out["sps"] = [round(1e3 / x, 1) for x in c.step_ms]
    out["b8_over_b1"] = round(c.step_ms[c.batch.index(8)] / c.step_ms[0], 3)
    if kind == "qwen3-8b":
        r = get_curve("h200-qwen3-8b", context_len=512)
        out["roofline_h200_ms"] = [round(float(x), 3) for x in r.step_time_ms(list(c.batch))]
        out["measured_over_roofline"] = [round(m / x, 2) for m, x in zip(c.step_ms, out["roofline_h200_ms"])]
    return out


def section_rounds(t: Target, kind: str, drafter) -> dict:
    dev = t.device
    prompt = list(range(10, 74))  # 64 prompt tokens
    cfg = DecodeConfig(gamma=7, max_new_tokens=8 if QUICK else 64)
    plain_decode(t, prompt, DecodeConfig(max_new_tokens=8))  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    ids = plain_decode(t, prompt, cfg)
    sync(dev)
    plain_s = time.perf_counter() - t0
    out = {"plain_tok_s": round(len(ids) / plain_s, 2), "plain_ms_per_token": round(1e3 * plain_s / len(ids), 3)}
    if drafter is None:
        return out
    s = SpecSession(t, drafter, DecodeConfig(gamma=7, max_new_tokens=64, force_ell=7))
    s.prefill(prompt)
    for _ in range(1 if QUICK else 3):  # warm-up rounds
        s.step()
    rows = []
    for _ in range(2 if QUICK else 12):
        if s.done:
            break
        sync(dev)
        t0 = time.perf_counter()
        r = s.step()
        sync(dev)
        rows.append((time.perf_counter() - t0, r))
    wall = [w for w, _ in rows]
    tm = [r.timings for _, r in rows]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    out.update({"round_ms_median": round(1e3 * med(wall), 3),
                "draft_ms_median": round(med([x.draft_ms for x in tm]), 3),
                "markov_ms_median": round(med([x.markov_ms for x in tm]), 3),
                "verify_ms_median": round(med([x.verify_ms for x in tm]), 3),
                "rounds": len(rows),
                "break_even_tau": round(med(wall) / (plain_s / len(ids)), 3),
                "note": "break_even_tau = round time / plain time per token: the τ (with +1) a "
                        "trained drafter needs for speculation to pay at γ = ℓ = 7"})
    return out


def section_train(t: Target, steps: int) -> dict:
    """Drafter training steps on the embedded preset (2 layers, restricted vocabulary)."""
    g = torch.Generator().manual_seed(0)
    n, L = (8, 96) if QUICK else (64, 384)
    samples = [{"id": f"s{i}", "input_ids": torch.randint(10, 30000, (L,), generator=g).tolist(),
                "loss_spans": [[32, L]]} for i in range(n)]
    cfg = resolve_config(TrainConfig(steps=steps, log_every=5, micro_batch=8, chunk_rows=1024), t)
    dcfg = drafter_config(cfg, t)
    src = OnlineSource(samples, t, dcfg.target_layer_ids, L)
    with tempfile.TemporaryDirectory() as d:
        r = train(t, src, d, cfg, drafter_cfg=dcfg, progress=False)
    return {"preset": "embedded (2 layers, restricted vocab)", "steps": r.steps,
            "seconds": round(r.seconds, 2), "anchor_blocks_per_s": round(r.blocks_per_s, 1),
            "last": {k: round(v, 4) for k, v in r.history[-1].items()
                     if k in ("loss", "tau_prob", "blocks_per_s")},
            "note": "includes the online target forward per item (no cache)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--skip", default="", help="comma list of sections/models to skip: 8b,train,rounds")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="smoke-test the script (tiny sizes)")
    a = ap.parse_args()
    global QUICK
    QUICK = a.quick
    skip = set(filter(None, a.skip.split(",")))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import transformers
    rep = {"command": "python " + " ".join(sys.argv), "device": torch.cuda.get_device_name(0)
           if dev.type == "cuda" else platform.processor(), "torch": torch.__version__,
           "transformers": transformers.__version__, "dtype": "bfloat16",
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    a.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        a.out.write_text(json.dumps(rep, indent=1))

    for kind in ("gemma3-270m", "qwen3-8b"):
        if kind == "qwen3-8b" and "8b" in skip:
            continue
        t0 = time.perf_counter()
        try:
            t = random_target(kind, dev)
        except Exception as e:  # report, go on
            rep[kind] = {"error": f"{type(e).__name__}: {e}"}
            save()
            continue
        sec = {"build_s": round(time.perf_counter() - t0, 1)}
        for name, fn in (("curve", lambda: section_curve(t, kind)),
                         ("rounds", lambda: section_rounds(t, kind, _drafter(t, kind))),
                         ("train", lambda: section_train(t, a.train_steps))):
            if name in skip or (name == "train" and kind != "gemma3-270m"):
                continue
            t1 = time.perf_counter()
            try:
                sec[name] = fn()
            except Exception as e:
                sec[name] = {"error": f"{type(e).__name__}: {e}",
                             "trace": traceback.format_exc().splitlines()[-6:]}
            sec[name + "_s"] = round(time.perf_counter() - t1, 1)
            rep[kind] = sec
            save()
            print(kind, name, json.dumps(sec[name])[:400], flush=True)
        del t
        torch.cuda.empty_cache() if dev.type == "cuda" else None
    save()
    return 0


def _drafter(t: Target, kind: str):
    """The shipped embedded drafter on the Gemma shape; a random preset drafter on Qwen3-8B."""
    if kind == "gemma3-270m":
        p = Path(__file__).resolve().parent.parent / "dspark_viz/assets/drafters/gemma3-270m-dspark"
        return DSparkDrafter.from_pretrained(p, target=t).eval()
    cfg = resolve_config(TrainConfig(), t)
    torch.manual_seed(0)
    return DSparkDrafter(drafter_config(cfg, t)).to(t.device, t.dtype).eval()


if __name__ == "__main__":
    raise SystemExit(main())

"""``dspark-viz prepare prompts | regenerate | corpus | cache | estimate`` — the data toolchain CLI.

Scope: argument parsing and printing over ``prompts``, ``regenerate``, ``corpus`` and ``cache``;
library errors are ``UserError`` subclasses, printed in one line by ``dspark_viz.cli``.
``--target`` also accepts ``tiny:qwen3`` and ``tiny:gemma3`` (the tiny random targets of the
tests) besides what ``load_target`` takes.
"""
from __future__ import annotations

import json
from pathlib import Path

from dspark_viz.cli import regen as regen_cli
from dspark_viz.cli.common import (FRACTION, POSITIVE, SEED, TEMPERATURE, TOKENS, TOP_K, TOP_P,
                                   CLIError, bounds, check_sample_ids, count, outputs,
                                   parse_layer_ids)
from dspark_viz.config import EMBEDDED_ALIASES, EMBEDDED_NAME, TARGET_PRESETS, ConfigError
from dspark_viz.data import regenerate as R
from dspark_viz.data.cache import DTYPES, estimate, human_bytes, write_cache
from dspark_viz.data.corpus import corpus_samples, write_samples
from dspark_viz.data.prompts import prepare_prompts, read_jsonl
from dspark_viz.data.sources import BUILTIN
from dspark_viz.drafter.model import default_layer_ids
from dspark_viz.errors import one_line
from dspark_viz.targets import HFTokenizer, TargetError, cache_dir, load_target
from dspark_viz.train.config import resolve_target_preset

MAX_LEN = 1 << 20  # --max-len of a cached sample (tokens)


def _cmd_prompts(a) -> int:
    counts = prepare_prompts(a.source, a.out, n=a.n, val_fraction=a.val_fraction, seed=a.seed)
    print(f"wrote {counts['train']} train and {counts['val']} validation prompts to {a.out}/")
    return 0


def _cmd_regenerate(a) -> int:
    prompts = R.read_prompts(a.prompts)
    if a.limit is not None:
        prompts = prompts[: a.limit]
    if not prompts:
        raise CLIError(f"--prompts {a.prompts}: no prompt to answer" + (" (--limit 0)" if a.limit == 0 else ""))
    if a.server:
        tok, name, family, eos_ids = _tokenizer_only(a.target)
        tmpl = R.template_for(a.template, name, family)
        enc_more = R._encoder(tok)[1]
        end_ids = enc_more(tmpl.end) if tmpl.end else [eos_ids[0]]
        backend = R.OpenAIBackend(a.server, model=a.server_model or a.target, encode_text=enc_more,
                                  end_ids=end_ids, temperature=a.temperature, top_p=a.top_p,
                                  concurrency=a.concurrency, retries=a.retries, timeout=a.timeout)
    else:
        target = load_target(a.target, device=a.device)
        tok, name = target.tokenizer, target.name
        tmpl = R.template_for(a.template, name, target.family)
        backend = R.TransformersBackend(target, temperature=a.temperature, top_p=a.top_p,
                                        top_k=a.top_k, seed=a.seed)
    st = R.regenerate(prompts, a.out, backend=backend, tokenizer=tok, template=tmpl,
                      target_name=name, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                      max_prompt_tokens=a.max_prompt_tokens, progress=not a.no_progress)
    print(f"template {tmpl.name}: {st.samples} new samples ({st.skipped} already done or skipped), "
          f"{st.generated_tokens} generated tokens in {st.seconds:.1f} s = {st.tokens_per_s:.1f} tok/s; "
          f"{st.unfinished} hit --max-new-tokens")
    return 0


def _cmd_corpus(a) -> int:
    prompts = read_jsonl(a.prompts)
    if not prompts:
        raise CLIError(f"--prompts {a.prompts} holds no prompt")
    if a.min_tokens > a.max_tokens:
        raise CLIError(f"--min-tokens {a.min_tokens} is larger than --max-tokens {a.max_tokens}")
    tok = _tokenizer_only(a.target)[0]
    try:
        ss = corpus_samples(prompts, tok.encode, max_tokens=a.max_tokens, min_tokens=a.min_tokens)
    except ValueError as e:
        raise CLIError(one_line(e)) from None
    n = write_samples(a.out, ss)
    tokens = sum(len(s["input_ids"]) for s in ss)
    print(f"wrote {n} corpus samples ({tokens} tokens, loss on all but the first token of each) "
          f"from {len(prompts)} prompts to {a.out}")
    return 0


def _tokenizer_only(spec: str):
    """(tokenizer adapter, name, family, eos ids) without loading weights (server mode)."""
    if spec.startswith("tiny:"):
        t = load_target(spec)
        return t.tokenizer, t.name, t.family, t.eos_ids
    from transformers import AutoConfig, AutoTokenizer
    path = str(cache_dir() / "gemma3-270m") if spec in EMBEDDED_ALIASES else spec
    try:
        tok = AutoTokenizer.from_pretrained(path)
        mt = AutoConfig.from_pretrained(path).model_type
    except OSError as e:
        raise TargetError(f"cannot load the tokenizer of {spec!r}: {one_line(e)}") from None
    name = EMBEDDED_NAME if spec in EMBEDDED_ALIASES else spec
    return HFTokenizer(tok), name, "qwen3" if mt.startswith("qwen") else "gemma3", (tok.eos_token_id,)


def _cmd_cache(a) -> int:
    samples = R.read_samples(a.samples)
    if not samples:
        raise CLIError(f"--samples {a.samples} holds no sample")
    target = load_target(a.target, device=a.device)
    check_sample_ids(samples, target.vocab_size, f"--samples {a.samples}")  # before cache-spec.json
    layers = parse_layer_ids(a.layer_ids) or _preset_layers(a.target_preset, target) or \
        default_layer_ids(target.num_layers, min(5, target.num_layers))
    st = write_cache(samples, a.out, target, layer_ids=layers, dtype=a.dtype, max_len=a.max_len,
                     shard_tokens=a.shard_tokens, progress=not a.no_progress,
                     max_seconds=a.max_seconds)
    bpt = st.bytes / st.tokens if st.tokens else 0
    print(f"cache {a.out}: {st.samples} new samples ({st.resumed_samples} resumed), {st.tokens} tokens, "
          f"{human_bytes(st.bytes)} written ({bpt:.0f} B/token) in {st.seconds:.1f} s; layers {list(layers)}; "
          f"{st.truncated} truncated to --max-len"
          + ("; stopped at --max-seconds (run again without it to add the rest)" if st.stopped_early else ""))
    return 0


def _preset_layers(preset: str, target):
    try:
        p = resolve_target_preset(preset, target)
    except ConfigError:
        raise CLIError(f"unknown --target-preset {preset!r} ({', '.join(TARGET_PRESETS)})") from None
    return TARGET_PRESETS[p]["layer_ids"]


def _cmd_estimate(a) -> int:
    if a.samples:
        s = R.read_samples(a.samples)
        if not s:
            raise CLIError(f"--samples {a.samples} holds no sample")
        n = len(s) if a.num_samples is None else a.num_samples
        tps = sum(min(len(x["input_ids"]), a.seq_len or 10 ** 9) for x in s) / max(1, len(s))
    else:
        if a.num_samples is None or a.seq_len is None:
            raise CLIError("give --samples FILE, or --num-samples and --seq-len")
        n, tps = a.num_samples, a.seq_len
    if a.hidden_size is None or a.num_layers is None:
        raise CLIError("--hidden-size and --num-layers are needed (e.g. 640 and 5 for the embedded target)")
    e = estimate(num_samples=n, tokens_per_sample=tps, hidden_size=a.hidden_size,
                 num_layers=a.num_layers, dtype=a.dtype, shard_bytes=a.shard_bytes)
    if a.json:
        print(json.dumps(e, indent=1))
        return 0
    print(f"samples {e['num_samples']:,} × {tps:,.0f} tokens = {e['tokens']:,} tokens; "
          f"{e['bytes_per_token']:,} B/token ({a.dtype})")
    for k, v in e["bytes_per_field"].items():
        print(f"  {k:<5} {human_bytes(v):>12}")
    print(f"total  {human_bytes(e['total_bytes'])} in ~{e['shards']} shard(s) of {human_bytes(a.shard_bytes)}")
    return 0


def _add_prompts(ps) -> None:
    p = ps.add_parser("prompts", help="collect prompts and write a train/validation split",
                      description="Read JSONL ({turns} / {conversations}), plain text, built-in "
                                  f"offline sources ({', '.join('builtin:' + n for n in BUILTIN)}; "
                                  "tasks: code / math / prose requests kept off the held-out eval "
                                  "prompts) or hub:NAME datasets; dedupe; split.")
    p.add_argument("--source", action="append", required=True,
                   help="builtin:NAME, hub:NAME, or a .jsonl / text file (repeatable)")
    p.add_argument("--n", type=int, default=100, help="prompts per built-in / hub source")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="directory for train.jsonl and val.jsonl")
    bounds(p, n=count(1, 10**7), val_fraction=FRACTION, seed=SEED)
    outputs(p, dirs=("out",))
    p.set_defaults(func=_cmd_prompts)


def _add_regenerate(ps) -> None:
    p = ps.add_parser("regenerate", help="let the target answer the prompts (resumable)",
                      description="Generate the target's own answers (transformers batched "
                                  "generation, or an OpenAI-compatible server with --server).")
    p.add_argument("--prompts", type=Path, required=True, help="prompts JSONL")
    p.add_argument("--out", type=Path, required=True, help="output JSONL (appended; resumable)")
    p.add_argument("--target", default="embedded", help="target (HF id, path, embedded, tiny:qwen3)")
    p.add_argument("--template", default="auto",
                   help=" | ".join(("auto",) + tuple(R.TEMPLATES))
                   + " (raw: base models; qwen3: non-thinking)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--server", default=None, help="OpenAI-compatible base URL, e.g. http://host:8000")
    p.add_argument("--server-model", default=None, help="model name on the server (default --target)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight (server mode)")
    p.add_argument("--retries", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    bounds(p, max_new_tokens=TOKENS, max_prompt_tokens=TOKENS, batch_size=count(1, 4096),
           temperature=TEMPERATURE, top_p=TOP_P, top_k=TOP_K, seed=SEED, limit=count(0),
           concurrency=count(1, 1024), retries=count(0, 100), timeout=POSITIVE)
    outputs(p, files=("out",))
    p.set_defaults(func=_cmd_regenerate)


def _add_corpus(ps) -> None:
    p = ps.add_parser("corpus", help="tokenise prompt texts as target-scored training samples",
                      description="Turn prompt records (their raw text) into samples whose whole "
                                  "text is the loss region — no generation; `prepare cache` then "
                                  "scores them with one target pass each.")
    p.add_argument("--prompts", type=Path, required=True, help="prompts JSONL (prepare prompts)")
    p.add_argument("--out", type=Path, required=True, help="samples JSONL (overwritten)")
    p.add_argument("--target", default="embedded", help="whose tokenizer (HF id, path, embedded, tiny:qwen3)")
    p.add_argument("--max-tokens", type=int, default=512, help="window length; longer texts are split")
    p.add_argument("--min-tokens", type=int, default=8, help="drop shorter windows")
    bounds(p, max_tokens=TOKENS, min_tokens=TOKENS)
    outputs(p, files=("out",))
    p.set_defaults(func=_cmd_corpus)


def _add_cache(ps) -> None:
    p = ps.add_parser("cache", help="compute the target cache (resumable, sharded)",
                      description="Run the target over regenerated samples and store token ids, "
                                  "loss mask, tapped hidden states and the final hidden state.")
    p.add_argument("--samples", type=Path, required=True, help="regenerated JSONL")
    p.add_argument("--out", type=Path, required=True, help="cache directory")
    p.add_argument("--target", default="embedded")
    p.add_argument("--layer-ids", default=None, help="comma-separated target layers (−1 = embeddings)")
    p.add_argument("--target-preset", default="auto", help="take the layer ids of a training preset")
    p.add_argument("--dtype", default="bf16", choices=tuple(DTYPES))
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument("--shard-tokens", type=int, default=65536)
    p.add_argument("--max-seconds", type=float, default=None,
                   help="start no new sample after this wall time; finalise what is written")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    bounds(p, max_len=count(2, MAX_LEN), shard_tokens=count(1), max_seconds=POSITIVE)
    outputs(p, dirs=("out",))
    p.set_defaults(func=_cmd_cache)


def _add_estimate(ps) -> None:
    p = ps.add_parser("estimate", help="print the bytes a cache will take (writes nothing)",
                      description="Estimate cache size from a regenerated JSONL or from counts.")
    p.add_argument("--samples", type=Path, default=None, help="regenerated JSONL (actual lengths)")
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sample (or the cap with --samples)")
    p.add_argument("--hidden-size", type=int, default=None)
    p.add_argument("--num-layers", type=int, default=None, help="number of tapped target layers")
    p.add_argument("--dtype", default="bf16", choices=tuple(DTYPES))
    p.add_argument("--shard-bytes", type=int, default=1 << 30)
    p.add_argument("--json", action="store_true")
    bounds(p, num_samples=count(0), seq_len=TOKENS, hidden_size=count(1, 1 << 20),
           num_layers=count(1, 1024), shard_bytes=count(1))
    p.set_defaults(func=_cmd_estimate)


def register(sub) -> None:
    p = sub.add_parser("prepare", help="prepare training data: prompts, regenerate, cache, estimate",
                       description="The data toolchain: prompts → regenerated answers → target cache.")
    ps = p.add_subparsers(dest="stage", required=True)
    _add_prompts(ps)
    _add_regenerate(ps)
    _add_corpus(ps)
    _add_cache(ps)
    _add_estimate(ps)
    regen_cli.add_parsers(ps)  # mix, regen, regen-status (issue 21)

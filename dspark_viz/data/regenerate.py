"""Regenerated answers: the target writes its own answers to the prompts (training data).

Scope: chat templates (Qwen3 non-thinking / thinking, Gemma) and a raw-text mode for base
models; two generation backends — transformers batched generation on the loaded target, and
an OpenAI-compatible completions server (vLLM, SGLang) with bounded concurrency and retries;
output JSONL with token ids and a loss mask on the generated part (``loss_spans``); resume
after interruption without duplicates (ids already written are skipped, a torn last line is
cut off). Multi-turn prompts are answered turn by turn, each answer generated with the
earlier generated answers in context. Not here: reading prompt files (``prompts.py``),
hidden states (``cache.py``).

Output record: ``{"id", "source", "template", "target", "input_ids": [int], "loss_spans":
[[start, end), ...], "conversations": [{"role", "content"}], "finished": bool}`` —
``finished`` is False when an answer hit ``max_new_tokens`` (later turns are then dropped).
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
from tqdm import tqdm

from dspark_viz.data.batchgen import generate_batch, prompt_seed
from dspark_viz.data.prompts import PromptError, iter_jsonl, read_jsonl
from dspark_viz.data.sources import Prompt
from dspark_viz.errors import UserError


class RegenError(UserError):
    """Regeneration cannot proceed (server unreachable after retries, bad output file)."""


# ------------------------------------------------------------------------------ templates
@dataclass(frozen=True)
class ChatTemplate:
    name: str
    user: str  # format string with {}: one user turn
    assistant_open: str  # text that opens the assistant's answer
    end: str  # text that closes an answer (its tokens end generation)
    sep: str  # text between an answer's end and the next user turn

    @property
    def raw(self) -> bool:
        return self.name == "raw"


TEMPLATES = {
    "qwen3": ChatTemplate("qwen3", "<|im_start|>user\n{}<|im_end|>\n",
                          "<|im_start|>assistant\n<think>\n\n</think>\n\n", "<|im_end|>", "\n"),
    "qwen3-thinking": ChatTemplate("qwen3-thinking", "<|im_start|>user\n{}<|im_end|>\n",
                                   "<|im_start|>assistant\n", "<|im_end|>", "\n"),
    "gemma": ChatTemplate("gemma", "<start_of_turn>user\n{}<end_of_turn>\n",
                          "<start_of_turn>model\n", "<end_of_turn>", "\n"),
    "raw": ChatTemplate("raw", "{}", "", "", ""),
}


def template_for(name: str, target_name: str = "", family: str = "") -> ChatTemplate:
    """``auto``: raw for the embedded base model and tiny targets, else by family/name."""
    if name == "auto":
        low = target_name.lower()
        if "embedded" in low or low.startswith("tiny") or "-base" in low or low.endswith("-pt"):
            name = "raw"
        else:
            name = "qwen3" if family == "qwen3" else "gemma"
    if name not in TEMPLATES:
        raise PromptError(f"unknown template {name!r} (known: auto, {', '.join(TEMPLATES)})")
    return TEMPLATES[name]


# ------------------------------------------------------------------------------ backends
class Backend(Protocol):
    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int,
                 keys: Sequence[str] | None = None) -> list[tuple[list[int], bool]]:
        """Per prompt (ids) → (generated ids ending with an end token if finished, finished).
        ``keys``: per prompt a stable name (prompt id and turn) that seeds its sampling."""


def _cut_at_eos(gen: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(gen):
        if t in eos:
            return gen[: i + 1], True
    return gen, False


class TransformersBackend:
    """Batched generation on the target's own model (``batchgen.generate_batch``: left padding,
    KV cache, stop at the target's EOS ids), each prompt sampled from its own generator seeded
    by (seed, key) — so a prompt's answer does not depend on its batch, and a killed and
    resumed run equals an uninterrupted one at any temperature. Never touches the global RNG.
    """

    def __init__(self, target, *, temperature: float = 0.7, top_p: float = 0.95, top_k: int = 0,
                 seed: int = 0) -> None:
        self.target, self.temperature, self.top_p, self.top_k = target, temperature, top_p, top_k
        self.seed, self.calls = seed, 0
        tok = target.tokenizer
        self.pad = getattr(getattr(tok, "tok", tok), "pad_token_id", None)
        self.pad = int(self.pad) if self.pad is not None else int(target.eos_ids[0])

    @torch.inference_mode()
    def generate(self, prompts, max_new_tokens, keys=None):
        if keys is None:  # no names given: position in this call (deterministic, batch-dependent)
            keys = [f"call{self.calls}:{i}" for i in range(len(prompts))]
        seeds = [prompt_seed(self.seed, k) for k in keys]
        self.calls += 1
        return generate_batch(self.target, prompts, seeds, max_new_tokens=max_new_tokens,
                              temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p if self.temperature > 0 else 1.0, pad_id=self.pad)


class OpenAIBackend:
    """An OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang), token-id prompts.

    ``concurrency`` requests in flight at most; each retried ``retries`` times with
    exponential backoff on connection errors, timeouts, HTTP 429 and 5xx. The returned text
    is tokenized with the target's tokenizer; a finished answer gets the end token(s)
    appended (``end_ids``) so the loss mask covers the end of the answer as in local mode.
    """

    def __init__(self, url: str, *, model: str, encode_text, end_ids: list[int],
                 temperature: float = 0.7, top_p: float = 0.95, concurrency: int = 8,
                 retries: int = 4, timeout: float = 120.0, backoff: float = 0.5) -> None:
        if concurrency < 1:
            raise PromptError(f"concurrency must be ≥ 1, got {concurrency}")
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1") else "/v1") + "/completions"
        self.model, self.encode_text, self.end_ids = model, encode_text, list(end_ids)
        self.temperature, self.top_p = temperature, top_p
        self.concurrency, self.retries, self.timeout, self.backoff = concurrency, retries, timeout, backoff
        self.requests = 0
        self._lock = threading.Lock()

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            with self._lock:
                self.requests += 1
            try:
                req = urllib.request.Request(self.url, data=data,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(r.read().decode())
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code != 429 and e.code < 500:
                    raise RegenError(f"server refused the request ({last}): "
                                     f"{e.read()[:200].decode(errors='replace')}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = str(getattr(e, "reason", e))
            if attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt)
        raise RegenError(f"server {self.url} failed after {self.retries + 1} attempts ({last})")

    def _one(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], bool]:
        r = self._post({"model": self.model, "prompt": ids, "max_tokens": max_new_tokens,
                        "temperature": self.temperature, "top_p": self.top_p})
        try:
            ch = r["choices"][0]
            text, reason = ch["text"], ch.get("finish_reason")
        except (KeyError, IndexError, TypeError):
            raise RegenError(f"server answer has no choices[0].text: {str(r)[:200]}") from None
        gen = self.encode_text(text)
        finished = reason == "stop"
        return (gen + self.end_ids if finished else gen[:max_new_tokens]), finished

    def generate(self, prompts, max_new_tokens, keys=None):
        with ThreadPoolExecutor(max_workers=self.concurrency) as ex:
            return list(ex.map(lambda p: self._one(p, max_new_tokens), prompts))


# ------------------------------------------------------------------------------ tokenizing
def _encoder(tokenizer):
    """(encode_first, encode_more): with and without the leading BOS."""
    bos = getattr(tokenizer, "bos_token_id", None)

    def more(text: str) -> list[int]:
        ids = tokenizer.encode(text)
        return ids[1:] if ids and bos is not None and ids[0] == bos else ids
    return tokenizer.encode, more


# ------------------------------------------------------------------------------ resume I/O
def completed_ids(path: str | os.PathLike) -> set[str]:
    """Ids already in an output file. A torn last line (killed mid-write) is cut off; a
    malformed line elsewhere is an error naming its line number."""
    path = Path(path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):  # torn tail
        with path.open("r+b") as f:
            f.truncate(good_end)
        data = data[:good_end]
    done = set()
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            done.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError, RecursionError):  # incl. deep nesting, huge ints
            raise RegenError(f"{path}:{n}: malformed output line; fix or remove it to resume") from None
    return done


read_prompts = read_jsonl  # the prompt records regeneration answers (``prompts.read_jsonl``)


def read_samples(path: str | os.PathLike) -> list[dict]:
    """Regenerated samples, validated (ids ints, spans inside the sequence); errors name the line."""
    out = []
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        ids, spans = obj.get("input_ids") if isinstance(obj, dict) else None, None
        if not (isinstance(ids, list) and ids and all(isinstance(i, int) and i >= 0 for i in ids)):
            raise PromptError(f"{where}: 'input_ids' must be a non-empty list of token ids")
        spans = obj.get("loss_spans")
        if not (isinstance(spans, list) and all(
                isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) for x in s)
                and 0 <= s[0] <= s[1] <= len(ids) for s in spans)):
            raise PromptError(f"{where}: 'loss_spans' must be [start, end) pairs inside input_ids")
        if "id" not in obj:
            raise PromptError(f"{where}: missing 'id'")
        out.append(obj)
    return out


def loss_mask_of(sample: dict) -> list[int]:
    m = [0] * len(sample["input_ids"])
    for s, e in sample["loss_spans"]:
        m[s:e] = [1] * (e - s)
    return m


# ------------------------------------------------------------------------------ driver
@dataclass
class RegenStats:
    samples: int = 0
    skipped: int = 0
    generated_tokens: int = 0
    unfinished: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


def _answer_batch(batch: Sequence[Prompt], first_ids: dict, *, backend: Backend, tokenizer,
                  template: ChatTemplate, enc_more, max_new_tokens: int, max_prompt_tokens: int,
                  stats: RegenStats) -> list[dict]:
    """Answer a batch turn by turn (each turn in context of the earlier generated answers);
    per prompt its ids, loss spans, conversation and whether every answer finished."""
    state = [{"ids": list(first_ids[p.id]), "spans": [], "conv": [], "ok": True} for p in batch]
    n_turns = 1 if template.raw else max(len(p.turns) for p in batch)
    for t in range(n_turns):
        act = [i for i, p in enumerate(batch) if state[i]["ok"] and
               (t == 0 or (not template.raw and t < len(p.turns)))]
        if not act:
            break
        for i in act:
            if t > 0:
                state[i]["ids"] += enc_more(template.sep + template.user.format(
                    batch[i].turns[t]) + template.assistant_open)
            if len(state[i]["ids"]) > max_prompt_tokens:
                state[i]["ok"] = False
        act = [i for i in act if state[i]["ok"]]
        if not act:
            break
        gens = backend.generate([list(state[i]["ids"]) for i in act], max_new_tokens,
                                keys=[f"{batch[i].id}#{t}" for i in act])
        for i, (gen, finished) in zip(act, gens):
            s = state[i]
            s["conv"].append({"role": "user", "content": batch[i].raw_text()
                              if template.raw else batch[i].turns[t]})
            s["conv"].append({"role": "assistant", "content": tokenizer.decode(gen)})
            s["spans"].append([len(s["ids"]), len(s["ids"]) + len(gen)])
            s["ids"] += gen
            stats.generated_tokens += len(gen)
            if not finished:
                s["ok"] = False
                s["unfinished"] = True
    return state


def regenerate(prompts: Sequence[Prompt], out_path: str | os.PathLike, *, backend: Backend,
               tokenizer, template: ChatTemplate, target_name: str, max_new_tokens: int = 256,
               batch_size: int = 8, max_prompt_tokens: int = 2048, progress: bool = True
               ) -> RegenStats:
    """Generate answers for every prompt not yet in ``out_path`` and append them (one line
    each, flushed per batch, so a kill loses at most the batch in flight)."""
    if max_new_tokens < 1 or batch_size < 1:
        raise PromptError("max_new_tokens and batch_size must be ≥ 1")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = completed_ids(out_path)
    seen, todo = set(done), []
    for p in prompts:
        if p.id not in seen:
            seen.add(p.id)
            todo.append(p)
    stats = RegenStats(skipped=len(prompts) - len(todo))
    enc_first, enc_more = _encoder(tokenizer)
    # prompts sorted by length so a batch pads little; deterministic order
    first_ids = {p.id: enc_first(p.raw_text() if template.raw else
                                 template.user.format(p.turns[0]) + template.assistant_open)
                 for p in todo}
    todo.sort(key=lambda p: (len(first_ids[p.id]), p.id))
    t0 = time.perf_counter()
    with out_path.open("a", encoding="utf-8") as f, \
            tqdm(total=len(todo), desc="regenerate", unit="sample", dynamic_ncols=True,
                 disable=not progress) as bar:
        for b0 in range(0, len(todo), batch_size):
            batch = todo[b0: b0 + batch_size]
            state = _answer_batch(batch, first_ids, backend=backend, tokenizer=tokenizer,
                                  template=template, enc_more=enc_more,
                                  max_new_tokens=max_new_tokens,
                                  max_prompt_tokens=max_prompt_tokens, stats=stats)
            for p, s in zip(batch, state):
                if not s["spans"]:  # prompt alone exceeded max_prompt_tokens
                    stats.skipped += 1
                    continue
                rec = {"id": p.id, "source": p.source, "template": template.name,
                       "target": target_name, "input_ids": s["ids"], "loss_spans": s["spans"],
                       "conversations": s["conv"], "finished": not s.get("unfinished", False)}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                stats.samples += 1
                stats.unfinished += bool(s.get("unfinished"))
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{stats.generated_tokens / (time.perf_counter() - t0):.1f}")
    stats.seconds = time.perf_counter() - t0
    return stats

"""Data toolchain: prompts, regeneration (local + OpenAI-compatible server), target cache."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from dspark_viz.data import cache as C
from dspark_viz.data import prompts as P
from dspark_viz.data import regenerate as R
from dspark_viz.data import sources as S


# ------------------------------------------------------------------------------ prompts
def test_builtin_sources_are_deterministic_and_nonempty():
    for name in S.BUILTIN:
        a, b = S.builtin(name, 6, seed=3), S.builtin(name, 6, seed=3)
        assert len(a) == 6 and [p.id for p in a] == [p.id for p in b]
        assert all(p.turns and p.turns[0].strip() and p.raw_text().strip() for p in a)
    ar = S.arithmetic(20, seed=1)
    assert all(p.reference is not None and int(p.reference) >= 0 for p in ar)
    with pytest.raises(ValueError, match="unknown built-in"):
        S.builtin("nope", 3)


def test_split_is_deterministic_and_order_independent():
    ps = S.instructions(60)
    a = P.split(ps, 0.2, seed=5)
    b = P.split(list(reversed(ps)), 0.2, seed=5)
    assert {p.id for p in a["val"]} == {p.id for p in b["val"]}
    assert 0 < len(a["val"]) < 30 and len(a["train"]) + len(a["val"]) == 60
    c = P.split(ps, 0.2, seed=6)
    assert {p.id for p in c["val"]} != {p.id for p in a["val"]}


def test_read_deepspec_formats_and_text(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"turns": ["hi", "and then?"]}) + "\n\n" +
                 json.dumps({"conversations": [{"role": "user", "content": "q1"},
                                               {"role": "assistant", "content": "a1"},
                                               {"role": "user", "content": "q2"}]}) + "\n" +
                 json.dumps({"prompt": "p", "id": "x7"}) + "\n")
    ps = P.read_jsonl(f)
    assert [p.turns for p in ps] == [("hi", "and then?"), ("q1", "q2"), ("p",)]
    assert ps[2].id == "x7"
    t = tmp_path / "p.txt"
    t.write_text("first para\nline two\n\n\nsecond\n")
    assert [p.turns[0] for p in P.read_text(t)] == ["first para\nline two", "second"]
    counts = P.prepare_prompts([str(f), str(t), "builtin:arithmetic"], tmp_path / "out", n=10,
                               val_fraction=0.3, seed=0)
    assert counts["train"] + counts["val"] == 15
    assert len(P.read_jsonl(tmp_path / "out" / "train.jsonl")) == counts["train"]


@pytest.mark.parametrize("line,msg", [
    ('{"turns": ["ok"]}\n{"turns": [1, 2]}\n', r"p\.jsonl:2: 'turns' must be"),
    ('{"turns": ["ok"]}\n\n{not json\n', r"p\.jsonl:3: malformed JSON"),
    ('{"conversations": [{"role": "assistant", "content": "x"}]}\n', r"p\.jsonl:1: conversation has no user"),
    ('[1, 2]\n', r"p\.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_lines_are_reported_with_line_numbers(tmp_path, line, msg):
    f = tmp_path / "p.jsonl"
    f.write_text(line)
    with pytest.raises(P.PromptError, match=msg):
        P.read_jsonl(f)


def test_hub_source_fails_cleanly_offline():
    with pytest.raises(P.PromptError, match="datasets|offline"):
        P.load_source("hub:some/dataset", n=3)


# ------------------------------------------------------------------------------ regenerate
class FakeBackend:
    """Answers every prompt with a fixed token run ending in EOS (1); counts calls."""

    def __init__(self, n=5, finish=True):
        self.n, self.finish, self.calls, self.prompts = n, finish, 0, []

    def generate(self, prompts, max_new_tokens, keys=None):
        self.calls += 1
        self.prompts.extend(prompts)
        body = [100 + i for i in range(self.n)][:max_new_tokens]
        return [((body + [1]) if self.finish else body, self.finish) for _ in prompts]


def test_regenerate_multiturn_spans_and_resume(tmp_path, tiny_gemma):
    tok = tiny_gemma.tokenizer
    ps = [S.Prompt(id=f"p{i}", turns=("hello", "more please") if i % 2 else ("hi",), source="t")
          for i in range(5)]
    out = tmp_path / "regen.jsonl"
    st = R.regenerate(ps[:3], out, backend=FakeBackend(), tokenizer=tok,
                      template=R.TEMPLATES["gemma"], target_name="t", progress=False)
    assert st.samples == 3
    # a kill mid-write leaves a torn line: it is cut off, and finished ids are skipped
    with out.open("a") as f:
        f.write('{"id": "p3", "input_')
    be = FakeBackend()
    st = R.regenerate(ps, out, backend=be, tokenizer=tok, template=R.TEMPLATES["gemma"],
                      target_name="t", progress=False)
    assert st.samples == 2 and st.skipped == 3
    recs = R.read_samples(out)
    assert sorted(r["id"] for r in recs) == [f"p{i}" for i in range(5)]
    for r in recs:
        n_turns = 2 if int(r["id"][1]) % 2 else 1
        assert len(r["loss_spans"]) == n_turns and r["finished"]
        for s, e in r["loss_spans"]:
            assert r["input_ids"][s:e] == [100, 101, 102, 103, 104, 1]
        text = tok.decode(r["input_ids"])
        assert text.startswith("<start_of_turn>user\n") and "<start_of_turn>model\n" in text
        m = R.loss_mask_of(r)
        assert sum(m) == 6 * n_turns
    # the second turn's prompt contains the first generated answer
    two = [p for p in be.prompts if tok.decode(p).count("<start_of_turn>user") == 2]
    assert two and all(p.count(100) == 1 for p in two)


def test_unfinished_answer_drops_later_turns(tmp_path, tiny_qwen):
    ps = [S.Prompt(id="a", turns=("one", "two"), source="t")]
    out = tmp_path / "r.jsonl"
    st = R.regenerate(ps, out, backend=FakeBackend(finish=False), tokenizer=tiny_qwen.tokenizer,
                      template=R.TEMPLATES["qwen3"], target_name="t", max_new_tokens=3,
                      progress=False)
    r = R.read_samples(out)[0]
    assert st.unfinished == 1 and not r["finished"] and len(r["loss_spans"]) == 1
    assert "<think>\n\n</think>" in tiny_qwen.tokenizer.decode(r["input_ids"])


def test_transformers_backend_batched_equals_unbatched_greedy(tiny_gemma, tmp_path):
    be = R.TransformersBackend(tiny_gemma, temperature=0.0)
    ids = [tiny_gemma.encode(t) for t in ("a short one", "a considerably longer prompt here", "x")]
    batched = be.generate(ids, 8)
    single = [be.generate([i], 8)[0] for i in ids]
    assert batched == single and all(len(g) == 8 for g, _ in batched)
    st = R.regenerate(S.instructions(4), tmp_path / "o.jsonl", backend=R.TransformersBackend(
        tiny_gemma, temperature=1.0, seed=1), tokenizer=tiny_gemma.tokenizer,
        template=R.TEMPLATES["raw"], target_name=tiny_gemma.name, max_new_tokens=12, progress=False)
    assert st.samples == 4 and st.generated_tokens > 0 and st.tokens_per_s > 0


def test_malformed_output_line_blocks_resume(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(R.RegenError, match=r"r\.jsonl:2"):
        R.completed_ids(out)


class _Server:
    """A fake OpenAI-compatible server: fails the first ``fail`` requests with HTTP 503."""

    def __init__(self, fail=1, delay=0.05):
        self.fail, self.delay, self.n, self.inflight, self.max_inflight = fail, delay, 0, 0, 0
        lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    srv.n += 1
                    k = srv.n
                    srv.inflight += 1
                    srv.max_inflight = max(srv.max_inflight, srv.inflight)
                time.sleep(srv.delay)
                with lock:
                    srv.inflight -= 1
                if k <= srv.fail:
                    self.send_response(503)
                    self.end_headers()
                    return
                text = "ok" * (1 + len(body["prompt"]) % 3)
                data = json.dumps({"choices": [{"text": text, "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_openai_backend_bounded_concurrency_and_retries(tmp_path, tiny_qwen):
    srv = _Server(fail=2)
    try:
        enc = R._encoder(tiny_qwen.tokenizer)[1]
        be = R.OpenAIBackend(srv.url, model="m", encode_text=enc, end_ids=[1], concurrency=3,
                             retries=3, backoff=0.01)
        ps = S.instructions(10)
        st = R.regenerate(ps, tmp_path / "o.jsonl", backend=be, tokenizer=tiny_qwen.tokenizer,
                          template=R.TEMPLATES["raw"], target_name="t", batch_size=10, progress=False)
        assert st.samples == 10 and srv.max_inflight <= 3 and srv.max_inflight >= 2
        assert srv.n == 12  # two failures retried
        for r in R.read_samples(tmp_path / "o.jsonl"):
            (s, e), = r["loss_spans"]
            assert r["input_ids"][e - 1] == 1 and tiny_qwen.tokenizer.decode(r["input_ids"][s:e]).startswith("ok")
        bad = R.OpenAIBackend(srv.url, model="m", encode_text=enc, end_ids=[1], retries=1, backoff=0.01)
        srv.fail, srv.n = 10 ** 6, 0
        with pytest.raises(R.RegenError, match="failed after 2 attempts"):
            bad.generate([[5, 6]], 4)
    finally:
        srv.close()


# ------------------------------------------------------------------------------ cache
def _samples(target, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        T = int(torch.randint(20, 60, (1,), generator=g))
        ids = torch.randint(4, 260, (T,), generator=g).tolist()
        p = int(torch.randint(3, 10, (1,), generator=g))
        out.append({"id": f"s{i}", "input_ids": ids, "loss_spans": [[p, T]]})
    return out


def test_cache_roundtrip_matches_target(tmp_path, tiny_gemma):
    t = tiny_gemma
    ss = _samples(t)
    st = C.write_cache(ss, tmp_path / "c", t, layer_ids=(-1, 0), dtype="fp32", shard_tokens=100,
                       progress=False)
    assert st.samples == 6 and st.tokens == sum(len(s["input_ids"]) for s in ss)
    c = C.TargetCache(tmp_path / "c")
    assert len(c) == 6 and len(c.manifest["shards"]) >= 2
    est = C.estimate(num_samples=6, tokens_per_sample=st.tokens / 6, hidden_size=t.hidden_size,
                     num_layers=2, dtype="fp32")
    assert abs(est["bytes_per_token"] - st.bytes / st.tokens) / est["bytes_per_token"] < 0.1
    for i, s in enumerate(ss):
        it = c[i]
        assert it.id == s["id"] and it.ids.tolist() == s["input_ids"]
        assert it.loss_mask.tolist() == R.loss_mask_of(s)
        out = t.forward(torch.tensor([s["input_ids"]]), None, (-1, 0))
        torch.testing.assert_close(it.taps, out.taps[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(t.logits(it.last), out.logits[0], rtol=1e-4, atol=1e-4)


def test_cache_bf16_is_close(tmp_path, tiny_qwen):
    ss = _samples(tiny_qwen, 2)
    C.write_cache(ss, tmp_path / "c", tiny_qwen, layer_ids=(0,), dtype="bf16", progress=False)
    it = C.TargetCache(tmp_path / "c")[1]
    out = tiny_qwen.forward(torch.tensor([ss[1]["input_ids"]]), None, (0,))
    torch.testing.assert_close(it.taps, out.taps[0], rtol=1e-2, atol=1e-2)


def test_cache_refuses_corrupt_and_mismatched(tmp_path, tiny_qwen):
    d = tmp_path / "c"
    C.write_cache(_samples(tiny_qwen, 4), d, tiny_qwen, layer_ids=(0, 1), progress=False,
                  shard_tokens=80)
    with pytest.raises(C.CacheError, match="layer_ids"):
        C.TargetCache(d, expect={"layer_ids": [0]})
    with pytest.raises(C.CacheError, match="target"):
        C.TargetCache(d, expect={"target": "other"})
    taps = sorted(d.glob("shard-*.taps.npy"))[0]
    raw = bytearray(taps.read_bytes())
    raw[-3] ^= 0xFF
    taps.write_bytes(bytes(raw))
    with pytest.raises(C.CacheError, match="checksum"):
        C.TargetCache(d)
    C.TargetCache(d, verify=False)  # sizes still fine without the checksum pass
    taps.write_bytes(bytes(raw[:-10]))
    with pytest.raises(C.CacheError, match="bytes"):
        C.TargetCache(d, verify=False)
    man = json.loads((d / "manifest.json").read_text())
    man["version"] = 99
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(C.CacheError, match="version"):
        C.TargetCache(d)
    (d / "manifest.json").unlink()
    with pytest.raises(C.CacheError, match="incomplete"):
        C.TargetCache(d)
    # another layer set in the same directory is refused by the writer
    with pytest.raises(C.CacheError, match="layer_ids"):
        C.write_cache(_samples(tiny_qwen, 4), d, tiny_qwen, layer_ids=(1,), progress=False)


def test_cache_writer_resumes_after_crash(tmp_path, tiny_qwen, monkeypatch):
    ss = _samples(tiny_qwen, 8, seed=3)
    d = tmp_path / "c"
    calls = {"n": 0}
    real = C.compute_item

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # killed mid-run
        return real(*a, **k)

    monkeypatch.setattr(C, "compute_item", crashing)
    with pytest.raises(KeyboardInterrupt):
        C.write_cache(ss, d, tiny_qwen, layer_ids=(0,), shard_tokens=60, progress=False)
    assert not (d / "manifest.json").exists()
    n_shards = len(list(d.glob("shard-*.json")))
    assert n_shards >= 1
    (d / "shard-00099.ids.npy").write_bytes(b"partial")  # a half-written leftover
    monkeypatch.setattr(C, "compute_item", real)
    st = C.write_cache(ss, d, tiny_qwen, layer_ids=(0,), shard_tokens=60, progress=False)
    assert st.resumed_samples > 0 and st.resumed_samples + st.samples == 8
    assert not (d / "shard-00099.ids.npy").exists()
    fresh = tmp_path / "f"
    C.write_cache(ss, fresh, tiny_qwen, layer_ids=(0,), shard_tokens=60, progress=False)
    a, b = C.TargetCache(d), C.TargetCache(fresh)
    ia = {a[i].id: a[i] for i in range(len(a))}
    for i in range(len(b)):
        x = b[i]
        assert torch.equal(ia[x.id].taps, x.taps) and torch.equal(ia[x.id].ids, x.ids)
    # an already complete cache: nothing new
    st = C.write_cache(ss, d, tiny_qwen, layer_ids=(0,), shard_tokens=60, progress=False)
    assert st.samples == 0 and len(C.TargetCache(d)) == 8


def test_estimate_numbers_and_cli(capsys):
    e = C.estimate(num_samples=1000, tokens_per_sample=512, hidden_size=640, num_layers=5)
    assert e["bytes_per_token"] == 4 + 1 + 5 * 640 * 2 + 640 * 2
    assert e["bytes_per_field"]["taps"] == 1000 * 512 * 5 * 640 * 2
    from dspark_viz.cli import main
    assert main(["prepare", "estimate", "--num-samples", "1000", "--seq-len", "512",
                 "--hidden-size", "640", "--num-layers", "5"]) == 0
    assert "7,685 B/token" in capsys.readouterr().out
    assert main(["prepare", "estimate", "--num-samples", "10"]) == 2
    assert "error" in capsys.readouterr().err


def test_builtin_tasks_cover_three_domains_and_stay_off_the_eval_prompts():
    from dspark_viz.data.sources import near_duplicate, tasks
    from dspark_viz.eval.prompts import builtin_sets
    held_out = [t for ts in builtin_sets().values() for t in ts]
    a, b = tasks(300, seed=5), tasks(300, seed=5)
    assert [p.id for p in a] == [p.id for p in b] and len({p.id for p in a}) == 300
    assert {p.source for p in a} == {"tasks-code", "tasks-math", "tasks-prose"}
    assert all(p.raw_text() == p.turns[0] for p in a)  # raw mode sees the request itself
    assert not any(near_duplicate(p.turns[0], held_out) for p in a)
    assert all(near_duplicate(t, held_out) for t in held_out)
    # the guard: same figures in other words, a shared 6-word run; generic openings pass
    assert near_duplicate("Factor x² − 5x + 6 and use the factors to write down its roots.", held_out)
    assert near_duplicate("Please describe a lighthouse keeper's morning on a rainy day.", held_out)
    assert not near_duplicate("Write a Python function that counts the vowels in a string.", held_out)


# ------------------------------------------------------------------------------ issue 21: mix
from dspark_viz.data import batchgen as BG  # noqa: E402
from dspark_viz.data import corpora as K  # noqa: E402
from dspark_viz.data import mix as M  # noqa: E402
from dspark_viz.data import shards as SH  # noqa: E402
from dspark_viz.eval.prompts import builtin_sets  # noqa: E402
from dspark_viz.sampling import warp  # noqa: E402

_LONG = ("Explain how the garbage collector of a reference counted runtime finds cycles between "
         "container objects, why it keeps three generations, and when a program should call it by hand.")


def _fake_source(n, seed=0):
    """A source with one of everything the builder must drop, then plain prompts."""
    eval_prompt = builtin_sets()["code"][0]
    texts = [_LONG,
             _LONG.upper().replace(",", " ;"),                       # same after normalising
             _LONG.replace("by hand", "manually"),                   # near-duplicate (Jaccard ≥ 0.8)
             eval_prompt,                                            # a held-out eval prompt
             "Give three tips for staying healthy.",                 # a benchmark's opening
             "You are given a 0-indexed integer array nums. Return its sum.",  # benchmark-shaped
             "Describe " + "a very long request " * 80]              # too long
    texts += [f"Write a short poem about the number {i} and the colour {c}."
              for i, c in zip(range(100), ["red", "green", "blue", "teal"] * 25)]
    rng = __import__("random").Random(seed)
    head, tail = texts[:7], texts[7:]
    rng.shuffle(tail)
    return [S.Prompt(id=S._pid("fake", t), turns=(t,), source="fake") for t in (head + tail)[:n]]


FAKE = {"fake": (_fake_source, "prose")}


@pytest.fixture(scope="module")
def guard():
    return M.BenchmarkGuard()


def test_mix_is_deterministic_deduplicated_and_guarded(tmp_path, guard):
    a, ra = M.build_mix({"fake": 20}, seed=3, sources=FAKE, guard=guard)
    b, rb = M.build_mix({"fake": 20}, seed=3, sources=FAKE, guard=guard)
    assert [p.id for p in a] == [p.id for p in b] and len(a) == 20
    assert ra.dropped["fake"] == {"duplicate": 1, "near-duplicate": 1, "near-eval": 2, "style": 1,
                                  "too-long": 1}
    texts = {p.turns[0] for p in a}
    assert _LONG in texts and not texts & {builtin_sets()["code"][0], "Give three tips for staying healthy."}
    assert [p.id for p in M.build_mix({"fake": 20}, seed=4, sources=FAKE, guard=guard)[0]] != [p.id for p in a]
    # file + manifest: same content → same bytes; read back in idx order; the sha256 is checked
    f1, f2 = tmp_path / "a" / "p.jsonl.gz", tmp_path / "b" / "p.jsonl.gz"
    m1 = M.write_mix(f1, a, ra, seed=3)
    m2 = M.write_mix(f2, b, rb, seed=3)
    assert m1["sha256"] == m2["sha256"] and m1["by_source"] == {"fake": 20} and m1["by_domain"] == {"prose": 20}
    back = M.read_mix(f1)
    assert [(p.id, p.turns) for p in back] == [(p.id, p.turns) for p in a]
    # the guard: the recipe's held-out tasks requests and their same-behaviour variants are refused
    held = M.recipe_heldout_texts()
    assert guard(held[0]) == "near-eval" and guard(held[-1]) == "near-eval"
    assert guard("Write a Python function `parse_header(line)` that splits an HTTP header line.") is None


def test_near_dup_index_and_normalise():
    idx = M.NearDupIndex()
    assert idx.add(_LONG) and not idx.add(_LONG.replace("by hand", "manually"))
    assert idx.add("Write a Go function that counts the vowels in a string.")
    assert idx.add("Write a Java function that counts the vowels in a string.")  # Jaccard 0.5: kept
    assert M.normalise("Héllo,  WORLD!") == M.normalise("héllo world")


@pytest.mark.parametrize("name", ["pyfaq", "perlfaq", "pyguide", "pyapi", "debref", "fortunes",
                                  "wordnet", "go-write", "faker"])
def test_installed_corpora_are_deterministic_requests(name):
    try:
        a = K.CORPORA[name](30, 1)
    except K.CorpusError as e:
        pytest.skip(str(e))
    b = K.CORPORA[name](30, 1)
    assert [p.turns for p in a] == [p.turns for p in b] and len(a) == 30
    assert len({p.id for p in a}) == 30 and all(p.turns[0].strip() and len(p.turns) == 1 for p in a)
    assert [p.id for p in K.CORPORA[name](30, 2)] != [p.id for p in a]


def test_missing_corpus_is_a_one_line_error(tmp_path):
    with pytest.raises(K.CorpusError, match="apt-get install perl-doc") as e:
        K.perlfaq(5, 0, root=tmp_path / "nowhere")
    assert "\n" not in str(e.value)


def _write_lines(path, lines):
    import gzip
    path.write_bytes(gzip.compress("".join(l + "\n" for l in lines).encode()))


@pytest.mark.parametrize("content,msg", [
    (b"\x1f\x8bnot really gzip", "not a readable gzip"),
    (None, r"p\.jsonl\.gz:2: malformed JSON"),
    ("idx", "'idx' must be 1"),
    ("turns", "'turns' must be a non-empty list"),
    (b"", "no prompts"),
])
def test_malformed_prompt_files_are_one_line_errors(tmp_path, content, msg):
    f = tmp_path / "p.jsonl.gz"
    good = json.dumps({"idx": 0, "id": "a", "source": "s", "turns": ["hi"]})
    if content is None:
        _write_lines(f, [good, "{not json"])
    elif content == "idx":
        _write_lines(f, [good, json.dumps({"idx": 5, "id": "b", "turns": ["x"]})])
    elif content == "turns":
        _write_lines(f, [good, json.dumps({"idx": 1, "id": "b", "turns": []})])
    else:
        f.write_bytes(content)
    with pytest.raises(P.PromptError, match=msg) as e:
        M.read_mix(f)
    assert "\n" not in str(e.value)


def test_changed_prompt_file_fails_its_checksum_and_cli_reports_one_line(tmp_path, capsys, guard):
    from dspark_viz.cli import main
    ps, rep = M.build_mix({"fake": 10}, seed=0, sources=FAKE, guard=guard)
    f = tmp_path / "p.jsonl.gz"
    M.write_mix(f, ps, rep, seed=0)
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(P.PromptError, match="sha256 differs"):
        M.read_mix(f)
    assert main(["prepare", "regen", "--prompts", str(f), "--out", str(tmp_path / "o"),
                 "--target", "tiny:gemma3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dspark-viz: error:") and "sha256" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ issue 21: generation
def test_nucleus_order_matches_warp():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 50, generator=g) * 3
    z[0] = torch.arange(50) * 1e-3  # near-flat row (no ties): its nucleus does not fit in 8 candidates
    for kw in ({"top_p": 0.9}, {"top_k": 5}, {"top_k": 5, "top_p": 0.7}, {"top_p": 0.5}, {}):
        for cand in (8, 64):
            ids, p = BG.nucleus_order(z, temperature=0.8, candidates=cand, **kw)
            full = torch.zeros_like(z).scatter(-1, ids, p)
            assert torch.allclose(full, warp(z, temperature=0.8, **kw), atol=1e-6), (kw, cand)
            assert bool((p[:, :-1] >= p[:, 1:]).all())  # descending order


def _eos_heavy_tiny():
    """A fresh tiny Qwen3 whose EOS ids are tokens it emits often, so rows finish at different steps."""
    from dspark_viz.targets import tiny_target
    t = tiny_target(family="qwen3", vocab_size=320, seed=0)
    t.eos_ids = (7, 290, 130)
    return t


def test_generate_batch_batched_equals_alone_greedy_and_sampled(tiny_gemma):
    t = _eos_heavy_tiny()
    prompts = [t.encode(f"{i}: the quick brown fox {'jumps ' * (i % 3)}over {i * 7} lazy dogs")
               for i in range(10)]
    seeds = [BG.prompt_seed(7, f"p{i}") for i in range(10)]
    for T in (0.0, 1.0):
        batched = BG.generate_batch(t, prompts, seeds, max_new_tokens=24, temperature=T, top_p=0.95)
        alone = [BG.generate_batch(t, [p], [s], max_new_tokens=24, temperature=T, top_p=0.95)[0]
                 for p, s in zip(prompts, seeds)]
        assert batched == alone
        # rows finish at different steps, so finished rows left the batch (compaction) mid-run
        assert sum(f for _, f in batched) >= 3 and len({len(g) for g, _ in batched}) >= 3
        assert all(g[-1] in t.eos_ids for g, f in batched if f)
    # greedy equals the project's transformers backend (HF generate), also on the other family
    ids = [tiny_gemma.encode(x) for x in ("a short one", "a considerably longer prompt here", "x")]
    assert BG.generate_batch(tiny_gemma, ids, [0] * 3, max_new_tokens=10) == \
        R.TransformersBackend(tiny_gemma, temperature=0.0).generate(ids, 10)
    assert BG.generate_batch(t, prompts, [0] * 10, max_new_tokens=12) == \
        R.TransformersBackend(t, temperature=0.0).generate(prompts, 12)


def _regen_prompts(n=14):
    return [S.Prompt(id=f"q{i}", turns=(f"{i}: the quick brown fox {'jumps ' * (i % 5)}over",),
                     source="t") for i in range(n)]


def _shard_contents(d):
    return [(s["id"], s["input_ids"], s["loss_spans"], s["finished"]) for s in SH.iter_samples(d)]


def test_regen_killed_and_resumed_equals_uninterrupted_at_t1(tmp_path, monkeypatch):
    t = _eos_heavy_tiny()
    ps = _regen_prompts()
    cfg = SH.RegenConfig(target="tiny", temperature=1.0, top_p=0.9, writers=2, batch_size=2,
                         shard_records=3, max_new_tokens=12, seed=5)
    whole = tmp_path / "whole"
    for w in range(2):
        assert SH.run_writer(ps, whole, cfg, w, target=t, prompts_sha="x")["state"] == "done"
    # interrupted: writer 0 stops after one shard, writer 1 is "killed" inside its second shard
    part = tmp_path / "part"
    assert SH.run_writer(ps, part, cfg, 0, target=t, prompts_sha="x", max_shards=1)["state"] == "stopped"
    real, calls = BG.generate_batch, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the kill
        return real(*a, **k)
    monkeypatch.setattr(SH, "generate_batch", dies)
    with pytest.raises(KeyboardInterrupt):
        SH.run_writer(ps, part, cfg, 1, target=t, prompts_sha="x")
    monkeypatch.setattr(SH, "generate_batch", real)
    (part / ".shard-w1of2-00001.safetensors.abcd1234.tmp").write_bytes(b"torn")
    assert len(SH.shard_files(part)) == 2
    resumed = SH.RegenConfig(**(cfg.content() | {"batch_size": 3}))  # another batch size is fine
    for w in range(2):
        assert SH.run_writer(ps, part, resumed, w, target=t, prompts_sha="x")["state"] == "done"
    assert _shard_contents(part) == _shard_contents(whole)
    assert not list(part.glob(".*.tmp")) and len(SH.shard_files(part)) == 6
    got = _shard_contents(whole)
    assert [s[0] for s in got] == [p.id for p in ps] and any(not s[3] for s in got) and any(s[3] for s in got)
    # progress: per writer, summed by status
    st = SH.status(part)
    assert st["records_done"] == st["records_total"] == 14 and st["tokens_done"] == sum(
        e - s for _, _, [[s, e]], _ in got)
    assert "total:" in SH.format_status(st)
    rec = json.loads((part / "progress-w0.json").read_text())
    (part / "progress-w0.json").write_text(json.dumps(rec | {"state": "running", "pid": 2 ** 22 + 1}))
    assert SH.status(part)["writers"][0]["state"] == "gone"  # killed without a word
    # another sampling setting or prompt file is refused in one line
    with pytest.raises(R.RegenError, match="temperature=1.0") as e:
        SH.run_writer(ps, part, SH.RegenConfig(**(cfg.content() | {"temperature": 0.5})), 0,
                      target=t, prompts_sha="x")
    assert "\n" not in str(e.value)
    with pytest.raises(R.RegenError, match="another prompt file"):
        SH.run_writer(ps, part, cfg, 0, target=t, prompts_sha="y")


def test_regen_shard_layout_and_corrupt_shard(tmp_path, tiny_gemma):
    ps = _regen_prompts(5)
    cfg = SH.RegenConfig(target="tiny", writers=1, shard_records=4, max_new_tokens=6,
                         max_prompt_tokens=40)  # prompts of 28–52 tokens: 3 answered, 2 skipped
    (tmp_path / SH.STOP_FILE).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / SH.STOP_FILE).touch()  # a clean stop: no shard is started
    assert SH.run_writer(ps, tmp_path, cfg, 0, target=tiny_gemma, prompts_sha="x")["state"] == "stopped"
    assert not SH.shard_files(tmp_path)
    (tmp_path / SH.STOP_FILE).unlink()
    assert SH.run_writer(ps, tmp_path, cfg, 0, target=tiny_gemma, prompts_sha="x")["state"] == "done"
    files = SH.shard_files(tmp_path)
    assert [f.name for f in files] == ["shard-w0of1-00000.safetensors", "shard-w0of1-00001.safetensors"]
    s = SH.read_shard(files[0])
    assert s["tokens"].dtype.name == "int32" and len(s["offsets"]) == len(s["idx"]) + 1
    assert s["skipped"] and all(len(tiny_gemma.encode(ps[i].raw_text())) > 40 for i in s["skipped"])
    from dspark_viz.cli import main
    assert main(["prepare", "regen-export", "--out", str(tmp_path), "--to", str(tmp_path / "s.jsonl")]) == 0
    back = R.read_samples(tmp_path / "s.jsonl")  # the layout `prepare cache` reads
    assert len(back) == 3 and all(len(r["input_ids"]) > r["loss_spans"][0][0] for r in back)
    assert [(r["id"], r["input_ids"], r["loss_spans"]) for r in back] == \
        [(r["id"], r["input_ids"], r["loss_spans"]) for r in SH.iter_samples(tmp_path)]
    assert oct(files[0].stat().st_mode & 0o777) != "0o600"
    # one draft vocabulary for every training chunk: the most frequent answer tokens + EOS
    from dspark_viz.data.corpus import draft_vocab_from_counts
    answers = [r["input_ids"][b:e] for r in back for b, e in r["loss_spans"]]
    assert main(["prepare", "regen-vocab", "--out", str(tmp_path), "--to", str(tmp_path / "v.json"),
                 "--size", "12", "--target", "tiny:gemma3"]) == 0
    assert json.loads((tmp_path / "v.json").read_text()) == draft_vocab_from_counts(
        answers, 12, tiny_gemma.vocab_size, always=tiny_gemma.eos_ids)
    assert main(["prepare", "regen-vocab", "--out", str(tmp_path), "--to", str(tmp_path / "w.json"),
                 "--size", "0", "--target", "tiny:gemma3"]) == 2 and not (tmp_path / "w.json").exists()
    files[1].write_bytes(files[1].read_bytes()[:40])
    with pytest.raises(R.RegenError, match="unreadable") as e:
        list(SH.iter_samples(tmp_path))
    assert "\n" not in str(e.value)


def test_prepare_mix_cli_writes_prompts_and_manifest(tmp_path, capsys):
    from dspark_viz.cli import main
    try:
        K.pyfaq(1, 0), K.perlfaq(1, 0)
    except K.CorpusError as e:
        pytest.skip(str(e))
    out = tmp_path / "p.jsonl.gz"
    assert main(["prepare", "mix", "--out", str(out), "--mix", "pyfaq=6,perlfaq=4", "--seed", "2"]) == 0
    assert "wrote 10 prompts" in capsys.readouterr().out
    man = json.loads(M.manifest_path(out).read_text())
    assert man["by_source"] == {"perlfaq": 4, "pyfaq": 6} and man["by_domain"] == {"qa": 10}
    assert man["versions"]["debian"]["perl-doc"] and "perl-doc" in man["versions"]["debian"]
    assert len(M.read_mix(out)) == 10
    assert main(["prepare", "mix", "--out", str(tmp_path / "q.jsonl.gz"), "--mix", "nosuch=3"]) == 2
    assert "unknown prompt source 'nosuch'" in capsys.readouterr().err


def test_prepare_regenerate_resumed_equals_uninterrupted_at_t1(tmp_path, tiny_gemma):
    """`prepare regenerate` samples each prompt from its own seed: a run cut short after some
    prompts and resumed (with another batch size) writes what one uninterrupted run writes."""
    ps = S.instructions(7)

    def run(out, prompts, batch):
        return R.regenerate(prompts, out, backend=R.TransformersBackend(tiny_gemma, temperature=1.0,
                                                                       seed=3),
                            tokenizer=tiny_gemma.tokenizer, template=R.TEMPLATES["raw"],
                            target_name=tiny_gemma.name, max_new_tokens=10, batch_size=batch,
                            progress=False)
    run(tmp_path / "full.jsonl", ps, 4)
    run(tmp_path / "cut.jsonl", ps[:3], 2)  # "killed" after three prompts
    run(tmp_path / "cut.jsonl", ps, 3)  # resumed
    full = {r["id"]: r["input_ids"] for r in R.read_samples(tmp_path / "full.jsonl")}
    cut = {r["id"]: r["input_ids"] for r in R.read_samples(tmp_path / "cut.jsonl")}
    assert full == cut and len(full) == 7
    other = tmp_path / "seed4.jsonl"
    R.regenerate(ps, other, backend=R.TransformersBackend(tiny_gemma, temperature=1.0, seed=4),
                 tokenizer=tiny_gemma.tokenizer, template=R.TEMPLATES["raw"],
                 target_name=tiny_gemma.name, max_new_tokens=10, progress=False)
    assert {r["id"]: r["input_ids"] for r in R.read_samples(other)} != full  # the seed matters


def test_deeply_nested_output_line_blocks_resume_in_one_line(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a"}\n' + "[" * 100_000 + "]" * 100_000 + "\n" + '{"id": 1' + "0" * 5000 + "}\n")
    with pytest.raises(R.RegenError, match=r"r\.jsonl:2"):
        R.completed_ids(out)


def test_perlfaq_without_its_pods_is_a_one_line_error(tmp_path):
    """perl-modules creates the pod directory (perldiag.pod) without perl-doc's perlfaq files:
    that is "not installed", not an empty corpus."""
    (tmp_path / "perldiag.pod").write_text("=head2 Not a question\n")
    with pytest.raises(K.CorpusError, match="perlfaq1–9.pod"):
        K.perlfaq(5, 0, root=tmp_path)

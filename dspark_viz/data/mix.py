"""The regeneration prompt mix: draw from every corpus, deduplicate, guard, write, read back.

Scope: ``build_mix`` draws the requested number of prompts from each source (``corpora`` and the
built-in ``sources``), in a fixed source order, dropping on the way

- exact repeats after normalisation (``normalise``: case, accents' compatibility forms,
  punctuation and whitespace),
- near-duplicates of an earlier kept prompt (``NearDupIndex``: word-trigram Jaccard ≥ 0.8, found
  through MinHash banding, confirmed exactly),
- prompts near an evaluation prompt (``BenchmarkGuard``: ``sources.NearDuplicateGuard`` against
  the project's held-out eval prompts and the recipe's held-out ``tasks`` requests, a few known openings of GSM8K, MATH, HumanEval, MBPP,
  MT-Bench, Alpaca, Arena-Hard, LiveCodeBench and AIME, and any ``exclude`` files, plus the
  benchmarks' tell-tale phrasings in ``BENCHMARK_STYLE``),
- prompts longer than ``max_chars``;

then shuffles the kept prompts (seeded) and numbers them (``idx``: the line number, which the
regeneration writers slice on). ``write_mix`` writes a gzip JSONL (fixed gzip header, so the
bytes depend only on the content) and a manifest (counts per source and domain, what each guard
dropped, sha256 of the file, the versions of the packages the text came from); ``read_mix``
reads it back, checks the sha256 against the manifest, and reports a malformed file in one
line. Not here: the corpora themselves (``corpora.py``), generation (``shards.py``).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import subprocess
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from dspark_viz.data import corpora as K
from dspark_viz.data import sources as S
from dspark_viz.data.prompts import PromptError, _record_to_prompt, read_jsonl, split_of
from dspark_viz.eval.prompts import builtin_sets
from dspark_viz.io import atomic_path, read_json_capped, write_json_atomic

FORMAT = "dspark-regen-prompts"
VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"

# source → (generator(n, seed) → prompts, domain)
SOURCES: dict[str, tuple[Callable, str]] = {
    "pycode-write": (K.pycode_write, "code"), "pycode-explain": (K.pycode_explain, "code"),
    "go-write": (K.go_write, "code"), "go-explain": (K.go_explain, "code"),
    "pyapi": (K.pyapi, "code"), "tasks": (S.tasks, "mixed"),
    "mathds": (K.mathds, "math"), "faker": (K.faker_tasks, "mixed"),
    "arithmetic": (S.arithmetic, "math"),
    "pyfaq": (K.pyfaq, "qa"), "perlfaq": (K.perlfaq, "qa"), "pyguide": (K.pyguide, "qa"),
    "debref": (K.debref, "qa"), "wordnet": (K.wordnet, "prose"), "fortunes": (K.fortunes, "prose"),
    "instructions": (lambda n, seed=0: S.instructions(n, seed), "prose"),
}
# the issue-21 mix (≈ 24 k prompts; ≈ 40 % code, 25 % math, 35 % prose and questions). Sources
# that hold fewer distinct prompts give what they have (the manifest records it). Left out:
# ``arithmetic`` and ``instructions`` (the recipe's calibration sets are drawn from them) and
# ``tasks`` (its templates are so few that the guard against the recipe's held-out requests
# refuses all but 9 of 2 200).
DEFAULT_MIX = {
    "pycode-write": 4200, "pycode-explain": 2000, "go-write": 1500, "go-explain": 800,
    "pyapi": 1600, "mathds": 4700, "faker": 2600,
    "pyfaq": 176, "perlfaq": 305, "pyguide": 1000, "debref": 900, "wordnet": 2300,
    "fortunes": 1900,
}
POOL_CAP = {"tasks": 2200}  # the task templates give 2 294 distinct requests at most
DOMAIN_OF_SOURCE = {"tasks-code": "code", "tasks-math": "math", "tasks-prose": "prose",
                    "faker-math": "math", "faker-prose": "prose"}

# a few known openings of the benchmarks we must never train on (guarded with the same
# near-duplicate test as the project's held-out prompts; pass real benchmark files as ``exclude``)
BENCHMARK_OPENINGS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four.",
    "from typing import List def has_close_elements(numbers: List[float], threshold: float) -> bool: Check if in given list of numbers, are any two numbers closer to each other than given threshold.",
    "Input to this function is a string containing multiple groups of nested parentheses. Your goal is to separate those group into separate strings and return the list of those.",
    "Write a function to find the shared elements from the given two lists.",
    "Write a python function to find the first repeated character in a given string.",
    "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences and must-see attractions.",
    "Draft a professional email seeking your supervisor's feedback on the 'Quarterly Financial Report' you prepared.",
    "Give three tips for staying healthy.",
    "What are the three primary colors?",
    "Describe the structure of an atom.",
    "Use ABC notation to write a melody in the style of a folk tune.",
    "Every morning Aya goes for a 9-kilometer-long walk and stops at a coffee shop afterwards.",
    "How many vertical asymptotes does the graph of y=\\frac{2}{x^2+x-6} have?",
    "You are given a 0-indexed integer array nums.",
)
# phrasings that mark a prompt as benchmark-shaped (competition maths, judge tasks, MBPP stems)
BENCHMARK_STYLE = re.compile(
    r"you are given an? (0|1)-indexed|^write an? (python )?function to |\$\\frac|\\boxed|"
    r"find the remainder when .{1,80} is divided by 1000|let'?s think step by step|"
    r"^from typing import |generate an executable python function|"
    r"read from standard input|standard input|stdin", re.I)


def normalise(text: str) -> str:
    """Text as the exact-duplicate test sees it: NFKC, lower case, alphanumerics and single spaces."""
    t = unicodedata.normalize("NFKC", text).lower()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in t).split())


def _words3(text: str) -> set[str]:
    w = normalise(text).split()
    return {" ".join(w[i:i + 3]) for i in range(max(1, len(w) - 2))}


class NearDupIndex:
    """Kept prompts' word-trigram sets; ``add(text)`` is False (and keeps nothing) when ``text``
    has Jaccard ≥ ``threshold`` with a kept one. Candidates come from MinHash banding
    (``bands`` × ``rows`` hashes, blake2b-seeded, deterministic), then the exact Jaccard decides."""

    def __init__(self, threshold: float = 0.8, bands: int = 16, rows: int = 4) -> None:
        self.threshold, self.bands, self.rows = threshold, bands, rows
        rng = np.random.default_rng(12345)
        n = bands * rows
        self._a = rng.integers(1, (1 << 61) - 1, size=n, dtype=np.uint64)
        self._b = rng.integers(0, (1 << 61) - 1, size=n, dtype=np.uint64)
        self._buckets: list[dict] = [dict() for _ in range(bands)]
        self._sets: list[set[str]] = []

    def _signature(self, sh: set[str]) -> np.ndarray:
        h = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")
                      >> 3 for s in sorted(sh)], dtype=np.uint64)
        with np.errstate(over="ignore"):
            v = (self._a[:, None] * h[None, :] + self._b[:, None])  # wraps mod 2^64: fine for hashing
        return v.min(axis=1)

    def add(self, text: str) -> bool:
        sh = _words3(text)
        sig = self._signature(sh)
        keys = [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]
        cands = {j for b, k in enumerate(keys) for j in self._buckets[b].get(k, ())}
        for j in sorted(cands):
            o = self._sets[j]
            if len(sh & o) / len(sh | o) >= self.threshold:
                return False
        j = len(self._sets)
        self._sets.append(sh)
        for b, k in enumerate(keys):
            self._buckets[b].setdefault(k, []).append(j)
        return True


class BenchmarkGuard:
    """True for a prompt near an evaluation prompt or shaped like a benchmark item."""

    def __init__(self, exclude: Iterable[str | os.PathLike] = (), *, recipe: bool = True) -> None:
        texts = [t for ts in builtin_sets().values() for t in ts] + list(BENCHMARK_OPENINGS)
        if recipe:
            texts += recipe_heldout_texts()
        for f in exclude:
            texts += [" ".join(p.turns) for p in read_jsonl(f)]
        self.n_texts = len(texts)
        self._near = S.NearDuplicateGuard(texts)

    def __call__(self, text: str) -> str | None:
        """The reason ``text`` is refused ("style" or "near-eval"), or None."""
        if BENCHMARK_STYLE.search(text):
            return "style"
        return "near-eval" if self._near(text) else None


def recipe_heldout_texts() -> list[str]:
    """The ``builtin:tasks`` requests the recipe holds out (dspark_viz/assets/drafters/RECIPE.md):
    the validation split of step 3 (1 500 requests, seed 0, 3 %), which bench/embedded.sh's
    ``tasks`` section decodes, and the seed-7 requests of step 4 (``heldout`` section)."""
    from_step3 = [p.turns[0] for p in S.tasks(1500, seed=0)
                  if split_of(p.id, 0.03, 0) == "val"]
    return from_step3 + [p.turns[0] for p in S.tasks(330, seed=7)]


@dataclass
class MixReport:
    requested: dict[str, int]
    kept: dict[str, int] = field(default_factory=dict)
    drawn: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def domain_of(source: str) -> str:
    return DOMAIN_OF_SOURCE.get(source) or SOURCES.get(source, (None, "other"))[1]


def _domain(p: S.Prompt) -> str:
    return p.meta.get("domain") or domain_of(p.source)


def build_mix(mix: dict[str, int], *, seed: int = 0, exclude: Iterable = (),
              max_chars: int = K.MAX_CHARS, sources: dict | None = None,
              guard: BenchmarkGuard | None = None) -> tuple[list[S.Prompt], MixReport]:
    """Prompts drawn per ``mix`` (source → count), deduplicated and guarded, shuffled (seeded);
    ``sources`` overrides ``SOURCES`` (tests). Each source draws from a pool twice its count."""
    sources = sources or SOURCES
    unknown = [s for s in mix if s not in sources]
    if unknown:
        raise PromptError(f"unknown prompt source {unknown[0]!r} (known: {', '.join(sources)})")
    if any(int(c) < 0 for c in mix.values()):
        raise PromptError("prompt counts must be ≥ 0")
    t0 = time.perf_counter()
    guard, near = guard or BenchmarkGuard(exclude), NearDupIndex()
    seen_norm, seen_id = set(), set()
    rep = MixReport(requested={k: int(v) for k, v in mix.items()})
    kept: list[S.Prompt] = []
    for name in sources:  # fixed order: earlier sources win duplicates
        want = int(mix.get(name, 0))
        if want == 0:
            continue
        fn = sources[name][0]
        pool = fn(min(2 * want + 20, POOL_CAP.get(name, 10 ** 9)), seed)
        rep.drawn[name] = len(pool)
        drop: Counter = Counter()
        got = 0
        for p in pool:
            if got >= want:
                break
            text = "\n\n".join(p.turns)
            norm = normalise(text)
            if len(text) > max_chars:
                drop["too-long"] += 1
            elif not norm:
                drop["empty"] += 1
            elif p.id in seen_id or norm in seen_norm:
                drop["duplicate"] += 1
            elif (why := guard(text)) is not None:
                drop[why] += 1
            elif not near.add(text):
                drop["near-duplicate"] += 1
            else:
                seen_id.add(p.id)
                seen_norm.add(norm)
                dom = DOMAIN_OF_SOURCE.get(p.source) or sources[name][1]
                kept.append(S.Prompt(id=p.id, turns=p.turns, source=p.source, text=p.text,
                                     reference=p.reference, meta={"domain": dom}))
                got += 1
        rep.kept[name], rep.dropped[name] = got, dict(sorted(drop.items()))
    random.Random(seed).shuffle(kept)
    rep.seconds = time.perf_counter() - t0
    return kept, rep


# ------------------------------------------------------------------------------ files
def _record(i: int, p: S.Prompt) -> dict:
    d = {"idx": i, "id": p.id, "source": p.source, "domain": _domain(p), "turns": list(p.turns)}
    if p.reference is not None:
        d["reference"] = p.reference
    return d


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("faker", "mathematics_dataset", "sympy", "numpy", "torch", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    debs = ("python3.11-doc", "perl-doc", "golang-1.19-src", "debian-reference-en", "fortunes",
            "wordnet-base")
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *debs],
                           capture_output=True, text=True, check=False, timeout=30)
        out["debian"] = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    except (OSError, subprocess.SubprocessError):
        out["debian"] = None
    # the installed packages whose source the pycode-* prompts quote
    out["site_packages"] = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                                  if d.metadata.get("Name"))
    return out


def write_mix(path: str | os.PathLike, prompts: list[S.Prompt], report: MixReport, *,
              seed: int, command: str = "") -> dict:
    """Write ``path`` (gzip JSONL, one ``_record`` per line) and ``path`` + ``.manifest.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = "".join(json.dumps(_record(i, p), ensure_ascii=False) + "\n" for i, p in enumerate(prompts))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw.encode("utf-8"))
    data = buf.getvalue()
    with atomic_path(path, fsync=True) as tmp:
        tmp.write_bytes(data)
    by_source = Counter(p.source for p in prompts)
    by_domain = Counter(_domain(p) for p in prompts)
    man = {"format": FORMAT, "version": VERSION, "file": path.name, "num_prompts": len(prompts),
           "sha256": hashlib.sha256(data).hexdigest(),
           "sha256_jsonl": hashlib.sha256(raw.encode("utf-8")).hexdigest(),
           "bytes": len(data), "seed": seed, "command": command,
           "requested": report.requested, "kept": report.kept, "drawn": report.drawn,
           "dropped": report.dropped, "by_source": dict(sorted(by_source.items())),
           "by_domain": dict(sorted(by_domain.items())), "build_seconds": round(report.seconds, 1),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": _versions()}
    write_json_atomic(manifest_path(path), man)
    return man


def manifest_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".gz").removesuffix(".jsonl") + MANIFEST_SUFFIX)


def read_mix(path: str | os.PathLike, *, check: bool = True) -> list[S.Prompt]:
    """The prompts of a ``write_mix`` file in ``idx`` order (``.jsonl`` or ``.jsonl.gz``).
    ``check``: its sha256 must match the manifest beside it (when there is one)."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompt file {str(path)!r} does not exist")
    data = path.read_bytes()
    mp = manifest_path(path)
    if check and mp.exists():
        man = read_json_capped(mp, 64 << 20, what="prompt manifest", error=PromptError)
        want = man.get("sha256") if isinstance(man, dict) else None
        if want and hashlib.sha256(data).hexdigest() != want:
            raise PromptError(f"{path}: sha256 differs from {mp.name} (changed or truncated file)")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise PromptError(f"{path}: not a readable gzip file ({e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
        p = _record_to_prompt(obj, f"{path}:{n}", n)
        if obj.get("idx") != len(out):
            raise PromptError(f"{path}:{n}: 'idx' must be {len(out)} (the line's position), got {obj.get('idx')!r}")
        out.append(p)
    if not out:
        raise PromptError(f"{path}: no prompts")
    return out


def parse_mix(spec: str | None) -> dict[str, int]:
    """``"mathds=100,wordnet=50"`` → counts (None or "" → ``DEFAULT_MIX``)."""
    if not spec:
        return dict(DEFAULT_MIX)
    out = {}
    for part in spec.split(","):
        name, _, n = part.strip().partition("=")
        try:
            out[name.strip()] = int(n)
        except ValueError:
            raise PromptError(f"--mix entries are SOURCE=COUNT, got {part!r}") from None
    return out

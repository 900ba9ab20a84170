"""Offline corpora as chat-like requests: OS documentation packages, code, word lists, generators.

Scope: one generator per corpus, ``(n, seed, root=None) -> list[Prompt]``, each turning text a
package ships into requests in the form users type — questions, "write a function that …",
"explain this code", word problems, "explain …" — in a seeded order (``random.Random(seed)``,
sorted file lists, so the same installed files give the same prompts). The corpora and where
they live (``root`` overrides the default, for tests):

- ``pyfaq``, ``pyapi``, ``pyguide``: Debian ``python3.11-doc`` (reST sources under
  ``/usr/share/doc/python3.11/html/_sources``): the FAQ's questions, the library reference's
  functions / methods / classes, the tutorial / HOWTO / reference section headings;
- ``perlfaq``: Debian ``perl-doc`` (``perlfaq1–9.pod``), its ``=head2`` questions;
- ``go-write``, ``go-explain``: Debian ``golang-1.19-src``, functions with doc comments;
- ``pycode-write``, ``pycode-explain``: the installed Python packages' own source (the
  interpreter's site-packages and ``/usr/lib/python3/dist-packages``), functions with docstrings;
- ``debref``: Debian ``debian-reference-en`` (HTML): section titles, command and package tables;
- ``fortunes``: Debian ``fortunes`` (``/usr/share/games/fortunes``), a curated subset of files;
- ``wordnet``: Debian ``wordnet-base``: words with sense counts, their glosses and synonyms;
- ``faker``: PyPI ``faker`` fills request and word-problem templates (names, firms, places);
- ``mathds``: PyPI ``mathematics_dataset`` (DeepMind's school-maths generator), the modules
  that run on today's sympy / numpy (see ``MATHDS_MODULES``).

A corpus that is not installed raises ``CorpusError`` naming the package to install. None of
these is an evaluation benchmark; the guard against benchmarks and the project's held-out
prompts, and the mixing, are in ``mix.py``. Not here: deduplication, file formats.
"""
from __future__ import annotations

import ast
import html
import importlib
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import textwrap
import warnings
from pathlib import Path

from dspark_viz.data.sources import Prompt, _pid
from dspark_viz.errors import UserError

PYDOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
PERLDOC_ROOT = Path("/usr/share/perl/5.36/pod")
GO_ROOT = Path("/usr/share/go-1.19/src")
DEBREF_ROOT = Path("/usr/share/doc/debian-reference-en/docs")
FORTUNE_ROOT = Path("/usr/share/games/fortunes")
WORDNET_ROOT = Path("/usr/share/wordnet")
MAX_CHARS = 900  # longest request kept (≈ 250 target tokens at the code end of the mix)

# names that mark a file as holding an evaluation benchmark (never read as a corpus)
BENCHMARK_NAMES = ("gsm8k", "humaneval", "human_eval", "mbpp", "mt_bench", "mt-bench", "mtbench",
                   "alpaca", "arena_hard", "arena-hard", "arenahard", "livecodebench", "aime",
                   "hendrycks", "competition_math")


class CorpusError(UserError):
    """A corpus is not installed or unreadable; one line naming what to install."""


def _need(root: Path, what: str) -> Path:
    if not root.exists():
        raise CorpusError(f"corpus {what} not found at {root} (install it: {INSTALL[what]})")
    return root


def _benchmarkish(path: Path | str) -> bool:
    low = str(path).lower()
    return any(b in low for b in BENCHMARK_NAMES)


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def _rst_plain(s: str) -> str:
    """reST inline markup → plain text (``:func:`x``` → ``x``, ``**b**`` → ``b``)."""
    s = re.sub(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", s)
    s = re.sub(r"`([^`<]*?)\s*<[^>]*>`_+", r"\1", s)
    s = s.replace("``", "").replace("**", "").replace("`", "")
    return _clean(s)


def _mk(source: str, q: str, **meta) -> Prompt:
    return Prompt(id=_pid(source, q), turns=(q,), source=source, meta=meta)


def _take(cands: list, n: int, rng: random.Random) -> list:
    rng.shuffle(cands)
    return cands[:n]


_UNDERLINE = re.compile(r"[-=~^*#\"+]{3,}")


def _rst_headings(text: str) -> list[str]:
    lines = text.splitlines()
    out = []
    for i in range(len(lines) - 1):
        t, u = lines[i].strip(), lines[i + 1].strip()
        if t and _UNDERLINE.fullmatch(u) and len(u) >= len(t) - 2 and not t.startswith((".. ", ":")):
            out.append(t)
    return out


# ------------------------------------------------------------------------------ python3.11-doc
def pyfaq(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """The Python FAQ's (and HOWTOs') questions: section headings that end with '?'."""
    root = _need(root or PYDOC_ROOT, "python3.11-doc")
    qs = []
    for f in sorted((root / "faq").glob("*.txt")) + sorted((root / "howto").glob("*.txt")):
        for h in _rst_headings(f.read_text(encoding="utf-8", errors="replace")):
            if h.endswith("?") and len(h) >= 15:
                h = _rst_plain(h)
                if "python" not in h.lower() and re.match(r"(How|What|Why|Is|Can|Are|Where|When|Do|Does|Should) ", h):
                    h = "In Python, " + h[0].lower() + h[1:]
                qs.append(h)
    qs = list(dict.fromkeys(qs))
    return [_mk("pyfaq", q) for q in _take(qs, n, random.Random(seed))]


_DIRECTIVE = re.compile(r"^\.\. (function|method|class|exception|decorator)::\s*(.+)$")
_PYAPI_FORMS = (
    "What does `{full}` do in Python? Show a short example.",
    "How do I use `{full}` from Python's `{mod}` module? Give an example.",
    "Explain the Python {kind} `{full}` and when you would use it.",
    "Write a small Python program that uses `{full}` and explain the output.",
    "In Python's `{mod}` module, {desc_q}",
)


def pyapi(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """The library reference's API entries: questions about one function, method or class."""
    root = _need(root or PYDOC_ROOT, "python3.11-doc")
    rng = random.Random(seed)
    cands = []
    for f in sorted((root / "library").glob("*.rst.txt")):
        mod = f.name[: -len(".rst.txt")]
        lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^\.\. (?:module|currentmodule):: (\S+)", line)
            if m:
                mod = m.group(1)
                continue
            m = _DIRECTIVE.match(line)
            if not m:
                continue
            kind, sig = m.group(1), _clean(m.group(2))
            if len(sig) > 90:
                continue
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and not nxt.startswith((" ", "\t")):
                    break
                if nxt.strip() and not re.match(r"^:[\w ]+:(\s|$)", nxt.strip()):
                    body.append(nxt.strip())
                elif body:
                    break
            desc = _rst_plain(" ".join(body))
            first = desc.split(". ")[0].rstrip(".")
            name = sig.split("(")[0]
            full = sig if name.startswith(mod + ".") or "." in name else f"{mod}.{sig}"
            cands.append((kind, mod, full, first))
    out = []
    for kind, mod, full, first in _take(cands, n, rng):
        form = rng.choice(_PYAPI_FORMS)
        if "{desc_q}" in form:
            if not (20 <= len(first) <= 200):
                form = _PYAPI_FORMS[0]
            else:
                form = form.replace("{desc_q}", "what does `{full}` do? The documentation says: "
                                    "\u201c{first}.\u201d Explain it with an example.")
        out.append(_mk("pyapi", form.format(full=full, mod=mod, kind=kind, first=first), module=mod))
    return out


_GUIDE_FORMS = ("Explain {t} in Python, with a code example.",
                "Give an overview of {t} from the Python {doc}, with examples.",
                "I am learning Python. Can you explain {t}?",
                "What should a Python programmer know about {t}?")


def pyguide(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """Section headings of the tutorial, HOWTOs, language and library reference as requests."""
    root = _need(root or PYDOC_ROOT, "python3.11-doc")
    rng = random.Random(seed)
    docs = {"tutorial": "tutorial", "howto": "HOWTO guides", "reference": "language reference",
            "library": "library reference"}
    cands = []
    for sub, doc in docs.items():
        for f in sorted((root / sub).glob("*.txt")):
            for h in _rst_headings(f.read_text(encoding="utf-8", errors="replace")):
                h = _rst_plain(h).rstrip(":")
                if 8 <= len(h) <= 80 and not h.endswith("?") and not re.search(r"[|\\]|^[\d.]+$", h) \
                        and h.lower() not in ("examples", "example", "notes", "footnotes", "see also"):
                    cands.append((h, doc))
    cands = list(dict.fromkeys(cands))
    out = []
    for h, doc in _take(cands, n, rng):
        words = h.split()
        titled = sum(w[:1].isupper() for w in words) >= 2 or h[1:2].isupper()
        t = f"\u201c{h}\u201d" if titled else h[0].lower() + h[1:]
        out.append(_mk("pyguide", rng.choice(_GUIDE_FORMS).format(t=t, doc=doc)))
    return out


# ------------------------------------------------------------------------------ perl-doc
def perlfaq(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """perlfaq1–9's questions (``=head2`` lines), with "In Perl," where the question needs it."""
    root = _need(root or PERLDOC_ROOT, "perl-doc")
    files = sorted(root.glob("perlfaq[1-9].pod"))
    if not files:  # the directory also exists without perl-doc (perl-modules ships perldiag.pod)
        raise CorpusError(f"corpus perl-doc not found at {root} (no perlfaq1–9.pod; install it: "
                          f"{INSTALL['perl-doc']})")
    qs = []
    for f in files:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("=head2 "):
                q = _clean(re.sub(r"[A-Z]<([^<>]*)>", r"\1", line[7:]))
                if len(q) < 12:
                    continue
                if "perl" not in q.lower() and q[:1].isupper():
                    q = "In Perl, " + q[0].lower() + q[1:]
                qs.append(q if q.endswith("?") else q + "?")
    qs = list(dict.fromkeys(qs))
    return [_mk("perlfaq", q) for q in _take(qs, n, random.Random(seed))]


# ------------------------------------------------------------------------------ Go source
_GO_FUNC = re.compile(r"((?:^//[^\n]*\n)+)^func (\([^)]*\) )?(\w+)(\([^\n{]*)\{\n", re.M)
_GO_WRITE = ("Write a Go function `{sig}` that {doc}",
             "Implement `func {sig}` in Go. It {doc} Explain your code.",
             "In Go, how would you write a function that {doc} Name it `{name}`.")
_GO_EXPLAIN = ("Explain what this Go function does:\n\n```go\n{body}\n```",
               "Walk through this Go code step by step:\n\n```go\n{body}\n```",
               "What does the following Go function return, and how does it work?\n\n```go\n{body}\n```",
               "Review this Go function and suggest improvements:\n\n```go\n{body}\n```")


def _go_funcs(root: Path, rng: random.Random, want: int) -> list[tuple]:
    files = sorted(p for p in root.rglob("*.go") if not p.name.endswith("_test.go")
                   and "testdata" not in p.parts and "vendor" not in p.parts)
    rng.shuffle(files)
    out = []
    for f in files:
        if len(out) >= want:
            break
        src = f.read_text(encoding="utf-8", errors="replace")
        found = []
        for m in _GO_FUNC.finditer(src):
            doc = " ".join(_clean(l[2:]) for l in m.group(1).splitlines())
            name = m.group(3)
            end = src.find("\n}\n", m.end() - 1)
            if end < 0:
                continue
            body = src[m.start(2) - 5 if m.group(2) else m.start(3) - 5: end + 2]
            found.append((f.relative_to(root).as_posix(), name, (m.group(2) or "") + name
                          + _clean(m.group(4)), doc, body))
        rng.shuffle(found)
        out.extend(found[:2])
    return out


def _go_doc(name: str, doc: str) -> str | None:
    doc = doc.split(". ")[0].rstrip(".")
    if not doc.startswith(name + " ") or "deprecated" in doc.lower():
        return None
    doc = doc[len(name) + 1:]
    return doc + "." if 12 <= len(doc) <= 200 else None


def go_write(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    root = _need(root or GO_ROOT, "golang-1.19-src")
    rng = random.Random(seed)
    out = []
    for path, name, sig, doc, _ in _go_funcs(root, rng, 3 * n + 10):
        d = _go_doc(name, doc)
        if d is None or len(sig) > 120 or len(out) >= n:
            continue
        q = rng.choice(_GO_WRITE).format(sig=sig.split(") ", 1)[-1] if sig.startswith("(") else sig,
                                         name=name, doc=d)
        out.append(_mk("go-write", q, file=path))
    return out


def go_explain(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    root = _need(root or GO_ROOT, "golang-1.19-src")
    rng = random.Random(seed + 1)
    out = []
    for path, name, _, _, body in _go_funcs(root, rng, 3 * n + 10):
        body = body.strip("\n")
        if not (120 <= len(body) <= MAX_CHARS - 80) or len(out) >= n:
            continue
        out.append(_mk("go-explain", rng.choice(_GO_EXPLAIN).format(body=body), file=path))
    return out


# ------------------------------------------------------------------------------ Python source
def _python_roots() -> list[Path]:
    seen, out = set(), []
    for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
              "/usr/lib/python3/dist-packages"):
        q = Path(p)
        if q.is_dir() and q.resolve() not in seen:
            seen.add(q.resolve())
            out.append(q)
    return out


_SKIP_PARTS = ("tests", "test", "testing", "_vendor", "vendor", "examples", "benchmarks",
               "dspark_viz", "__pycache__")
_THIRD = {"return": "returns", "compute": "computes", "get": "gets", "create": "creates",
          "check": "checks", "convert": "converts", "build": "builds", "make": "makes",
          "find": "finds", "add": "adds", "remove": "removes", "set": "sets", "load": "loads",
          "save": "saves", "apply": "applies", "parse": "parses", "generate": "generates",
          "initialize": "initializes", "initialise": "initialises", "update": "updates",
          "calculate": "calculates", "determine": "determines", "read": "reads", "write": "writes",
          "run": "runs", "call": "calls", "yield": "yields", "construct": "constructs",
          "format": "formats", "validate": "validates", "extract": "extracts",
          "evaluate": "evaluates", "register": "registers", "copy": "copies", "wrap": "wraps",
          "split": "splits", "merge": "merges", "normalize": "normalizes", "resolve": "resolves",
          "open": "opens", "close": "closes", "send": "sends", "print": "prints",
          "handle": "handles", "process": "processes", "encode": "encodes", "decode": "decodes",
          "sort": "sorts", "insert": "inserts", "delete": "deletes", "replace": "replaces",
          "raise": "raises", "transform": "transforms", "compare": "compares", "count": "counts",
          "append": "appends", "iterate": "iterates", "emit": "emits", "fetch": "fetches",
          "match": "matches", "search": "searches", "test": "tests", "render": "renders",
          "serialize": "serializes", "compile": "compiles", "collect": "collects",
          "filter": "filters", "select": "selects", "reset": "resets", "start": "starts",
          "stop": "stops", "wait": "waits", "ensure": "ensures", "strip": "strips",
          "join": "joins", "escape": "escapes", "quote": "quotes", "list": "lists",
          "produce": "produces", "estimate": "estimates", "draw": "draws", "plot": "plots",
          "scale": "scales", "map": "maps", "infer": "infers", "detect": "detects",
          "guess": "guesses", "try": "tries", "do": "does", "perform": "performs"}
_PY_WRITE = ("Write a Python function `{sig}` that {doc}",
             "Implement `{sig}` in Python. It {doc} Include a docstring.",
             "I need a Python function that {doc} Call it `{name}` and explain the code.",
             "Write a Python function `{sig}` for this docstring:\n\n\"\"\"{raw}\"\"\"")
_PY_EXPLAIN = ("Explain what this Python code does:\n\n```python\n{body}\n```",
               "What does the following Python function do? Walk through it step by step.\n\n```python\n{body}\n```",
               "Review this Python function and suggest improvements:\n\n```python\n{body}\n```",
               "Write unit tests with pytest for this function:\n\n```python\n{body}\n```",
               "Add a docstring and comments to this Python function:\n\n```python\n{body}\n```")


def _py_doc(summary: str) -> str | None:
    """A docstring summary as the rest of 'a function that …' (third person), or None."""
    s = _rst_plain(summary).rstrip(".")
    if not (15 <= len(s) <= 200) or not s[:1].isalpha() or any(
            w in s.lower() for w in ("deprecated", "todo", "internal use", "http", ">>>", "::")):
        return None
    w, _, rest = s.partition(" ")
    lw = w.lower()
    if lw in _THIRD:
        return f"{_THIRD[lw]} {rest}." if rest else None
    if lw.endswith("s") and lw[:-1] in _THIRD or lw.endswith("es") and lw[:-2] in _THIRD:
        return f"{lw} {rest}." if rest else None
    return None


def _py_funcs(roots: list[Path], rng: random.Random, want: int) -> list[tuple]:
    files = []
    for r in roots:
        files += [p for p in r.rglob("*.py") if not any(x in _SKIP_PARTS for x in p.relative_to(r).parts)
                  and not _benchmarkish(p.relative_to(r))]
    files = sorted(set(files))
    rng.shuffle(files)
    out, per_pkg = [], {}
    cap = max(4, want // 40)  # spread over packages
    for path in files:
        if len(out) >= want:
            break
        root = next(r for r in roots if path.is_relative_to(r))
        pkg = path.relative_to(root).parts[0]
        if per_pkg.get(pkg, 0) >= cap:
            continue
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
            continue
        lines = src.splitlines()
        funcs = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and ast.get_docstring(f) and f.end_lineno and not f.name.startswith("__")]
        rng.shuffle(funcs)
        for f in funcs[:2]:
            doc = ast.get_docstring(f) or ""
            args = [a for a in f.args.posonlyargs + f.args.args if a.arg not in ("self", "cls")]
            a2 = ast.arguments(posonlyargs=[], args=args, vararg=f.args.vararg,
                               kwonlyargs=f.args.kwonlyargs, kw_defaults=f.args.kw_defaults,
                               kwarg=f.args.kwarg, defaults=f.args.defaults[-len(args):] if args and f.args.defaults else [])
            try:
                sig = f"{f.name}({ast.unparse(a2)})"
            except (ValueError, TypeError, AttributeError):
                continue
            ds, de = f.body[0].lineno, f.body[0].end_lineno  # the docstring's lines
            body_lines = lines[f.lineno - 1: ds - 1] + lines[de: f.end_lineno]
            if f.decorator_list:
                body_lines = lines[f.decorator_list[0].lineno - 1: ds - 1] + lines[de: f.end_lineno]
            body = textwrap.dedent("\n".join(body_lines)).strip("\n")
            out.append((path.relative_to(root).as_posix(), pkg, f.name, sig, doc, body))
            per_pkg[pkg] = per_pkg.get(pkg, 0) + 1
    return out


def pycode_write(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """'Write a function that <docstring summary>' from the installed packages' functions."""
    roots = [root] if root else _python_roots()
    rng = random.Random(seed)
    out = []
    for path, pkg, name, sig, doc, _ in _py_funcs(roots, rng, 4 * n + 20):
        first = _clean(doc.split("\n\n")[0])
        d = _py_doc(first.split(". ")[0])
        if d is None or len(sig) > 100 or len(out) >= n:
            continue
        form = rng.choice(_PY_WRITE)
        if "{raw}" in form and not (30 <= len(first) <= 300):
            form = _PY_WRITE[0]
        out.append(_mk("pycode-write", form.format(sig=sig, name=name, doc=d, raw=first),
                       package=pkg, file=path))
    return out


def pycode_explain(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """'Explain / review / test this code' on the installed packages' functions (docstring cut)."""
    roots = [root] if root else _python_roots()
    rng = random.Random(seed + 1)
    out = []
    for path, pkg, _, _, _, body in _py_funcs(roots, rng, 3 * n + 20):
        if not (120 <= len(body) <= MAX_CHARS - 100) or body.count("\n") < 3 or len(out) >= n:
            continue
        out.append(_mk("pycode-explain", rng.choice(_PY_EXPLAIN).format(body=body),
                       package=pkg, file=path))
    return out


# ------------------------------------------------------------------------------ debian-reference
def _html_text(s: str) -> str:
    return _clean(html.unescape(re.sub(r"<[^>]+>", "", s)))


_DEB_TITLE = ("Explain {t} on a Debian system.", "How does {t} work in Debian? Give practical commands.",
              "Write a short guide to {t} for a new Debian user.")
_DEB_CMD = ("What does the command `{c}` do? ({d})", "Explain the shell command `{c}` with an example of when to use it.",
            "On Debian, when would I run `{c}`, and what does it do?")
_DEB_PKG = ("What is the Debian package `{p}` ({d}) used for, and how do I install it?",
            "Explain what `{p}` is on Debian and give an example of using it.")


def debref(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """Debian Reference: section titles, command tables (command, effect), package tables."""
    root = _need(root or DEBREF_ROOT, "debian-reference-en")
    rng = random.Random(seed)
    cands = []
    for f in sorted(root.glob("*.en.html")):
        s = f.read_text(encoding="utf-8", errors="replace")
        for h in re.findall(r"<h[2-4][^>]*>(.*?)</h[2-4]>", s, re.S):
            t = re.sub(r"^[A-Z\d.]+\.\s*", "", _html_text(h)).strip()
            if 8 <= len(t) <= 80 and not t.endswith("?"):
                cands.append(("t", t, ""))
        for tr in re.findall(r"<tr>(.*?)</tr>", s, re.S):
            tds = [_html_text(x) for x in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            if len(tds) == 2 and 3 <= len(tds[0]) <= 60 and 8 <= len(tds[1]) <= 160 and " " in tds[0] \
                    and re.match(r"^[a-z$][\w.+-]*( |$)", tds[0]):
                cands.append(("c", tds[0], tds[1]))
            elif len(tds) >= 4 and re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", tds[0]) and tds[1].startswith("V:") \
                    and 8 <= len(tds[-1]) <= 160:
                cands.append(("p", tds[0], tds[-1]))
    cands = list(dict.fromkeys(cands))
    out = []
    for kind, a, b in _take(cands, n, rng):
        if kind == "t":
            t = a if a[:2].isupper() else a[0].lower() + a[1:]
            q = rng.choice(_DEB_TITLE).format(t=t)
        elif kind == "c":
            q = rng.choice(_DEB_CMD).format(c=a, d=b)
        else:
            q = rng.choice(_DEB_PKG).format(p=a, d=b)
        out.append(_mk("debref", q, kind=kind))
    return out


# ------------------------------------------------------------------------------ fortunes
FORTUNE_FILES = ("computers", "cookie", "debian", "definitions", "education", "food", "fortunes",
                 "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie",
                 "literature", "love", "magic", "medicine", "miscellaneous", "news", "paradoxum",
                 "people", "perl", "pets", "platitudes", "pratchett", "riddles", "science",
                 "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy")
_FORT = ("What does this saying mean? Explain it in a few sentences.\n\n\u201c{f}\u201d",
         "Explain the humour or the point of this quote:\n\n{f}",
         "Write a short story inspired by this quote:\n\n{f}",
         "Do you agree with this? Discuss it briefly.\n\n{f}",
         "Rewrite this saying in plain modern English and explain it:\n\n{f}")


def fortunes(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """Quotes and sayings from a curated list of fortune files (no ASCII art, none of the
    files with ethnic, political or drug jokes), each with a request to explain or use it."""
    root = _need(root or FORTUNE_ROOT, "fortunes")
    rng = random.Random(seed)
    cands = []
    for name in FORTUNE_FILES:
        p = root / name
        if not p.is_file():
            continue
        for e in p.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            e = e.strip("%\n ").replace("\t", "    ")
            if 40 <= len(e) <= 420 and e.count("\n") <= 8 and not re.search(r"[|\\/_]{4,}", e):
                cands.append((name, e))
    out = []
    for name, e in _take(cands, n, rng):
        form = rng.choice(_FORT)
        out.append(_mk("fortunes", form.format(f=e), file=name))
    return out


# ------------------------------------------------------------------------------ wordnet
_WN_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
_WN = ("What does the word \u201c{w}\u201d mean? Use it in two example sentences.",
       "Define \u201c{w}\u201d ({pos}) and give a synonym and an antonym if there is one.",
       "Write a short paragraph that uses the word \u201c{w}\u201d in the sense of \u201c{g}\u201d.",
       "Explain the {pos} \u201c{w}\u201d to someone learning English, with examples.",
       "What is the difference between \u201c{w}\u201d and \u201c{w2}\u201d? Give examples.")


def wordnet(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """Common words (sense tag count ≥ 3 in ``cntlist.rev``) with their gloss and a synonym."""
    root = _need(root or WORDNET_ROOT, "wordnet-base")
    rng = random.Random(seed)
    common: dict[str, int] = {}
    for line in (root / "cntlist.rev").read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            w = parts[0].split("%")[0]
            common[w] = common.get(w, 0) + int(parts[2])
    cands = []
    for suf in ("noun", "verb", "adj", "adv"):
        for line in (root / f"data.{suf}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            f = head.split()
            pos, cnt = f[2], int(f[3], 16)
            words = [f[4 + 2 * i] for i in range(cnt)]
            w = re.sub(r"\(.*\)$", "", words[0])
            if common.get(w.lower(), 0) < 3 or not re.fullmatch(r"[a-z][a-z_-]{2,}", w):
                continue
            g = _clean(gloss.split(";")[0])
            syn = [re.sub(r"\(.*\)$", "", x).replace("_", " ") for x in words[1:]
                   if re.fullmatch(r"[a-z][a-z_-]{2,}(\(.*\))?", x)]
            cands.append((w.replace("_", " "), _WN_POS.get(pos, "word"), g, syn[0] if syn else ""))
    out = []
    for w, pos, g, syn in _take(cands, n, rng):
        form = rng.choice(_WN if syn else _WN[:4])
        out.append(_mk("wordnet", form.format(w=w, pos=pos, g=g, w2=syn)))
    return out


# ------------------------------------------------------------------------------ faker
def faker_tasks(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """Requests and word problems filled in by ``faker`` (names, jobs, firms, cities, dates);
    half prose requests, half arithmetic word problems (the exact answer in ``reference``)."""
    try:
        from faker import Faker
    except ImportError:
        raise CorpusError(f"corpus faker needs {INSTALL['faker']}") from None
    fk = Faker("en_US")
    fk.seed_instance(seed)
    rng = random.Random(seed)
    out, seen, tries = [], set(), 0
    while len(out) < n and tries < 20 * n + 100:
        tries += 1
        math_ = len(out) % 2 == 1
        q, ref = (_faker_problem(fk, rng) if math_ else (_faker_request(fk, rng), None))
        if q in seen:
            continue
        seen.add(q)
        p = _mk("faker-math" if math_ else "faker-prose", q)
        out.append(Prompt(id=p.id, turns=p.turns, source=p.source, reference=ref))
    return out


def _faker_request(fk, rng: random.Random) -> str:
    k = rng.randrange(10)
    if k == 0:
        return f"Write a cover letter for {fk.name()}, a {fk.job().lower()}, applying for a job at {fk.company()} in {fk.city()}."
    if k == 1:
        return f"Plan a three-day trip to {fk.city()} for a family of {rng.randint(2, 6)} on a budget of {rng.randint(3, 40) * 100} dollars."
    if k == 2:
        return f"Draft a polite email from {fk.name()} to {fk.name()} moving our meeting to {fk.day_of_week()}, {fk.month_name()} {rng.randint(1, 28)}."
    if k == 3:
        return f"Write a short biography of a fictional {fk.job().lower()} named {fk.name()}, born in {fk.city()} in {rng.randint(1940, 2000)}."
    if k == 4:
        return f"{fk.company()} wants a slogan and a one-paragraph product description for its new service: \u201c{fk.catch_phrase()}\u201d. Write them."
    if k == 5:
        return f"Explain to a new hire at {fk.company()} what a {fk.job().lower()} does day to day."
    if k == 6:
        return f"Write a complaint letter to {fk.company()} about a late delivery to {fk.street_address()}, {fk.city()}."
    if k == 7:
        return f"Give {fk.first_name()} five practical tips for moving to {fk.city()} from {fk.country()}."
    if k == 8:
        return f"Write a job advertisement for a {fk.job().lower()} at {fk.company()}, listing duties and requirements."
    return f"Summarise the pros and cons of a career as a {fk.job().lower()} in a short, balanced paragraph."


def _faker_problem(fk, rng: random.Random) -> tuple[str, str]:
    r = rng.randint
    name, k = fk.first_name(), rng.randrange(6)
    if k == 0:
        rate, h, d = r(12, 60), r(4, 10), r(2, 6)
        return (f"{name} works as a {fk.job().lower()} for {rate} dollars an hour, {h} hours a day, "
                f"{d} days a week. How much does {name} earn in four weeks? Show your steps.", str(rate * h * d * 4))
    if k == 1:
        a, b, t = r(40, 120), r(40, 120), r(2, 6)
        return (f"Two trains leave {fk.city()} and {fk.city()} at the same time, heading towards each other "
                f"at {a} km/h and {b} km/h. They meet after {t} hours. How far apart were the cities?", str((a + b) * t))
    if k == 2:
        p, q = r(3, 25), r(2, 9)
        return (f"{fk.company()} sells notebooks at {p} dollars each and gives one free notebook for every "
                f"{q} bought. {name} pays for {q * r(2, 6)} notebooks. How many notebooks does {name} get, "
                f"and what does each one cost on average?", "")
    if k == 3:
        w, l, c = r(3, 20), r(3, 30), r(5, 40)
        return (f"{name}'s garden in {fk.city()} is {w} m wide and {l} m long. Fencing costs {c} dollars per metre. "
                f"What does it cost to fence the whole garden?", str(2 * (w + l) * c))
    if k == 4:
        s, pct = r(2, 90) * 10, r(5, 40)
        return (f"A jacket at {fk.company()} costs {s} dollars and is reduced by {pct}%. {name} also has a "
                f"coupon for 10 dollars off the reduced price. What does {name} pay?", f"{s * (100 - pct) / 100 - 10:g}")
    n1, n2 = r(2, 9), r(10, 60)
    return (f"{name} reads {n2} pages on weekdays and {n1 * 10} pages on each weekend day. How many pages "
            f"does {name} read in {r(2, 5)} weeks? Explain the calculation.", "")


# ------------------------------------------------------------------------------ mathematics_dataset
# modules that run on sympy ≥ 1.7 and numpy ≥ 2 (others call np.object / ndarray.itemset) and
# give the same problems on every run (the *_composed ones order their statements differently)
MATHDS_MODULES = (
    "algebra__linear_1d", "algebra__linear_2d", "algebra__polynomial_roots",
    "algebra__sequence_next_term", "algebra__sequence_nth_term", "arithmetic__add_or_sub",
    "arithmetic__add_or_sub_in_base", "arithmetic__add_sub_multiple", "arithmetic__div",
    "arithmetic__mixed", "arithmetic__mul", "arithmetic__mul_div_multiple",
    "arithmetic__nearest_integer_root", "arithmetic__simplify_surd", "comparison__closest",
    "comparison__kth_biggest", "comparison__pair", "comparison__sort", "measurement__conversion",
    "measurement__time", "numbers__base_conversion", "numbers__div_remainder", "numbers__gcd",
    "numbers__is_factor", "numbers__is_prime", "numbers__lcm", "numbers__list_prime_factors",
    "numbers__place_value", "numbers__round_number", "polynomials__evaluate",
    "polynomials__simplify_power", "probability__swr_p_level_set", "probability__swr_p_sequence",)
_MATH_FORMS = ("{q} Show your working.", "Solve step by step: {q}", "{q} Explain how you get the answer.",
               "{q}", "Here is a maths exercise. {q} Check your answer at the end.")


def _mathds_modules():
    """``mathematics_dataset``'s train modules by name; patches the one sympy function that
    sympy 1.7 moved (``base_solution_linear``, re-implemented as sympy ≤ 1.6 had it)."""
    try:
        dio = importlib.import_module("sympy.solvers.diophantine.diophantine")
        from sympy import sign
        from sympy.core.intfunc import igcdex
        ds = sys.modules["sympy.solvers.diophantine"]
        if not hasattr(ds, "base_solution_linear"):
            def base_solution_linear(c, a, b, t=None):
                a, b, c = dio._remove_gcd(a, b, c)
                if c == 0:
                    return ((b * (-t if b < 0 else t), -a * (-t if b < 0 else t)) if t is not None
                            else (0, 0))
                x0, y0, d = igcdex(abs(a), abs(b))
                x0, y0 = x0 * sign(a), y0 * sign(b)
                if not dio.divisible(c, d):
                    return (None, None)
                if t is None:
                    return (c * x0, c * y0)
                t = -t if b < 0 else t
                return (c * x0 + b * t, c * y0 - a * t)
            ds.base_solution_linear = base_solution_linear
        from mathematics_dataset.modules import modules
    except ImportError as e:
        raise CorpusError(f"corpus mathds needs {INSTALL['mathds']} ({e})") from None
    flat = {}

    def add(d, prefix=""):
        for k, v in d.items():
            name = f"{prefix}__{k}" if prefix else k
            if isinstance(v, dict):
                add(v, name)
            else:
                flat[name] = v
    add(modules.train(lambda r: r))
    return flat


def mathds(n: int, seed: int = 0, root: Path | None = None) -> list[Prompt]:
    """DeepMind ``mathematics_dataset`` problems (round-robin over ``MATHDS_MODULES``), each
    with a request to show the working; the generator's answer in ``reference``.

    The package draws from the global ``random`` / ``numpy`` / sympy generators (seeded here,
    restored after) and its output also depends on string hashing, so it runs in a child
    interpreter with ``PYTHONHASHSEED=0`` unless this one already has it."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        code = ("import json, sys; from dspark_viz.data.corpora import mathds; "
                f"[print(json.dumps([p.id, p.turns[0], p.reference, p.meta])) for p in mathds({int(n)}, {int(seed)})]")
        r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONHASHSEED="0"), check=False)
        if r.returncode != 0:
            raise CorpusError(f"corpus mathds failed: {_clean(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no output')}")
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]
        return [Prompt(id=i, turns=(t,), source="mathds", reference=ref, meta=m) for i, t, ref, m in rows]
    import numpy as np
    import sympy.core.random as sympy_random
    flat = _mathds_modules()
    names = [m for m in MATHDS_MODULES if m in flat]
    rs, ns, ss = random.getstate(), np.random.get_state(), sympy_random.rng.getstate()
    rng = random.Random(seed)
    try:
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        sympy_random.seed(seed)
        out, seen, tries = [], set(), 0
        while len(out) < n and tries < 3 * n + 100:
            name = names[tries % len(names)]
            tries += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pr = flat[name]()
            except Exception:  # noqa: BLE001 - a generator's own failure: skip that draw
                continue
            q = _clean(str(pr.question))
            if len(q) > 400 or q in seen:
                continue
            seen.add(q)
            text = rng.choice(_MATH_FORMS).format(q=q)
            out.append(Prompt(id=_pid("mathds", text), turns=(text,), source="mathds",
                              reference=str(pr.answer), meta={"module": name}))
    finally:
        random.setstate(rs)
        np.random.set_state(ns)
        sympy_random.rng.setstate(ss)
    return out


CORPORA = {"pyfaq": pyfaq, "pyapi": pyapi, "pyguide": pyguide, "perlfaq": perlfaq,
           "go-write": go_write, "go-explain": go_explain, "pycode-write": pycode_write,
           "pycode-explain": pycode_explain, "debref": debref, "fortunes": fortunes,
           "wordnet": wordnet, "faker": faker_tasks, "mathds": mathds}
INSTALL = {"python3.11-doc": "apt-get install python3.11-doc", "perl-doc": "apt-get install perl-doc",
           "golang-1.19-src": "apt-get install golang-1.19-src",
           "debian-reference-en": "apt-get install debian-reference-en",
           "fortunes": "apt-get install fortunes", "wordnet-base": "apt-get install wordnet-base",
           "faker": "pip install faker", "mathds": "pip install mathematics_dataset"}

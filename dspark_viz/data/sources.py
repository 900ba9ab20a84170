"""Built-in offline prompt sources: Python stdlib code, pydoc prose, arithmetic, instructions.

Scope: deterministic generators of ``Prompt`` records that need no network — functions and
docstrings parsed from the installed Python standard library, English prose from
``pydoc_data/topics.py``, programmatically generated arithmetic word problems (with their
answers as ``reference``), and a list of instructions written for this project. Each record
carries a chat form (``turns``) and a raw-text form (``text``, a prefix a base model such as
the embedded Gemma 3 270M can continue). Not here: file formats, splitting (``prompts.py``).
Never evaluation-benchmark prompts.
"""
from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
import textwrap
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Prompt:
    """One prompt: user turns (chat form), an optional raw prefix, provenance."""

    id: str
    turns: tuple[str, ...]
    source: str
    text: str | None = None  # raw-mode prefix (base models); default "\n\n".join(turns)
    reference: str | None = None  # a known answer (arithmetic), never used for training
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def raw_text(self) -> str:
        return self.text if self.text is not None else "\n\n".join(self.turns)

    def to_dict(self) -> dict:
        d = {"id": self.id, "source": self.source, "turns": list(self.turns)}
        if self.text is not None:
            d["text"] = self.text
        if self.reference is not None:
            d["reference"] = self.reference
        return d


def _pid(source: str, body: str) -> str:
    return f"{source}-{hashlib.sha1(body.encode('utf-8')).hexdigest()[:12]}"


# ------------------------------------------------------------------------------ stdlib code
def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "site-packages", "lib2to3", "tkinter", "turtledemo", "ensurepip")
    files = [p for p in root.rglob("*.py")
             if not any(part in skip or part.startswith("__") and part != "__init__.py"
                        for part in p.relative_to(root).parts[:-1])]
    return sorted(files)


def stdlib_code(n: int, seed: int = 0, *, max_chars: int = 1200) -> list[Prompt]:
    """Up to ``n`` functions with docstrings from the stdlib, in a seeded order.

    Chat form: "Explain what this function does" + its source; raw form: the signature and
    docstring, for a base model to continue with the body.
    """
    rng = random.Random(seed)
    files = _stdlib_files()
    rng.shuffle(files)
    out: list[Prompt] = []
    seen: set[str] = set()
    for path in files:
        if len(out) >= n:
            break
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = src.splitlines()
        funcs = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and ast.get_docstring(f) and f.end_lineno]
        rng.shuffle(funcs)
        for f in funcs[:3]:  # a few per module, for variety
            body = "\n".join(lines[f.lineno - 1: f.end_lineno])
            if len(body) > max_chars or len(body) < 80 or body in seen:
                continue
            body = textwrap.dedent(body)
            seen.add(body)
            doc_end = f.body[0].end_lineno - f.lineno + 1
            head = textwrap.dedent("\n".join(lines[f.lineno - 1: f.lineno - 1 + doc_end]))
            mod = path.stem
            out.append(Prompt(
                id=_pid("stdlib", body), source="stdlib",
                turns=(f"Explain what this Python function from the `{mod}` module does, "
                       f"step by step:\n\n```python\n{body}\n```",),
                text=f"# Python standard library, module {mod}\n{head}\n",
                meta={"module": mod, "name": f.name}))
            if len(out) >= n:
                break
    return out


# ------------------------------------------------------------------------------ pydoc prose
def pydoc_prose(n: int, seed: int = 0, *, max_chars: int = 1500) -> list[Prompt]:
    """Up to ``n`` paragraphs of English prose from ``pydoc_data.topics`` (the language reference)."""
    from pydoc_data.topics import topics
    rng = random.Random(seed)
    paras: list[tuple[str, str]] = []
    for name in sorted(topics):
        for block in topics[name].split("\n\n"):
            b = " ".join(s.strip() for s in block.splitlines()).strip()
            # prose only: sentences, no grammar rules / code / headings
            if 200 <= len(b) <= max_chars and b.count(".") >= 2 and "::=" not in b \
                    and not b.startswith((">>>", "*", "=")):
                paras.append((name, b))
    rng.shuffle(paras)
    out = []
    for name, b in paras[:n]:
        cut = b.find(". ") + 1 or len(b) // 2
        out.append(Prompt(id=_pid("pydoc", b), source="pydoc",
                          turns=(f"Summarise and explain the following passage from the Python "
                                 f"language reference (topic: {name}):\n\n{b}",),
                          text=b[:cut].strip() + " ", meta={"topic": name}))
    return out


# ------------------------------------------------------------------------------ arithmetic
_NAMES = ("Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivan", "Jia", "Kofi",
          "Lena", "Mateo", "Nia", "Omar", "Priya")
_ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "coins",
          "shells", "cards")


def _problem(rng: random.Random) -> tuple[str, int]:
    a, b = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    kind = rng.randrange(5)
    x, y, z = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 9)
    if kind == 0:
        return (f"{a} has {x} {item}. {b} gives {a} {y} more {item}. How many {item} does {a} "
                f"have now?", x + y)
    if kind == 1:
        x = x + y
        return (f"{a} had {x} {item} and gave {y} of them to {b}. How many {item} does {a} have "
                f"left?", x - y)
    if kind == 2:
        return (f"{a} buys {z} boxes of {item}. Each box holds {y} {item}. How many {item} does "
                f"{a} buy in total?", z * y)
    if kind == 3:
        total = y * z
        return (f"{a} shares {total} {item} equally among {z} friends. How many {item} does each "
                f"friend get?", y)
    return (f"{a} has {x} {item}, {b} has {y} more than {a}, and together they give away {z}. "
            f"How many {item} do they have left together?", x + (x + y) - z)


def arithmetic(n: int, seed: int = 0) -> list[Prompt]:
    """``n`` generated word problems; the exact answer is kept in ``reference``."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        q, ans = _problem(rng)
        if q in seen:
            continue
        seen.add(q)
        out.append(Prompt(id=_pid("arith", q), source="arithmetic",
                          turns=(q + " Explain your reasoning, then give the final answer.",),
                          text=f"Question: {q}\nAnswer: Let's think step by step.",
                          reference=str(ans)))
    return out


# ------------------------------------------------------------------------------ instructions
_TOPICS = ("the water cycle", "how a hash table works", "why the sky is blue", "compound interest",
           "the history of the printing press", "photosynthesis", "how vaccines work",
           "binary search", "the rules of chess", "how a bicycle stays upright", "recursion",
           "the difference between weather and climate", "how to brew tea", "volcanoes",
           "public-key cryptography", "the French Revolution", "how rainbows form",
           "garbage collection in programming languages", "the theory of evolution",
           "how airplanes fly", "prime numbers", "the moon's phases", "supply and demand",
           "how a compiler works", "plate tectonics", "the immune system")
_FORMS = ("Explain {t} to a curious ten-year-old.",
          "Write three short paragraphs about {t}.",
          "Give a step-by-step explanation of {t}.",
          "List five interesting facts about {t}, one per line.",
          "Write a short dialogue between a teacher and a student about {t}.",
          "Summarise {t} in exactly four sentences.")
_EXTRA = ("Write a haiku about autumn rain.", "Write a limerick about a forgetful robot.",
          "Write a Python function that checks whether a string is a palindrome, with tests.",
          "Write a polite email declining a meeting invitation.",
          "Describe a quiet morning in a small coastal town.",
          "Write a short story about a lighthouse keeper who finds a message in a bottle.",
          "Write a Python class for a stack with push, pop and peek, and explain it.",
          "Give advice to someone learning to play the guitar.",
          "Compare trains and airplanes for a 500 km trip.",
          "Write a recipe for a simple vegetable soup.")


def instructions(n: int | None = None, seed: int = 0) -> list[Prompt]:
    """Instructions written for this project (topics × forms + a few free-form ones)."""
    items = [f.format(t=t) for t in _TOPICS for f in _FORMS] + list(_EXTRA)
    rng = random.Random(seed)
    rng.shuffle(items)
    items = items if n is None else items[:n]
    return [Prompt(id=_pid("instr", s), source="instructions", turns=(s,),
                   text=f"Instruction: {s}\nResponse:") for s in items]


BUILTIN = {"stdlib": stdlib_code, "pydoc": pydoc_prose, "arithmetic": arithmetic,
           "instructions": instructions}


def builtin(name: str, n: int, seed: int = 0) -> list[Prompt]:
    """Prompts from the built-in source ``name`` (see ``BUILTIN``)."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in source {name!r} (known: {', '.join(BUILTIN)})")
    if n < 0:
        raise ValueError(f"number of prompts must be ≥ 0, got {n}")
    return BUILTIN[name](n, seed)

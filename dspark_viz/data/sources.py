"""Built-in offline prompt sources: Python stdlib code, pydoc prose, arithmetic, instructions, tasks.

Scope: deterministic generators of ``Prompt`` records that need no network — functions and
docstrings parsed from the installed Python standard library, English prose from
``pydoc_data/topics.py``, programmatically generated arithmetic word problems (with their
answers as ``reference``), a list of instructions written for this project, and ``tasks``:
code / math / prose requests generated from templates, kept apart from the project's held-out
eval prompts by a near-duplicate filter. Each record
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

from dspark_viz.eval.prompts import builtin_sets


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


# ------------------------------------------------------------------------------ tasks
# Requests in the three domains users bring (code, math, prose), written for this project as
# templates × slots, in the plain form a base model sees them in raw mode (no wrapper). They are
# kept away from the project's own held-out eval prompts by ``near_duplicate`` (tested).
_LANGS = ("Python", "Python", "Python", "JavaScript", "Go", "Java", "C++", "TypeScript")
_BEHAVIOURS = (
    "returns the n-th Fibonacci number without recursion", "counts the vowels in a string",
    "flattens a list of lists into one list", "checks whether an integer is prime",
    "returns the second largest number in a list", "converts a Roman numeral to an integer",
    "removes duplicates from a list while keeping the first occurrence of each item",
    "groups a list of words by their first letter", "computes n factorial with a loop",
    "finds the longest common prefix of several strings", "transposes a matrix",
    "parses a date written as YYYY-MM-DD into year, month and day",
    "returns the binary digits of a non-negative integer as a string",
    "splits a list into chunks of at most k items", "computes the median of a list of numbers",
    "capitalises the first letter of every word in a sentence",
    "checks whether two words are anagrams of each other", "rotates a list k places to the right",
    "computes the dot product of two equal-length vectors",
    "counts how often each word appears in a text", "converts Celsius temperatures to Fahrenheit",
    "returns all the divisors of a positive integer", "reverses the digits of an integer",
    "checks whether a year is a leap year", "finds the most common character in a string",
    "returns the running total of a list of numbers", "merges two sorted lists into one sorted list",
    "validates that a string looks like an e-mail address", "computes the power set of a small set",
    "returns the indices of two numbers in a list that add up to a target",
    "performs binary search on a sorted list", "sums the digits of a number until one digit is left",
    "converts a string to snake_case", "finds the missing number in a list containing 1..n but one",
    "implements bubble sort and returns the sorted list", "counts the set bits of an integer",
    "checks whether a sentence is a pangram", "returns the n rows of Pascal's triangle",
    "computes the Hamming distance between two strings", "compresses spaces so no two are adjacent")
_CODE_FORMS = ("Write a {lang} function that {b}.",
               "Write a {lang} function that {b}. Include a short docstring or comment and two examples.",
               "Show how to write a {lang} function that {b}, then explain how it works line by line.",
               "Write unit tests for a {lang} function that {b}.",
               "What is an efficient way to write a function that {b}? Give the code in {lang} and its complexity.")
_SQL = ("lists the five customers who placed the most orders",
        "counts the orders placed in each month of the year 2023",
        "finds products that were never ordered", "returns the average order value per country",
        "lists employees who earn more than their manager",
        "finds duplicate e-mail addresses in a users table",
        "returns the three most recent orders of every customer",
        "computes the total revenue of each product category")
_SCENES = ("a harbour at dawn when the fishing boats return", "a library five minutes before closing",
           "a mountain village after the first snow", "a train station during a summer storm",
           "a kitchen on the morning of a big family lunch", "a city park on a Sunday afternoon",
           "a desert campsite under the stars", "an old bookshop in a narrow street",
           "a school playground at the end of the last day of term", "a ferry crossing a windy lake",
           "a night market in a busy city", "a garden after a week of rain",
           "a small airport late at night", "a football stadium before kick-off",
           "a bakery at four in the morning", "a snowy forest path at dusk")
_CONCEPTS = ("how the heart pumps blood", "why leaves change colour in autumn", "what inflation is",
             "how a refrigerator keeps food cold", "why we have seasons", "how bees make honey",
             "what a black hole is", "how the internet sends a message from one computer to another",
             "why the ocean is salty", "how a battery stores energy", "what DNA does",
             "how clouds form", "why ice floats on water", "how a camera takes a picture",
             "what a budget is and why families make one", "how earthquakes happen",
             "why we need sleep", "how a solar panel makes electricity")
_AUDIENCES = ("a child of eight", "a curious teenager", "an adult with no science background",
              "a new employee on their first day", "a grandparent who has never used a smartphone")
_LETTERS = (("a student", "their former teacher", "the exam they finally passed"),
            ("a tenant", "the landlord", "a broken heater"),
            ("a traveller", "a hotel manager", "a lost suitcase"),
            ("a volunteer", "a local newspaper", "a beach clean-up"),
            ("a child", "an astronaut", "what life is like in space"),
            ("a runner", "a friend", "finishing a first marathon"),
            ("a cook", "a food critic", "a disappointing review"),
            ("a gardener", "a neighbour", "a tree that blocks the sunlight"))
_GENRES = ("science-fiction", "adventure", "ghost", "detective", "comic", "fairy-tale")
_PLACES = ("on a space station orbiting Mars", "in a flooded city", "in a castle with one tower",
           "on a cargo ship in the Arctic", "in a museum after dark", "in a village where it never stops raining",
           "at a chess tournament", "in an underground bakery")
_ISSUES = ("banning cars from city centres", "school uniforms", "working from home",
           "paying people to recycle", "a tax on sugary drinks", "homework for young children",
           "building more nuclear power plants", "free public transport")
_THINGS = ("a folding bicycle", "a cheap electric kettle", "a tent for two people",
           "a pair of noise-cancelling headphones", "a second-hand laptop", "a raincoat for cycling")
_ANIMALS = ("a tortoise", "a hare", "an owl", "a mouse", "a lion", "an ant", "a goat", "a heron",
            "a bear", "a squirrel")
_LESSONS = ("patience", "honesty", "to listen before speaking", "that small help matters",
            "to plan ahead", "that pride comes before a fall")
_ACTIVITIES = ("saving money on groceries", "learning a new language as an adult",
               "sleeping better", "starting to run", "keeping a tidy desk", "studying for exams",
               "cooking for one person", "travelling with a small backpack")
_PROOFS = ("the product of two odd numbers is odd", "there are infinitely many prime numbers",
           "the angles of a triangle add up to 180 degrees", "n³ − n is divisible by 6 for every integer n",
           "the sum of two even numbers is even", "a number is divisible by 3 when the sum of its digits is",
           "the square of an even number is divisible by 4", "1 + 2 + … + n = n(n + 1)/2")


def _code_task(rng: random.Random) -> str:
    if rng.random() < 0.12:
        return f"Write an SQL query that {rng.choice(_SQL)}, and explain each clause."
    return rng.choice(_CODE_FORMS).format(lang=rng.choice(_LANGS), b=rng.choice(_BEHAVIOURS))


def _math_task(rng: random.Random) -> str:
    r = rng.randint
    kind = rng.randrange(12)
    if kind == 0:
        a, x, b = r(2, 9), r(-9, 12), r(-20, 20)
        return f"Find x if {a}x {'+' if b >= 0 else '−'} {abs(b)} = {a * x + b}, and check the answer."
    if kind == 1:
        p, q = r(-9, 9), r(-9, 9)
        return (f"Factor x² {'+' if p + q <= 0 else '−'} {abs(p + q)}x {'+' if p * q >= 0 else '−'} "
                f"{abs(p * q)} and use the factors to write down its roots.")
    if kind == 2:
        return f"What is {r(5, 95)}% of {r(20, 900)}? Then increase that result by {r(5, 50)}% and explain each step."
    if kind == 3:
        a, b = r(3, 40), r(3, 40)
        return f"A rectangle measures {a} cm by {b} cm. Compute its area, its perimeter and the length of its diagonal."
    if kind == 4:
        a, d, n = r(1, 20), r(2, 9), r(8, 30)
        return f"An arithmetic sequence starts at {a} and goes up by {d} each time. Find its {n}th term and the sum of its first {n} terms."
    if kind == 5:
        n = r(3, 8)
        return f"A fair coin is tossed {n} times. What is the probability of getting exactly {r(1, n - 1)} heads?"
    if kind == 6:
        return f"Find the least common multiple of {r(6, 90)} and {r(6, 90)} from their prime factorisations."
    if kind == 7:
        a, b, n, m = r(2, 9), r(2, 9), r(3, 6), r(2, 3)
        return f"Differentiate g(x) = {a}x^{n} + {b}x^{m} − {r(1, 9)}x and evaluate g′(2)."
    if kind == 8:
        d, t = r(60, 600), r(2, 8)
        return f"A cyclist covers {d} km in {t} hours. What is the average speed in km/h and in metres per second?"
    if kind == 9:
        b, d = r(2, 12), r(2, 12)
        return f"Add {r(1, b - 1)}/{b} and {r(1, d - 1)}/{d}, write the result in lowest terms and as a decimal."
    if kind == 10:
        s, t = r(4, 40), r(0, 20)
        return f"Solve the system x + y = {s + t}, x − y = {s - t} and explain the method you used."
    if kind == 11:
        return (f"If you invest {r(2, 50) * 100} euros at {r(2, 9)}% interest compounded once a year, "
                f"how much will you have after {r(2, 12)} years?")
    return ""


def _prose_task(rng: random.Random) -> str:
    kind = rng.randrange(10)
    c = rng.choice
    if kind == 0:
        return f"Describe {c(_SCENES)}, using all five senses."
    if kind == 1:
        return f"Explain {c(_CONCEPTS)} to {c(_AUDIENCES)}."
    if kind == 2:
        who, to, about = c(_LETTERS)
        return f"Write a short letter from {who} to {to} about {about}."
    if kind == 3:
        return f"Write the first paragraph of a {c(_GENRES)} story set {c(_PLACES)}."
    if kind == 4:
        return f"Weigh the pros and cons of {c(_ISSUES)} in a short, balanced essay."
    if kind == 5:
        return f"Write a review of {c(_THINGS)} after a month of daily use."
    if kind == 6:
        a1, a2 = rng.sample(_ANIMALS, 2)
        return f"Write a fable in which {a1} and {a2} learn {c(_LESSONS)}."
    if kind == 7:
        return f"List {rng.randint(3, 6)} tips for {c(_ACTIVITIES)} and say why each one helps."
    if kind == 8:
        return f"Prove that {c(_PROOFS)}."
    return f"Write a diary entry about {c(_SCENES)}."


def _shingles(text: str, k: int) -> set:
    w = [t for t in "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()]
    return {tuple(w[i:i + k]) for i in range(len(w) - k + 1)}


class NearDuplicateGuard:
    """``near_duplicate`` against a fixed list of texts, their shingles computed once.

    ``guard(text)`` is True when ``text`` is too close to one of the texts: a shared run of
    k = 6 words, word-trigram sets overlapping more than ``max_jaccard`` (Jaccard), or a shared
    trigram with two numbers in it (the same equation or figures). Generic openings ("write a
    Python function") are allowed."""

    def __init__(self, others, *, k: int = 6, max_jaccard: float = 0.2) -> None:
        self.k, self.max_jaccard = k, max_jaccard
        self._others = [(_shingles(o, k), _shingles(o, 3)) for o in others]

    def __call__(self, text: str) -> bool:
        mine_k, mine3 = _shingles(text, self.k), _shingles(text, 3)
        for ok, o3 in self._others:
            if mine_k & ok:
                return True
            shared = mine3 & o3
            if shared and len(shared) / len(mine3 | o3) > self.max_jaccard:
                return True
            if any(sum(any(ch.isdigit() for ch in w) for w in g) >= 2 for g in shared):
                return True
        return False


def near_duplicate(text: str, others: list[str], *, k: int = 6, max_jaccard: float = 0.2) -> bool:
    """True when ``text`` is too close to one of ``others`` (``NearDuplicateGuard``): the guard
    between generated training prompts and held-out eval prompts."""
    return NearDuplicateGuard(others, k=k, max_jaccard=max_jaccard)(text)


def tasks(n: int, seed: int = 0) -> list[Prompt]:
    """``n`` code / math / prose requests (a third each, in turn), unique, none near any of the
    project's held-out eval prompts (``dspark_viz.eval.prompts``)."""
    guard = NearDuplicateGuard([t for ts in builtin_sets().values() for t in ts])
    rng = random.Random(seed)
    makers = (("code", _code_task), ("math", _math_task), ("prose", _prose_task))
    out, seen, tries = [], set(), 0
    while len(out) < n:
        tries += 1
        if tries > 50 * (n + 10):
            raise ValueError(f"the task templates give only {len(out)} distinct prompts, not {n}")
        dom, make = makers[len(out) % 3]
        q = make(rng)
        if q in seen or guard(q):
            continue
        seen.add(q)
        out.append(Prompt(id=_pid("task", q), source=f"tasks-{dom}", turns=(q,)))
    return out


BUILTIN = {"stdlib": stdlib_code, "pydoc": pydoc_prose, "arithmetic": arithmetic,
           "instructions": instructions, "tasks": tasks}


def builtin(name: str, n: int, seed: int = 0) -> list[Prompt]:
    """Prompts from the built-in source ``name`` (see ``BUILTIN``)."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in source {name!r} (known: {', '.join(BUILTIN)})")
    if n < 0:
        raise ValueError(f"number of prompts must be ≥ 0, got {n}")
    return BUILTIN[name](n, seed)

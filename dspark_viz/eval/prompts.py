"""Evaluation prompts: the project's built-in sets and a reader for DeepSpec-style JSONL files.

Scope: three small hand-written prompt sets (code, math, prose) used by ``dspark-viz eval`` and
``dspark-viz calibrate`` when no file is given, and ``read_turns_jsonl`` for eval sets in the
DeepSpec layout (one JSON object per line with a non-empty string list ``turns``; the first
turn is the prompt), with line-numbered one-line errors. No tokenisation, no models.

Disjointness: these prompts were written for this module. The training toolchain draws on the
Python standard library (source and docstrings), programmatically generated arithmetic word
problems and its own instruction templates; the tasks below are different in kind (named
small programs to write, algebra/geometry/probability/number-theory questions with symbols,
descriptive and explanatory prose on concrete scenes) and ``test_eval`` checks that no prompt
here shares its opening or closing 30 characters with the toolchain's sources
(``dspark_viz/data``) or appears in the stdlib prose corpus (``pydoc_data``).
"""
from __future__ import annotations

import os
from pathlib import Path

from dspark_viz.config import ConfigError
from dspark_viz.io import read_jsonl

CODE = (
    "Write a Python function `run_length_encode(s)` that turns 'aaabccdddd' into "
    "[('a', 3), ('b', 1), ('c', 2), ('d', 4)], and its inverse `run_length_decode(pairs)`.",
    "Implement a class `LRUCache` in Python with a fixed capacity and O(1) `get(key)` and "
    "`put(key, value)` methods, evicting the least recently used entry when full.",
    "Write a function `is_balanced(expr)` that returns True when every bracket in a string of "
    "(), [] and {} is closed in the right order, and explain its running time.",
    "Write a Python generator `sliding_max(values, k)` that yields the maximum of every window of "
    "k consecutive numbers in a list, using a deque so the whole pass is linear.",
    "Given a grid of 0s and 1s as a list of lists, write a function that counts the islands of "
    "1s connected horizontally or vertically, using breadth-first search.",
    "Write a SQL query that returns, for each department, the employee with the highest salary, "
    "from tables employees(id, name, salary, dept_id) and departments(id, name).",
    "Write a small command-line tool in Python that reads a CSV file of expenses with columns "
    "date, category, amount and prints the total spent per category, largest first.",
    "Implement Dijkstra's shortest-path algorithm in Python for a graph given as a dictionary "
    "mapping each node to a list of (neighbour, weight) pairs, returning the distance table.",
    "Write a JavaScript function `debounce(fn, waitMs)` that delays calling fn until waitMs "
    "milliseconds have passed without another call, and show how to use it on a search box.",
    "Given a 9x9 Sudoku board as a list of strings with '.' for empty cells, write Python code "
    "that reports which rows, columns or 3x3 boxes break the rules.",
    "Write a Rust function that reverses the words of a sentence in place without allocating a "
    "second string, keeping the spaces between words as they were.",
    "Write a Python function `merge_intervals(intervals)` that merges overlapping closed "
    "intervals such as [[1, 3], [2, 6], [8, 10]] and returns them sorted.",
)

MATH = (
    "Solve for x: 3(x − 4) + 5 = 2x + 7. Show each step.",
    "A right triangle has legs of length 9 and 12. Find the hypotenuse, the area, and the radius "
    "of the circle inscribed in the triangle.",
    "Prove that the sum of the first n odd numbers is n squared.",
    "Two fair six-sided dice are rolled. What is the probability that the sum is at least 10? "
    "Explain by counting outcomes.",
    "Find all real solutions of x² − 5x + 6 = 0 and verify them by substitution.",
    "What is the greatest common divisor of 462 and 1071? Use the Euclidean algorithm and write "
    "out every division.",
    "A geometric sequence starts 3, 6, 12, … What is the sum of its first ten terms?",
    "Differentiate f(x) = x³·sin(x) and find the slope of the tangent line at x = 0.",
    "How many different ways can the letters of the word LEVEL be arranged? Explain why some "
    "arrangements are counted only once.",
    "Show that √2 is irrational using a proof by contradiction.",
    "A circle has the equation x² + y² − 6x + 8y = 0. Find its centre and radius by completing "
    "the square.",
    "Compute the integral of 2x·e^(x²) from 0 to 1 using a substitution, and give a decimal "
    "approximation.",
)

PROSE = (
    "Describe a lighthouse keeper's morning on a foggy day, from waking up to the first ship "
    "passing the rocks.",
    "Write a short letter from a grandmother to her grandson who has just moved to a new city "
    "for his first job.",
    "Explain to a ten-year-old why the sky is blue during the day and red at sunset.",
    "Write the opening paragraph of a mystery story set in a night train crossing the Alps.",
    "Give three practical tips for keeping houseplants alive in a dark apartment, with a "
    "sentence of explanation for each.",
    "Summarise the main arguments for and against a four-day working week in a balanced way.",
    "Describe the smell, sound and colours of a busy fruit market in the early morning.",
    "Write a product review of a pair of hiking boots after a week of walking in the rain.",
    "Explain how a bill becomes a law in a parliamentary democracy, in plain words.",
    "Tell a short fable about a fox who learns to share with a crow, ending with its moral.",
    "Write a friendly email to a neighbour asking them to water your garden while you travel.",
    "Describe what it feels like to learn to ride a bicycle as an adult.",
)

BUILTIN: dict[str, tuple[str, ...]] = {"code": CODE, "math": MATH, "prose": PROSE}
MAX_JSONL_BYTES = 256 * 1024 * 1024


def builtin_sets(names: str | None = None) -> dict[str, list[str]]:
    """``"code,math"`` → {"code": [...], "math": [...]} (None or "all" → every set)."""
    if names is None or names.strip() in ("", "all"):
        return {k: list(v) for k, v in BUILTIN.items()}
    out = {}
    for n in (x.strip() for x in names.split(",")):
        if n not in BUILTIN:
            raise ConfigError(f"unknown built-in prompt set {n!r} (choose from {', '.join(BUILTIN)})")
        out[n] = list(BUILTIN[n])
    return out


class EvalDataError(ConfigError):
    """An eval set file is missing, too large or malformed; one line naming the file and line."""


def read_turns_jsonl(path: str | os.PathLike) -> list[str]:
    """First turn of every ``{"turns": [str, …]}`` line; blank lines skipped.

    Read through ``io.read_jsonl``: errors name the file and line (not UTF-8, not JSON, not an
    object, ``turns`` missing or not a non-empty list of strings, an empty first turn; a file
    holding no prompt).
    """
    out: list[str] = []
    for n, row in read_jsonl(path, max_bytes=MAX_JSONL_BYTES, what="eval file",
                             error=EvalDataError, allow_empty=True):
        turns = row.get("turns")
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise EvalDataError(f"{path}:{n}: 'turns' must be a non-empty list of strings")
        if not turns[0].strip():
            raise EvalDataError(f"{path}:{n}: the first turn is empty")
        out.append(turns[0])
    if not out:
        raise EvalDataError(f"eval file {path} holds no prompts")
    return out


def dataset_name(path: str | os.PathLike) -> str:
    """Name a JSONL eval set after its file (``mt_bench.jsonl`` → ``mt_bench``)."""
    return Path(path).name.removesuffix(".jsonl").removesuffix(".json") or "data"


__all__ = ["CODE", "MATH", "PROSE", "BUILTIN", "EvalDataError", "builtin_sets", "read_turns_jsonl",
           "dataset_name"]

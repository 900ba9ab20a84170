"""Integration on the embedded Gemma 3 270M: greedy speculative output equals plain decoding."""
from __future__ import annotations

import pytest

from dspark_viz.config import DecodeConfig
from dspark_viz.decoding.engine import SpecSession, plain_decode
from dspark_viz.drafter.registry import resolve_drafter

pytestmark = pytest.mark.slow


def test_embedded_greedy_lossless(embedded_target):
    T = embedded_target
    assert (T.family, T.num_layers, T.hidden_size, T.vocab_size) == ("gemma3", 18, 640, 262144)
    assert T.mask_token_id == 4
    drafter, label = resolve_drafter("default", T)
    cfg = DecodeConfig(gamma=4, max_new_tokens=12)
    prompt = "Question: What is 12 + 30?\nAnswer:"
    ref = plain_decode(T, prompt, cfg)
    s = SpecSession(T, drafter, cfg, drafter_name=label)
    tr = s.run(prompt)
    assert s.generated == ref
    r = tr.rounds[0]
    assert len(r.draft) == 4 and r.draft[0].corrected_topk and r.verify
    assert tr.summary.target_forwards == 1 + len(tr.rounds)


def test_shipped_drafter_speculates(embedded_target):
    """The shipped weights load with their STS calibration and actually get drafts accepted."""
    T = embedded_target
    drafter, label = resolve_drafter("default", T)
    assert label.startswith("shipped:") and drafter.calibration is not None
    assert len(drafter.calibration) == drafter.cfg.block_size
    prompt = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    tr = SpecSession(T, drafter, DecodeConfig(gamma=7, max_new_tokens=48), drafter_name=label).run(prompt)
    rand, _ = resolve_drafter("random", T)
    tr_rand = SpecSession(T, rand, DecodeConfig(gamma=7, max_new_tokens=48)).run(prompt)
    assert tr.summary.accepted >= 8 and tr.summary.tau_mean > tr_rand.summary.tau_mean + 0.2

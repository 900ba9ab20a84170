"""Shared fixtures: tiny random targets (fast) and the embedded Gemma 3 270M (slow)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_qwen():
    from dspark_viz.targets import tiny_target
    return tiny_target(family="qwen3", vocab_size=320, seed=0)


@pytest.fixture(scope="session")
def tiny_gemma():
    from dspark_viz.targets import tiny_target
    return tiny_target(family="gemma3", vocab_size=320, seed=1)


@pytest.fixture(params=["qwen3", "gemma3"])
def tiny_target_any(request, tiny_qwen, tiny_gemma):
    return tiny_qwen if request.param == "qwen3" else tiny_gemma


def make_drafter(target, markov_type="vanilla", seed=0, **kw):
    from dspark_viz.drafter.model import DSparkDrafter, config_for_target
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DSparkDrafter(config_for_target(target, preset="tiny", markov_type=markov_type,
                                               **kw)).eval()


@pytest.fixture(scope="session")
def embedded_target():
    from dspark_viz.targets import load_target
    return load_target("embedded", device="cpu")

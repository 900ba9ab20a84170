"""Shared fixtures: tiny random targets (fast) and the embedded Gemma 3 270M (slow)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models: one thread is fastest, and immune to a busy machine


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


class OracleDrafter:
    """Test double with the drafter's interface whose proposals come from the target itself.

    ``noise = 0``: q_k is exactly the target's decoding distribution along the sampled prefix
    (a perfect drafter: everything accepted); ``adversarial``: the least likely token (nothing
    accepted). ``noise > 0``: Gaussian noise (from the
    explicit generator) is added to the target logits, and — when a real Markov head is
    attached and ``use_markov`` is on — its bias too, so drafts are partly rejected and the
    residual path is exercised. Greedy at T = 0 like the real drafter.
    """

    def __new__(cls, target, base_drafter, *, noise: float = 0.0, adversarial: bool = False):
        from dspark_viz.drafter.model import Proposal

        class _Oracle(type(base_drafter)):
            def propose(self, target_, cache, anchor, *, gamma, temperature, top_k=0,
                        top_p=1.0, gen=None, use_markov=True, candidates=0):
                from dspark_viz.sampling import draw, warp
                hist = list(self.session.prompt_ids) + list(self.session.generated)
                toks, qs, bases, biases = [], [], [], []
                state = None
                prev = anchor
                for _ in range(gamma):
                    with torch.inference_mode():
                        z = target_.model(torch.tensor([hist], device=target_.device)).logits[0, -1].float().cpu()
                    if self.adversarial:  # propose the target's least likely token
                        z = -z
                    if self.noise:
                        z = z + self.noise * torch.randn(z.shape, generator=gen)
                    base = z.clone()
                    if use_markov and self.markov is not None and self.noise:
                        with torch.inference_mode():
                            dev = next(self.parameters()).device
                        b, state = self.markov.step(prev.to(dev), torch.zeros(1, self.cfg.hidden_size, device=dev), state
                                                    if state is not None else self.markov.init_state(1, dev, torch.float32))
                        b = b.float().cpu()
                        z = z + 20.0 * b[0]
                        biases.append(b[0])
                    q = warp(z.unsqueeze(0), temperature=temperature, top_k=top_k, top_p=top_p)
                    x = draw(q, gen)
                    toks.append(int(x[0])); qs.append(q[0]); bases.append(base)
                    hist.append(int(x[0])); prev = x
                dev = target_.device  # the engine keeps proposals on the target's device
                conf = torch.full((1, gamma), 2.0, device=dev) if self.confidence is not None else None
                return Proposal(tokens=torch.tensor([toks], device=dev), q=torch.stack(qs).unsqueeze(0).to(dev),
                                base_logits=torch.stack(bases).unsqueeze(0).to(dev), base_ids=None, cand=None,
                                bias=torch.stack(biases).unsqueeze(0).to(dev) if biases else None,
                                conf_logit=conf)

        obj = _Oracle(base_drafter.cfg)
        obj.load_state_dict(base_drafter.state_dict())
        obj.noise = noise
        obj.adversarial = adversarial
        obj.session = None
        return obj.to(next(base_drafter.parameters()).device).eval()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where browser tests save screenshots: $DSPARK_VIZ_ARTIFACTS, else a tmp dir."""
    d = os.environ.get("DSPARK_VIZ_ARTIFACTS")
    p = Path(d) if d else tmp_path_factory.mktemp("screenshots")
    p.mkdir(parents=True, exist_ok=True)
    return p

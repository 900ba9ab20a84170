"""DeepSpec's checkpoint format: load DeepSeek's released DSpark / DFlash drafters, write ours.

Scope: recognising a DeepSpec drafter directory (``config.json`` whose ``architectures`` names a
DeepSpec drafter class, ``Qwen3DSparkModel`` or ``Gemma4DSparkModel``), mapping tensor names
both ways, checking the stored ``embed_tokens`` / ``lm_head`` (and, for Gemma 4, the final
logit soft-cap) against the target's (then dropping them: we use the target's own), loading, and
writing one of our full-vocabulary drafters in the same layout (``save_deepspec``). The config
keys are ``deepspec_config``'s. Every malformed input is one line of ``DrafterError``.

The format, as DeepSpec's ``save_pretrained`` writes it (``deepspec/modeling/dspark/{qwen3,gemma4}``):
one ``config.json`` + ``model.safetensors`` (bf16). Tensors: ``embed_tokens``, ``lm_head``,
``fc``, ``hidden_norm``, ``norm``, ``layers.N.{self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm,
mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}`` (the same names as ours;
Gemma 4 adds ``pre/post_feedforward_layernorm`` and the ``layer_scalar`` buffer, and has no
``v_proj`` when K = V), ``markov_head.markov_w1`` / ``markov_w2`` (+ the head kind's own, e.g.
``gate_proj``, ``joint_proj``: each Markov class names them in ``deepspec_names``) and
``confidence_head.proj``. A DFlash ablation is the same class with ``markov_rank`` 0 and no
confidence head.

The Markov stage of an imported drafter runs over the whole vocabulary by default, as DeepSpec's
evaluator does — only then are the drafts DeepSpec's own (``load_deepspec``'s
``markov_candidates=0``, kept on ``DSparkDrafter.markov_candidates``). Restricting it to the
top-K base logits is an explicit choice: ``markov_candidates=K`` (lossless still, but drafts
can differ from DeepSpec's when the bias lifts a token from outside the top K), or ``None`` to
follow ``DecodeConfig.draft_candidates`` like our own drafters.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dspark_viz.drafter.deepspec_config import (DEEPSPEC_CLASSES, drafter_config, export_config,
                                                softcap_of)
from dspark_viz.drafter.model import (MAX_CONFIG_BYTES, DrafterError, DSparkDrafter,
                                      check_compatible, read_safetensors)
from dspark_viz.io import read_json_capped, write_text_atomic

__all__ = ["deepspec_class", "load_deepspec", "save_deepspec", "export_problem", "tensor_names",
           "drafter_config", "export_config", "DEEPSPEC_CLASSES", "EXPORT_FAMILIES", "WHOLE_VOCAB"]

WHOLE_VOCAB = 0  # ``markov_candidates`` of an import by default: the whole vocabulary, DeepSpec's
EXPORT_FAMILIES = tuple(DEEPSPEC_CLASSES.values())  # the families DeepSpec's classes serve


def deepspec_class(path: str | Path) -> str | None:
    """The DeepSpec drafter class named by ``path/config.json``, or None (not DeepSpec's)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        raw = read_json_capped(cfg, MAX_CONFIG_BYTES, what="drafter config", error=DrafterError)
    except DrafterError:
        return None  # our own loader reports what is wrong with it
    archs = raw.get("architectures") if isinstance(raw, dict) else None
    if isinstance(archs, list) and archs and archs[0] in DEEPSPEC_CLASSES:
        return archs[0]
    return None


# ----------------------------------------------------------------------------- tensor names
def tensor_names(model: DSparkDrafter) -> dict[str, str]:
    """Our state-dict key → DeepSpec's, for every persistent tensor of ``model``."""
    sub = {"w1": "markov_w1", "w2": "markov_w2"}
    if model.markov is not None:
        sub |= type(model.markov).deepspec_names

    def theirs(k: str) -> str:
        if k.startswith("markov."):
            first, rest = k[len("markov."):].split(".", 1)
            return f"markov_head.{sub.get(first, first)}.{rest}"
        if k.startswith("confidence."):
            return "confidence_head." + k[len("confidence."):]
        return k
    return {k: theirs(k) for k in model.state_dict()}


SHARED = ("embed_tokens.weight", "lm_head.weight")  # the target's, stored in DeepSpec's file
IGNORED_PREFIXES = ("rotary_emb.",)  # a non-persistent buffer some writers still store


def target_tensors(target) -> dict[str, torch.Tensor]:
    """The target's input embedding and LM head weights, under DeepSpec's names."""
    return {"embed_tokens.weight": target.model.get_input_embeddings().weight,
            "lm_head.weight": target.model.get_output_embeddings().weight}


def check_shared(sd: dict[str, torch.Tensor], target, where: str) -> None:
    """Refuse a drafter whose stored embed_tokens / lm_head are not the target's (exactly, in
    the checkpoint's dtype)."""
    for name, mine in target_tensors(target).items():
        if name not in sd:
            raise DrafterError(f"{where}: {name} is missing")
        v = sd[name]
        if tuple(v.shape) != tuple(mine.shape) or not torch.equal(v, mine.detach().to("cpu", v.dtype)):
            shape = "" if tuple(v.shape) == tuple(mine.shape) else f", {tuple(v.shape)} vs {tuple(mine.shape)}"
            raise DrafterError(f"drafter was trained for a different target: its {name.split('.')[0]} "
                               f"differs from {target.name}'s{shape}")


# ----------------------------------------------------------------------------- load
def check_softcap(raw: dict, target, where: str) -> None:
    """DeepSpec's Gemma 4 ``compute_logits`` soft-caps the draft logits with the config's
    ``final_logit_softcapping``; we apply the target's. Refuse a checkpoint whose cap differs."""
    mine = softcap_of(raw)
    theirs = float(target.softcap) if target.softcap else None
    if (raw.get("architectures") or [None])[0] == "Gemma4DSparkModel" and mine != theirs:
        raise DrafterError(f"{where}: final_logit_softcapping {mine!r} differs from {target.name}'s {theirs!r}")


def load_deepspec(path: str | Path, target, *, device=None, dtype=None,
                  markov_candidates: int | None = WHOLE_VOCAB) -> DSparkDrafter:
    """Load a DeepSpec drafter directory for ``target`` (embed_tokens/lm_head checked, then
    dropped); weights go straight to the target's device and dtype (no random init).

    ``markov_candidates``: 0 (the default) runs the Markov stage over the whole vocabulary —
    DeepSpec's drafts exactly, whatever ``DecodeConfig.draft_candidates`` says; K > 0 restricts it
    to the top-K base logits on purpose; None follows ``DecodeConfig.draft_candidates``."""
    if markov_candidates is not None and (isinstance(markov_candidates, bool) or
                                          not isinstance(markov_candidates, int) or markov_candidates < 0):
        raise DrafterError(f"markov_candidates must be None or an integer ≥ 0 (0 = whole vocabulary), "
                           f"got {markov_candidates!r}")
    path = Path(path)
    cfg_file, w_file = path / "config.json", path / "model.safetensors"
    if not w_file.is_file():
        raise DrafterError(f"{path} has no model.safetensors (a DeepSpec drafter has one file)")
    raw = read_json_capped(cfg_file, MAX_CONFIG_BYTES, what="drafter config", error=DrafterError)
    if not isinstance(raw, dict):
        raise DrafterError(f"{cfg_file} is not a JSON object")
    cfg = drafter_config(raw, str(cfg_file), target_name=target.name)
    check_compatible(cfg, target)  # family, sizes: the plainest reason first
    check_softcap(raw, target, str(cfg_file))
    sd = read_safetensors(w_file)
    check_shared(sd, target, str(w_file))
    device = torch.device(device) if device is not None else target.device
    with torch.device("meta"):
        model = DSparkDrafter(cfg)
    model = model.to_empty(device=device).to(dtype or target.dtype)
    model.draft_vocab = torch.arange(cfg.vocab_size, device=device)  # non-persistent
    names = tensor_names(model)
    back = {v: k for k, v in names.items()}
    kept = {k: v for k, v in sd.items() if k not in SHARED and not k.startswith(IGNORED_PREFIXES)}
    ours = {back[k]: v for k, v in kept.items() if k in back}
    extra = [k for k in kept if k not in back]
    if extra:
        raise DrafterError(f"{w_file}: tensors a {cfg.markov_type} DSpark drafter does not have: {', '.join(sorted(extra)[:3])}")
    model.load_checked(ours, str(w_file))
    model.read_extras(path)  # DeepSpec trains on 1 − TV ("tv"); calibration.json is ours, if any
    model.markov_candidates = markov_candidates
    return model.eval()


# ----------------------------------------------------------------------------- export
def export_problem(drafter: DSparkDrafter, target) -> str | None:
    """Why ``drafter`` cannot be written in DeepSpec's layout for ``target`` (None: it can)."""
    c = drafter.cfg
    if c.restricted:
        return (f"the drafter has a restricted draft vocabulary ({c.draft_vocab_size} of {c.vocab_size} ids); "
                "DeepSpec's format stores full-vocabulary heads only")
    if c.family not in EXPORT_FAMILIES:
        return f"DeepSpec's format holds Qwen3 and Gemma 4 drafters; this one is for a {c.family} target"
    if target.family != c.family:
        return f"the drafter is for a {c.family} target, {target.name} is {target.family}"
    return None


def save_deepspec(drafter: DSparkDrafter, target, dst: str | Path) -> Path:
    """Write ``drafter`` in DeepSpec's layout (bf16, the target's embed_tokens and lm_head)."""
    problem = export_problem(drafter, target)
    if problem:
        raise DrafterError(f"cannot export in DeepSpec's format: {problem}")
    check_compatible(drafter.cfg, target)
    dst = Path(dst)
    names = tensor_names(drafter)
    sd = {names[k]: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in drafter.state_dict().items()}
    sd |= {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in target_tensors(target).items()}
    drafter.write_files(dst, sd)
    write_text_atomic(dst / "config.json", export_config(drafter, target))
    return dst

"""DeepSpec's checkpoint format: load DeepSeek's released DSpark / DFlash drafters, write ours.

Scope: recognising a DeepSpec drafter directory (``config.json`` whose ``architectures`` names a
DeepSpec drafter class), mapping its config (a copy of the target's Hugging Face config plus the
DSpark keys) to a ``DrafterConfig``, mapping tensor names both ways, checking the stored
``embed_tokens`` / ``lm_head`` against the target's (then dropping them: we use the target's
own), and writing one of our full-vocabulary drafters in the same layout (``save_deepspec``).
Every malformed input is one line of ``DrafterError``.

The format, as DeepSpec's ``save_pretrained`` writes it (``deepspec/modeling/dspark/qwen3``):
one ``config.json`` + ``model.safetensors`` (bf16). Tensors: ``embed_tokens``, ``lm_head``,
``fc``, ``hidden_norm``, ``norm``, ``layers.N.{self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm,
mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}`` (the same names as ours),
``markov_head.markov_w1`` / ``markov_w2`` (+ the head kind's own, e.g. ``gate_proj``,
``joint_proj``: each Markov class names them in ``deepspec_names``) and
``confidence_head.proj``. A DFlash ablation is the same class with ``markov_rank`` 0 and no
confidence head. Imported drafters run the Markov stage over the whole vocabulary, as DeepSpec's
evaluator does (``DSparkDrafter.whole_vocab_markov``).

Supported: Qwen3 drafters (default RoPE, no attention bias, full attention). Gemma 4 drafters
are recognised and refused with the reason (their layers differ from every family we build).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from dspark_viz.config import ConfigError, DrafterConfig
from dspark_viz.drafter.markov import MARKOV_HEADS, NO_HEAD
from dspark_viz.drafter.model import (MAX_CONFIG_BYTES, DrafterError, DSparkDrafter,
                                      check_compatible, read_safetensors)
from dspark_viz.io import read_json_capped, write_text_atomic

# DeepSpec's drafter classes (``architectures[0]``) → the target family they are built for.
DEEPSPEC_CLASSES = {"Qwen3DSparkModel": "qwen3", "Qwen3DFlashModel": "qwen3",
                    "Gemma4DSparkModel": "gemma4", "Gemma4DFlashModel": "gemma4"}
# the keys DeepSpec's model classes require (``required_fields``) plus the two we need besides
REQUIRED_KEYS = ("target_layer_ids", "mask_token_id", "num_anchors", "enable_confidence_head",
                 "markov_rank", "block_size", "num_target_layers")
EXPORT_NUM_ANCHORS = 512  # a training setting DeepSpec's config carries; its released value
UNSUPPORTED_GEMMA4 = ("Gemma 4 DSpark drafters are not supported yet (their layers use plain-weight "
                      "norms, a scale-free value norm, attention scale 1, shared K=V and a layer "
                      "scalar, none of which our draft layers implement)")


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


# ----------------------------------------------------------------------------- config
def _hf_config(raw: dict, where: str):
    """Parse the stored config with transformers' own class (the defaults of keys that
    ``save_pretrained`` left out come from there, as when DeepSpec loads it)."""
    from transformers import Qwen3Config
    if raw.get("model_type") != "qwen3":
        raise DrafterError(f"{where}: model_type {raw.get('model_type')!r}, a Qwen3DSparkModel needs 'qwen3'")
    try:
        return Qwen3Config(**{k: v for k, v in raw.items() if k != "model_type"})
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise DrafterError(f"{where}: malformed Qwen3 config ({e})") from None


def _int(hf, key: str, where: str) -> int:
    v = getattr(hf, key, None)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DrafterError(f"{where}: {key} must be an integer, got {v!r}")
    return v


def _rope_theta(hf, where: str) -> float:
    rp = getattr(hf, "rope_parameters", None) or {}
    kind = rp.get("rope_type", "default")
    if kind != "default":
        raise DrafterError(f"{where}: unsupported rope_type {kind!r} (only default RoPE is supported)")
    theta = rp.get("rope_theta")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise DrafterError(f"{where}: rope_parameters.rope_theta must be a positive number, got {theta!r}")
    return float(theta)


def _check_architecture(hf, where: str) -> None:
    """Refuse the Qwen3 variants our draft layers do not implement."""
    if getattr(hf, "attention_bias", False):
        raise DrafterError(f"{where}: attention_bias is true (our draft layers have no attention biases)")
    if getattr(hf, "hidden_act", "silu") != "silu":
        raise DrafterError(f"{where}: hidden_act {hf.hidden_act!r} (only silu is supported)")
    types = getattr(hf, "layer_types", None) or []
    if any(t != "full_attention" for t in types) or getattr(hf, "use_sliding_window", False):
        raise DrafterError(f"{where}: sliding-window draft layers are not supported")


def _heads(raw: dict, hf, where: str) -> tuple[str, int, bool]:
    """(markov_type, markov_rank, confidence_head) from DeepSpec's Markov/confidence keys."""
    rank = _int(hf, "markov_rank", where)
    if rank < 0:
        raise DrafterError(f"{where}: markov_rank must be ≥ 0, got {rank}")
    kind = NO_HEAD
    if rank > 0:
        if "markov_head_type" not in raw:
            raise DrafterError(f"{where}: markov_head_type is required when markov_rank > 0")
        kind = str(raw["markov_head_type"]).lower()
        if kind not in MARKOV_HEADS:
            raise DrafterError(f"{where}: unsupported markov_head_type {kind!r} ({', '.join(MARKOV_HEADS)})")
    conf = raw["enable_confidence_head"]
    if not isinstance(conf, bool):
        raise DrafterError(f"{where}: enable_confidence_head must be true or false, got {conf!r}")
    if conf:
        if "confidence_head_with_markov" not in raw:
            raise DrafterError(f"{where}: confidence_head_with_markov is required when enable_confidence_head is true")
        with_markov = raw["confidence_head_with_markov"]
        if rank > 0 and with_markov is not True:
            raise DrafterError(f"{where}: confidence_head_with_markov is {with_markov!r}; only a confidence "
                               "head that reads the Markov embedding is supported")
        if rank == 0 and with_markov is not False:
            raise DrafterError(f"{where}: confidence_head_with_markov is true but there is no Markov head (markov_rank 0)")
    return kind, rank, conf


def drafter_config(raw: dict, where: str, *, target_name: str = "") -> DrafterConfig:
    """A DeepSpec ``config.json`` (parsed) → our DrafterConfig; DrafterError naming the key."""
    arch = (raw.get("architectures") or [None])[0]
    if DEEPSPEC_CLASSES.get(arch) == "gemma4":
        raise DrafterError(f"{where}: {UNSUPPORTED_GEMMA4}")
    if arch not in DEEPSPEC_CLASSES:
        raise DrafterError(f"{where}: architectures {raw.get('architectures')!r} names no DeepSpec drafter class")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise DrafterError(f"{where}: missing DeepSpec key(s) {', '.join(missing)}")
    hf = _hf_config(raw, where)
    _check_architecture(hf, where)
    kind, rank, conf = _heads(raw, hf, where)
    ids = raw["target_layer_ids"]
    if not (isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise DrafterError(f"{where}: target_layer_ids must be a non-empty list of integers, got {ids!r}")
    heads = _int(hf, "num_attention_heads", where)
    if heads < 1:
        raise DrafterError(f"{where}: num_attention_heads must be ≥ 1, got {heads}")
    head_dim = getattr(hf, "head_dim", None) or _int(hf, "hidden_size", where) // heads
    try:
        return DrafterConfig(
            family="qwen3", vocab_size=_int(hf, "vocab_size", where),
            hidden_size=_int(hf, "hidden_size", where), target_layer_ids=tuple(ids),
            target_num_layers=_int(hf, "num_target_layers", where),
            mask_token_id=_int(hf, "mask_token_id", where), block_size=_int(hf, "block_size", where),
            num_layers=_int(hf, "num_hidden_layers", where), num_heads=heads,
            num_kv_heads=_int(hf, "num_key_value_heads", where), head_dim=int(head_dim),
            intermediate_size=_int(hf, "intermediate_size", where),
            rms_norm_eps=float(hf.rms_norm_eps), rope_theta=_rope_theta(hf, where),
            markov_type=kind, markov_rank=rank, confidence_head=conf, target_name=target_name)
    except (ConfigError, TypeError, ValueError) as e:
        raise DrafterError(f"{where}: {e}") from None


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
def load_deepspec(path: str | Path, target, *, device=None, dtype=None) -> DSparkDrafter:
    """Load a DeepSpec drafter directory for ``target`` (embed_tokens/lm_head checked, then
    dropped); weights go straight to the target's device and dtype (no random init)."""
    path = Path(path)
    cfg_file, w_file = path / "config.json", path / "model.safetensors"
    if not w_file.is_file():
        raise DrafterError(f"{path} has no model.safetensors (a DeepSpec drafter has one file)")
    raw = read_json_capped(cfg_file, MAX_CONFIG_BYTES, what="drafter config", error=DrafterError)
    if not isinstance(raw, dict):
        raise DrafterError(f"{cfg_file} is not a JSON object")
    cfg = drafter_config(raw, str(cfg_file), target_name=target.name)
    sd = read_safetensors(w_file)
    check_shared(sd, target, str(w_file))
    check_compatible(cfg, target)
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
    model.whole_vocab_markov = True
    return model.eval()


# ----------------------------------------------------------------------------- export
def export_config(drafter: DSparkDrafter, target) -> str:
    """DeepSpec's ``config.json`` for ``drafter``: a copy of the target's config with the draft
    architecture and the DSpark keys set, as DeepSpec's ``build_draft_config`` builds it and
    ``save_pretrained`` serialises it (transformers' ``to_json_string(use_diff=True)``)."""
    c = drafter.cfg
    hf = copy.deepcopy(target.config)
    for k, v in dict(architectures=["Qwen3DSparkModel"], num_target_layers=c.target_num_layers,
                     num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                     num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                     intermediate_size=c.intermediate_size, rms_norm_eps=c.rms_norm_eps,
                     rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
                     block_size=c.block_size, tie_word_embeddings=False,
                     layer_types=["full_attention"] * c.num_layers, use_sliding_window=False,
                     mask_token_id=c.mask_token_id, target_layer_ids=list(c.target_layer_ids),
                     num_anchors=EXPORT_NUM_ANCHORS, enable_confidence_head=c.confidence_head,
                     markov_rank=c.markov_rank if c.has_markov else 0, dtype="bfloat16").items():
        setattr(hf, k, v)
    if c.confidence_head:
        hf.confidence_head_with_markov = c.has_markov
    if c.has_markov:
        hf.markov_head_type = c.markov_type
    return hf.to_json_string(use_diff=True)


def export_problem(drafter: DSparkDrafter, target) -> str | None:
    """Why ``drafter`` cannot be written in DeepSpec's layout for ``target`` (None: it can)."""
    c = drafter.cfg
    if c.restricted:
        return (f"the drafter has a restricted draft vocabulary ({c.draft_vocab_size} of {c.vocab_size} ids); "
                "DeepSpec's format stores full-vocabulary heads only")
    if c.family != "qwen3" or target.family != "qwen3":
        return f"DeepSpec's format holds Qwen3 drafters here; this one is for a {c.family} target"
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

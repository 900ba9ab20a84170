"""DeepSpec's ``config.json`` ↔ our ``DrafterConfig``, for its two drafter classes.

Scope: reading the config DeepSpec's ``build_draft_config`` builds and ``save_pretrained`` writes
(a copy of the target's Hugging Face config plus the DSpark keys) into a ``DrafterConfig``,
refusing — in one line of ``DrafterError`` naming the key — every variant our draft layers do not
implement; and writing the same layout for one of our drafters (``export_config``).

DeepSpec has two drafter classes (``eval.py``'s ``get_evaluator_cls``): ``Qwen3DSparkModel``
(``deepspec/modeling/dspark/qwen3``) and ``Gemma4DSparkModel`` (``.../gemma4``). A DFlash
checkpoint is the same class with ``markov_rank`` 0 and no confidence head (its
``config/dflash/*.py`` train with ``Qwen3DSparkTrainer`` / ``Gemma4DSparkTrainer``).

Gemma 4 layout: DeepSpec pins transformers 5.10.2, whose ``Gemma4TextConfig`` keeps
``global_head_dim`` and ``num_global_key_value_heads`` as top-level keys (5.2x folds them into
``per_layer_config``), so the raw JSON is read here, with ``Gemma4TextConfig``'s defaults for
absent keys, rather than through whichever transformers is installed.
"""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

from dspark_viz.config import ConfigError, DrafterConfig
from dspark_viz.drafter.markov import MARKOV_HEADS, NO_HEAD
from dspark_viz.drafter.model import DrafterError, DSparkDrafter
from dspark_viz.targets import gemma4_full_attention

# DeepSpec's drafter classes (``architectures[0]``) → the target family they are built for.
DEEPSPEC_CLASSES = {"Qwen3DSparkModel": "qwen3", "Gemma4DSparkModel": "gemma4"}
# the keys DeepSpec's model classes require (``required_fields``) plus the two we need besides
REQUIRED_KEYS = ("target_layer_ids", "mask_token_id", "num_anchors", "enable_confidence_head",
                 "markov_rank", "block_size", "num_target_layers")
GEMMA4_REQUIRED = ("num_global_key_value_heads", "global_head_dim")  # Gemma4DSparkModel's own
GEMMA4_MODEL_TYPES = ("gemma4_text", "gemma4_unified_text")  # get_gemma4_text_config accepts both
# transformers' Gemma4TextConfig defaults (5.10 and 5.24 agree) for keys a config may leave out
GEMMA4_DEFAULTS = dict(vocab_size=262_144, hidden_size=2304, intermediate_size=9216,
                       num_hidden_layers=30, num_attention_heads=8, num_key_value_heads=4,
                       head_dim=256, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                       attention_bias=False, final_logit_softcapping=None,
                       hidden_size_per_layer_input=256, attention_k_eq_v=False,
                       num_kv_shared_layers=0, enable_moe_block=False, use_double_wide_mlp=False,
                       layer_types=None,
                       rope_parameters={"full_attention": {"rope_type": "proportional",
                                                           "partial_rotary_factor": 0.25,
                                                           "rope_theta": 1_000_000.0}})
EXPORT_NUM_ANCHORS = 512  # a training setting DeepSpec's config carries; its released value


# ----------------------------------------------------------------------------- shared checks
def _int(hf, key: str, where: str) -> int:
    v = getattr(hf, key, None)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DrafterError(f"{where}: {key} must be an integer, got {v!r}")
    return v


def _theta(theta, where: str, key: str) -> float:
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise DrafterError(f"{where}: {key} must be a positive number, got {theta!r}")
    return float(theta)


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


def _layer_ids(raw: dict, where: str) -> tuple[int, ...]:
    ids = raw["target_layer_ids"]
    if not (isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise DrafterError(f"{where}: target_layer_ids must be a non-empty list of integers, got {ids!r}")
    return tuple(ids)


def _full_attention_only(hf, where: str) -> None:
    types = getattr(hf, "layer_types", None)
    if types is not None and (not isinstance(types, list) or any(t != "full_attention" for t in types)):
        raise DrafterError(f"{where}: sliding-window draft layers are not supported (layer_types {types!r})")


# ----------------------------------------------------------------------------- Qwen3
def _qwen3(raw: dict, where: str) -> tuple[dict, object]:
    """Qwen3DSparkModel: parsed with transformers' own ``Qwen3Config`` (the defaults of keys
    ``save_pretrained`` left out come from there, as when DeepSpec loads it)."""
    from transformers import Qwen3Config
    if raw.get("model_type") != "qwen3":
        raise DrafterError(f"{where}: model_type {raw.get('model_type')!r}, a Qwen3DSparkModel needs 'qwen3'")
    try:
        hf = Qwen3Config(**{k: v for k, v in raw.items() if k != "model_type"})
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise DrafterError(f"{where}: malformed Qwen3 config ({e})") from None
    if getattr(hf, "attention_bias", False):
        raise DrafterError(f"{where}: attention_bias is true (our draft layers have no attention biases)")
    if getattr(hf, "hidden_act", "silu") != "silu":
        raise DrafterError(f"{where}: hidden_act {hf.hidden_act!r} (only silu is supported)")
    _full_attention_only(hf, where)
    if getattr(hf, "use_sliding_window", False):
        raise DrafterError(f"{where}: sliding-window draft layers are not supported (use_sliding_window)")
    rp = getattr(hf, "rope_parameters", None) or {}
    if rp.get("rope_type", "default") != "default":
        raise DrafterError(f"{where}: unsupported rope_type {rp.get('rope_type')!r} (only default RoPE is supported)")
    heads = _int(hf, "num_attention_heads", where)
    if heads < 1:
        raise DrafterError(f"{where}: num_attention_heads must be ≥ 1, got {heads}")
    geometry = dict(num_heads=heads, num_kv_heads=_int(hf, "num_key_value_heads", where),
                    head_dim=int(getattr(hf, "head_dim", None) or _int(hf, "hidden_size", where) // heads),
                    rope_theta=_theta(rp.get("rope_theta"), where, "rope_parameters.rope_theta"))
    return geometry, hf


# ----------------------------------------------------------------------------- Gemma 4
def _gemma4(raw: dict, where: str) -> tuple[dict, object]:
    """Gemma4DSparkModel (``deepspec/modeling/dspark/gemma4/modeling.py``): attention heads of
    ``global_head_dim``, key/value heads ``num_global_key_value_heads`` when
    ``attention_k_eq_v`` (no ``v_proj``) else ``num_key_value_heads``, the ``full_attention``
    RoPE, GELU-tanh MLP, dense layers only (DeepSpec asserts ``enable_moe_block`` false and
    ``hidden_size_per_layer_input`` 0)."""
    if raw.get("model_type") not in GEMMA4_MODEL_TYPES:
        raise DrafterError(f"{where}: model_type {raw.get('model_type')!r}, a Gemma4DSparkModel needs "
                           f"{' or '.join(map(repr, GEMMA4_MODEL_TYPES))}")
    missing = [k for k in GEMMA4_REQUIRED if k not in raw]
    if missing:
        raise DrafterError(f"{where}: missing DeepSpec key(s) {', '.join(missing)}")
    hf = SimpleNamespace(**(copy.deepcopy(GEMMA4_DEFAULTS) | raw))
    for key, bad in (("attention_bias", True), ("enable_moe_block", True)):
        if getattr(hf, key) is bad:
            raise DrafterError(f"{where}: {key} is true (DeepSpec's Gemma 4 draft layers have none)")
    if hf.hidden_size_per_layer_input != 0:
        raise DrafterError(f"{where}: hidden_size_per_layer_input is {hf.hidden_size_per_layer_input!r}; "
                           "DeepSpec's Gemma 4 draft layers have no per-layer inputs (0)")
    if hf.hidden_activation != "gelu_pytorch_tanh":
        raise DrafterError(f"{where}: hidden_activation {hf.hidden_activation!r} (only gelu_pytorch_tanh is supported)")
    if hf.use_double_wide_mlp and hf.num_kv_shared_layers:
        raise DrafterError(f"{where}: use_double_wide_mlp with num_kv_shared_layers > 0 (double-width draft MLPs "
                           "are not supported)")
    if hf.layer_types is None:
        raise DrafterError(f"{where}: layer_types is missing (DeepSpec writes full_attention for every draft layer)")
    _full_attention_only(hf, where)
    if len(hf.layer_types) != _int(hf, "num_hidden_layers", where):
        raise DrafterError(f"{where}: {len(hf.layer_types)} layer_types for {hf.num_hidden_layers} draft layers")
    k_eq_v = hf.attention_k_eq_v
    if not isinstance(k_eq_v, bool):
        raise DrafterError(f"{where}: attention_k_eq_v must be true or false, got {k_eq_v!r}")
    heads = _int(hf, "num_attention_heads", where)
    head_dim = _int(hf, "global_head_dim", where)
    kv = _int(hf, "num_global_key_value_heads" if k_eq_v else "num_key_value_heads", where)
    if min(heads, head_dim, kv) < 1:
        raise DrafterError(f"{where}: num_attention_heads, global_head_dim and the key/value heads must be ≥ 1")
    rp = hf.rope_parameters.get("full_attention") if isinstance(hf.rope_parameters, dict) else None
    if not isinstance(rp, dict):
        raise DrafterError(f"{where}: rope_parameters.full_attention is missing (the draft layers' RoPE)")
    kind = rp.get("rope_type", "default")
    theta = _theta(rp.get("rope_theta"), where, "rope_parameters.full_attention.rope_theta")
    if kind == "proportional":
        prop = rp.get("partial_rotary_factor", 1.0)
        if isinstance(prop, bool) or not isinstance(prop, (int, float)) or not 0 < prop <= 1:
            raise DrafterError(f"{where}: partial_rotary_factor must be in (0, 1], got {prop!r}")
        if rp.get("factor", 1.0) != 1.0:
            raise DrafterError(f"{where}: proportional RoPE with factor {rp.get('factor')!r} is not supported (1 only)")
    elif kind == "default":
        # DeepSpec's transformers sizes default RoPE by head_dim, the attention by global_head_dim
        if _int(hf, "head_dim", where) != head_dim:
            raise DrafterError(f"{where}: default RoPE with head_dim {hf.head_dim} ≠ global_head_dim {head_dim} "
                               "(DeepSpec's rotary and attention sizes would disagree)")
        prop = 1.0
    else:
        raise DrafterError(f"{where}: unsupported rope_type {kind!r} for full attention (default or proportional)")
    cap = hf.final_logit_softcapping
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0):
        raise DrafterError(f"{where}: final_logit_softcapping must be a positive number or null, got {cap!r}")
    return dict(num_heads=heads, num_kv_heads=kv, head_dim=head_dim, k_eq_v=k_eq_v,
                rope_theta=theta, rope_proportion=float(prop)), hf


def softcap_of(raw: dict) -> float | None:
    """The final logit soft-cap DeepSpec's ``compute_logits`` applies (Gemma 4 only)."""
    if (raw.get("architectures") or [None])[0] != "Gemma4DSparkModel":
        return None
    cap = raw.get("final_logit_softcapping", GEMMA4_DEFAULTS["final_logit_softcapping"])
    return float(cap) if cap is not None else None


# ----------------------------------------------------------------------------- import
def drafter_config(raw: dict, where: str, *, target_name: str = "") -> DrafterConfig:
    """A DeepSpec ``config.json`` (parsed) → our DrafterConfig; DrafterError naming the key."""
    arch = (raw.get("architectures") or [None])[0]
    if arch not in DEEPSPEC_CLASSES:
        raise DrafterError(f"{where}: architectures {raw.get('architectures')!r} names no DeepSpec drafter "
                           f"class ({', '.join(DEEPSPEC_CLASSES)})")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise DrafterError(f"{where}: missing DeepSpec key(s) {', '.join(missing)}")
    family = DEEPSPEC_CLASSES[arch]
    geometry, hf = (_qwen3 if family == "qwen3" else _gemma4)(raw, where)
    kind, rank, conf = _heads(raw, hf, where)
    try:
        return DrafterConfig(
            family=family, vocab_size=_int(hf, "vocab_size", where),
            hidden_size=_int(hf, "hidden_size", where), target_layer_ids=_layer_ids(raw, where),
            target_num_layers=_int(hf, "num_target_layers", where),
            mask_token_id=_int(hf, "mask_token_id", where), block_size=_int(hf, "block_size", where),
            num_layers=_int(hf, "num_hidden_layers", where),
            intermediate_size=_int(hf, "intermediate_size", where),
            rms_norm_eps=float(hf.rms_norm_eps), markov_type=kind, markov_rank=rank,
            confidence_head=conf, target_name=target_name, **geometry)
    except (ConfigError, TypeError, ValueError) as e:
        raise DrafterError(f"{where}: {e}") from None


# ----------------------------------------------------------------------------- export
def _dspark_keys(c: DrafterConfig) -> dict:
    """The keys DeepSpec's ``build_draft_config`` sets on the copy of the target config."""
    keys = dict(num_target_layers=c.target_num_layers, num_hidden_layers=c.num_layers,
                block_size=c.block_size, tie_word_embeddings=False,
                layer_types=["full_attention"] * c.num_layers, mask_token_id=c.mask_token_id,
                target_layer_ids=list(c.target_layer_ids), num_anchors=EXPORT_NUM_ANCHORS,
                enable_confidence_head=c.confidence_head,
                markov_rank=c.markov_rank if c.has_markov else 0, dtype="bfloat16")
    if c.confidence_head:
        keys["confidence_head_with_markov"] = c.has_markov
    if c.has_markov:
        keys["markov_head_type"] = c.markov_type
    return keys


def _qwen3_config(drafter: DSparkDrafter, target) -> str:
    c = drafter.cfg
    hf = copy.deepcopy(target.config)
    for k, v in dict(architectures=["Qwen3DSparkModel"], num_attention_heads=c.num_heads,
                     num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                     intermediate_size=c.intermediate_size, rms_norm_eps=c.rms_norm_eps,
                     rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
                     use_sliding_window=False).items():
        setattr(hf, k, v)
    for k, v in _dspark_keys(c).items():
        setattr(hf, k, v)
    return hf.to_json_string(use_diff=True)


def _gemma4_config(drafter: DSparkDrafter, target) -> str:
    """The Gemma 4 config in DeepSpec's layout: the target's text config as transformers 5.10
    serialises it (``global_head_dim`` / ``num_global_key_value_heads`` top level, no
    ``per_layer_config``) with ``build_draft_config``'s changes; RoPE always written as
    ``proportional`` (its rotary then sizes by ``global_head_dim``, whatever the proportion)."""
    c, tc = drafter.cfg, target.config
    d = tc.to_diff_dict()
    d.pop("per_layer_config", None)
    fa = gemma4_full_attention(tc)
    rope = dict(getattr(tc, "rope_parameters", None) or {})
    rope["full_attention"] = {"rope_type": "proportional", "partial_rotary_factor": c.rope_proportion,
                              "rope_theta": c.rope_theta}
    d |= dict(architectures=["Gemma4DSparkModel"], model_type=tc.model_type,
              target_model_type=str(target.model.config.model_type), target_text_model_type=tc.model_type,
              num_attention_heads=c.num_heads, global_head_dim=c.head_dim, attention_k_eq_v=c.k_eq_v,
              num_global_key_value_heads=c.num_kv_heads if c.k_eq_v else fa.num_kv_heads,
              intermediate_size=c.intermediate_size, rms_norm_eps=c.rms_norm_eps, rope_parameters=rope,
              enable_moe_block=False, hidden_size_per_layer_input=0, use_double_wide_mlp=False,
              final_logit_softcapping=target.softcap)
    if not c.k_eq_v:
        d["num_key_value_heads"] = c.num_kv_heads
    d |= _dspark_keys(c)
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def export_config(drafter: DSparkDrafter, target) -> str:
    """DeepSpec's ``config.json`` for ``drafter``: a copy of the target's config with the draft
    architecture and the DSpark keys set, as DeepSpec's ``build_draft_config`` builds it and
    ``save_pretrained`` serialises it (transformers' ``to_json_string(use_diff=True)``)."""
    return (_gemma4_config if drafter.cfg.family == "gemma4" else _qwen3_config)(drafter, target)

"""Policy specs as people write them ('hardware:h100-qwen3-8b'), turned into policies with curves.

Scope: ``split_policy_spec`` (the policy part and the curve part of a spec) and
``policy_from_spec`` — the one place a spec's curve name or path is resolved
(``capacity.resolve_capacity``) and handed to ``decoding.policy.parse_policy`` as an object.
The CLI, the app and the benchmark call it. Not here: the policies and their registry
(``dspark_viz.decoding.policy``).
"""
from __future__ import annotations

from dspark_viz.config import ConfigError
from dspark_viz.decoding.policy import Policy, parse_policy, policy_entry
from dspark_viz.errors import one_line
from dspark_viz.load.capacity import DEFAULT_CAPACITY, CapacityError, resolve_capacity


def split_policy_spec(spec: str) -> tuple[str, str | None]:
    """'hardware:CURVE' → ('hardware', 'CURVE'); 'fixed:4' → ('fixed:4', None); 'async' →
    ('async', None). Only a policy that needs a curve has a curve part."""
    name, sep, arg = spec.strip().partition(":")
    if sep and policy_entry(name).needs_curve:
        return name, arg.strip() or None
    return spec.strip(), None


def policy_from_spec(spec: str, gamma: int, *, capacity=None, record_path: bool = True,
                     **curve_kw) -> Policy:
    """Every spelling the CLI accepts: 'fixed[:N]', 'threshold[:T]', 'threshold-a[:T]',
    'hardware|hw|scheduler|alg1|async|asynchronous|retrospective|retro[:CURVE]'.

    The curve of a curve policy: the spec's CURVE (a preset name or a curve JSON path), else
    ``capacity`` (a curve, a name or a path), else ``DEFAULT_CAPACITY``. ``curve_kw`` (e.g.
    ``context_len``) go to ``resolve_capacity`` for presets.
    """
    name, curve_spec = split_policy_spec(spec)
    curve = None
    if policy_entry(name.partition(":")[0]).needs_curve:
        src = curve_spec or (capacity if capacity is not None else DEFAULT_CAPACITY)
        try:
            curve = resolve_capacity(src, **curve_kw)
        except CapacityError as e:
            raise ConfigError(f"bad policy {spec!r}: {one_line(e)}") from None
    return parse_policy(name, gamma, curve, record_path=record_path)


__all__ = ["split_policy_spec", "policy_from_spec"]

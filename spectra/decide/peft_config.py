"""PEFT ``LoraConfig`` dictionaries that give every module exactly its rank.

PEFT picks the rank and α of a module named ``name`` (its path in the model) like this
(peft 0.21, ``tuners_utils.check_target_module_exists`` and ``utils.other.get_pattern_key``):

* it is adapted when ``name`` is in ``target_modules`` or ends with ``"." + target``;
* its r is ``rank_pattern[k]`` for the first key k with ``re.match(rf"(.*\\.)?({k})$", name)``,
  else ``r``; α likewise from ``alpha_pattern`` / ``lora_alpha``.

So every target is written as a full module path and every pattern key as that path with
regex characters escaped (``re.escape``): ``layer\\.1\\.output`` matches ``layer.1.output`` and
``encoder.layer.1.output`` but never ``layer.11.output`` or ``layerX1.output``. A model whose
module names carry an extra leading prefix (a task head's ``bert.``) still matches.
:func:`check_unique_targets` refuses a set of names where one path is a dotted suffix of another
(the only way such a key could hit a second module).

**α rule (choice)**: α = ``alpha_ratio`` · r for every module, so the scaling s = α / r is the
same (``alpha_ratio``, default 1) whatever the rank: changing a module's rank changes how much
it can express, not how strongly its update is applied.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from spectra.errors import OptionError


def lora_config_dict(
    ranks: Mapping[str, int],
    *,
    alpha_ratio: float = 1.0,
    modules_to_save: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-able dict that ``peft.LoraConfig(**d)`` accepts, giving module m rank ranks[m].

    ``r`` is the most common rank (ties: the smallest); modules of another rank get a
    ``rank_pattern`` / ``alpha_pattern`` entry keyed by their escaped full path.

    Args:
        ranks: Module path → rank ≥ 1 (at least one module).
        alpha_ratio: α / r for every module (see the α rule in the module docstring).
        modules_to_save: Module paths saved whole beside the adapter.
        extra: Further config fields (e.g. ``lora_bias``, ``base_model_name_or_path``).

    Raises:
        OptionError: No module, a rank < 1, or alpha_ratio ≤ 0.
    """
    if not ranks:
        raise OptionError("no module to adapt: every ΔW selected is zero")
    if alpha_ratio <= 0:
        raise OptionError(f"--alpha-ratio must be positive, got {alpha_ratio}")
    bad = {m: r for m, r in ranks.items() if r < 1}
    if bad:
        raise OptionError(f"ranks must be at least 1: {bad}")
    counts = Counter(ranks.values())
    r_default = min(counts, key=lambda r: (-counts[r], r))
    others = {m: r for m, r in sorted(ranks.items()) if r != r_default}
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": None,
        "r": r_default,
        "lora_alpha": alpha_ratio * r_default,
        "target_modules": sorted(ranks),
        "rank_pattern": {pattern_key(m): r for m, r in others.items()},
        "alpha_pattern": {pattern_key(m): alpha_ratio * r for m, r in others.items()},
        "use_rslora": False,
        "fan_in_fan_out": False,
        "bias": "none",
        "lora_dropout": 0.0,
        "modules_to_save": sorted(modules_to_save) or None,
    }
    config.update(extra or {})
    return config


def pattern_key(module: str) -> str:
    """The ``rank_pattern`` / ``alpha_pattern`` key that matches exactly ``module`` (and the
    same path under an added leading prefix): the path with regex characters escaped."""
    return re.escape(module)


def check_unique_targets(targets: Iterable[str], names: Iterable[str]) -> None:
    """Refuse targets that PEFT's suffix rule would also apply to another module.

    Args:
        targets: Full module paths written into the config.
        names: Every module path of the model (or checkpoint) the config is for.

    Raises:
        OptionError: A target is a dotted suffix of another name (``"." + target``).
    """
    all_names = set(names) | set(targets)
    by_last: dict[str, list[str]] = {}
    for n in all_names:
        by_last.setdefault(n.rsplit(".", 1)[-1], []).append(n)
    for t in targets:
        clash = [n for n in by_last.get(t.rsplit(".", 1)[-1], []) if n.endswith("." + t)]
        if clash:
            raise OptionError(
                f"module {t!r} is also the ending of {clash[0]!r}, so PEFT would adapt both; "
                "spectra cannot write a config that targets only one of them"
            )

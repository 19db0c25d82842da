"""Settings of the reference MultiLoRA layer (Wang et al. 2023, arXiv 2311.11501).

The update of one adapted ``nn.Linear`` (W0: out × in) is

    ΔW = (α / r_m) · Σ_{i=1..n} diag(s_i) B_i A_i,   A_i: (r_m, in), B_i: (out, r_m),

with s_i the learned scaling of module i ((out,) for ``"vector"``, a number for ``"scalar"``)
and r_m = :attr:`MultiLoRAConfig.module_rank` the rank of each parallel module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

REGEX_PREFIX = "re:"


@dataclass(frozen=True)
class MultiLoRAConfig:
    """How to inject MultiLoRA: rank, number of parallel modules, scaling and targets.

    Target matching follows PEFT's ``target_modules`` rule for plain names: a module path
    matches a name when it equals it or ends with ``"." + name`` (``"query"`` matches
    ``encoder.layer.0.attention.self.query``). An entry starting with ``"re:"`` is a regular
    expression that must match the whole module path (``re.fullmatch``), e.g.
    ``"re:.*layer\\.[01]\\..*(query|value)"``. PEFT marks a regex by passing one string instead
    of a list; a prefix keeps names and regexes in one typed tuple.

    Raises:
        ValueError: r, n or lora_alpha not positive, lora_dropout outside [0, 1), an unknown
            scaling, r not divisible by n when parameter_matched, target_modules given as a
            single string, or a regex that does not compile.
    """

    # Rank of each parallel module; with parameter_matched, the total rank shared by the n
    # modules (each then gets r // n), so A and B hold as many numbers as a rank-r LoRA.
    r: int = 8
    # Number of parallel LoRA modules per adapted matrix.
    n: int = 4
    # α: the update is scaled by α / module_rank, as in LoRA.
    lora_alpha: float = 16.0
    # Dropout probability applied to the layer input of the adapter branch (shared by all n).
    lora_dropout: float = 0.0
    # Shape of each learned scaling s_i: "vector" = one entry per output channel, "scalar" = one.
    scaling: Literal["vector", "scalar"] = "vector"
    # True: each module gets rank r // n (parameter count of a rank-r LoRA, plus the s_i).
    parameter_matched: bool = False
    # Module names (PEFT suffix rule) or "re:" full regexes of the nn.Linear layers to adapt.
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            raise ValueError(
                f"target_modules must be a tuple of names, got the string {self.target_modules!r};"
                f" pass ({self.target_modules!r},) or use the 're:' prefix for a regex"
            )
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.r <= 0 or self.n <= 0:
            raise ValueError(f"r and n must be positive, got r={self.r}, n={self.n}")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be positive, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.scaling not in ("vector", "scalar"):
            raise ValueError(f"scaling must be 'vector' or 'scalar', got {self.scaling!r}")
        if self.parameter_matched and self.r % self.n != 0:
            raise ValueError(
                f"parameter_matched splits the rank r={self.r} over n={self.n} modules, so r must"
                f" be a multiple of n (e.g. r={self.n * -(-self.r // self.n)}),"
                " or set parameter_matched=False"
            )
        for pattern in self.target_modules:
            if pattern.startswith(REGEX_PREFIX):
                try:
                    re.compile(pattern[len(REGEX_PREFIX) :])
                except re.error as exc:
                    raise ValueError(f"target_modules: bad regex {pattern!r}: {exc}") from exc

    @property
    def module_rank(self) -> int:
        """Rank r_m of each parallel module: ``r // n`` when parameter_matched, else ``r``.

        This is the ``r`` the on-disk format stores.
        """
        return self.r // self.n if self.parameter_matched else self.r

    @property
    def scale(self) -> float:
        """α / r_m, the constant factor of ΔW.

        The divisor is the per-module rank (as in LoRA, where α / r uses the rank of the one
        module), so a parameter-matched MultiLoRA with r = 8, n = 4, α = 16 scales by 16 / 2.
        """
        return self.lora_alpha / self.module_rank

    def matches(self, module_path: str) -> bool:
        """True when ``module_path`` is targeted by any entry of :attr:`target_modules`.

        Args:
            module_path: Dotted path of a module in the model, e.g. ``"encoder.layer.0.query"``.
        """
        for pattern in self.target_modules:
            if pattern.startswith(REGEX_PREFIX):
                if re.fullmatch(pattern[len(REGEX_PREFIX) :], module_path):
                    return True
            elif module_path == pattern or module_path.endswith("." + pattern):
                return True
        return False

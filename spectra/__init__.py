"""spectra: what fine-tuning did to a model's weights.

Exact singular-value spectra, dominance metrics and subspace similarity of the weight updates
ΔW made by full fine-tuning, LoRA and MultiLoRA, read from checkpoint files alone.
"""

__version__ = "0.1.0"

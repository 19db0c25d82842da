"""Reading tensor containers (safetensors, torch pickles, sharded checkpoints, model
directories) one tensor at a time, and writing outputs atomically."""

from spectra.io._common import MissingTensorError
from spectra.io.containers import open_tensors
from spectra.io.source import TensorSource

__all__ = ["MissingTensorError", "TensorSource", "open_tensors"]

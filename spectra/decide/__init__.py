"""Decisions from spectra, written as files the ecosystem loads.

==============  ==========================================================================
module          role
==============  ==========================================================================
``rank``        per-module LoRA ranks from ΔW's spectrum (energy share or parameter budget)
``peft_config`` ``LoraConfig`` dicts whose patterns hit exactly the intended modules
``truncate``    the best rank-r approximation of one ΔW, as balanced factors
``layouts``     which layer type owns each weight (Linear / Embedding / Conv1D)
``carry``       what else a full fine-tune changed, and how PEFT carries it
``adapter_files``  PEFT adapter directories written atomically
``extract``     a full fine-tune or a bigger adapter as a PEFT LoRA adapter
``verify``      does a merged checkpoint contain an adapter at the right scale?
``stack``       can adapters be used together (σ₁ spikes, φ)?
==============  ==========================================================================
"""

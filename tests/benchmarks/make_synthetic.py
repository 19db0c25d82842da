"""Model-shaped synthetic checkpoints for the scale benchmarks (never committed as data).

Writes, under OUT:

* ``base/``: a LLaMA-shaped model as Hugging Face saves it: ``config.json``,
  ``model-0000k-of-0000n.safetensors`` shards and ``model.safetensors.index.json``. Names and
  shapes are LlamaForCausalLM's: ``model.embed_tokens`` (vocab, h), per layer
  ``self_attn.{q,k,v,o}_proj`` (h, h), ``mlp.{gate,up}_proj`` (i, h), ``mlp.down_proj`` (h, i),
  ``input_layernorm`` / ``post_attention_layernorm`` (h,), then ``model.norm`` (h,) and
  ``lm_head`` (vocab, h). W0 ~ N(0, 0.02²) (LLaMA's init std).
* ``full/``: the same layout, W = W0 + ΔW with ΔW = a rank-8 part (a few dominant directions,
  as fine-tuning leaves) plus N(0, noise²), rounded to ``--dtype`` after the addition.
* ``lora/``: a PEFT LoRA adapter for the same shapes (``adapter_config.json`` +
  ``adapter_model.safetensors``, keys ``base_model.model.<module>.lora_{A,B}.weight``) on the 7
  projections of every layer: 224 modules for 7B, r = 16, α = 32.

Tensors are generated and written one at a time (the safetensors file format is written here
directly: header, then each tensor's bytes), so making a 7B pair (≈ 2 × 13.5 GB in bf16) needs
memory for one matrix, not one shard. Every tensor has its own seed, so ``base`` and ``full``
are generated in one pass without keeping W0.

Run: ``python tests/benchmarks/make_synthetic.py OUT --scale 7b`` (27 GB of disk for the pair)
or e.g. ``--layers 4 --hidden 1024 --intermediate 2752 --vocab 4096``;
``--what lora`` writes only the adapter (plus nothing else: a base is needed by ``compare``).
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

PRESETS = {
    # LLaMA-1/2 7B: 6.74 B parameters, 13.5 GB in bf16
    "7b": {"layers": 32, "hidden": 4096, "intermediate": 11008, "vocab": 32000, "heads": 32},
    "tiny": {"layers": 2, "hidden": 64, "intermediate": 128, "vocab": 100, "heads": 4},
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_ST_DTYPE = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INIT_STD = 0.02


@dataclass(frozen=True)
class Shape:
    """A LLaMA-shaped model's sizes."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every tensor, in LlamaForCausalLM's state-dict order."""
        h, i = self.hidden, self.intermediate
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for n in range(self.layers):
            p = f"model.layers.{n}."
            out += [
                (p + f"self_attn.{m}.weight", (h, h))
                for m in ("q_proj", "k_proj", "v_proj", "o_proj")
            ]
            out += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h))]
            out += [(p + "mlp.down_proj.weight", (h, i))]
            out += [
                (p + "input_layernorm.weight", (h,)),
                (p + "post_attention_layernorm.weight", (h,)),
            ]
        return out + [("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]

    def lora_modules(self) -> list[tuple[str, tuple[int, int]]]:
        """(module path, (out, in)) of every LoRA target: 7 per layer."""
        return [
            (name.removesuffix(".weight"), (shape[0], shape[1]))
            for name, shape in self.tensors()
            if len(shape) == 2 and name.split(".")[-2] in LORA_TARGETS
        ]

    def config(self, dtype: torch.dtype) -> dict[str, object]:
        """A LlamaConfig-like ``config.json``."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.heads,
            "vocab_size": self.vocab,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
            "torch_dtype": str(dtype).removeprefix("torch."),
        }


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def shard_plan(
    tensors: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype, max_bytes: int
) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Tensors split in order into shards of at most ``max_bytes`` (one tensor may exceed)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = _nbytes(shape, dtype)
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


class SafetensorsWriter:
    """Writes one safetensors file tensor by tensor: the header first (all names, dtypes and
    shapes are known up front), then each tensor's little-endian bytes in header order."""

    def __init__(self, path: Path, tensors: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype):
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in tensors:
            end = offset + _nbytes(shape, dtype)
            header[name] = {
                "dtype": _ST_DTYPE[dtype],
                "shape": list(shape),
                "data_offsets": [offset, end],
            }
            offset = end
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
        self._order = [name for name, _ in tensors]
        self._dtype = dtype
        self._file = open(path, "wb")  # noqa: SIM115  (closed by close())
        self._file.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor (must come in header order)."""
        expected = self._order.pop(0)
        if name != expected:
            raise ValueError(
                f"tensors must be written in header order: got {name}, expected {expected}"
            )
        data = tensor.to(self._dtype).contiguous()
        self._file.write(memoryview(data.view(torch.uint8).numpy()))

    def close(self) -> None:
        if self._order:
            raise ValueError(f"{len(self._order)} tensors not written, e.g. {self._order[0]}")
        self._file.close()


def _pair(
    name_index: int, shape: tuple[int, ...], seed: int, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W0, ΔW) in float32 for one tensor: W0 ~ N(0, 0.02²) (norm scales: 1); ΔW = a rank-8
    part plus N(0, noise²), the two with about the same energy (‖·‖_F)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + name_index)
    if len(shape) == 1:
        return torch.ones(shape), noise * torch.randn(shape, generator=gen)
    w0 = torch.randn(shape, generator=gen).mul_(INIT_STD)
    delta = torch.randn(shape, generator=gen).mul_(noise)
    out, inp = shape
    left = torch.randn(out, 8, generator=gen)  # (out, 8)
    right = torch.randn(8, inp, generator=gen)  # (8, in)
    # entries of left @ right have variance 8: scaled to std = noise, like the noise part
    delta.addmm_(left, right, alpha=noise / math.sqrt(8))
    return w0, delta


def write_pair(
    out: Path, shape: Shape, dtype: torch.dtype, shard_bytes: int, seed: int, noise: float
) -> None:
    """``out/base`` and ``out/full`` (sharded, with index and config), in one pass."""
    tensors = shape.tensors()
    shards = shard_plan(tensors, dtype, shard_bytes)
    index = {name: i for i, (name, _) in enumerate(tensors)}
    for kind in ("base", "full"):
        (out / kind).mkdir(parents=True, exist_ok=True)
        (out / kind / "config.json").write_text(json.dumps(shape.config(dtype), indent=2))
    weight_map: dict[str, str] = {}
    total = sum(_nbytes(s, dtype) for _, s in tensors)
    for k, shard in enumerate(shards, start=1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        writers = {
            kind: SafetensorsWriter(out / kind / file, shard, dtype) for kind in ("base", "full")
        }
        for name, tshape in shard:
            w0, delta = _pair(index[name], tshape, seed, noise)
            writers["base"].write(name, w0)
            writers["full"].write(name, w0.add_(delta))  # rounded to dtype after the addition
            weight_map[name] = file
            del w0, delta
        for w in writers.values():
            w.close()
        print(f"  shard {k}/{len(shards)} written", flush=True)
    for kind in ("base", "full"):
        meta = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / kind / "model.safetensors.index.json").write_text(json.dumps(meta, indent=2))


def lora_tensors(shape: Shape, r: int, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """PEFT keys and tensors: A (r, in) ~ N(0, 1/in), B (out, r) ~ N(0, 0.01²) (a trained B)."""
    gen = torch.Generator().manual_seed(seed + 17)
    for module, (out, inp) in shape.lora_modules():
        key = f"base_model.model.{module}"
        yield key + ".lora_A.weight", torch.randn(r, inp, generator=gen) / math.sqrt(inp)
        yield key + ".lora_B.weight", torch.randn(out, r, generator=gen) * 0.01


def write_lora(out: Path, shape: Shape, dtype: torch.dtype, r: int, alpha: float, seed: int) -> int:
    """``out/lora``: adapter_config.json (PEFT's fields) + adapter_model.safetensors. Returns
    the number of adapted modules."""
    lora = out / "lora"
    lora.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(LORA_TARGETS),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "base_model_name_or_path": str(out / "base"),
        "inference_mode": True,
    }
    (lora / "adapter_config.json").write_text(json.dumps(config, indent=2))
    items = list(lora_tensors(shape, r, seed))
    writer = SafetensorsWriter(
        lora / "adapter_model.safetensors", [(k, tuple(t.shape)) for k, t in items], dtype
    )
    for k, t in items:
        writer.write(k, t)
    writer.close()
    return len(items) // 2


def _size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit, mult in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * mult)
    return int(text)


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output directory (base/, full/, lora/ inside)")
    p.add_argument("--scale", choices=sorted(PRESETS), help="preset sizes (7b: LLaMA-7B)")
    p.add_argument("--layers", type=int, help="decoder layers")
    p.add_argument("--hidden", type=int, help="hidden size h")
    p.add_argument("--intermediate", type=int, help="MLP size i")
    p.add_argument("--vocab", type=int, help="vocabulary size")
    p.add_argument("--heads", type=int, help="attention heads (config only)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    p.add_argument("--shard-size", default="5GB", help="max shard size (default 5GB, as HF)")
    p.add_argument("--what", default="base,full,lora", help="comma list of base+full (pair), lora")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--noise", type=float, default=1e-3, help="std of ΔW's noise part")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def shape_from_args(args: argparse.Namespace) -> Shape:
    """The preset (default tiny) with any size given on the command line overriding it."""
    sizes = dict(PRESETS[args.scale or "tiny"])
    for field in ("layers", "hidden", "intermediate", "vocab", "heads"):
        if getattr(args, field) is not None:
            sizes[field] = getattr(args, field)
    return Shape(**sizes)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    shape = shape_from_args(args)
    dtype = DTYPES[args.dtype]
    what = set(args.what.split(","))
    params = sum(math.prod(s) for _, s in shape.tensors())
    print(f"{shape} → {params / 1e9:.2f} B parameters, {args.dtype}")
    if what & {"base", "full"}:
        write_pair(args.out, shape, dtype, _size(args.shard_size), args.seed, args.noise)
    if "lora" in what:
        n = write_lora(args.out, shape, dtype, args.lora_r, args.lora_alpha, args.seed)
        print(f"  lora: {n} modules, r = {args.lora_r}")


if __name__ == "__main__":
    main()

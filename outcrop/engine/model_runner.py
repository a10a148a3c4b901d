"""The model step: a hand-written batched forward over the loaded HF modules.

Weights are loaded by transformers' own model classes from safetensors (no pickle, no
remote code); the forward below reuses those modules' parameters but replaces the HF
per-call machinery (cache objects, mask builders) with a paged KV cache and one explicit
attention mask, which keeps the per-step Python overhead small.

Attention over the paged cache: each row's new keys and values are written into its
blocks (``kv_cache``: token ``p`` at block ``table[p // block_size]``, offset
``p % block_size``), then each row's blocks are gathered in table order into a dense
``[batch, kv_heads, blocks x block_size, head_dim]`` view for ``scaled_dot_product_attention``;
the causal (and sliding-window) mask hides everything past each query's own position,
including the unused tail of a row's last block and padded table entries. The gather is
plain torch indexing, so the same code runs on CPU and CUDA (a fused paged-attention
kernel is the next engine issue).

One forward serves both step kinds:

* ``prefill``: rows are prompt chunks of different lengths, right-padded to ``[batch, T]``;
* ``decode``: ``T == 1``, one new token per row at its own position.

Supported families: Llama, Mistral, Qwen2 (q/k/v bias), Qwen3 (q/k RMS norm), Mixtral (its
MoE block is called as-is).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from outcrop.engine.families import SUPPORTED_MODEL_TYPES
from outcrop.engine.kv_cache import KVCache
from outcrop.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """CPU defaults to float32, CUDA to bfloat16 (docs/architecture.md)."""
    if name is None or name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"--dtype {name!r} is not supported; choose one of {', '.join(DTYPES)}.")
    return DTYPES[name]


@dataclass
class StepBatch:
    """Host-side description of one forward; ``build_tensors`` moves it to the device."""

    token_ids: list[list[int]]  # per row, the chunk's tokens (decode: one token)
    block_tables: list[list[int]]  # per row, its block ids covering positions [0, start + len)
    starts: list[int]  # position of each row's first token


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class ModelRunner:
    """Owns the model weights, the RoPE tables and the KV cache; runs one step at a time."""

    def __init__(self, model: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        config = model.config
        self.config = config
        self.model_type: str = config.model_type
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"config.json says model_type {self.model_type!r}, which this worker cannot serve; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        base = model.model
        self.embed = base.embed_tokens
        self.layers = list(base.layers)
        self.norm = base.norm
        self.lm_head = model.lm_head
        attn0 = self.layers[0].self_attn
        self.num_layers = len(self.layers)
        self.head_dim: int = attn0.head_dim
        self.num_heads: int = config.num_attention_heads
        self.num_kv_heads: int = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.scaling: float = float(getattr(attn0, "scaling", self.head_dim**-0.5))
        self.vocab_size: int = config.vocab_size
        self.max_position_embeddings: int = config.max_position_embeddings
        self.layer_windows: list[int | None] = layer_sliding_windows(config, self.model_type, self.num_layers)
        self.has_qk_norm = hasattr(attn0, "q_norm")
        self.kv: KVCache | None = None
        self._cos = torch.empty(0)
        self._sin = torch.empty(0)

    # ------------------------------------------------------------------ setup

    @classmethod
    def load(cls, model_dir: Path, device: torch.device, dtype: torch.dtype) -> ModelRunner:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
        if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"config.json says model_type {getattr(config, 'model_type', None)!r}, which this worker cannot "
                f"serve; supported: {', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir),
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=False,
            attn_implementation="sdpa",
        )
        model.eval()
        model.to(device)  # type: ignore[arg-type]
        return cls(model, device, dtype)

    def attach_cache(self, kv: KVCache) -> None:
        """Allocate the RoPE tables for ``kv.max_model_len`` positions."""
        self.kv = kv
        positions = torch.arange(kv.max_model_len + 1, device=self.device)[None, :]
        probe = torch.zeros(1, dtype=self.dtype, device=self.device)
        with torch.inference_mode():
            cos, sin = self.model.model.rotary_emb(probe, positions)
        # cos, sin: [max_model_len + 1, head_dim]
        self._cos = cos[0].to(self.dtype).contiguous()
        self._sin = sin[0].to(self.dtype).contiguous()

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    # ------------------------------------------------------------------ steps

    @torch.inference_mode()
    def forward(self, batch: StepBatch) -> torch.Tensor:
        """Run one step and return the logits of each row's last token: [batch, vocab]."""
        kv = self.kv
        assert kv is not None, "attach_cache() first"
        rows = len(batch.token_ids)
        lengths = [len(t) for t in batch.token_ids]
        seq_len = max(lengths)
        dev = self.device
        padded = [t + [0] * (seq_len - len(t)) for t in batch.token_ids]
        tokens = torch.tensor(padded, dtype=torch.long, device=dev)  # [batch, T]
        starts = torch.tensor(batch.starts, dtype=torch.long, device=dev)
        offsets = torch.arange(seq_len, device=dev)
        positions = starts[:, None] + offsets[None, :]  # [batch, T]
        bs = kv.block_size
        kv_len = max(s + n for s, n in zip(batch.starts, lengths, strict=True))
        num_table = -(-kv_len // bs)  # blocks gathered per row
        tables = torch.tensor(
            [
                t[:num_table] + [kv.scratch_block] * (num_table - len(t[:num_table]))
                for t in batch.block_tables
            ],
            dtype=torch.long,
            device=dev,
        )  # [batch, num_table]
        # Where each new token is written, as a flat index into [blocks * block_size];
        # padded prefill positions write into the scratch block.
        if seq_len > 1 and min(lengths) < seq_len:
            valid = offsets[None, :] < torch.tensor(lengths, device=dev)[:, None]
            safe = torch.where(valid, positions, 0)
            write = tables.gather(1, safe // bs) * bs + safe % bs
            write = torch.where(valid, write, kv.scratch_block * bs)
        else:
            write = tables.gather(1, positions // bs) * bs + positions % bs
        write = write.reshape(-1)  # [batch * T]

        # mask: [batch, 1, T, num_table * bs], True = may attend (causal within each row's own positions)
        key_positions = torch.arange(num_table * bs, device=dev)
        causal = key_positions[None, None, :] <= positions[:, :, None]
        masks: dict[int | None, torch.Tensor] = {None: causal[:, None, :, :]}
        for window in set(self.layer_windows) - {None}:
            assert window is not None
            windowed = causal
            if kv_len > window:
                windowed = causal & (key_positions[None, None, :] > positions[:, :, None] - window)
            masks[window] = windowed[:, None, :, :]
        cos = self._cos[positions][:, :, None, :]  # [batch, T, 1, head_dim]
        sin = self._sin[positions][:, :, None, :]
        kv_shape = (rows, num_table * bs, self.num_kv_heads, self.head_dim)

        x = self.embed(tokens)  # [batch, T, hidden]
        for layer_idx, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(rows, seq_len, self.num_heads, self.head_dim)
            k = attn.k_proj(h).view(rows, seq_len, self.num_kv_heads, self.head_dim)
            v = attn.v_proj(h).view(rows, seq_len, self.num_kv_heads, self.head_dim)
            if self.has_qk_norm:
                q = attn.q_norm(q)
                k = attn.k_norm(k)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = kv.keys[layer_idx], kv.values[layer_idx]  # [blocks + 1, bs, kv_heads, hd]
            keys.view(-1, self.num_kv_heads, self.head_dim).index_copy_(
                0, write, k.reshape(-1, self.num_kv_heads, self.head_dim)
            )
            values.view(-1, self.num_kv_heads, self.head_dim).index_copy_(
                0, write, v.reshape(-1, self.num_kv_heads, self.head_dim)
            )
            # each row's blocks in table order: [batch, kv_heads, num_table * bs, head_dim]
            k_all = keys[tables].view(kv_shape).transpose(1, 2)
            v_all = values[tables].view(kv_shape).transpose(1, 2)
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2),  # [batch, heads, T, head_dim]
                k_all,
                v_all,
                attn_mask=masks[self.layer_windows[layer_idx]],
                scale=self.scaling,
                enable_gqa=self.num_heads != self.num_kv_heads,
            )
            out = out.transpose(1, 2).reshape(rows, seq_len, self.num_heads * self.head_dim)
            x = x + attn.o_proj(out)
            h = layer.post_attention_layernorm(x)
            mlp_out = layer.mlp(h)
            if isinstance(mlp_out, tuple):  # older MoE blocks also return router logits
                mlp_out = mlp_out[0]
            x = x + mlp_out

        if seq_len > 1:
            last = torch.tensor([n - 1 for n in lengths], device=dev)
            x = x[torch.arange(rows, device=dev), last]  # [batch, hidden]
        else:
            x = x[:, 0]
        return self.lm_head(self.norm(x))  # logits: [batch, vocab]


def layer_sliding_windows(config: Any, model_type: str, num_layers: int) -> list[int | None]:
    """Each layer's attention window (None: full attention), as transformers decides it.

    transformers' ``layer_types`` says which layers slide (Qwen2/Qwen3 slide only from
    ``max_window_layers`` on, and only with ``use_sliding_window``); configs without it
    (Mistral) slide every layer when ``sliding_window`` is set.
    """
    window = getattr(config, "sliding_window", None)
    if model_type in ("qwen2", "qwen3") and not getattr(config, "use_sliding_window", False):
        window = None
    if not window:
        return [None] * num_layers
    types = getattr(config, "layer_types", None)  # transformers >= 4.53 sets it
    if types is None:
        if model_type in ("qwen2", "qwen3"):
            first = int(getattr(config, "max_window_layers", num_layers))
            return [int(window) if i >= first else None for i in range(num_layers)]
        return [int(window)] * num_layers
    return [int(window) if kind == "sliding_attention" else None for kind in types]

"""A sentence-embedding model inside a copy: tokenizer + encoder (transformers ``AutoModel``) + pooling.

    spec = read_pooling_spec(model_dir)    # modules.json, 1_Pooling/config.json, sentence_bert_config.json
    model = EmbeddingModel(model_dir, device="cpu", dtype=None)
    vectors, counts = model.embed([["hello"], [101, 7592, 102]])   # texts or token ids

What sentence-transformers' ``encode`` computes for a Transformer -> Pooling (-> Normalize)
pipeline, written out: inputs are truncated to ``max_seq_length`` tokens, padded on the
right with an attention mask (so a text's vector does not depend on its batch-mates), run
through the encoder in one forward per micro-batch, pooled (mean over real tokens, the
first token, or the last real token) and L2-normalized when the folder has a Normalize
module. Weights are read from safetensors only, never with remote code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.errors import InvalidRequestError, ModelValidationError

POOLING_MODES = ("mean", "cls", "lasttoken")
# sentence-transformers' module class names, whatever their package path (the hub's
# ``sentence_transformers.models.Pooling`` or v5+'s ``...sentence_transformer.modules.pooling.Pooling``).
KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Padded tokens in one forward. Why 8,192: on CPU a BERT-base forward of 8K tokens takes ~1 s and
# its activations stay under a few hundred MB; larger batches add memory, not throughput.
DEFAULT_MAX_BATCH_TOKENS = 8192


def module_kind(type_name: Any) -> str | None:
    """``sentence_transformers.models.Pooling`` -> "Pooling"; None for anything else."""
    if not isinstance(type_name, str) or not type_name.startswith("sentence_transformers."):
        return None
    last = type_name.rsplit(".", 1)[-1]
    return last if last in KNOWN_MODULES else None


def pooling_modes(config: dict[str, Any]) -> list[str]:
    """The pooling modes a Pooling config turns on (v5's ``pooling_mode`` or the legacy booleans)."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return [mode]
    if isinstance(mode, list) and all(isinstance(m, str) for m in mode):
        return list(mode)
    return [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key) is True]


@dataclass(frozen=True)
class PoolingSpec:
    mode: str  # mean | cls | lasttoken
    normalize: bool  # a Normalize module follows the pooling
    dimension: int  # the pooled vector's length
    max_seq_length: int | None  # sentence_bert_config.json's cap on input tokens (None: the model's)


def read_pooling_spec(model_dir: Path) -> PoolingSpec:
    """The pipeline a sentence-transformers folder describes (the import validated it already)."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        kinds = [(module_kind(m.get("type")), str(m.get("path", ""))) for m in modules]
        pooling_path = next(path for kind, path in kinds if kind == "Pooling")
        pooling = json.loads((model_dir / pooling_path / "config.json").read_text())
        modes = pooling_modes(pooling)
        dimension = int(pooling.get("word_embedding_dimension", pooling.get("embedding_dimension")))
    except (OSError, ValueError, TypeError, StopIteration, AttributeError) as exc:
        raise ModelValidationError(
            [
                f"{model_dir} is not a sentence-transformers folder Outcrop can serve ({type(exc).__name__}: {exc})."
            ]
        ) from None
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ModelValidationError([f"pooling {modes} is not one of {', '.join(POOLING_MODES)}."])
    max_seq: int | None = None
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.is_file():
        value = json.loads(sbert.read_text()).get("max_seq_length")
        max_seq = int(value) if isinstance(value, int) and value > 0 else None
    return PoolingSpec(
        mode=modes[0],
        normalize=any(kind == "Normalize" for kind, _ in kinds),
        dimension=dimension,
        max_seq_length=max_seq,
    )


def pool(hidden: Any, mask: Any, mode: str) -> Any:
    """hidden: [batch, seq, dim], mask: [batch, seq] (1 = real token, right-padded) -> [batch, dim]."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        last = mask.sum(dim=1) - 1  # [batch]: the index of each row's last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
    summed = (hidden * weights).sum(dim=1)
    return summed / weights.sum(dim=1).clamp(min=1e-9)


def plan_forwards(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Split inputs (by index) into forwards: sorted by length (so each pads little), a forward is
    cut before it would hold more than ``max_batch_tokens`` padded tokens. Forwards are otherwise
    as large as possible: on CPU one forward of 32 rows beats four of 8 even with more padding
    (measured with benchmarks/embeddings_throughput.py)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    plans: list[list[int]] = []
    current: list[int] = []
    for i in order:
        padded = max(1, lengths[i]) * (len(current) + 1)  # ascending: the newcomer is the longest
        if current and padded > max_batch_tokens:
            plans.append(current)
            current = []
        current.append(i)
    if current:
        plans.append(current)
    return plans


# Encoders whose forward takes a 4D attention mask and explicit position ids, so several inputs
# can share one row (packing, below): bidirectional attention, absolute positions.
PACKABLE_MODEL_TYPES = frozenset({"bert", "xlm-roberta"})


def pack_rows(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """First-fit decreasing: inputs (by index) into rows of at most ``row_tokens`` tokens each."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = max(1, lengths[i])
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(row_tokens - n)
    return rows


class EmbeddingModel:
    """Loads the encoder once; ``embed`` is called from one thread at a time (the copy's batcher)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        dtype: str | None = None,
        threads: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from outcrop.engine.loader import verify_model_dir

        verify_model_dir(model_dir)
        if threads is not None:
            torch.set_num_threads(threads)
        self.spec = read_pooling_spec(model_dir)
        self.device = torch.device(device)
        chosen = dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        self.dtype = getattr(torch, chosen)
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), trust_remote_code=False, local_files_only=True
        )
        self.model = AutoModel.from_pretrained(
            str(model_dir),
            dtype=self.dtype,
            trust_remote_code=False,
            local_files_only=True,
            use_safetensors=True,
        )
        self.model.eval().to(self.device)
        positions = int(getattr(config, "max_position_embeddings", 512))
        if getattr(config, "model_type", "") in ("xlm-roberta", "roberta"):
            positions -= 2  # RoBERTa positions start after the padding index
        self.max_seq_length = min(self.spec.max_seq_length or positions, positions)
        self.vocab_size = int(getattr(config, "vocab_size", len(self.tokenizer)))
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.max_batch_tokens = max_batch_tokens
        # Packing: inputs share rows (a block-diagonal attention mask keeps them apart, positions restart
        # per input), so a batch of mixed lengths computes its real tokens, not its padding.
        self.packed = getattr(config, "model_type", "") in PACKABLE_MODEL_TYPES
        self.position_offset = int(config.pad_token_id) + 1 if config.model_type == "xlm-roberta" else 0
        self._lock = threading.Lock()  # the tokenizer and the model: one caller at a time

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    def check_token_ids(self, ids: Sequence[int], where: str) -> None:
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"{where} holds token id {bad}, outside this model's vocabulary (0..{self.vocab_size - 1}); "
                "send text, or token ids from this model's tokenizer.",
                param="input",
            )

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids as sentence-transformers makes them: special tokens added, cut at max_seq_length."""
        if not texts:
            return []
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)
        return [list(ids) for ids in encoded["input_ids"]]

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> tuple[Any, list[int]]:
        """Vectors [n, dim] (float32, on the CPU) for texts or token-id lists, and each input's token count."""
        import torch

        with self._lock:
            texts = [(i, x) for i, x in enumerate(inputs) if isinstance(x, str)]
            ids: list[list[int]] = [[] for _ in inputs]
            for (i, _), tokens in zip(texts, self.tokenize([t for _, t in texts]), strict=True):
                ids[i] = tokens
            for i, x in enumerate(inputs):
                if not isinstance(x, str):
                    ids[i] = list(x)[: self.max_seq_length]
            out = torch.empty((len(inputs), self.dimension), dtype=torch.float32)
            lengths = [len(x) for x in ids]
            if self.packed and ids:
                rows = pack_rows(lengths, max(lengths))
                per_forward = max(1, self.max_batch_tokens // max(1, max(lengths)))
                for start in range(0, len(rows), per_forward):
                    group = rows[start : start + per_forward]
                    order = [i for row in group for i in row]
                    out[order] = self._forward_packed([[ids[i] for i in row] for row in group])
            else:
                for chunk in plan_forwards(lengths, self.max_batch_tokens):
                    out[chunk] = self._forward([ids[i] for i in chunk])
            return out, lengths

    def _forward_packed(self, rows: list[list[list[int]]]) -> Any:
        """rows: each a list of inputs' token ids sharing one row -> vectors [inputs, dim] in row order."""
        import torch

        width = max(1, max(sum(len(x) for x in row) for row in rows))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segment = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
        spans: list[tuple[int, int, int]] = []  # (row, start, end) of each input, in output order
        for r, row in enumerate(rows):
            at = 0
            for k, tokens in enumerate(row):
                n = len(tokens)
                input_ids[r, at : at + n] = torch.tensor(tokens, dtype=torch.long)
                positions[r, at : at + n] = torch.arange(n) + self.position_offset
                segment[r, at : at + n] = k
                spans.append((r, at, at + n))
                at += n
        # mask: [rows, 1, width, width], 0 where query and key are the same input (padding sees padding)
        same = segment[:, :, None] == segment[:, None, :]
        mask = torch.zeros(same.shape, dtype=self.dtype).masked_fill(~same, torch.finfo(self.dtype).min)
        with torch.inference_mode():
            hidden = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=mask[:, None].to(self.device),
                position_ids=positions.to(self.device),
            ).last_hidden_state  # [rows, width, dim]
            pooled = torch.stack(
                [self._pool_span(hidden[r, a:b]) for r, a, b in spans]
            ).float()  # [inputs, dim]
            if self.spec.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu()

    def _pool_span(self, tokens: Any) -> Any:
        """tokens: [n, dim] of one input -> [dim]."""
        if self.spec.mode == "cls":
            return tokens[0]
        if self.spec.mode == "lasttoken":
            return tokens[-1]
        return tokens.mean(dim=0)

    def _forward(self, batch: list[list[int]]) -> Any:
        import torch

        longest = max(1, max(len(x) for x in batch))
        input_ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, tokens in enumerate(batch):
            input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.model(
                input_ids=input_ids, attention_mask=mask
            ).last_hidden_state  # [batch, seq, dim]
            pooled = pool(hidden, mask, self.spec.mode).float()  # [batch, dim]
            if self.spec.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu()

"""Validate a sentence-embedding model folder (sentence-transformers layout) before import.

A folder is an embedding model when it holds ``modules.json`` (what sentence-transformers
writes): a Transformer module (the encoder: config.json + safetensors at the top level), a
Pooling module (``1_Pooling/config.json``: mean, cls or lasttoken), optionally a Normalize
module. The same file, header, LoRA, tokenizer and size checks as text models run first
(:mod:`outcrop.registry.validation`); these add:

1. ``config.json``: an encoder (BERT, XLM-RoBERTa) or a decoder used as an embedder (Qwen2,
   Qwen3 with last-token pooling, as Qwen3-Embedding), no ``auto_map``, no quantization;
2. ``modules.json``: only Transformer, Pooling and Normalize modules (a Dense projection or
   any other module is refused, naming it), the Transformer at the folder's top level;
3. the pooling config: exactly one of mean / cls / lasttoken, its dimension equal to
   ``hidden_size``; ``lasttoken`` for decoders (their other tokens see only the past);
4. tensor names and shapes equal the base model the config implies (built on the meta
   device), saved with or without the ``model.`` prefix; an ``lm_head`` is allowed and ignored.

Nothing here runs code from the folder or loads tensor data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outcrop.engine.embedding_model import POOLING_MODES, module_kind, pooling_modes

if TYPE_CHECKING:
    from outcrop.registry.validation import _State

MODULES_FILE = "modules.json"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
ST_CONFIG = "config_sentence_transformers.json"

# model_type -> the architectures a folder may name for it (base model or its task heads,
# whose weights hold the base model under a prefix).
EMBEDDING_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "bert": ("BertModel", "BertForMaskedLM", "BertForPreTraining"),
    "xlm-roberta": ("XLMRobertaModel", "XLMRobertaForMaskedLM"),
    "qwen2": ("Qwen2Model", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Model", "Qwen3ForCausalLM"),
}
DECODER_MODEL_TYPES = frozenset({"qwen2", "qwen3"})
# A module folder of sentence-transformers: "1_Pooling", "2_Normalize".
MODULE_DIR = re.compile(r"^\d+_[A-Za-z][A-Za-z0-9]*$")
# Memory of one embedding copy beyond its weights: the batch's activations. Why 32 x 512 tokens:
# the worker's default batch is 32 texts, and most encoders cap inputs at 512 tokens.
ACTIVATION_TOKENS = 32 * 512


@dataclass(frozen=True)
class EmbeddingFacts:
    dimension: int  # the pooled vector's length (= hidden_size)
    pooling: str  # mean | cls | lasttoken
    normalize: bool  # a Normalize module: vectors have unit length
    truncatable: bool  # Matryoshka: `dimensions` below `dimension` allowed
    max_seq_length: int  # tokens per input the encoder reads (longer inputs are truncated)


def is_embedding_folder(files: list[str]) -> bool:
    """A sentence-transformers folder: its ``modules.json`` says how vectors are made."""
    return MODULES_FILE in files


def check_embedding_config(state: _State) -> None:
    """config.json of an embedding model (replaces the text-model check)."""
    from outcrop.registry.validation import _positive_int, _read_json_object

    if not state.has("config.json"):
        state.problems.append(
            "config.json is missing; a sentence-transformers folder keeps its encoder's config.json at the top "
            "level. Re-save the model with `SentenceTransformer.save(out_dir)`."
        )
        return
    config = _read_json_object(state, "config.json")
    if config is None:
        return
    state.config = config
    ok = True
    model_type = config.get("model_type")
    supported = ", ".join(EMBEDDING_ARCHITECTURES)
    if model_type not in EMBEDDING_ARCHITECTURES:
        found = f"model_type {model_type!r}" if model_type is not None else "no model_type"
        state.problems.append(
            f"config.json says {found}; embedding models of these types can be imported: {supported} "
            "(with a sentence-transformers modules.json). Import an encoder of a supported family."
        )
        ok = False
    archs = config.get("architectures")
    if archs is not None and model_type in EMBEDDING_ARCHITECTURES:
        allowed = EMBEDDING_ARCHITECTURES[str(model_type)]
        if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
            state.problems.append(
                f"config.json has architectures {archs!r}; expected a list such as [{allowed[0]!r}]."
            )
            ok = False
        elif archs[0] not in allowed:
            state.problems.append(
                f"config.json says architectures {archs!r}, which is not a {model_type} embedding model; "
                f"supported: {', '.join(allowed)}. Save the base model (AutoModel) with its sentence-transformers "
                "config."
            )
            ok = False
    if "auto_map" in config:
        state.problems.append(
            f"config.json has auto_map {config['auto_map']!r}, i.e. it asks to run Python code shipped with the "
            "model. Outcrop never runs code from an uploaded model; remove auto_map if the model is a standard "
            f"architecture ({supported})."
        )
        ok = False
    if config.get("quantization_config") is not None:
        state.problems.append(
            "config.json has quantization_config; Outcrop serves float32, float16 and bfloat16 weights only. "
            "Import the unquantized model."
        )
        ok = False
    for key in ("hidden_size", "max_position_embeddings"):
        if not _positive_int(config.get(key)):
            state.problems.append(
                f"config.json has {key} {config.get(key)!r}; it must be a positive integer. Fix config.json."
            )
            ok = False
    context = config.get("max_position_embeddings")
    if _positive_int(context) and context > state.limits.max_context_tokens:
        state.problems.append(
            f"config.json says max_position_embeddings {context}, over this server's limit of "
            f"{state.limits.max_context_tokens} tokens; lower it in config.json or raise registry.max_context_tokens."
        )
    state.config_ok = ok


def check_modules(state: _State) -> None:
    """modules.json, the pooling config, sentence_bert_config.json -> ``state.embedding``."""
    from outcrop.registry.validation import _positive_int, _read_json_object, _read_text

    text = _read_text(state, MODULES_FILE)
    if text is None:
        return
    import json

    try:
        modules = json.loads(text)
    except json.JSONDecodeError as exc:
        state.problems.append(f"{MODULES_FILE} is not valid JSON ({exc}); re-save the model.")
        return
    if not (isinstance(modules, list) and modules and all(isinstance(m, dict) for m in modules)):
        state.problems.append(
            f"{MODULES_FILE} must be a list of modules ({{'idx', 'name', 'path', 'type'}}); re-save the model "
            "with `SentenceTransformer.save(out_dir)`."
        )
        return
    kinds: list[str] = []
    pooling_path: str | None = None
    for entry in sorted(modules, key=lambda m: m.get("idx", 0) if isinstance(m.get("idx"), int) else 0):
        kind = module_kind(entry.get("type"))
        path = entry.get("path", "")
        if kind is None:
            state.problems.append(
                f"{MODULES_FILE} names module {entry.get('type')!r} (path {path!r}); Outcrop serves "
                "Transformer -> Pooling -> Normalize pipelines only (no Dense projections or custom modules). "
                "Remove the module, or import a model without it."
            )
            continue
        kinds.append(kind)
        if kind == "Transformer" and path not in ("", "."):
            state.problems.append(
                f"{MODULES_FILE} puts the Transformer module in {path!r}; Outcrop reads the encoder from the "
                "folder's top level (config.json, *.safetensors, tokenizer). Move those files up."
            )
        if kind == "Pooling":
            pooling_path = str(path)
    if not kinds or kinds[0] != "Transformer" or kinds.count("Transformer") != 1:
        state.problems.append(
            f"{MODULES_FILE} lists {kinds or 'no known modules'}; it must start with one Transformer module."
        )
    if kinds.count("Pooling") != 1:
        state.problems.append(
            f"{MODULES_FILE} lists {kinds.count('Pooling')} Pooling modules; exactly one is needed (how token "
            "vectors become one vector): add 1_Pooling/config.json with pooling_mode mean, cls or lasttoken."
        )
        return
    rel = f"{pooling_path.strip('/')}/config.json" if pooling_path else "config.json"
    if not state.has(rel):
        state.problems.append(
            f"{rel} is missing ({MODULES_FILE} names a Pooling module in {pooling_path!r}); copy the module folder "
            "with the model."
        )
        return
    pooling = _read_json_object(state, rel)
    if pooling is None:
        return
    modes = pooling_modes(pooling)
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        state.problems.append(
            f"{rel} turns on pooling {modes or 'none'}; Outcrop serves exactly one of {', '.join(POOLING_MODES)}. "
            "Set one pooling mode."
        )
        return
    mode = modes[0]
    config = state.config or {}
    hidden = config.get("hidden_size")
    dim = pooling.get("word_embedding_dimension", pooling.get("embedding_dimension"))
    if not _positive_int(dim):
        state.problems.append(
            f"{rel} has no word_embedding_dimension (found {dim!r}); it must be the encoder's hidden_size."
        )
        return
    if _positive_int(hidden) and dim != hidden:
        state.problems.append(
            f"{rel} says word_embedding_dimension {dim} but config.json says hidden_size {hidden}; they must agree "
            "(the pooling config belongs to another model)."
        )
        return
    if config.get("model_type") in DECODER_MODEL_TYPES and mode != "lasttoken":
        state.problems.append(
            f"{rel} pools a {config.get('model_type')} decoder with {mode!r}; a decoder's embedding is its last "
            "token's state (each token sees only the ones before it). Set pooling_mode 'lasttoken'."
        )
        return
    max_seq = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") == "xlm-roberta":
        max_seq -= 2  # RoBERTa positions start after the padding index
    if state.has(SENTENCE_BERT_CONFIG):
        sbert = _read_json_object(state, SENTENCE_BERT_CONFIG) or {}
        value = sbert.get("max_seq_length")
        if value is not None and not _positive_int(value):
            state.problems.append(
                f"{SENTENCE_BERT_CONFIG} has max_seq_length {value!r}; it must be a positive integer."
            )
        elif _positive_int(value):
            max_seq = min(value, max_seq)
    truncatable = False
    if state.has(ST_CONFIG):
        st_config = _read_json_object(state, ST_CONFIG) or {}
        dims = st_config.get("matryoshka_dimensions") or st_config.get("matryoshka_dims")
        truncatable = bool(st_config.get("matryoshka") is True or (isinstance(dims, list) and dims))
    state.embedding = EmbeddingFacts(
        dimension=int(dim),
        pooling=mode,
        normalize="Normalize" in kinds,
        truncatable=truncatable,
        max_seq_length=max_seq,
    )


def check_embedding_tensors(state: _State) -> None:
    """Tensor names and shapes against the base model config.json implies (prefix optional)."""
    from outcrop.registry.validation import _import_transformers_once, listing

    if not (state.config_ok and state.headers_ok and state.config is not None and state.tensors):
        return
    count = state.config.get("num_hidden_layers")
    if isinstance(count, int) and count > len(state.tensors):
        state.problems.append(
            f"config.json says num_hidden_layers {count}, but the weights hold only {len(state.tensors)} tensors; "
            "config.json does not describe these weights."
        )
        return
    _import_transformers_once()
    import torch
    from transformers import AutoConfig, AutoModel

    kwargs = {k: v for k, v in state.config.items() if k not in ("auto_map", "transformers_version")}
    try:
        hf_config = AutoConfig.for_model(**kwargs)
        with torch.device("meta"):
            model = AutoModel.from_config(hf_config)
    except Exception as exc:
        state.problems.append(
            f"config.json does not describe a valid {state.config.get('model_type')} model ({type(exc).__name__}: "
            f"{exc}); fix the field it names."
        )
        return
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    found: dict[str, tuple[int, ...]] = {}
    ignored = re.compile(r"^(lm_head\.|cls\.|pooler\.|.*position_ids$|.*rotary_emb\.inv_freq$)")
    unexpected: list[str] = []
    for name, tensor in state.tensors.items():
        key = name[len(prefix) :] if prefix != "." and name.startswith(prefix) else name
        if key in expected:
            found[key] = tensor.shape
        elif not ignored.match(key):
            unexpected.append(name)
    optional = re.compile(r"(^|\.)pooler\.|position_ids$|token_type_ids$")
    missing = [n for n in expected if n not in found and not optional.search(n)]
    wrong = [
        f"{n} {list(found[n])} (config implies {list(expected[n])})" for n in found if found[n] != expected[n]
    ]
    mtype = state.config.get("model_type")
    if missing:
        state.problems.append(
            f"The weights lack {len(missing)} tensor(s) that config.json's {mtype} encoder needs: "
            f"{listing(missing)}; the shards are incomplete or config.json belongs to another model."
        )
    if unexpected:
        state.problems.append(
            f"The weights hold {len(unexpected)} tensor(s) that config.json's {mtype} encoder does not have: "
            f"{listing(unexpected)}; use the config.json saved with these weights."
        )
    if wrong:
        state.problems.append(
            f"{len(wrong)} tensor(s) have shapes that config.json does not imply: {listing(wrong)}."
        )


def memory_estimate(weight_bytes: int, hidden_size: int, num_layers: int, element_bytes: int) -> int:
    """weights + runtime overhead + one batch's activations (no KV cache: encoders keep none)."""
    from outcrop.registry.validation import ACTIVATION_OVERHEAD_FRACTION, RUNTIME_OVERHEAD_BYTES

    activations = ACTIVATION_TOKENS * hidden_size * max(1, num_layers) * element_bytes
    return (
        weight_bytes + RUNTIME_OVERHEAD_BYTES + int(ACTIVATION_OVERHEAD_FRACTION * weight_bytes) + activations
    )

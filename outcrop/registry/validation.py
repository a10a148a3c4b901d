"""Validate a Hugging Face model folder before import, and extract its facts.

Everything a copy would trip over at its first request is checked here, at import, and
every failure of a folder is reported at once (``ModelValidationError.problems``), each
naming the file, the value found and the fix. The module is pure: it reads files, never
writes, never loads tensor data, never unpickles and never runs code from the folder.

    files = list_source_files(source)            # before copying: what to copy, safely
    facts = validate_model_folder(staged, limits)  # after copying: every check, or one error

Checks, in order (a failing check never hides the others):

1. the file list: no symlink leaving the folder, no path traversal, no special file;
2. an unmerged LoRA adapter is recognised and rejected with merge instructions;
3. ``config.json``: UTF-8 JSON object, a supported ``model_type``/``architectures``, no
   ``auto_map`` (custom code), no quantization, context within the configured maximum;
4. weights: ``*.safetensors`` only (pickle formats are rejected), each header parsed by
   hand (size limit, UTF-8 JSON, dtypes F32/F16/BF16, offsets in range, no overlap, no
   hole, file size exact), ``model.safetensors.index.json`` consistent with the shards;
5. tensor names and shapes equal what the config implies (the model is built on the meta
   device from the config: no memory, no code from the folder);
6. tokenizer present and loadable, vocabulary within the embedding; chat template found,
   compilable, and rendering a sample conversation within a time limit (in a child process:
   :mod:`outcrop.registry.chat_template_probe`) -> ``instruct_supported``;
7. total size within the configured maximum.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from outcrop.config import RegistryConfig
from outcrop.engine.families import SUPPORTED_MODEL_TYPES
from outcrop.errors import ModelValidationError
from outcrop.registry import embedding_validation as emb
from outcrop.registry.chat_template_probe import render_sample
from outcrop.registry.safetensors_header import SUPPORTED_DTYPES, Tensor, listing, parse_header

# The one causal-LM class per family the engine serves (config.architectures[0]).
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
INDEX_FILE = "model.safetensors.index.json"
SINGLE_WEIGHTS_FILE = "model.safetensors"
LORA_FILES = ("adapter_config.json", "adapter_model.safetensors")

# What a model folder holds that serving needs (or that travels with it: licence, card).
_KEPT_SUFFIXES = (".json", ".safetensors", ".model", ".jinja", ".tiktoken", ".md", *PICKLE_SUFFIXES)
_KEPT_NAMES = ("merges.txt", "vocab.txt")
_KEPT_PREFIXES = ("license", "notice")
# Training leftovers and other formats' duplicates: never served, so never copied. Mistral
# repos ship their native ``consolidated.safetensors`` + ``params.json`` next to the HF files.
_SKIPPED_NAMES = re.compile(
    r"^(trainer_state\.json|training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth"
    r"|consolidated.*\.safetensors|params\.json)$"
)

# Tensors stored under these names are ignored by every loader (older Llama checkpoints
# carry the rotary inverse frequencies, which are recomputed from the config).
_IGNORED_UNEXPECTED = (re.compile(r"(^|\.)rotary_emb\.inv_freq$"),)

# Memory estimate of one serving copy (see ``ModelFacts.memory_estimate_bytes``).
# 16 concurrent sequences is Bedrock's (and Outcrop's) default concurrency per copy.
KV_BUDGET_SEQUENCES = 16
# Cap on the tokens the KV cache is sized for: 16 x 2K tokens; longer contexts share it.
KV_BUDGET_MAX_TOKENS = 32_768
# A Python + torch worker's resident baseline before weights (measured ~400 MB on CPU).
RUNTIME_OVERHEAD_BYTES = 512 * 1024**2
# Activations, temporary buffers and allocator fragmentation, as a share of the weights.
ACTIVATION_OVERHEAD_FRACTION = 0.10


@dataclass(frozen=True)
class ModelFacts:
    """What an import records about a valid model folder.

    ``memory_estimate_bytes`` = weights + KV cache budget + overhead, where
    weights = the tensor bytes of the safetensors files;
    KV cache budget = 2 (K and V) x layers x KV heads x head_dim x bytes per element (of the
    weights' dtype) x min(KV_BUDGET_SEQUENCES x context_length, KV_BUDGET_MAX_TOKENS);
    overhead = RUNTIME_OVERHEAD_BYTES + ACTIVATION_OVERHEAD_FRACTION x weights.
    """

    architecture: str  # e.g. "LlamaForCausalLM" (config.architectures[0])
    model_type: str  # e.g. "llama"
    parameter_count: int  # sum of tensor element counts from the safetensors headers
    dtype: str  # "bfloat16" | "float16" | "float32": the dominant weights' dtype by bytes
    context_length: int  # max_position_embeddings
    size_bytes: int  # total bytes of all kept files
    instruct_supported: bool  # a chat template was found
    memory_estimate_bytes: int  # what one serving copy needs (formula above)
    files: tuple[str, ...]  # relative POSIX paths of every file to store (sorted)
    kind: str = "text"  # "text" | "embedding" (a sentence-transformers folder)
    embedding: emb.EmbeddingFacts | None = None  # embedding models: dimension, pooling, truncation


@dataclass
class _State:
    """What the checks learn, shared between them."""

    folder: Path
    limits: RegistryConfig
    files: list[str]
    problems: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    config_ok: bool = False  # model type supported and no blocking config problem
    tensors: dict[str, Tensor] = field(default_factory=dict)
    headers_ok: bool = True  # every safetensors header parsed (tensor list complete)
    chat_template: str | None = None
    tokenizer_config: dict[str, Any] | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token etc., as templates see them
    embedding: emb.EmbeddingFacts | None = None  # set by the sentence-transformers checks

    @property
    def is_embedding(self) -> bool:
        return emb.is_embedding_folder(self.files)

    def has(self, name: str) -> bool:
        return name in self.sizes


# ----------------------------------------------------------------------------- file list


def list_source_files(folder: Path) -> list[str]:
    """Walk a local source folder BEFORE anything is copied: returns the relative paths to copy.

    Only the folder's top level is read, as Hugging Face loaders do: subfolders (``original/``,
    ``checkpoint-*/``, ``onnx/``) are skipped, as are hidden entries (``.git``, ``.cache``),
    training leftovers and files no loader reads. Pickle weights are listed so that
    validation can reject them with a reason. Raises ``ModelValidationError`` listing every
    symlink that resolves outside ``folder`` (or nowhere), every special file (fifo, socket,
    device), and a missing, non-directory or empty folder.
    """
    files, problems = _scan_source(Path(folder))
    if problems:
        raise ModelValidationError(problems)
    return files


def _scan_source(folder: Path) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    if not folder.exists():
        return [], [f"The model folder {folder} does not exist; check the import's source path."]
    if not folder.is_dir():
        return [], [f"{folder} is a file, not a folder; point the import at the folder holding config.json."]
    root = folder.resolve()
    files: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        return [], [f"The model folder {folder} cannot be read ({exc.strerror}); check its permissions."]
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        try:
            if entry.is_symlink():
                target = Path(os.path.realpath(entry.path))
                if not target.is_relative_to(root):
                    problems.append(
                        f"{name} is a symlink to {target}, outside the model folder; Outcrop only reads files "
                        "inside the folder. Replace the link with the file itself (e.g. `cp -L`)."
                    )
                    continue
                if not target.exists():
                    problems.append(
                        f"{name} is a broken symlink (to {target}); replace it with the real file."
                    )
                    continue
            st = os.stat(entry.path)  # follows a link that stays inside
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc.strerror}); check its permissions.")
            continue
        if stat.S_ISDIR(st.st_mode):
            if emb.MODULE_DIR.match(name):  # a sentence-transformers module folder: its small configs
                sub, sub_problems = _scan_module_dir(Path(entry.path), name, root)
                files.extend(sub)
                problems.extend(sub_problems)
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(
                f"{name} is a special file (fifo, socket or device), not a regular file; remove it from the folder."
            )
            continue
        if _is_kept(name):
            files.append(name)
    if not files and not problems:
        problems.append(
            f"The model folder {folder} holds no model files; it must contain config.json, *.safetensors "
            "weights and a tokenizer, as written by transformers' save_pretrained."
        )
    return files, problems


def _scan_module_dir(folder: Path, name: str, root: Path) -> tuple[list[str], list[str]]:
    """The ``*.json`` configs of a sentence-transformers module folder (``1_Pooling/config.json``)."""
    files: list[str] = []
    problems: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        return [], [f"{name}/ cannot be read ({exc.strerror}); check its permissions."]
    for entry in entries:
        rel = f"{name}/{entry.name}"
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        real = Path(os.path.realpath(entry.path))
        if not real.is_relative_to(root) or not real.is_file():
            problems.append(
                f"{rel} is a link leaving the model folder or not a regular file; replace it with the file."
            )
            continue
        files.append(rel)
    return files, problems


def _is_kept(name: str) -> bool:
    if _SKIPPED_NAMES.match(name):
        return False
    lower = name.lower()
    return lower.endswith(_KEPT_SUFFIXES) or lower in _KEPT_NAMES or lower.startswith(_KEPT_PREFIXES)


def _check_given_files(state: _State, given: Iterable[str]) -> None:
    """Vet a caller-given file list: relative, inside the folder, regular files. Records sizes."""
    root = state.folder.resolve()
    kept: list[str] = []
    for rel in given:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or "\\" in rel or not rel or rel != pure.as_posix():
            state.problems.append(
                f"The file list names '{rel}', which is not a plain relative path inside the model folder "
                "(absolute, '..' or not normalised); remove it."
            )
            continue
        path = state.folder / rel
        try:
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(root):
                state.problems.append(
                    f"{rel} resolves to {real}, outside the model folder; replace the link with the file itself."
                )
                continue
            st = os.stat(path)
        except OSError as exc:
            state.problems.append(
                f"{rel} cannot be read ({exc.strerror}); check that it was copied completely."
            )
            continue
        if not stat.S_ISREG(st.st_mode):
            state.problems.append(f"{rel} is not a regular file; remove it from the model folder.")
            continue
        state.sizes[rel] = st.st_size
        kept.append(rel)
    state.files = sorted(set(kept))


# ----------------------------------------------------------------------------- entry point


def validate_model_folder(folder: Path, limits: RegistryConfig, files: list[str] | None = None) -> ModelFacts:
    """Runs EVERY check and raises ``ModelValidationError(problems)`` with all failures at once.

    ``files`` are the relative paths to validate (default: ``list_source_files(folder)``);
    each problem names the file, the value found and the fix. Only ``ModelValidationError``
    ever leaves this function: an unexpected failure inside a check becomes a problem too.
    """
    state = _State(folder=Path(folder), limits=limits, files=[])

    def list_files(state: _State) -> None:
        given = files
        if given is None:
            given, problems = _scan_source(state.folder)
            state.problems.extend(problems)
        _check_given_files(state, given)

    checks: list[tuple[str, Callable[[_State], None]]] = [
        ("the file list", list_files),
        ("the LoRA adapter check", _check_lora_adapter),
        ("config.json", _check_any_config),
        ("the weights", _check_weights),
        ("the sentence-transformers modules", _check_embedding_modules),
        ("the tensor names and shapes", _check_any_tensors),
        ("the tokenizer", _check_tokenizer),
        ("the size limit", _check_total_size),
    ]
    for what, check in checks:
        try:
            check(state)
        except Exception as exc:  # a bug in one check must not hide the others
            state.problems.append(
                f"Outcrop failed while checking {what} ({type(exc).__name__}: {exc}); this is a bug in Outcrop, "
                "please report it with the model's config.json."
            )
    if state.problems:
        raise ModelValidationError(state.problems)
    try:
        return _facts(state)
    except Exception as exc:
        raise ModelValidationError(
            [f"Outcrop failed while summarising the model ({type(exc).__name__}: {exc}); please report it."]
        ) from exc


# ----------------------------------------------------------------------------- helpers


def _read_text(state: _State, rel: str) -> str | None:
    """Read a small text file as UTF-8, or record why not."""
    size = state.sizes.get(rel, 0)
    cap = state.limits.max_metadata_file_bytes
    if size > cap:
        state.problems.append(
            f"{rel} is {size} bytes, over the {cap}-byte limit for metadata files; it is corrupt or not what "
            "its name says. Re-save the model with save_pretrained (or raise registry.max_metadata_file_bytes)."
        )
        return None
    try:
        raw = (state.folder / rel).read_bytes()
    except OSError as exc:
        state.problems.append(f"{rel} cannot be read ({exc.strerror}); check that it was copied completely.")
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        state.problems.append(
            f"{rel} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 text."
        )
        return None


def _read_json_object(state: _State, rel: str) -> dict[str, Any] | None:
    """Parse a UTF-8 JSON object, or record why not."""
    text = _read_text(state, rel)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        state.problems.append(f"{rel} is not valid JSON ({exc}{where}); fix the file or re-save the model.")
        return None
    if not isinstance(data, dict):
        state.problems.append(f"{rel} holds a JSON {type(data).__name__}, not an object; re-save the model.")
        return None
    return data


def _positive_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# ----------------------------------------------------------------------------- LoRA


def _check_lora_adapter(state: _State) -> None:
    if not any(state.has(name) for name in LORA_FILES):
        return
    base = ""
    if state.has("adapter_config.json"):
        adapter = _read_json_object(state, "adapter_config.json") or {}
        name = adapter.get("base_model_name_or_path")
        if isinstance(name, str) and name:
            base = f" (base model '{name}')"
    state.problems.append(
        f"This folder holds an unmerged LoRA adapter (adapter_config.json / adapter_model.safetensors){base}; "
        "Outcrop imports full models only. Merge it into its base model and import the result: "
        "`from peft import AutoPeftModelForCausalLM; m = AutoPeftModelForCausalLM.from_pretrained(adapter_dir)"
        ".merge_and_unload(); m.save_pretrained(out_dir, safe_serialization=True)`, then save the tokenizer "
        "into out_dir too."
    )


def _is_adapter_only(state: _State) -> bool:
    return state.has("adapter_config.json") and not state.has("config.json")


# ----------------------------------------------------------------------------- config.json


def _check_any_config(state: _State) -> None:
    """A text model's config.json, or an embedding model's (a folder with modules.json)."""
    if state.is_embedding:
        emb.check_embedding_config(state)
    else:
        _check_config(state)


def _check_embedding_modules(state: _State) -> None:
    if state.is_embedding:
        emb.check_modules(state)


def _check_any_tensors(state: _State) -> None:
    if state.is_embedding:
        emb.check_embedding_tensors(state)
    else:
        _check_tensors_match_config(state)


def _check_config(state: _State) -> None:
    if not state.has("config.json"):
        if not _is_adapter_only(state):  # the LoRA message already explains the folder
            state.problems.append(
                "config.json is missing; every Hugging Face model folder has one. Re-save the model with "
                "save_pretrained, or point the import at the folder that holds config.json."
            )
        return
    config = _read_json_object(state, "config.json")
    if config is None:
        return
    state.config = config
    if state.has("generation_config.json"):  # read by every copy at start: it must parse too
        _read_json_object(state, "generation_config.json")
    ok = True
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        found = f"model_type {model_type!r}" if model_type is not None else "no model_type"
        hint = (
            f" An encoder ({model_type}) is served as an embedding model: add its sentence-transformers files "
            "(modules.json and 1_Pooling/config.json, as SentenceTransformer.save writes them; see docs/embeddings.md)."
            if model_type in emb.EMBEDDING_ARCHITECTURES
            else ""
        )
        state.problems.append(
            f"config.json says {found}, which this server cannot serve; supported: {supported}. "
            f"Import a model of a supported family.{hint}"
        )
        ok = False
    archs = config.get("architectures")
    if archs is not None:
        if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
            state.problems.append(
                f"config.json has architectures {archs!r}; expected a list of class names such as "
                "['LlamaForCausalLM']. Fix the field or re-save the model."
            )
            ok = False
        elif archs[0] not in SUPPORTED_ARCHITECTURES.values():
            state.problems.append(
                f"config.json says architectures {archs!r}, which this server cannot serve; supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES.values())}. Import the causal-LM (text generation) model."
            )
            ok = False
        elif model_type in SUPPORTED_ARCHITECTURES and archs[0] != SUPPORTED_ARCHITECTURES[model_type]:
            state.problems.append(
                f"config.json says model_type {model_type!r} but architectures {archs!r}; they must agree "
                f"({model_type!r} is {SUPPORTED_ARCHITECTURES[model_type]}). Fix config.json."
            )
            ok = False
    if "auto_map" in config:
        state.problems.append(
            f"config.json has auto_map {config['auto_map']!r}, i.e. it asks to run Python code shipped with the "
            "model. Outcrop never runs code from an uploaded model; remove auto_map (and the *.py files) if the "
            "model is a standard architecture, or convert it to one of: " + supported + "."
        )
        ok = False
    quant = config.get("quantization_config")
    if quant is not None:
        method = quant.get("quant_method") if isinstance(quant, dict) else quant
        state.problems.append(
            f"config.json has quantization_config (quant_method {method!r}); Outcrop serves float32, float16 "
            "and bfloat16 weights only. Import the unquantized model (or dequantize and save_pretrained it)."
        )
        ok = False
    context = config.get("max_position_embeddings")
    if not _positive_int(context):
        state.problems.append(
            f"config.json has max_position_embeddings {context!r}; it must be a positive integer (the "
            "model's context length). Add it to config.json."
        )
        ok = False
    elif context > state.limits.max_context_tokens:
        state.problems.append(
            f"config.json says max_position_embeddings {context}, over this server's limit of "
            f"{state.limits.max_context_tokens} tokens; lower max_position_embeddings in config.json "
            "(the model still works for shorter prompts) or raise registry.max_context_tokens."
        )
    state.config_ok = ok


# ----------------------------------------------------------------------------- weights


def _check_weights(state: _State) -> None:
    weight_files = [f for f in state.files if f.endswith(".safetensors") and f not in LORA_FILES]
    pickles = [f for f in state.files if f.lower().endswith(PICKLE_SUFFIXES)]
    for rel in pickles:
        fix = (
            f"delete {rel}: the *.safetensors files already hold the weights"
            if weight_files
            else "convert the model on a trusted machine: `AutoModelForCausalLM.from_pretrained(folder)"
            ".save_pretrained(out_dir, safe_serialization=True)` and import out_dir"
        )
        state.problems.append(
            f"{rel} is a pickle file ({PurePosixPath(rel).suffix}); Outcrop never loads pickle files because "
            f"unpickling can run arbitrary code. Fix: {fix}."
        )
    if not weight_files:
        if not _is_adapter_only(state):
            state.problems.append(
                "No *.safetensors weights found (files: "
                f"{listing(state.files) or 'none'}); save the model with "
                "save_pretrained(out_dir, safe_serialization=True) and import that folder."
            )
        state.headers_ok = False
        return

    headers: dict[str, dict[str, Tensor]] = {}
    for rel in weight_files:
        parsed, header_problems = parse_header(
            state.folder / rel, rel, state.sizes[rel], state.limits.max_safetensors_header_bytes
        )
        state.problems.extend(header_problems)
        if parsed is None:
            state.headers_ok = False
        else:
            headers[rel] = parsed

    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for rel, tensors in headers.items():
        for name, tensor in tensors.items():
            if name in seen:
                duplicates.append(f"{name} ({seen[name]} and {rel})")
            else:
                seen[name] = rel
                state.tensors[name] = tensor
    if state.headers_ok and not state.tensors:
        state.problems.append(
            f"{listing(weight_files)} hold no tensors; re-save the model with save_pretrained."
        )
    if duplicates:
        state.problems.append(
            f"{len(duplicates)} tensor(s) are stored in two shards: {listing(duplicates)}; re-save the model "
            "with save_pretrained so that each tensor is stored once."
        )
    _check_index(state, weight_files, headers)


def _check_index(state: _State, weight_files: list[str], headers: dict[str, dict[str, Tensor]]) -> None:
    if not state.has(INDEX_FILE):
        if weight_files != [SINGLE_WEIGHTS_FILE]:
            state.problems.append(
                f"The weights are {listing(weight_files)} but {INDEX_FILE} is missing (a single-file model "
                f"must be named {SINGLE_WEIGHTS_FILE}); re-save with save_pretrained, which writes both."
            )
        return
    index = _read_json_object(state, INDEX_FILE)
    if index is None:
        return
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        state.problems.append(
            f"{INDEX_FILE} has no 'weight_map' object of tensor name -> shard file; re-save with save_pretrained."
        )
        return
    shards = set(weight_map.values())
    missing_shards = sorted(s for s in shards if s not in weight_files)
    if missing_shards:
        state.problems.append(
            f"{INDEX_FILE} maps tensors to {listing(missing_shards)}, which the folder does not have; "
            "copy the missing shard(s) or re-save the model."
        )
    unindexed = sorted(f for f in weight_files if f not in shards)
    if unindexed:
        state.problems.append(
            f"{listing(unindexed)} is not named in {INDEX_FILE}; remove the stray file or re-save the model."
        )
    misplaced = [
        f"{name} (index: {shard})"
        for name, shard in weight_map.items()
        if shard in headers and name not in headers[shard]
    ]
    if misplaced:
        state.problems.append(
            f"{INDEX_FILE} places {len(misplaced)} tensor(s) in shards that do not hold them: "
            f"{listing(misplaced)}; re-save the model with save_pretrained."
        )
    if all(f in headers for f in weight_files):
        absent = sorted(name for name in state.tensors if name not in weight_map)
        if absent:
            state.problems.append(
                f"{INDEX_FILE} does not list {len(absent)} tensor(s) that the shards hold: {listing(absent)}; "
                "re-save the model with save_pretrained."
            )


# ----------------------------------------------------------------------------- tensors vs config


def _check_tensors_match_config(state: _State) -> None:
    if not (state.config_ok and state.headers_ok and state.config is not None and state.tensors):
        return  # the problem that stops us is already recorded
    # Each layer (and each expert) owns tensors: a count beyond the tensor count cannot match,
    # and building it, even on the meta device, would take unbounded time.
    for key in ("num_hidden_layers", "num_local_experts"):
        count = state.config.get(key)
        if _positive_int(count) and count > len(state.tensors):
            state.problems.append(
                f"config.json says {key} {count}, but the weights hold only {len(state.tensors)} "
                "tensors; config.json does not describe these weights. Use the config.json saved with them."
            )
            return
    try:
        expected, optional = _expected_tensors(state.config)
    except Exception as exc:
        state.problems.append(
            f"config.json does not describe a valid {state.config.get('model_type')} model ({type(exc).__name__}: "
            f"{exc}); fix the field it names, or use the config.json saved with the weights."
        )
        return
    found = {name: t.shape for name, t in state.tensors.items()}
    best: tuple[list[str], list[str], list[str]] | None = None
    for candidate in expected:  # checkpoint layout first, then the in-memory layout
        missing = [n for n in candidate if n not in found and n not in optional]
        unexpected = [
            n for n in found if n not in candidate and not any(p.search(n) for p in _IGNORED_UNEXPECTED)
        ]
        wrong = [
            f"{n} {list(found[n])} (config implies {list(candidate[n])})"
            for n in candidate
            if n in found and found[n] != candidate[n]
        ]
        score = (missing, unexpected, wrong)
        if best is None or sum(map(len, score)) < sum(map(len, best)):
            best = score
    assert best is not None
    missing, unexpected, wrong = best
    mtype = state.config.get("model_type")
    if missing:
        state.problems.append(
            f"The weights lack {len(missing)} tensor(s) that config.json's {mtype} model needs: "
            f"{listing(missing)}; the shards are incomplete or config.json belongs to another model."
        )
    if unexpected:
        state.problems.append(
            f"The weights hold {len(unexpected)} tensor(s) that config.json's {mtype} model does not have: "
            f"{listing(unexpected)}; use the config.json saved with these weights."
        )
    if wrong:
        state.problems.append(
            f"{len(wrong)} tensor(s) have shapes that config.json does not imply: {listing(wrong)}; "
            "the sizes in config.json (hidden_size, vocab_size, heads, ...) must match the weights."
        )


_TRANSFORMERS_IMPORT_LOCK = threading.Lock()


def warm_up_validation() -> None:
    """Import what validation needs (torch, transformers' model classes) ahead of the first import."""
    try:
        _import_transformers_once()
        import torch  # noqa: F401
    except Exception:  # a broken install shows up, with its message, in the first import's result
        pass


def _import_transformers_once() -> None:
    """transformers resolves its lazy module on first use, and that is not thread-safe: two imports
    validating at once can see a half-initialised module. Do the first resolution under a lock."""
    with _TRANSFORMERS_IMPORT_LOCK:
        import transformers

        _ = transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer


def _expected_tensors(config: dict[str, Any]) -> tuple[list[dict[str, tuple[int, ...]]], set[str]]:
    """Build the model on the meta device from config.json alone (no code, no memory).

    Returns candidate name -> shape maps (the checkpoint layout transformers saves, and the
    in-memory layout when it differs, e.g. Mixtral's fused experts) and the names that may
    be absent (tied weights: ``lm_head.weight`` when ``tie_word_embeddings``).
    """
    _import_transformers_once()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {k: v for k, v in config.items() if k not in ("auto_map", "transformers_version")}
    hf_config = AutoConfig.for_model(**kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    state_dict = model.state_dict(keep_vars=True)  # persistent buffers + parameters; aliases kept
    first_name: dict[int, str] = {}
    optional: set[str] = set()
    for name, tensor in state_dict.items():
        if id(tensor) in first_name:
            optional.add(name)  # a tied alias: loaders re-tie it when absent
        else:
            first_name[id(tensor)] = name
    for attr in ("_keys_to_ignore_on_load_missing",):
        for pattern in getattr(model, attr, None) or ():
            optional.update(n for n in state_dict if re.search(pattern, n))
    in_memory = {name: tuple(t.shape) for name, t in state_dict.items()}
    candidates = [in_memory]
    try:
        from transformers.core_model_loading import revert_weight_conversion

        saved = revert_weight_conversion(model, dict(state_dict))
        on_disk = {name: tuple(t.shape) for name, t in saved.items()}
        if on_disk != in_memory:
            candidates.insert(0, on_disk)
    except ImportError:  # transformers < 5 keeps the checkpoint layout in memory
        pass
    return candidates, optional


# ----------------------------------------------------------------------------- tokenizer


def _check_tokenizer(state: _State) -> None:
    if _is_adapter_only(state):
        return
    has_fast = state.has("tokenizer.json")
    has_sp = state.has("tokenizer.model")
    if state.has("tokenizer_config.json"):
        state.tokenizer_config = _read_json_object(state, "tokenizer_config.json")
    if not has_fast and not (has_sp and state.has("tokenizer_config.json")):
        found = "tokenizer.model without tokenizer_config.json" if has_sp else "no tokenizer files"
        state.problems.append(
            f"The tokenizer is missing ({found}); the folder needs tokenizer.json, or tokenizer.model + "
            "tokenizer_config.json. Save it next to the weights: `tokenizer.save_pretrained(out_dir)`."
        )
    else:
        _load_tokenizer(state)
    _find_chat_template(state)


def _load_tokenizer(state: _State) -> None:
    if state.has("tokenizer_config.json") and state.tokenizer_config is None:
        return  # unreadable tokenizer_config.json, already reported
    if state.tokenizer_config and "auto_map" in state.tokenizer_config:
        state.problems.append(
            "tokenizer_config.json has auto_map, i.e. a tokenizer implemented in Python code shipped with the "
            "model; Outcrop never runs code from an uploaded model. Remove auto_map and use a tokenizer.json."
        )
        return
    try:
        _import_transformers_once()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            str(state.folder), trust_remote_code=False, local_files_only=True
        )
    except Exception as exc:
        files = "tokenizer.json" if state.has("tokenizer.json") else "tokenizer.model + tokenizer_config.json"
        state.problems.append(
            f"The tokenizer ({files}) cannot be loaded: {type(exc).__name__}: {str(exc)[:300]}; re-save it with "
            "`tokenizer.save_pretrained(out_dir)`."
        )
        return
    vocab = state.config.get("vocab_size") if state.config else None
    if _positive_int(vocab) and len(tokenizer) > vocab:
        state.problems.append(
            f"The tokenizer has {len(tokenizer)} tokens but config.json says vocab_size {vocab}: token ids "
            f"above {vocab - 1} would crash generation. Resize the embeddings "
            "(`model.resize_token_embeddings(len(tokenizer))`) and re-save, or use the matching tokenizer."
        )
    special = getattr(tokenizer, "special_tokens_map", None) or {}
    state.special_tokens = {k: v for k, v in special.items() if isinstance(k, str) and isinstance(v, str)}
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template and state.chat_template is None:
        state.chat_template = template


def _find_chat_template(state: _State) -> None:
    """Look for a chat template where transformers does; check that it compiles."""
    found: tuple[str, str] | None = None
    if state.has("chat_template.jinja"):
        text = _read_text(state, "chat_template.jinja")
        if text is not None:
            found = ("chat_template.jinja", text)
    if found is None and state.has("chat_template.json"):
        data = _read_json_object(state, "chat_template.json")
        if data is not None and isinstance(data.get("chat_template"), str):
            found = ("chat_template.json", data["chat_template"])
    if found is None and state.tokenizer_config is not None:
        value = state.tokenizer_config.get("chat_template")
        if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}]
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default") or next((v for v in named.values() if isinstance(v, str)), None)
        if isinstance(value, str):
            found = ("tokenizer_config.json", value)
    if found is None and state.chat_template is not None:  # the tokenizer found one elsewhere
        found = ("the tokenizer files", state.chat_template)
    if found is None:
        return
    rel, template = found
    if not template.strip():
        return
    seconds = state.limits.chat_template_render_seconds
    failure = render_sample(template, state.special_tokens, seconds)
    if failure is not None and failure.stage == "compile":
        state.problems.append(
            f"The chat template in {rel} does not compile ({failure.error[:200]}); fix the "
            "template, or remove it to import the model for prompt-style completions only."
        )
        return
    if failure is not None:
        state.problems.append(
            f"The chat template in {rel} fails on a sample conversation (system, user, assistant, user, with "
            f"add_generation_prompt), so it would fail every chat request: {failure.error}. Fix the template (it "
            f"must render a short conversation within {seconds:g} s, OUTCROP_REGISTRY__CHAT_TEMPLATE_RENDER_SECONDS), "
            "or remove it to import the model for prompt-style completions only."
        )
        return
    state.chat_template = template


# ----------------------------------------------------------------------------- limits and facts


def _check_total_size(state: _State) -> None:
    total = sum(state.sizes.values())
    limit = state.limits.max_model_bytes
    if total > limit:
        state.problems.append(
            f"The model folder holds {total} bytes ({total / 10**9:.1f} GB), over this server's limit of "
            f"{limit} bytes ({limit / 10**9:.1f} GB); import a smaller model or raise registry.max_model_bytes."
        )


def _facts(state: _State) -> ModelFacts:
    config = state.config or {}
    model_type = str(config["model_type"])
    archs = config.get("architectures")
    architecture = archs[0] if archs else SUPPORTED_ARCHITECTURES.get(model_type, model_type)
    bytes_by_dtype: dict[str, int] = {}
    parameter_count = 0
    for tensor in state.tensors.values():
        numel = 1
        for dim in tensor.shape:
            numel *= dim
        parameter_count += numel
        bytes_by_dtype[tensor.dtype] = bytes_by_dtype.get(tensor.dtype, 0) + tensor.nbytes
    dominant = max(sorted(bytes_by_dtype), key=lambda d: bytes_by_dtype[d])
    dtype_name, element_bytes = SUPPORTED_DTYPES[dominant]
    weight_bytes = sum(bytes_by_dtype.values())
    context_length = int(config["max_position_embeddings"])
    if state.embedding is not None:
        return ModelFacts(
            architecture=architecture,
            model_type=model_type,
            parameter_count=parameter_count,
            dtype=dtype_name,
            context_length=state.embedding.max_seq_length,
            size_bytes=sum(state.sizes.values()),
            instruct_supported=False,  # an embedding model answers no chat, whatever template it ships
            memory_estimate_bytes=emb.memory_estimate(
                weight_bytes,
                int(config.get("hidden_size") or 0),
                int(config.get("num_hidden_layers") or 0),
                element_bytes,
            ),
            files=tuple(state.files),
            kind="embedding",
            embedding=state.embedding,
        )
    return ModelFacts(
        architecture=architecture,
        model_type=model_type,
        parameter_count=parameter_count,
        dtype=dtype_name,
        context_length=context_length,
        size_bytes=sum(state.sizes.values()),
        instruct_supported=state.chat_template is not None,
        memory_estimate_bytes=_memory_estimate(config, weight_bytes, element_bytes, context_length),
        files=tuple(state.files),
    )


def _memory_estimate(
    config: dict[str, Any], weight_bytes: int, element_bytes: int, context_length: int
) -> int:
    """weights + KV cache budget + overhead; the formula is in ``ModelFacts``'s docstring."""
    layers = int(config.get("num_hidden_layers") or 0)
    heads = int(config.get("num_attention_heads") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config.get("hidden_size") or 0) // heads)
    kv_bytes_per_token = 2 * layers * kv_heads * head_dim * element_bytes
    kv_tokens = min(KV_BUDGET_SEQUENCES * context_length, KV_BUDGET_MAX_TOKENS)
    overhead = RUNTIME_OVERHEAD_BYTES + int(ACTIVATION_OVERHEAD_FRACTION * weight_bytes)
    return weight_bytes + kv_bytes_per_token * kv_tokens + overhead

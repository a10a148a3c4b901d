"""Validation of imported model folders: every check, each failure kind, all problems at once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from outcrop.config import RegistryConfig
from outcrop.errors import ModelValidationError
from outcrop.registry.validation import (
    SUPPORTED_MODEL_TYPES,
    ModelFacts,
    list_source_files,
    validate_model_folder,
)

LIMITS = RegistryConfig()


def problems_of(folder: Path, limits: RegistryConfig = LIMITS, files: list[str] | None = None) -> list[str]:
    with pytest.raises(ModelValidationError) as info:
        validate_model_folder(folder, limits, files)
    return info.value.problems


def only_problem(folder: Path, *needles: str, limits: RegistryConfig = LIMITS) -> str:
    """The folder fails with exactly one problem, which contains every needle."""
    problems = problems_of(folder, limits)
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], problems[0]
    return problems[0]


def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def resave(path: Path, change: Any) -> None:
    """Rewrite a safetensors file after ``change(tensors)`` edits its dict of tensors."""
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def model_numel(folder: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())  # tied parameters count once


# ----------------------------------------------------------------------------- valid folders


@pytest.mark.parametrize("family", SUPPORTED_MODEL_TYPES)
def test_each_supported_family_passes_with_its_facts(tiny_model, family: str) -> None:
    folder = tiny_model(family)
    facts = validate_model_folder(folder, LIMITS)
    assert isinstance(facts, ModelFacts)
    config = json.loads((folder / "config.json").read_text())
    assert facts.model_type == family
    assert facts.architecture == config["architectures"][0]
    assert facts.parameter_count == model_numel(folder)
    assert facts.dtype == "float32"
    assert facts.context_length == 2048
    assert facts.instruct_supported is True
    assert facts.files == tuple(sorted(p.name for p in folder.iterdir()))
    assert facts.size_bytes == sum(p.stat().st_size for p in folder.iterdir())
    weights = (folder / "model.safetensors").stat().st_size
    assert facts.memory_estimate_bytes > weights


def test_tied_embeddings_model_passes_without_lm_head(tiny_model) -> None:
    folder = tiny_model("qwen3", tie_word_embeddings=True)
    facts = validate_model_folder(folder, LIMITS)
    assert facts.parameter_count == model_numel(folder)


def test_sharded_model_with_index_passes(tiny_model) -> None:
    folder = tiny_model("llama", max_shard_size="100KB")
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").exists()
    facts = validate_model_folder(folder, LIMITS)
    assert facts.parameter_count == model_numel(folder)
    assert set(shards) <= set(facts.files)


def test_bfloat16_weights_report_bfloat16(tiny_model) -> None:
    facts = validate_model_folder(tiny_model("mistral", dtype="bfloat16"), LIMITS)
    assert facts.dtype == "bfloat16"


def test_model_without_chat_template_passes_as_not_instruct(tiny_model) -> None:
    facts = validate_model_folder(tiny_model("llama", chat_template=False), LIMITS)
    assert facts.instruct_supported is False


def test_chat_template_in_tokenizer_config_counts(tiny_model) -> None:
    folder = tiny_model("llama")
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    edit_json(folder / "tokenizer_config.json", chat_template=template)
    assert validate_model_folder(folder, LIMITS).instruct_supported is True


def test_memory_estimate_grows_with_context(tiny_model) -> None:
    short = tiny_model("llama")
    long = tiny_model("llama")
    edit_json(short / "config.json", max_position_embeddings=128)
    assert (
        validate_model_folder(short, LIMITS).memory_estimate_bytes
        < validate_model_folder(long, LIMITS).memory_estimate_bytes
    )


# ----------------------------------------------------------------------------- the file list


def test_source_listing_skips_hidden_irrelevant_and_subfolders(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: main")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "original").mkdir()
    (folder / "original" / "consolidated.00.pth").write_bytes(b"pickle")
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "modeling_custom.py").write_text("import os")
    (folder / "README.md").write_text("# card")
    files = list_source_files(folder)
    assert "README.md" in files and "config.json" in files
    assert not {"training_args.bin", "modeling_custom.py", ".DS_Store"} & set(files)
    assert all("/" not in f for f in files)
    validate_model_folder(folder, LIMITS)


def test_symlink_escaping_the_folder_is_rejected(tiny_model, tmp_path: Path) -> None:
    folder = tiny_model("llama")
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (folder / "extra.json").symlink_to(secret)
    with pytest.raises(ModelValidationError) as info:
        list_source_files(folder)
    assert len(info.value.problems) == 1
    assert "extra.json" in info.value.problems[0] and "outside the model folder" in info.value.problems[0]
    assert any("outside the model folder" in p for p in problems_of(folder))


def test_symlink_inside_the_folder_is_followed(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "chat_template.jinja").rename(folder / "template.jinja")
    (folder / "chat_template.jinja").symlink_to("template.jinja")
    assert validate_model_folder(folder, LIMITS).instruct_supported is True


def test_fifo_is_rejected(tiny_model) -> None:
    folder = tiny_model("llama")
    os.mkfifo(folder / "pipe.json")
    with pytest.raises(ModelValidationError, match="special file"):
        list_source_files(folder)


def test_path_traversal_in_the_file_list_is_rejected(tiny_model) -> None:
    folder = tiny_model("llama")
    files = [*list_source_files(folder), "../outside.json", "/etc/passwd"]
    problems = problems_of(folder, files=files)
    assert sum("not a plain relative path" in p for p in problems) == 2


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_a_folder_that_is_not_a_model_folder_is_rejected(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "model"
    if kind == "file":
        target.write_text("x")
    elif kind == "empty":
        target.mkdir()
    with pytest.raises(ModelValidationError):
        list_source_files(target)
    with pytest.raises(ModelValidationError):
        validate_model_folder(target, LIMITS)


# ----------------------------------------------------------------------------- config.json


def test_missing_config_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "config.json").unlink()
    problems = problems_of(folder)
    assert any(p.startswith("config.json is missing") for p in problems)


def test_unsupported_model_type_lists_the_supported_ones(tiny_model) -> None:
    folder = tiny_model("llama")
    edit_json(folder / "config.json", model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"])
    problems = problems_of(folder)
    assert any(
        "config.json says model_type 'gpt_neox', which this server cannot serve; "
        "supported: llama, mistral, mixtral, qwen2, qwen3" in p
        for p in problems
    ), problems


def test_unsupported_architecture_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    edit_json(folder / "config.json", architectures=["LlamaForSequenceClassification"])
    only_problem(folder, "LlamaForSequenceClassification", "LlamaForCausalLM")


def test_auto_map_is_rejected(tiny_model) -> None:
    folder = tiny_model("qwen2")
    edit_json(folder / "config.json", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    only_problem(folder, "auto_map", "never runs code from an uploaded model")


def test_non_utf8_config_is_a_clean_problem(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "config.json").write_bytes(b'{"model_type": "llama\xff"}')
    problems = problems_of(folder)
    assert any("config.json is not valid UTF-8" in p for p in problems), problems


def test_invalid_json_config_names_the_line(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "config.json").write_text('{"model_type": "llama",\n}')
    problems = problems_of(folder)
    assert any("config.json is not valid JSON" in p and "line 2" in p for p in problems), problems


def test_unparseable_generation_config_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "generation_config.json").write_text("{'temperature': 0.7}")
    only_problem(folder, "generation_config.json is not valid JSON")


def test_config_that_cannot_build_a_model_is_a_problem(tiny_model) -> None:
    folder = tiny_model("llama")
    edit_json(folder / "config.json", num_attention_heads="four")
    problems = problems_of(folder)
    assert any("does not describe a valid llama model" in p for p in problems), problems


def test_context_over_the_limit_is_rejected(tiny_model) -> None:
    limits = RegistryConfig(max_context_tokens=1024)
    only_problem(tiny_model("llama"), "max_position_embeddings 2048", "1024", limits=limits)


def test_folder_over_the_size_limit_is_rejected(tiny_model) -> None:
    limits = RegistryConfig(max_model_bytes=10_000)
    only_problem(tiny_model("llama"), "over this server's limit of 10000 bytes", limits=limits)


# ----------------------------------------------------------------------------- weights


def test_pickle_weights_are_rejected_with_a_conversion_hint(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    problems = problems_of(folder)
    assert any("pytorch_model.bin is a pickle file" in p and "safe_serialization=True" in p for p in problems)
    assert any("No *.safetensors weights found" in p for p in problems)


def test_pickle_next_to_safetensors_says_delete_it(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    only_problem(folder, "pytorch_model.bin is a pickle file", "delete pytorch_model.bin")


@pytest.mark.parametrize(("dtype", "code"), [(torch.float64, "F64"), (torch.int8, "I8")])
def test_unsupported_dtype_is_rejected(tiny_model, dtype: torch.dtype, code: str) -> None:
    folder = tiny_model("llama")

    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.norm.weight"] = tensors["model.norm.weight"].to(dtype)

    resave(folder / "model.safetensors", change)
    only_problem(folder, f"stores 1 tensor(s) as {code}", "model.norm.weight", "BF16")


def test_truncated_shard_is_caught(tiny_model) -> None:
    folder = tiny_model("llama")
    path = folder / "model.safetensors"
    os.truncate(path, path.stat().st_size - 10)
    only_problem(folder, "model.safetensors is truncated")


def test_huge_header_length_is_rejected_before_reading(tiny_model) -> None:
    folder = tiny_model("llama")
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.write((2**40).to_bytes(8, "little"))
    only_problem(folder, "declares a 1099511627776-byte header", "over the")


def test_corrupt_header_is_rejected(tiny_model) -> None:
    folder = tiny_model("llama")
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.seek(8)
        fh.write(b"\xff\xfe not json")
    only_problem(folder, "model.safetensors has a header that is not UTF-8")


def rewrite_header(path: Path, change: Any) -> None:
    """Rewrite a safetensors header after ``change(header)``, keeping the data bytes as they are."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    change(header)
    new = json.dumps(header).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + length :])


def test_overlapping_tensors_are_rejected(tiny_model) -> None:
    folder = tiny_model("llama")

    def overlap(header: dict[str, Any]) -> None:
        # model.norm.weight [64] x F32: make it point into the first tensor's bytes.
        header["model.norm.weight"]["data_offsets"] = [0, 256]

    rewrite_header(folder / "model.safetensors", overlap)
    problems = problems_of(folder)
    assert any("overlapping tensors" in p and "model.norm.weight" in p for p in problems), problems
    assert any("truncated" in p or "after its last tensor" in p for p in problems), problems


def test_offsets_that_disagree_with_the_shape_are_rejected(tiny_model) -> None:
    folder = tiny_model("llama")

    def grow(header: dict[str, Any]) -> None:
        header["model.norm.weight"]["shape"] = [65]

    rewrite_header(folder / "model.safetensors", grow)
    only_problem(folder, "malformed tensor", "model.norm.weight (shape [65] x F32 needs 260 bytes")


def test_weights_without_tensors_are_rejected(tiny_model) -> None:
    folder = tiny_model("llama")
    save_file({}, str(folder / "model.safetensors"))
    only_problem(folder, "model.safetensors hold no tensors")


def test_index_pointing_at_a_missing_shard_is_reported(tiny_model) -> None:
    folder = tiny_model("llama", max_shard_size="100KB")
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    problems = problems_of(folder)
    assert any(f"maps tensors to {shard.name}, which the folder does not have" in p for p in problems), (
        problems
    )


def test_shard_missing_from_the_index_is_reported(tiny_model) -> None:
    folder = tiny_model("llama", max_shard_size="100KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(folder.glob("model-*.safetensors"))[0].name
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    problems = problems_of(folder)
    assert any(f"{shard} is not named in model.safetensors.index.json" in p for p in problems), problems


def test_index_placing_a_tensor_in_the_wrong_shard_is_reported(tiny_model) -> None:
    folder = tiny_model("llama", max_shard_size="100KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in index["weight_map"].items():
        by_shard.setdefault(shard, []).append(tensor)
    crowded = next(shard for shard, names in by_shard.items() if len(names) > 1)
    other = next(shard for shard in by_shard if shard != crowded)
    name = by_shard[crowded][0]
    index["weight_map"][name] = other
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    only_problem(folder, f"{name} (index: {other})")


def test_non_utf8_index_is_a_clean_problem(tiny_model) -> None:
    folder = tiny_model("llama", max_shard_size="100KB")
    (folder / "model.safetensors.index.json").write_bytes(b"\xff\xff")
    only_problem(folder, "model.safetensors.index.json is not valid UTF-8")


def test_missing_tensor_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    resave(folder / "model.safetensors", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    only_problem(folder, "lack 1 tensor(s)", "model.layers.1.mlp.up_proj.weight")


def test_missing_lm_head_is_reported_when_not_tied(tiny_model) -> None:
    folder = tiny_model("llama")
    resave(folder / "model.safetensors", lambda t: t.pop("lm_head.weight"))
    only_problem(folder, "lm_head.weight")


def test_unexpected_tensor_is_reported(tiny_model) -> None:
    folder = tiny_model("qwen2")
    resave(folder / "model.safetensors", lambda t: t.update({"model.extra.weight": torch.zeros(3)}))
    only_problem(folder, "do", "model.extra.weight")


def test_wrong_shape_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    config = json.loads((folder / "config.json").read_text())
    edit_json(folder / "config.json", intermediate_size=config["intermediate_size"] * 2)
    only_problem(
        folder, "6 tensor(s) have shapes that config.json does not imply", "mlp.up_proj.weight [128, 64]"
    )


def test_mixtral_missing_expert_is_reported_in_checkpoint_names(tiny_model) -> None:
    folder = tiny_model("mixtral")
    name = "model.layers.0.block_sparse_moe.experts.3.w2.weight"
    resave(folder / "model.safetensors", lambda t: t.pop(name))
    only_problem(folder, name)


# ----------------------------------------------------------------------------- tokenizer, LoRA


def test_missing_tokenizer_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "tokenizer.json").unlink()
    only_problem(folder, "The tokenizer is missing", "tokenizer.save_pretrained")


def test_unloadable_tokenizer_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    only_problem(folder, "cannot be loaded")


def test_non_utf8_tokenizer_config_is_a_clean_problem(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "tokenizer_config.json").write_bytes(b"\x80{}")
    only_problem(folder, "tokenizer_config.json is not valid UTF-8")


def test_tokenizer_larger_than_the_embedding_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    config = json.loads((folder / "config.json").read_text())
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        resave(folder / "model.safetensors", lambda t, n=name: t.update({n: t[n][:-8].clone()}))
    edit_json(folder / "config.json", vocab_size=config["vocab_size"] - 8)
    only_problem(folder, f"vocab_size {config['vocab_size'] - 8}", "resize_token_embeddings")


def test_broken_chat_template_is_reported(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }")
    only_problem(folder, "chat_template.jinja does not compile")


# A loop the sandbox allows (each range is at its 100,000 cap) but that never ends in practice.
ENDLESS_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
MISTRAL_V01_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


@pytest.mark.parametrize(
    ("template", "needles"),
    [
        ("{{ raise_exception('no') }}", ["TemplateError: no"]),
        ("{% for m in messages %}{{ m.content.nope() }}{% endfor %}", ["UndefinedError"]),
        ("{% for i in range(10**9) %}x{% endfor %}", ["OverflowError", "Range too big"]),
        (ENDLESS_TEMPLATE, ["did not finish within 1 s"]),
        ("{{ 'x' * 10**10 }}", ["more than 1024 MiB of memory"]),
    ],
    ids=["raises", "undefined-call", "huge-range", "endless-loop", "memory-hog"],
)
def test_chat_template_that_fails_to_render_fails_the_import_with_its_error(
    tiny_model, template: str, needles: list[str]
) -> None:
    folder = tiny_model("llama")
    (folder / "chat_template.jinja").write_text(template)
    limits = RegistryConfig(chat_template_render_seconds=1)
    only_problem(folder, "chat_template.jinja fails on a sample conversation", *needles, limits=limits)


def test_chat_template_in_tokenizer_config_that_raises_names_tokenizer_config(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "chat_template.jinja").unlink()
    edit_json(folder / "tokenizer_config.json", chat_template="{{ raise_exception('no system here') }}")
    only_problem(
        folder, "tokenizer_config.json fails on a sample conversation", "no system here", "remove it"
    )


def test_chat_template_that_rejects_system_messages_still_imports(tiny_model) -> None:
    folder = tiny_model("llama")
    (folder / "chat_template.jinja").write_text(MISTRAL_V01_TEMPLATE)
    assert validate_model_folder(folder, LIMITS).instruct_supported


def test_lora_adapter_folder_is_rejected_with_merge_instructions(tiny_model, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "meta-llama/Llama-3.1-8B", "r": 8})
    )
    save_file(
        {"base_model.model.lm_head.lora_A.weight": torch.zeros(8, 64)},
        str(adapter / "adapter_model.safetensors"),
    )
    shutil.copy(tiny_model("llama") / "tokenizer.json", adapter / "tokenizer.json")
    only_problem(adapter, "unmerged LoRA adapter", "meta-llama/Llama-3.1-8B", "merge_and_unload()")


# ----------------------------------------------------------------------------- all at once, never a crash


def test_several_problems_are_reported_together(tiny_model) -> None:
    folder = tiny_model("llama")
    edit_json(folder / "config.json", model_type="gpt2", max_position_embeddings=10**6)
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelValidationError) as info:
        validate_model_folder(folder, LIMITS)
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert "failed 4 check(s)" in str(info.value)
    joined = "\n".join(problems)
    for needle in ("model_type 'gpt2'", "max_position_embeddings 1000000", "pickle", "tokenizer is missing"):
        assert needle in joined


@pytest.mark.parametrize(
    "name",
    ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
     "generation_config.json"],
)  # fmt: skip
@pytest.mark.parametrize("garbage", [b"", b"\x00" * 7, b"[1, 2]", b'{"a": {"b": [}', os.urandom(64)])
def test_garbage_files_only_ever_raise_model_validation_error(tiny_model, name: str, garbage: bytes) -> None:
    folder = tiny_model("llama")
    (folder / name).write_bytes(garbage)
    try:
        validate_model_folder(folder, LIMITS)
    except ModelValidationError as exc:
        assert exc.problems
        assert not any("bug in Outcrop" in p for p in exc.problems), exc.problems

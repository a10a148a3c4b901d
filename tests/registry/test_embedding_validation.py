"""Validation of sentence-embedding folders: what is recorded, and each refusal naming the file and fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from outcrop.config import RegistryConfig
from outcrop.errors import ModelValidationError
from outcrop.registry.validation import list_source_files, validate_model_folder
from outcrop.testing.tiny_embedders import build_tiny_embedder

LIMITS = RegistryConfig()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    cache: dict[str, Path] = {}

    def get(family: str = "bert", **spec: object) -> Path:
        key = json.dumps([family, spec], sort_keys=True)
        if key not in cache:
            cache[key] = build_tiny_embedder(tmp_path_factory.mktemp("embed") / family, family=family, **spec)  # type: ignore[arg-type]
        return cache[key]

    return get


@pytest.fixture
def embedder(built: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """A fresh, modifiable copy of a cached tiny embedder."""
    import shutil

    def make(family: str = "bert", **spec: object) -> Path:
        dest = tmp_path / f"{family}-copy"
        shutil.copytree(built(family, **spec), dest)
        return dest

    return make


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(ModelValidationError) as info:
        validate_model_folder(folder, LIMITS)
    return info.value.problems


@pytest.mark.parametrize(
    ("family", "architecture", "pooling"),
    [
        ("bert", "BertModel", "mean"),
        ("xlm-roberta", "XLMRobertaModel", "mean"),
        ("qwen3", "Qwen3Model", "lasttoken"),
    ],
)
def test_a_sentence_transformers_folder_imports_as_an_embedding_model(
    built: Callable[..., Path], family: str, architecture: str, pooling: str
) -> None:
    facts = validate_model_folder(built(family), LIMITS)
    assert (facts.kind, facts.architecture, facts.model_type) == ("embedding", architecture, family)
    assert facts.embedding is not None
    assert (facts.embedding.dimension, facts.embedding.pooling, facts.embedding.normalize) == (
        64,
        pooling,
        True,
    )
    assert facts.instruct_supported is False and facts.context_length == 128
    assert "1_Pooling/config.json" in facts.files and "modules.json" in facts.files


def test_the_module_configs_in_subfolders_are_listed_for_copying(built: Callable[..., Path]) -> None:
    files = list_source_files(built("bert"))
    assert "1_Pooling/config.json" in files and "sentence_bert_config.json" in files


def test_matryoshka_dimensions_in_the_sentence_transformers_config_allow_truncation(
    built: Callable[..., Path],
) -> None:
    facts = validate_model_folder(built("qwen3", matryoshka=True), LIMITS)
    assert facts.embedding is not None and facts.embedding.truncatable is True


def test_a_dense_module_is_refused_by_name(embedder: Callable[..., Path]) -> None:
    folder = embedder()
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    (problem,) = problems_of(folder)
    assert "sentence_transformers.models.Dense" in problem and "no Dense projections" in problem


def test_a_pooling_dimension_that_is_not_hidden_size_is_refused(embedder: Callable[..., Path]) -> None:
    folder = embedder()
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config["word_embedding_dimension"] = 32
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    (problem,) = problems_of(folder)
    assert "1_Pooling/config.json" in problem and "hidden_size 64" in problem


@pytest.mark.parametrize(("mode", "words"), [("max", "'max'"), (["mean", "cls"], "'cls'")])
def test_pooling_other_than_one_of_mean_cls_lasttoken_is_refused(
    embedder: Callable[..., Path], mode: object, words: str
) -> None:
    folder = embedder()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode": mode})
    )
    (problem,) = problems_of(folder)
    assert words in problem and "mean, cls, lasttoken" in problem


def test_a_decoder_pooled_by_mean_is_refused_with_the_fix(embedder: Callable[..., Path]) -> None:
    folder = embedder("qwen3")
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode": "mean"})
    )
    (problem,) = problems_of(folder)
    assert "lasttoken" in problem and "qwen3" in problem


def test_a_missing_pooling_config_and_custom_code_are_both_reported(embedder: Callable[..., Path]) -> None:
    folder = embedder()
    (folder / "1_Pooling" / "config.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling.MyBert"}
    (folder / "config.json").write_text(json.dumps(config))
    problems = problems_of(folder)
    assert any("1_Pooling/config.json is missing" in p for p in problems)
    assert any("auto_map" in p and "never runs code" in p for p in problems)


def test_weights_of_another_shape_are_named(embedder: Callable[..., Path]) -> None:
    folder = embedder()
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 256
    (folder / "config.json").write_text(json.dumps(config))
    (problem,) = problems_of(folder)
    assert "intermediate.dense.weight" in problem and "shapes" in problem


def test_an_unsupported_encoder_family_lists_the_supported_ones(embedder: Callable[..., Path]) -> None:
    folder = embedder()
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "t5"
    config.pop("architectures", None)
    (folder / "config.json").write_text(json.dumps(config))
    problems = problems_of(folder)
    assert any("model_type 't5'" in p and "bert, xlm-roberta, qwen2, qwen3" in p for p in problems)


def test_an_encoder_without_sentence_transformers_files_is_told_to_add_them(
    embedder: Callable[..., Path],
) -> None:
    folder = embedder()
    (folder / "modules.json").unlink()
    problems = problems_of(folder)
    assert any("modules.json and 1_Pooling/config.json" in p and "'bert'" in p for p in problems), problems
